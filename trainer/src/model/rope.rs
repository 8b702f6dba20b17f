//! Rotary position embeddings in the Hugging Face layout (the two halves of each head are
//! rotated against each other: `x * cos + rotate_half(x) * sin`), with the Llama-3
//! frequency scaling: long wavelengths are divided by `factor`, short ones kept, and the
//! band between blended smoothly. The tables of positions `0..seq` are made once per
//! backend, device and length.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

use burn::prelude::*;

use crate::model::config::ModelConfig;

/// The inverse frequencies of one head (`head_dim / 2` of them), and the tables of the
/// positions `0..seq` already made on a device.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f64>,
    causal: CausalTables,
}

/// Tables of positions `0..seq` per backend, device and length: training and evaluation
/// ask for the same ones at every forward pass, and making them costs the host a few
/// milliseconds and two uploads it waits for. Shared by the clones of a model.
#[derive(Clone, Default)]
struct CausalTables(Arc<Mutex<Vec<CachedTables>>>);

/// The backend's type, the device (as it prints), the length, and the `(cos, sin)` pair.
type CachedTables = (TypeId, String, usize, Box<dyn Any + Send>);

/// Tables kept at most (the oldest goes first).
const CACHED_TABLES: usize = 8;

impl std::fmt::Debug for CausalTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "CausalTables({n} kept)")
    }
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
        Rope { inv_freq, causal: CausalTables::default() }
    }

    /// [`Rope::tables`] for positions `0..seq`, made once per backend, device and length.
    pub fn causal_tables<B: Backend>(&self, seq: usize, device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let key = (TypeId::of::<B>(), format!("{device:?}"), seq);
        let mut kept = self.causal.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = kept.iter().find(|(b, d, n, _)| (b, d, n) == (&key.0, &key.1, &key.2)).and_then(|(.., t)| t.downcast_ref::<(Tensor<B, 2>, Tensor<B, 2>)>());
        if let Some(tables) = found {
            return tables.clone();
        }
        let positions: Vec<usize> = (0..seq).collect();
        let tables = self.tables::<B>(&positions, device);
        if kept.len() == CACHED_TABLES {
            kept.remove(0);
        }
        kept.push((key.0, key.1, key.2, Box::new(tables.clone())));
        tables
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

    /// The kept tables are the ones made anew, per length.
    #[test]
    fn causal_tables_are_kept_per_length_and_equal_fresh_ones() {
        let rope = Rope::new(&crate::model::tests::tiny_config());
        let device = Default::default();
        for seq in [5, 9, 5] {
            let (cos, sin) = rope.causal_tables::<crate::Cpu>(seq, &device);
            let positions: Vec<usize> = (0..seq).collect();
            let (fresh_cos, fresh_sin) = rope.tables::<crate::Cpu>(&positions, &device);
            assert_eq!(cos.dims()[0], seq);
            assert_eq!(cos.into_data(), fresh_cos.into_data());
            assert_eq!(sin.into_data(), fresh_sin.into_data());
        }
        assert_eq!(rope.causal.0.lock().unwrap().len(), 2, "5 was kept, not made twice");
    }

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
