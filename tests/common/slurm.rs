//! A throwaway Slurm cluster for the tests: tests/infra/local-slurm.sh started under a temp dir,
//! on this machine alone or with nodes in network namespaces, stopped by a Drop guard whatever
//! happens.
#![allow(dead_code)]
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running single-node cluster; dropping it stops every daemon (and job) it started.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Nodes in network namespaces (node1..), or 0 for this machine as the one node.
    pub nodes: usize,
}

impl Cluster {
    /// None (after a loud message) when Slurm is not installed here and not required.
    pub fn start() -> Option<Cluster> {
        Self::start_nodes(0)
    }

    /// With `nodes` > 0: that many nodes in network namespaces (tests/infra/nodes.sh).
    pub fn start_nodes(nodes: usize) -> Option<Cluster> {
        let missing: Vec<&str> = ["munged", "slurmctld", "slurmd", "sbatch"]
            .into_iter()
            .filter(|p| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {p}")])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            })
            .collect();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if !missing.is_empty() || !root {
            let why = if missing.is_empty() {
                "not running as root".to_string()
            } else {
                format!("{} not installed", missing.join(", "))
            };
            let msg = format!(
                "\n!!!!!!!! SLURM TEST SKIPPED: {why}: the Slurm launch scripts were NOT tested. \
                 Run scripts/setup.sh as root (it installs slurm-wlm slurmctld slurmd slurm-client munge).\n"
            );
            if std::env::var_os("SAGAN_REQUIRE_SLURM").is_some_and(|v| v == "1") {
                panic!("{msg}(SAGAN_REQUIRE_SLURM=1)");
            }
            // Straight to the file descriptor: the test harness captures eprintln! of passing tests.
            let _ = std::io::stderr().write_all(msg.as_bytes());
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("sagan-slurm-")
            .tempdir()
            .unwrap();
        let cluster = Cluster { dir, nodes };
        let out = Command::new("bash")
            .arg(repo().join("tests/infra/local-slurm.sh"))
            .arg("start")
            .arg(cluster.dir.path())
            .args(if nodes > 0 {
                vec!["--nodes".to_string(), nodes.to_string()]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "local-slurm.sh start failed:\n{}",
            text(&out)
        );
        Some(cluster)
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// The id the cluster gives its first job (local-slurm.sh's FirstJobId).
    pub fn first_job_id(&self) -> String {
        let conf = std::fs::read_to_string(self.conf()).unwrap();
        conf.lines()
            .find_map(|l| l.strip_prefix("FirstJobId="))
            .expect("FirstJobId in slurm.conf")
            .trim()
            .to_string()
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// `scontrol show job` as key=value pairs (JobState, Restarts, ExitCode, ...).
    pub fn job(&self, id: &str) -> HashMap<String, String> {
        let out = self
            .cmd("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn daemon_logs(&self) -> String {
        let mut s = String::new();
        let mut files: Vec<String> = std::fs::read_dir(self.dir.path().join("log"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".out"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for f in files {
            let t =
                std::fs::read_to_string(self.dir.path().join("log").join(&f)).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(25).collect();
            s += &format!("--- {f} (last lines)\n");
            for l in tail.into_iter().rev() {
                s += l;
                s += "\n";
            }
        }
        s
    }
}

impl Cluster {
    /// Processes that belong to this cluster: its daemons, and every job process (they all
    /// carry SLURM_CONF=<one of this cluster's slurm.conf files>, from slurmd or sbatch).
    pub fn processes(&self) -> Vec<(u32, String)> {
        // The nodes' daemons and step daemons carry their node's copy, DIR/nodeK/slurm.conf.
        let tag = format!("SLURM_CONF={}/", self.dir.path().display());
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env
                .split(|&b| b == 0)
                .any(|v| v.starts_with(tag.as_bytes()) && v.ends_with(b"slurm.conf"))
            {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                found.push((pid, cmd));
            }
        }
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(repo().join("tests/infra/local-slurm.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
        if let Ok(o) = out {
            if !o.status.success() {
                let _ = std::io::stderr()
                    .write_all(format!("local-slurm.sh stop failed:\n{}", text(&o)).as_bytes());
            }
        }
    }
}

impl Cluster {
    /// `sbatch --parsable` of launch/slurm/train.sbatch on the default config from the submit
    /// directory `dir`, with `launcher` (srun or mpirun), the sbatch options `opts` and `sets`
    /// for `sagan train`; the job id.
    pub fn sbatch_train(
        &self,
        dir: &Path,
        launcher: &str,
        opts: &[&str],
        sets: &[String],
    ) -> String {
        let out = self
            .cmd("sbatch")
            .current_dir(dir)
            .env("SAGAN_BIN", super::bin())
            .env("SAGAN_LAUNCHER", launcher)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .arg("--parsable")
            .args(opts)
            .arg(repo().join("launch/slurm/train.sbatch"))
            .arg("--config")
            .arg(repo().join("configs/fmnist32.toml"))
            .args(sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]))
            .output()
            .unwrap();
        assert!(out.status.success(), "sbatch failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
}
