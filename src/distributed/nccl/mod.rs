//! NCCL backend (CUDA tensors), through cudarc.
//!
//! Set-up follows Horovod: rank 0 asks NCCL for a unique id, the bootstrap communicator (MPI)
//! broadcasts its 128 bytes, every rank joins with `ncclCommInitRank`. Collectives run on
//! `tensor.data_ptr()` on libtorch's current stream for the device (`cuda_stream`), the stream
//! the tensor was computed on, so they are ordered after the kernels that produced it and before
//! those that read it without any synchronisation.
//!
//! Finding libnccl: cudarc's loader only tries names such as `libnccl.so` and `libnccl.so.<CUDA
//! major>`, but NCCL's packages, the pip wheel included, ship `libnccl.so.2` (the unversioned name
//! comes only with the -dev package). The loader cannot be given another name or a path, and
//! glibc reads `LD_LIBRARY_PATH` once at start-up, so it cannot be redirected from inside the
//! process either. Hence two routes, tried in this order:
//! 1. cudarc's loader, when it finds a library that has every entry point used here; calls then
//!    go through `cudarc::nccl::result`.
//! 2. Else `dlopen("libnccl.so.2")` ourselves. A CUDA libtorch from pip already has that library
//!    loaded (libtorch_cuda.so needs it and finds it through its own rpath), and glibc answers a
//!    dlopen of a loaded library's soname with that library, so this works without any
//!    `LD_LIBRARY_PATH`, and uses the same NCCL as libtorch. The few entry points are resolved by
//!    hand with cudarc's `sys` types.
//!
//! Neither route panics: a missing library or symbol is an `Err` naming what was tried.
use std::ffi::{c_char, c_int};
use std::sync::{Arc, Mutex};

use cudarc::nccl::sys;
use tch::{Device, Kind, Tensor};

use super::comm::Comm;
use super::device::require_cuda;
use crate::error::{Error, Result};

mod library;
use library::{version_text, Failure, Lib};

/// What `NcclComm` and its abort handles share.
struct Shared {
    lib: Lib,
    comm: sys::ncclComm_t,
    /// Why the communicator may no longer be used ("aborted", "destroyed"), or `None` while it is
    /// live. Abort and destroy both free it, so whichever comes first marks it here, under the
    /// lock, and the other leaves it alone. Collectives only read it and do not hold the lock
    /// while they call NCCL: an abort must get through while a collective is stuck.
    released: Mutex<Option<&'static str>>,
}

// SAFETY: NCCL documents ncclCommAbort and ncclCommGetAsyncError as callable from another thread
// while the communicator is in use, which is all an abort handle does from elsewhere; the
// `released` lock orders them against destruction.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn live(&self, what: &str) -> Result<sys::ncclComm_t> {
        match *self.released.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(self.comm),
            Some(why) => Err(Error::Dist(format!(
                "NCCL {what}: the communicator was {why}"
            ))),
        }
    }

    fn abort(&self) -> Result<()> {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        if released.is_some() {
            return Ok(());
        }
        *released = Some("aborted");
        // SAFETY: `released` was None, so the communicator is live, and marking it under the lock
        // keeps drop from destroying it too.
        unsafe { self.lib.abort(self.comm) }.map_err(|f| f.into_error("ncclCommAbort", None))
    }

    fn check_async_error(&self) -> Result<()> {
        let released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = *released {
            return Err(Error::Dist(format!("NCCL: the communicator was {why}")));
        }
        // SAFETY: live (checked under the lock, which we hold so it cannot be freed meanwhile).
        unsafe { self.lib.async_error(self.comm) }.map_err(|f| {
            // SAFETY: as above.
            let detail = unsafe { self.lib.last_error(self.comm) };
            f.into_error("NCCL (asynchronous error)", detail)
        })
    }

    /// NCCL's text for the last failure, if the communicator is still live to ask.
    fn last_error(&self) -> Option<String> {
        let released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        if released.is_some() {
            return None;
        }
        // SAFETY: live, and the lock we hold keeps it so.
        unsafe { self.lib.last_error(self.comm) }
    }
}

/// Lets another thread (a stall watchdog) poll for asynchronous NCCL errors and abort the
/// communicator, which is the only way to free a rank stuck in a collective whose peer is gone.
#[derive(Clone)]
pub struct NcclAbortHandle(Arc<Shared>);

impl NcclAbortHandle {
    /// `Err` when NCCL has recorded an asynchronous error (a peer failed, a network error, a
    /// timeout) or the communicator was aborted or destroyed.
    pub fn check_async_error(&self) -> Result<()> {
        self.0.check_async_error()
    }

    /// Aborts the communicator: pending and future collectives fail instead of hanging. A
    /// collective another thread is about to enqueue at this very moment may still touch the
    /// freed communicator, so after an abort the process should report and exit, not go on.
    /// A second abort, or one after the `NcclComm` was dropped, does nothing.
    pub fn abort(&self) -> Result<()> {
        self.0.abort()
    }
}

/// Collectives on CUDA tensors through NCCL; byte messages and barriers go through the bootstrap
/// communicator it was built from, which it owns (so `launch` can hand over the `Box<dyn Comm>`
/// it got from MPI, and nothing else has to keep that alive).
pub struct NcclComm {
    bootstrap: Box<dyn Comm>,
    shared: Arc<Shared>,
    device: Device,
    version: c_int,
    library: &'static str,
}

/// One rank's answer to "ready to join?", exchanged before any rank blocks in NCCL's set-up, so a
/// rank that cannot take part makes every rank fail instead of leaving the others waiting.
fn agree(bootstrap: &dyn Comm, mine: std::result::Result<String, String>) -> Result<Vec<String>> {
    let msg = match &mine {
        Ok(s) => format!("ok {s}"),
        Err(e) => format!("err {e}"),
    };
    let all = bootstrap.all_gather_bytes(msg.as_bytes())?;
    let all: Vec<String> = all
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let failed: Vec<String> = all
        .iter()
        .enumerate()
        .filter_map(|(r, m)| m.strip_prefix("err ").map(|e| format!("rank {r}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(Error::Dist(format!(
            "NCCL set-up failed on {} of {} ranks: {}",
            failed.len(),
            all.len(),
            failed.join("; ")
        )));
    }
    Ok(all
        .into_iter()
        .map(|m| m.strip_prefix("ok ").unwrap_or(&m).to_string())
        .collect())
}

/// Local checks before joining: CUDA, the device, the library. Returns the NCCL version.
fn prepare(device_index: usize) -> std::result::Result<(Lib, &'static str, c_int), String> {
    require_cuda("the NCCL backend").map_err(|e| match e {
        Error::Dist(m) => m,
        other => other.to_string(),
    })?;
    let count = tch::Cuda::device_count();
    if device_index as i64 >= count {
        return Err(format!(
            "CUDA device {device_index} requested, but libtorch sees {count} device(s)"
        ));
    }
    let (lib, file) = library::find()?;
    let version = lib
        .version()
        .map_err(|f| format!("ncclGetVersion failed: {}", f.text))?;
    super::cuda_driver::bind_device(device_index)?;
    Ok((lib, file, version))
}

impl NcclComm {
    /// Joins every rank of `bootstrap` into one NCCL communicator on CUDA device `device_index`,
    /// which also becomes this thread's current device. Collective: every rank must call it.
    /// Fails, on every rank alike, when any rank lacks CUDA, the device or NCCL, or when ranks
    /// load different NCCL versions.
    pub fn new(bootstrap: Box<dyn Comm>, device_index: usize) -> Result<NcclComm> {
        let (rank, size) = (bootstrap.rank(), bootstrap.size());
        let local = prepare(device_index);
        let versions = agree(
            bootstrap.as_ref(),
            local
                .as_ref()
                .map(|(_, _, v)| v.to_string())
                .map_err(Clone::clone),
        )?;
        // Unreachable as an Err: agree() fails on every rank when this one did.
        let (lib, library, version) = local.map_err(Error::Dist)?;
        if versions.iter().any(|v| *v != versions[0]) {
            let list: Vec<String> = versions
                .iter()
                .enumerate()
                .map(|(r, v)| format!("rank {r}: {}", v.parse().map_or(v.clone(), version_text)))
                .collect();
            return Err(Error::Dist(format!(
                "ranks load different NCCL versions ({})",
                list.join(", ")
            )));
        }

        // Rank 0's id, or its failure, so that the other ranks fail too instead of waiting.
        let mut msg = if rank == 0 {
            match lib.unique_id() {
                Ok(id) => std::iter::once(1u8)
                    .chain(id.internal.iter().map(|&c| c as u8))
                    .collect(),
                Err(f) => [&[0u8][..], f.text.as_bytes()].concat(),
            }
        } else {
            Vec::new()
        };
        bootstrap.broadcast_bytes(&mut msg, 0)?;
        let id = match msg.split_first() {
            Some((1, bytes)) if bytes.len() == 128 => {
                let mut id = sys::ncclUniqueId { internal: [0; 128] };
                for (dst, &src) in id.internal.iter_mut().zip(bytes) {
                    *dst = src as c_char;
                }
                id
            }
            Some((0, why)) => {
                return Err(Error::Dist(format!(
                    "ncclGetUniqueId failed on rank 0: {}",
                    String::from_utf8_lossy(why)
                )))
            }
            _ => {
                return Err(Error::Dist(format!(
                    "rank 0 sent a malformed NCCL unique id ({} bytes)",
                    msg.len()
                )))
            }
        };

        let to_int = |n: usize| {
            c_int::try_from(n).map_err(|_| Error::Dist(format!("{n} ranks are too many for NCCL")))
        };
        let joined = lib.init_rank(to_int(size)?, id, to_int(rank)?);
        // A rank whose init failed would leave the others to hang in their first collective.
        let status = joined
            .as_ref()
            .map(|_| String::new())
            .map_err(|f| format!("ncclCommInitRank: {} (ncclResult_t {})", f.text, f.code));
        let agreed = agree(bootstrap.as_ref(), status);
        let comm = match (joined, agreed) {
            (Ok(comm), Ok(_)) => comm,
            (Ok(comm), Err(e)) => {
                // SAFETY: just created, never shared; abort rather than destroy, which could wait
                // on peers that never joined.
                let _ = unsafe { lib.abort(comm) };
                return Err(e);
            }
            (Err(_), Err(e)) => return Err(e),
            (Err(f), Ok(_)) => return Err(f.into_error("ncclCommInitRank", None)),
        };
        Ok(NcclComm {
            bootstrap,
            shared: Arc::new(Shared {
                lib,
                comm,
                released: Mutex::new(None),
            }),
            device: Device::Cuda(device_index),
            version,
            library,
        })
    }

    /// NCCL's version, e.g. "2.28.9".
    pub fn version(&self) -> String {
        version_text(self.version)
    }

    /// The file NCCL was loaded from and which route found it, for logs.
    pub fn library(&self) -> &str {
        self.library
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// A handle another thread can use to poll for errors and abort.
    pub fn abort_handle(&self) -> NcclAbortHandle {
        NcclAbortHandle(self.shared.clone())
    }

    /// See [`NcclAbortHandle::check_async_error`].
    pub fn check_async_error(&self) -> Result<()> {
        self.shared.check_async_error()
    }

    /// See [`NcclAbortHandle::abort`].
    pub fn abort(&self) -> Result<()> {
        self.shared.abort()
    }

    fn check_tensor(&self, t: &Tensor, op: &str) -> Result<()> {
        if !t.defined() {
            return Err(Error::Dist(format!("NCCL {op}: undefined tensor")));
        }
        if t.device() != self.device {
            return Err(Error::Dist(format!(
                "NCCL {op}: tensor is on {:?}, but this communicator is on {:?}",
                t.device(),
                self.device
            )));
        }
        if !t.is_contiguous() {
            return Err(Error::Dist(format!("NCCL {op}: tensor is not contiguous")));
        }
        Ok(())
    }

    /// libtorch's current stream on this communicator's device for the calling thread: the one
    /// the tensors were produced on and will be read on.
    fn stream(&self, what: &str) -> Result<sys::cudaStream_t> {
        let Device::Cuda(index) = self.device else {
            return Err(Error::Dist(format!("NCCL {what}: not on a CUDA device")));
        };
        // The device was checked against libtorch's device count when the communicator joined.
        super::cuda_stream::current_stream_of_a_visible_device(index)
            .map(|s| s as sys::cudaStream_t)
            .map_err(|e| Error::Dist(format!("NCCL {what}: {e}")))
    }

    fn failed(&self, f: Failure, what: &str) -> Error {
        f.into_error(what, self.shared.last_error())
    }
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.bootstrap.rank()
    }

    fn size(&self) -> usize {
        self.bootstrap.size()
    }

    fn name(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        self.check_tensor(t, "all-reduce")?;
        let dtype = match t.kind() {
            Kind::Float => sys::ncclDataType_t::ncclFloat32,
            Kind::Double => sys::ncclDataType_t::ncclFloat64,
            k => {
                return Err(Error::Dist(format!(
                    "NCCL all-reduce: dtype {k:?} unsupported (f32, f64)"
                )))
            }
        };
        let stream = self.stream("all-reduce")?;
        let comm = self.shared.live("all-reduce")?;
        // SAFETY: `t` is a defined, contiguous tensor of `dtype` on this communicator's device
        // (checked above), so data_ptr() addresses numel() such elements; we borrow `t` mutably,
        // and libtorch's caching allocator does not reuse its memory before work queued on its
        // current stream, where this reduction runs, has finished.
        unsafe {
            self.shared
                .lib
                .all_reduce_sum(t.data_ptr(), t.numel(), dtype, comm, stream)
        }
        .map_err(|f| self.failed(f, "ncclAllReduce"))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.check_tensor(t, "broadcast")?;
        if root >= self.size() {
            return Err(Error::Dist(format!(
                "NCCL broadcast: root {root} out of range for {} ranks",
                self.size()
            )));
        }
        let stream = self.stream("broadcast")?;
        let comm = self.shared.live("broadcast")?;
        // Any dtype: a broadcast copies bits, so it is sent as bytes.
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        // SAFETY: as in all_reduce_sum: `bytes` bytes of a contiguous tensor on our device.
        unsafe {
            self.shared
                .lib
                .broadcast_bytes(t.data_ptr(), bytes, root as c_int, comm, stream)
        }
        .map_err(|f| self.failed(f, "ncclBroadcast"))
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.bootstrap.broadcast_bytes(bytes, root)
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.bootstrap.all_gather_bytes(bytes)
    }

    fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.bootstrap.gather_bytes(bytes, root)
    }

    /// A host barrier through the bootstrap communicator; it does not wait for queued GPU work.
    fn barrier(&self) -> Result<()> {
        self.bootstrap.barrier()
    }

    /// Waits for the device's streams, where the collectives run, then reports any asynchronous
    /// error.
    fn wait(&self) -> Result<()> {
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        self.shared.check_async_error()
    }
}

impl Drop for NcclComm {
    /// Destroys the communicator, or aborts it when NCCL holds an asynchronous error: destroying
    /// waits for queued collectives, which then never finish. A peer that is gone without NCCL
    /// having noticed yet can still make this wait; abort first (see [`NcclAbortHandle`]).
    fn drop(&mut self) {
        let healthy = self.shared.check_async_error().is_ok();
        let shared = &self.shared;
        let mut released = shared.released.lock().unwrap_or_else(|p| p.into_inner());
        if released.is_some() {
            return;
        }
        *released = Some("destroyed");
        // SAFETY: live until this moment, and marked under the lock so no abort follows.
        let _ = unsafe {
            if healthy {
                shared.lib.destroy(shared.comm)
            } else {
                shared.lib.abort(shared.comm)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::LocalComm;

    #[test]
    fn without_cuda_new_is_an_error_that_mentions_cuda() {
        if tch::Cuda::is_available() {
            eprintln!("skipped: this machine has CUDA");
            return;
        }
        let err = match NcclComm::new(Box::new(LocalComm), 0) {
            Ok(_) => panic!("NcclComm::new succeeded without CUDA"),
            Err(e) => e.to_string(),
        };
        eprintln!("{err}");
        assert!(err.contains("CUDA"), "{err}");
        assert!(err.contains("NCCL"), "{err}");
    }

    /// Needs no GPU: the lookup either finds a working libnccl or says why not, never panics.
    #[test]
    fn library_lookup_never_panics() {
        match library::find() {
            Ok((lib, file)) => {
                let v = lib.version().map_err(|f| f.text).expect("ncclGetVersion");
                eprintln!("NCCL {} from {file}", version_text(v));
                assert!(v >= 20400, "{v}");
            }
            Err(why) => {
                eprintln!("no NCCL here: {why}");
                assert!(why.contains("libnccl.so.2"), "{why}");
            }
        }
    }

    #[test]
    fn version_codes() {
        assert_eq!(version_text(22809), "2.28.9");
        assert_eq!(version_text(2708), "2.7.8");
    }
}
