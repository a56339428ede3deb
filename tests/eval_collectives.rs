//! Evaluation's collectives under real `mpirun` ranks (tests/probes/eval_probe.rs): the reference
//! statistics decided once for all ranks when only some ranks see the file, and the 64-bit gather
//! to one rank in rounds. Every child runs under a timeout, so a hang fails the test instead of
//! stalling the suite.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, mpirun, ok};

fn probe() -> PathBuf {
    // Examples are built next to the test binaries' directory (target/<profile>/examples).
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join("eval_probe");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release --examples`",
        path.display()
    );
    path
}

/// Runs `cmd`, and stops it when it has not finished within `limit`; the panic message then says
/// it hung. SIGTERM first: mpirun forwards it to its ranks (which run in process groups of their
/// own) and reaps them; SIGKILL if that does not end it.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(limit) {
        return out.unwrap();
    }
    let hung = started.elapsed();
    let mut out = None;
    for signal in ["TERM", "KILL"] {
        let _ = Command::new("kill").args(["-s", signal, &pid]).status();
        if let Ok(o) = rx.recv_timeout(Duration::from_secs(15)) {
            out = o.ok();
            break;
        }
    }
    let (stdout, stderr) = out.map(|o| (o.stdout, o.stderr)).unwrap_or_default();
    panic!(
        "no result within {hung:?} (hung?); stopped it. stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    v.sort_by_key(|j| j["rank"].as_u64());
    v
}

const LIMIT: Duration = Duration::from_secs(120);
const IMAGES: &str = "600";

/// Sequential sums of mu and sigma, as tests/probes/eval_probe.rs prints them: equal bits in give
/// equal sums out, whatever the thread count.
fn sums(path: &Path) -> (f64, f64) {
    let s = sagan::metrics::load_fid_stats(path).unwrap();
    let sum = |t: &tch::Tensor| Vec::<f64>::try_from(&t.reshape([-1])).unwrap().iter().sum();
    (sum(&s.mu), sum(&s.sigma))
}

fn assert_ranks_got(lines: &[serde_json::Value], want: (f64, f64), text: &str) {
    assert_eq!(lines.len(), 2, "{text}");
    for l in lines {
        assert_eq!(l["mu_sum"].as_f64().unwrap(), want.0, "{text}");
        assert_eq!(l["sigma_sum"].as_f64().unwrap(), want.1, "{text}");
    }
}

#[test]
fn reference_stats_present_on_one_rank_only_is_decided_by_rank_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cls = d.join("cls.safetensors");
    ok(&output_within(
        Command::new(bin()).args([
            "train-classifier",
            "--epochs",
            "0",
            "--out",
            cls.to_str().unwrap(),
        ]),
        LIMIT,
    ));
    let probe_args = [
        "reference-stats",
        d.to_str().unwrap(),
        cls.to_str().unwrap(),
        IMAGES,
    ];
    // One rank alone computes and writes rank0.npz.
    let single = ok(&output_within(
        Command::new(probe()).args(probe_args),
        LIMIT,
    ));
    let rank0 = d.join("rank0.npz");
    let rank1 = d.join("rank1.npz");
    assert!(rank0.exists(), "{single}");
    let want = sums(&rank0);

    // Present on rank 0 only: rank 0 loads it and every rank gets its values; rank 1 computes
    // nothing and writes nothing. (Deciding per rank, rank 1 waits forever in the all-reduce of
    // a computation rank 0 never joins.)
    let text = ok(&output_within(
        mpirun(2).arg(probe()).args(probe_args),
        LIMIT,
    ));
    assert_ranks_got(&json_lines(&text), want, &text);
    assert!(!rank1.exists(), "rank 1 wrote its own file:\n{text}");

    // Present on rank 1 only: rank 0 decides to compute, both ranks take part, rank 0 writes.
    std::fs::rename(&rank0, &rank1).unwrap();
    let text = ok(&output_within(
        mpirun(2).arg(probe()).args(probe_args),
        LIMIT,
    ));
    assert!(rank0.exists(), "rank 0 did not write its file:\n{text}");
    let lines = json_lines(&text);
    let got = (
        lines[0]["mu_sum"].as_f64().unwrap(),
        lines[0]["sigma_sum"].as_f64().unwrap(),
    );
    assert_ranks_got(&lines, got, &text);
    // What rank 0 wrote, and what one rank computed before, are the same statistics up to
    // summation order (a checksum of a differently laid out tensor, sums split over ranks).
    for (a, b) in [
        (got.0, sums(&rank0).0),
        (got.1, sums(&rank0).1),
        (got.0, want.0),
        (got.1, want.1),
    ] {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn gather_to_one_rank_in_small_rounds_delivers_every_byte() {
    // Three ranks, root in the middle, one rank sending nothing, lengths that are not multiples
    // of the round size: 7-byte rounds exercise hundreds of MPI_Gatherv calls.
    let lens = ["1000", "0", "2503"];
    let out = output_within(
        mpirun(3).arg(probe()).args(["gather", "1", "7"]).args(lens),
        LIMIT,
    );
    let text = ok(&out);
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["rounds_planned"], 3503usize.div_ceil(7), "{text}");
    for l in &lines {
        let root = l["rank"] == 1;
        assert_eq!(l["rounds_ok"].as_bool(), root.then_some(true), "{text}");
        assert_eq!(l["trait_ok"].as_bool(), root.then_some(true), "{text}");
    }
    assert_eq!(lines[1]["received"], serde_json::json!([1000, 0, 2503]));
}

#[test]
fn too_few_samples_for_is_fails_every_rank_before_any_collective() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        mpirun(2)
            .arg(bin())
            .args(["train", "--config", &common::default_config()])
            .args(common::sets(&[
                "eval.num_samples=5".into(),
                format!("output.dir={}", dir.path().join("run").display()),
            ])),
        Duration::from_secs(60),
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("`eval.num_samples` must be >= 10"), "{text}");
    assert!(
        !dir.path().join("run").exists(),
        "a rank started the run:\n{text}"
    );
}
