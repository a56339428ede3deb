//! A sweep on Slurm: one job array whose tasks each run launch/slurm/train.sbatch on one run of
//! the sweep, so the arms train in parallel and every task is preempted, requeued and resumed as
//! a single `sbatch train.sbatch` job would be.
//!
//! Each submission writes its tasks' arguments to `<out>/array/<n>/<task>.args`, one argument per
//! line; train.sbatch's `--task-args DIR` reads the file of its SLURM_ARRAY_TASK_ID. A
//! submission never rewrites an earlier one's files: a task requeued later reads what it was
//! submitted with.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::plan::{Plan, PlannedRun};
use crate::error::{Error, IoContext, Result};

/// The batch script every task runs, relative to the repository root (the submit directory).
pub const TRAIN_SBATCH: &str = "launch/slurm/train.sbatch";

/// One job array, ready to submit.
#[derive(Debug)]
pub struct JobArray {
    /// Where its task files are (or will be).
    pub tasks_dir: PathBuf,
    /// The runs it trains, task 0 first.
    pub runs: Vec<PlannedRun>,
    /// The sbatch command line.
    pub sbatch: Vec<String>,
}

impl JobArray {
    /// The array for `runs` (the unfinished runs of `plan`), named `job_name`, with the user's
    /// own sbatch options.
    pub fn new(
        runs: Vec<PlannedRun>,
        out: &Path,
        job_name: &str,
        sbatch_args: &[String],
    ) -> Result<Self> {
        if runs.is_empty() {
            return Err(Error::Sweep(
                "every run of the sweep is finished: nothing to submit".into(),
            ));
        }
        let tasks_dir = next_submission_dir(&out.join("array"));
        let mut sbatch = vec![
            "sbatch".to_string(),
            "--parsable".into(),
            format!("--array=0-{}", runs.len() - 1),
            format!("--job-name={job_name}"),
            // %A the array's id, %a the task: one log per task, appended to across requeues.
            format!("--output={}/slurm-%A_%a.out", out.display()),
        ];
        sbatch.extend(sbatch_args.iter().cloned());
        sbatch.extend([
            TRAIN_SBATCH.to_string(),
            "--task-args".into(),
            tasks_dir.display().to_string(),
        ]);
        Ok(Self {
            tasks_dir,
            runs,
            sbatch,
        })
    }

    /// Writes the task files and runs sbatch from `repo` (the repository root: train.sbatch
    /// takes its helpers and the binary from its submit directory). Returns the array's job id.
    pub fn submit(&self, plan: &Plan, repo: &Path) -> Result<String> {
        if !repo.join(TRAIN_SBATCH).is_file() {
            return Err(Error::Sweep(format!(
                "no {TRAIN_SBATCH} in {}: run `sagan sweep --slurm` from the repository root",
                repo.display()
            )));
        }
        std::fs::create_dir_all(&self.tasks_dir).at(&self.tasks_dir)?;
        for (i, r) in self.runs.iter().enumerate() {
            let args = plan.train_args(r);
            if let Some(a) = args.iter().find(|a| a.contains('\n')) {
                return Err(Error::Sweep(format!(
                    "a task argument holds a line break: {a:?}"
                )));
            }
            let p = self.tasks_dir.join(format!("{i}.args"));
            std::fs::write(&p, args.join("\n") + "\n").at(&p)?;
        }
        let out = Command::new(&self.sbatch[0])
            .args(&self.sbatch[1..])
            .current_dir(repo)
            .output()
            .map_err(|e| Error::Sweep(format!("running sbatch: {e} (is Slurm installed here?)")))?;
        if !out.status.success() {
            return Err(Error::Sweep(format!(
                "sbatch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // --parsable prints "id" or "id;cluster".
        Ok(id.split(';').next().unwrap_or_default().to_string())
    }
}

/// `<array>/<n>` for the first n not taken.
fn next_submission_dir(array: &Path) -> PathBuf {
    let mut n = 1;
    while array.join(n.to_string()).exists() {
        n += 1;
    }
    array.join(n.to_string())
}
