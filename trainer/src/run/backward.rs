//! A micro-batch's backward pass, added into the step's gradient sums, with activation
//! recomputation per decoder layer (`train.recompute`).
//!
//! Without recomputation the loss's graph keeps every layer's activations until the
//! backward pass reads them. With the first `n` layers recomputed, the forward pass runs
//! them without a graph and keeps only each one's input (one `[batch, seq, hidden]` tensor
//! a layer); the rest of the model and the loss run with a graph from the last kept input.
//! The backward pass then goes in segments, last first: the tail's backward gives the
//! gradient of its input; each recomputed layer runs its forward again from its kept
//! input, with a graph, and its backward takes the gradient from above (as the gradient of
//! `Σ y ⊙ dy`) and gives its input's; the embedding's closes the chain. Only one layer's
//! activations exist at a time, at the price of one more forward pass of those layers.
//!
//! The LM head and the loss run a few rows at a time after the model's last layer (each
//! chunk's backward pass at once, giving its rows' share of the final hidden states'
//! gradient), so that the logits of a whole micro-batch, `[rows, seq, vocab]` and their
//! gradient, never exist at once (8 x 2048 x 128,256 bf16 logits are 4.2 GB, their
//! gradient as much).
//!
//! Each segment's parameter gradients are added into the sums as soon as it is done (an
//! in-place add of each parameter's gradient), so a segment's gradients, not the whole
//! model's, come on top of the sums.

use std::ops::Range;

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::TrainBackend;
use crate::model::Llama;
use crate::ops::rms_norm::apply_rms_norm;

/// `train.recompute` (and PPO's): `"none"`, `"layers"` (every decoder layer) or how many of
/// the first layers recompute their activations in the backward pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recompute {
    Layers(usize),
    Named(String),
}

impl Default for Recompute {
    fn default() -> Self {
        Recompute::Named("none".into())
    }
}

impl Recompute {
    /// How many of the model's `num_layers` layers recompute; an unknown name or too many
    /// layers is one error naming `key`.
    pub fn layers(&self, num_layers: usize, key: &str) -> Result<usize> {
        match self {
            Recompute::Named(name) if name == "none" => Ok(0),
            Recompute::Named(name) if name == "layers" => Ok(num_layers),
            Recompute::Named(other) => bail!("{key} = \"{other}\": use \"none\", \"layers\" (every decoder layer) or a number of layers"),
            Recompute::Layers(n) if *n <= num_layers => Ok(*n),
            Recompute::Layers(n) => bail!("{key} = {n}, but the model has {num_layers} layers: use at most {num_layers}, or \"layers\""),
        }
    }
}

/// The gradient sums of an optimizer step, one tensor per parameter.
#[derive(Default)]
pub struct GradientSums(GradientsParams);

impl GradientSums {
    /// Adds the gradients in `grads` of `module`'s parameters into the sums (taking them
    /// out of `grads`).
    pub fn add<B: AutodiffBackend, M: AutodiffModule<B>>(&mut self, module: &M, grads: &mut B::Gradients) {
        module.visit(&mut AddInto::<B> { sums: &mut self.0, grads });
    }

    /// The sums, for the optimizer.
    pub fn into_params(self) -> GradientsParams {
        self.0
    }
}

struct AddInto<'a, B: AutodiffBackend> {
    sums: &'a mut GradientsParams,
    grads: &'a mut B::Gradients,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AddInto<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = param.val().grad_remove(self.grads) else { return };
        let sum = match self.sums.remove::<B::InnerBackend, D>(param.id) {
            // The sum is the only owner of its buffer: the backend adds in place.
            Some(sum) => sum + grad,
            None => grad,
        };
        self.sums.register::<B::InnerBackend, D>(param.id, sum);
    }
}

/// Logits of a head chunk, at most (counted at 4 bytes a logit).
const HEAD_CHUNK_BYTES: usize = 1 << 30;

/// Rows of `seq` positions per chunk of the LM head and the loss, so that a chunk's logits
/// stay within `HEAD_CHUNK_BYTES` (at least one row).
pub fn head_chunk_rows(seq: usize, vocab: usize) -> usize {
    (HEAD_CHUNK_BYTES / (seq * vocab * 4).max(1)).max(1)
}

/// A loss that is a sum over rows: `(model, hidden, rows)` gives the part of the batch's
/// rows `rows` from their final (normalised) hidden states `[rows.len(), seq, hidden]`,
/// already scaled so that the parts add up to the loss.
pub trait RowLoss<B: TrainBackend>: Fn(&Llama<B>, Tensor<B, 3>, Range<usize>) -> Tensor<B, 1> {}
impl<B: TrainBackend, F: Fn(&Llama<B>, Tensor<B, 3>, Range<usize>) -> Tensor<B, 1>> RowLoss<B> for F {}

/// Runs `loss` on the final hidden states of the model on `ids` and adds its gradients
/// into `sums`; returns the loss. `owner` is the module whose parameters the loss trains:
/// the model, or one that holds it with parameters of its own that the loss reads (the
/// critic's value head). The first `recomputed` layers recompute their
/// activations in the backward pass; the LM head and the loss run `head_rows` rows at a
/// time (`head_chunk_rows`), each chunk's backward pass at once, so that the logits of one
/// chunk exist at a time.
pub fn backward_into<B: TrainBackend, M: AutodiffModule<B>>(
    model: &Llama<B>,
    owner: &M,
    ids: Tensor<B, 2, Int>,
    recomputed: usize,
    head_rows: usize,
    loss: impl RowLoss<B>,
    sums: &mut GradientSums,
) -> Tensor<B::InnerBackend, 1> {
    let (recomputed, head_rows) = (recomputed.min(model.layers.len()), head_rows.max(1));
    if recomputed == 0 {
        let (value, mut grads) = tail_backward(model, owner, model.hidden(ids), head_rows, &loss, sums);
        sums.add(owner, &mut grads);
        return value;
    }
    let (device, t) = (ids.device(), ids.dims()[1]);
    // The forward pass without a graph, keeping each recomputed layer's input.
    let inner = model.valid();
    let at_inner = inner.causal_positions(t, &device);
    let mut inputs = Vec::with_capacity(recomputed);
    let mut x = inner.embed_tokens.forward(ids.clone().inner());
    for layer in &inner.layers[..recomputed] {
        inputs.push(x.clone());
        x = layer.forward(x, &at_inner, None);
    }
    drop(inner);
    // The tail (kept layers and the final norm) with a graph from its input, then the loss.
    let at = model.causal_positions(t, &device);
    let input = Tensor::<B, 3>::from_inner(x).require_grad();
    let mut h = input.clone();
    for layer in &model.layers[recomputed..] {
        h = layer.forward(h, &at, None);
    }
    let (value, mut grads) = tail_backward(model, owner, apply_rms_norm(&model.norm, h), head_rows, &loss, sums);
    let mut dy = input.grad_remove(&mut grads).expect("the tail's input takes part in the loss");
    sums.add(owner, &mut grads);
    // The recomputed layers, last first.
    for (layer, x) in model.layers[..recomputed].iter().zip(inputs).rev() {
        let input = Tensor::<B, 3>::from_inner(x).require_grad();
        let y = layer.forward(input.clone(), &at, None);
        let mut grads = (y * Tensor::from_inner(dy)).sum().backward();
        dy = input.grad_remove(&mut grads).expect("a layer's input takes part in its output");
        sums.add(layer, &mut grads);
    }
    let embedded = model.embed_tokens.forward(ids);
    let mut grads = (embedded * Tensor::from_inner(dy)).sum().backward();
    sums.add(&model.embed_tokens, &mut grads);
    value
}

/// The backward pass of `loss` on `hidden` (the final hidden states, with their graph):
/// the loss and the gradients of the graph behind `hidden`. One chunk covering every row
/// is one backward pass; more run the head chunk by chunk (`loss_by_rows`), then the
/// graph behind `hidden` from their gradient.
fn tail_backward<B: TrainBackend, M: AutodiffModule<B>>(
    model: &Llama<B>,
    owner: &M,
    hidden: Tensor<B, 3>,
    head_rows: usize,
    loss: &impl RowLoss<B>,
    sums: &mut GradientSums,
) -> (Tensor<B::InnerBackend, 1>, B::Gradients) {
    let rows = hidden.dims()[0];
    if head_rows >= rows {
        let value = loss(model, hidden, 0..rows);
        return (value.clone().inner(), value.backward());
    }
    let (value, dh) = loss_by_rows(model, owner, &hidden, head_rows, loss, sums);
    (value, (hidden * Tensor::from_inner(dh)).sum().backward())
}

/// The loss on `hidden`'s rows, `head_rows` at a time, each chunk's backward pass run at
/// once (its head's gradients added into `sums`); returns the loss and the gradient of
/// `hidden`.
fn loss_by_rows<B: TrainBackend, M: AutodiffModule<B>>(
    model: &Llama<B>,
    owner: &M,
    hidden: &Tensor<B, 3>,
    head_rows: usize,
    loss: &impl RowLoss<B>,
    sums: &mut GradientSums,
) -> (Tensor<B::InnerBackend, 1>, Tensor<B::InnerBackend, 3>) {
    let values = hidden.clone().inner();
    let rows = values.dims()[0];
    let (mut total, mut gradients) = (None, Vec::new());
    for start in (0..rows).step_by(head_rows) {
        let range = start..(start + head_rows).min(rows);
        let part = Tensor::<B, 3>::from_inner(values.clone().narrow(0, start, range.len())).require_grad();
        let value = loss(model, part.clone(), range);
        let mut grads = value.backward();
        gradients.push(part.grad_remove(&mut grads).expect("the hidden states take part in the loss"));
        sums.add(owner, &mut grads);
        total = Some(match total {
            Some(sum) => sum + value.inner(),
            None => value.inner(),
        });
    }
    (total.expect("a batch has rows"), Tensor::cat(gradients, 0))
}

#[cfg(test)]
mod tests {
    use burn::module::ParamId;
    use burn::tensor::FloatDType;

    use super::*;
    use crate::CpuAutodiff;
    use crate::loss::{lm_loss, lm_loss_sum_of_hidden};
    use crate::model::config::ModelConfig;
    use crate::model::tests::tiny_config;

    type B = CpuAutodiff;

    fn ids(device: &Device<B>) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(vec![1i64, 5, 9, 3, 7, 2, 8, 4, 6, 11, 13, 0], [2, 6]), device)
    }

    fn labels(device: &Device<B>) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(vec![-100i64, -100, 9, 3, 7, 2, 8, 4, 6, 11, 13, 0], [2, 6]), device)
    }

    /// Every parameter's gradient sum, by id.
    fn flat(model: &Llama<B>, sums: GradientSums) -> Vec<(ParamId, Vec<f32>)> {
        struct Ids(Vec<(ParamId, usize)>);
        impl ModuleVisitor<B> for Ids {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push((param.id, D));
            }
        }
        let mut ids = Ids(Vec::new());
        model.visit(&mut ids);
        let params = sums.into_params();
        let read = |id: ParamId, d: usize| -> Vec<f32> {
            let data = match d {
                1 => params.get::<crate::Cpu, 1>(id).map(|t| t.into_data()),
                2 => params.get::<crate::Cpu, 2>(id).map(|t| t.into_data()),
                _ => unreachable!("the model's parameters are vectors and matrices"),
            };
            data.unwrap_or_else(|| panic!("no gradient for a parameter of {d} dimensions")).convert::<f32>().to_vec().unwrap()
        };
        ids.0.into_iter().map(|(id, d)| (id, read(id, d))).collect()
    }

    /// The loss of one micro-batch by `backward_into`, added into `sums`: the mean over the
    /// counted positions, as `lm_loss`.
    fn micro_batch(model: &Llama<B>, recomputed: usize, head_rows: usize, sums: &mut GradientSums) -> f32 {
        let device = Default::default();
        let labels = labels(&device);
        let counted = labels.clone().narrow(1, 1, 5).greater_equal_elem(0).int().sum().into_scalar() as f64;
        let loss = |m: &Llama<B>, h: Tensor<B, 3>, rows: Range<usize>| {
            lm_loss_sum_of_hidden(m, h, labels.clone().narrow(0, rows.start, rows.len())).div_scalar(counted)
        };
        backward_into(model, model, ids(&device), recomputed, head_rows, loss, sums).into_scalar()
    }

    /// The loss and gradient sums of two micro-batches.
    fn two_micro_batches(model: &Llama<B>, recomputed: usize, head_rows: usize) -> (f32, Vec<(ParamId, Vec<f32>)>) {
        let mut sums = GradientSums::default();
        let loss = micro_batch(model, recomputed, head_rows, &mut sums) + micro_batch(model, recomputed, head_rows, &mut sums);
        (loss, flat(model, sums))
    }

    /// burn's own backward pass of `lm_loss`, twice: the reference.
    fn plain(model: &Llama<B>) -> (f32, Vec<(ParamId, Vec<f32>)>) {
        let device = Default::default();
        let loss = lm_loss(model, ids(&device), labels(&device));
        let mut grads = loss.backward();
        let mut sums = GradientSums::default();
        sums.add(model, &mut grads);
        let doubled = flat(model, sums).into_iter().map(|(id, g)| (id, g.iter().map(|x| 2.0 * x).collect())).collect();
        (2.0 * loss.into_scalar(), doubled)
    }

    fn assert_close(a: &[(ParamId, Vec<f32>)], b: &[(ParamId, Vec<f32>)], what: &str) {
        assert_eq!(a.len(), b.len());
        for ((ia, ga), (ib, gb)) in a.iter().zip(b) {
            assert_eq!(ia, ib);
            let scale = ga.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
            let worst = ga.iter().zip(gb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst <= 1e-5 * scale.max(1.0), "{what}: a gradient differs by {worst} (largest {scale})");
        }
    }

    /// Recomputing none, some or every layer, with the head in chunks of one row or all
    /// rows, gives the loss and every parameter's gradient of burn's own backward pass of
    /// the whole loss, summed over two micro-batches; with the head tied or not, in another
    /// compute dtype too.
    #[test]
    fn recomputed_layers_and_head_chunks_give_the_plain_gradients() {
        let device = Default::default();
        let untied = ModelConfig { tie_word_embeddings: false, ..tiny_config() };
        for config in [tiny_config(), untied] {
            for compute in [None, Some(FloatDType::F64)] {
                let model = Llama::<B>::random(&config, &device).with_compute(compute);
                let (loss, reference) = plain(&model);
                for recomputed in 0..=config.num_layers {
                    for head_rows in [1, 2] {
                        let (l, grads) = two_micro_batches(&model, recomputed, head_rows);
                        assert!((l - loss).abs() < 1e-5, "loss {l} against {loss}");
                        let what = format!("{recomputed} layers recomputed, head rows {head_rows}, tied {}, {compute:?}", config.tie_word_embeddings);
                        assert_close(&grads, &reference, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn head_chunks_keep_logits_near_a_gigabyte() {
        assert_eq!(head_chunk_rows(2048, 128_256), 1);
        assert_eq!(head_chunk_rows(512, 128_256), 4);
        assert_eq!(head_chunk_rows(6, 64), (1 << 30) / (6 * 64 * 4));
    }

    #[test]
    fn recompute_settings_name_their_key() {
        let layers = |r: Recompute| r.layers(28, "train.recompute");
        assert_eq!(layers(Recompute::default()).unwrap(), 0);
        assert_eq!(layers(Recompute::Named("layers".into())).unwrap(), 28);
        assert_eq!(layers(Recompute::Layers(10)).unwrap(), 10);
        let err = layers(Recompute::Layers(29)).unwrap_err().to_string();
        assert!(err.contains("train.recompute = 29") && err.contains("28 layers"), "{err}");
        let err = layers(Recompute::Named("all".into())).unwrap_err().to_string();
        assert!(err.contains("train.recompute = \"all\"") && err.contains("\"layers\""), "{err}");
    }
}
