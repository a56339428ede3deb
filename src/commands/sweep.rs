//! `sagan sweep`: expand a grid over seeds and train it here or as a Slurm job array.
use std::path::Path;

use crate::cli::SweepArgs;
use crate::error::{Error, IoContext, Result};
use crate::experiments::job_array::JobArray;
use crate::experiments::local::{self, Launch};
use crate::experiments::plan::{Plan, PlannedRun, RunState};

pub fn run(a: SweepArgs) -> Result<u8> {
    let plan = Plan::new(&a.config, &a.grid, a.seeds, &a.overrides, &a.out)?;
    let exe = std::env::current_exe().at("the running sagan binary")?;
    let launch = Launch {
        exe: &exe,
        ranks: a.ranks.max(1),
    };
    println!(
        "sweep: {} arm(s) x {} seed(s) = {} run(s) of {} in {}",
        plan.arms.len(),
        plan.seeds.len(),
        plan.runs.len(),
        plan.base.display(),
        a.out.display()
    );
    let states: Vec<RunState> = plan.runs.iter().map(PlannedRun::state).collect();
    let unfinished: Vec<PlannedRun> = plan
        .runs
        .iter()
        .zip(&states)
        .filter(|(_, s)| **s != RunState::Finished)
        .map(|(r, _)| r.clone())
        .collect();
    if a.dry_run {
        return dry_run(&a, &plan, &states, unfinished, &launch);
    }
    plan.record(&a.out)?;
    if a.slurm {
        return submit(&a, &plan, unfinished);
    }
    run_here(&a.out, &plan, &launch)
}

/// Every run with its state, and what would train the unfinished ones.
fn dry_run(
    a: &SweepArgs,
    plan: &Plan,
    states: &[RunState],
    unfinished: Vec<PlannedRun>,
    launch: &Launch,
) -> Result<u8> {
    for (r, state) in plan.runs.iter().zip(states) {
        let state = match state {
            RunState::Finished => "finished".to_string(),
            RunState::Checkpointed(s) => format!("checkpointed at step {s}"),
            RunState::NotStarted => "not started".to_string(),
        };
        println!("  {}  [{state}]  {}", r.name, r.sets.join(" "));
    }
    if a.slurm {
        if unfinished.is_empty() {
            println!("every run is finished: nothing would be submitted");
            return Ok(0);
        }
        let job = JobArray::new(unfinished, &a.out, &job_name(&a.out), &a.sbatch_args)?;
        println!("would submit: {}", job.sbatch.join(" "));
        println!(
            "  (task i runs `sagan train` with the arguments in {}/i.args)",
            job.tasks_dir.display()
        );
        return Ok(0);
    }
    for r in &unfinished {
        let cmd = local::command(plan, r, launch);
        let words: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        println!("would run: {}", words.join(" "));
    }
    Ok(0)
}

/// One job array of the unfinished runs, submitted from the current directory.
fn submit(a: &SweepArgs, plan: &Plan, unfinished: Vec<PlannedRun>) -> Result<u8> {
    if unfinished.is_empty() {
        println!(
            "sweep: every run is finished; nothing to submit. Compare them: sagan compare {}",
            a.out.display()
        );
        return Ok(0);
    }
    let job = JobArray::new(unfinished, &a.out, &job_name(&a.out), &a.sbatch_args)?;
    let repo = std::env::current_dir().at(".")?;
    let id = job.submit(plan, &repo)?;
    println!(
        "sweep: submitted job array {id} ({} task(s)): {}",
        job.runs.len(),
        job.sbatch.join(" ")
    );
    for (i, r) in job.runs.iter().enumerate() {
        println!("  task {i}: {} -> {}", r.name, r.dir.display());
    }
    println!(
        "sweep: squeue -j {id} to watch; sagan compare {} when they are done",
        a.out.display()
    );
    Ok(0)
}

/// The runs one after another here; 75 when a signal stopped one (run the command again).
fn run_here(out: &Path, plan: &Plan, launch: &Launch) -> Result<u8> {
    let outcome = local::run(plan, launch)?;
    println!(
        "sweep: {} run(s) trained, {} finished before, {} failed",
        outcome.finished,
        outcome.skipped,
        outcome.failed.len()
    );
    for (name, status) in &outcome.failed {
        println!("  failed: {name} ({status})");
    }
    if let Some(name) = outcome.interrupted {
        println!(
            "sweep: stopped by a signal during {name} (checkpointed): run the same command again to continue"
        );
        return Ok(75);
    }
    if !outcome.failed.is_empty() {
        return Err(Error::Sweep(format!(
            "{} of {} run(s) failed; their logs are above, their directories under {}",
            outcome.failed.len(),
            plan.runs.len(),
            out.display()
        )));
    }
    println!(
        "sweep: done; compare the arms with `sagan compare {}`",
        out.display()
    );
    Ok(0)
}

/// The job array's name: the sweep directory's.
fn job_name(out: &Path) -> String {
    out.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into())
}
