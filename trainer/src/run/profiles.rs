//! The host and GPU profiles a run was asked for (`--host-profile`, `--gpu-profile`): both
//! start after `PROFILE_AFTER_STEPS` steps of the invocation (kernel compilation and
//! autotuning happen in the first) and end with its last step, before its evaluation.

use anyhow::Result;
use burn::tensor::backend::Backend;

use crate::diag::gpu_profile::GpuProfile;
use crate::diag::host_profile::HostProfile;
use crate::run::options::{PROFILE_AFTER_STEPS, RunOptions};

pub struct Profiles<'a> {
    opts: &'a RunOptions,
    host: Option<HostProfile>,
    gpu: Option<GpuProfile>,
}

impl<'a> Profiles<'a> {
    pub fn new(opts: &'a RunOptions) -> Self {
        Profiles { opts, host: None, gpu: None }
    }

    /// Before a step, after `ran` steps of this invocation: starts what is due.
    pub fn before_step<B: Backend>(&mut self, ran: usize, device: &B::Device) -> Result<()> {
        if ran != PROFILE_AFTER_STEPS {
            return Ok(());
        }
        if let Some(path) = &self.opts.host_profile {
            self.host = Some(HostProfile::start(path)?);
        }
        if let Some(path) = &self.opts.gpu_profile {
            sync::<B>(device)?;
            self.gpu = Some(GpuProfile::start(path)?);
        }
        Ok(())
    }

    /// After the invocation's last step (`ran` steps): writes the GPU profile.
    pub fn after_last_step<B: Backend>(&mut self, ran: usize, device: &B::Device) -> Result<()> {
        if let Some(recording) = self.gpu.take() {
            sync::<B>(device)?;
            let window = recording.finish(ran - PROFILE_AFTER_STEPS)?;
            eprintln!("GPU profile: {window} in {}", self.opts.gpu_profile.as_ref().expect("a path").display());
        }
        Ok(())
    }

    /// At the end of the run: writes the host profile.
    pub fn finish(self, ran: usize) -> Result<()> {
        if let Some(profile) = self.host {
            let samples = profile.finish()?;
            eprintln!(
                "host profile: {samples} samples over {} steps in {}",
                ran - PROFILE_AFTER_STEPS,
                self.opts.host_profile.as_ref().expect("a path").display()
            );
        }
        Ok(())
    }
}

/// Waits for the device to finish what it was asked (before a GPU profile starts or ends).
pub(crate) fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))
}
