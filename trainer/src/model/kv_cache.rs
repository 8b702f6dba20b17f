//! One layer's key/value cache for generation: `[batch, kv_heads, capacity, head_dim]`
//! buffers in the compute dtype, allocated at the first write. New positions are written in
//! place (the cache is the only owner of its buffers between steps, so the backend's slice
//! assignment writes into them instead of copying), and attention reads a view of the
//! first positions only, not the whole capacity.

use burn::prelude::*;

#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for up to `capacity` positions.
    pub fn with_capacity(capacity: usize) -> Self {
        KvCache { k: None, v: None, len: 0, capacity }
    }

    /// Positions written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `k`, `v` (`[batch, kv_heads, seq, head_dim]`) after the filled positions and
    /// returns views of the first `visible` positions of both buffers (at least the filled
    /// ones; positions never written read as zeros and must be hidden from the queries).
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, visible: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, heads, t, d] = k.dims();
        let (start, end) = (self.len, self.len + t);
        assert!(end <= self.capacity, "the key/value cache holds {} positions, {end} asked for", self.capacity);
        assert!((end..=self.capacity).contains(&visible), "attention must see the {end} filled positions and at most the cache's {}, not {visible}", self.capacity);
        let capacity = self.capacity;
        let write = |buffer: Option<Tensor<B, 4>>, new: Tensor<B, 4>| {
            let buffer = buffer.unwrap_or_else(|| Tensor::zeros([b, heads, capacity, d], (&new.device(), new.dtype())));
            buffer.slice_assign([0..b, 0..heads, start..end, 0..d], new)
        };
        let (k, v) = (write(self.k.take(), k), write(self.v.take(), v));
        let view = |x: &Tensor<B, 4>| x.clone().slice([0..b, 0..heads, 0..visible, 0..d]);
        let views = (view(&k), view(&v));
        (self.k, self.v, self.len) = (Some(k), Some(v), end);
        views
    }

    /// Keeps the rows `rows` (indices into the batch, in their new order) and drops the
    /// others: rows that finished generating leave the batch.
    pub fn keep_rows(&mut self, rows: Tensor<B, 1, Int>) {
        self.k = self.k.take().map(|k| k.select(0, rows.clone()));
        self.v = self.v.take().map(|v| v.select(0, rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn filled(b: usize, t: usize, value: f32) -> Tensor<Cpu, 4> {
        Tensor::full([b, 1, t, 2], value, &Default::default())
    }

    /// Writes land after the filled positions, views show what was asked, and kept rows
    /// keep their contents.
    #[test]
    fn writes_land_in_place_and_rows_can_leave() {
        let mut cache = KvCache::<Cpu>::with_capacity(8);
        let (k, _) = cache.append(filled(3, 2, 1.0), filled(3, 2, -1.0), 4);
        assert_eq!(k.dims(), [3, 1, 4, 2]);
        assert_eq!(k.clone().slice([0..3, 0..1, 2..4, 0..2]).abs().sum().into_scalar(), 0.0, "unwritten positions read as zeros");
        let rows = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &Default::default());
        cache.keep_rows(rows);
        let third = Tensor::<Cpu, 4>::from_data(TensorData::new(vec![5.0f32, 5.0, 7.0, 7.0], [2, 1, 1, 2]), &Default::default());
        let (k, v) = cache.append(third, filled(2, 1, 0.5), 3);
        assert_eq!(cache.len(), 3);
        let k: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(k, vec![1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 7.0, 7.0]);
        assert_eq!(v.dims(), [2, 1, 3, 2]);
    }

    #[test]
    #[should_panic(expected = "holds 2 positions")]
    fn writing_past_the_capacity_is_refused() {
        let mut cache = KvCache::<Cpu>::with_capacity(2);
        cache.append(filled(1, 3, 1.0), filled(1, 3, 1.0), 2);
    }
}
