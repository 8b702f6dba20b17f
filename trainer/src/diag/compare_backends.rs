//! `trainer compare-backends`: the CPU (NdArray) against CUDA with and without fusion, in
//! this order: the attention op by the flash kernels and by the staircase in bf16, the
//! inference ops at a rollout batch's shapes (`compare::check_ops`), every training op's
//! own check (`ops/<op>/check.rs`: on CUDA without fusion its kernel or cuBLAS), how a
//! built weight lies in memory, then the
//! first layer stage by stage and the whole model (logits and batched greedy generation).
//! Fails when the configured CUDA backend (`HABITS_CUDA_FUSION`) disagrees.

use anyhow::Result;

use crate::diag::model_source::ModelSource;
use crate::ops::kernels::Kernels;

/// Runs every check and prints each gap; an error when the model disagrees.
#[cfg(feature = "cuda")]
pub fn compare_backends(source: &ModelSource, kernels: Kernels) -> Result<()> {
    let started = std::time::Instant::now();
    eprintln!("{}", kernels.describe());
    check_training_ops(kernels);
    println!("({:.0} s)", started.elapsed().as_secs_f64());
    let cpu = source.load::<crate::Cpu>(&Default::default())?;
    let name = source.to_string();
    // The GPU models get the CPU model's weights (a record written once; burn's records do
    // not depend on the backend).
    let record = std::env::temp_dir().join(format!("habits-compare-{}", std::process::id()));
    crate::run::checkpoint::write_module(&record, &cpu)?;
    let fused = compare_model::<crate::CudaFused>(&name, &record, &cpu, ("CUDA with fusion", kernels), started);
    let plain = compare_model::<crate::CudaPlain>(&name, &record, &cpu, ("CUDA without fusion", kernels), started);
    std::fs::remove_file(record.with_extension("mpk")).ok();
    if kernels.fusion.unwrap_or(true) { fused } else { plain }
}

/// How a built projection's weight lies: `row-major`, or `a transposed view  NOT ROW-MAJOR`.
#[cfg(feature = "cuda")]
fn weight_layout(built: Result<burn::nn::Linear<crate::CudaPlain>>) -> &'static str {
    use crate::ops::matmul::Matmul;
    let weight = built.expect("a random weight").weight.val().into_primitive().tensor();
    if crate::CudaPlain::is_transposed_view(&weight) { "a transposed view  NOT ROW-MAJOR" } else { "row-major" }
}

#[cfg(not(feature = "cuda"))]
pub fn compare_backends(_: &ModelSource, _: Kernels) -> Result<()> {
    Err(crate::ops::backend::without_cuda())
}

/// Each op's check at shapes chosen to reach its kernels' edges, printed as it finishes;
/// `kernels` are the settings the run would use, varied where a check compares paths.
#[cfg(feature = "cuda")]
fn check_training_ops(kernels: Kernels) {
    use crate::diag::compare::{OpShapes, check_ops};
    use crate::model::source::RandomInit;
    use crate::ops;
    use crate::{Cpu, CudaFused, CudaPlain};
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    let (cpu, gpu) = (&Default::default(), &Default::default());
    let print = |gaps: Vec<ops::check::OpGap>, how: &str| gaps.iter().for_each(|g| println!("op {g} (CUDA without fusion: {how})"));
    // Flash attention in bf16 (heads of 64 and of 128, whole 64-position blocks; grouped
    // heads, one sequence and two; the queries and values token-major, the keys and the
    // output's gradient head-major) against the CPU in f32, and the staircase on the same
    // bf16 inputs: the two gaps are bf16's. The last shape is 3B's heads: 24 over 8.
    for shape in [[1, 4, 2, 128, 64], [2, 6, 2, 192, 64], [1, 4, 2, 128, 128], [2, 6, 2, 192, 128], [1, 24, 8, 256, 128]] {
        for (flash_attention, name) in [(true, "flash kernels"), (false, "staircase")] {
            let k = Kernels { flash_attention, ..kernels };
            print(ops::attention::check::check_attention::<Cpu, CudaPlain>(shape, burn::tensor::DType::BF16, k, cpu, gpu), name);
        }
    }
    let shapes = OpShapes { batch: 256, heads: 8, kv_heads: 4, head_dim: 64, prompt: 96, capacity: 192, vocab: 128_256 };
    for g in check_ops::<Cpu, CudaFused>(shapes, cpu, gpu) {
        println!("op {g} (CUDA with fusion)");
    }
    // Generation's ops as PPO and bench-generate run them: attention over the cache with
    // its softmax kernel, the cache written in place.
    for g in check_ops::<Cpu, CudaPlain>(shapes, cpu, gpu) {
        println!("op {g} (CUDA without fusion)");
    }
    // Odd sizes, so that the kernel's last block is partly outside the tensor.
    print(ops::adamw::check::check_adamw::<Cpu, CudaPlain>([1001, 777], cpu, gpu), "one kernel");
    print(ops::adamw::check::check_adamw_on_host::<Cpu, CudaPlain>([1001, 777], cpu, gpu), "page-locked moments");
    // Moments on the card against in page-locked memory, both on CUDA: the same bits.
    for g in ops::adamw::check::check_adamw_on_host::<CudaPlain, CudaPlain>([1001, 777], gpu, gpu) {
        println!("op {g} (CUDA, on the card against on the host){}", if g.gap == 0.0 { "" } else { "  NOT THE SAME BITS" });
    }
    print(ops::matmul::check::check_matmul::<Cpu, CudaPlain>([333, 517, 129], kernels, cpu, gpu), "cuBLAS unless HABITS_CUBLAS=0");
    print(ops::matmul::check::check_matmul_gradients::<Cpu, CudaPlain>([333, 517, 129], kernels, cpu, gpu), "cuBLAS unless HABITS_CUBLAS=0");
    // A projection's weight as a model builds it, for inference and for training: laid
    // out row-major (`Matmul::row_major`), so that its casts read it in order.
    let plain = weight_layout(crate::model::source::linear::<CudaPlain, _>(&mut RandomInit { std: 0.02 }, "w", 96, 64, false, gpu));
    let trained =
        weight_layout(crate::model::source::linear::<Autodiff<CudaPlain>, _>(&mut RandomInit { std: 0.02 }, "w", 96, 64, false, gpu).map(|l| l.valid()));
    println!("weights as built: {plain} (CUDA without fusion), {trained} (the same under autodiff)");
    // Grouped heads (3 and 2 query heads per key/value head), one sequence and two; the
    // scores in chunks of 16 queries (the last of 13), in one chunk, and one chunk a query;
    // 64 positions for the kernels' vectors of 4 values (f32).
    for shape in [[1, 6, 2, 77, 16], [2, 4, 2, 77, 16], [2, 4, 2, 64, 16]] {
        for attention_chunk in [16, 77, 1] {
            let k = Kernels { attention_chunk, ..kernels };
            let gaps = ops::attention::check::check_attention::<Cpu, CudaPlain>(shape, burn::tensor::DType::F32, k, cpu, gpu);
            print(gaps, &format!("cuBLAS on chunks of {attention_chunk} queries, two kernels"));
        }
    }
    print(ops::squared_norms::check::check_squared_norms::<Cpu, CudaPlain>(&[1, 1000, 1_048_583], kernels, cpu, gpu), "cuBLAS unless HABITS_CUBLAS=0");
    // Rows not a whole number of cubes, a width not a multiple of a plane.
    print(ops::rms_norm::check::check_rms_norm::<Cpu, CudaPlain>([77, 2050], cpu, gpu), "two kernels");
    // A width not a multiple of a cube's 256 units, with and without the add.
    for with_delta in [true, false] {
        print(ops::rms_norm::check::check_add_rms_norm::<Cpu, CudaPlain>([77, 2050], with_delta, burn::tensor::FloatDType::BF16, cpu, gpu), "one kernel");
    }
    // Pairs not a whole number of cubes.
    print(ops::rotary_heads::check::check_rotary_heads::<Cpu, CudaPlain>([3, 77, 5, 64], cpu, gpu), "one kernel each way");
    // Generation's one product for queries, keys and values, read as a view of wider rows.
    print(ops::rotary_heads::check::check_qkv_heads::<Cpu, CudaPlain>([3, 5, 6, 2, 64], cpu, gpu), "one kernel");
    // One value a unit (77 x 1001 is odd) and vectors of four f32.
    for shape in [[77, 1001], [64, 1000]] {
        print(ops::swiglu::check::check_swiglu::<Cpu, CudaPlain>(shape, cpu, gpu), "one kernel each way");
        print(ops::swiglu::check::check_swiglu_halves::<Cpu, CudaPlain>(shape, cpu, gpu), "one kernel");
    }
    // A vocabulary that is not a multiple of the 256 units a cube walks a row with.
    print(ops::cross_entropy::check::check_cross_entropy::<Cpu, CudaPlain>([37, 50_021], cpu, gpu), "two kernels");
    print(ops::entropy::check::check_entropy::<Cpu, CudaPlain>([37, 50_021], cpu, gpu), "two kernels");
    print(ops::pick_tokens::check::check_pick_tokens::<Cpu, CudaPlain>([37, 50_021], cpu, gpu), "one kernel");
    // A decoding step's write (one position a row) and a prefill's (a run of positions a
    // row), in a paged cache (scattered blocks of 16) and a contiguous one (a block a row).
    print(ops::kv_write::check::check_kv_write::<Cpu, CudaPlain>([400, 3, 16, 64], [29, 1, 5], cpu, gpu), "one kernel");
    print(ops::kv_write::check::check_kv_write::<Cpu, CudaPlain>([400, 3, 16, 64], [5, 40, 5], cpu, gpu), "one kernel");
    print(ops::kv_write::check::check_kv_write::<Cpu, CudaPlain>([37, 3, 77, 64], [5, 40, 1], cpu, gpu), "one kernel");
    // A decoding step's attention: the 1B's heads (32 of 64 over 8) and the 3B's (24 of 128
    // over 8), f32 and bf16, rows in scattered blocks of a paged cache and in scattered
    // slots of a contiguous one.
    for dtype in [burn::tensor::DType::F32, burn::tensor::DType::BF16] {
        for heads in [[29, 32, 8, 64], [29, 24, 8, 128]] {
            print(ops::decode_attention::check::check_decode_attention::<Cpu, CudaPlain>(heads, [600, 16, 19], dtype, cpu, gpu), "one kernel");
            print(ops::decode_attention::check::check_decode_attention::<Cpu, CudaPlain>(heads, [37, 300, 1], dtype, cpu, gpu), "one kernel");
        }
    }
}

/// One CUDA backend's model, with the CPU model's weights, against the CPU model.
#[cfg(feature = "cuda")]
fn compare_model<G: crate::ModelBackend>(
    source: &str,
    record: &std::path::Path,
    cpu: &crate::model::Llama<crate::Cpu>,
    (name, kernels): (&str, Kernels),
    started: std::time::Instant,
) -> Result<()> {
    let shape = crate::model::Llama::<G>::random(&cpu.config, &Default::default());
    let gpu = crate::run::checkpoint::read_module(record, shape, &Default::default())?.with_kernels(kernels);
    let vocab = cpu.config.vocab_size as i64;
    // Rows of a rollout batch's length, enough of them to show rows mixing up.
    let [rows, len] = [16, 112];
    let ids: Vec<i64> = (0..rows * len).map(|i| (i as i64 * 7919 + 3) % vocab).collect();
    for g in crate::diag::compare::trace_first_layer(cpu, &gpu, &ids, [rows, len]) {
        println!("{name}: {g}");
    }
    let report = |l: &str| println!("{source}, {name}: {l} ({:.0} s)", started.elapsed().as_secs_f64());
    let verdict = crate::diag::compare::compare_models(cpu, &gpu, report);
    match &verdict {
        Ok(()) => println!("{source}, {name}: AGREES with the CPU"),
        Err(e) => println!("{source}, {name}: DIFFERS: {e:#}"),
    }
    verdict
}
