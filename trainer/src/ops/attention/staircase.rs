//! Causal attention's scores kept as a staircase: the queries in chunks of `chunk`
//! positions, each chunk's scores only over the keys up to the chunk's last position.
//!
//! Written out in full, the scores of one head are a `[seq, seq]` square of which causal
//! attention reads only the lower triangle; every product and pass around the softmax
//! pays for the whole square. Cut into chunks of `chunk` query positions, chunk `i` needs
//! the keys `[0, width_i)` with `width_i = min(seq, (i + 1) · chunk)`, and the scores of a
//! head are the chunks one after another, each a `[rows_i, width_i]` matrix: with `n`
//! equal chunks `(n + 1) / 2n` of the square (5/8 for 4 chunks, 9/16 for 8), in memory,
//! in reads and writes, and in the products' work.
//!
//! This module is the plan, as data: where each row of a head's scores lies and which
//! block products (`BlockProduct`, one per chunk and product) make the attention's forward
//! and backward passes:
//!
//! ```text
//! forward   S_i = scale · Q_i K[..w]ᵀ      softmax(S_i) = P_i      Y_i = P_i V[..w]
//! backward  dP_i = dY_i V[..w]ᵀ            dV[..w] += P_iᵀ dY_i
//!           dS_i = P_i ⊙ (dP_i − rowsum(dP_i ⊙ P_i))
//!           dQ_i = scale · dS_i K[..w]     dK[..w] += scale · dS_iᵀ Q_i
//! ```
//!
//! The sums over chunks run from the last chunk (whose keys are all of them, so it writes
//! every row of `dV` and `dK`) to the first, each later product adding to what is there.
//! CUDA runs the plan on cuBLAS (`cublas`); the tests run it with plain loops
//! against the attention op's generic passes.

/// The staircase of one head's scores for `seq` positions in chunks of `chunk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Staircase {
    pub seq: usize,
    pub chunk: usize,
}

/// One chunk of query positions: its first position, how many, how many keys its rows
/// see (`width`), and where its `[rows, width]` scores start in the head's staircase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub first: usize,
    pub rows: usize,
    pub width: usize,
    pub offset: usize,
}

impl Staircase {
    /// `seq` positions in chunks of `chunk` (at least one position, at most `seq`).
    pub(crate) fn new(seq: usize, chunk: usize) -> Self {
        Staircase { seq, chunk: chunk.clamp(1, seq.max(1)) }
    }

    /// The chunks, first to last.
    pub(crate) fn chunks(self) -> impl DoubleEndedIterator<Item = Chunk> {
        let count = self.seq.div_ceil(self.chunk);
        (0..count).map(move |i| {
            let first = i * self.chunk;
            let rows = self.chunk.min(self.seq - first);
            Chunk { first, rows, width: first + rows, offset: self.chunk * self.chunk * (i * (i + 1) / 2) }
        })
    }

    /// Scores of one head: the staircase's elements.
    pub(crate) fn per_head(self) -> usize {
        self.chunks().map(|c| c.rows * c.width).sum()
    }

    /// Where row `t` of one head's scores starts and how many keys it holds: the closed
    /// form the CUDA kernels compute (every chunk before the last is full).
    #[cfg(test)]
    pub(crate) fn row(self, t: usize) -> (usize, usize) {
        let i = t / self.chunk;
        let width = ((i + 1) * self.chunk).min(self.seq);
        (self.chunk * self.chunk * (i * (i + 1) / 2) + (t - i * self.chunk) * width, width)
    }
}

/// The per-head tensors of the attention op: `[seq, head_dim]` for the heads' inputs,
/// outputs and their gradients, the staircase for the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Buffer {
    Q,
    K,
    V,
    Y,
    DY,
    DQ,
    DK,
    DV,
    /// The scores `S` (written by the products, read by the softmax).
    Scores,
    /// The probabilities `P` (written by the softmax, kept for the backward pass).
    Probabilities,
    /// `dP` (written by the products, read by the softmax's backward).
    DProbabilities,
    /// `dS` (written by the softmax's backward).
    DScores,
}

/// A matrix inside one head's buffer: stored row-major from `offset` with rows `ld`
/// elements apart, and read as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Operand {
    pub buffer: Buffer,
    pub offset: usize,
    pub ld: usize,
    pub transposed: bool,
}

/// `out = alpha · a · b + beta · out` for `a` `[m, k]` and `b` `[k, n]` as read, on every
/// head at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BlockProduct {
    pub shape: [usize; 3],
    pub a: Operand,
    pub b: Operand,
    pub out: Operand,
    pub alpha: f64,
    pub beta: f64,
}

fn stored(buffer: Buffer, offset: usize, ld: usize) -> Operand {
    Operand { buffer, offset, ld, transposed: false }
}

fn transposed(buffer: Buffer, offset: usize, ld: usize) -> Operand {
    Operand { buffer, offset, ld, transposed: true }
}

impl Staircase {
    /// `S_i = scale · Q_i K[..w]ᵀ` for every chunk.
    pub(crate) fn scores(self, head_dim: usize, scale: f64) -> Vec<BlockProduct> {
        let d = head_dim;
        self.chunks()
            .map(|c| BlockProduct {
                shape: [c.rows, d, c.width],
                a: stored(Buffer::Q, c.first * d, d),
                b: transposed(Buffer::K, 0, d),
                out: stored(Buffer::Scores, c.offset, c.width),
                alpha: scale,
                beta: 0.0,
            })
            .collect()
    }

    /// `Y_i = P_i V[..w]` for every chunk.
    pub(crate) fn values(self, head_dim: usize) -> Vec<BlockProduct> {
        let d = head_dim;
        self.chunks()
            .map(|c| BlockProduct {
                shape: [c.rows, c.width, d],
                a: stored(Buffer::Probabilities, c.offset, c.width),
                b: stored(Buffer::V, 0, d),
                out: stored(Buffer::Y, c.first * d, d),
                alpha: 1.0,
                beta: 0.0,
            })
            .collect()
    }

    /// Before the softmax's backward, last chunk first: `dP_i = dY_i V[..w]ᵀ` and
    /// `dV[..w] += P_iᵀ dY_i`.
    pub(crate) fn value_gradients(self, head_dim: usize) -> Vec<BlockProduct> {
        let d = head_dim;
        self.chunks()
            .rev()
            .enumerate()
            .flat_map(|(n, c)| {
                let dy = stored(Buffer::DY, c.first * d, d);
                [
                    BlockProduct {
                        shape: [c.rows, d, c.width],
                        a: dy,
                        b: transposed(Buffer::V, 0, d),
                        out: stored(Buffer::DProbabilities, c.offset, c.width),
                        alpha: 1.0,
                        beta: 0.0,
                    },
                    BlockProduct {
                        shape: [c.width, c.rows, d],
                        a: transposed(Buffer::Probabilities, c.offset, c.width),
                        b: dy,
                        out: stored(Buffer::DV, 0, d),
                        alpha: 1.0,
                        beta: if n == 0 { 0.0 } else { 1.0 },
                    },
                ]
            })
            .collect()
    }

    /// After the softmax's backward, last chunk first: `dQ_i = scale · dS_i K[..w]` and
    /// `dK[..w] += scale · dS_iᵀ Q_i`.
    pub(crate) fn query_key_gradients(self, head_dim: usize, scale: f64) -> Vec<BlockProduct> {
        let d = head_dim;
        self.chunks()
            .rev()
            .enumerate()
            .flat_map(|(n, c)| {
                [
                    BlockProduct {
                        shape: [c.rows, c.width, d],
                        a: stored(Buffer::DScores, c.offset, c.width),
                        b: stored(Buffer::K, 0, d),
                        out: stored(Buffer::DQ, c.first * d, d),
                        alpha: scale,
                        beta: 0.0,
                    },
                    BlockProduct {
                        shape: [c.width, c.rows, d],
                        a: transposed(Buffer::DScores, c.offset, c.width),
                        b: stored(Buffer::Q, c.first * d, d),
                        out: stored(Buffer::DK, 0, d),
                        alpha: scale,
                        beta: if n == 0 { 0.0 } else { 1.0 },
                    },
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use burn::prelude::*;
    use burn::tensor::{Distribution, TensorPrimitive};

    use super::*;
    use crate::Cpu;
    use crate::ops::attention::{forward_keeping_probabilities, gradients};
    use crate::ops::kernels::Kernels;

    #[test]
    fn rows_lie_one_after_another_and_see_their_keys() {
        for (seq, chunk) in [(1, 4), (7, 7), (7, 100), (8, 2), (9, 2), (13, 4), (2048, 256)] {
            let plan = Staircase::new(seq, chunk);
            let mut next = 0;
            for t in 0..seq {
                let (offset, width) = plan.row(t);
                assert_eq!(offset, next, "row {t} of {plan:?}");
                assert!(width > t && width <= seq, "row {t} of {plan:?} holds {width} keys");
                assert!(width - t <= plan.chunk, "row {t} of {plan:?} holds {width} keys, more than its chunk needs");
                next = offset + width;
            }
            assert_eq!(next, plan.per_head(), "{plan:?}");
            let from_chunks: Vec<(usize, usize)> = plan.chunks().flat_map(|c| (0..c.rows).map(move |r| (c.offset + r * c.width, c.width))).collect();
            assert_eq!(from_chunks, (0..seq).map(|t| plan.row(t)).collect::<Vec<_>>(), "{plan:?}");
        }
    }

    #[test]
    fn equal_chunks_keep_their_share_of_the_square() {
        assert_eq!(Staircase::new(2048, 256).per_head(), 2048 * 2048 * 9 / 16);
        assert_eq!(Staircase::new(2048, 512).per_head(), 2048 * 2048 * 5 / 8);
        assert_eq!(Staircase::new(2048, 4096).per_head(), 2048 * 2048);
    }

    /// The heads' buffers of a plain-loop run of the plan, `heads` heads each.
    struct Run {
        heads: usize,
        seq: usize,
        head_dim: usize,
        plan: Staircase,
        buffers: HashMap<Buffer, Vec<f32>>,
    }

    impl Run {
        fn per_head(&self, buffer: Buffer) -> usize {
            match buffer {
                Buffer::Scores | Buffer::Probabilities | Buffer::DProbabilities | Buffer::DScores => self.plan.per_head(),
                _ => self.seq * self.head_dim,
            }
        }

        fn buffer(&mut self, buffer: Buffer) -> &mut Vec<f32> {
            let len = self.heads * self.per_head(buffer);
            // NaN where nothing was written: a read of it shows in every result.
            self.buffers.entry(buffer).or_insert_with(|| vec![f32::NAN; len])
        }

        fn product(&mut self, p: &BlockProduct) {
            let [m, k, n] = p.shape;
            for head in 0..self.heads {
                let read = |run: &mut Run, o: Operand, row: usize, col: usize| {
                    let at = if o.transposed { o.offset + col * o.ld + row } else { o.offset + row * o.ld + col };
                    let base = head * run.per_head(o.buffer);
                    run.buffer(o.buffer)[base + at]
                };
                for i in 0..m {
                    for j in 0..n {
                        let sum: f64 = (0..k).map(|l| read(self, p.a, i, l) as f64 * read(self, p.b, l, j) as f64).sum();
                        let at = head * self.per_head(p.out.buffer) + p.out.offset + i * p.out.ld + j;
                        let out = self.buffer(p.out.buffer);
                        let before = if p.beta == 0.0 { 0.0 } else { p.beta * out[at] as f64 };
                        out[at] = (p.alpha * sum + before) as f32;
                    }
                }
            }
        }

        /// The staircase softmax (and its backward) row by row: the kernels' contract.
        fn rows(&mut self, from: [Buffer; 2], to: Buffer, backward: bool) {
            for head in 0..self.heads {
                for t in 0..self.seq {
                    let (offset, width) = self.plan.row(t);
                    let at = head * self.plan.per_head() + offset;
                    let x: Vec<f32> = self.buffer(from[0])[at..at + t + 1].to_vec();
                    let y: Vec<f32> = self.buffer(from[1])[at..at + t + 1].to_vec();
                    let mut row = vec![0.0f32; width];
                    if backward {
                        let dot: f32 = x.iter().zip(&y).map(|(p, dp)| p * dp).sum();
                        for j in 0..=t {
                            row[j] = x[j] * (y[j] - dot);
                        }
                    } else {
                        let max = x.iter().fold(f32::MIN, |a, &b| a.max(b));
                        let sum: f32 = x.iter().map(|s| (s - max).exp()).sum();
                        for j in 0..=t {
                            row[j] = (x[j] - max).exp() / sum;
                        }
                    }
                    self.buffer(to)[at..at + width].copy_from_slice(&row);
                }
            }
        }
    }

    fn host(t: FloatTensorOf) -> Vec<f32> {
        Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(t)).into_data().to_vec().expect("f32 values")
    }

    type FloatTensorOf = burn::tensor::ops::FloatTensor<Cpu>;

    /// The plan run with plain loops gives the generic passes' output and gradients, for
    /// chunks that divide the sequence, that do not, and one chunk.
    #[test]
    fn the_plan_computes_the_attention_ops_values_and_gradients() {
        let [heads, seq, d] = [3, 11, 4];
        let scale = 0.5;
        let random = |seed| {
            Cpu::seed(&Default::default(), seed);
            Tensor::<Cpu, 4>::random([1, heads, seq, d], Distribution::Normal(0.0, 1.0), &Default::default())
        };
        let (q, k, v, dy) = (random(1), random(2), random(3), random(4));
        let raw = |t: &Tensor<Cpu, 4>| t.clone().into_primitive().tensor();
        let (y, p) = forward_keeping_probabilities::<Cpu>(raw(&q), raw(&k), raw(&v), scale, Kernels::default());
        let [dq, dk, dv] = gradients::<Cpu>(raw(&q), raw(&k), raw(&v), p, raw(&dy), scale, Kernels::default());
        let expected = [host(y), host(dq), host(dk), host(dv)];
        for chunk in [1, 3, 4, 11, 64] {
            let plan = Staircase::new(seq, chunk);
            let mut run = Run { heads, seq, head_dim: d, plan, buffers: HashMap::new() };
            for (buffer, t) in [(Buffer::Q, &q), (Buffer::K, &k), (Buffer::V, &v), (Buffer::DY, &dy)] {
                run.buffers.insert(buffer, host(raw(t)));
            }
            plan.scores(d, scale).iter().for_each(|p| run.product(p));
            run.rows([Buffer::Scores, Buffer::Scores], Buffer::Probabilities, false);
            plan.values(d).iter().for_each(|p| run.product(p));
            plan.value_gradients(d).iter().for_each(|p| run.product(p));
            run.rows([Buffer::Probabilities, Buffer::DProbabilities], Buffer::DScores, true);
            plan.query_key_gradients(d, scale).iter().for_each(|p| run.product(p));
            for (buffer, expected) in [Buffer::Y, Buffer::DQ, Buffer::DK, Buffer::DV].into_iter().zip(&expected) {
                let actual = run.buffer(buffer).clone();
                let gap = actual.iter().zip(expected).map(|(a, e)| if a.is_nan() { f32::INFINITY } else { (a - e).abs() }).fold(0.0f32, f32::max);
                assert!(gap < 1e-5, "{buffer:?} with chunks of {chunk}: largest gap {gap} ({actual:?})");
            }
        }
    }
}
