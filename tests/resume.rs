//! Multi-day runs: exact resume, resume on another world size, preemption by signal, and
//! checkpoints that survive SIGKILL at any moment. Real mpirun, real signals, the real binary.
use std::path::Path;
use std::process::{Command, Stdio};

use sagan::checkpoint::store;
use tch::Tensor;

mod common;
use common::{
    bin, find_rank_pid, kill, logged_steps, ok, scalar_steps, sets, small, train, wait_for,
};

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(sets(
        &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    args
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_bitwise_equal(a: &Path, b: &Path) {
    let (x, y) = (tensors(a), tensors(b));
    assert_eq!(x.len(), y.len(), "{} vs {}", a.display(), b.display());
    for ((na, ta), (nb, tb)) in x.iter().zip(&y) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs: {} vs {}",
            a.display(),
            b.display()
        );
    }
}

/// 20 steps straight and 10 + 10 with a resume between give bitwise the same weights, Adam state
/// and logs, with `extra` settings; returns the straight run's directory (inside `dir`).
fn check_stop_and_resume(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    // Both runs use the same output.dir, so even the config in the files' metadata is the same.
    let (split, straight) = (dir.join("run"), dir.join("straight"));
    let every = [
        &["train.checkpoint_every=10", "train.log_every=1"][..],
        extra,
    ]
    .concat();
    ok(&train(2, &with(small(&split, 20), &every)).output().unwrap());
    std::fs::rename(&split, &straight).unwrap();
    ok(&train(2, &with(small(&split, 10), &every)).output().unwrap());
    let text = ok(&train(2, &with(small(&split, 20), &every))
        .arg("--resume")
        .output()
        .unwrap());
    assert!(
        text.contains("resuming from") && text.contains("step_00000010"),
        "{text}"
    );
    let ckpt = |run: &Path| run.join("checkpoints").join("step_00000020");
    for file in ["G", "D", "G_ema", "adam_G", "adam_D"] {
        let f = format!("{file}.safetensors");
        assert_bitwise_equal(&ckpt(&straight).join(&f), &ckpt(&split).join(&f));
    }
    let state = |run: &Path| store::read_state(&ckpt(run)).unwrap();
    assert_eq!(state(&straight).adam_g_steps, state(&split).adam_g_steps);
    for f in ["G.safetensors", "D.safetensors", "G_ema.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join(f)).unwrap(),
            std::fs::read(split.join(f)).unwrap(),
        );
        assert!(a == b, "final {f} files differ");
    }
    assert_eq!(logged_steps(&split), (1..=20).collect::<Vec<_>>());
    straight
}

#[test]
fn stop_and_resume_equals_the_uninterrupted_run_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    check_stop_and_resume(dir.path(), &[]);
}

/// DiffAugment draws from (seed, step, phase) alone: resume stays exact with it on, and it does
/// change what D sees (the weights differ from the run without it).
#[test]
fn stop_and_resume_is_exact_with_diffaugment_on() {
    let (with_aug, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = check_stop_and_resume(with_aug.path(), &["train.augment=diffaugment"]);
    let b = without.path().join("plain");
    let every = ["train.checkpoint_every=10", "train.log_every=1"];
    ok(&train(2, &with(small(&b, 20), &every)).output().unwrap());
    // Tensors, not bytes: the files' metadata holds output.dir, which differs anyway.
    let g = |run: &Path| tensors(&run.join("G.safetensors"));
    let differ = g(&a).iter().zip(&g(&b)).any(|((_, x), (_, y))| !x.equal(y));
    assert!(differ, "DiffAugment left the training unchanged");
}

#[test]
fn resuming_a_finished_run_rewrites_its_outputs_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = small(dir.path(), 5);
    ok(&train(0, &args).output().unwrap());
    let summary = dir.path().join("summary.json");
    std::fs::remove_file(&summary).unwrap();
    let text = ok(&train(0, &args).arg("--resume").output().unwrap());
    assert!(text.contains("nothing to train"), "{text}");
    assert!(summary.exists());
    let root = dir.path().join("checkpoints");
    assert_eq!(store::list(&root).len(), 1);
    assert_eq!(
        store::read_latest_name(&root).as_deref(),
        Some("step_00000005")
    );
}

#[test]
fn two_ranks_then_one_then_two_continue_one_step_counter() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let every = ["train.checkpoint_every=5", "train.log_every=1"];
    ok(&train(2, &with(small(&run, 8), &every)).output().unwrap());
    let text = ok(&train(0, &with(small(&run, 16), &every))
        .arg("--resume")
        .output()
        .unwrap());
    assert!(
        text.contains("written by 2 rank(s)") && text.contains("now on 1 rank(s)"),
        "{text}"
    );
    assert!(text.contains("steps 9 to 16"), "{text}");
    let text = ok(&train(2, &with(small(&run, 24), &every))
        .arg("--resume")
        .output()
        .unwrap());
    assert!(
        text.contains("written by 1 rank(s)") && text.contains("steps 17 to 24"),
        "{text}"
    );
    assert_eq!(logged_steps(&run), (1..=24).collect::<Vec<_>>());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 24);
    assert_eq!(summary["world_size"], 2);
}

#[test]
fn sigusr1_to_one_rank_checkpoints_exits_75_and_resume_finishes_every_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = with(
        small(&run, 60),
        &["train.checkpoint_every=0", "train.log_every=1"],
    );
    let child = train(2, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120.0, || logged_steps(&run).len() >= 5),
        "training never got going"
    );
    let rank1 = find_rank_pid(child.id(), 1).expect("rank 1");
    kill("-USR1", rank1);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(
        text.contains("SIGUSR1 received (rank 1)") && text.contains("preempted"),
        "{text}"
    );
    let latest = store::read_latest_name(&run.join("checkpoints")).expect("a checkpoint");
    let stopped_at = store::read_state(&run.join("checkpoints").join(&latest))
        .unwrap()
        .step;
    assert!(
        (5..60).contains(&stopped_at),
        "checkpoint at step {stopped_at}"
    );
    ok(&train(2, &args).arg("--resume").output().unwrap());
    assert_eq!(logged_steps(&run), (1..=60).collect::<Vec<_>>());
    assert_eq!(scalar_steps(&run, "loss/D"), (1..=60).collect::<Vec<_>>());
}

/// A tiny deterministic generator for the kill moments (no rand dependency for one test).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_latest_pointing_at_a_broken_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let root = run.join("checkpoints");
    // Checkpoint after every step, so kills land inside writes often.
    let args = with(
        small(&run, 100_000),
        &["train.checkpoint_every=1", "train.keep_checkpoints=2"],
    );
    let mut rng = Lcg(0x5a6a);
    let (mut trials, mut mid_write) = (0, 0);
    while trials < 24 {
        let mut child = Command::new(bin())
            .args(["train", "--config", &common::default_config(), "--resume"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = store::read_latest_name(&root);
        assert!(
            wait_for(120.0, || store::read_latest_name(&root) != before),
            "no new checkpoint within 120 s"
        );
        if trials % 2 == 0 {
            // Aim at a write: wait for a temporary directory to appear, then kill within ~5 ms.
            wait_for(10.0, || {
                std::fs::read_dir(&root)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                    })
                    .unwrap_or(false)
            });
            std::thread::sleep(std::time::Duration::from_micros(
                (rng.next() * 5000.0) as u64,
            ));
        } else {
            std::thread::sleep(std::time::Duration::from_micros(
                (rng.next() * 400_000.0) as u64,
            ));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let leftovers = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"));
        mid_write += usize::from(leftovers);
        let name = store::read_latest_name(&root).expect("latest exists");
        let found = store::load(&root.join(&name)).unwrap_or_else(|e| {
            panic!("trial {trials}: latest names {name}, which does not load: {e}")
        });
        assert_eq!(sagan::checkpoint::step_dir_name(found.state.step), name);
        trials += 1;
    }
    eprintln!("{trials} kills, {mid_write} of them while a checkpoint was being written");
    assert!(
        mid_write >= 3,
        "only {mid_write} kills landed inside a write; the test did not test"
    );
}
