//! Which kernel paths the ops take: one value made at start-up from a run config's
//! `[kernels]` table (or the defaults), with the environment's overrides, and passed to
//! every op that chooses (the projections' product, attention, the gradients' sums of
//! squares) and to the backend dispatch (burn's fusion). The CPU ignores it; each choice
//! is for CUDA without fusion, where the ops have their own kernels.
//!
//! | key | environment | default | what it chooses |
//! | --- | --- | --- | --- |
//! | `fusion` | `HABITS_CUDA_FUSION` (1/0) | the command's | burn's fusion layer on CUDA |
//! | `flash_attention` | `HABITS_FLASH_ATTENTION` (1/0) | true | the flash kernels where they take the inputs, else the staircase |
//! | `attention_chunk` | `HABITS_ATTENTION_CHUNK` | 256 | query positions per chunk of the staircase |
//! | `cublas` | `HABITS_CUBLAS` (1/0) | true | cuBLAS for products, else cubecl's matmul |
//! | `pinned_moments` | `HABITS_PINNED_MOMENTS` (1/0) | true | AdamW's moments kept on the host (`ppo.optimizer_state = "host"`) in page-locked memory, copied on the kernels' stream |
//! | `fused_entropy` | `HABITS_FUSED_ENTROPY` (1/0) | true | PPO's entropy bonus by the entropy op's own kernels (`ops::entropy`), else burn's softmaxes |

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Query positions per chunk of the attention's staircase when nothing says otherwise:
/// 256 and 512 measured within 0.3% on an H100, 128 slower (docs/PERF.md).
pub const DEFAULT_ATTENTION_CHUNK: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kernels {
    /// burn's fusion layer on CUDA; `None`: the command's default (`ops::backend::on_backend`).
    pub fusion: Option<bool>,
    /// Attention by the flash kernels where they take the inputs (else the staircase).
    pub flash_attention: bool,
    /// Query positions per chunk of the staircase attention.
    pub attention_chunk: usize,
    /// Products on cuBLAS (else cubecl's matmul kernels).
    pub cublas: bool,
    /// AdamW's moments, when kept on the host, in page-locked memory with their copies
    /// queued on the kernels' stream (else read back and uploaded through burn).
    pub pinned_moments: bool,
    /// PPO's entropy bonus by the entropy op's own kernels (else burn's softmaxes).
    pub fused_entropy: bool,
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels { fusion: None, flash_attention: true, attention_chunk: DEFAULT_ATTENTION_CHUNK, cublas: true, pinned_moments: true, fused_entropy: true }
    }
}

impl Kernels {
    /// These settings with the environment's overrides (`HABITS_CUDA_FUSION`,
    /// `HABITS_FLASH_ATTENTION`, `HABITS_CUBLAS`, `HABITS_PINNED_MOMENTS`,
    /// `HABITS_FUSED_ENTROPY`: `1` or `0`; `HABITS_ATTENTION_CHUNK`: a positive whole
    /// number), checked; one error names a bad variable or key.
    pub fn with_env_overrides(self) -> Result<Self> {
        self.with_overrides(|name| std::env::var(name).ok())
    }

    fn with_overrides(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let switch = |name: &str| -> Result<Option<bool>> {
            match var(name).as_deref().map(str::trim) {
                None => Ok(None),
                Some("1") => Ok(Some(true)),
                Some("0") => Ok(Some(false)),
                Some(other) => bail!("{name}={other:?}: use 1 (on) or 0 (off)"),
            }
        };
        if let Some(on) = switch("HABITS_CUDA_FUSION")? {
            self.fusion = Some(on);
        }
        if let Some(on) = switch("HABITS_FLASH_ATTENTION")? {
            self.flash_attention = on;
        }
        if let Some(on) = switch("HABITS_CUBLAS")? {
            self.cublas = on;
        }
        if let Some(on) = switch("HABITS_PINNED_MOMENTS")? {
            self.pinned_moments = on;
        }
        if let Some(on) = switch("HABITS_FUSED_ENTROPY")? {
            self.fused_entropy = on;
        }
        if let Some(v) = var("HABITS_ATTENTION_CHUNK") {
            self.attention_chunk = v.trim().parse().with_context(|| format!("HABITS_ATTENTION_CHUNK={v:?}: give a positive whole number of positions"))?;
        }
        if self.attention_chunk == 0 {
            bail!("kernels.attention_chunk (or HABITS_ATTENTION_CHUNK) is 0: give a positive whole number of positions (default {DEFAULT_ATTENTION_CHUNK})");
        }
        Ok(self)
    }

    /// One line for a run's log: every choice.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "kernels: fusion {}, flash attention {}, attention chunk {}, cuBLAS {}, page-locked moments {}, fused entropy {}",
            self.fusion.map_or("by command", on),
            on(self.flash_attention),
            self.attention_chunk,
            on(self.cublas),
            on(self.pinned_moments),
            on(self.fused_entropy)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_overrides_the_config_and_bad_values_are_one_clear_error() {
        let from_config = Kernels { flash_attention: false, ..Default::default() };
        let overrides = [
            ("HABITS_FLASH_ATTENTION", "1"),
            ("HABITS_ATTENTION_CHUNK", "77"),
            ("HABITS_CUDA_FUSION", "0"),
            ("HABITS_PINNED_MOMENTS", "0"),
            ("HABITS_FUSED_ENTROPY", "0"),
        ];
        let k = from_config.with_overrides(env(&overrides)).unwrap();
        assert_eq!(k, Kernels { fusion: Some(false), flash_attention: true, attention_chunk: 77, cublas: true, pinned_moments: false, fused_entropy: false });
        assert_eq!(from_config.with_overrides(env(&[])).unwrap(), from_config, "nothing set: the config's");
        let err = Kernels::default().with_overrides(env(&[("HABITS_CUBLAS", "yes")])).unwrap_err().to_string();
        assert!(err.contains("HABITS_CUBLAS=\"yes\": use 1 (on) or 0 (off)"), "{err}");
        let err = format!("{:#}", Kernels::default().with_overrides(env(&[("HABITS_ATTENTION_CHUNK", "-3")])).unwrap_err());
        assert!(err.contains("HABITS_ATTENTION_CHUNK=\"-3\""), "{err}");
        let err = Kernels { attention_chunk: 0, ..Default::default() }.with_overrides(env(&[])).unwrap_err().to_string();
        assert!(err.contains("kernels.attention_chunk"), "{err}");
    }

    #[test]
    fn a_config_table_reads_into_the_settings() {
        let k: Kernels = toml::from_str("flash_attention = false\nattention_chunk = 512\npinned_moments = false").unwrap();
        assert_eq!(k, Kernels { flash_attention: false, attention_chunk: 512, pinned_moments: false, ..Default::default() });
        assert!(toml::from_str::<Kernels>("flash = true").is_err(), "unknown keys are refused");
    }
}
