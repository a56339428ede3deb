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
use super::comm::{Comm, Pending, Started};
use crate::error::{Error, Result};

/// Largest element count per MPI call (fits in a C int with room to spare).
const MAX_CHUNK: i64 = 1 << 30;

/// Bytes one round of [`MpiComm::gather_bytes_in_rounds`] moves, all ranks together: below
/// `i32::MAX` so every count and displacement of the round fits MPI's `int`, and small enough
/// that the root's round buffer (held besides the result) stays modest.
pub const GATHER_ROUND_BYTES: usize = 1 << 30;

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
    mut op: impl FnMut(*mut c_void, c_int) -> c_int,
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

/// Handles of started non-blocking collectives.
struct Requests(Vec<mpi::ffi::MPI_Request>);

// SAFETY: an MPI request is an opaque handle, valid on any thread of the process that started it;
// a rank's collectives are started and completed by one thread at a time.
unsafe impl Send for Requests {}

impl Pending for Requests {
    fn progress(&mut self) -> Result<()> {
        let mut all_done: c_int = 0;
        // SAFETY: the handles come from MPI_Iallreduce; MPI_Testall sets completed ones to
        // MPI_REQUEST_NULL, which MPI_Waitall accepts later; statuses are ignored through MPI's
        // own sentinel.
        let rc = unsafe {
            mpi::ffi::MPI_Testall(
                self.0.len() as c_int,
                self.0.as_mut_ptr(),
                &mut all_done,
                mpi::ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        if rc != 0 {
            return Err(Error::Dist(format!("MPI_Testall failed with code {rc}")));
        }
        Ok(())
    }

    fn wait(mut self: Box<Self>) -> Result<()> {
        // SAFETY: as in `progress`; the handles are completed here for good (self is consumed).
        let rc = unsafe {
            mpi::ffi::MPI_Waitall(
                self.0.len() as c_int,
                self.0.as_mut_ptr(),
                mpi::ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        if rc != 0 {
            return Err(Error::Dist(format!("MPI_Waitall failed with code {rc}")));
        }
        Ok(())
    }
}

/// The rounds of a gather where rank r sends `lens[r]` bytes: for each round, the byte count each
/// rank sends in it. Ranks fill a round in rank order, each sending as much of its remainder as
/// the round has room for, so every round but the last carries exactly `limit` bytes (the fewest
/// rounds possible) and a round's counts and displacements never exceed `limit`. Every rank
/// computes the same plan from the same lengths, so no further messages are needed to agree on it.
pub fn plan_gather_rounds(lens: &[u64], limit: u64) -> Vec<Vec<i32>> {
    assert!(
        (1..=i32::MAX as u64).contains(&limit),
        "gather round limit {limit} must be in 1..=i32::MAX"
    );
    let mut left = lens.to_vec();
    let mut rounds = Vec::new();
    while left.iter().any(|&l| l > 0) {
        let mut room = limit;
        let round = left
            .iter_mut()
            .map(|l| {
                let take = (*l).min(room);
                *l -= take;
                room -= take;
                take as i32
            })
            .collect();
        rounds.push(round);
    }
    rounds
}

/// Per-rank counts of a one-call all-gather, or an error when the total would overflow MPI's
/// `int` counts and displacements (it used to wrap silently).
fn all_gather_counts(lens: &[u64]) -> Result<Vec<i32>> {
    let total: u64 = lens.iter().sum();
    if total > i32::MAX as u64 {
        return Err(Error::Dist(format!(
            "all-gather of {total} bytes over {} ranks (per rank: {lens:?}) exceeds MPI's limit \
             of {} bytes per call; all_gather_bytes is for control messages, gather bulk data to \
             one rank with gather_bytes",
            lens.len(),
            i32::MAX
        )));
    }
    Ok(lens.iter().map(|&l| l as i32).collect())
}

/// Where each rank's bytes start in the concatenation of `counts`.
fn displacements(counts: &[i32]) -> Vec<i32> {
    counts
        .iter()
        .scan(0, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect()
}

impl MpiComm {
    /// Every rank's byte length, on every rank (64-bit, so nothing wraps).
    fn all_lengths(&self, bytes: &[u8]) -> Vec<u64> {
        let mut lens = vec![0u64; self.size()];
        self.world
            .all_gather_into(&(bytes.len() as u64), &mut lens[..]);
        lens
    }

    /// [`Comm::gather_bytes`] in rounds of at most `round_limit` bytes (all ranks together) of
    /// `MPI_Gatherv` each; public so that tests can force many rounds with a small limit.
    pub fn gather_bytes_in_rounds(
        &self,
        bytes: &[u8],
        root: usize,
        round_limit: usize,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        if root >= self.size() {
            return Err(Error::Dist(format!(
                "MPI gather: root {root} out of range for {} ranks",
                self.size()
            )));
        }
        if !(1..=i32::MAX as usize).contains(&round_limit) {
            return Err(Error::Dist(format!(
                "MPI gather: round limit {round_limit} must be in 1..={}",
                i32::MAX
            )));
        }
        let lens = self.all_lengths(bytes);
        let root_proc = self.world.process_at_rank(root as i32);
        let me = self.rank();
        let mut parts: Option<Vec<Vec<u8>>> = (me == root).then(|| {
            lens.iter()
                .map(|&l| Vec::with_capacity(l as usize))
                .collect()
        });
        let mut sent = 0;
        for counts in plan_gather_rounds(&lens, round_limit as u64) {
            let piece = &bytes[sent..sent + counts[me] as usize];
            sent += piece.len();
            let Some(parts) = parts.as_mut() else {
                root_proc.gather_varcount_into(piece);
                continue;
            };
            let displs = displacements(&counts);
            let mut round = vec![0u8; counts.iter().map(|&c| c as usize).sum()];
            {
                let mut part = PartitionMut::new(&mut round[..], &counts[..], &displs[..]);
                root_proc.gather_varcount_into_root(piece, &mut part);
            }
            for (r, part) in parts.iter_mut().enumerate() {
                let at = displs[r] as usize;
                part.extend_from_slice(&round[at..at + counts[r] as usize]);
            }
        }
        Ok(parts)
    }
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

    fn start_all_reduce_sum(&self, t: &mut Tensor) -> Result<Started> {
        let dtype = check_cpu_tensor(t, "all-reduce")?;
        let mut requests = Requests(Vec::new());
        let started = for_each_chunk(t, "MPI_Iallreduce", |ptr, count| {
            // SAFETY: `ptr` and `count` describe an in-bounds chunk of a contiguous CPU tensor of
            // `dtype` (checked above), which the caller leaves alone until `finish` (the trait's
            // contract); `request` receives the handle MPI_Waitall completes.
            unsafe {
                let mut request = mpi::ffi::RSMPI_REQUEST_NULL;
                let rc = mpi::ffi::MPI_Iallreduce(
                    self.in_place,
                    ptr,
                    count,
                    dtype,
                    mpi::ffi::RSMPI_SUM,
                    self.world.as_raw(),
                    &mut request,
                );
                requests.0.push(request);
                rc
            }
        });
        match started {
            Ok(()) => Ok(Started::pending(t.numel(), Box::new(requests))),
            Err(e) => {
                // Chunks already started must complete even if a later one failed to start.
                let _ = Box::new(requests).wait();
                Err(e)
            }
        }
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
        let lens = self.all_lengths(bytes);
        // Every rank sees the same lengths, so every rank refuses together: no rank is left
        // waiting in the collective.
        let counts = all_gather_counts(&lens)?;
        let displs = displacements(&counts);
        let mut all = vec![0u8; lens.iter().sum::<u64>() as usize];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut part);
        }
        Ok(displs
            .iter()
            .zip(&counts)
            .map(|(&d, &l)| all[d as usize..(d + l) as usize].to_vec())
            .collect())
    }

    fn gather_bytes(&self, bytes: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.gather_bytes_in_rounds(bytes, root, GATHER_ROUND_BYTES)
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a plan: what each rank sends per round, checked against the limits it promises.
    fn check_plan(lens: &[u64], limit: u64) -> Vec<Vec<i32>> {
        let plan = plan_gather_rounds(lens, limit);
        let total: u64 = lens.iter().sum();
        assert_eq!(
            plan.len() as u64,
            total.div_ceil(limit),
            "{lens:?} / {limit}"
        );
        let mut sent = vec![0u64; lens.len()];
        for (j, round) in plan.iter().enumerate() {
            assert_eq!(round.len(), lens.len());
            let round_total: u64 = round.iter().map(|&c| c as u64).sum();
            assert!(
                round_total <= limit,
                "round {j} carries {round_total} > {limit}"
            );
            if j + 1 < plan.len() {
                assert_eq!(round_total, limit, "round {j} is not full");
            }
            // Displacements are prefix sums of the round's counts: at most its total.
            assert!(displacements(round)
                .iter()
                .all(|&d| d as u64 <= round_total));
            for (r, &c) in round.iter().enumerate() {
                assert!(c >= 0);
                sent[r] += c as u64;
            }
        }
        assert_eq!(sent, lens, "every byte is sent exactly once");
        plan
    }

    #[test]
    fn rounds_cover_every_byte_within_the_limit() {
        check_plan(&[0, 0, 0], 7);
        check_plan(&[5], 7);
        check_plan(&[7, 7], 7);
        check_plan(&[10, 0, 3, 25], 7);
        check_plan(&[1, 1, 1, 1, 1], 2);
        let plan = check_plan(&[3, 9], 4);
        assert_eq!(plan, vec![vec![3, 1], vec![0, 4], vec![0, 4]]);
    }

    #[test]
    fn payloads_beyond_32_bits_are_planned_in_int_sized_rounds() {
        // 540k Inception samples of 1008 f32 logits on 4 ranks: 2.18 GB, over i32::MAX.
        let per_rank = 540_000 / 4 * 1008 * 4 + 24 * 100;
        let lens = [per_rank as u64; 4];
        assert!(lens.iter().sum::<u64>() > i32::MAX as u64);
        let plan = check_plan(&lens, GATHER_ROUND_BYTES as u64);
        assert!(plan.len() >= 2);
        let huge = [5u64 << 32, 3];
        let plan = check_plan(&huge, i32::MAX as u64);
        assert!(plan.len() > 10);
    }

    #[test]
    fn all_gather_refuses_totals_over_i32() {
        assert_eq!(all_gather_counts(&[3, 4]).unwrap(), vec![3, 4]);
        assert!(all_gather_counts(&[i32::MAX as u64, 0]).is_ok());
        let err = all_gather_counts(&[i32::MAX as u64, 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2147483648") && err.contains("gather_bytes"),
            "{err}"
        );
    }
}
