//! Running a sweep's runs one after another on this machine, each a `sagan train` child process
//! (under mpirun for more than one rank). Finished runs are skipped and a checkpointed one is
//! resumed, so a sweep that was stopped continues where it was when started again.
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::plan::{Plan, PlannedRun, RunState};
use crate::error::{Error, IoContext, Result};

/// The exit code of a run that checkpointed on a signal (`sagan train`'s own).
const PREEMPTED: i32 = 75;

/// What a local sweep ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    pub finished: usize,
    pub skipped: usize,
    /// Runs whose `sagan train` failed, with its exit status.
    pub failed: Vec<(String, String)>,
    /// The run that a signal stopped (checkpointed); the sweep stopped with it.
    pub interrupted: Option<String>,
}

/// How each run is started.
pub struct Launch<'a> {
    pub exe: &'a Path,
    /// Ranks per run: 1 runs `sagan train` itself, more run it under `mpirun -np N`.
    pub ranks: usize,
}

/// Runs every unfinished run of `plan` in order. SIGINT, SIGTERM or SIGUSR1 to the sweep is
/// passed to the running training as SIGUSR1 (checkpoint and exit 75), and the sweep stops.
pub fn run(plan: &Plan, launch: &Launch) -> Result<Outcome> {
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM, SIGUSR1] {
        signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
            .map_err(|e| Error::Sweep(format!("installing signal handlers: {e}")))?;
    }
    let mut outcome = Outcome::default();
    let total = plan.runs.len();
    for (i, r) in plan.runs.iter().enumerate() {
        let state = r.state();
        let what = match state {
            RunState::Finished => {
                println!(
                    "sweep [{}/{total}] {}: finished before, skipped",
                    i + 1,
                    r.name
                );
                outcome.skipped += 1;
                continue;
            }
            RunState::Checkpointed(step) => format!("resuming from step {step}"),
            RunState::NotStarted => "starting".to_string(),
        };
        println!(
            "sweep [{}/{total}] {}: {what} ({})",
            i + 1,
            r.name,
            r.dir.display()
        );
        if signal.load(Ordering::SeqCst) != 0 {
            outcome.interrupted = Some(r.name.clone());
            break;
        }
        let mut child = command(plan, r, launch)
            .spawn()
            .map_err(|e| Error::Sweep(format!("starting {}: {e}", launch.exe.display())))?;
        let status = wait_passing_signals(&mut child, &signal)?;
        match status.code() {
            Some(0) => outcome.finished += 1,
            Some(PREEMPTED) => {
                outcome.interrupted = Some(r.name.clone());
                break;
            }
            _ => {
                println!(
                    "sweep [{}/{total}] {}: failed ({status}); going on with the next",
                    i + 1,
                    r.name
                );
                outcome.failed.push((r.name.clone(), status.to_string()));
            }
        }
        if signal.load(Ordering::SeqCst) != 0 {
            outcome.interrupted = Some(r.name.clone());
            break;
        }
    }
    Ok(outcome)
}

/// `sagan train --config <base> --set ... --resume`, under mpirun for more than one rank.
pub fn command(plan: &Plan, r: &PlannedRun, launch: &Launch) -> Command {
    let mut cmd = if launch.ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &launch.ranks.to_string()]);
        c.arg(launch.exe);
        c
    } else {
        Command::new(launch.exe)
    };
    cmd.arg("train").args(plan.train_args(r));
    // A new run starts fresh through --resume as well (it says so).
    cmd.arg("--resume");
    cmd
}

fn wait_passing_signals(
    child: &mut Child,
    signal: &AtomicUsize,
) -> Result<std::process::ExitStatus> {
    let mut passed = false;
    loop {
        if let Some(status) = child.try_wait().at("sagan train (child)")? {
            return Ok(status);
        }
        if !passed && signal.load(Ordering::SeqCst) != 0 {
            // The child checkpoints on SIGUSR1 (mpirun passes it to every rank). std has no
            // kill(2) with a signal other than SIGKILL, and kill(1) is always there.
            let _ = Command::new("kill")
                .args(["-USR1", &child.id().to_string()])
                .status();
            passed = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
