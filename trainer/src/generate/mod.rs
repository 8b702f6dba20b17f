//! Batched generation over a paged key/value cache (`blocks`): prompts wait in order and
//! take free slots of the decoding batch, a prefill pass for the prompts admitted together
//! (left-padded to one length, a multiple of `PROMPT_BUCKET`), then one decoding step at a
//! time for every slot; a row that finishes frees its slot and its blocks for the next
//! prompt (continuous batching). A row holds the blocks its positions need, one more each
//! time it fills one; when none is free, the rows admitted last give theirs back and wait
//! at the head of the queue, to be prefilled again with the tokens they have (vLLM's
//! preemption by recomputation). Each row has its own positions (padding does not count)
//! and its own length, and never attends to its padding or to other rows. The cache is
//! written in place at each row's position, and a decoding step's attention reads each
//! row's own positions only (`ops::decode_attention`). The weights are held in the compute
//! dtype for the whole call (`Llama::for_generation`). Once every prompt is admitted, free
//! slots leave the batch when they are a quarter of it, so they stop costing every
//! remaining step. Greedy picks, and sampling without a top-p cut (PPO's rollouts), happen
//! on the device (`sample`): only the chosen ids come back, not `[rows, vocab]` logits each
//! step, and a row's draws come from its own key (the seed and its index in `prompts`) and
//! its step, whatever other rows share its batch, whatever slot it has and however often it
//! waited. Then a step is issued before the previous step's picks reach the host: it feeds
//! them as they lie on the device, and the host records them (finished rows, new prompts)
//! while the GPU runs the next step; a row that finished at the previous step costs the
//! step in flight one wasted position, and its extra token is dropped.

pub mod blocks;
mod sample;

use std::collections::VecDeque;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::Llama;
use crate::model::kv_cache::{Attend, CacheStep, KvCache};
use crate::ops::kv_write::Placement;
use crate::ops::pick_tokens::{PendingPicks, PicksReader, pick_tokens, row_key, step_hash};

use self::blocks::{CacheSize, FreeBlocks, cache_size};
use self::sample::pick_rows;

/// Prompts are left-padded to a multiple of this: a few shapes for all batches, so GPU
/// kernels compiled for one batch serve the next.
pub const PROMPT_BUCKET: usize = 16;

/// A prefill pass takes at most this many positions (rows x padded length), and at most
/// `PREFILL_SCORES` query-key pairs (rows x length²: its attention's scores are a
/// `[rows, heads, length, length]` tensor): rows that come back with hundreds of tokens are
/// prefilled a few at a time (at the 3B shape, 1,024 positions: 16 rows, 1.6 GB of f32
/// scores), new prompts of 80 positions 409 at a time.
const PREFILL_POSITIONS: usize = 32_768;
const PREFILL_SCORES: usize = 1 << 24;

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
    /// Times a row gave its blocks back and waited to be prefilled again.
    pub sent_back: usize,
}

/// `n` rounded up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// A row being generated in a slot of the batch.
struct Slot {
    /// The row's index in the caller's prompts.
    row: usize,
    /// When it was admitted (the last admitted wait first when blocks run out).
    admitted: usize,
    /// Its blocks of the cache, in position order.
    blocks: Vec<usize>,
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

/// A row waiting for a slot: new, or back from the batch with the tokens it has (its
/// streams and counts kept).
enum Waiting {
    New(usize),
    Back(Box<Slot>),
}

impl Waiting {
    fn row(&self) -> usize {
        match self {
            Waiting::New(row) => *row,
            Waiting::Back(slot) => slot.row,
        }
    }
}

/// Generates continuations of `prompts` (token ids, each non-empty): all rows at once, or
/// as many at a time as the card's free memory holds the caches of (`blocks::cache_size`).
pub fn generate<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool) -> Result<Generated> {
    let longest_prompt = round_up(prompts.iter().map(Vec::len).max().unwrap_or(0), PROMPT_BUCKET);
    let size = cache_size(model, prompts.len(), longest_row(prompts, s), longest_prompt);
    generate_with(model, prompts, s, keep_logits, size)
}

/// Positions a row can take: the longest prompt with the padding of a prefill and every new
/// token (a row prefilled again with its tokens is padded again).
pub fn longest_row(prompts: &[Vec<u32>], s: &Sampling) -> usize {
    round_up(prompts.iter().map(Vec::len).max().unwrap_or(0) + s.max_new_tokens, PROMPT_BUCKET) + PROMPT_BUCKET
}

/// Generates continuations of `prompts` with the caches `size`: at most `size.slots` rows
/// at a time, the prompts waiting in order and new ones taking the slots of rows that
/// finished (continuous batching), rows holding blocks as they grow. Each row's tokens are
/// the ones it would get with every row at once (its draws come from its own key).
pub fn generate_with<B: ModelBackend>(model: &Llama<B>, prompts: &[Vec<u32>], s: &Sampling, keep_logits: bool, size: CacheSize) -> Result<Generated> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        bail!("generation needs at least one prompt, and no empty prompt");
    }
    if s.max_new_tokens == 0 {
        return Ok(Generated { tokens: vec![Vec::new(); prompts.len()], logits: vec![Vec::new(); prompts.len()], sent_back: 0 });
    }
    size.check(longest_row(prompts, s))?;
    let model = model.for_generation();
    let slots = size.slots.clamp(1, prompts.len());
    let reader = B::picks_reader(&model.embed_tokens.weight.val().device());
    let mut engine = Engine {
        model: &model,
        s,
        keep_logits,
        reader: reader.as_ref(),
        caches: model.new_caches(size.blocks, size.block),
        size,
        free_blocks: FreeBlocks::new(size.blocks),
        admissions: 0,
        slots: (0..slots).map(|_| None).collect(),
        in_flight: None,
        out: Generated { tokens: vec![Vec::new(); prompts.len()], logits: vec![Vec::new(); prompts.len()], sent_back: 0 },
    };
    let mut waiting: VecDeque<Waiting> = (0..prompts.len()).map(Waiting::New).collect();
    loop {
        // What the host knows: a step in flight may have finished rows it has not seen yet.
        let free: Vec<usize> = (0..engine.slots.len()).filter(|&i| engine.slots[i].is_none()).collect();
        let live = engine.slots.len() - free.len();
        // New prompts take the free slots once an eighth of them are free (each admission
        // is a prefill pass), or when nothing is generating; as many as the free blocks take.
        let admitting = if !waiting.is_empty() && !free.is_empty() && (free.len() * 8 >= engine.slots.len() || live == 0) {
            engine.admissible(&waiting, free.len(), prompts)
        } else {
            0
        };
        // Free slots leave once the prompts are all admitted and a quarter of the slots are free.
        let compact = admitting == 0 && live > 0 && waiting.is_empty() && free.len() * 4 >= engine.slots.len();
        let continuing = engine.slots.iter().flatten().any(|row| row.issued < s.max_new_tokens);
        // Admissions and compactions change the slots: the step in flight lands first.
        if engine.in_flight.is_some() && (admitting > 0 || compact || !continuing) {
            engine.land()?;
            continue;
        }
        if admitting > 0 {
            let admitted: Vec<(usize, Waiting)> = free.iter().copied().zip(waiting.drain(..admitting)).collect();
            engine.prefill(admitted, prompts)?;
            continue;
        }
        if live == 0 {
            // The cache holds one row at full length (`CacheSize::check`), so an idle
            // engine admits the first waiting row.
            anyhow::ensure!(waiting.is_empty(), "generation stalled with {} rows waiting and none in the batch", waiting.len());
            break;
        }
        // Every row needs room for its next position. When blocks run short, the step in
        // flight lands (rows that finished give theirs back); then the row admitted last
        // gives its blocks back and waits first (its prefill is redone, never its picks).
        if !engine.grow() {
            if engine.in_flight.is_some() {
                engine.land()?;
            } else {
                engine.send_back_last(&mut waiting);
            }
            continue;
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

/// Generation's state: the model, the caches, their free blocks and the batch's slots, the
/// step in flight, what came out.
struct Engine<'a, B: ModelBackend> {
    model: &'a Llama<B>,
    s: &'a Sampling,
    keep_logits: bool,
    reader: &'a dyn PicksReader<B>,
    caches: Vec<KvCache<B>>,
    size: CacheSize,
    free_blocks: FreeBlocks,
    /// Admissions so far (a row's `admitted` is the count when it came in).
    admissions: usize,
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

    /// The tokens a waiting row is prefilled with: its prompt, and the tokens it has when
    /// it comes back.
    fn prefill_ids(&self, waiting: &Waiting, prompts: &[Vec<u32>]) -> Vec<u32> {
        let row = waiting.row();
        let mut ids = prompts[row].clone();
        if let Waiting::Back(_) = waiting {
            ids.extend(&self.out.tokens[row]);
        }
        ids
    }

    /// The length of `prefill_ids`.
    fn prefill_len(&self, waiting: &Waiting, prompts: &[Vec<u32>]) -> usize {
        match waiting {
            Waiting::New(row) => prompts[*row].len(),
            Waiting::Back(slot) => prompts[slot.row].len() + self.out.tokens[slot.row].len(),
        }
    }

    /// How many of the first waiting rows (at most `slots`, and the prefill's limits
    /// `PREFILL_POSITIONS` and `PREFILL_SCORES`) one prefill takes: rows no longer than
    /// the first once padded (a row back with its tokens is not prefilled
    /// beside short prompts, nor they padded to its length), as many as the free blocks
    /// hold with a block more for each row of the batch after them that has not all it
    /// can need (so that no row waits again at once).
    fn admissible(&self, waiting: &VecDeque<Waiting>, slots: usize, prompts: &[Vec<u32>]) -> usize {
        let growing = |len: usize, remaining: usize, held: usize| usize::from(self.size.blocks_for(len + remaining) > held);
        let mut headroom: usize = self.slots.iter().flatten().map(|r| growing(r.len, self.s.max_new_tokens - r.picked, r.blocks.len())).sum();
        let Some(first) = waiting.front() else { return 0 };
        let padded = round_up(self.prefill_len(first, prompts), PROMPT_BUCKET);
        let held = self.size.blocks_for(padded);
        let most = (PREFILL_POSITIONS / padded).min(PREFILL_SCORES / (padded * padded)).max(1);
        let mut admitted = 0;
        for w in waiting.iter().take(slots.min(most)) {
            if self.prefill_len(w, prompts) > padded {
                break;
            }
            let extra = growing(padded, self.s.max_new_tokens - self.out.tokens[w.row()].len(), held);
            if (admitted + 1) * held + headroom + extra > self.free_blocks.count() {
                break;
            }
            (admitted, headroom) = (admitted + 1, headroom + extra);
        }
        admitted
    }

    /// Prefills the rows of `admitted` (`(slot, row)`) into their slots, each left-padded
    /// to the longest of them (rounded up to `PROMPT_BUCKET`) and given the blocks that
    /// holds, and picks their next tokens.
    fn prefill(&mut self, admitted: Vec<(usize, Waiting)>, prompts: &[Vec<u32>]) -> Result<()> {
        let device = self.device();
        let all_ids: Vec<Vec<u32>> = admitted.iter().map(|(_, w)| self.prefill_ids(w, prompts)).collect();
        let longest = round_up(all_ids.iter().map(Vec::len).max().unwrap_or(0), PROMPT_BUCKET);
        let pad = self.s.eos.unwrap_or(0);
        let pads: Vec<usize> = all_ids.iter().map(|ids| longest - ids.len()).collect();
        let ids: Vec<i64> = all_ids.iter().zip(&pads).flat_map(|(ids, &n)| std::iter::repeat_n(pad as i64, n).chain(ids.iter().map(|&t| t as i64))).collect();
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
        let held = self.size.blocks_for(longest);
        let tables: Vec<Vec<usize>> = admitted.iter().map(|_| self.free_blocks.take(held).expect("admission counted the free blocks")).collect();
        let step = CacheStep { at: Placement::new(tables.clone(), vec![0; admitted.len()], &device), attend: Attend::NewKeys };
        let logits = self.model.forward_cached(ids, &positions, Some(bias), &mut self.caches, &step);
        let order: Vec<usize> = admitted.iter().map(|&(slot, _)| slot).collect();
        for (((slot, waiting), blocks), (n, ids)) in admitted.into_iter().zip(tables).zip(pads.into_iter().zip(&all_ids)) {
            let mut row = match waiting {
                Waiting::Back(row) => *row,
                Waiting::New(row) => {
                    let rng = fastrand::Rng::with_seed(self.s.seed ^ (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    Slot {
                        row,
                        admitted: 0,
                        blocks: Vec::new(),
                        start: 0,
                        len: 0,
                        next_pos: 0,
                        picked: 0,
                        last: 0,
                        issued: 0,
                        rng,
                        key: row_key(self.s.seed, row),
                    }
                }
            };
            (row.admitted, row.blocks, row.start, row.len, row.next_pos) = (self.admissions, blocks, n, longest, ids.len());
            self.admissions += 1;
            self.slots[slot] = Some(row);
        }
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

    /// Gives every live row whose next position starts a block a free block; false when
    /// the free blocks ran out first.
    fn grow(&mut self) -> bool {
        let block = self.size.block;
        for row in self.slots.iter_mut().flatten() {
            if row.len == row.blocks.len() * block {
                match self.free_blocks.take(1) {
                    Some(b) => row.blocks.extend(b),
                    None => return false,
                }
            }
        }
        true
    }

    /// The row admitted last leaves the batch: its blocks go back, and it waits at the head
    /// of the queue with the tokens it has (nothing is in flight).
    fn send_back_last(&mut self, waiting: &mut VecDeque<Waiting>) {
        let last = (0..self.slots.len()).filter(|&i| self.slots[i].is_some()).max_by_key(|&i| self.slots[i].as_ref().map(|r| r.admitted));
        let mut row = self.slots[last.expect("a row is live")].take().expect("a live slot");
        self.free_blocks.give(std::mem::take(&mut row.blocks));
        self.out.sent_back += 1;
        waiting.push_front(Waiting::Back(Box::new(row)));
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
        // Each row sees its positions from its first prompt position to its new key; a free
        // slot feeds padding at position 0 of block 0, which no row holds, and sees only it.
        let tables = self.slots.iter().map(|slot| slot.as_ref().map_or_else(|| vec![0], |r| r.blocks.clone())).collect();
        let (starts, firsts) = self.slots.iter().map(|slot| slot.as_ref().map_or((0, 0), |r| (r.len, r.start))).unzip();
        let step = CacheStep { at: Placement::seeing(tables, starts, firsts, &device), attend: Attend::Cache };
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
    /// frees the slots and blocks of rows that finished (a step in flight that still writes
    /// there runs before any pass that gives them to another row).
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
                let finished = self.slots[slot].take().expect("a live slot");
                self.free_blocks.give(finished.blocks);
            }
        }
    }

    /// Drops the free slots from the batch (the rows keep their blocks: nothing moves).
    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
    }
}
