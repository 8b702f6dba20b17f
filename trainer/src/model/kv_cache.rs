//! One layer's paged key/value cache for generation: `[blocks, kv_heads, block, head_dim]`
//! buffers in the compute dtype, allocated at the first write, and each row of the batch
//! being generated holds some of the blocks (its table, `ops::kv_write::Placement`; which
//! blocks a row holds is the generation engine's business, `generate`). Rows' new keys are
//! written at their own positions in place (`ops::kv_write`: the cache is the only owner of
//! its buffers between steps). A prefill's attention reads the pass's own keys; a decoding
//! step's writes each row's new key and reads the row's visible positions in one op
//! (`ops::decode_attention`).

use burn::prelude::*;

use crate::ops::decode_attention::{DecodeAttention, decode_attention};
use crate::ops::kernels::Kernels;
use crate::ops::kv_write::{KvWrite, Placement, gather_rows, kv_write};

#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    blocks: usize,
    block: usize,
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
    /// Each row's positions from its first to its new key (a decoding step, one position a
    /// row; `Placement::firsts`).
    Cache,
}

impl<B: KvWrite> KvCache<B> {
    /// An empty cache of `blocks` blocks of `block` positions.
    pub fn new(blocks: usize, block: usize) -> Self {
        KvCache { k: None, v: None, blocks, block }
    }

    /// Writes `k`, `v` (`[rows, kv_heads, t, head_dim]`) at `at` (each row's blocks and
    /// first position).
    pub fn write(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, at: &Placement<B>) {
        let [k_buffer, v_buffer] = self.buffers(&k);
        let [k, v] = kv_write([k_buffer, v_buffer], [k, v], at);
        (self.k, self.v) = (Some(k), Some(v));
    }

    /// The keys' and values' buffers, taken out (zeros in `like`'s dtype at the first write).
    fn buffers(&mut self, like: &Tensor<B, 4>) -> [Tensor<B, 4>; 2] {
        let [_, heads, _, d] = like.dims();
        let (blocks, block) = (self.blocks, self.block);
        let buffer = |old: Option<Tensor<B, 4>>| old.unwrap_or_else(|| Tensor::zeros([blocks, heads, block, d], (&like.device(), like.dtype())));
        [buffer(self.k.take()), buffer(self.v.take())]
    }

    /// The keys and values of the rows of `at` at their positions `0..visible`, read
    /// through their blocks (`[rows, kv_heads, visible, head_dim]`; positions never
    /// written read as zeros and must be hidden from the queries).
    pub fn rows(&self, at: &Placement<B>, visible: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let gather = |x: &Option<Tensor<B, 4>>| gather_rows(x.clone().expect("a cache is written before it is read"), at, visible);
        (gather(&self.k), gather(&self.v))
    }
}

impl<B: DecodeAttention> KvCache<B> {
    /// A decoding step's attention: each row's new key and value (`k`, `v` `[rows,
    /// kv_heads, 1, head_dim]`) written at `at`, and its queries `q` (`[rows, heads, 1,
    /// head_dim]`) attending to its positions from `at.firsts` to the new key: `[rows,
    /// heads, 1, head_dim]`.
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

    /// Writes land in their rows' blocks at their positions, and reading rows back shows
    /// what was asked.
    #[test]
    fn writes_land_in_their_rows_blocks() {
        let device = Default::default();
        let mut cache = KvCache::<Cpu>::new(5, 2);
        let at = Placement::new(vec![vec![4, 0], vec![2, 1]], vec![0, 1], &device);
        cache.write(filled(2, 2, 1.0), filled(2, 2, -1.0), &at);
        let (k, v) = cache.rows(&at, 4);
        assert_eq!(k.dims(), [2, 1, 4, 2]);
        let k: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(&k[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], "row 0: positions 0 and 1");
        assert_eq!(&k[8..16], &[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0], "row 1: positions 1 and 2");
        assert_eq!(v.into_data().to_vec::<f32>().unwrap()[2..4], [-1.0, -1.0]);
    }

    #[test]
    #[should_panic(expected = "does not fit a row of 1 blocks")]
    fn a_write_past_a_rows_blocks_is_refused() {
        let mut cache = KvCache::<Cpu>::new(2, 2);
        cache.write(filled(1, 1, 1.0), filled(1, 1, 1.0), &Placement::new(vec![vec![0]], vec![2], &Default::default()));
    }
}
