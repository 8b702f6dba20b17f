//! One layer's key/value cache for generation: `[slots, kv_heads, capacity, head_dim]`
//! buffers in the compute dtype, allocated at the first write; each slot holds one row of
//! the batch being generated. Rows' new keys are written into their slots at their own
//! positions in place (`ops::kv_write`: the cache is the only owner of its buffers between
//! steps). A prefill's attention reads the pass's own keys; a decoding step's writes each
//! row's new key and reads its slot's visible positions in one op
//! (`ops::decode_attention`).

use burn::prelude::*;

use crate::ops::decode_attention::{DecodeAttention, decode_attention};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::{KvWrite, Placement, kv_write};

#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    slots: usize,
    capacity: usize,
}

/// How a forward pass with caches uses them: where its rows' new keys and values go, and
/// what its queries attend to.
#[derive(Clone, Debug)]
pub struct CacheStep<B: Backend> {
    pub at: Placement<B>,
    pub attend: Attend,
}

/// What a forward pass's queries attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attend {
    /// The pass's own keys (a prefill of new rows, which see nothing cached before them).
    NewKeys,
    /// Each row's slot from its first position to its new key (a decoding step, one
    /// position a row; `Placement::firsts`).
    Cache,
}

impl<B: KvWrite> KvCache<B> {
    /// An empty cache of `slots` rows of up to `capacity` positions.
    pub fn new(slots: usize, capacity: usize) -> Self {
        KvCache { k: None, v: None, slots, capacity }
    }

    /// Rows (slots).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Writes `k`, `v` (`[rows, kv_heads, t, head_dim]`) at `at` (a slot and a first
    /// position for each row).
    pub fn write(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, at: &Placement<B>) {
        let [k_buffer, v_buffer] = self.buffers(&k);
        let [k, v] = kv_write([k_buffer, v_buffer], [k, v], at);
        (self.k, self.v) = (Some(k), Some(v));
    }

    /// The keys' and values' buffers, taken out (zeros in `like`'s dtype at the first write).
    fn buffers(&mut self, like: &Tensor<B, 4>) -> [Tensor<B, 4>; 2] {
        let [_, heads, _, d] = like.dims();
        let (slots, capacity) = (self.slots, self.capacity);
        let buffer = |old: Option<Tensor<B, 4>>| old.unwrap_or_else(|| Tensor::zeros([slots, heads, capacity, d], (&like.device(), like.dtype())));
        [buffer(self.k.take()), buffer(self.v.take())]
    }

    /// Views of every slot's first `visible` positions (positions never written read as
    /// zeros and must be hidden from the queries).
    pub fn view(&self, visible: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        assert!(visible <= self.capacity, "the key/value cache holds {} positions, {visible} asked for", self.capacity);
        let view = |x: &Option<Tensor<B, 4>>| {
            let x = x.as_ref().expect("a cache is written before it is read");
            let [slots, heads, _, d] = x.dims();
            x.clone().slice([0..slots, 0..heads, 0..visible, 0..d])
        };
        (view(&self.k), view(&self.v))
    }

    /// Keeps the slots `slots` (in their new order) and drops the others.
    pub fn keep_slots(&mut self, slots: Tensor<B, 1, Int>) {
        self.slots = slots.dims()[0];
        self.k = self.k.take().map(|k| k.select(0, slots.clone()));
        self.v = self.v.take().map(|v| v.select(0, slots));
    }
}

impl<B: DecodeAttention> KvCache<B> {
    /// A decoding step's attention: each row's new key and value (`k`, `v` `[rows,
    /// kv_heads, 1, head_dim]`) written at `at`, and its queries `q` (`[rows, heads, 1,
    /// head_dim]`) attending to its slot from `at.firsts` to the new key: `[rows, heads, 1,
    /// head_dim]`.
    pub fn attend_step(&mut self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, at: &Placement<B>, scale: f64, kernels: Kernels) -> Tensor<B, 4> {
        let caches = self.buffers(&k);
        let (y, [k, v]) = decode_attention(q, [k, v], caches, at, scale, kernels);
        (self.k, self.v) = (Some(k), Some(v));
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn filled(b: usize, t: usize, value: f32) -> Tensor<Cpu, 4> {
        Tensor::full([b, 1, t, 2], value, &Default::default())
    }

    /// Writes land in their slots at their positions, views show what was asked, and kept
    /// slots keep their contents.
    #[test]
    fn writes_land_in_their_slots_and_slots_can_leave() {
        let mut cache = KvCache::<Cpu>::new(3, 8);
        cache.write(filled(2, 2, 1.0), filled(2, 2, -1.0), &Placement::new(vec![0, 2], vec![0, 1], &Default::default()));
        let (k, _) = cache.view(4);
        assert_eq!(k.dims(), [3, 1, 4, 2]);
        let k: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(&k[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], "slot 0: positions 0 and 1");
        assert_eq!(&k[8..16], &[0.0; 8], "slot 1: never written");
        assert_eq!(&k[16..24], &[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0], "slot 2: positions 1 and 2");
        cache.keep_slots(Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &Default::default()));
        assert_eq!(cache.slots(), 2);
        let (k, v) = cache.view(3);
        let k: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(k, vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(v.dims(), [2, 1, 3, 2]);
    }

    #[test]
    #[should_panic(expected = "holds 2 positions")]
    fn a_view_past_the_capacity_is_refused() {
        let mut cache = KvCache::<Cpu>::new(1, 2);
        cache.write(filled(1, 1, 1.0), filled(1, 1, 1.0), &Placement::new(vec![0], vec![0], &Default::default()));
        cache.view(3);
    }
}
