//! launch/mpirun.sh: the rank map it asks mpirun for (checked with mpirun's own mapper for a
//! 2-host host file), real runs through it, its exit status, and what it does with signals.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, default_config};

fn wrapper() -> Command {
    // SIGINT back to its default first: a test binary started in the background by a shell
    // without job control inherits SIGINT ignored, and bash cannot trap a signal ignored on entry,
    // so the Ctrl-C test would test how the suite was started, not the wrapper.
    let mut c = Command::new("env");
    c.args(["--default-signal=INT", "bash"]);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("launch/mpirun.sh"));
    c.args(["--bin", bin()]);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tiny(dir: &Path, steps: i64) -> Vec<String> {
    [
        format!("train.steps={steps}"),
        "model.g_ch=16".into(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "train.log_every=1".into(),
        "eval.enabled=false".into(),
        format!("output.dir={}", dir.display()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// (rank, host, local rank, device) rows of the dry run's map.
fn rank_map(out: &str) -> Vec<(usize, String, usize, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("rank map"))
        .skip(2)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].to_string(),
            )
        })
        .collect()
}

fn two_host_file(dir: &Path) -> PathBuf {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "# two GPU nodes\nnode1 slots=2\nnode2 slots=2\n").unwrap();
    hosts
}

#[test]
fn dry_run_maps_a_two_host_file_node_by_node_one_gpu_per_local_rank() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrapper()
        .args(["--hostfile"])
        .arg(two_host_file(dir.path()))
        .args(["-N", "2", "--threads", "1", "--dry-run"])
        .args(["train", "--config", &default_config()])
        .env("CUDA_VISIBLE_DEVICES", "0,1")
        .env("NCCL_DEBUG", "WARN")
        .env("LD_LIBRARY_PATH", "/opt/libtorch/lib")
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // From mpirun's own mapper: ranks numbered node by node, local rank = index on the node,
    // CUDA device = local rank, each rank on its own core.
    let want: Vec<(usize, String, usize, String)> = vec![
        (0, "node1".into(), 0, "cuda:0".into()),
        (1, "node1".into(), 1, "cuda:1".into()),
        (2, "node2".into(), 0, "cuda:0".into()),
        (3, "node2".into(), 1, "cuda:1".into()),
    ];
    assert_eq!(rank_map(&t), want, "{t}");
    let cmd = t.lines().nth(1).unwrap();
    for want in [
        "--np 4",
        "--hostfile",
        "--map-by ppr:2:node:PE=1 --bind-to core",
        "-x CUDA_VISIBLE_DEVICES",
        "-x LD_LIBRARY_PATH",
        "-x NCCL_DEBUG",
        "-x OMP_NUM_THREADS",
        "-x PATH",
        "--set train.threads=1",
    ] {
        assert!(cmd.contains(want), "command lacks {want:?}: {cmd}");
    }
    assert_eq!(cmd.contains("--allow-run-as-root"), is_root(), "{cmd}");
    assert!(!cmd.contains("--oversubscribe"), "{cmd}");
}

#[test]
fn dry_run_with_more_ranks_than_cores_binds_nothing_and_oversubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrapper()
        .args(["--hostfile"])
        .arg(two_host_file(dir.path()))
        .args(["-N", "3", "--threads", "1000", "--dry-run"])
        .args(["train", "--config", &default_config()])
        .env("CUDA_VISIBLE_DEVICES", "")
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let map = rank_map(&t);
    let hosts: Vec<(&str, usize)> = map.iter().map(|r| (r.1.as_str(), r.2)).collect();
    assert_eq!(
        hosts,
        vec![
            ("node1", 0),
            ("node1", 1),
            ("node1", 2),
            ("node2", 0),
            ("node2", 1),
            ("node2", 2)
        ],
        "{t}"
    );
    assert!(map.iter().all(|r| r.3 == "cpu"), "{t}");
    assert!(
        t.contains("--map-by ppr:3:node --bind-to none --oversubscribe"),
        "{t}"
    );
}

#[test]
fn a_two_rank_run_through_the_wrapper_trains_and_returns_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrapper()
        .args(["-N", "2"])
        .args(["train", "--config", &default_config()])
        .args(tiny(dir.path(), 5))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("2 rank(s), 2 per node, 1 thread(s) each"), "{t}");
    assert!(t.contains("sagan: 2 rank(s), backend mpi"), "{t}");
    assert!(dir.path().join("G_ema.safetensors").exists());
}

#[test]
fn the_wrapper_returns_the_ranks_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = wrapper()
        .args(["-N", "2"])
        .args(["train", "--config", &default_config()])
        .args(tiny(dir.path(), 5))
        .args(["--set", "train.batch_size=0"])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("train.batch_size"), "{t}");
}

/// The wrapper with a host file of two real hosts: the namespace nodes of tests/infra/nodes.sh,
/// reached through its rsh agent (given with --mpirun-arg, as a cluster's own options would be).
#[test]
fn a_two_host_run_through_the_wrapper_on_namespace_nodes() {
    if !common::nodes::available() {
        return;
    }
    let nodes = common::nodes::Nodes::up(1);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = wrapper();
    cmd.args(["--hostfile", nodes.hostfile(), "-N", "1", "--threads", "1"]);
    for a in &nodes.mpirun_args {
        cmd.arg(format!("--mpirun-arg={a}"));
    }
    let out = cmd
        .args(["train", "--config", &default_config()])
        .args(tiny(dir.path(), 5))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("2 rank(s), 1 per node, 1 thread(s) each"), "{t}");
    assert!(
        t.contains(
            "sagan: 2 rank(s) on 2 host(s): node1 ranks 0 (local 0); node2 ranks 1 (local 0)"
        ),
        "{t}"
    );
    assert!(dir.path().join("G_ema.safetensors").exists());
    let name = nodes.name.clone();
    drop(nodes);
    common::nodes::assert_nothing_left(&name);
}

/// Starts a long 2-rank run through the wrapper and waits until it has logged step 3.
fn start_long_run(dir: &Path) -> Child {
    let child = wrapper()
        .args(["-N", "2"])
        .args(["train", "--config", &default_config()])
        .args(tiny(dir, 100_000))
        .args(["--set", "train.checkpoint_every=100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.join("metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Direct children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn wait_with_timeout(mut child: Child, secs: u64) -> (Option<i32>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), text(&out));
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {secs} s:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_checkpointed(dir: &Path) {
    let latest = std::fs::read_to_string(dir.join("checkpoints/latest"))
        .expect("checkpoints/latest after the signal");
    let step: i64 = latest
        .trim()
        .strip_prefix("step_")
        .unwrap()
        .parse()
        .unwrap();
    assert!(step >= 3, "checkpoint at step {step}");
    assert!(dir.join("checkpoints").join(latest.trim()).is_dir());
}

#[test]
fn ctrl_c_makes_the_ranks_checkpoint_and_the_wrapper_exit_75() {
    let dir = tempfile::tempdir().unwrap();
    let child = start_long_run(dir.path());
    signal(child.id(), "INT");
    let (code, t) = wait_with_timeout(child, 60);
    assert_eq!(code, Some(75), "{t}");
    assert!(t.contains("SIGINT: asking every rank to checkpoint"), "{t}");
    assert_checkpointed(dir.path());
}

#[test]
fn sigterm_to_every_process_as_a_batch_system_sends_it_still_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let child = start_long_run(dir.path());
    // The wrapper's child is mpirun; mpirun's children are the ranks. Slurm's time limit,
    // scancel and preemption signal them all at once.
    let mpirun = children(child.id());
    assert_eq!(mpirun.len(), 1, "{mpirun:?}");
    let ranks = children(mpirun[0]);
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    for pid in [child.id(), mpirun[0], ranks[0], ranks[1]] {
        signal(pid, "TERM");
    }
    let (code, t) = wait_with_timeout(child, 60);
    assert_eq!(code, Some(75), "{t}");
    assert_checkpointed(dir.path());
}

/// The relay loops of mpirun.sh and train.sbatch wait for their child while traps relay signals
/// to it; a batch system's cancel sends several at once. A loop that trusted `wait`'s status
/// between signals reported 138 for ranks that went on to exit 75 (and the job as failed).
#[test]
fn wait_child_returns_the_childs_status_through_a_burst_of_trapped_signals() {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("launch/wait-child.sh");
    let script = r#"
        source "$1"
        caught=0
        trap 'caught=$((caught + 1))' USR1 TERM
        (sleep 1; exit 75) &
        wait_child "$!"
        echo "rc=$rc caught=$caught""#;
    for round in 0..6 {
        let mut child = Command::new("bash")
            .args(["-c", script, "bash"])
            .arg(&helper)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Signals until it ends, back to back and a millisecond or so apart (one `kill` each).
        let t0 = Instant::now();
        let mut sent = 0;
        while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(5) {
            let sig = if sent % 2 == 0 { "-USR1" } else { "-TERM" };
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
            sent += 1;
        }
        let (code, out) = wait_with_timeout(child, 10);
        assert_eq!(code, Some(0), "round {round}: {out}");
        assert!(
            out.contains("rc=75 "),
            "round {round}, {sent} signals: {out}"
        );
        assert!(
            !out.contains("caught=0"),
            "round {round}: no signal arrived: {out}"
        );
    }
}

#[test]
fn launch_and_setup_scripts_are_shellcheck_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = [
        "docker/smoke.sh",
        "launch/mpirun.sh",
        "launch/slurm/train.sbatch",
        "launch/wait-child.sh",
        "launch/gpu-check.sh",
        "tests/infra/nodes.sh",
        "tests/infra/local-slurm.sh",
        "bench/run.sh",
        "bench/overlap_nodes.sh",
        "bench/slurm_nodes.sh",
        "scripts/setup.sh",
        "scripts/test.sh",
        "scripts/demo.sh",
    ];
    let out = match Command::new("shellcheck")
        .current_dir(root)
        .args(scripts)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let msg = format!(
                "\n!!!!!!!! SHELLCHECK NOT RUN ({e}): the launch scripts were not linted\n"
            );
            if std::env::var_os("SAGAN_REQUIRE_SHELLCHECK").is_some_and(|v| v == "1") {
                panic!("{msg}");
            }
            use std::io::Write;
            let _ = std::io::stderr().write_all(msg.as_bytes());
            return;
        }
    };
    assert!(out.status.success(), "{}", text(&out));
}
