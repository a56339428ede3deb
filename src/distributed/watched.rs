//! A communicator wrapped so that each of its collectives runs under the [`Watchdog`].
use tch::Tensor;

use super::comm::{Comm, Started};
use super::watchdog::Watchdog;
use crate::error::Result;

/// A communicator whose every collective runs under the watchdog. Tensor collectives also wait for
/// the backend to finish (NCCL enqueues asynchronously), so a hang is caught where it happens.
pub struct WatchedComm {
    inner: Box<dyn Comm>,
    dog: Watchdog,
}

impl WatchedComm {
    pub fn new(inner: Box<dyn Comm>, dog: Watchdog) -> Self {
        Self { inner, dog }
    }
}

impl Comm for WatchedComm {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let _g = self.dog.enter("all-reduce", t.numel());
        self.inner.all_reduce_sum(t)?;
        self.inner.wait()
    }
    fn start_all_reduce_sum(&self, t: &mut Tensor) -> Result<Started> {
        // No wait for the backend here: that is the point of starting. A hang shows in `finish`.
        let _g = self.dog.enter("start of an all-reduce", t.numel());
        self.inner.start_all_reduce_sum(t)
    }
    fn finish(&self, started: Started) -> Result<()> {
        let _g = self.dog.enter("all-reduce", started.elements());
        self.inner.finish(started)?;
        self.inner.wait()
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let _g = self.dog.enter("broadcast", t.numel());
        self.inner.broadcast(t, root)?;
        self.inner.wait()
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let _g = self.dog.enter("broadcast of bytes", 0);
        self.inner.broadcast_bytes(bytes, root)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let _g = self.dog.enter("all-gather of bytes", 0);
        self.inner.all_gather_bytes(bytes)
    }
    fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        let _g = self.dog.enter("gather of bytes", 0);
        self.inner.gather_bytes(bytes, root)
    }
    fn barrier(&self) -> Result<()> {
        let _g = self.dog.enter("barrier", 0);
        self.inner.barrier()
    }
    fn wait(&self) -> Result<()> {
        self.inner.wait()
    }
    fn watchdog(&self) -> Option<&Watchdog> {
        Some(&self.dog)
    }
}
