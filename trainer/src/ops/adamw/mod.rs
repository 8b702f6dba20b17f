//! AdamW whose update of a parameter is one backend operation.
//!
//! burn 0.21's `AdamW` updates each parameter with about fifteen tensor operations (moments,
//! bias corrections, square root, decay, step), each a pass over the whole tensor (what that
//! cost is in docs/PERF.md). [`OnePassAdamW`] computes
//! the same update (same formula, same order of operations, same state record, so
//! checkpoints of either load into the other) through [`AdamWStep::adamw_step`]: on the CPU
//! and under burn's fusion the composed operations, on CUDA without fusion one kernel that
//! reads the parameter, its gradient and both moments once and writes the three results
//! (`kernel`).
//!
//! The moments can live in host memory instead of the card's (`state_on_host`, PPO's
//! `ppo.optimizer_state = "host"`): each parameter's are uploaded for its update and read
//! back after it, so the card holds one parameter's moments at a time. The update is the
//! same kernel on the same values, so the results are the same bits; the cost is 16 bytes
//! a parameter over the bus at every step. On CUDA without fusion, with
//! `kernels.pinned_moments`, the moments live in page-locked memory and both copies are
//! only enqueued on the kernels' stream (`pinned_moments`); otherwise they are burn's
//! tensor data, read back at once. Either
//! way the record is burn's AdamW record, so a run can resume with its state in the other
//! place.

pub mod check;

#[cfg(feature = "cuda")]
mod kernel;
#[cfg(feature = "cuda")]
mod pinned_moments;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::AutodiffBackend;

use crate::Cpu;

/// One AdamW update: the optimizer's settings, the rate, the step count and the factor the
/// gradient is multiplied by first (the clip's, 1 without); its constants as burn's `AdamW`
/// computes them (f32 factors, f64 rate).
#[derive(Clone, Debug)]
pub struct AdamWUpdate {
    pub settings: OnePassAdamW,
    pub lr: LearningRate,
    /// The step count after this update (1 on the first).
    pub time: usize,
    pub grad_scale: f32,
}

impl AdamWUpdate {
    /// `1 - beta_1`, the gradient's weight in the first moment.
    pub fn factor_1(&self) -> f32 {
        1.0 - self.settings.beta_1
    }
    /// `1 - beta_2`, the squared gradient's weight in the second moment.
    pub fn factor_2(&self) -> f32 {
        1.0 - self.settings.beta_2
    }
    /// `1 - beta_1^t`, the first moment's bias correction.
    pub fn correction_1(&self) -> f32 {
        1f32 - self.settings.beta_1.powi(self.time as i32)
    }
    /// `1 - beta_2^t`, the second moment's bias correction.
    pub fn correction_2(&self) -> f32 {
        1f32 - self.settings.beta_2.powi(self.time as i32)
    }
    /// What the parameter is multiplied by before the step: `1 - lr * weight_decay`.
    pub fn decay(&self) -> f64 {
        1.0 - self.lr * self.settings.weight_decay as f64
    }
}

/// A backend that applies an AdamW update to one parameter.
pub trait AdamWStep: Backend {
    /// The updated parameter and moments. `moment_1`/`moment_2` are `None` on the first
    /// update (zero moments). The default is the composed update ([`composed_adamw_step`]).
    fn adamw_step<const D: usize>(
        param: Tensor<Self, D>,
        grad: Tensor<Self, D>,
        moment_1: Option<Tensor<Self, D>>,
        moment_2: Option<Tensor<Self, D>>,
        update: &AdamWUpdate,
    ) -> (Tensor<Self, D>, Tensor<Self, D>, Tensor<Self, D>) {
        composed_adamw_step(param, grad, moment_1, moment_2, update)
    }

    /// A tensor handed to host memory (default: read back now as burn's tensor data).
    /// `reuse` is what the same tensor was handed back as before, whose buffer a backend
    /// may fill again; `pinned` asks for page-locked memory where the backend has it.
    fn to_host<const D: usize>(t: Tensor<Self, D>, _reuse: Option<HostTensor>, _pinned: bool) -> HostTensor {
        HostTensor::Data(t.into_data())
    }

    /// A tensor from host memory on `device`, and the host copy when the backend may fill
    /// it again at the next [`AdamWStep::to_host`].
    fn from_host<const D: usize>(h: HostTensor, device: &Self::Device) -> (Tensor<Self, D>, Option<HostTensor>) {
        (Tensor::from_data(h.into_data(), device), None)
    }
}

impl AdamWStep for crate::Cpu {}
#[cfg(feature = "cuda")]
impl AdamWStep for crate::CudaFused {}

/// The update written as tensor operations, in burn's `AdamW` order (so that both give the
/// same numbers on the same backend).
pub fn composed_adamw_step<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moment_1: Option<Tensor<B, D>>,
    moment_2: Option<Tensor<B, D>>,
    u: &AdamWUpdate,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let OnePassAdamW { beta_1, beta_2, epsilon, weight_decay, .. } = u.settings;
    let grad = if u.grad_scale == 1.0 { grad } else { grad.mul_scalar(u.grad_scale) };
    let moment_1 = match moment_1 {
        Some(m) => m.mul_scalar(beta_1).add(grad.clone().mul_scalar(u.factor_1())),
        None => grad.clone().mul_scalar(u.factor_1()),
    };
    let moment_2 = match moment_2 {
        Some(v) => v.mul_scalar(beta_2).add(grad.square().mul_scalar(u.factor_2())),
        None => grad.square().mul_scalar(u.factor_2()),
    };
    let corrected_1 = moment_1.clone().div_scalar(u.correction_1());
    let corrected_2 = moment_2.clone().div_scalar(u.correction_2());
    let delta = corrected_1.div(corrected_2.sqrt().add_scalar(epsilon));
    let decayed = if u.lr * weight_decay as f64 == 0.0 { param } else { param.mul_scalar(u.decay()) };
    (decayed - delta.mul_scalar(u.lr), moment_1, moment_2)
}

/// AdamW (decoupled weight decay, bias-corrected moments) with burn's defaults (beta 0.9 /
/// 0.999, epsilon 1e-5, weight decay 1e-4) and burn's state record.
#[derive(Clone, Debug)]
pub struct OnePassAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// The factor the next steps multiply every gradient by, inside the update (the
    /// gradient clip's, set through `scale_gradients`).
    pub grad_scale: GradScale,
    /// Keep the moments in host memory between updates ([`Moments::Host`]).
    pub state_on_host: bool,
    /// There, in page-locked memory where the backend has it (`kernels.pinned_moments`).
    pub pinned_moments: bool,
}

impl Default for OnePassAdamW {
    fn default() -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, weight_decay: 1e-4, grad_scale: GradScale::default(), state_on_host: false, pinned_moments: false }
    }
}

/// A parameter's AdamW moments and step count, on the parameter's device or in host memory.
#[derive(Clone)]
pub enum Moments<B: Backend, const D: usize> {
    Device(AdamWState<B, D>),
    Host(Box<HostMoments>),
}

/// Moments in host memory and the step count.
#[derive(Clone)]
pub struct HostMoments {
    time: usize,
    moment_1: HostTensor,
    moment_2: HostTensor,
}

impl HostMoments {
    fn boxed(time: usize, moment_1: HostTensor, moment_2: HostTensor) -> Box<Self> {
        Box::new(HostMoments { time, moment_1, moment_2 })
    }
}

/// A tensor in host memory: burn's tensor data, or (CUDA without fusion) page-locked
/// memory that copies to and from the card are enqueued on.
#[derive(Clone)]
pub enum HostTensor {
    Data(TensorData),
    #[cfg(feature = "cuda")]
    Pinned(std::sync::Arc<crate::ops::cuda::pinned::PinnedTensor>),
}

impl HostTensor {
    /// Its values as burn's tensor data (for page-locked memory, once its copies landed).
    pub fn into_data(self) -> TensorData {
        match self {
            HostTensor::Data(data) => data,
            #[cfg(feature = "cuda")]
            HostTensor::Pinned(pinned) => pinned.to_data(),
        }
    }
}

/// A step's moments on the device, its step count, and the host copies to fill again.
struct Taken<B: Backend, const D: usize> {
    time: usize,
    moment_1: Tensor<B, D>,
    moment_2: Tensor<B, D>,
    reuse: [Option<HostTensor>; 2],
}

impl<B: AdamWStep, const D: usize> Moments<B, D> {
    /// The step count and both moments on `device` (uploaded when they are on the host).
    fn on(self, device: &B::Device) -> Taken<B, D> {
        match self {
            Moments::Device(s) => Taken { time: s.momentum.time, moment_1: s.momentum.moment_1, moment_2: s.momentum.moment_2, reuse: [None, None] },
            Moments::Host(h) => {
                let (moment_1, reuse_1) = B::from_host(h.moment_1, device);
                let (moment_2, reuse_2) = B::from_host(h.moment_2, device);
                Taken { time: h.time, moment_1, moment_2, reuse: [reuse_1, reuse_2] }
            }
        }
    }
}

/// burn's AdamW record (its `AdamWState`'s item, which does not depend on the backend), so
/// that checkpoints of either optimizer, and of either place, load into the other. A
/// record read back comes to the host; the next update puts it where the optimizer keeps
/// its state.
impl<B: Backend, const D: usize> Record<B> for Moments<B, D> {
    type Item<S: PrecisionSettings> = <AdamWState<Cpu, D> as Record<Cpu>>::Item<S>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        let (time, moment_1, moment_2) = match self {
            Moments::Device(s) => (s.momentum.time, s.momentum.moment_1.into_data(), s.momentum.moment_2.into_data()),
            Moments::Host(h) => (h.time, h.moment_1.into_data(), h.moment_2.into_data()),
        };
        let host = |data: TensorData| Tensor::<Cpu, D>::from_data(data, &Default::default());
        AdamWState::new(AdaptiveMomentumState::new(time, host(moment_1), host(moment_2))).into_item()
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, _device: &B::Device) -> Self {
        let state = AdamWState::<Cpu, D>::from_item(item, &Default::default());
        let m = state.momentum;
        Moments::Host(HostMoments::boxed(m.time, HostTensor::Data(m.moment_1.into_data()), HostTensor::Data(m.moment_2.into_data())))
    }
}

/// A gradient factor shared by an optimizer and its owner (burn's adaptor lends its
/// optimizer only by reference): set before a step, read by every parameter's update. The
/// clip's scaling folded into the update this way saves a pass over every gradient (146
/// kernels and 3.6 ms a step of the 1B model on an H100, docs/PERF.md).
#[derive(Clone, Debug)]
pub struct GradScale(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Default for GradScale {
    fn default() -> Self {
        GradScale(std::sync::Arc::new(std::sync::atomic::AtomicU32::new(1f32.to_bits())))
    }
}

impl GradScale {
    pub fn set(&self, factor: f32) {
        self.0.store(factor.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl OnePassAdamW {
    /// AdamW with a config's betas, epsilon and decoupled weight decay.
    pub fn with_settings(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Self { beta_1: beta1 as f32, beta_2: beta2 as f32, epsilon: eps as f32, weight_decay: weight_decay as f32, ..Self::default() }
    }

    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        Self { weight_decay, ..self }
    }

    /// The same optimizer keeping its moments in host memory (`true`) or on the card.
    pub fn with_state_on_host(self, state_on_host: bool) -> Self {
        Self { state_on_host, ..self }
    }

    /// The moments kept on the host in page-locked memory (`true`) where the backend has it.
    pub fn with_pinned_moments(self, pinned_moments: bool) -> Self {
        Self { pinned_moments, ..self }
    }

    /// The optimizer for module `M` (burn's adaptor: parameters one by one, state per
    /// parameter id).
    pub fn init<B: AutodiffBackend<InnerBackend: AdamWStep>, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: AdamWStep> SimpleOptimizer<B> for OnePassAdamW {
    type State<const D: usize> = Moments<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (moment_1, moment_2, time, [reuse_1, reuse_2]) = match state.map(|s| s.on(&tensor.device())) {
            Some(Taken { time, moment_1, moment_2, reuse }) => (Some(moment_1), Some(moment_2), time + 1, reuse),
            None => (None, None, 1, [None, None]),
        };
        let update = AdamWUpdate { settings: self.clone(), lr, time, grad_scale: self.grad_scale.get() };
        let (param, moment_1, moment_2) = B::adamw_step(tensor, grad, moment_1, moment_2, &update);
        let state = if self.state_on_host {
            Moments::Host(HostMoments::boxed(time, B::to_host(moment_1, reuse_1, self.pinned_moments), B::to_host(moment_2, reuse_2, self.pinned_moments)))
        } else {
            Moments::Device(AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2)))
        };
        (param, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        match state {
            Moments::Device(mut s) => {
                s.momentum = s.momentum.to_device(device);
                Moments::Device(s)
            }
            host => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, CpuAutodiff};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};

    fn grads_of(model: &Linear<CpuAutodiff>, x: &Tensor<CpuAutodiff, 2>) -> GradientsParams {
        let loss = model.forward(x.clone()).powi_scalar(2).sum();
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn weights(model: &Linear<CpuAutodiff>) -> Vec<f32> {
        model.weight.val().into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn five_steps_equal_burns_adamw_and_the_record_is_burns() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 3);
        let start = LinearConfig::new(6, 4).init::<CpuAutodiff>(&device);
        // Parameters are initialised lazily, each clone on its own: initialise them first.
        let start_weights = weights(&start);
        let _ = start.bias.as_ref().map(|b| b.val());
        let x = Tensor::<CpuAutodiff, 2>::random([3, 6], burn::tensor::Distribution::Default, &device);
        let (mut ours, mut theirs) = (start.clone(), start.clone());
        let mut our_optim =
            OnePassAdamW { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay: 0.1, ..Default::default() }.init::<CpuAutodiff, Linear<CpuAutodiff>>();
        let mut their_optim = AdamWConfig::new().with_beta_2(0.95).with_epsilon(1e-8).with_weight_decay(0.1).init::<CpuAutodiff, Linear<CpuAutodiff>>();
        for step in 0..5 {
            let lr = 1e-2 * (step + 1) as f64;
            let (g_ours, g_theirs) = (grads_of(&ours, &x), grads_of(&theirs, &x));
            ours = our_optim.step(lr, ours, g_ours);
            theirs = their_optim.step(lr, theirs, g_theirs);
        }
        assert_ne!(weights(&ours), start_weights, "the steps moved the weights");
        for (a, b) in weights(&ours).iter().zip(weights(&theirs)) {
            assert!((a - b).abs() <= 1e-7, "ours {a} burn's {b}");
        }
        // burn's record loads into ours and the next step agrees again.
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(their_optim.to_record(), ()).unwrap();
        let mut loaded = OnePassAdamW { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay: 0.1, ..Default::default() }
            .init::<CpuAutodiff, Linear<CpuAutodiff>>()
            .load_record(recorder.load(bytes, &device).unwrap());
        let next_ours = loaded.step(1e-2, ours.clone(), grads_of(&ours, &x));
        let next_theirs = their_optim.step(1e-2, theirs.clone(), grads_of(&theirs, &x));
        for (a, b) in weights(&next_ours).iter().zip(weights(&next_theirs)) {
            assert!((a - b).abs() <= 1e-7, "after loading burn's record: ours {a} burn's {b}");
        }
    }

    #[test]
    fn the_update_is_the_formula() {
        // One element by hand: g = 2, m = 0.5, v = 1, step 2, lr 0.1, wd 0.01.
        let device = Default::default();
        let t = |x: f32| Tensor::<Cpu, 1>::from_floats([x], &device);
        let settings = OnePassAdamW { beta_1: 0.9, beta_2: 0.99, epsilon: 1e-8, weight_decay: 0.01, ..Default::default() };
        let u = AdamWUpdate { settings, lr: 0.1, time: 2, grad_scale: 1.0 };
        let (p, m, v) = Cpu::adamw_step(t(1.0), t(2.0), Some(t(0.5)), Some(t(1.0)), &u);
        let (m_want, v_want) = (0.9 * 0.5 + 0.1 * 2.0, 0.99 * 1.0 + 0.01 * 4.0);
        let step = (m_want / (1.0 - 0.81)) / ((v_want / (1.0 - 0.9801f64)).sqrt() + 1e-8);
        let p_want = 1.0 * (1.0 - 0.1 * 0.01) - 0.1 * step;
        let one = |x: Tensor<Cpu, 1>| x.into_scalar() as f64;
        assert!((one(m) - m_want).abs() < 1e-6 && (one(v) - v_want).abs() < 1e-6);
        assert!((one(p) - p_want).abs() < 1e-5, "{p_want}");
    }

    /// A factor set on the optimizer's shared scale gives the same step as the gradients
    /// multiplied by it first (the clip folded into the update).
    #[test]
    fn a_gradient_scale_equals_scaled_gradients() {
        let device = Default::default();
        let x = Tensor::<CpuAutodiff, 2>::from_floats([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], &device);
        let model = || LinearConfig::new(3, 2).init::<CpuAutodiff>(&device);
        let folded = model();
        // Parameters start lazily: read them before the copy, or each copy draws its own.
        let start = weights(&folded);
        let _bias = folded.bias.as_ref().map(|b| b.val());
        let scaled = folded.clone();
        let optim = OnePassAdamW::default();
        let scale = optim.grad_scale.clone();
        let (mut folded_optim, mut scaled_optim) =
            (optim.init::<CpuAutodiff, Linear<CpuAutodiff>>(), OnePassAdamW::default().init::<CpuAutodiff, Linear<CpuAutodiff>>());
        let (mut folded, mut scaled) = (folded, scaled);
        for factor in [0.25f32, 1.0, 0.6] {
            scale.set(factor);
            folded = folded_optim.step(0.1, folded.clone(), grads_of(&folded, &x));
            let loss = scaled.forward(x.clone()).powi_scalar(2).sum().mul_scalar(factor);
            scaled = scaled_optim.step(0.1, scaled.clone(), GradientsParams::from_grads(loss.backward(), &scaled));
        }
        let gap = weights(&folded).iter().zip(weights(&scaled)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-6, "folded against scaled gradients: {gap}");
        assert!(gap.is_finite() && weights(&folded) != start, "the steps moved the weights");
    }

    /// Moments kept in host memory give the same bits as moments on the device, step after
    /// step; the state really is on the host; a record written by either loads into the
    /// other and the next steps agree.
    #[test]
    fn moments_on_the_host_give_the_same_steps_and_records() {
        let device = Default::default();
        CpuAutodiff::seed(&device, 9);
        let start = LinearConfig::new(5, 3).init::<CpuAutodiff>(&device);
        let _ = (weights(&start), start.bias.as_ref().map(|b| b.val()));
        let x = Tensor::<CpuAutodiff, 2>::random([4, 5], burn::tensor::Distribution::Default, &device);
        let settings = OnePassAdamW { beta_1: 0.9, beta_2: 0.95, epsilon: 1e-8, weight_decay: 0.1, ..Default::default() };
        let (mut on_device, mut on_host) = (start.clone(), start.clone());
        let mut device_optim = settings.clone().init::<CpuAutodiff, Linear<CpuAutodiff>>();
        let mut host_optim = settings.clone().with_state_on_host(true).init::<CpuAutodiff, Linear<CpuAutodiff>>();
        for step in 0..3 {
            let lr = 1e-2 * (step + 1) as f64;
            on_device = device_optim.step(lr, on_device.clone(), grads_of(&on_device, &x));
            on_host = host_optim.step(lr, on_host.clone(), grads_of(&on_host, &x));
            assert_eq!(weights(&on_device), weights(&on_host), "step {step}");
        }
        let weight_id = on_host.weight.id;
        let is_on_host = |record: burn::optim::record::AdaptorRecord<OnePassAdamW, CpuAutodiff>| matches!(record.into_state::<2>(), Moments::Host(_));
        assert!(is_on_host(host_optim.to_record().remove(&weight_id).unwrap()), "the host optimizer's moments are on the host");
        assert!(!is_on_host(device_optim.to_record().remove(&weight_id).unwrap()), "the device optimizer's are not");
        // Each record into the other kind of optimizer, then one more step on each side.
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let (device_bytes, host_bytes) = (recorder.record(device_optim.to_record(), ()).unwrap(), recorder.record(host_optim.to_record(), ()).unwrap());
        // The same record, parameter by parameter (the map's order is not fixed).
        for id in [weight_id, on_host.bias.as_ref().unwrap().id] {
            let one =
                |optim: &OptimizerAdaptor<OnePassAdamW, Linear<CpuAutodiff>, CpuAutodiff>| recorder.record(optim.to_record().remove(&id).unwrap(), ()).unwrap();
            assert_eq!(one(&device_optim), one(&host_optim), "the same record");
        }
        let mut host_from_device =
            settings.clone().with_state_on_host(true).init::<CpuAutodiff, Linear<CpuAutodiff>>().load_record(recorder.load(device_bytes, &device).unwrap());
        let mut device_from_host = settings.init::<CpuAutodiff, Linear<CpuAutodiff>>().load_record(recorder.load(host_bytes, &device).unwrap());
        let a = host_from_device.step(1e-2, on_device.clone(), grads_of(&on_device, &x));
        let b = device_from_host.step(1e-2, on_host.clone(), grads_of(&on_host, &x));
        let c = device_optim.step(1e-2, on_device.clone(), grads_of(&on_device, &x));
        assert_eq!(weights(&a), weights(&c));
        assert_eq!(weights(&b), weights(&c));
    }
}
