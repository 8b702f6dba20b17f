//! Causal flash attention's kernels on tensor cores: the scores never leave the chip.
//!
//! Inputs are contiguous `[batch · heads, seq, d]` (queries, outputs and their gradients)
//! and `[batch · kv_heads, seq, d]` (keys, values and theirs) in bf16 or f16, `seq` a
//! multiple of `BLOCK`; query head `h` reads key/value head `h / group`. Every kernel runs
//! cubes of four planes over blocks of 64 rows (`flash_tiles`).
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

use super::flash_tiles::{
    BLOCK, Pair, Wide, new_block, pairs_times_block, row_max, row_operands, row_sum, stage_block, stage_row_values, times_block_transposed, zeros,
};

/// A score that no probability comes from (masked, or no key seen yet): finite, so that
/// no infinity or NaN ever enters the kernels' arithmetic.
const HIDDEN: f32 = -1.0e30;

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
    group: u32,
    scale: f32,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let qb = seq / block - 1 - CUBE_POS_X;
    let head = CUBE_POS_Y;
    let kv_head = head / group;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    let mut qs = new_block::<E>(d);
    let mut ks = new_block::<E>(d);
    let mut vs = new_block::<E>(d);
    stage_block::<E>(q, head * seq + qb * block, &mut qs, d);
    sync_cube();
    let qf = row_operands::<E>(&qs, plane * 16, d);
    let mut o = zeros(comptime!(d / 8 * 2));
    let top = qb * block + plane * 16 + g;
    let mut m_top = f32::new(HIDDEN);
    let mut m_bottom = f32::new(HIDDEN);
    let mut l_top = f32::new(0.0);
    let mut l_bottom = f32::new(0.0);
    for kb in 0..qb + 1 {
        sync_cube();
        stage_block::<E>(k, kv_head * seq + kb * block, &mut ks, d);
        stage_block::<E>(v, kv_head * seq + kb * block, &mut vs, d);
        sync_cube();
        let mut s = zeros(comptime!(BLOCK / 8 * 2));
        times_block_transposed::<E>(&qf, &ks, &mut s, d);
        let first_key = kb * block + 2 * t;
        let mut max_top = f32::new(HIDDEN);
        let mut max_bottom = f32::new(HIDDEN);
        #[unroll]
        for n in 0..comptime!(BLOCK / 8) {
            let mut x = s[2 * n] * Vector::new(scale);
            let mut y = s[2 * n + 1] * Vector::new(scale);
            #[unroll]
            for e in 0..2usize {
                let key = first_key + n as u32 * 8 + e as u32;
                if key > top {
                    x[e] = f32::new(HIDDEN);
                }
                if key > top + 8 {
                    y[e] = f32::new(HIDDEN);
                }
                max_top = max(max_top, x[e]);
                max_bottom = max(max_bottom, y[e]);
            }
            s[2 * n] = x;
            s[2 * n + 1] = y;
        }
        let new_top = max(m_top, row_max(max_top));
        let new_bottom = max(m_bottom, row_max(max_bottom));
        let alpha_top = (m_top - new_top).exp();
        let alpha_bottom = (m_bottom - new_bottom).exp();
        m_top = new_top;
        m_bottom = new_bottom;
        let mut sum_top = f32::new(0.0);
        let mut sum_bottom = f32::new(0.0);
        #[unroll]
        for n in 0..comptime!(BLOCK / 8) {
            let mut x = s[2 * n];
            let mut y = s[2 * n + 1];
            #[unroll]
            for e in 0..2usize {
                x[e] = (x[e] - m_top).exp();
                y[e] = (y[e] - m_bottom).exp();
                sum_top += x[e];
                sum_bottom += y[e];
            }
            s[2 * n] = x;
            s[2 * n + 1] = y;
        }
        l_top = l_top * alpha_top + sum_top;
        l_bottom = l_bottom * alpha_bottom + sum_bottom;
        #[unroll]
        for j in 0..comptime!(d / 8) {
            o[2 * j] = o[2 * j] * Vector::new(alpha_top);
            o[2 * j + 1] = o[2 * j + 1] * Vector::new(alpha_bottom);
        }
        pairs_times_block::<E>(&s, &vs, &mut o, d);
    }
    let l_top = row_sum(l_top);
    let l_bottom = row_sum(l_bottom);
    let row = (head * seq + top) as usize;
    let half = comptime!(d / 2);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        out[row * half + j * 4 + t as usize] = Vector::cast_from(o[2 * j] * Vector::new(1.0 / l_top));
        out[(row + 8) * half + j * 4 + t as usize] = Vector::cast_from(o[2 * j + 1] * Vector::new(1.0 / l_bottom));
    }
    if t == 0 {
        lse[row] = m_top + l_top.ln();
        lse[row + 8] = m_bottom + l_bottom.ln();
    }
}

/// `delta[row] = Σ dy[row] ⊙ y[row]` for `rows` rows of `d` values.
#[cube(launch_unchecked)]
pub(crate) fn flash_delta_kernel<E: Float>(
    y: &Tensor<Vector<E, Wide>>,
    dy: &Tensor<Vector<E, Wide>>,
    delta: &mut Tensor<f32>,
    rows: u32,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= rows as usize {
        terminate!();
    }
    let mut acc = f32::new(0.0);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        let (a, b) = (y[row * comptime!(d / 8) + j], dy[row * comptime!(d / 8) + j]);
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
    group: u32,
    scale: f32,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let qb = seq / block - 1 - CUBE_POS_X;
    let head = CUBE_POS_Y;
    let kv_head = head / group;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    let mut qs = new_block::<E>(d);
    let mut dys = new_block::<E>(d);
    let mut ks = new_block::<E>(d);
    let mut vs = new_block::<E>(d);
    stage_block::<E>(q, head * seq + qb * block, &mut qs, d);
    stage_block::<E>(dy, head * seq + qb * block, &mut dys, d);
    sync_cube();
    let qf = row_operands::<E>(&qs, plane * 16, d);
    let dyf = row_operands::<E>(&dys, plane * 16, d);
    let top = qb * block + plane * 16 + g;
    let row = (head * seq + top) as usize;
    let (lse_top, lse_bottom) = (lse[row], lse[row + 8]);
    let (delta_top, delta_bottom) = (delta[row], delta[row + 8]);
    let mut acc = zeros(comptime!(d / 8 * 2));
    for kb in 0..qb + 1 {
        sync_cube();
        stage_block::<E>(k, kv_head * seq + kb * block, &mut ks, d);
        stage_block::<E>(v, kv_head * seq + kb * block, &mut vs, d);
        sync_cube();
        let mut s = zeros(comptime!(BLOCK / 8 * 2));
        times_block_transposed::<E>(&qf, &ks, &mut s, d);
        row_probabilities(&mut s, scale, lse_top, lse_bottom, kb * block + 2 * t, top);
        let mut dp = zeros(comptime!(BLOCK / 8 * 2));
        times_block_transposed::<E>(&dyf, &vs, &mut dp, d);
        #[unroll]
        for n in 0..comptime!(BLOCK / 8) {
            s[2 * n] = s[2 * n] * (dp[2 * n] - Vector::new(delta_top));
            s[2 * n + 1] = s[2 * n + 1] * (dp[2 * n + 1] - Vector::new(delta_bottom));
        }
        pairs_times_block::<E>(&s, &ks, &mut acc, d);
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
    group: u32,
    scale: f32,
    #[comptime] d: usize,
    #[define(E)] _dtype: StorageType,
) {
    let block = BLOCK as u32;
    let kb = CUBE_POS_X;
    let kv_head = CUBE_POS_Y;
    let (plane, lane) = (UNIT_POS_Y, UNIT_POS_PLANE);
    let (g, t) = (lane / 4, lane % 4);
    let mut ks = new_block::<E>(d);
    let mut vs = new_block::<E>(d);
    let mut qs = new_block::<E>(d);
    let mut dys = new_block::<E>(d);
    let mut lses = SharedMemory::<f32>::new(BLOCK);
    let mut deltas = SharedMemory::<f32>::new(BLOCK);
    stage_block::<E>(k, kv_head * seq + kb * block, &mut ks, d);
    stage_block::<E>(v, kv_head * seq + kb * block, &mut vs, d);
    sync_cube();
    let kf = row_operands::<E>(&ks, plane * 16, d);
    let vf = row_operands::<E>(&vs, plane * 16, d);
    let key_top = kb * block + plane * 16 + g;
    let mut dk_acc = zeros(comptime!(d / 8 * 2));
    let mut dv_acc = zeros(comptime!(d / 8 * 2));
    for r in 0..group {
        let head = kv_head * group + r;
        for qb in kb..seq / block {
            let first = head * seq + qb * block;
            sync_cube();
            stage_block::<E>(q, first, &mut qs, d);
            stage_block::<E>(dy, first, &mut dys, d);
            stage_row_values(lse, first, &mut lses);
            stage_row_values(delta, first, &mut deltas);
            sync_cube();
            let mut p = zeros(comptime!(BLOCK / 8 * 2));
            times_block_transposed::<E>(&kf, &qs, &mut p, d);
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
            pairs_times_block::<E>(&p, &dys, &mut dv_acc, d);
            let mut dp = zeros(comptime!(BLOCK / 8 * 2));
            times_block_transposed::<E>(&vf, &dys, &mut dp, d);
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
            pairs_times_block::<E>(&p, &qs, &mut dk_acc, d);
        }
    }
    let row = (kv_head * seq + key_top) as usize;
    let half = comptime!(d / 2);
    #[unroll]
    for j in 0..comptime!(d / 8) {
        dk[row * half + j * 4 + t as usize] = Vector::cast_from(dk_acc[2 * j] * Vector::new(scale));
        dk[(row + 8) * half + j * 4 + t as usize] = Vector::cast_from(dk_acc[2 * j + 1] * Vector::new(scale));
        dv[row * half + j * 4 + t as usize] = Vector::cast_from(dv_acc[2 * j]);
        dv[(row + 8) * half + j * 4 + t as usize] = Vector::cast_from(dv_acc[2 * j + 1]);
    }
}
