//! The card's free and total memory, as the driver counts them (every process's
//! allocations included), for the memory plan a run prints before its first step.

use cudarc::driver::CudaContext;

/// `(free, total)` bytes of the card with this index, or why they could not be read.
pub fn card_memory(index: usize) -> Result<(u64, u64), String> {
    let context = CudaContext::new(index).map_err(|e| format!("cannot open card {index}: {e}"))?;
    let (free, total) = context.mem_get_info().map_err(|e| format!("cannot read the memory of card {index}: {e}"))?;
    Ok((free as u64, total as u64))
}
