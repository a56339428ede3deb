//! MPI backend for CPU tensors (rsmpi over the system's MPI).
//!
//! rsmpi has no in-place all-reduce, so the tensor path calls `MPI_Allreduce` directly with the
//! library's `MPI_IN_PLACE` sentinel. Counts are `int` in MPI: large buffers go in chunks.
use std::os::raw::{c_int, c_void};
use std::sync::Mutex;

use mpi::datatype::PartitionMut;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use tch::{Device, Kind, Tensor};

use super::abort;
use super::comm::Comm;
use crate::error::{Error, Result};

/// Largest element count per MPI call (fits in a C int with room to spare).
const MAX_CHUNK: i64 = 1 << 30;

pub struct MpiComm {
    world: SimpleCommunicator,
    in_place: *mut c_void,
    pub local_rank: usize,
    pub local_size: usize,
}

/// MPI stays initialised until [`finalize`]: dropping a communicator must never finalise, because
/// MPI_Finalize waits for every rank, and a rank on its way out with an error would then hang.
static UNIVERSE: Mutex<Option<mpi::environment::Universe>> = Mutex::new(None);

/// Initialises MPI once per process and registers MPI_Abort as the way to end the job.
pub fn init() -> Result<MpiComm> {
    let universe = mpi::initialize()
        .ok_or_else(|| Error::Dist("MPI was already initialised in this process".into()))?;
    let world = universe.world();
    *UNIVERSE.lock().unwrap_or_else(|p| p.into_inner()) = Some(universe);
    abort::set_job_abort(|code| {
        // SAFETY: MPI is initialised (it is finalised only on the success path, which never aborts
        // afterwards), and MPI_Abort on MPI_COMM_WORLD takes no pointers.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
    });
    let shared = world.split_shared(world.rank());
    let version = mpi::environment::library_version().unwrap_or_default();
    // MPI_IN_PLACE is a macro, not a symbol; these are its values in the two MPI families.
    let in_place = if version.contains("Open MPI") {
        std::ptr::without_provenance_mut::<c_void>(1)
    } else if version.contains("MPICH") || version.contains("Intel") || version.contains("MVAPICH")
    {
        std::ptr::without_provenance_mut::<c_void>(usize::MAX)
    } else {
        return Err(Error::Dist(format!(
            "unknown MPI library ({version}); sagan knows MPI_IN_PLACE for Open MPI and MPICH"
        )));
    };
    Ok(MpiComm {
        local_rank: shared.rank() as usize,
        local_size: shared.size() as usize,
        world,
        in_place,
    })
}

/// Finalises MPI (a collective: every rank must get here). Only the success path calls it.
pub fn finalize() {
    drop(UNIVERSE.lock().unwrap_or_else(|p| p.into_inner()).take());
}

fn check_cpu_tensor(t: &Tensor, op: &str) -> Result<mpi::ffi::MPI_Datatype> {
    if t.device() != Device::Cpu {
        return Err(Error::Dist(format!(
            "MPI {op}: tensor is on {:?}; the MPI backend takes CPU tensors",
            t.device()
        )));
    }
    if !t.is_contiguous() {
        return Err(Error::Dist(format!("MPI {op}: tensor is not contiguous")));
    }
    // SAFETY: reading link-time constants exported by rsmpi's C shim.
    unsafe {
        match t.kind() {
            Kind::Float => Ok(mpi::ffi::RSMPI_FLOAT),
            Kind::Double => Ok(mpi::ffi::RSMPI_DOUBLE),
            k => Err(Error::Dist(format!(
                "MPI {op}: dtype {k:?} unsupported (f32, f64)"
            ))),
        }
    }
}

/// Calls `op(pointer, count)` on consecutive chunks of at most MAX_CHUNK elements of `t` (MPI
/// counts are C ints); a non-zero return code is an error naming `what`.
fn for_each_chunk(
    t: &mut Tensor,
    what: &str,
    op: impl Fn(*mut c_void, c_int) -> c_int,
) -> Result<()> {
    let elem = t.kind().elt_size_in_bytes();
    let n = t.numel() as i64;
    let base = t.data_ptr() as *mut u8;
    let mut off = 0;
    while off < n {
        let count = (n - off).min(MAX_CHUNK);
        // SAFETY: off < n, so the offset stays inside the tensor's allocation.
        let ptr = unsafe { base.add(off as usize * elem) } as *mut c_void;
        let rc = op(ptr, count as c_int);
        if rc != 0 {
            return Err(Error::Dist(format!("{what} failed with code {rc}")));
        }
        off += count;
    }
    Ok(())
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn name(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let dtype = check_cpu_tensor(t, "all-reduce")?;
        for_each_chunk(t, "MPI_Allreduce", |ptr, count| {
            // SAFETY: `ptr` and `count` describe an in-bounds chunk of a contiguous CPU tensor of
            // `dtype` (checked above) that we borrow mutably for the call.
            unsafe {
                mpi::ffi::MPI_Allreduce(
                    self.in_place,
                    ptr,
                    count,
                    dtype,
                    mpi::ffi::RSMPI_SUM,
                    self.world.as_raw(),
                )
            }
        })
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let dtype = check_cpu_tensor(t, "broadcast")?;
        for_each_chunk(t, "MPI_Bcast", |ptr, count| {
            // SAFETY: as in all_reduce_sum: an in-bounds chunk of a contiguous CPU tensor we hold.
            unsafe { mpi::ffi::MPI_Bcast(ptr, count, dtype, root as c_int, self.world.as_raw()) }
        })
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let root_proc = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root_proc.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root_proc.broadcast_into(&mut bytes[..]);
        Ok(())
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let size = self.size();
        let mut lens = vec![0i32; size];
        self.world
            .all_gather_into(&(bytes.len() as i32), &mut lens[..]);
        let displs: Vec<i32> = lens
            .iter()
            .scan(0, |acc, &l| {
                let d = *acc;
                *acc += l;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; lens.iter().map(|&l| l as usize).sum()];
        {
            let mut part = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut part);
        }
        Ok(displs
            .iter()
            .zip(&lens)
            .map(|(&d, &l)| all[d as usize..(d + l) as usize].to_vec())
            .collect())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
