//! Causal flash attention's kernels on tensor cores: the scores never leave the chip.
//!
//! Tensors are `[batch, heads, seq, d]` (queries, outputs and their gradients) and `[batch,
//! kv_heads, seq, d]` (keys, values and theirs) in bf16 or f16, each head-major or
//! token-major in memory (`Layouts`: read where the projections left them, so nothing is
//! transposed in between), `seq` a multiple of `BLOCK`, `d` 64 or 128; query head `h`
//! reads key/value head `h / group`. Every kernel runs cubes of four planes over blocks of
//! 64 rows (`flash_tiles`). A kernel stages two blocks at a time: the block whose rows it
//! keeps as operands in registers (queries, or keys and values) is read once, and its
//! shared memory then takes the blocks the loop streams, so heads of 128 fit (two padded
//! blocks of 64 x 128 values are 34 KiB of the 48 KiB a cube may have).
//!
//! - Forward, a cube per block of queries: each key block's scores `s = q kᵀ · scale`
//!   stay in registers, the running row max `m` and sum `l` rescale the output (the
//!   online softmax), and the block's `p` feeds `p v` from the same registers. It writes
//!   the output and each row's `lse = m + ln l`, which is all the backward pass keeps.
//! - `delta = rowsum(dy ⊙ y)`, one unit per row.
//! - The query gradient, a cube per block of queries: `p = exp(s − lse)` recomputed,
//!   `dp = dy vᵀ`, `ds = p ⊙ (dp − delta)`, `dq += ds k · scale`.
//! - The key and value gradients, a cube per block of keys of a key/value head, over its
//!   group's query heads: the transposed products (`pᵀ`, `dsᵀ` as keys x queries), `dv +=
//!   pᵀ dy`, `dk += dsᵀ q · scale`; no atomics, each gradient written once.
//!
//! Causal blocks: a query block reads the key blocks up to its own, and the diagonal block
//! masks keys after the query. Query blocks with the most keys start first.

use cubecl::prelude::*;

use crate::ops::attention::flash_tiles::{
    BLOCK, Layouts, Pair, Wide, new_block, pairs_times_block, row_max, row_of, row_operands, row_sum, stage_block, stage_row_values, times_block_transposed,
    zeros,
};

/// A score that no probability comes from (masked, or no key seen yet): finite, so that
/// no infinity or NaN ever enters the kernels' arithmetic.
const HIDDEN: f32 = -1.0e30;

/// Query tiles of 16 rows a plane of the forward takes. With two, every operand read from
/// shared memory serves two products, but on an H100 the forward ran 4% slower (its
/// registers); one keeps blocks of 64 queries.
const FORWARD_TILES: usize = 1;
/// Query rows a cube of the forward takes.
pub(crate) const FORWARD_BLOCK: usize = 4 * 16 * FORWARD_TILES;

/// `o = softmax(q kᵀ · scale, causal) v` and `lse` per query row.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_forward_kernel<E: Float>(
    q: &Tensor<Vector<E, Wide>>,
    k: &Tensor<Vector<E, Wide>>,
    v: &Tensor<Vector<E, Wide>>,
    out: &mut Tensor<Vector<E, Pair>>,
    lse: &mut Tensor<f32>,
    seq: u32,
    heads: u32,
    group: u32,
    scale: f32,
    #[comptime] layouts: Layouts,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let rows = FORWARD_BLOCK as u32;
    let qb = seq / rows - 1 - CUBE_POS_X;
    let head = CUBE_POS_Y;
    let kv_head = head / group;
    let kv_heads = heads / group;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    // The queries' block takes the values once their operands are in registers.
    let mut qs = new_block::<E>(FORWARD_BLOCK, d);
    let mut ks = new_block::<E>(BLOCK, d);
    stage_block::<E>(q, head, qb * rows, heads, seq, &mut qs, layouts.q, FORWARD_BLOCK, d);
    sync_cube();
    let qf = row_operands::<E>(&qs, plane * comptime!(16 * FORWARD_TILES as u32), FORWARD_TILES, d);
    let mut o = zeros(comptime!(FORWARD_TILES * d / 4));
    // The rows this lane holds: `r = 2m + h` is tile m's row g (h = 0) or g + 8 (h = 1),
    // with its running max and sum.
    let first_row = qb * rows + plane * comptime!(16 * FORWARD_TILES as u32) + g;
    let mut m_run = Array::<f32>::new(comptime!(2 * FORWARD_TILES));
    let mut l_run = Array::<f32>::new(comptime!(2 * FORWARD_TILES));
    #[unroll]
    for r in 0..comptime!(2 * FORWARD_TILES) {
        m_run[r] = f32::new(HIDDEN);
        l_run[r] = f32::new(0.0);
    }
    for kb in 0..(qb + 1) * rows / block {
        sync_cube();
        stage_block::<E>(k, kv_head, kb * block, kv_heads, seq, &mut ks, layouts.k, BLOCK, d);
        stage_block::<E>(v, kv_head, kb * block, kv_heads, seq, &mut qs, layouts.v, BLOCK, d);
        sync_cube();
        let mut s = zeros(comptime!(FORWARD_TILES * BLOCK / 4));
        times_block_transposed::<E>(&qf, &ks, &mut s, FORWARD_TILES, d);
        let first_key = kb * block + 2 * t;
        #[unroll]
        for r in 0..comptime!(2 * FORWARD_TILES) {
            let row = first_row + (r / 2) as u32 * 16 + (r % 2) as u32 * 8;
            let base = (r / 2) * comptime!(BLOCK / 4) + r % 2;
            let mut block_max = f32::new(HIDDEN);
            #[unroll]
            for n in 0..comptime!(BLOCK / 8) {
                let mut x = s[base + 2 * n] * Vector::new(scale);
                #[unroll]
                for e in 0..2usize {
                    if first_key + n as u32 * 8 + e as u32 > row {
                        x[e] = f32::new(HIDDEN);
                    }
                    block_max = max(block_max, x[e]);
                }
                s[base + 2 * n] = x;
            }
            let new_max = max(m_run[r], row_max(block_max));
            let alpha = (m_run[r] - new_max).exp();
            m_run[r] = new_max;
            let mut sum = f32::new(0.0);
            #[unroll]
            for n in 0..comptime!(BLOCK / 8) {
                let mut x = s[base + 2 * n];
                #[unroll]
                for e in 0..2usize {
                    x[e] = (x[e] - new_max).exp();
                    sum += x[e];
                }
                s[base + 2 * n] = x;
            }
            l_run[r] = l_run[r] * alpha + sum;
            let o_base = (r / 2) * comptime!(d / 4) + r % 2;
            #[unroll]
            for j in 0..comptime!(d / 8) {
                o[o_base + 2 * j] = o[o_base + 2 * j] * Vector::new(alpha);
            }
        }
        pairs_times_block::<E>(&s, &qs, &mut o, FORWARD_TILES, d);
    }
    let half = comptime!(d / 2);
    #[unroll]
    for r in 0..comptime!(2 * FORWARD_TILES) {
        let pos = first_row + (r / 2) as u32 * 16 + (r % 2) as u32 * 8;
        let l = row_sum(l_run[r]);
        let at = row_of(head, pos, heads, seq, true) as usize;
        let o_base = (r / 2) * comptime!(d / 4) + r % 2;
        #[unroll]
        for j in 0..comptime!(d / 8) {
            out[at * half + j * 4 + t as usize] = Vector::cast_from(o[o_base + 2 * j] * Vector::new(1.0 / l));
        }
        if t == 0 {
            lse[(head * seq + pos) as usize] = m_run[r] + l.ln();
        }
    }
}

/// `delta[row] = Σ dy[row] ⊙ y[row]` for `rows` rows of `d` values (`row` head-major).
#[cube(launch_unchecked)]
pub(crate) fn flash_delta_kernel<E: Float>(
    y: &Tensor<Vector<E, Wide>>,
    dy: &Tensor<Vector<E, Wide>>,
    delta: &mut Tensor<f32>,
    rows: u32,
    seq: u32,
    heads: u32,
    #[comptime] layouts: Layouts,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let (head, pos) = (row as u32 / seq, row as u32 % seq);
    let y_row = row_of(head, pos, heads, seq, layouts.out) as usize * comptime!(d / 8);
    let dy_row = row_of(head, pos, heads, seq, layouts.dy) as usize * comptime!(d / 8);
    let mut acc = f32::new(0.0);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        let (a, b) = (y[y_row + j], dy[dy_row + j]);
        #[unroll]
        for e in 0..8usize {
            acc += f32::cast_from(a[e]) * f32::cast_from(b[e]);
        }
    }
    delta[row] = acc;
}

/// `p = exp(s · scale − lse)` in place for a plane's 16 query rows (`top`, `top + 8`)
/// against 64 keys from `first_key + 2t`, zero for keys after the query.
#[cube]
fn row_probabilities(s: &mut Array<Vector<f32, Pair>>, scale: f32, lse_top: f32, lse_bottom: f32, first_key: u32, top: u32) {
    #[unroll]
    for n in 0..comptime!(BLOCK / 8) {
        let mut x = s[2 * n];
        let mut y = s[2 * n + 1];
        #[unroll]
        for e in 0..2usize {
            let key = first_key + n as u32 * 8 + e as u32;
            x[e] = select(key > top, f32::new(0.0), (x[e] * scale - lse_top).exp());
            y[e] = select(key > top + 8, f32::new(0.0), (y[e] * scale - lse_bottom).exp());
        }
        s[2 * n] = x;
        s[2 * n + 1] = y;
    }
}

/// `dq = (p ⊙ (dy vᵀ − delta)) k · scale` for a block of queries.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_query_gradient_kernel<E: Float>(
    q: &Tensor<Vector<E, Wide>>,
    k: &Tensor<Vector<E, Wide>>,
    v: &Tensor<Vector<E, Wide>>,
    dy: &Tensor<Vector<E, Wide>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<Vector<E, Pair>>,
    seq: u32,
    heads: u32,
    group: u32,
    scale: f32,
    #[comptime] layouts: Layouts,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let qb = seq / block - 1 - CUBE_POS_X;
    let head = CUBE_POS_Y;
    let kv_head = head / group;
    let kv_heads = heads / group;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    // The queries' and the output gradient's blocks take the keys and the values once
    // their operands are in registers.
    let mut qs = new_block::<E>(BLOCK, d);
    let mut dys = new_block::<E>(BLOCK, d);
    stage_block::<E>(q, head, qb * block, heads, seq, &mut qs, layouts.q, BLOCK, d);
    stage_block::<E>(dy, head, qb * block, heads, seq, &mut dys, layouts.dy, BLOCK, d);
    sync_cube();
    let qf = row_operands::<E>(&qs, plane * 16, 1usize, d);
    let dyf = row_operands::<E>(&dys, plane * 16, 1usize, d);
    let top = qb * block + plane * 16 + g;
    let row = (head * seq + top) as usize;
    let (lse_top, lse_bottom) = (lse[row], lse[row + 8]);
    let (delta_top, delta_bottom) = (delta[row], delta[row + 8]);
    let mut acc = zeros(comptime!(d / 8 * 2));
    for kb in 0..qb + 1 {
        sync_cube();
        stage_block::<E>(k, kv_head, kb * block, kv_heads, seq, &mut qs, layouts.k, BLOCK, d);
        stage_block::<E>(v, kv_head, kb * block, kv_heads, seq, &mut dys, layouts.v, BLOCK, d);
        sync_cube();
        let mut s = zeros(comptime!(BLOCK / 8 * 2));
        times_block_transposed::<E>(&qf, &qs, &mut s, 1usize, d);
        row_probabilities(&mut s, scale, lse_top, lse_bottom, kb * block + 2 * t, top);
        let mut dp = zeros(comptime!(BLOCK / 8 * 2));
        times_block_transposed::<E>(&dyf, &dys, &mut dp, 1usize, d);
        #[unroll]
        for n in 0..comptime!(BLOCK / 8) {
            s[2 * n] = s[2 * n] * (dp[2 * n] - Vector::new(delta_top));
            s[2 * n + 1] = s[2 * n + 1] * (dp[2 * n + 1] - Vector::new(delta_bottom));
        }
        pairs_times_block::<E>(&s, &qs, &mut acc, 1usize, d);
    }
    let half = comptime!(d / 2);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        dq[row * half + j * 4 + t as usize] = Vector::cast_from(acc[2 * j] * Vector::new(scale));
        dq[(row + 8) * half + j * 4 + t as usize] = Vector::cast_from(acc[2 * j + 1] * Vector::new(scale));
    }
}

/// `dv = Σ pᵀ dy` and `dk = Σ dsᵀ q · scale` for a block of keys of a key/value head,
/// summed over the query heads of its group and the query blocks that see it.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_key_value_gradient_kernel<E: Float>(
    q: &Tensor<Vector<E, Wide>>,
    k: &Tensor<Vector<E, Wide>>,
    v: &Tensor<Vector<E, Wide>>,
    dy: &Tensor<Vector<E, Wide>>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<Vector<E, Pair>>,
    dv: &mut Tensor<Vector<E, Pair>>,
    seq: u32,
    heads: u32,
    group: u32,
    scale: f32,
    #[comptime] layouts: Layouts,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let kb = CUBE_POS_X;
    let kv_head = CUBE_POS_Y;
    let kv_heads = heads / group;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    // The keys' and the values' blocks take the queries and the output's gradient once
    // their operands are in registers.
    let mut ks = new_block::<E>(BLOCK, d);
    let mut vs = new_block::<E>(BLOCK, d);
    let mut lses = SharedMemory::<f32>::new(BLOCK);
    let mut deltas = SharedMemory::<f32>::new(BLOCK);
    stage_block::<E>(k, kv_head, kb * block, kv_heads, seq, &mut ks, layouts.k, BLOCK, d);
    stage_block::<E>(v, kv_head, kb * block, kv_heads, seq, &mut vs, layouts.v, BLOCK, d);
    sync_cube();
    let kf = row_operands::<E>(&ks, plane * 16, 1usize, d);
    let vf = row_operands::<E>(&vs, plane * 16, 1usize, d);
    let key_top = kb * block + plane * 16 + g;
    let mut dk_acc = zeros(comptime!(d / 8 * 2));
    let mut dv_acc = zeros(comptime!(d / 8 * 2));
    for r in 0..group {
        let head = kv_head * group + r;
        for qb in kb..seq / block {
            let first = head * seq + qb * block;
            sync_cube();
            stage_block::<E>(q, head, qb * block, heads, seq, &mut ks, layouts.q, BLOCK, d);
            stage_block::<E>(dy, head, qb * block, heads, seq, &mut vs, layouts.dy, BLOCK, d);
            stage_row_values(lse, first, &mut lses);
            stage_row_values(delta, first, &mut deltas);
            sync_cube();
            let mut p = zeros(comptime!(BLOCK / 8 * 2));
            times_block_transposed::<E>(&kf, &ks, &mut p, 1usize, d);
            let first_query = qb * block + 2 * t;
            #[unroll]
            for n in 0..comptime!(BLOCK / 8) {
                let mut x = p[2 * n];
                let mut y = p[2 * n + 1];
                #[unroll]
                for e in 0..2usize {
                    let col = n * 8 + 2 * t as usize + e;
                    let query = first_query + n as u32 * 8 + e as u32;
                    x[e] = select(query < key_top, f32::new(0.0), (x[e] * scale - lses[col]).exp());
                    y[e] = select(query < key_top + 8, f32::new(0.0), (y[e] * scale - lses[col]).exp());
                }
                p[2 * n] = x;
                p[2 * n + 1] = y;
            }
            pairs_times_block::<E>(&p, &vs, &mut dv_acc, 1usize, d);
            let mut dp = zeros(comptime!(BLOCK / 8 * 2));
            times_block_transposed::<E>(&vf, &vs, &mut dp, 1usize, d);
            #[unroll]
            for n in 0..comptime!(BLOCK / 8) {
                let mut delta_pair = Vector::<f32, Pair>::new(0.0);
                #[unroll]
                for e in 0..2usize {
                    delta_pair[e] = deltas[n * 8 + 2 * t as usize + e];
                }
                p[2 * n] = p[2 * n] * (dp[2 * n] - delta_pair);
                p[2 * n + 1] = p[2 * n + 1] * (dp[2 * n + 1] - delta_pair);
            }
            pairs_times_block::<E>(&p, &ks, &mut dk_acc, 1usize, d);
        }
    }
    let row = (kv_head * seq + key_top) as usize;
    let (dv_top, dv_bottom) = (row_of(kv_head, key_top, kv_heads, seq, true) as usize, row_of(kv_head, key_top + 8, kv_heads, seq, true) as usize);
    let half = comptime!(d / 2);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        dk[row * half + j * 4 + t as usize] = Vector::cast_from(dk_acc[2 * j] * Vector::new(scale));
        dk[(row + 8) * half + j * 4 + t as usize] = Vector::cast_from(dk_acc[2 * j + 1] * Vector::new(scale));
        dv[dv_top * half + j * 4 + t as usize] = Vector::cast_from(dv_acc[2 * j]);
        dv[dv_bottom * half + j * 4 + t as usize] = Vector::cast_from(dv_acc[2 * j + 1]);
    }
}
