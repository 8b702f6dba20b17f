//! What the flash-attention kernels share: blocks of `BLOCK` rows of a head's `[seq,
//! head_dim]` matrix staged in shared memory, and the tensor-core operands read from them.
//!
//! A cube is four planes (128 units); each plane owns 16 rows of a block (a tile; the
//! forward can give a plane several, `FORWARD_TILES`). Products
//! run on `mma.sync` m16n8k16 (16-bit floats in, f32 accumulators), through cubecl's
//! manual MMA: a lane holds an A operand (16 x 16) as 4 pairs, a B operand (16 x 8) as 2
//! pairs and an accumulator (16 x 8) as 2 f32 pairs, in PTX's layout: for lane `4g + t`
//! the accumulator's pairs are row `g`, columns `2t, 2t + 1`, and row `g + 8`, the same
//! columns. The A operand of a 16-column slice is the accumulators of its two 8-column
//! tiles in that order, which lets probabilities computed in registers feed the next
//! product without leaving them (`pairs_as_operands`).
//!
//! Staged rows are 16-byte vectors, padded by one vector so that the 8 rows one
//! `ldmatrix` reads start in different banks. `ldmatrix` fills the operands: A and a
//! transposed B (rows of the block along the product's inner dimension) take the same
//! addresses, a B from rows along its outer dimension takes them swapped.

use cubecl::cmma::MmaDefinition;
use cubecl::ir::MatrixIdent;
use cubecl::prelude::*;

/// Rows of a staged block (queries or keys), and of a cube's share of the work.
pub(crate) const BLOCK: usize = 64;
/// Units of a cube: four planes of 32 lanes.
pub(crate) const UNITS: u32 = 128;
/// A 16-byte vector of 16-bit floats.
pub(crate) type Wide = Const<8>;
/// Two values: one 32-bit register of 16-bit floats, or an accumulator's f32 pair.
pub(crate) type Pair = Const<2>;

/// A block of `rows` rows of `d` values in shared memory (padded rows).
#[cube]
pub(crate) fn new_block<E: Float>(#[comptime] rows: usize, #[comptime] d: usize) -> SharedMemory<Vector<E, Wide>> {
    SharedMemory::<Vector<E, Wide>>::new(comptime!(rows * (d / 8 + 1)))
}

/// How the kernels' `[batch, heads, seq, d]` tensors lie in memory: for each, `true` when
/// token-major (a `[batch, seq, heads, d]` buffer, as the projections give keys and values
/// and take the output back), `false` when head-major (contiguous `[batch, heads, seq,
/// d]`). `out` is the forward's output as the backward reads it; the forward writes it
/// token-major, the backward writes `dq`, `dk` head-major and `dv` token-major.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub(crate) struct Layouts {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub dy: bool,
    pub out: bool,
}

/// The row (of `d` values) of position `pos` of head `head` (`batch · heads + h`) in a
/// tensor of `heads` heads, token-major or head-major (`Layouts`).
#[cube]
pub(crate) fn row_of(head: u32, pos: u32, heads: u32, seq: u32, #[comptime] tokens: bool) -> u32 {
    let mut row = head * seq + pos;
    if tokens {
        row = ((head / heads) * seq + pos) * heads + head % heads;
    }
    row
}

/// Copies positions `first_pos..first_pos + rows` of head `head` of `src` (rows of `d`
/// values; `heads` heads, token-major or not) into `block`: every unit of the cube copies
/// its share of 16-byte vectors.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_block<E: Float>(
    src: &Tensor<Vector<E, Wide>>,
    head: u32,
    first_pos: u32,
    heads: u32,
    seq: u32,
    block: &mut SharedMemory<Vector<E, Wide>>,
    #[comptime] tokens: bool,
    #[comptime] rows: usize,
    #[comptime] d: usize,
) {
    let row_vectors = comptime!(d / 8);
    let first = row_of(head, first_pos, heads, seq, tokens) as usize;
    let mut step = 1usize;
    if tokens {
        step = heads as usize;
    }
    #[unroll]
    for i in 0..comptime!(rows * d / 8 / UNITS as usize) {
        let at = UNIT_POS as usize + i * UNITS as usize;
        let (row, col) = (at / row_vectors, at % row_vectors);
        block[row * (row_vectors + 1) + col] = src[(first + row * step) * row_vectors + col];
    }
}

/// Copies `BLOCK` f32 values from `src[first..]` into `block` (the first `BLOCK` units).
#[cube]
pub(crate) fn stage_row_values(src: &Tensor<f32>, first: u32, block: &mut SharedMemory<f32>) {
    if UNIT_POS < BLOCK as u32 {
        block[UNIT_POS as usize] = src[(first + UNIT_POS) as usize];
    }
}

/// Four 8 x 8 matrices of `block` through one `ldmatrix`: rows `row..row + 16` and
/// columns `col..col + 16` (`col` a multiple of 8). `rows_first`: the matrices go rows
/// 0-7, rows 8-15, then the same rows 8 columns on (an A operand, or with `transpose` a B
/// operand whose rows are the inner dimension); otherwise columns first (a B operand of
/// two 8-wide tiles whose rows are its outer dimension, each tile's inner halves in turn).
#[cube]
pub(crate) fn load_four<E: Float>(
    block: &SharedMemory<Vector<E, Wide>>,
    row: u32,
    col: u32,
    #[comptime] rows_first: bool,
    #[comptime] transpose: bool,
    #[comptime] d: usize,
) -> Array<Vector<E, Pair>> {
    let def = MmaDefinition::<E, E, f32>::new(16usize, 8usize, 16usize);
    let lane = UNIT_POS_PLANE;
    let matrix = lane / 8;
    let mut row_half = matrix % 2;
    let mut col_half = matrix / 2;
    if !rows_first {
        row_half = matrix / 2;
        col_half = matrix % 2;
    }
    let r = row + row_half * 8 + lane % 8;
    let at = (r * comptime!(d as u32 / 8 + 1) + col / 8 + col_half) as usize;
    def.load_matrix::<Vector<E, Wide>, Pair>(&block.slice(at, at + 1), MatrixIdent::A, 4usize, transpose)
}

/// The A operands of this plane's `16 · tiles` rows of `block` (starting at `row`) over all
/// `d` columns: for each 16-row tile, `d / 16` slices of 4 pairs.
#[cube]
pub(crate) fn row_operands<E: Float>(
    block: &SharedMemory<Vector<E, Wide>>,
    row: u32,
    #[comptime] tiles: usize,
    #[comptime] d: usize,
) -> Array<Vector<E, Pair>> {
    let mut out = Array::<Vector<E, Pair>>::new(comptime!(tiles * d / 16 * 4));
    #[unroll]
    for m in 0..tiles {
        #[unroll]
        for kk in 0..comptime!(d / 16) {
            let four = load_four::<E>(block, row + m as u32 * 16, kk as u32 * 16, true, false, d);
            #[unroll]
            for i in 0..4usize {
                out[(m * comptime!(d / 16) + kk) * 4 + i] = four[i];
            }
        }
    }
    out
}

/// `acc[at..at + 2] += a[a_at..a_at + 4] · (b0, b1)`: one m16n8k16 product.
#[cube]
pub(crate) fn mma<E: Float>(a: &Array<Vector<E, Pair>>, a_at: usize, b0: Vector<E, Pair>, b1: Vector<E, Pair>, acc: &mut Array<Vector<f32, Pair>>, at: usize) {
    let def = MmaDefinition::<E, E, f32>::new(16usize, 8usize, 16usize);
    let mut a4 = Array::<Vector<E, Pair>>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        a4[i] = a[a_at + i];
    }
    let mut b = Array::<Vector<E, Pair>>::new(2usize);
    b[0] = b0;
    b[1] = b1;
    let mut c = Array::<Vector<f32, Pair>>::new(2usize);
    c[0] = acc[at];
    c[1] = acc[at + 1];
    let out = def.execute(&a4, &b, &c);
    acc[at] = out[0];
    acc[at + 1] = out[1];
}

/// `len` zeroed accumulator pairs.
#[cube]
pub(crate) fn zeros(#[comptime] len: usize) -> Array<Vector<f32, Pair>> {
    let mut out = Array::<Vector<f32, Pair>>::new(len);
    #[unroll]
    for i in 0..len {
        out[i] = Vector::new(0.0);
    }
    out
}

/// `acc` `+= a · bᵀ` for each of this plane's `tiles` 16-row tiles: `a` its A operands
/// over `d` columns (`row_operands`), `b` the `BLOCK` rows of `block` (the product's
/// columns); a tile's accumulator is `BLOCK / 8` column tiles of 2 pairs. Each operand read
/// from `block` serves every row tile.
#[cube]
pub(crate) fn times_block_transposed<E: Float>(
    a: &Array<Vector<E, Pair>>,
    block: &SharedMemory<Vector<E, Wide>>,
    acc: &mut Array<Vector<f32, Pair>>,
    #[comptime] tiles: usize,
    #[comptime] d: usize,
) {
    #[unroll]
    for kk in 0..comptime!(d / 16) {
        #[unroll]
        for np in 0..comptime!(BLOCK / 16) {
            let b = load_four::<E>(block, np as u32 * 16, kk as u32 * 16, false, false, d);
            #[unroll]
            for m in 0..tiles {
                let (a_at, at) = ((m * comptime!(d / 16) + kk) * 4, m * comptime!(BLOCK / 4) + np * 4);
                mma::<E>(a, a_at, b[0], b[1], acc, at);
                mma::<E>(a, a_at, b[2], b[3], acc, at + 2);
            }
        }
    }
}

/// `acc` (per row tile, 16 rows x `d` columns) `+= p · block` where `p` is, per row tile,
/// 16 rows x `BLOCK` accumulator pairs (converted to `E`) and `block` `BLOCK` rows of `d`
/// values.
#[cube]
pub(crate) fn pairs_times_block<E: Float>(
    p: &Array<Vector<f32, Pair>>,
    block: &SharedMemory<Vector<E, Wide>>,
    acc: &mut Array<Vector<f32, Pair>>,
    #[comptime] tiles: usize,
    #[comptime] d: usize,
) {
    #[unroll]
    for kk in 0..comptime!(BLOCK / 16) {
        let a = pairs_as_operands::<E>(p, kk, tiles);
        #[unroll]
        for dp in 0..comptime!(d / 16) {
            let b = load_four::<E>(block, kk as u32 * 16, dp as u32 * 16, true, true, d);
            #[unroll]
            for m in 0..tiles {
                let at = m * comptime!(d / 4) + dp * 4;
                mma::<E>(&a, m * 4, b[0], b[1], acc, at);
                mma::<E>(&a, m * 4, b[2], b[3], acc, at + 2);
            }
        }
    }
}

/// For each row tile, the A operand of columns `16 · kk..16 · kk + 16` from the
/// accumulator pairs of its two 8-column tiles, converted to `E`: 4 pairs a row tile.
#[cube]
pub(crate) fn pairs_as_operands<E: Float>(p: &Array<Vector<f32, Pair>>, kk: usize, #[comptime] tiles: usize) -> Array<Vector<E, Pair>> {
    let mut a = Array::<Vector<E, Pair>>::new(comptime!(tiles * 4));
    #[unroll]
    for m in 0..tiles {
        #[unroll]
        for i in 0..4usize {
            a[m * 4 + i] = Vector::cast_from(p[m * comptime!(BLOCK / 4) + kk * 4 + i]);
        }
    }
    a
}

/// The max of `x` over the four lanes that hold a row.
#[cube]
pub(crate) fn row_max(x: f32) -> f32 {
    let y = max(x, plane_shuffle_xor(x, 1));
    max(y, plane_shuffle_xor(y, 2))
}

/// The sum of `x` over the four lanes that hold a row.
#[cube]
pub(crate) fn row_sum(x: f32) -> f32 {
    let y = x + plane_shuffle_xor(x, 1);
    y + plane_shuffle_xor(y, 2)
}
