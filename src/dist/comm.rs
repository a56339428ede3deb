//! The collective operations training needs, implemented by each backend.
use tch::Tensor;

use super::watchdog::Watchdog;
use crate::error::Result;

pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn name(&self) -> &'static str;
    /// Sums `t` over all ranks, in place. `t` must be contiguous.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()>;
    /// Overwrites `t` on every rank with rank `root`'s `t`.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    /// Overwrites `bytes` on every rank with rank `root`'s bytes (lengths may differ before).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Gathers one byte string from every rank onto every rank (small control messages).
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    fn barrier(&self) -> Result<()>;
    /// Waits until this rank's queued collectives have completed (NCCL enqueues asynchronously;
    /// host backends complete before they return).
    fn wait(&self) -> Result<()> {
        Ok(())
    }
    /// The watchdog bounding this communicator's collectives, if any.
    fn watchdog(&self) -> Option<&Watchdog> {
        None
    }
}

/// A single process: every collective is the identity.
pub struct LocalComm;

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn name(&self) -> &'static str {
        "local"
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
