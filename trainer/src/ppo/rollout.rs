//! One PPO rollout batch: for each prompt, `samples` responses from the actor (KV-cache
//! generation, temperature 1 by default); then, over prompt + response (micro-batches of
//! rows per forward pass, `batch::MicroBatching`; each model runs all of them in turn from
//! its weights cast once to the compute dtype), the actor's and the reference's
//! log-probabilities of the response tokens, the critic's values, the task's score of the
//! decoded text (on the last response token), KL-shaped token rewards, and whitened GAE
//! advantages with their returns.
//! Everything the PPO update needs, and how long each part took (each part ends reading
//! its results on the host, so the times are the device's too).

use std::time::Instant;

use anyhow::Result;

use super::batch::{MicroBatching, Packed};
use super::critic::Critic;
use super::gae::{gae, shaped_rewards, whiten};
use super::loss::token_logp;
use crate::ModelBackend;
use crate::diag::gpu_profile;
use crate::generate::{Sampling, generate};
use crate::model::Llama;

/// Turns token ids back into text (the tokenizer in real runs).
pub trait Detokenize {
    fn decode(&self, ids: &[u32]) -> String;
}

/// The PPO settings a rollout needs.
#[derive(Clone, Debug)]
pub struct RolloutSettings {
    pub samples: usize,
    pub sampling: Sampling,
    /// The rows of each scoring pass.
    pub micro_batching: MicroBatching,
    pub kl_coef: f64,
    pub gamma: f64,
    pub lambda: f64,
}

/// One response and what the update needs of it (all per response token).
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Which of the batch's prompts this responds to.
    pub index: usize,
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub score: f64,
    pub old_logp: Vec<f64>,
    pub ref_logp: Vec<f64>,
    pub values: Vec<f64>,
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
}

/// Seconds of a rollout batch's parts: the generation, and over every scoring pass the
/// actor's and the reference's log-probabilities and the critic's values.
#[derive(Clone, Copy, Debug, Default)]
pub struct RolloutTimes {
    pub generation_s: f64,
    pub actor_logp_s: f64,
    pub reference_logp_s: f64,
    pub values_s: f64,
}

/// A scored batch, its times, and how often a row waited for cache blocks while generating
/// (`generate::Generated::sent_back`).
#[derive(Clone, Debug)]
pub struct RolloutBatch {
    pub rollouts: Vec<Rollout>,
    pub times: RolloutTimes,
    pub rows_sent_back: usize,
}

/// Samples and scores a batch; `score(prompt_index, text)` rates the decoded prompt + response.
pub fn rollout<B: ModelBackend, D: Detokenize>(
    actor: &Llama<B>,
    reference: &Llama<B>,
    critic: &Critic<B>,
    prompts: &[Vec<u32>],
    detok: &D,
    score: impl Fn(usize, &str) -> f64,
    s: &RolloutSettings,
) -> Result<RolloutBatch> {
    let mut times = RolloutTimes::default();
    let started = Instant::now();
    gpu_profile::mark("generation");
    let expanded: Vec<(usize, Vec<u32>)> = prompts.iter().enumerate().flat_map(|(i, p)| std::iter::repeat_n((i, p.clone()), s.samples)).collect();
    let batch: Vec<Vec<u32>> = expanded.iter().map(|(_, p)| p.clone()).collect();
    let generated = generate(actor, &batch, &s.sampling, false)?;
    times.generation_s = started.elapsed().as_secs_f64();
    let rows_sent_back = generated.sent_back;
    let kept: Vec<(usize, Vec<u32>, Vec<u32>)> =
        expanded.into_iter().zip(generated.tokens).filter(|(_, response)| !response.is_empty()).map(|((i, p), r)| (i, p, r)).collect();
    let pad = s.sampling.eos.unwrap_or(0);
    let widths: Vec<usize> = kept.iter().map(|(_, p, r)| p.len() + r.len()).collect();
    let longest = kept.iter().map(|(_, p, _)| p.len()).max().unwrap_or(0) + s.sampling.max_new_tokens;
    let passes: Vec<Vec<(&[u32], &[u32])>> =
        s.micro_batching.cut(&widths, longest).into_iter().map(|range| kept[range].iter().map(|(_, p, r)| (p.as_slice(), r.as_slice())).collect()).collect();
    let scores = score_tokens(actor, reference, critic, &passes, pad, &mut times);
    let mut out = Vec::with_capacity(kept.len());
    for ((index, prompt, response), (logp, ref_logp, values)) in kept.into_iter().zip(scores) {
        let full: Vec<u32> = prompt.iter().chain(&response).copied().collect();
        let sequence_score = score(index, &detok.decode(&full));
        let rewards = shaped_rewards(sequence_score, &logp, &ref_logp, s.kl_coef);
        let (advantages, returns) = gae(&rewards, &values, s.gamma, s.lambda);
        out.push(Rollout { index, prompt, response, score: sequence_score, old_logp: logp, ref_logp, values, advantages, returns });
    }
    let mut advantages: Vec<Vec<f64>> = out.iter().map(|r| r.advantages.clone()).collect();
    whiten(&mut advantages);
    for (r, a) in out.iter_mut().zip(advantages) {
        r.advantages = a;
    }
    Ok(RolloutBatch { rollouts: out, times, rows_sent_back })
}

/// Per row of `passes` (rows of prompt + response, one forward pass each) and response
/// token: the actor's and the reference's log-probability of the token, and the critic's
/// value of the state it was chosen in. Each model runs every pass in turn from a copy of
/// its weights in the compute dtype, cast once (`Llama::for_scoring`) and dropped before the
/// next model's is made; its time (its results read on the host) is added to `times`.
fn score_tokens<B: ModelBackend>(
    actor: &Llama<B>,
    reference: &Llama<B>,
    critic: &Critic<B>,
    passes: &[Vec<(&[u32], &[u32])>],
    pad: u32,
    times: &mut RolloutTimes,
) -> Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let device = actor.embed_tokens.weight.val().device();
    // Each model's passes end reading their results on the host: the device has finished them.
    let each_pass = |seconds: &mut f64, name: &str, pass: &dyn Fn(&Packed<B>) -> Vec<Vec<f64>>| {
        gpu_profile::mark(name);
        let started = Instant::now();
        let out: Vec<Vec<f64>> = passes.iter().flat_map(|rows| pass(&Packed::new(rows, pad, &device))).collect();
        *seconds += started.elapsed().as_secs_f64();
        out
    };
    let logp_of = |m: &Llama<B>, packed: &Packed<B>| packed.gather(token_logp(m.forward_range(packed.ids.clone(), packed.start, packed.len), packed.targets()));
    let actor_logp = {
        let actor = actor.for_scoring();
        each_pass(&mut times.actor_logp_s, "scoring: actor", &|packed| logp_of(&actor, packed))
    };
    let reference_logp = {
        let reference = reference.for_scoring();
        each_pass(&mut times.reference_logp_s, "scoring: reference", &|packed| logp_of(&reference, packed))
    };
    let values = {
        let critic = critic.for_scoring();
        each_pass(&mut times.values_s, "scoring: critic", &|packed| packed.gather(critic.values(packed.ids.clone()).narrow(1, packed.start, packed.len)))
    };
    actor_logp.into_iter().zip(reference_logp).zip(values).map(|((a, r), v)| (a, r, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Token ids as characters: 48..58 are the digits, 32 a space, 40..48 `()*+,-./`.
    struct Ascii;

    impl Detokenize for Ascii {
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter().map(|&t| char::from_u32(t).filter(|c| c.is_ascii_graphic() || *c == ' ').unwrap_or('?')).collect()
        }
    }

    #[test]
    fn a_rollout_batch_has_what_the_update_needs() {
        let device = Default::default();
        let actor = crate::weights::load_model::<crate::Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device).unwrap();
        let reference = actor.clone();
        let critic = Critic::from_actor(&actor);
        let prompts = vec![vec![5, 17, 99], vec![7, 8, 9, 10]];
        let settings = RolloutSettings {
            samples: 3,
            sampling: Sampling { max_new_tokens: 6, temperature: 1.0, top_p: 1.0, seed: 9, eos: None },
            micro_batching: MicroBatching { rows: 4, by_positions: false },
            kl_coef: 0.001,
            gamma: 1.0,
            lambda: 1.0,
        };
        // Reward responses that contain the digit 1 (id 49).
        let score = |_: usize, text: &str| if text.contains('1') { 1.0 } else { 0.0 };
        let rolled = rollout(&actor, &reference, &critic, &prompts, &Ascii, score, &settings).unwrap();
        let t = rolled.times;
        assert!(t.generation_s > 0.0 && t.actor_logp_s > 0.0 && t.reference_logp_s > 0.0 && t.values_s > 0.0, "{t:?}");
        let batch = rolled.rollouts;
        assert_eq!(batch.len(), 6, "3 samples of 2 prompts");
        for r in &batch {
            assert_eq!(r.response.len(), 6);
            for v in [&r.old_logp, &r.ref_logp, &r.values, &r.advantages, &r.returns] {
                assert_eq!(v.len(), 6);
            }
            assert_eq!(r.old_logp, r.ref_logp, "the reference is the actor: no KL yet");
            assert!(r.values.iter().all(|&v| v == 0.0), "a fresh critic values everything at 0");
            // gamma = lambda = 1 and values 0: every return is the score.
            assert!(r.returns.iter().all(|&x| (x - r.score).abs() < 1e-9));
            assert!(r.old_logp.iter().all(|&l| l < 0.0 && l.is_finite()));
        }
        let all: Vec<f64> = batch.iter().flat_map(|r| r.advantages.clone()).collect();
        assert!(all.iter().sum::<f64>().abs() < 1e-6, "advantages are whitened");
        // Samples of one prompt differ (temperature 1).
        assert!(batch[0].response != batch[1].response || batch[1].response != batch[2].response);
    }

    /// Scoring gives each row its own log-probabilities and values however the rows are cut
    /// into passes, with each model's weights cast once for all of them (f64 standing in for
    /// bf16, which the CPU backend lacks): the same, row by row, as the row alone through
    /// the models as they are (every pass casting the weights itself).
    #[test]
    fn scores_are_each_rows_own_however_the_passes_are_cut() {
        use burn::tensor::FloatDType;
        let device = Default::default();
        let compute = Some(FloatDType::F64);
        let actor = crate::weights::load_model::<crate::Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device)
            .unwrap()
            .with_compute(compute);
        let reference = Llama::<crate::Cpu>::random(&actor.config, &device).with_compute(compute);
        let critic = Critic::from_actor(&actor).with_random_value_head(0.02);
        let prompts = vec![vec![5, 17, 99, 3, 8], vec![7, 8], vec![60, 2, 44]];
        let run = |rows: usize, by_positions: bool| {
            let settings = RolloutSettings {
                samples: 2,
                sampling: Sampling { max_new_tokens: 5, temperature: 1.0, top_p: 1.0, seed: 4, eos: None },
                micro_batching: MicroBatching { rows, by_positions },
                kl_coef: 0.001,
                gamma: 1.0,
                lambda: 1.0,
            };
            rollout(&actor, &reference, &critic, &prompts, &Ascii, |_, _| 0.0, &settings).unwrap().rollouts
        };
        let close = |a: &[f64], b: &[f64], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{what}: {a:?} against {b:?}");
        };
        let alone = run(1, false);
        assert_eq!(alone.len(), 6);
        for cut in [run(4, false), run(2, true)] {
            for (a, b) in alone.iter().zip(&cut) {
                assert_eq!((a.index, &a.prompt, &a.response), (b.index, &b.prompt, &b.response));
                close(&a.old_logp, &b.old_logp, "the actor's");
                close(&a.ref_logp, &b.ref_logp, "the reference's");
                close(&a.values, &b.values, "the critic's");
            }
        }
        for r in &alone {
            let packed = Packed::<crate::Cpu>::new(&[(r.prompt.as_slice(), r.response.as_slice())], 0, &device);
            let logp =
                |m: &Llama<crate::Cpu>| packed.gather(token_logp(m.forward_range(packed.ids.clone(), packed.start, packed.len), packed.targets())).remove(0);
            close(&r.old_logp, &logp(&actor), "the actor's, alone");
            close(&r.ref_logp, &logp(&reference), "the reference's, alone");
            let values = packed.gather(critic.values(packed.ids.clone()).narrow(1, packed.start, packed.len)).remove(0);
            close(&r.values, &values, "the critic's, alone");
            assert!(r.values.iter().any(|&v| v != 0.0) && r.old_logp != r.ref_logp, "the models differ");
        }
    }
}
