//! The paged key/value cache's blocks for one generation call: how many rows decode at once
//! and how many blocks of how many positions the caches hold (`CacheSize`, sized from the
//! card's free memory), and the blocks no row holds (`FreeBlocks`). Block 0 is never handed
//! out: rows of the batch that hold no prompt write their throwaway keys there.

use anyhow::{Result, bail};

use crate::ModelBackend;
use crate::model::Llama;

/// Positions in a block of the paged cache: a row holds at most one block it has not
/// filled, so a row wastes fewer than this many positions.
pub const BLOCK: usize = 32;

/// Share of the card's free memory the caches may take; the rest is for the weights' copy
/// in the compute dtype and the passes' activations and logits.
const CACHE_SHARE: f64 = 0.6;

/// The caches of one generation call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSize {
    /// Rows decoded at once (the batch of a decoding step).
    pub slots: usize,
    /// Blocks in each layer's cache, block 0 included.
    pub blocks: usize,
    /// Positions a block holds.
    pub block: usize,
}

impl CacheSize {
    /// The contiguous cache: `slots` rows, each holding one block of `capacity` positions
    /// from its admission on (what a row can need, so no row ever waits for a block).
    pub fn contiguous(slots: usize, capacity: usize) -> Self {
        CacheSize { slots, blocks: slots + 1, block: capacity }
    }

    /// Blocks that hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block)
    }

    /// Refuses a cache in which one row of `longest` positions cannot be generated alone.
    pub fn check(&self, longest: usize) -> Result<()> {
        if self.slots == 0 || self.block == 0 || self.blocks < self.blocks_for(longest) + 1 {
            bail!("a generation cache of {} blocks of {} positions cannot hold one row of {longest} positions", self.blocks, self.block);
        }
        Ok(())
    }
}

/// The paged cache for `rows` rows of up to `longest` positions, whose prompts are up to
/// `prompt` positions, sized from the card's free memory (`sized`).
pub fn cache_size<B: ModelBackend>(model: &Llama<B>, rows: usize, longest: usize, prompt: usize) -> CacheSize {
    let device = model.embed_tokens.weight.val().device();
    // The memory pool keeps the pages of earlier passes (a PPO update's graphs and
    // gradients) that no tensor uses; the driver counts them as taken until they go back.
    B::memory_cleanup(&device);
    let free = crate::run::memory_plan::card_memory(&device).map(|(free, _)| free as usize);
    sized(free, block_bytes(model), rows, longest, prompt)
}

/// Every row at full length where `free` bytes hold that (all rows where the device does
/// not say, `None`: the CPU), else as many blocks of `block_bytes` as fit in `CACHE_SHARE`
/// of it (at least one row's at full length) and as many rows at once as those blocks hold
/// at their prompt and half their new tokens (rows that outgrow the blocks wait, `generate`).
pub fn sized(free: Option<usize>, block_bytes: usize, rows: usize, longest: usize, prompt: usize) -> CacheSize {
    let per_row = longest.div_ceil(BLOCK);
    let all = rows * per_row + 1;
    let blocks = match free {
        Some(free) => ((free as f64 * CACHE_SHARE) as usize / block_bytes.max(1)).clamp(per_row + 1, all),
        None => all,
    };
    let typical = (prompt + longest.saturating_sub(prompt) / 2).div_ceil(BLOCK).max(1);
    CacheSize { slots: ((blocks - 1) / typical).clamp(1, rows.max(1)), blocks, block: BLOCK }
}

/// Bytes of one block in every layer's keys' and values' caches.
pub fn block_bytes<B: ModelBackend>(model: &Llama<B>) -> usize {
    let c = &model.config;
    2 * c.num_layers * c.num_kv_heads * c.head_dim * BLOCK * crate::model::precision::compute_bytes(model.compute())
}

/// The blocks no row holds.
pub struct FreeBlocks(Vec<usize>);

impl FreeBlocks {
    /// Blocks `1..blocks` free (block 0 is for the rows that hold no prompt).
    pub fn new(blocks: usize) -> Self {
        FreeBlocks((1..blocks).rev().collect())
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// `n` blocks, or none when fewer are free.
    pub fn take(&mut self, n: usize) -> Option<Vec<usize>> {
        (n <= self.0.len()).then(|| self.0.split_off(self.0.len() - n))
    }

    pub fn give(&mut self, blocks: Vec<usize>) {
        self.0.extend(blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_go_out_once_and_come_back() {
        let mut free = FreeBlocks::new(5);
        assert_eq!(free.count(), 4, "block 0 is never handed out");
        let a = free.take(3).unwrap();
        assert!(free.take(2).is_none(), "one block left");
        let b = free.take(1).unwrap();
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3, 4]);
        free.give(a);
        assert_eq!(free.count(), 3);
    }

    /// Every row at full length when memory allows; else the blocks in 60% of it and the
    /// rows they hold at half length; never less than one row at full length.
    #[test]
    fn the_cache_is_sized_from_free_memory() {
        // 1,024 rows of 64-token prompts and 1,024 new tokens (1,120 positions: 35 blocks).
        let (rows, longest, prompt) = (1024, 1120, 64);
        let all = CacheSize { slots: 1024, blocks: 1024 * 35 + 1, block: BLOCK };
        assert_eq!(sized(None, 1 << 20, rows, longest, prompt), all, "the CPU: every row");
        assert_eq!(sized(Some(1 << 40), 1 << 20, rows, longest, prompt), all, "more than enough memory");
        // 10,001 MB free, blocks of 1 MB: 6,000 blocks; 19 blocks a row at 64 + 528 positions.
        let some = sized(Some(10_001 << 20), 1 << 20, rows, longest, prompt);
        assert_eq!(some, CacheSize { slots: 5999 / 19, blocks: 6000, block: BLOCK });
        let none = sized(Some(1 << 20), 1 << 20, rows, longest, prompt);
        assert_eq!(none, CacheSize { slots: 1, blocks: 36, block: BLOCK }, "one row at full length at the least");
        assert!(none.check(longest).is_ok());
    }

    #[test]
    fn a_cache_too_small_for_one_row_is_refused() {
        assert!(CacheSize { slots: 2, blocks: 4, block: 4 }.check(12).is_ok());
        let err = CacheSize { slots: 2, blocks: 3, block: 4 }.check(12).unwrap_err().to_string();
        assert!(err.contains("cannot hold one row of 12 positions"), "{err}");
        assert!(CacheSize::contiguous(3, 12).check(12).is_ok());
    }
}
