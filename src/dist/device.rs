//! Which device a rank computes on, and how many CPU threads it may use.
use tch::Device;

use crate::error::{Error, Result};

/// CUDA device `local_rank % device_count` when CUDA is present (one GPU per rank on a node),
/// else the CPU.
pub fn pick_device(local_rank: usize) -> Device {
    if tch::Cuda::is_available() {
        let count = tch::Cuda::device_count().max(1) as usize;
        Device::Cuda(local_rank % count)
    } else {
        Device::Cpu
    }
}

/// Fails with a clear message when CUDA was asked for but is absent.
pub fn require_cuda(what: &str) -> Result<()> {
    if tch::Cuda::is_available() {
        Ok(())
    } else {
        Err(Error::Dist(format!(
            "{what} needs CUDA, but libtorch reports no CUDA device on this machine"
        )))
    }
}

/// Intra-op threads: the configured number, else this node's cores split between its ranks.
pub fn cpu_threads(configured: i64, local_size: usize) -> i32 {
    if configured > 0 {
        return configured as i32;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / local_size.max(1)).max(1) as i32
}
