//! Start-up of a rank: MPI (when built with it), world cross-check, device binding, thread count,
//! backend choice and the cross-rank config comparison.
use tch::Device;

use super::comm::{Comm, LocalComm};
use super::device;
use super::world::{self, World};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

pub struct Rank {
    pub comm: Box<dyn Comm>,
    pub world: World,
    pub device: Device,
}

/// Joins the run: every rank of an mpirun/srun launch calls this first.
pub fn join(cfg: &Config) -> Result<Rank> {
    let (bootstrap, world) = bootstrap()?;
    world::cross_check(&world, &|k| std::env::var(k).ok())?;
    // Bind the GPU before anything else touches CUDA.
    let device = device::pick_device(world.local_rank);
    if device == Device::Cpu {
        tch::set_num_threads(device::cpu_threads(cfg.train.threads, world.local_size));
    }
    let comm = choose_backend(cfg.dist.backend, bootstrap, &world, device)?;
    check_same_config(comm.as_ref(), cfg)?;
    Ok(Rank {
        comm,
        world,
        device,
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

fn choose_backend(
    kind: BackendKind,
    bootstrap: Box<dyn Comm>,
    world: &World,
    device: Device,
) -> Result<Box<dyn Comm>> {
    let cuda = device != Device::Cpu;
    let kind = match kind {
        BackendKind::Auto if world.size == 1 => BackendKind::Local,
        BackendKind::Auto if cuda => BackendKind::Nccl,
        BackendKind::Auto => BackendKind::Mpi,
        k => k,
    };
    match kind {
        BackendKind::Local if world.size > 1 => Err(Error::Dist(format!(
            "`dist.backend` = \"local\" but {} ranks were started",
            world.size
        ))),
        BackendKind::Local => Ok(Box::new(LocalComm)),
        BackendKind::Mpi if cuda => Err(Error::Dist(
            "`dist.backend` = \"mpi\" takes CPU tensors, but this rank trains on CUDA; use \"nccl\" or \"auto\"".into(),
        )),
        BackendKind::Mpi if bootstrap.name() == "mpi" => Ok(bootstrap),
        BackendKind::Mpi => Err(Error::Dist("`dist.backend` = \"mpi\" but sagan was built without MPI".into())),
        BackendKind::Nccl => {
            device::require_cuda("`dist.backend` = \"nccl\"")?;
            let Device::Cuda(index) = device else {
                return Err(Error::Dist("`dist.backend` = \"nccl\" needs this rank on a CUDA device".into()));
            };
            Ok(Box::new(super::nccl::NcclComm::new(bootstrap, index)?))
        }
        BackendKind::Auto => unreachable!("resolved above"),
    }
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
