//! sagan across two hosts: network namespaces node1 and node2 on a bridge, each with its own
//! address and host name (tests/infra/nodes.sh), mpirun starting its daemons there through the
//! script's rsh agent, the ranks talking MPI over TCP across the veth links. Then fault drills on
//! them: a node killed, a link cut, a link slowed down.
//!
//! Root only: see tests/common/nodes.rs (they fail without it, unless SAGAN_SKIP_NODES=1).
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tch::Tensor;

mod common;
use common::nodes::{assert_nothing_left, available, wait_within, DownOnDrop, Job, Nodes};
use common::{bin, default_config, descendants, is_gone, ok, sets, small, wait_for};

fn train_args(dir: &Path, steps: i64, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["train".into(), "--config".into(), default_config()];
    a.extend(small(dir, steps));
    a.extend(sets(
        &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    a
}

/// (rank, OMPI local rank, network namespace inode) of every rank of the job under `root`,
/// sampled while they run.
fn placement(root: u32, ranks: usize, secs: f64) -> Vec<(usize, usize, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found: Vec<(usize, usize, u64)> = Vec::new();
    wait_for(secs, || {
        for pid in descendants(root) {
            if found.len() == ranks {
                break;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "sagan" {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let var = |k: &str| -> Option<usize> {
                env.split(|&b| b == 0)
                    .filter_map(|kv| std::str::from_utf8(kv).ok())
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            };
            let ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
            if let (Some(r), Some(l), Ok(ns)) = (
                var("OMPI_COMM_WORLD_RANK"),
                var("OMPI_COMM_WORLD_LOCAL_RANK"),
                ns,
            ) {
                if !found.iter().any(|f| f.0 == r) {
                    found.push((r, l, ns));
                }
            }
        }
        found.len() == ranks
    });
    found.sort();
    found
}

fn sorted_state(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `per_node` ranks on each of two nodes: trains, the ranks sit in their nodes' namespaces with
/// local ranks 0.. there, the trainer sees two hosts, every step's gradients cross node2's link,
/// and the final state equals that of the same run on one host, bitwise.
fn across_two_nodes(per_node: usize) {
    if !available() {
        return;
    }
    let t0 = Instant::now();
    let ranks = 2 * per_node;
    let steps = 20;
    let tmp = tempfile::tempdir().unwrap();
    let (multi, single) = (tmp.path().join("nodes"), tmp.path().join("one-host"));
    let nodes = Nodes::up(per_node);
    let name = nodes.name.clone();
    let before = [nodes.link_bytes(1), nodes.link_bytes(2)];

    let mut cmd = nodes.mpirun(per_node);
    cmd.arg(bin())
        .args(train_args(&multi, steps, &["dist.dump_rank_state=true"]));
    let mut job = Job::spawn(cmd, tmp.path().join("nodes.log"));
    let placed = placement(job.child.id(), ranks, 120.0);
    let code = wait_within(&mut job.child, 300.0, &job.log);
    let out = job.output();
    assert_eq!(code, Some(0), "{out}");
    let after = [nodes.link_bytes(1), nodes.link_bytes(2)];

    // Ranks node by node, each in its node's namespace, local ranks 0.. on each node.
    let (ns1, ns2) = (nodes.netns_inode("node1"), nodes.netns_inode("node2"));
    let want: Vec<(usize, usize, u64)> = (0..ranks)
        .map(|r| {
            let ns = if r < per_node { ns1 } else { ns2 };
            (r, r % per_node, ns)
        })
        .collect();
    assert_eq!(
        placed, want,
        "(rank, local rank, netns); node1 {ns1}, node2 {ns2}\n{out}"
    );
    // The trainer's own view (world check, MPI's local ranks, host names from the UTS namespaces).
    let list = |rs: std::ops::Range<usize>| rs.map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    let hosts = format!(
        "sagan: {ranks} rank(s) on 2 host(s): node1 ranks {} (local {}); node2 ranks {} (local {})",
        list(0..per_node),
        list(0..per_node),
        list(per_node..ranks),
        list(0..per_node)
    );
    assert!(out.contains(&hosts), "wanted {hosts:?} in:\n{out}");
    assert!(!out.contains("warning"), "{out}");

    // Every all-reduce moves each gradient element across the cut between the nodes in both
    // directions at least once, 4 bytes each (float32), whatever the algorithm.
    let grad_bytes = steps as u64 * 4 * common::nodes::gradient_elements(&out);
    for (k, (b, a)) in before.iter().zip(&after).enumerate() {
        let (rx, tx) = (a.0 - b.0, a.1 - b.1);
        eprintln!(
            "node{}'s link: {rx} bytes in, {tx} bytes out; gradients: {grad_bytes} bytes",
            k + 1
        );
        assert!(
            rx >= grad_bytes && tx >= grad_bytes,
            "node{}'s link carried {rx} B in, {tx} B out, less than the {grad_bytes} B of gradients",
            k + 1
        );
    }

    // The same run on one host.
    let out1 = ok(&common::train(
        ranks,
        &train_args(&single, steps, &["dist.dump_rank_state=true"])[3..],
    )
    .output()
    .unwrap());
    assert!(
        out1.contains(&format!("{ranks} rank(s) on 1 host(s)")),
        "{out1}"
    );
    for r in 0..ranks {
        let file = format!("rank_state/rank{r}.safetensors");
        let (a, b) = (
            sorted_state(&multi.join(&file)),
            sorted_state(&single.join(&file)),
        );
        assert!(a.len() > 100, "{} tensors in {file}", a.len());
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(
                ta.equal(tb),
                "rank {r}: {na} differs between two nodes and one host"
            );
        }
    }
    drop(nodes);
    assert_nothing_left(&name);
    eprintln!(
        "{ranks} ranks on two nodes: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn one_rank_per_node_trains_across_the_link_like_one_host() {
    across_two_nodes(1);
}

#[test]
fn two_ranks_per_node_train_across_the_link_like_one_host() {
    across_two_nodes(2);
}

/// Every process of the job: the launcher, its descendants and whatever runs on the nodes.
fn job_processes(job: &Job, nodes: &Nodes) -> Vec<u32> {
    let mut p = vec![job.child.id()];
    p.extend(descendants(job.child.id()));
    for h in ["head", "node1", "node2"] {
        p.extend(nodes.pids(h));
    }
    p.sort();
    p.dedup();
    p
}

fn running(pids: &[u32]) -> Vec<u32> {
    pids.iter().copied().filter(|&p| !is_gone(p)).collect()
}

/// Starts a long 1-rank-per-node run and waits for its third logged step.
fn long_run(nodes: &Nodes, cmd: Command, dir: &Path, log: &Path, extra: &[&str]) -> Job {
    let mut cmd = cmd;
    let mut e = vec!["train.log_every=1", "train.checkpoint_every=100000"];
    e.extend(extra);
    cmd.arg(bin()).args(train_args(dir, 100_000, &e));
    let job = Job::spawn(cmd, log.to_path_buf());
    let started = wait_for(120.0, || common::logged_steps(dir).len() >= 3);
    assert!(started, "training never started:\n{}", job.output());
    assert!(!nodes.pids("node2").is_empty(), "nothing runs on node2");
    job
}

#[test]
fn killing_every_process_of_a_node_ends_the_job_within_60_s_naming_the_node() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let nodes = Nodes::up(1);
    let name = nodes.name.clone();
    let dir = tmp.path().join("run");
    let mut job = long_run(&nodes, nodes.mpirun(1), &dir, &tmp.path().join("log"), &[]);
    let procs = job_processes(&job, &nodes);
    let victims = nodes.pids("node2");
    assert!(victims.len() >= 2, "node2 runs {victims:?}"); // its daemon and rank at least
    for p in &victims {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    let killed = Instant::now();
    let code = wait_within(&mut job.child, 60.0, &job.log);
    let all_gone = wait_for(60.0 - killed.elapsed().as_secs_f64(), || {
        running(&procs).is_empty()
    });
    let took = killed.elapsed().as_secs_f64();
    let out = job.output();
    assert!(
        all_gone,
        "still running 60 s after node2 was killed: {:?}\n{out}",
        running(&procs)
    );
    assert_ne!(code, Some(0), "{out}");
    // The surviving rank's MPI names its vanished peer, or mpirun names the lost daemon's host, or
    // (when mpirun sees the daemon's session end first, and then says only that a daemon failed)
    // the rsh agent, which stays on the head as an ssh client would, names the host it lost.
    let named = out.lines().find(|l| {
        l.contains("node2")
            && (l.contains("Remote daemon")
                || l.contains("Peer host")
                || l.contains("the session on host node2 was ended by signal 9"))
    });
    let Some(named) = named else {
        panic!("no message naming node2:\n{out}");
    };
    eprintln!(
        "node2 killed: every process of the job gone after {took:.1} s; console: {:?}",
        named.trim()
    );
    drop(job);
    drop(nodes);
    assert_nothing_left(&name);
}

#[test]
fn a_link_cut_mid_run_makes_the_watchdog_end_the_job_naming_the_operation() {
    if !available() {
        return;
    }
    let timeout = 5;
    let tmp = tempfile::tempdir().unwrap();
    let nodes = Nodes::up(1);
    let name = nodes.name.clone();
    let dir = tmp.path().join("run");
    let timeout_set = format!("dist.timeout_s={timeout}");
    // mpirun on the head namespace: see tests/common/nodes.rs and nodes.sh for why.
    let mut job = long_run(
        &nodes,
        nodes.mpirun_on_head(1),
        &dir,
        &tmp.path().join("log"),
        &[&timeout_set],
    );
    let procs = job_processes(&job, &nodes);
    nodes.script(&["link", "node2", "down"]);
    let cut = Instant::now();
    let code = wait_within(&mut job.child, timeout as f64 + 45.0, &job.log);
    let ended = cut.elapsed().as_secs_f64();
    let out = job.output();
    assert_eq!(code, Some(3), "the watchdog's exit code\n{out}");
    assert!(out.contains("watchdog: at step"), "{out}");
    assert!(
        out.contains("has not completed after")
            && out.contains(&format!("dist.timeout_s = {timeout}")),
        "{out}"
    );
    let op = ["all-reduce", "all-gather", "broadcast", "barrier"]
        .into_iter()
        .find(|op| out.contains(&format!("): {op}")));
    assert!(op.is_some(), "no operation named:\n{out}");
    // Nothing hangs: the daemon behind the cut link gives up on mpirun too.
    let all_gone = wait_for(60.0 - cut.elapsed().as_secs_f64(), || {
        running(&procs).is_empty()
    });
    assert!(
        all_gone,
        "still running 60 s after the cut: {:?}\n{out}",
        running(&procs)
    );
    eprintln!(
        "link cut: mpirun ended after {ended:.1} s, every process after {:.1} s; console: {:?}",
        cut.elapsed().as_secs_f64(),
        out.lines()
            .find(|l| l.contains("watchdog: at step"))
            .unwrap()
    );
    drop(job);
    drop(nodes);
    assert_nothing_left(&name);
}

/// The all-reduce figures of a finished run.
struct AllReduce {
    /// summary.json's share of the step spent in gradient all-reduces.
    share: f64,
    /// The shortest and the median all-reduce time of a step (metrics.jsonl, one line a step).
    min: f64,
    median: f64,
}

fn allreduce_figures(dir: &Path) -> AllReduce {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let mut secs: Vec<f64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["stats"]["allreduce_seconds"].as_f64())
        .collect();
    assert!(!secs.is_empty());
    secs.sort_by(f64::total_cmp);
    AllReduce {
        share: summary["allreduce_share"].as_f64().unwrap(),
        min: secs[0],
        median: secs[secs.len() / 2],
    }
}

#[test]
fn a_5_ms_delay_on_the_link_completes_and_shows_in_the_allreduce_share() {
    if !available() {
        return;
    }
    let steps = 30;
    let tmp = tempfile::tempdir().unwrap();
    let nodes = Nodes::up(1);
    let name = nodes.name.clone();
    let run = |tag: &str| {
        let dir = tmp.path().join(tag);
        let mut cmd = nodes.mpirun(1);
        cmd.arg(bin())
            .args(train_args(&dir, steps, &["train.log_every=1"]));
        let out = ok(&cmd.output().unwrap());
        assert!(out.contains(&format!("done: step {steps}")), "{out}");
        allreduce_figures(&dir)
    };
    let plain = run("plain");
    let how = nodes.script(&["delay", "node2", "5"]);
    let delayed = run("delayed");
    nodes.script(&["undelay", "node2"]);
    let mechanism = if how.contains("(netem)") {
        "tc netem"
    } else {
        "NFQUEUE: this kernel has no netem"
    };
    eprintln!(
        "all-reduce share of the step: {:.1}% without delay, {:.1}% with 5 ms each way on \
         node2's link ({mechanism}); all-reduce time of a step, shortest and median: {:.1} and \
         {:.1} ms without, {:.1} and {:.1} ms with",
        plain.share * 100.0,
        delayed.share * 100.0,
        plain.min * 1e3,
        plain.median * 1e3,
        delayed.min * 1e3,
        delayed.median * 1e3,
    );
    for r in [&plain, &delayed] {
        assert!(r.share > 0.0 && r.share < 1.0, "share {}", r.share);
    }
    // A step all-reduces twice (D's gradients, then G's: 69 and 102 KB here), and in each rank 0
    // waits at least one round trip over the link, even when it comes last: either half of every
    // sum is made on node2 from what rank 0 sends it (ring), or the message is too large to be
    // sent before rank 0 asks for it (rendezvous above OpenMPI's 64 KiB eager limit). With 5 ms
    // each way no step's all-reduces can take under 20 ms. (Shares and medians rise too, but they
    // also move with how evenly the two ranks share this machine's cores: printed, not asserted.)
    assert!(
        delayed.min >= 0.020,
        "a step all-reduced in {:.1} ms with 5 ms each way on the link: the delay missed it",
        delayed.min * 1e3
    );
    assert!(plain.min < delayed.min, "{} {}", plain.min, delayed.min);
    drop(nodes);
    assert_nothing_left(&name);
}

#[test]
fn the_nodes_script_tears_everything_down_on_failure_and_when_stopped() {
    if !available() {
        return;
    }
    let script = common::nodes::script();
    // `run`: the command's status comes back, and nothing is left.
    let name = common::nodes::unique_name();
    let _guard = DownOnDrop(name.clone());
    let out = Command::new("bash")
        .arg(&script)
        .args(["run", "--name", &name, "--", "sh", "-c"])
        .arg("ip netns exec \"$SAGAN_NODES_NS_2\" sleep 1000 & exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", common::nodes::text(&out));
    assert_nothing_left(&name);

    // `run` stopped by SIGTERM while its command (and a process on a node) runs.
    let name = common::nodes::unique_name();
    let _guard2 = DownOnDrop(name.clone());
    let mut child = Command::new("bash")
        .arg(&script)
        .args(["run", "--name", &name, "--", "bash", "-c"])
        .arg("ip netns exec \"$SAGAN_NODES_NS_1\" sleep 1000 & exec sleep 1000")
        .spawn()
        .unwrap();
    assert!(
        wait_for(30.0, || Path::new(&format!("/run/netns/{name}-node1"))
            .exists()
            && Command::new("ip")
                .args(["netns", "pids", &format!("{name}-node1")])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)),
        "nodes never came up"
    );
    common::kill("-TERM", child.id());
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "run ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_nothing_left(&name);

    // `up` failing halfway (node2's link name taken) removes what it made, and says so.
    let name = common::nodes::unique_name();
    let _guard3 = DownOnDrop(name.clone());
    let taken = format!("{name}-v2");
    let made = Command::new("ip")
        .args(["link", "add", &taken, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());
    let out = Command::new("bash")
        .arg(&script)
        .args(["up", "--name", &name])
        .output()
        .unwrap();
    let t = common::nodes::text(&out);
    let _ = Command::new("ip").args(["link", "del", &taken]).status();
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("up failed; removing what was made"), "{t}");
    assert_nothing_left(&name);

    // Two `up`s of one name: the second is refused and leaves the first intact.
    let nodes = Nodes::up(1);
    let out = Command::new("bash")
        .arg(&script)
        .args(["up", "--name", &nodes.name])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(common::nodes::text(&out).contains("exist already"));
    assert!(Path::new(&format!("/run/netns/{}-node2", nodes.name)).exists());
    let name = nodes.name.clone();
    drop(nodes);
    assert_nothing_left(&name);
}
