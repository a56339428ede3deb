//! `sagan sweep`: expand a grid over seeds and train it here or as a Slurm job array.
use crate::cli::SweepArgs;
use crate::error::{Error, IoContext, Result};
use crate::experiments::job_array::JobArray;
use crate::experiments::local::{self, Launch};
use crate::experiments::plan::{Plan, RunState};

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
    let unfinished: Vec<_> = plan
        .runs
        .iter()
        .filter(|r| r.state() != RunState::Finished)
        .cloned()
        .collect();
    if a.dry_run {
        for r in &plan.runs {
            let state = match r.state() {
                RunState::Finished => "finished".to_string(),
                RunState::Checkpointed(s) => format!("checkpointed at step {s}"),
                RunState::NotStarted => "not started".to_string(),
            };
            println!("  {}  [{state}]  {}", r.name, r.sets.join(" "));
        }
        if a.slurm {
            let job = JobArray::new(unfinished, &a.out, &job_name(&a.out), &a.sbatch_args)?;
            println!("would submit: {}", job.sbatch.join(" "));
            println!(
                "  (task i runs `sagan train` with the arguments in {}/i.args)",
                job.tasks_dir.display()
            );
        } else {
            for r in &unfinished {
                let cmd = local::command(&plan, r, &launch);
                let words: Vec<String> = std::iter::once(cmd.get_program())
                    .chain(cmd.get_args())
                    .map(|w| w.to_string_lossy().into_owned())
                    .collect();
                println!("would run: {}", words.join(" "));
            }
        }
        return Ok(0);
    }
    plan.record(&a.out)?;
    if a.slurm && unfinished.is_empty() {
        println!(
            "sweep: every run is finished; nothing to submit. Compare them: sagan compare {}",
            a.out.display()
        );
        return Ok(0);
    }
    if a.slurm {
        let job = JobArray::new(unfinished, &a.out, &job_name(&a.out), &a.sbatch_args)?;
        let repo = std::env::current_dir().at(".")?;
        let id = job.submit(&plan, &repo)?;
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
        return Ok(0);
    }
    let outcome = local::run(&plan, &launch)?;
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
        println!("sweep: stopped by a signal during {name} (checkpointed): run the same command again to continue");
        return Ok(75);
    }
    if !outcome.failed.is_empty() {
        return Err(Error::Sweep(format!(
            "{} of {} run(s) failed; their logs are above, their directories under {}",
            outcome.failed.len(),
            plan.runs.len(),
            a.out.display()
        )));
    }
    println!(
        "sweep: done; compare the arms with `sagan compare {}`",
        a.out.display()
    );
    Ok(0)
}

/// The job array's name: the sweep directory's.
fn job_name(out: &std::path::Path) -> String {
    out.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into())
}
