//! What every op's conformance check reports: the largest gap between a tested backend's
//! values and a reference's, relative to the reference's largest magnitude, judged at a
//! tolerance (f32 or bf16), and the helpers the checks move values with.

use burn::prelude::*;

/// Relative gaps above this are disagreements (f32 on different kernels stays far below).
pub const TOLERANCE: f32 = 1e-3;
/// The same for an op run in bf16 against f32: bf16 rounds each input to 8 significant
/// bits (3.9e-3 relative), and attention in bf16 lands at 3e-3 - 7e-3 by either kernel.
pub const BF16_TOLERANCE: f32 = 2e-2;

/// One op's result: the largest gap relative to the reference's largest magnitude, and the
/// gap above which it disagrees.
#[derive(Clone, Debug)]
pub struct OpGap {
    pub op: String,
    pub gap: f32,
    pub tolerance: f32,
}

impl OpGap {
    /// The gap of `tested` to `reference`, judged at `TOLERANCE`.
    pub(crate) fn new(op: String, reference: &[f32], tested: &[f32]) -> Self {
        OpGap { op, gap: relative_gap(reference, tested), tolerance: TOLERANCE }
    }

    /// Whether the gap is within the tolerance.
    pub fn agrees(&self) -> bool {
        self.gap <= self.tolerance
    }
}

impl std::fmt::Display for OpGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<60} CPU vs CUDA relative gap {:.3e}{}", self.op, self.gap, if self.agrees() { "" } else { "  DIFFERS" })
    }
}

/// One gap per named output: `expected[i]` against `actual[i]`, reported as "`what`: name".
pub(crate) fn named_gaps(what: &str, names: &[&str], expected: &[Vec<f32>], actual: &[Vec<f32>]) -> Vec<OpGap> {
    names.iter().zip(expected.iter().zip(actual)).map(|(name, (e, t))| OpGap::new(format!("{what}: {name}"), e, t)).collect()
}

/// `max |a - t| / max |a|` (0 when both are empty; infinite when the lengths differ).
pub fn relative_gap(a: &[f32], t: &[f32]) -> f32 {
    if a.len() != t.len() {
        return f32::INFINITY;
    }
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    a.iter().zip(t).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

pub(crate) fn tensor<B: Backend, const D: usize>(data: &[f32], shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values")
}

/// Each op's check with the CPU as both backends: every gap exactly zero.
#[cfg(test)]
mod tests {
    use burn::tensor::{DType, FloatDType, TensorPrimitive};

    use super::*;
    use crate::Cpu;
    use crate::ops::kernels::Kernels;
    use crate::ops::squared_norms::SquaredNorms;
    use crate::ops::{
        adamw, attention, cross_entropy, decode_attention, entropy, kv_write, matmul, pick_tokens, rms_norm, rotary_heads, squared_norms, swiglu,
    };

    fn assert_identical(gaps: &[OpGap], count: usize) {
        assert_eq!(gaps.len(), count, "{gaps:?}");
        assert!(gaps.iter().all(|g| g.gap == 0.0), "{gaps:?}");
    }

    /// Every op's check with the CPU as both backends: as many gaps as outputs, all zero.
    #[test]
    fn every_op_agrees_with_itself() {
        let (cpu, k) = (&Default::default(), Kernels::default());
        let checks: [(Vec<OpGap>, usize); 20] = [
            (adamw::check::check_adamw::<Cpu, Cpu>([7, 5], cpu, cpu), 3),
            (adamw::check::check_adamw_on_host::<Cpu, Cpu>([7, 5], cpu, cpu), 3),
            (attention::check::check_attention::<Cpu, Cpu>([1, 3, 3, 9, 4], DType::F32, k, cpu, cpu), 4),
            (attention::check::check_attention::<Cpu, Cpu>([2, 4, 2, 9, 4], DType::F32, k, cpu, cpu), 4),
            (cross_entropy::check::check_cross_entropy::<Cpu, Cpu>([5, 13], cpu, cpu), 2),
            (entropy::check::check_entropy::<Cpu, Cpu>([4, 13], cpu, cpu), 2),
            (matmul::check::check_matmul::<Cpu, Cpu>([6, 4, 3], k, cpu, cpu), 4),
            (matmul::check::check_matmul_gradients::<Cpu, Cpu>([6, 4, 3], k, cpu, cpu), 4),
            (kv_write::check::check_kv_write::<Cpu, Cpu>([7, 2, 3, 3], [3, 4, 2], cpu, cpu), 2),
            (kv_write::check::check_kv_write::<Cpu, Cpu>([5, 2, 9, 3], [3, 4, 1], cpu, cpu), 2),
            (decode_attention::check::check_decode_attention::<Cpu, Cpu>([3, 4, 2, 4], [10, 3, 3], DType::F32, cpu, cpu), 3),
            (decode_attention::check::check_decode_attention::<Cpu, Cpu>([3, 4, 2, 4], [5, 9, 1], DType::F32, cpu, cpu), 3),
            (pick_tokens::check::check_pick_tokens::<Cpu, Cpu>([4, 37], cpu, cpu), 3),
            (rms_norm::check::check_rms_norm::<Cpu, Cpu>([5, 12], cpu, cpu), 3),
            (rms_norm::check::check_add_rms_norm::<Cpu, Cpu>([5, 12], true, FloatDType::F32, cpu, cpu), 2),
            (rms_norm::check::check_add_rms_norm::<Cpu, Cpu>([5, 12], false, FloatDType::F32, cpu, cpu), 2),
            (rotary_heads::check::check_rotary_heads::<Cpu, Cpu>([2, 5, 3, 8], cpu, cpu), 4),
            (swiglu::check::check_swiglu::<Cpu, Cpu>([3, 7], cpu, cpu), 3),
            (swiglu::check::check_swiglu_halves::<Cpu, Cpu>([3, 7], cpu, cpu), 1),
            (rotary_heads::check::check_qkv_heads::<Cpu, Cpu>([2, 3, 4, 2, 8], cpu, cpu), 3),
        ];
        for (gaps, count) in checks {
            assert_identical(&gaps, count);
        }
    }

    #[test]
    fn squared_norms_agree_with_themselves_and_are_sums_of_squares() {
        let gaps = squared_norms::check::check_squared_norms::<Cpu, Cpu>(&[3, 1, 17], Kernels::default(), &Default::default(), &Default::default());
        assert_eq!(gaps[0].gap, 0.0);
        let v = |x: Vec<f32>| Tensor::<Cpu, 1>::from_data(TensorData::new(x.clone(), [x.len()]), &Default::default()).into_primitive().tensor();
        let sums =
            host(Tensor::<Cpu, 1>::from_primitive(TensorPrimitive::Float(Cpu::squared_norms(vec![v(vec![3.0, 4.0]), v(vec![-2.0])], Kernels::default()))));
        assert_eq!(sums, vec![25.0, 4.0]);
    }
}
