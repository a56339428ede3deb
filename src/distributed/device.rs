//! Which device and backend the ranks use, decided together from what every rank sees, and how many
//! CPU threads a rank may use.
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::BackendKind;
use crate::error::{Error, Result};

/// What one rank sees of its machine; gathered from every rank before any backend starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankView {
    pub host: String,
    /// CUDA devices visible to this process (0 without CUDA).
    pub cuda_devices: i64,
    /// The CPUs this process may run on (its affinity, which mpirun's binding sets).
    pub cpus: Vec<u32>,
    /// This rank's index among the ranks on its node, as MPI sees it (shared-memory domain).
    #[serde(default)]
    pub local_rank: usize,
    /// Set where the driver sees GPUs that libtorch does not: why (see [`cuda_diagnosis`]).
    #[serde(default)]
    pub unusable_gpus: Option<String>,
}

impl RankView {
    pub fn probe(local_rank: usize) -> RankView {
        let cuda_devices = if tch::Cuda::is_available() {
            tch::Cuda::device_count()
        } else {
            0
        };
        let driver = if cuda_devices == 0 {
            super::cuda_driver::device_count()
        } else {
            0
        };
        RankView {
            local_rank,
            host: super::world::hostname(),
            cuda_devices,
            cpus: allowed_cpus(),
            unusable_gpus: (driver > 0).then(|| {
                format!(
                    "the driver sees {driver} GPU(s) but libtorch none: {}",
                    cuda_diagnosis()
                )
            }),
        }
    }
}

/// The agreed plan for one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub backend: BackendKind,
    pub device: Device,
    /// Intra-op threads on CPU.
    pub threads: i32,
}

/// Resolves `dist.backend` for the whole job from every rank's view, identically on every rank
/// (the views are the same everywhere), so no rank starts a backend the others will not join.
/// `threads` is `train.threads` (0 = this rank's share of its CPUs).
pub fn plan(kind: BackendKind, rank: usize, views: &[RankView], threads: i64) -> Result<Plan> {
    let size = views.len();
    let with_gpu: Vec<usize> = (0..size).filter(|&r| views[r].cuda_devices > 0).collect();
    // "rank 1 on node2 sees", "rank 1 on node2 and rank 3 on node4 see".
    let without = |pred: &dyn Fn(usize) -> bool| -> String {
        let ranks: Vec<String> = (0..size)
            .filter(|&r| pred(r))
            .map(|r| format!("rank {r} on {}", views[r].host))
            .collect();
        let verb = if ranks.len() == 1 { "sees" } else { "see" };
        format!("{} {verb}", ranks.join(" and "))
    };
    // A GPU node whose ranks would quietly train on its CPUs: the binary's CUDA is broken.
    if let (BackendKind::Auto, Some(r)) =
        (kind, (0..size).find(|&r| views[r].unusable_gpus.is_some()))
    {
        return Err(Error::Dist(format!(
            "rank {r} on {}: {}; set dist.backend = \"mpi\" to train on CPUs anyway",
            views[r].host,
            views[r].unusable_gpus.as_deref().unwrap_or_default()
        )));
    }
    let backend = match kind {
        BackendKind::Auto if size == 1 => BackendKind::Local,
        BackendKind::Auto if with_gpu.len() == size => BackendKind::Nccl,
        BackendKind::Auto if with_gpu.is_empty() => BackendKind::Mpi,
        BackendKind::Auto => {
            return Err(Error::Dist(format!(
                "some ranks see a GPU and some do not ({} none); every rank must train on the \
                 same kind of device: check CUDA_VISIBLE_DEVICES and the GPU nodes of the \
                 allocation, or set dist.backend = \"mpi\" to train on CPUs",
                without(&|r| views[r].cuda_devices == 0)
            )))
        }
        k => k,
    };
    match backend {
        BackendKind::Local if size > 1 => {
            return Err(Error::Dist(format!(
                "`dist.backend` = \"local\" but {size} ranks were started"
            )))
        }
        BackendKind::Nccl if with_gpu.len() < size => {
            return Err(Error::Dist(format!(
                "`dist.backend` = \"nccl\" needs a CUDA device on every rank, but {} none \
                 (no visible GPU on that node: check CUDA_VISIBLE_DEVICES and the allocation)",
                without(&|r| views[r].cuda_devices == 0)
            )))
        }
        _ => {}
    }
    let me = &views[rank];
    let same_host: Vec<usize> = (0..size).filter(|&r| views[r].host == me.host).collect();
    let local_rank = same_host.iter().position(|&r| r == rank).unwrap_or(0);
    let use_cuda = match backend {
        BackendKind::Nccl => true,
        BackendKind::Local => me.cuda_devices > 0,
        _ => false,
    };
    if backend == BackendKind::Nccl && same_host.len() as i64 > me.cuda_devices {
        return Err(Error::Dist(format!(
            "{} runs {} ranks but sees {} GPU(s); NCCL needs one GPU per rank (start at most \
             that many ranks per node)",
            me.host,
            same_host.len(),
            me.cuda_devices
        )));
    }
    let device = if use_cuda {
        Device::Cuda(local_rank % me.cuda_devices.max(1) as usize)
    } else {
        Device::Cpu
    };
    let sharing = same_host
        .iter()
        .filter(|&&r| views[r].cpus == me.cpus)
        .count();
    Ok(Plan {
        backend,
        device,
        threads: cpu_threads(threads, me.cpus.len(), sharing),
    })
}

/// For the watchdog's timeout message: "rank 0 is on node1; the other ranks: node2 ranks 1", hosts
/// in order of their first rank.
pub fn describe_peers(views: &[RankView], me: usize) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    for v in views {
        if !hosts.contains(&v.host.as_str()) {
            hosts.push(&v.host);
        }
    }
    let parts: Vec<String> = hosts
        .iter()
        .filter_map(|h| {
            let on: Vec<String> = (0..views.len())
                .filter(|&r| r != me && views[r].host == *h)
                .map(|r| r.to_string())
                .collect();
            (!on.is_empty()).then(|| format!("{h} ranks {}", on.join(",")))
        })
        .collect();
    format!(
        "rank {me} is on {}; the other ranks: {}",
        views[me].host,
        parts.join("; ")
    )
}

/// Where the ranks run, for the start-up line: "4 rank(s) on 2 host(s): node1 ranks 0,1 (local
/// 0,1); node2 ranks 2,3 (local 0,1)", hosts in order of their first rank, local ranks as MPI
/// numbers them. Then one warning per rank whose MPI local rank is not its index among the ranks
/// with its host name (which picks its GPU): two nodes with one host name, or one node under two.
pub fn describe_hosts(views: &[RankView]) -> (String, Vec<String>) {
    let mut hosts: Vec<&str> = Vec::new();
    for v in views {
        if !hosts.contains(&v.host.as_str()) {
            hosts.push(&v.host);
        }
    }
    let list = |it: &mut dyn Iterator<Item = usize>| {
        it.map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    };
    let parts: Vec<String> = hosts
        .iter()
        .map(|h| {
            let on: Vec<usize> = (0..views.len()).filter(|&r| views[r].host == *h).collect();
            format!(
                "{h} ranks {} (local {})",
                list(&mut on.iter().copied()),
                list(&mut on.iter().map(|&r| views[r].local_rank))
            )
        })
        .collect();
    let line = format!(
        "{} rank(s) on {} host(s): {}",
        views.len(),
        hosts.len(),
        parts.join("; ")
    );
    let mut warnings = Vec::new();
    for (r, v) in views.iter().enumerate() {
        let by_name = views[..r].iter().filter(|o| o.host == v.host).count();
        if by_name != v.local_rank {
            warnings.push(format!(
                "rank {r} on {} is local rank {} to MPI but {by_name} by host name; devices are \
                 picked by host name: do two nodes share a host name?",
                v.host, v.local_rank
            ));
        }
    }
    (line, warnings)
}

/// Fails with a clear message when CUDA was asked for but is absent, saying which part is
/// missing (see [`cuda_diagnosis`]).
pub fn require_cuda(what: &str) -> Result<()> {
    if tch::Cuda::is_available() {
        Ok(())
    } else {
        Err(Error::Dist(format!(
            "{what} needs CUDA, but libtorch reports no CUDA device on this machine: {}",
            cuda_diagnosis()
        )))
    }
}

/// Whether libtorch's CUDA library is mapped into this process. tch references nothing in it, so
/// a link with --as-needed drops it and libtorch never registers CUDA ("Cannot initialize CUDA
/// without ATen_cuda library", tch-rs #980); build.rs links it with --no-as-needed.
pub fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"))
}

/// Why libtorch sees no CUDA device, from the binary's side first (libtorch_cuda linked and
/// loaded), then the driver's.
pub fn cuda_diagnosis() -> String {
    if !libtorch_cuda_loaded() {
        return "libtorch_cuda.so is not loaded into this process: this sagan was built against \
         a CPU-only libtorch, or linked without --no-as-needed (tch-rs #980); build it \
         against the CUDA torch wheel (scripts/setup.sh installs it)"
            .into();
    }
    format!(
        "libtorch_cuda.so is loaded, and {}",
        super::cuda_driver::driver_status()
    )
}

/// Intra-op threads: the configured number, else this rank's CPUs split between the ranks of this
/// node bound to the same CPUs. A launcher that binds each rank to its own cores has already done
/// the split (the affinity says so); dividing again would leave cores idle.
pub fn cpu_threads(configured: i64, allowed_cpus: usize, ranks_sharing_them: usize) -> i32 {
    if configured > 0 {
        return configured as i32;
    }
    let cpus = if allowed_cpus > 0 {
        allowed_cpus
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    (cpus / ranks_sharing_them.max(1)).max(1) as i32
}

/// This process's CPU affinity, from /proc (empty when unavailable).
fn allowed_cpus() -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|list| parse_cpu_list(list.trim()))
        })
        .unwrap_or_default()
}

/// "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]; malformed parts are skipped.
pub fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(host: &str, gpus: i64, cpus: &[u32]) -> RankView {
        RankView {
            host: host.into(),
            cuda_devices: gpus,
            cpus: cpus.to_vec(),
            local_rank: 0,
            unusable_gpus: None,
        }
    }

    #[test]
    fn peers_are_the_other_ranks_by_host() {
        let views = vec![
            view("node1", 0, &[0]),
            view("node2", 0, &[0]),
            view("node1", 0, &[1]),
        ];
        assert_eq!(
            describe_peers(&views, 0),
            "rank 0 is on node1; the other ranks: node1 ranks 2; node2 ranks 1"
        );
        assert_eq!(
            describe_peers(&views[..2], 1),
            "rank 1 is on node2; the other ranks: node1 ranks 0"
        );
    }

    #[test]
    fn hosts_are_listed_with_their_ranks_and_local_ranks() {
        let mut views = vec![
            view("node1", 0, &[0]),
            view("node1", 0, &[1]),
            view("node2", 0, &[0]),
            view("node2", 0, &[1]),
        ];
        for (r, l) in [0, 1, 0, 1].into_iter().enumerate() {
            views[r].local_rank = l;
        }
        let (line, warnings) = describe_hosts(&views);
        assert_eq!(
            line,
            "4 rank(s) on 2 host(s): node1 ranks 0,1 (local 0,1); node2 ranks 2,3 (local 0,1)"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        // Two nodes under one host name: MPI numbers 0,1 twice, the names say 0..3.
        for v in &mut views {
            v.host = "same".into();
        }
        let (line, warnings) = describe_hosts(&views);
        assert_eq!(
            line,
            "4 rank(s) on 1 host(s): same ranks 0,1,2,3 (local 0,1,0,1)"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("rank 2 on same is local rank 0 to MPI but 2"));
    }

    /// The binary links libtorch's CUDA library even on a machine without a GPU (the torch wheel
    /// of scripts/setup.sh is the CUDA build), and the "no CUDA" message names what is missing.
    #[test]
    fn libtorch_cuda_is_linked_and_a_missing_gpu_is_explained() {
        assert!(
            libtorch_cuda_loaded(),
            "libtorch_cuda.so is not mapped: build.rs's --no-as-needed link is lost"
        );
        if tch::Cuda::is_available() {
            return;
        }
        let e = require_cuda("this test").unwrap_err().to_string();
        assert!(
            e.contains("libtorch_cuda.so is loaded, and the CUDA driver"),
            "{e}"
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5"), vec![5]);
        assert!(parse_cpu_list("").is_empty());
    }

    #[test]
    fn bound_ranks_are_not_divided_again() {
        // mpirun --bind-to core: each rank sees its own core.
        let views = [view("a", 0, &[0]), view("a", 0, &[1])];
        assert_eq!(plan(BackendKind::Auto, 1, &views, 0).unwrap().threads, 1);
        // Bound to two cores each on a 4-core node: two threads each, not one.
        let views = [view("a", 0, &[0, 1]), view("a", 0, &[2, 3])];
        assert_eq!(plan(BackendKind::Auto, 0, &views, 0).unwrap().threads, 2);
        // Unbound: the node's cores are shared.
        let views = [view("a", 0, &[0, 1, 2, 3]), view("a", 0, &[0, 1, 2, 3])];
        assert_eq!(plan(BackendKind::Auto, 0, &views, 0).unwrap().threads, 2);
        // Other hosts do not count.
        let views = [view("a", 0, &[0, 1, 2, 3]), view("b", 0, &[0, 1, 2, 3])];
        assert_eq!(plan(BackendKind::Auto, 1, &views, 0).unwrap().threads, 4);
        assert_eq!(plan(BackendKind::Auto, 1, &views, 3).unwrap().threads, 3);
    }

    #[test]
    fn backends_are_agreed_from_every_rank_view() {
        let cpu = [view("a", 0, &[0]), view("b", 0, &[0])];
        let p = plan(BackendKind::Auto, 0, &cpu, 0).unwrap();
        assert_eq!((p.backend, p.device), (BackendKind::Mpi, Device::Cpu));
        let gpu = [view("a", 2, &[0]), view("a", 2, &[1]), view("b", 2, &[0])];
        let p = plan(BackendKind::Auto, 1, &gpu, 0).unwrap();
        assert_eq!((p.backend, p.device), (BackendKind::Nccl, Device::Cuda(1)));
        assert_eq!(
            plan(BackendKind::Auto, 2, &gpu, 0).unwrap().device,
            Device::Cuda(0)
        );
        // Forcing MPI keeps GPU ranks on the CPU, where MPI's tensors live.
        let p = plan(BackendKind::Mpi, 1, &gpu, 0).unwrap();
        assert_eq!((p.backend, p.device), (BackendKind::Mpi, Device::Cpu));
        let mixed = [view("a", 1, &[0]), view("nogpu", 0, &[0])];
        for r in 0..2 {
            let e = plan(BackendKind::Auto, r, &mixed, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("rank 1 on nogpu"), "{e}");
            let e = plan(BackendKind::Nccl, r, &mixed, 0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("rank 1 on nogpu") && e.contains("no visible GPU"),
                "{e}"
            );
        }
        // GPUs the driver sees and libtorch does not stop an automatic choice, not a forced one.
        let mut broken = [view("a", 0, &[0]), view("gpu7", 0, &[0])];
        broken[1].unusable_gpus = Some("the driver sees 8 GPU(s) but libtorch none: x".into());
        let e = plan(BackendKind::Auto, 0, &broken, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rank 1 on gpu7: the driver sees 8 GPU(s)"),
            "{e}"
        );
        assert!(e.contains("dist.backend = \"mpi\""), "{e}");
        assert_eq!(
            plan(BackendKind::Mpi, 0, &broken, 0).unwrap().device,
            Device::Cpu
        );
        let crowded = [view("a", 1, &[0]), view("a", 1, &[1])];
        let e = plan(BackendKind::Nccl, 0, &crowded, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one GPU per rank"), "{e}");
        assert!(plan(BackendKind::Local, 0, &cpu, 0).is_err());
        assert_eq!(
            plan(BackendKind::Auto, 0, &cpu[..1], 0).unwrap().backend,
            BackendKind::Local
        );
    }
}
