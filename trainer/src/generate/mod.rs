//! Batched generation with a key/value cache of `slots` rows: prompts wait in order and
//! take free slots, a prefill pass for the prompts admitted together (left-padded to one
//! length, a multiple of `PROMPT_BUCKET`), then one decoding step at a time for every slot;
//! a row that finishes frees its slot for the next prompt (continuous batching). Each row
//! has its own positions (padding does not count) and its own length in the cache, and
//! never attends to its padding or to other rows. The cache is written in place at each
//! row's position, and a decoding step's attention reads each row's own positions only
//! (`ops::decode_attention`). The weights are held in the compute dtype for the whole call (`Llama::for_generation`). Once every prompt is
//! admitted, free slots leave the cache when they are a quarter of it, so they stop
//! costing every remaining step. Greedy picks, and sampling without a top-p cut (PPO's
//! rollouts), happen on the device (`sample`): only the chosen ids come back, not `[rows,
//! vocab]` logits each step, and a row's draws come from its own key (the seed and its
//! index in `prompts`) and its step, whatever other rows share its batch and whatever slot
//! it has. Then a step is issued before the previous step's picks reach the host: it
//! feeds them as they lie on the device, and the host records them (finished rows, new
//! prompts) while the GPU runs the next step; a row that finished at the previous step
//! costs the step in flight one wasted position, and its extra token is dropped.

mod sample;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::Llama;
use crate::model::kv_cache::{Attend, CacheStep, KvCache};
use crate::ops::kv_write::Placement;
use crate::ops::pick_tokens::{PendingPicks, PicksReader, pick_tokens, row_key, step_hash};

use self::sample::pick_rows;

/// Prompts are left-padded to a multiple of this, and the cache's capacity is rounded up to
/// a multiple of `CACHE_BUCKET`: a few shapes for all batches, so GPU kernels compiled for
/// one batch serve the next.
pub const PROMPT_BUCKET: usize = 16;
const CACHE_BUCKET: usize = 64;

/// How to pick tokens.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// A row stops after this token.
    pub eos: Option<u32>,
}

/// What came out.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    /// The new tokens of each row (ending with eos when it came).
    pub tokens: Vec<Vec<u32>>,
    /// With `keep_logits`: the logits each new token was chosen from, per row and step.
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// `n` rounded up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// A row being generated in a slot of the cache.
struct Slot {
    /// The row's index in the caller's prompts.
    row: usize,
    /// The first cache position of the row's prompt (its left padding before).
    start: usize,
    /// Cache positions written (padding, prompt, fed tokens).
    len: usize,
    /// The row's next position (its padding does not count).
    next_pos: usize,
    /// Tokens picked and recorded so far; the last one recorded (fed next unless a step is
    /// in flight, whose picks are fed as they lie on the device).
    picked: usize,
    last: u32,
    /// Picks asked for so far, recorded or in flight (a row's draw at a step is keyed by it).
    issued: usize,
    /// Sampling: the row's stream (host draws) and key (device draws).
    rng: fastrand::Rng,
    key: u32,
}

/// Generates continuations of `prompts` (token ids, each non-empty): all rows at once, or
/// as many at a time as the card's free memory holds the caches of (`slots_that_fit`).
pub fn generate<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool) -> Result<Generated> {
    let slots = slots_that_fit(model, prompts.len(), cache_capacity(prompts, s));
    generate_in_slots(model, prompts, s, keep_logits, slots)
}

/// Positions a slot holds: the longest prompt (padded to `PROMPT_BUCKET`) and every new
/// token, rounded up to `CACHE_BUCKET`.
fn cache_capacity(prompts: &[Vec<u32>], s: &Sampling) -> usize {
    let longest = round_up(prompts.iter().map(Vec::len).max().unwrap_or(0), PROMPT_BUCKET);
    round_up(longest + s.max_new_tokens, CACHE_BUCKET)
}

/// Share of the card's free memory the caches may take; the rest is for the weights' copy
/// in the compute dtype and the passes' activations and logits.
const CACHE_SHARE: f64 = 0.6;

/// How many rows' caches of `capacity` positions fit in `CACHE_SHARE` of the card's free
/// memory, at most `rows` (all of them where the device does not say: the CPU).
pub fn slots_that_fit<B: ModelBackend>(model: &Llama<B>, rows: usize, capacity: usize) -> usize {
    let device = model.embed_tokens.weight.val().device();
    // The memory pool keeps the pages of earlier passes (a PPO update's graphs and
    // gradients) that no tensor uses; the driver counts them as taken until they go back.
    B::memory_cleanup(&device);
    let Some((free, _)) = crate::run::memory_plan::card_memory(&device) else { return rows };
    let c = &model.config;
    let bytes = model.compute().map_or(4, |d| burn::tensor::DType::from(d).size());
    let per_slot = 2 * c.num_layers * c.num_kv_heads * c.head_dim * capacity * bytes;
    ((free as f64 * CACHE_SHARE) as usize / per_slot.max(1)).clamp(1, rows)
}

/// Generates continuations of `prompts` with at most `slots` rows at a time: the prompts
/// wait in order, and new ones take the slots of rows that finished (continuous batching).
/// Each row's tokens are the ones it would get with every row at once (its draws come from
/// its own key).
pub fn generate_in_slots<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool, slots: usize) -> Result<Generated> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        bail!("generation needs at least one prompt, and no empty prompt");
    }
    if s.max_new_tokens == 0 {
        return Ok(Generated { tokens: vec![Vec::new(); prompts.len()], logits: vec![Vec::new(); prompts.len()] });
    }
    let model = model.for_generation();
    let (capacity, slots) = (cache_capacity(prompts, s), slots.clamp(1, prompts.len()));
    let reader = B::picks_reader(&model.embed_tokens.weight.val().device());
    let mut engine = Engine {
        model: &model,
        s,
        keep_logits,
        reader: reader.as_ref(),
        caches: model.new_caches(slots, capacity),
        slots: (0..slots).map(|_| None).collect(),
        in_flight: None,
        out: Generated { tokens: vec![Vec::new(); prompts.len()], logits: vec![Vec::new(); prompts.len()] },
    };
    let mut waiting = prompts.iter().enumerate().peekable();
    loop {
        // What the host knows: a step in flight may have finished rows it has not seen yet.
        let free: Vec<usize> = (0..engine.slots.len()).filter(|&i| engine.slots[i].is_none()).collect();
        let live = engine.slots.len() - free.len();
        // New prompts take the free slots once an eighth of them are free (each admission
        // is a prefill pass), or when nothing is generating.
        let admit = waiting.peek().is_some() && !free.is_empty() && (free.len() * 8 >= engine.slots.len() || live == 0);
        // Free slots leave once the prompts are all admitted and a quarter of the slots are free.
        let compact = !admit && live > 0 && waiting.peek().is_none() && free.len() * 4 >= engine.slots.len();
        let continuing = engine.slots.iter().flatten().any(|row| row.issued < s.max_new_tokens);
        // Admissions and compactions change the slots: the step in flight lands first.
        if engine.in_flight.is_some() && (admit || compact || !continuing) {
            engine.land()?;
            continue;
        }
        if admit {
            let admitted: Vec<(usize, usize)> = free.iter().zip(waiting.by_ref()).map(|(&slot, (row, _))| (slot, row)).collect();
            engine.prefill(&admitted, prompts)?;
            continue;
        }
        if live == 0 {
            break;
        }
        if compact {
            engine.compact();
        }
        engine.decode()?;
    }
    Ok(engine.out)
}

/// A decoding step whose picks are on their way to the host: the ids on the device (the
/// next step's input), and the row each slot held when it was issued.
struct InFlight<'a, B: ModelBackend> {
    picks: Tensor<B, 1, Int>,
    tokens: PendingPicks<'a>,
    rows: Vec<Option<usize>>,
}

/// Generation's state: the model, the caches and their slots, the step in flight, what
/// came out.
struct Engine<'a, B: ModelBackend> {
    model: &'a Llama<B>,
    s: &'a Sampling,
    keep_logits: bool,
    reader: &'a dyn PicksReader<B>,
    caches: Vec<KvCache<B>>,
    slots: Vec<Option<Slot>>,
    in_flight: Option<InFlight<'a, B>>,
    out: Generated,
}

impl<'a, B: ModelBackend> Engine<'a, B> {
    fn device(&self) -> B::Device {
        self.model.embed_tokens.weight.val().device()
    }

    /// Whether tokens are picked on the device (greedy, or sampling without a top-p cut,
    /// logits not kept): then a decoding step is issued before the previous one's picks
    /// reach the host.
    fn picks_on_device(&self) -> bool {
        !self.keep_logits && (self.s.temperature <= 0.0 || self.s.top_p >= 1.0)
    }

    /// Prefills the prompts of `admitted` (`(slot, row)`) into their slots, each left-padded
    /// to the longest of them (rounded up to `PROMPT_BUCKET`), and picks their first tokens.
    fn prefill(&mut self, admitted: &[(usize, usize)], prompts: &[Vec<u32>]) -> Result<()> {
        let device = self.device();
        let longest = round_up(admitted.iter().map(|&(_, row)| prompts[row].len()).max().unwrap_or(0), PROMPT_BUCKET);
        let pad = self.s.eos.unwrap_or(0);
        let pads: Vec<usize> = admitted.iter().map(|&(_, row)| longest - prompts[row].len()).collect();
        let ids: Vec<i64> =
            admitted.iter().zip(&pads).flat_map(|(&(_, row), &n)| std::iter::repeat_n(pad as i64, n).chain(prompts[row].iter().map(|&t| t as i64))).collect();
        let positions: Vec<Vec<usize>> = pads.iter().map(|&n| (0..longest).map(|j| j.saturating_sub(n)).collect()).collect();
        // Causal over the prompt, padding hidden; a padding query sees only itself (its
        // output is never used).
        let mut bias = Vec::with_capacity(admitted.len() * longest * longest);
        for &n in &pads {
            for q in 0..longest {
                bias.extend((0..longest).map(|k| if (q < n && k == q) || (q >= n && k >= n && k <= q) { 0.0f32 } else { f32::NEG_INFINITY }));
            }
        }
        let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [admitted.len(), 1, longest, longest]), &device);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [admitted.len(), longest]), &device);
        let step =
            CacheStep { at: Placement::new(admitted.iter().map(|&(slot, _)| slot).collect(), vec![0; admitted.len()], &device), attend: Attend::NewKeys };
        let logits = self.model.forward_cached(ids, &positions, Some(bias), &mut self.caches, &step);
        for (&(slot, row), &n) in admitted.iter().zip(&pads) {
            let rng = fastrand::Rng::with_seed(self.s.seed ^ (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            self.slots[slot] =
                Some(Slot { row, start: n, len: longest, next_pos: prompts[row].len(), picked: 0, last: 0, issued: 0, rng, key: row_key(self.s.seed, row) });
        }
        let order: Vec<usize> = admitted.iter().map(|&(slot, _)| slot).collect();
        let tokens = if self.picks_on_device() {
            let picks = self.pick_on_device(logits, &order);
            (self.reader.start(picks))()?
        } else {
            self.pick_on_host(logits, &order)?
        };
        let rows = self.rows_of(&order);
        self.record(&order, &rows, tokens);
        Ok(())
    }

    /// One decoding step of every slot: each live row's last token is fed at its own
    /// position, and its next token picked. With picks on the device, the step is issued
    /// feeding the previous step's picks as they lie there, and only then are those
    /// recorded: the host waits for step t while the GPU runs step t + 1.
    fn decode(&mut self) -> Result<()> {
        let device = self.device();
        let pad = self.s.eos.unwrap_or(0);
        let rows = self.slots.len();
        let ids = match &self.in_flight {
            Some(previous) => previous.picks.clone().reshape([rows, 1]),
            None => {
                let ids: Vec<i64> = self.slots.iter().map(|slot| slot.as_ref().map_or(pad, |r| r.last) as i64).collect();
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, 1]), &device)
            }
        };
        let positions: Vec<Vec<usize>> = self.slots.iter().map(|slot| vec![slot.as_ref().map_or(0, |r| r.next_pos)]).collect();
        // Each row sees its slot from its first prompt position to its new key; a free
        // slot feeds padding at its position 0 and sees only it.
        let (starts, firsts) = self.slots.iter().map(|slot| slot.as_ref().map_or((0, 0), |r| (r.len, r.start))).unzip();
        let step = CacheStep { at: Placement::seeing((0..rows).collect(), starts, firsts, &device), attend: Attend::Cache };
        let logits = self.model.forward_cached(ids, &positions, None, &mut self.caches, &step);
        for slot in self.slots.iter_mut().flatten() {
            slot.len += 1;
            slot.next_pos += 1;
        }
        let order: Vec<usize> = (0..rows).collect();
        let issued_rows = self.rows_of(&order);
        if !self.picks_on_device() {
            let tokens = self.pick_on_host(logits, &order)?;
            self.record(&order, &issued_rows, tokens);
            return Ok(());
        }
        let picks = self.pick_on_device(logits, &order);
        let tokens = self.reader.start(picks.clone());
        match self.in_flight.replace(InFlight { picks, tokens, rows: issued_rows }) {
            Some(previous) => self.land_step(previous),
            None => Ok(()),
        }
    }

    /// Waits for the step in flight and records its picks.
    fn land(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(step) => self.land_step(step),
            None => Ok(()),
        }
    }

    fn land_step(&mut self, step: InFlight<'a, B>) -> Result<()> {
        let tokens = (step.tokens)()?;
        let order: Vec<usize> = (0..step.rows.len()).collect();
        self.record(&order, &step.rows, tokens);
        Ok(())
    }

    /// The row each of the slots `order` holds.
    fn rows_of(&self, order: &[usize]) -> Vec<Option<usize>> {
        order.iter().map(|&slot| self.slots[slot].as_ref().map(|r| r.row)).collect()
    }

    /// The next token of the rows in `order` (their slots; `logits` `[order.len(), 1,
    /// vocab]`) picked on the device, each row drawing with its key and its count of picks.
    fn pick_on_device(&mut self, logits: Tensor<B, 3>, order: &[usize]) -> Tensor<B, 1, Int> {
        let [rows, _, vocab] = logits.dims();
        // Free slots draw too (their token is dropped).
        let hashes: Vec<u32> = order
            .iter()
            .map(|&slot| {
                self.slots[slot].as_mut().map_or(0, |r| {
                    r.issued += 1;
                    step_hash(r.key, (r.issued - 1) as u32)
                })
            })
            .collect();
        pick_tokens(logits.reshape([rows, vocab]), &hashes, self.s.temperature)
    }

    /// The next token of the rows in `order` picked on the host (a top-p cut, or logits
    /// kept), each row drawing from its own stream.
    fn pick_on_host(&mut self, logits: Tensor<B, 3>, order: &[usize]) -> Result<Vec<u32>> {
        let [rows, _, vocab] = logits.dims();
        let host = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
        let mut work: Vec<(usize, &mut fastrand::Rng)> = Vec::new();
        let mut by_slot: Vec<Option<&mut Slot>> = self.slots.iter_mut().map(Option::as_mut).collect();
        for (i, &slot) in order.iter().enumerate() {
            if let Some(row) = by_slot[slot].take() {
                row.issued += 1;
                if self.keep_logits {
                    self.out.logits[row.row].push(host[i * vocab..(i + 1) * vocab].to_vec());
                }
                work.push((i, &mut row.rng));
            }
        }
        let drawn = pick_rows(&host, vocab, &mut work, self.s);
        let mut picked = vec![0u32; rows];
        for ((i, _), token) in work.iter().zip(drawn) {
            picked[*i] = token;
        }
        Ok(picked)
    }

    /// Records `tokens[i]` for the row in slot `order[i]` if it is still the row `rows[i]`
    /// the pick was issued for (a row that finished meanwhile drops its extra token), and
    /// frees the slots of rows that finished.
    fn record(&mut self, order: &[usize], rows: &[Option<usize>], tokens: Vec<u32>) {
        let s = self.s;
        for ((&slot, &issued_for), token) in order.iter().zip(rows).zip(tokens) {
            let Some(row) = self.slots[slot].as_mut() else { continue };
            if Some(row.row) != issued_for {
                continue;
            }
            self.out.tokens[row.row].push(token);
            row.picked += 1;
            row.last = token;
            if s.eos == Some(token) || row.picked == s.max_new_tokens {
                self.slots[slot] = None;
            }
        }
    }

    /// Drops the free slots from the caches (copying the live rows' caches).
    fn compact(&mut self) {
        let kept: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].is_some()).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(kept.iter().map(|&i| i as i64).collect::<Vec<_>>(), [kept.len()]), &self.device());
        self.caches.iter_mut().for_each(|cache| cache.keep_slots(index.clone()));
        self.slots = kept.into_iter().map(|i| self.slots[i].take()).collect();
    }
}
