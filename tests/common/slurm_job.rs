//! One submitted training job of launch/slurm/train.sbatch: where it runs, its log, waiting for
//! it, and what its run directory must hold afterwards. Shared by the single-node and the
//! multi-node Slurm tests.
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tch::Tensor;

use super::slurm::{text, Cluster};

/// States after which a job runs no more.
const FINAL: [&str; 6] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
];

pub struct Job<'a> {
    pub cluster: &'a Cluster,
    /// The submit directory: the "repository root" the job runs in, its log and runs/ there.
    pub submit: PathBuf,
    pub name: String,
    pub id: String,
    pub steps: i64,
    /// The submit directory, when the job owns it (removed with the job).
    pub owned_dir: Option<tempfile::TempDir>,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Job<'_> {
    pub fn run_dir(&self) -> PathBuf {
        self.submit.join("runs").join(&self.name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.submit
                .join(format!("slurm-{}-{}.out", self.name, self.id)),
        )
        .unwrap_or_else(|e| format!("<no job log: {e}>"))
    }

    pub fn diagnose(&self) -> String {
        format!(
            "job {} {:?}\n--- job log\n{}\n{}",
            self.id,
            self.cluster.job(&self.id),
            self.log(),
            self.cluster.daemon_logs()
        )
    }

    /// Steps of metrics.jsonl's training lines, in file order.
    pub fn logged_steps(&self) -> Vec<i64> {
        super::logged_steps(&self.run_dir())
    }

    /// Waits until training has logged `step` (the job is then mid-run).
    pub fn wait_for_step(&self, step: i64) {
        let t0 = Instant::now();
        while self.logged_steps().last().copied().unwrap_or(0) < step {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "step {step} never logged\n{}",
                self.diagnose()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits at most `secs` for a final state; scontrol's view of the job.
    pub fn wait_end(&self, secs: u64) -> HashMap<String, String> {
        self.wait_for_state(secs, &FINAL)
    }

    /// Waits until the batch script has ended: a final state, or COMPLETING (where the job waits
    /// on a node that is gone, its other nodes are free again).
    pub fn wait_batch_end(&self, secs: u64) -> HashMap<String, String> {
        let mut states = FINAL.to_vec();
        states.push("COMPLETING");
        self.wait_for_state(secs, &states)
    }

    fn wait_for_state(&self, secs: u64, states: &[&str]) -> HashMap<String, String> {
        let t0 = Instant::now();
        loop {
            let j = self.cluster.job(&self.id);
            let state = j.get("JobState").cloned().unwrap_or_default();
            if states.contains(&state.as_str()) {
                return j;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "job did not end in {secs} s\n{}",
                self.diagnose()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The checkpoint `checkpoints/latest` names.
    pub fn latest_checkpoint(&self) -> String {
        std::fs::read_to_string(self.run_dir().join("checkpoints/latest"))
            .unwrap_or_else(|e| panic!("no checkpoints/latest: {e}\n{}", self.diagnose()))
            .trim()
            .to_string()
    }

    pub fn assert_every_step_once(&self) {
        let want: Vec<i64> = (1..=self.steps).collect();
        assert_eq!(
            self.logged_steps(),
            want,
            "metrics.jsonl must hold every step exactly once\n{}",
            self.diagnose()
        );
    }

    /// TensorBoard: the raw records of all event files hold each step of loss/D exactly once,
    /// files in time order continuing each other, and TensorBoard shows 1..=steps as one run.
    /// The number of event files.
    pub fn assert_one_continuous_tensorboard_run(&self) -> usize {
        let python = std::env::var_os("SAGAN_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".venv/bin/python"));
        let out = Command::new(&python)
            .arg(repo().join("tests/python/event_steps.py"))
            .arg(self.run_dir())
            .arg("loss/D")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(out.status.success(), "event_steps.py: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let files = v["files"].as_array().unwrap();
        let raw: Vec<i64> = files
            .iter()
            .flat_map(|f| f[1].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()))
            .collect();
        let want: Vec<i64> = (1..=self.steps).collect();
        assert_eq!(raw, want, "raw event records per file: {files:?}");
        let shown: Vec<i64> = v["shown"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_i64().unwrap())
            .collect();
        assert_eq!(shown, want, "what TensorBoard shows");
        files.len()
    }

    /// Rank `r`'s replicated state (dist.dump_rank_state), sorted by name.
    pub fn rank_state(&self, r: usize) -> Vec<(String, Tensor)> {
        let mut v = Tensor::read_safetensors(
            self.run_dir()
                .join(format!("rank_state/rank{r}.safetensors")),
        )
        .unwrap_or_else(|e| panic!("rank {r}: {e}\n{}", self.diagnose()));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every rank's replicated state (dist.dump_rank_state) equals rank 0's, bit for bit.
    pub fn assert_ranks_identical(&self, ranks: usize) {
        let first = self.rank_state(0);
        assert!(first.len() > 50, "{} tensors", first.len());
        for r in 1..ranks {
            let other = self.rank_state(r);
            assert_eq!(other.len(), first.len());
            for ((na, ta), (nb, tb)) in first.iter().zip(&other) {
                assert_eq!(na, nb);
                assert!(ta.equal(tb), "rank {r}: {na} differs from rank 0's");
            }
        }
    }
}
