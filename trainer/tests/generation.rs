//! Generation with the key/value cache on the tiny fixtures: batched, left-padded prompts
//! give the logits the full forward gives at the same positions, and the same tokens as
//! one prompt at a time; sampling is seeded, and a row's draws do not depend on its batch;
//! rows that stop leave the batch, a stop token mid-way ends its row there; a tiny top-p
//! is greedy.

use std::path::Path;

use burn::prelude::*;
use trainer::Cpu;
use trainer::generate::blocks::CacheSize;
use trainer::generate::{Sampling, generate, generate_with, longest_row};
use trainer::weights::load_model;

fn greedy(n: usize) -> Sampling {
    Sampling { max_new_tokens: n, temperature: 0.0, top_p: 1.0, seed: 1, eos: None }
}

#[test]
fn cached_batched_generation_equals_the_full_forward() {
    for name in ["llama", "qwen2"] {
        let device = Default::default();
        let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name), &device).unwrap();
        let prompts = vec![vec![5, 17, 99, 3, 42], vec![7, 8, 9, 10, 11, 12, 13, 14, 15], vec![100, 1, 64]];
        let out = generate(&model, &prompts, &greedy(6), true).unwrap();
        for (row, prompt) in prompts.iter().enumerate() {
            assert_eq!(out.tokens[row].len(), 6);
            let full: Vec<i64> = prompt.iter().chain(&out.tokens[row]).map(|&t| t as i64).collect();
            let len = full.len();
            let logits = model.forward(Tensor::from_data(TensorData::new(full, [1, len]), &device));
            let vocab = logits.dims()[2];
            let all = logits.into_data().to_vec::<f32>().unwrap();
            for (step, cached) in out.logits[row].iter().enumerate() {
                let at = prompt.len() - 1 + step;
                let reference = &all[at * vocab..(at + 1) * vocab];
                let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
                let gap = cached.iter().zip(reference).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(gap < 1e-4, "{name} row {row} step {step}: cached logits differ by {gap}");
            }
            let alone = generate(&model, &prompts[row..row + 1], &greedy(6), false).unwrap();
            assert_eq!(alone.tokens[0], out.tokens[row], "{name} row {row}: batching changed the tokens");
        }
    }
}

#[test]
fn sampling_is_seeded_and_stops_at_eos() {
    let device = Default::default();
    let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &device).unwrap();
    let prompts = vec![vec![5, 17, 99], vec![7, 8]];
    // top_p 0.9: drawn on the host; 1.0: on the device, from each row's key.
    for top_p in [0.9, 1.0] {
        let s = Sampling { max_new_tokens: 12, temperature: 1.0, top_p, seed: 3, eos: None };
        let a = generate(&model, &prompts, &s, false).unwrap();
        assert_eq!(a.tokens, generate(&model, &prompts, &s, false).unwrap().tokens, "top_p {top_p}");
        assert_ne!(a.tokens, generate(&model, &prompts, &Sampling { seed: 4, ..s.clone() }, false).unwrap().tokens, "top_p {top_p}");
    }
    let s = Sampling { max_new_tokens: 12, temperature: 1.0, top_p: 0.9, seed: 3, eos: None };
    let tiny_p = generate(&model, &prompts, &Sampling { top_p: 1e-9, ..s.clone() }, false).unwrap();
    assert_eq!(tiny_p.tokens, generate(&model, &prompts, &greedy(12), false).unwrap().tokens, "top-p near 0 is greedy");
    // The first greedy token of row 0 as eos: row 0 stops there, row 1 goes on.
    let first = generate(&model, &prompts, &greedy(1), false).unwrap().tokens[0][0];
    let stopped = generate(&model, &prompts, &Sampling { eos: Some(first), ..greedy(5) }, false).unwrap();
    assert_eq!(stopped.tokens[0], vec![first]);
    assert!(!stopped.tokens[1].is_empty());
}

/// A row's device draws depend on its key (the seed and its index), not on the rows
/// that share its batch.
#[test]
fn a_rows_draws_do_not_depend_on_its_batch() {
    let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &Default::default()).unwrap();
    let s = Sampling { max_new_tokens: 10, temperature: 1.0, top_p: 1.0, seed: 8, eos: None };
    let batch = generate(&model, &[vec![5, 17, 99], vec![7, 8], vec![60, 61, 62, 63]], &s, false).unwrap().tokens;
    let alone = generate(&model, &[vec![5, 17, 99]], &s, false).unwrap().tokens;
    assert_eq!(batch[0], alone[0]);
}

/// Rows that stop early leave the batch (their cache rows dropped); the others go on with
/// the tokens they would have had.
#[test]
fn finished_rows_leave_without_changing_the_others() {
    let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &Default::default()).unwrap();
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|r| (0..2 + r).map(|i| (r * 13 + i * 7 + 1) % 120).collect()).collect();
    let free = generate(&model, &prompts, &greedy(10), false).unwrap().tokens;
    // Stop at tokens some rows reach early and others late or never; at least one of them
    // stops a quarter of the rows before the last step, so the batch is compacted.
    let stops_early = |eos: u32| free.iter().filter(|t| t[..9].contains(&eos)).count();
    assert!([free[0][0], free[3][2], free[5][6]].iter().any(|&eos| stops_early(eos) * 4 >= free.len()), "{free:?}");
    for eos in [free[0][0], free[3][2], free[5][6]] {
        let stopped = generate(&model, &prompts, &Sampling { eos: Some(eos), ..greedy(10) }, false).unwrap().tokens;
        for (row, tokens) in free.iter().enumerate() {
            let end = tokens.iter().position(|&t| t == eos).map_or(tokens.len(), |i| i + 1);
            assert_eq!(stopped[row], tokens[..end], "eos {eos}, row {row}");
        }
    }
}

/// A row that meets the stop token mid-way ends with it, its tokens before it the ones it
/// gets without a stop token (its next step was already in flight on the device: that
/// step's extra token is dropped), and the other rows go on as before.
#[test]
fn a_stop_token_mid_way_ends_the_row_there() {
    let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &Default::default()).unwrap();
    let prompts = vec![vec![5, 17, 99], vec![7, 8], vec![60, 61, 62, 63]];
    let s = Sampling { max_new_tokens: 10, temperature: 1.0, top_p: 1.0, seed: 8, eos: None };
    let free = generate(&model, &prompts, &s, false).unwrap().tokens;
    let stop = free[0][3];
    let stopped = generate(&model, &prompts, &Sampling { eos: Some(stop), ..s }, false).unwrap().tokens;
    for (row, tokens) in free.iter().enumerate() {
        let end = tokens.iter().position(|&t| t == stop).map_or(tokens.len(), |i| i + 1);
        assert_eq!(stopped[row], tokens[..end], "row {row}");
    }
    assert!(stopped[0].len() > 1, "row 0 stops after a decoding step, not at its prefill");
}

/// Fewer slots than prompts, in a contiguous cache and in a paged one with too few blocks
/// for every row at full length: prompts wait and take the slots of rows that finished,
/// rows that outgrow the free blocks wait and come back, and every row gets the tokens
/// (and, kept, the logits) it gets with all rows at once, greedy or sampled on the device
/// or the host, with rows stopping early or not.
#[test]
fn rows_in_fewer_slots_and_blocks_get_what_they_get_all_at_once() {
    let model = load_model::<Cpu>(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"), &Default::default()).unwrap();
    let prompts: Vec<Vec<u32>> = (0..7u32).map(|r| (0..1 + (r * 5) % 19).map(|i| (r * 29 + i * 11 + 3) % 120).collect()).collect();
    let free = generate(&model, &prompts, &greedy(9), false).unwrap().tokens;
    let sampled = Sampling { max_new_tokens: 9, temperature: 1.0, top_p: 1.0, seed: 5, eos: None };
    let mut sent_back = 0;
    for s in [
        greedy(9),
        Sampling { eos: Some(free[2][1]), ..greedy(9) },
        sampled.clone(),
        Sampling { top_p: 0.8, ..sampled.clone() },
        Sampling { eos: Some(free[4][0]), ..sampled },
    ] {
        let keep = s.top_p < 1.0;
        let all = generate(&model, &prompts, &s, keep).unwrap();
        assert_eq!(all.sent_back, 0, "the CPU holds every row at full length");
        let longest = longest_row(&prompts, &s);
        for slots in [1, 2, 3] {
            // Blocks of 4 positions: one row at full length and a few blocks more.
            let paged = CacheSize { slots: 2 * slots, blocks: 1 + longest / 4 + 3 * slots, block: 4 };
            for size in [CacheSize::contiguous(slots, longest), paged] {
                let some = generate_with(&model, &prompts, &s, keep, size).unwrap();
                assert_eq!(some.tokens, all.tokens, "{size:?}, {s:?}");
                for (a, b) in some.logits.iter().flatten().zip(all.logits.iter().flatten()) {
                    let gap = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(gap < 1e-5, "{size:?}: kept logits differ by {gap}");
                }
                sent_back += some.sent_back;
            }
        }
    }
    assert!(sent_back > 0, "no row outgrew the free blocks: the paged sizes test nothing");
}

#[test]
fn greedy_tokens_equal_transformers_generate() {
    for name in ["llama", "qwen2"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<Vec<u32>> {
            v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()).collect()
        };
        let (prompts, want) = (ids(&reference["greedy"]["prompts"]), ids(&reference["greedy"]["new_tokens"]));
        let model = load_model::<Cpu>(&dir, &Default::default()).unwrap();
        let out = generate(&model, &prompts, &greedy(8), false).unwrap();
        assert_eq!(out.tokens, want, "{name}: left-padded batched greedy generation differs from transformers");
    }
}

#[test]
fn device_draws_follow_the_tempered_softmax() {
    // 40,000 rows of the same four logits, each with its own key: the share of each token
    // must be its probability under softmax(logits / T), within 4 standard errors, at T = 1
    // and T = 0.5.
    type B = Cpu;
    let device = Default::default();
    let p = [0.1f64, 0.2, 0.3, 0.4];
    let rows = 40_000;
    let logits: Vec<f32> = (0..rows).flat_map(|_| p.iter().map(|x| x.ln() as f32)).collect();
    use trainer::ops::pick_tokens::{row_key, step_hash};
    for (step, temperature) in [(0, 1.0), (5, 0.5)] {
        let hashes: Vec<u32> = (0..rows).map(|row| step_hash(row_key(11, row), step)).collect();
        let t = burn::prelude::Tensor::<B, 2>::from_data(burn::prelude::TensorData::new(logits.clone(), [rows, 4]), &device);
        let picked = trainer::ops::pick_tokens::pick_tokens(t, &hashes, temperature).into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let weights: Vec<f64> = p.iter().map(|x| x.powf(1.0 / temperature)).collect();
        let total: f64 = weights.iter().sum();
        for (token, w) in weights.iter().enumerate() {
            let want = w / total;
            let got = picked.iter().filter(|&&t| t == token as i64).count() as f64 / rows as f64;
            let se = (want * (1.0 - want) / rows as f64).sqrt();
            assert!((got - want).abs() < 4.0 * se, "T = {temperature}, token {token}: share {got:.4}, expected {want:.4}");
        }
    }
}
