//! Data parallelism under a real mpirun with real ranks (CPU, MPI backend).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

mod common;
use common::{bin, default_config, find_rank_pid, is_gone, mpirun, ok, small, wait_for};

fn example(name: &str) -> PathBuf {
    // Examples are built by `cargo test` next to the test binaries' parent directory.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

fn sorted(mut v: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Trains 2 ranks for `steps` steps with `sets` and returns rank 0's dumped state and the run's
/// output, after
/// checking that every dumped tensor (weights, G_ema, Adam moments, u vectors, BN statistics) is
/// bitwise the same on both ranks and that no periodic check had to repair a drift.
fn train_and_check_replicas(
    dir: &std::path::Path,
    steps: i64,
    sets: &[&str],
) -> (Vec<(String, Tensor)>, String) {
    let mut args = small(dir, steps);
    args.extend(["--set".into(), "dist.dump_rank_state=true".into()]);
    for s in sets {
        args.extend(["--set".into(), s.to_string()]);
    }
    let out = mpirun(2)
        .arg(bin())
        .args(["train", "--config", &default_config()])
        .args(&args)
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("2 rank(s), backend mpi"), "{text}");
    // The periodic checks re-broadcast whatever differs, which would hide drift from the
    // comparison below: none may have been needed.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["resyncs"], 0, "ranks drifted apart: {summary}");
    let load = |r: usize| {
        sorted(
            Tensor::read_safetensors(dir.join(format!("rank_state/rank{r}.safetensors"))).unwrap(),
        )
    };
    let (a, b) = (load(0), load(1));
    assert_eq!(a.len(), b.len());
    let kinds = [
        "G.",
        "D.",
        "G_ema.",
        "adam_G.exp_avg.",
        "adam_D.exp_avg_sq.",
        "weight_u",
        "running_var",
    ];
    for k in kinds {
        assert!(
            a.iter().any(|(n, _)| n.contains(k)),
            "no {k} tensors in the dump"
        );
    }
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between rank 0 and rank 1");
    }
    // The ranks did train on different data: the moments are not trivially zero.
    let m = a
        .iter()
        .find(|(n, _)| n.starts_with("adam_D.exp_avg."))
        .unwrap();
    assert!(m.1.abs().sum(tch::Kind::Double).double_value(&[]) > 0.0);
    (a, text)
}

#[test]
fn replicas_stay_bitwise_identical_over_30_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = train_and_check_replicas(dir.path(), 30, &[]);
    assert!(
        text.contains("for D of up to 25 MiB, after backward"),
        "{text}"
    );
}

#[test]
fn bf16_autocast_trains_in_bf16_and_keeps_replicas_bitwise_identical() {
    let (fp32, bf16) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = train_and_check_replicas(fp32.path(), 8, &[]);
    let (b, _) = train_and_check_replicas(bf16.path(), 8, &["train.autocast=\"bf16\""]);
    // Same seed, same data: only the forwards' precision differs, and it shows in the weights,
    // which stay fp32 and finite.
    let mut differ = 0;
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!((na, ta.kind()), (nb, tb.kind()));
        assert!(
            bool::try_from(tb.isfinite().all()).unwrap(),
            "{nb} is not finite under bf16"
        );
        if na.starts_with("G.") && !ta.equal(tb) {
            differ += 1;
        }
    }
    assert!(
        differ > 0,
        "bf16 autocast left every weight of G as fp32 made it"
    );
}

/// tcmalloc, the default, is what the ranks run on (the binary restarts itself on it under
/// mpirun; scripts/setup.sh installs it), and it changes where tensors live, not one bit of the
/// training: every weight, moment and buffer equals a run's on glibc's map-large.
#[test]
fn tcmalloc_serves_the_ranks_and_changes_no_bit() {
    let (tc, glibc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, text) = train_and_check_replicas(tc.path(), 4, &[]);
    assert!(
        text.contains("CPU tensors allocated by tcmalloc"),
        "not on tcmalloc (apt install libtcmalloc-minimal4):\n{text}"
    );
    let (b, text) = train_and_check_replicas(glibc.path(), 4, &["train.host_memory=\"map-large\""]);
    assert!(
        text.contains("CPU tensors allocated by glibc map-large"),
        "{text}"
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between tcmalloc and glibc");
    }
}

/// Without the library the run goes on glibc's map-large, and rank 0 says why.
#[test]
fn a_missing_tcmalloc_falls_back_to_map_large_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpirun(2)
        .env("SAGAN_TCMALLOC", "/nonexistent/libtcmalloc_minimal.so.4")
        .arg(bin())
        .args(["bench-train", "--config", &default_config()])
        .args(small(dir.path(), 10))
        .args(["--warmup", "0", "--steps", "1"])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(
        text.contains(
            "train.host_memory = \"tcmalloc\": SAGAN_TCMALLOC=/nonexistent/libtcmalloc_minimal.so.4 \
             is not a file; CPU tensors use \"map-large\" instead"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("is not a file").count(),
        1,
        "rank 0 only: {text}"
    );
    assert!(text.contains("\"allocator\":\"glibc map-large\""), "{text}");
}

#[test]
fn overlapping_the_all_reduce_with_backward_changes_no_bit() {
    let (after, during) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two D steps per iteration: the hooks are armed for every backward of the step.
    let (a, _) = train_and_check_replicas(after.path(), 6, &["train.d_steps=2"]);
    // Small buckets, so that most start while backward is still running.
    let (b, text) = train_and_check_replicas(
        during.path(),
        6,
        &[
            "train.d_steps=2",
            "dist.overlap=true",
            "dist.bucket_mb=0.05",
        ],
    );
    let plan = text
        .lines()
        .find(|l| l.contains("gradients all-reduced in"))
        .unwrap_or_else(|| panic!("no gradient plan in:\n{text}"));
    assert!(plan.contains("started during backward"), "{plan}");
    let g_buckets: usize = plan
        .split(" in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        g_buckets >= 3,
        "too few buckets to overlap anything: {plan}"
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs when all-reduced during backward"
        );
    }
}

#[test]
fn two_ranks_average_to_the_single_rank_gradient_on_the_joint_batch() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.safetensors");
    let one = dir.path().join("one.safetensors");
    ok(&mpirun(2)
        .arg(example("dist_probe"))
        .args(["grad-equivalence", two.to_str().unwrap(), "8"])
        .output()
        .unwrap());
    ok(&mpirun(1)
        .arg(example("dist_probe"))
        .args(["grad-equivalence", one.to_str().unwrap(), "16"])
        .output()
        .unwrap());
    let (a, b) = (
        sorted(Tensor::read_safetensors(&two).unwrap()),
        sorted(Tensor::read_safetensors(&one).unwrap()),
    );
    assert!(!a.is_empty());
    for ((na, ga), (nb, gb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let scale = gb.abs().max().double_value(&[]).max(1e-12);
        let diff = (ga - gb).abs().max().double_value(&[]);
        assert!(
            diff / scale <= 1e-5,
            "{na}: relative difference {}",
            diff / scale
        );
    }
}

/// G's training forward and gradients with `bn` statistics on 2 ranks x `per_rank` against 1 rank
/// x the global batch: the largest relative differences of the images, of the gradients and of
/// the running statistics.
fn sync_bn_difference(dir: &Path, bn: &str, per_rank: i64) -> (f64, f64, f64) {
    let two = dir.join(format!("two_{bn}.safetensors"));
    let one = dir.join(format!("one_{bn}.safetensors"));
    for (ranks, out, batch) in [(2, &two, per_rank), (1, &one, 2 * per_rank)] {
        ok(&mpirun(ranks)
            .arg(example("dist_probe"))
            .args(["sync-bn", out.to_str().unwrap(), &batch.to_string(), bn])
            .output()
            .unwrap());
    }
    let (a, b) = (
        sorted(Tensor::read_safetensors(&two).unwrap()),
        sorted(Tensor::read_safetensors(&one).unwrap()),
    );
    assert_eq!(a.len(), b.len());
    let (mut images, mut stats) = (0.0f64, 0.0f64);
    // Gradients relative to the network's largest: the biases of convolutions followed by a batch
    // norm have a gradient of exactly 0 in exact arithmetic, so theirs is rounding on both sides.
    let (mut grad_diff, mut grad_scale) = (0.0f64, 1e-12f64);
    let max_abs = |t: &Tensor| t.abs().max().double_value(&[]);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = max_abs(&(ta - tb));
        if na.starts_with("grad.") {
            grad_diff = grad_diff.max(diff);
            grad_scale = grad_scale.max(max_abs(tb));
        } else {
            let slot = if na == "images" {
                &mut images
            } else {
                &mut stats
            };
            *slot = slot.max(diff / max_abs(tb).max(1e-12));
        }
    }
    (images, grad_diff / grad_scale, stats)
}

/// Cross-replica batch norm: 2 ranks x 8 give 1 rank x 16's images, gradients and running
/// statistics (to float rounding: the statistics are summed in another order); local batch norm
/// does not, which shows the comparison can tell.
#[test]
fn cross_replica_batch_norm_on_two_ranks_equals_one_rank_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (images, grads, stats) = sync_bn_difference(dir.path(), "cross-replica", 8);
    assert!(
        images < 1e-4 && grads < 1e-3 && stats < 1e-4,
        "cross-replica: {images:e} {grads:e} {stats:e}"
    );
    let (images, grads, stats) = sync_bn_difference(dir.path(), "local", 8);
    assert!(
        images > 1e-2 && grads > 1e-2 && stats > 1e-2,
        "local: {images:e} {grads:e} {stats:e}"
    );
}

/// A real 2-rank run with cross-replica batch norm: the buffer check finds the ranks' running
/// statistics identical at every step (nothing re-synchronised), and overlapping the gradient
/// all-reduce with backward (whose hooks interleave with the statistics' backward sums) changes
/// nothing.
#[test]
fn cross_replica_training_keeps_ranks_identical_with_and_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |overlap: bool| {
        let run = dir.path().join(format!("overlap_{overlap}"));
        let mut args = small(&run, 6);
        args.extend(common::sets(&[
            "model.g_bn=cross-replica".into(),
            "dist.sync_check_every=1".into(),
            format!("dist.overlap={overlap}"),
        ]));
        ok(&common::train(2, &args).output().unwrap());
        let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let (plain, overlapped) = (summary(false), summary(true));
    for s in [&plain, &overlapped] {
        assert_eq!(s["resyncs"], 0, "{s}");
    }
    for key in ["d_loss_real", "d_loss_fake", "g_loss", "g_grad_norm"] {
        let (a, b) = (&plain["final_stats"][key], &overlapped["final_stats"][key]);
        assert_eq!(a, b, "{key}");
        assert!(a.as_f64().unwrap().is_finite(), "{key}: {a}");
    }
}

#[test]
fn a_perturbed_u_vector_is_detected_repaired_and_counted() {
    let out = mpirun(2)
        .arg(example("dist_probe"))
        .arg("resync")
        .output()
        .unwrap();
    let text = ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        assert!(l["resyncs_at_step_5"].as_u64().unwrap() >= 1, "{l}");
        assert_eq!(l["repaired_again"].as_array().unwrap().len(), 0, "{l}");
        assert_eq!(l["identical_after"], true, "{l}");
    }
    assert!(text.contains("D.blocks.1.conv1.weight_u"), "{text}");
}

#[test]
fn mismatched_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = small(dir.path(), 5);
    let out = mpirun(1)
        .arg(bin())
        .args(["train", "--config", &default_config()])
        .args(&args)
        .args([
            "--set",
            "train.seed=1",
            ":",
            "-np",
            "1",
            bin(),
            "train",
            "--config",
            &default_config(),
        ])
        .args(&args)
        .args(["--set", "train.seed=2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rank(s) [1] have a different effective config than rank 0"),
        "{err}"
    );
}

/// A 2-rank training run far longer than any test, returned once rank 0 has logged a step.
fn long_run_once_training(dir: &std::path::Path) -> std::process::Child {
    let child = mpirun(2)
        .arg(bin())
        .args(["train", "--config", &default_config()])
        .args(small(dir, 100_000))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = dir.join("metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |s| s.is_empty()) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// The ranks restart themselves on tcmalloc, and still carry the program's name: `pgrep sagan`,
/// ps, top and Slurm's process lists find them (an exec through /proc/self/exe made them "exe").
#[test]
fn running_ranks_are_named_sagan() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = long_run_once_training(dir.path());
    let ranks: Vec<u32> = (0..2)
        .map(|r| find_rank_pid(child.id(), r).expect("rank process"))
        .collect();
    let pgrep = Command::new("pgrep")
        .args(["-x", "sagan"])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&pgrep.stdout).into_owned();
    let facts: Vec<(String, bool, bool)> = ranks
        .iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            let listed = found.split_whitespace().any(|p| p == pid.to_string());
            (
                comm.trim_end().to_string(),
                maps.contains("libtcmalloc"),
                listed,
            )
        })
        .collect();
    // The ranks first, so that none outlives its mpirun.
    for pid in &ranks {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
    for (r, (comm, on_tcmalloc, listed)) in facts.iter().enumerate() {
        assert!(*on_tcmalloc, "rank {r} did not restart on tcmalloc");
        assert_eq!(comm, "sagan", "rank {r}'s /proc/PID/comm");
        assert!(listed, "`pgrep -x sagan` missed rank {r}: {found:?}");
    }
}

#[test]
fn a_killed_rank_ends_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    // Once rank 0 has logged a step, SIGKILL rank 1.
    let mut child = long_run_once_training(dir.path());
    let rank1 = find_rank_pid(child.id(), 1).expect("rank 1 process");
    let rank0 = find_rank_pid(child.id(), 0).expect("rank 0 process");
    Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                !status.success(),
                "mpirun reported success after a rank was killed"
            );
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mpirun still running 60 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(killed.elapsed() < Duration::from_secs(60));
    // mpirun can return while the killed rank 0 is still tearing down its memory (a fresh-clone
    // CI run caught it alive at that instant); a rank that outlives the job stays, so a few
    // seconds' grace still catches it.
    assert!(
        wait_for(5.0, || is_gone(rank0)),
        "rank 0 outlived the run by 5 s"
    );
}

#[test]
fn nccl_backend_without_cuda_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["train", "--config", &default_config()])
        .args(small(dir.path(), 1))
        .args(["--set", "dist.backend=nccl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a CUDA device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_train_reports_throughput_memory_and_the_all_reduce_of_both_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpirun(2)
        .arg(bin())
        .args(["bench-train", "--config", &default_config()])
        .args(small(dir.path(), 10))
        .args(["--warmup", "1", "--steps", "3", "--phases"])
        .output()
        .unwrap();
    let text = ok(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["world"], 2, "{line}");
    let rss = v["peak_rss_mib"].as_array().unwrap();
    assert_eq!(rss.len(), 2, "one peak RSS per rank: {line}");
    assert!(rss.iter().all(|r| r.as_f64().unwrap() > 50.0), "{line}");
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{line}");
    // The in-step all-reduce time includes waiting for the other rank; the lined-up measurement
    // is the transfer alone. Both are a real, nonzero part of a step.
    for key in ["allreduce_share", "allreduce_transfer_share"] {
        let share = v[key].as_f64().unwrap();
        assert!(share > 0.0 && share < 1.0, "{key} = {share}: {line}");
    }
    // Each rank's own share and work: rank 0's share is the headline figure, and every rank
    // did some work of its own outside the all-reduces.
    let shares = v["allreduce_share_per_rank"].as_array().unwrap();
    let work = v["work_ms_per_rank"].as_array().unwrap();
    assert_eq!((shares.len(), work.len()), (2, 2), "{line}");
    assert_eq!(shares[0], v["allreduce_share"], "{line}");
    assert!(
        shares
            .iter()
            .all(|s| (0.0..1.0).contains(&s.as_f64().unwrap())),
        "{line}"
    );
    assert!(work.iter().all(|w| w.as_f64().unwrap() > 0.0), "{line}");
    // Over several steps no rank's work takes the same microseconds every time.
    let sd = v["work_ms_sd_per_rank"].as_array().unwrap();
    assert_eq!(sd.len(), 2, "{line}");
    assert!(sd.iter().all(|s| s.as_f64().unwrap() > 0.0), "{line}");
    let phases: Vec<&str> = v["phases_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert!(phases.contains(&"gradient average and norm"), "{line}");
}
