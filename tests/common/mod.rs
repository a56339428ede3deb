//! Helpers shared by the integration tests that run the real binary, alone or under mpirun.
#![allow(dead_code)]
use std::process::{Command, Output};

pub mod nodes;
pub mod slurm;
pub mod slurm_job;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sagan")
}

pub fn default_config() -> String {
    format!("{}/configs/fmnist32.toml", env!("CARGO_MANIFEST_DIR"))
}

/// `mpirun -np N` as these tests need it: root allowed (containers, CI), more ranks than cores.
pub fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ]);
    c
}

/// `--set` pairs for each override.
pub fn sets(pairs: &[String]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect()
}

/// Asserts success and returns stdout and stderr together.
pub fn ok(out: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed:\n{text}");
    text
}

/// The `--set` overrides of a small, fast CPU run into `dir` (no evaluation).
pub fn small(dir: &std::path::Path, steps: i64) -> Vec<String> {
    sets(&[
        format!("train.steps={steps}"),
        "model.g_ch=16".into(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "train.threads=1".into(),
        "train.log_every=10".into(),
        "dist.sync_check_every=10".into(),
        "eval.enabled=false".into(),
        format!("output.dir={}", dir.display()),
    ])
}

/// `sagan train` on the default config with `args`, under `mpirun -np ranks` (or alone for 0).
pub fn train(ranks: usize, args: &[String]) -> Command {
    let mut c = if ranks == 0 {
        Command::new(bin())
    } else {
        let mut m = mpirun(ranks);
        m.arg(bin());
        m
    };
    c.args(["train", "--config", &default_config()]).args(args);
    c
}

/// The descendant of `root` whose environment says OMPI_COMM_WORLD_RANK=`rank`.
pub fn find_rank_pid(root: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    descendants(root).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
            .unwrap_or(false)
    })
}

/// Every process below `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            out.push(c);
            frontier.push(c);
        }
    }
    out
}

/// Gone, or a zombie waiting for its parent.
pub fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// Polls `cond` every 50 ms until it holds or `secs` pass; false on timeout.
pub fn wait_for(secs: f64, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

/// The steps of metrics.jsonl's training lines (not its evaluation lines), in file order.
pub fn logged_steps(run_dir: &std::path::Path) -> Vec<i64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("stats").is_some())
        .filter_map(|v| v["step"].as_i64())
        .collect()
}

/// Sends `sig` (e.g. "-USR1") to `pid`.
pub fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

/// The steps of scalar `tag` in a run directory's event files, as TensorBoard itself reads them
/// (one run expected).
pub fn scalar_steps(run: &std::path::Path, tag: &str) -> Vec<i64> {
    let python = std::env::var("SAGAN_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
m = EventMultiplexer()
m.AddRunsFromDirectory(sys.argv[1])
m.Reload()
runs = list(m.Runs())
assert runs == ["."], runs
tags = m.Runs()["."]["scalars"]
print(" ".join(str(e.step) for e in m.Scalars(".", sys.argv[2])) if sys.argv[2] in tags else "")
"#;
    let out = Command::new(python)
        .args(["-c", script, run.to_str().unwrap(), tag])
        .output()
        .unwrap();
    let text = ok(&out);
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// `n` random 28x28 images with labels 0..9 in turn, in the IDX format of Fashion-MNIST's training
/// split, in `dir`: a dataset small enough that reference statistics take no time.
pub fn write_small_fmnist(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    write_fmnist_like(dir, n, 12345)
}

/// The same, with images that differ for each `seed`.
pub fn write_fmnist_like(dir: &std::path::Path, n: u32, seed: u32) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut images = 0x0803u32.to_be_bytes().to_vec();
    for d in [n, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..n * 28 * 28 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        images.push((state >> 24) as u8);
    }
    let mut labels = 0x0801u32.to_be_bytes().to_vec();
    labels.extend(n.to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
    dir.to_path_buf()
}

/// Untrained Fashion-MNIST classifier weights at `path` (any fixed network will do to check
/// where numbers go; their values are tested elsewhere).
pub fn untrained_classifier(path: &std::path::Path) -> std::path::PathBuf {
    let c = sagan::metrics::classifier::Classifier::new(tch::Device::Cpu, 10);
    c.vs.save(path).unwrap();
    path.to_path_buf()
}

/// No panic, no libtorch C++ frames, no internal error in a command's output.
pub fn assert_clean(text: &str) {
    for bad in [
        "panicked",
        "internal error",
        "frame #",
        "Exception raised",
        "RUST_BACKTRACE",
    ] {
        assert!(!text.contains(bad), "{bad:?} in:\n{text}");
    }
}

/// stdout and stderr of a command that must fail.
pub fn failed(out: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "command succeeded:\n{text}");
    text
}
