//! Start-up of a rank: MPI (when built with it), world cross-check, the device and backend agreed by
//! every rank, thread count, the watchdog, and the cross-rank config comparison.
use tch::Device;

use super::abort;
use super::comm::{Comm, LocalComm};
use super::device::{self, RankView};
use super::watchdog::{self, Watchdog};
use super::watched::WatchedComm;
use super::world::{self, World};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

pub struct Rank {
    /// The job's communicator. It lives as long as the process: a rank joins one job, and a
    /// communicator must outlive every error path (which aborts it rather than tearing it down).
    pub comm: &'static dyn Comm,
    pub world: World,
    pub device: Device,
}

/// Joins the run: every rank of an mpirun/srun launch calls this first.
pub fn join(cfg: &Config) -> Result<Rank> {
    // Before the first large allocation: the policy decides where every activation lives.
    let allocator_note = crate::host::alloc::apply(cfg.train.host_memory);
    let (bootstrap, world) = bootstrap()?;
    if let (Some(note), 0) = (allocator_note, world.rank) {
        eprintln!("sagan: warning: {note}");
    }
    abort::set_identity(world.rank, world.size);
    world::cross_check(&world, &|k| std::env::var(k).ok())?;
    let timeout = watchdog::timeout_from_secs(cfg.dist.timeout_s)?;
    // Collectives from here on are bounded: the views and config hashes below are the first.
    let dog = (world.size > 1).then(|| Watchdog::start(world.rank, timeout));
    let bootstrap: Box<dyn Comm> = match &dog {
        Some(d) => Box::new(WatchedComm::new(bootstrap, d.clone())),
        None => bootstrap,
    };
    let views = gather_views(bootstrap.as_ref(), world.local_rank)?;
    if let Some(d) = &dog {
        d.set_peers(device::describe_peers(&views, world.rank));
    }
    if world.rank == 0 && world.size > 1 {
        let (line, warnings) = device::describe_hosts(&views);
        println!("sagan: {line}");
        for w in warnings {
            eprintln!("sagan: warning: {w}");
        }
    }
    let plan = device::plan(cfg.dist.backend, world.rank, &views, cfg.train.threads)?;
    if plan.device == Device::Cpu {
        crate::host::cpu_threads::pin_training_threads(plan.threads);
    }
    let comm: Box<dyn Comm> = match plan.backend {
        BackendKind::Nccl => nccl(bootstrap, plan.device, dog.as_ref())?,
        // One rank: no collective to run (MPI stays initialised for finalize).
        BackendKind::Local => Box::new(LocalComm),
        _ => bootstrap,
    };
    let comm: &'static dyn Comm = Box::leak(comm);
    check_same_config(comm, cfg)?;
    Ok(Rank {
        comm,
        world,
        device: plan.device,
    })
}

/// Ends MPI on the success path (every rank calls it), bounded by the watchdog like a collective.
pub fn finalize(comm: &dyn Comm) {
    let _in_flight = comm.watchdog().map(|d| d.enter("MPI_Finalize", 0));
    #[cfg(feature = "mpi")]
    super::mpi::finalize();
}

fn gather_views(comm: &dyn Comm, local_rank: usize) -> Result<Vec<RankView>> {
    let mine = serde_json::to_vec(&RankView::probe(local_rank)).expect("serialisable");
    comm.all_gather_bytes(&mine)?
        .iter()
        .enumerate()
        .map(|(r, b)| {
            serde_json::from_slice(b)
                .map_err(|e| Error::Dist(format!("rank {r} sent an unreadable device view: {e}")))
        })
        .collect()
}

fn nccl(bootstrap: Box<dyn Comm>, device: Device, dog: Option<&Watchdog>) -> Result<Box<dyn Comm>> {
    let Device::Cuda(index) = device else {
        return Err(Error::Dist(
            "the NCCL backend needs this rank on a CUDA device".into(),
        ));
    };
    device::require_cuda("`dist.backend` = \"nccl\"")?;
    let nccl = super::nccl::NcclComm::new(bootstrap, index)?;
    let handle = nccl.abort_handle();
    let on_abort = handle.clone();
    abort::on_abort_comm(move || {
        let _ = on_abort.abort();
    });
    Ok(match dog {
        Some(d) => {
            d.watch_async_errors(move || handle.check_async_error());
            Box::new(WatchedComm::new(Box::new(nccl), d.clone()))
        }
        None => Box::new(nccl),
    })
}

#[cfg(feature = "mpi")]
fn bootstrap() -> Result<(Box<dyn Comm>, World)> {
    let mpi = super::mpi::init()?;
    let world = World {
        rank: mpi.rank(),
        size: mpi.size(),
        local_rank: mpi.local_rank,
        local_size: mpi.local_size,
    };
    Ok((Box::new(mpi), world))
}

#[cfg(not(feature = "mpi"))]
fn bootstrap() -> Result<(Box<dyn Comm>, World)> {
    if let Some((who, _, size)) = world::launcher_view(&|k| std::env::var(k).ok()) {
        if size > 1 {
            return Err(Error::Dist(format!(
                "{who} started {size} ranks, but this sagan was built without the `mpi` feature"
            )));
        }
    }
    Ok((Box::new(LocalComm), World::single()))
}

/// A communicator for code that runs one process without a launcher (tests, tools).
pub fn local() -> &'static dyn Comm {
    &LocalComm
}

/// Every rank must train the same config: compare hashes and name the ranks that differ.
pub fn check_same_config(comm: &dyn Comm, cfg: &Config) -> Result<()> {
    let hashes = comm.all_gather_bytes(&cfg.hash())?;
    let differing: Vec<usize> = (0..hashes.len())
        .filter(|&r| hashes[r] != hashes[0])
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::Config {
        file: "<ranks>".into(),
        msg: format!(
            "rank(s) {differing:?} have a different effective config than rank 0 (compare `sagan show-config` with the same arguments on each)"
        ),
    })
}
