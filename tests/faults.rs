//! Faults and bad input: each ends every rank promptly with a message that says what happened,
//! and nothing that was saved is lost or overwritten. Real mpirun, real signals, a real full disk.
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sagan::checkpoint::store;

mod common;
use common::{
    bin, default_config, descendants, find_rank_pid, is_gone, kill, ok, sets, small, train,
    wait_for,
};

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(sets(
        &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    args
}

/// Runs `cmd` to completion within `secs` (killing it otherwise) and returns its output and how
/// long it took.
fn run_within(mut cmd: Command, secs: u64) -> (Output, Duration) {
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(secs)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    guard.join().unwrap();
    (out, t0.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails with `wanted` in the message, promptly, without C++ frames or a Rust panic.
fn assert_fails_with(cmd: Command, secs: u64, wanted: &[&str]) -> String {
    let (out, took) = run_within(cmd, secs + 30);
    let t = text(&out);
    assert!(!out.status.success(), "succeeded:\n{t}");
    assert!(took < Duration::from_secs(secs), "took {took:?}:\n{t}");
    for w in wanted {
        assert!(t.contains(w), "no {w:?} in:\n{t}");
    }
    assert!(!t.contains("frame #") && !t.contains("panicked"), "{t}");
    t
}

#[test]
fn an_unwritable_output_directory_ends_both_ranks_with_the_message() {
    let args = with(small(Path::new("/proc/forbidden"), 5), &[]);
    assert_fails_with(train(2, &args), 30, &["/proc/forbidden", "rank 0"]);
}

#[test]
fn a_failure_writing_images_or_weights_ends_both_ranks() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where rank 0 will write a sample grid at step 5 makes that write fail.
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("samples_000005.png")).unwrap();
    let args = with(small(&images, 10), &["train.sample_every=5"]);
    assert_fails_with(train(2, &args), 30, &["samples_000005.png"]);
    // The same for the final weights.
    let weights = dir.path().join("weights");
    std::fs::create_dir_all(weights.join("G_ema.safetensors")).unwrap();
    let args = with(small(&weights, 5), &[]);
    assert_fails_with(train(2, &args), 30, &["G_ema.safetensors"]);
}

#[test]
fn nccl_without_a_gpu_fails_on_every_rank_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(small(dir.path(), 5), &["dist.backend=nccl"]);
    assert_fails_with(
        train(2, &args),
        30,
        &["rank 0 on", "rank 1 on", "no visible GPU"],
    );
}

#[test]
fn a_stopped_rank_makes_the_watchdog_end_every_process() {
    a_stopped_rank_ends_the_job(&[]);
}

#[test]
fn a_stopped_rank_ends_the_job_while_all_reduces_overlap_backward() {
    // The other rank then waits in MPI_Waitall on collectives started by backward's hooks.
    a_stopped_rank_ends_the_job(&["dist.overlap=true", "dist.bucket_mb=0.05"]);
}

fn a_stopped_rank_ends_the_job(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let timeout = 5;
    let timeout_set = format!("dist.timeout_s={timeout}");
    let mut sets = vec!["train.log_every=1", timeout_set.as_str()];
    sets.extend(extra);
    let args = with(small(dir.path(), 100_000), &sets);
    let child = train(2, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(120.0, || common::logged_steps(dir.path()).len() >= 3));
    let procs = descendants(child.id());
    let rank1 = find_rank_pid(child.id(), 1).expect("rank 1");
    kill("-STOP", rank1);
    let stopped = Instant::now();
    let limit = Duration::from_secs(timeout + 30);
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(
        stopped.elapsed() < limit,
        "took {:?}:\n{t}",
        stopped.elapsed()
    );
    assert!(!out.status.success(), "{t}");
    assert!(
        wait_for(5.0, || procs.iter().all(|&p| is_gone(p))),
        "processes left behind: {:?}",
        procs.iter().filter(|&&p| !is_gone(p)).collect::<Vec<_>>()
    );
    assert!(t.contains("watchdog: at step"), "{t}");
    assert!(
        t.contains("has not completed after") && t.contains("dist.timeout_s = 5"),
        "{t}"
    );
    assert!(
        ["all-reduce", "all-gather", "broadcast", "barrier"]
            .iter()
            .any(|op| t.contains(op)),
        "{t}"
    );
}

/// A finished 2-checkpoint run in `dir` (steps 5 and 10).
fn two_checkpoints(dir: &Path) -> Vec<String> {
    let args = with(small(dir, 10), &["train.checkpoint_every=5"]);
    ok(&train(0, &args).output().unwrap());
    args
}

#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one_and_says_so() {
    for damage in ["truncated", "corrupted"] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut args = two_checkpoints(&run);
        let g = run.join("checkpoints/step_00000010/G_ema.safetensors");
        let mut bytes = std::fs::read(&g).unwrap();
        if damage == "truncated" {
            bytes.truncate(bytes.len() / 2);
        } else {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
        }
        std::fs::write(&g, bytes).unwrap();
        args.extend(sets(&["train.steps=12".into()]));
        let t = ok(&train(0, &args).arg("--resume").output().unwrap());
        assert!(
            t.contains("skipping") && t.contains("step_00000010") && t.contains(damage),
            "{t}"
        );
        assert!(
            t.contains("resuming from") && t.contains("step_00000005"),
            "{t}"
        );
        assert!(t.contains("steps 6 to 12"), "{t}");
    }
}

#[test]
fn weights_of_another_width_are_refused_naming_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    two_checkpoints(dir.path());
    let g = dir.path().join("G_ema.safetensors");
    let mut cmd = Command::new(bin());
    cmd.args([
        "eval",
        "--config",
        &default_config(),
        "--checkpoint",
        g.to_str().unwrap(),
    ])
    .args(sets(&["model.g_ch=32".into(), "model.z_dim=32".into()]));
    let t = assert_fails_with(
        cmd,
        30,
        &[
            "G_ema tensor attention.1.g.weight",
            "[8, 16, 1, 1] (Float) in the file but [16, 32, 1, 1]",
        ],
    );
    assert_eq!(t.matches("sagan: error").count(), 1, "{t}");
}

#[test]
fn a_config_change_that_breaks_resume_is_refused_and_a_safe_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let args = two_checkpoints(dir.path());
    let bad = with(args.clone(), &["train.lr_d=0.001", "model.g_ch=32"]);
    let mut cmd = train(0, &bad);
    cmd.arg("--resume");
    let default = sagan::config::Config::load(Path::new(&default_config()), &[]).unwrap();
    let lr_d = format!("train.lr_d: {} -> 0.001", default.train.lr_d);
    assert_fails_with(cmd, 30, &["model.g_ch: 16 -> 32", &lr_d, "train.steps"]);
    let fine = with(
        args,
        &["train.steps=12", "train.log_every=1", "eval.every=3"],
    );
    let t = ok(&train(0, &fine).arg("--resume").output().unwrap());
    assert!(t.contains("steps 11 to 12"), "{t}");
}

/// A run whose learning rate diverges in the second step (the seed is fixed), checkpointed at
/// every step, with `extra` settings.
fn diverging(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "train.lr_d=1e10",
        "train.lr_g=1e10",
        "train.checkpoint_every=1",
    ];
    sets.extend_from_slice(extra);
    with(small(dir, 30), &sets)
}

#[test]
fn a_diverged_run_stops_at_its_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let args = diverging(dir.path(), &[]);
    let t = assert_fails_with(
        train(0, &args),
        60,
        &["step 2:", "not finite", "last checkpoint"],
    );
    let root = dir.path().join("checkpoints");
    assert_eq!(
        store::read_latest_name(&root).as_deref(),
        Some("step_00000001"),
        "{t}"
    );
    store::load(&root.join("step_00000001")).unwrap();
}

/// Under bf16 autocast the same divergence skips steps instead of stopping at the first: each
/// skipped step leaves G, D, G_ema and both Adams exactly as the step before left them (D's update
/// of that step undone too), is counted, and five in a row stop the run as diverged.
#[test]
fn under_autocast_a_non_finite_step_is_undone_for_g_and_d_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let args = diverging(
        dir.path(),
        &[
            "train.log_every=1",
            "train.keep_checkpoints=100",
            "train.autocast=\"bf16\"",
        ],
    );
    let t = assert_fails_with(
        train(0, &args),
        90,
        &[
            "skipped step in a row",
            "training diverged",
            "under train.autocast",
        ],
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("stats").is_some())
        .collect();
    let first = lines
        .iter()
        .find(|v| v["stats"]["skipped"] == true)
        .unwrap_or_else(|| panic!("no skipped step logged:\n{t}"));
    let k = first["step"].as_i64().unwrap();
    assert!(k >= 2, "step {k} skipped before any finite step:\n{t}");
    assert_eq!(first["skipped_steps"], 1, "{first}");
    assert!(
        t.contains("the step is skipped for G and D together (1 skipped so far)"),
        "{t}"
    );
    let root = dir.path().join("checkpoints");
    let (before, after) = (
        root.join(format!("step_{:08}", k - 1)),
        root.join(format!("step_{k:08}")),
    );
    let (a, b) = (store::load(&before).unwrap(), store::load(&after).unwrap());
    assert_eq!(a.state.adam_d_steps, b.state.adam_d_steps);
    assert_eq!(a.state.adam_g_steps, b.state.adam_g_steps);
    assert_eq!(b.state.skipped_steps, 1);
    for file in ["G", "D", "G_ema", "adam_G", "adam_D"] {
        let read = |d: &Path| {
            let mut v =
                tch::Tensor::read_safetensors(d.join(format!("{file}.safetensors"))).unwrap();
            v.sort_by(|p, q| p.0.cmp(&q.0));
            v
        };
        let (x, y) = (read(&before), read(&after));
        assert_eq!(x.len(), y.len());
        for ((n, tx), (m, ty)) in x.iter().zip(&y) {
            assert_eq!(n, m);
            assert!(tx.equal(ty), "{file}.{n} changed in skipped step {k}");
        }
    }
}

#[test]
fn a_run_directory_is_never_overwritten_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let args = two_checkpoints(dir.path());
    let before = std::fs::read(dir.path().join("G.safetensors")).unwrap();
    assert_fails_with(
        train(0, &args),
        30,
        &[
            "already holds a run checkpointed at step 10",
            "--resume",
            "--overwrite",
        ],
    );
    assert_eq!(
        std::fs::read(dir.path().join("G.safetensors")).unwrap(),
        before
    );
    let t = ok(&train(0, &args).arg("--overwrite").output().unwrap());
    assert!(t.contains("--overwrite: deleting"), "{t}");
    assert_eq!(common::logged_steps(dir.path()), vec![10]);
}

/// A full disk while a checkpoint is written: the run stops saying so, and the previous checkpoint
/// stays complete and named by `latest`. Needs root for the small tmpfs.
#[test]
fn a_full_disk_keeps_the_previous_checkpoint_usable() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let ckpts = run.join("checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    // Room for one checkpoint of this model (about 0.7 MB) but not two.
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1200k",
            "tmpfs",
            ckpts.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        panic!("cannot mount a tmpfs (this test needs root, as CI has)");
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(ckpts.clone());
    let args = with(small(&run, 10), &["train.checkpoint_every=2"]);
    let mut cmd = train(2, &args);
    cmd.arg("--resume");
    assert_fails_with(
        cmd,
        60,
        &[
            "No space left on device",
            "the previous checkpoint step_00000002 is intact",
        ],
    );
    assert_eq!(
        store::read_latest_name(&ckpts).as_deref(),
        Some("step_00000002")
    );
    store::load(&ckpts.join("step_00000002")).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&ckpts)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left on the full disk"
    );
}
