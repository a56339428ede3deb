//! Who this process is: rank, world size and rank on its node, from MPI, cross-checked against
//! the launcher's environment (mpirun's OMPI_*, PMIx, Slurm).
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
}

impl World {
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
        }
    }
}

/// This machine's host name (path separators and whitespace replaced, "localhost" when unknown).
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c == '/' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// The launcher's view of rank and size, if any launcher variables are set.
pub fn launcher_view(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, usize, usize)> {
    let num = |k: &str| env(k).and_then(|v| v.trim().parse::<usize>().ok());
    if let (Some(r), Some(s)) = (num("OMPI_COMM_WORLD_RANK"), num("OMPI_COMM_WORLD_SIZE")) {
        return Some(("mpirun (OMPI_COMM_WORLD_*)".into(), r, s));
    }
    // Inside an sbatch allocation mpirun sets OMPI_* but leaves SLURM_PROCID=0 on every rank,
    // so Slurm's variables only count when mpirun's are absent (srun --mpi=pmix).
    if let (Some(r), Some(s)) = (num("SLURM_PROCID"), num("SLURM_NTASKS")) {
        if env("SLURM_STEP_ID").is_some() || env("SLURM_STEPID").is_some() {
            return Some(("srun (SLURM_PROCID/SLURM_NTASKS)".into(), r, s));
        }
    }
    None
}

/// Refuses to start when MPI and the launcher disagree (e.g. a binary built against another MPI,
/// which then starts N singletons that each believe they are rank 0).
pub fn cross_check(world: &World, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    if let Some((who, r, s)) = launcher_view(env) {
        if r != world.rank || s != world.size {
            return Err(Error::Dist(format!(
                "MPI says rank {} of {}, but {who} says rank {r} of {s}; is sagan linked against the MPI that launched it?",
                world.rank, world.size
            )));
        }
    }
    if let Some(p) = env("PMIX_RANK").and_then(|v| v.parse::<usize>().ok()) {
        if p != world.rank {
            return Err(Error::Dist(format!(
                "MPI says rank {}, but PMIX_RANK is {p}",
                world.rank
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn agreement_and_disagreement() {
        let w = World {
            rank: 1,
            size: 2,
            local_rank: 1,
            local_size: 2,
        };
        cross_check(
            &w,
            &env(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")]),
        )
        .unwrap();
        let e = cross_check(
            &w,
            &env(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rank 1 of 2") && e.contains("rank 0 of 2"),
            "{e}"
        );
        // sbatch + mpirun: SLURM_PROCID=0 everywhere must not count against OMPI_*.
        cross_check(
            &w,
            &env(&[
                ("OMPI_COMM_WORLD_RANK", "1"),
                ("OMPI_COMM_WORLD_SIZE", "2"),
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "1"),
            ]),
        )
        .unwrap();
        let e = cross_check(
            &w,
            &env(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_STEP_ID", "0"),
            ]),
        );
        assert!(e.is_err());
        assert!(cross_check(&w, &env(&[("PMIX_RANK", "0")])).is_err());
        cross_check(&w, &env(&[])).unwrap();
    }
}
