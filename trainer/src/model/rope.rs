//! Rotary position embeddings in the Hugging Face layout (the two halves of each head are
//! rotated against each other: `x * cos + rotate_half(x) * sin`), with the Llama-3
//! frequency scaling: long wavelengths are divided by `factor`, short ones kept, and the
//! band between blended smoothly.

use burn::prelude::*;

use super::config::ModelConfig;

/// The inverse frequencies of one head (`head_dim / 2` of them).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(c: &ModelConfig) -> Self {
        let dim = c.head_dim as f64;
        let mut inv_freq: Vec<f64> = (0..c.head_dim / 2).map(|i| 1.0 / c.rope_theta.powf(2.0 * i as f64 / dim)).collect();
        if let Some(s) = &c.rope_scaling {
            let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        Rope { inv_freq }
    }

    /// `cos` and `sin` tables `[positions, head_dim]` for the given positions.
    pub fn tables<B: Backend>(&self, positions: &[usize], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * half * 2), Vec::with_capacity(positions.len() * half * 2));
        for &p in positions {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    // The angle in f32, as the reference computes it.
                    let angle = (p as f32) * (*f as f32);
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [positions.len(), half * 2];
        (Tensor::from_data(TensorData::new(cos, shape), device), Tensor::from_data(TensorData::new(sin, shape), device))
    }
}

/// Rotates `x` (`[batch, heads, seq, head_dim]`) by the tables (`[seq, head_dim]`, or
/// `[batch, 1, seq, head_dim]` when positions differ per row).
pub fn apply<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos + rotated * sin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Llama3Scaling;

    #[test]
    fn llama3_scaling_keeps_short_and_divides_long_wavelengths() {
        let mut c = crate::model::tests::tiny_config();
        c.head_dim = 16;
        c.rope_theta = 500_000.0;
        let plain = Rope::new(&c).inv_freq;
        c.rope_scaling = Some(Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 });
        let scaled = Rope::new(&c).inv_freq;
        assert_eq!(plain[0], scaled[0], "wavelength 2*pi is kept");
        assert!((plain[7] / scaled[7] - 8.0).abs() < 1e-12, "the longest wavelength is divided by the factor");
        let blended = plain.iter().zip(&scaled).filter(|(p, s)| (*p / *s - 1.0).abs() > 1e-9 && (*p / *s - 8.0).abs() > 1e-9).count();
        assert!(blended >= 1, "the band between is blended");
    }
}
