//! The collective operations training needs, implemented by each backend.
use tch::Tensor;

use super::watchdog::Watchdog;
use crate::error::{Error, Result};

pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn name(&self) -> &'static str;
    /// Sums `t` over all ranks, in place. `t` must be contiguous.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()>;
    /// Starts summing `t` over all ranks in place and returns without waiting where the backend
    /// can (MPI's non-blocking collectives; NCCL's queue); [`Comm::finish`] completes it. Every
    /// rank must start and finish the same collectives in the same order, and leave `t` alone in
    /// between. By default the sum is complete on return.
    fn start_all_reduce_sum(&self, t: &mut Tensor) -> Result<Started> {
        self.all_reduce_sum(t)?;
        Ok(Started::done(t.numel()))
    }
    /// Waits until a collective from [`Comm::start_all_reduce_sum`] has completed.
    fn finish(&self, started: Started) -> Result<()> {
        started.wait()
    }
    /// Overwrites `t` on every rank with rank `root`'s `t`.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    /// Overwrites `bytes` on every rank with rank `root`'s bytes (lengths may differ before).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Gathers one byte string from every rank onto every rank (small control messages). The
    /// total over all ranks must stay below 2 GiB (MPI's int counts): larger totals are refused
    /// with an error on every rank; use [`Comm::gather_bytes`] for bulk data.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Gathers one byte string from every rank onto rank `root` only: `Some` (one string per
    /// rank, in rank order) on `root`, `None` elsewhere. Sizes are 64-bit, so any total that
    /// fits in `root`'s memory goes through (evaluation's logits reach gigabytes).
    fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>>;
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

/// A collective in progress: [`Started::wait`] (through [`Comm::finish`]) completes it.
pub struct Started {
    elements: usize,
    pending: Option<Box<dyn Pending>>,
}

/// What a backend keeps of a started collective.
pub trait Pending: Send {
    /// Lets the backend move the collective on without blocking. MPI's transports progress
    /// only inside MPI calls: without this, a non-blocking collective mostly waits for `wait`.
    fn progress(&mut self) -> Result<()>;
    fn wait(self: Box<Self>) -> Result<()>;
}

impl Started {
    /// A collective that completed when it was started.
    pub fn done(elements: usize) -> Self {
        Self {
            elements,
            pending: None,
        }
    }

    pub fn pending(elements: usize, pending: Box<dyn Pending>) -> Self {
        Self {
            elements,
            pending: Some(pending),
        }
    }

    /// The tensor's element count (for the watchdog's messages).
    pub fn elements(&self) -> usize {
        self.elements
    }

    pub fn progress(&mut self) -> Result<()> {
        self.pending.as_mut().map_or(Ok(()), |p| p.progress())
    }

    pub fn wait(self) -> Result<()> {
        self.pending.map_or(Ok(()), |p| p.wait())
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
    fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        if root != 0 {
            return Err(Error::Dist(format!(
                "gather to rank {root} in a single-process run (only rank 0 exists)"
            )));
        }
        Ok(Some(vec![bytes.to_vec()]))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
