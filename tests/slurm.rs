//! The real `launch/slurm/train.sbatch`, submitted with the real `sbatch` to a real single-node
//! Slurm (Debian's slurm-wlm, started per test by `tests/infra/local-slurm.sh` under a temp
//! dir, stopped by a Drop guard whatever happens), training a tiny CPU model with 2 tasks.
//!
//! Without Slurm installed (scripts/setup.sh installs it) these tests say so loudly on stderr
//! and return; with SAGAN_REQUIRE_SLURM=1 (scripts/test.sh sets it) they fail instead.
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::bin;
use common::slurm::{text, Cluster};
use common::slurm_job::Job;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Tiny CPU training, 2 tasks on the single node: about 0.3 s a step on 2 shared cores.
fn submit<'a>(
    cluster: &'a Cluster,
    name: &str,
    launcher: &str,
    steps: i64,
    extra: &[&str],
) -> Job<'a> {
    submit_with(cluster, name, launcher, steps, extra, &[])
}

/// As `submit`, with more sbatch options (later ones override the defaults).
fn submit_with<'a>(
    cluster: &'a Cluster,
    name: &str,
    launcher: &str,
    steps: i64,
    extra: &[&str],
    sbatch_opts: &[&str],
) -> Job<'a> {
    let submit = tempfile::Builder::new()
        .prefix("sagan-submit-")
        .tempdir()
        .unwrap();
    // The job runs in its submit directory and finds launch/mpirun.sh there, as in a checkout.
    std::os::unix::fs::symlink(repo().join("launch"), submit.path().join("launch")).unwrap();
    let mut sets: Vec<String> = vec![
        format!("train.steps={steps}"),
        "train.log_every=1".into(),
        "train.sample_every=10".into(),
        "train.checkpoint_every=10".into(),
        "model.g_ch=16".into(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "dist.sync_check_every=10".into(),
        "eval.enabled=false".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut opts = vec![
        "-J",
        name,
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--time=10",
    ];
    opts.extend(sbatch_opts);
    let id = cluster.sbatch_train(submit.path(), launcher, &opts, &sets);
    Job {
        cluster,
        submit: submit.path().to_path_buf(),
        name: name.to_string(),
        id,
        steps,
        owned_dir: Some(submit),
    }
}

#[test]
fn a_batch_job_trains_to_the_end_with_checkpoints_events_and_samples() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let t0 = Instant::now();
    let job = submit(&cluster, "sagan-complete", "srun", 20, &[]);
    let end = job.wait_end(150);
    let log = job.log();
    assert_eq!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    assert_eq!(end["ExitCode"], "0:0", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "0", "{}", job.diagnose());
    for want in [
        "srun --mpi=pmix --kill-on-bad-exit=1",
        "--resume",
        "sagan: 2 rank(s), backend mpi",
        "tensorboard --logdir",
        "training finished",
    ] {
        assert!(log.contains(want), "job log lacks {want:?}:\n{log}");
    }
    // One run directory per job name, in the submit directory.
    let run = job.run_dir();
    assert_eq!(job.latest_checkpoint(), "step_00000020");
    for f in [
        "checkpoints/step_00000010",
        "checkpoints/step_00000020",
        "samples.png",
        "samples_000010.png",
        "G_ema.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing in {}", run.display());
    }
    job.assert_every_step_once();
    assert_eq!(job.assert_one_continuous_tensorboard_run(), 1);
    eprintln!("slurm: a 20-step job took {:?}", t0.elapsed());
}

#[test]
fn usr1_to_the_ranks_checkpoints_requeues_and_every_step_runs_once() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let t0 = Instant::now();
    // Checkpoints every 1000 steps: the one the requeued job resumes from is the preemption's.
    let job = submit(
        &cluster,
        "sagan-preempt",
        "srun",
        24,
        &["train.checkpoint_every=1000"],
    );
    job.wait_for_step(8);
    // What a scheduler's warning does without B: (and what a user types): SIGUSR1 to the steps.
    let out = cluster
        .cmd("scancel")
        .args(["--signal=USR1", &job.id])
        .output()
        .unwrap();
    assert!(out.status.success(), "scancel: {}", text(&out));
    let end = job.wait_end(150);
    let log = job.log();
    assert_eq!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "1", "{}", job.diagnose());
    assert!(log.contains("requeued job"), "{log}");
    assert_eq!(
        log.matches("restart 1,").count(),
        1,
        "the requeued job ran once: {log}"
    );
    // The first job stopped mid-run at a checkpoint, the second resumed from it.
    let first_stop = std::fs::read_dir(job.run_dir().join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("step_")?.parse::<i64>().ok())
        .filter(|&s| s < job.steps)
        .collect::<Vec<_>>();
    assert_eq!(first_stop.len(), 1, "{first_stop:?}\n{}", job.diagnose());
    assert!(first_stop[0] >= 8, "{first_stop:?}");
    job.assert_every_step_once();
    assert!(job.assert_one_continuous_tensorboard_run() >= 2);
    eprintln!(
        "slurm: preempted at step {}, requeued and finished in {:?}",
        first_stop[0],
        t0.elapsed()
    );
}

#[test]
fn mpirun_mode_the_batch_shells_warning_reaches_the_ranks_and_requeues() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let t0 = Instant::now();
    let job = submit(
        &cluster,
        "sagan-mpirun",
        "mpirun",
        20,
        &["train.checkpoint_every=1000"],
    );
    job.wait_for_step(6);
    // What `#SBATCH --signal=B:USR1@T` does before the time limit: SIGUSR1 to the batch shell
    // only, which passes it to launch/mpirun.sh, which passes it to mpirun, which forwards it.
    let out = cluster
        .cmd("scancel")
        .args(["--batch", "--signal=USR1", &job.id])
        .output()
        .unwrap();
    assert!(out.status.success(), "scancel: {}", text(&out));
    let end = job.wait_end(150);
    let log = job.log();
    assert_eq!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "1", "{}", job.diagnose());
    for want in [
        "launcher mpirun",
        "SIGUSR1: asking every rank to checkpoint",
        "requeued job",
    ] {
        assert!(log.contains(want), "job log lacks {want:?}:\n{log}");
    }
    job.assert_every_step_once();
    job.assert_one_continuous_tensorboard_run();
    eprintln!(
        "slurm: mpirun mode, requeued and finished in {:?}",
        t0.elapsed()
    );
}

#[test]
fn scancel_checkpoints_and_does_not_requeue() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // mpirun mode: Slurm sends SIGTERM to every process of the job, mpirun included; the
    // wrapper keeps mpirun from killing the ranks before their checkpoint.
    let job = submit(
        &cluster,
        "sagan-cancel",
        "mpirun",
        1000,
        &["train.checkpoint_every=1000"],
    );
    job.wait_for_step(6);
    let seen = *job.logged_steps().last().unwrap();
    let out = cluster.cmd("scancel").arg(&job.id).output().unwrap();
    assert!(out.status.success(), "scancel: {}", text(&out));
    let end = job.wait_end(150);
    let log = job.log();
    assert_eq!(end["JobState"], "CANCELLED", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "0", "{}", job.diagnose());
    assert!(
        log.contains("the job was cancelled, so it is not requeued"),
        "{log}"
    );
    let latest = job.latest_checkpoint();
    let step: i64 = latest.strip_prefix("step_").unwrap().parse().unwrap();
    assert!(
        step >= seen && step < job.steps,
        "checkpoint {latest} after step {seen} was seen\n{}",
        job.diagnose()
    );
    assert!(job.run_dir().join("checkpoints").join(&latest).is_dir());
}

#[test]
fn stopping_the_cluster_ends_its_daemons_and_running_jobs() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let srun = submit(&cluster, "sagan-stop-srun", "srun", 100_000, &[]);
    srun.wait_for_step(2);
    let before = cluster.processes();
    // munged has its own environment; the Slurm daemons, slurmstepd, batch shell, srun, ranks.
    for want in [
        "slurmctld",
        "slurmd",
        "slurmstepd",
        "slurm_script",
        "srun",
        "sagan train",
    ] {
        assert!(
            before.iter().any(|(_, c)| c.contains(want)),
            "no {want} among {before:#?}"
        );
    }
    let out = Command::new("bash")
        .arg(repo().join("tests/infra/local-slurm.sh"))
        .arg("stop")
        .arg(cluster.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let after = cluster.processes();
    assert!(after.is_empty(), "left running: {after:#?}");
    let munged = std::fs::read_to_string(cluster.dir.path().join("munged.pid"));
    assert!(munged.is_err(), "munged.pid still there: {munged:?}");
}

/// srun exits 0 when its tasks fail to launch (Slurm 22.05, a PMIx error here): the batch script
/// must not call that a finished run. The failure is provoked with the PMIx client directory of
/// the cluster's first step already present.
#[test]
fn a_step_that_never_launched_is_a_failure_not_a_finished_run() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    let first = cluster.first_job_id();
    std::fs::create_dir_all(
        cluster
            .dir
            .path()
            .join(format!("pmix/spmix_appdir_{}_{first}.0", uid.trim())),
    )
    .unwrap();
    let job = submit(&cluster, "sagan-nolaunch", "srun", 5, &[]);
    assert_eq!(job.id, first);
    let end = job.wait_end(150);
    let log = job.log();
    assert!(log.contains("launch failed"), "{}", job.diagnose());
    assert!(
        log.contains("summary.json was not written: did the ranks start?"),
        "{}",
        job.diagnose()
    );
    assert_eq!(end["JobState"], "FAILED", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "0", "{}", job.diagnose());
}

/// Two jobs of one name would train into one directory at once: the second one refuses.
#[test]
fn a_second_job_of_the_same_name_refuses_to_run_beside_the_first() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let one_task = ["--ntasks-per-node=1"];
    let first = submit_with(&cluster, "sagan-twice", "srun", 100_000, &[], &one_task);
    first.wait_for_step(2);
    let second = submit_with(&cluster, "sagan-twice", "srun", 100_000, &[], &one_task);
    let end = second.wait_end(150);
    assert_eq!(end["JobState"], "FAILED", "{}", second.diagnose());
    let log = second.log();
    assert!(
        log.contains(&format!(
            "job(s) {} named 'sagan-twice' already running",
            first.id
        )),
        "{log}"
    );
    assert!(!log.contains("running: srun"), "{log}");
    assert_eq!(cluster.job(&first.id)["JobState"], "RUNNING");
}

/// Waits until the array task `id` is in a final state; returns scontrol's view of it.
fn wait_task_end(cluster: &Cluster, id: &str, log: &dyn Fn() -> String) -> HashMap<String, String> {
    let t0 = Instant::now();
    loop {
        let j = cluster.job(id);
        let state = j.get("JobState").cloned().unwrap_or_default();
        if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"].contains(&state.as_str()) {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(200),
            "task {id} did not end in 200 s: {j:?}\n{}\n{}",
            log(),
            cluster.daemon_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_sweep_runs_as_one_job_array_and_a_preempted_task_requeues_and_resumes() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let t0 = Instant::now();
    let submit = tempfile::Builder::new()
        .prefix("sagan-sweep-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::symlink(repo().join("launch"), submit.path().join("launch")).unwrap();
    let grid = submit.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[[arm]]\nname = \"g16\"\nset = { \"model.g_ch\" = 16 }\n[[arm]]\nname = \"g8\"\nset = { \"model.g_ch\" = 8 }\n",
    )
    .unwrap();
    let out = submit.path().join("sw");
    let steps = 24;
    let sweep = |extra: &[&str]| {
        let mut c = cluster.cmd(bin());
        c.current_dir(submit.path())
            .env("SAGAN_BIN", bin())
            .env("SAGAN_LAUNCHER", "srun")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .args(["sweep", "--config"])
            .arg(repo().join("configs/fmnist32.toml"))
            .arg("--grid")
            .arg(&grid)
            .arg("--out")
            .arg(&out)
            .args([
                "--slurm",
                "--sbatch-arg=--ntasks-per-node=1",
                "--sbatch-arg=--cpus-per-task=1",
            ])
            .args(["--sbatch-arg=--time=10"]);
        for s in [
            format!("train.steps={steps}"),
            "train.log_every=1".into(),
            "train.sample_every=0".into(),
            "train.checkpoint_every=1000".into(),
            "model.d_ch=16".into(),
            "model.z_dim=32".into(),
            "train.batch_size=16".into(),
            "eval.enabled=false".into(),
        ] {
            c.arg("--set").arg(s);
        }
        c.args(extra);
        c.output().unwrap()
    };
    let o = sweep(&[]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    let id = said
        .split("submitted job array ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job array id in:\n{said}"))
        .to_string();
    assert!(said.contains("--array=0-1"), "{said}");
    let task_log = |t: usize| {
        std::fs::read_to_string(out.join(format!("slurm-{id}_{t}.out")))
            .unwrap_or_else(|e| format!("<no log of task {t}: {e}>"))
    };
    let first = out.join("g16/seed0");
    let t1 = Instant::now();
    while common::logged_steps(&first).last().copied().unwrap_or(0) < 6 {
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "task 0 never logged step 6\n{}\n{}",
            task_log(0),
            cluster.daemon_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = cluster
        .cmd("scancel")
        .args(["--signal=USR1", &format!("{id}_0")])
        .output()
        .unwrap();
    assert!(o.status.success(), "scancel: {}", text(&o));
    for t in 0..2 {
        let end = wait_task_end(&cluster, &format!("{id}_{t}"), &|| task_log(t));
        assert_eq!(
            end["JobState"],
            "COMPLETED",
            "task {t}: {end:?}\n{}",
            task_log(t)
        );
        assert_eq!(
            end["Restarts"],
            if t == 0 { "1" } else { "0" },
            "task {t}\n{}",
            task_log(t)
        );
        assert!(
            task_log(t).contains(&format!("array task {t} of job {id}")),
            "{}",
            task_log(t)
        );
    }
    assert!(task_log(0).contains("requeued job"), "{}", task_log(0));
    for (run, g_ch) in [("g16/seed0", 16), ("g8/seed0", 8)] {
        let d = out.join(run);
        assert_eq!(
            common::logged_steps(&d),
            (1..=steps).collect::<Vec<_>>(),
            "{run}\n{}",
            task_log(0)
        );
        assert!(d.join("summary.json").is_file(), "{run}");
        let cfg = std::fs::read_to_string(d.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("g_ch = {g_ch}")), "{run}: {cfg}");
    }
    let again = sweep(&[]);
    assert!(
        text(&again).contains("every run is finished; nothing to submit"),
        "{}",
        text(&again)
    );
    eprintln!(
        "slurm: a two-arm sweep array with one preempted task took {:?}",
        t0.elapsed()
    );
}
