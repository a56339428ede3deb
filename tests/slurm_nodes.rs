//! launch/slurm/train.sbatch on a real multi-node Slurm: slurmctld on a head and one slurmd per
//! node, each node a network namespace with its own address and host name
//! (tests/infra/local-slurm.sh start DIR --nodes N). srun starts the ranks on several nodes
//! through PMIx, their traffic crosses the nodes' veth links, and a preemption reaches every rank
//! on every node.
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

mod common;
use common::slurm::{text, Cluster};
use common::slurm_job::Job;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster with `nodes` namespace nodes, or None where Slurm is missing (as tests/slurm.rs)
/// or the multi-host tests are skipped knowingly (SAGAN_SKIP_NODES=1).
fn cluster(nodes: usize) -> Option<Cluster> {
    if !common::nodes::available() {
        return None;
    }
    Cluster::start_nodes(nodes)
}

/// The nodes' variables (SAGAN_NODES_VETH_k, ...) that local-slurm.sh saved.
fn nodes_env(c: &Cluster) -> HashMap<String, String> {
    std::fs::read_to_string(c.dir.path().join("nodes-env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// Bytes in and out of node k's link, counted on the bridge side of its veth pair.
fn link_bytes(c: &Cluster, k: usize) -> (u64, u64) {
    let veth = nodes_env(c)[&format!("SAGAN_NODES_VETH_{k}")].clone();
    let read = |what: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{veth}/statistics/{what}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (read("rx_bytes"), read("tx_bytes"))
}

/// A submit directory (the "repository root" jobs run in): launch/ as in a checkout.
fn submit_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("sagan-nodes-submit-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::symlink(repo().join("launch"), d.path().join("launch")).unwrap();
    d
}

/// sbatch of train.sbatch with srun from `dir`, `nodes` x `per_node` ranks of a tiny CPU model.
/// The same `name` from the same `dir` is the same run (a resubmission continues it).
fn submit<'a>(
    c: &'a Cluster,
    dir: &Path,
    name: &str,
    nodes: usize,
    per_node: usize,
    steps: i64,
    extra: &[&str],
) -> Job<'a> {
    let shape = [
        format!("--nodes={nodes}"),
        format!("--ntasks-per-node={per_node}"),
    ];
    submit_shaped(c, dir, name, &shape, steps, extra)
}

/// As `submit`, with the job's shape as sbatch options.
fn submit_shaped<'a>(
    c: &'a Cluster,
    dir: &Path,
    name: &str,
    shape: &[String],
    steps: i64,
    extra: &[&str],
) -> Job<'a> {
    let mut sets: Vec<String> = vec![
        format!("train.steps={steps}"),
        "train.log_every=1".into(),
        "train.sample_every=0".into(),
        "train.checkpoint_every=10".into(),
        "model.g_ch=16".into(),
        "model.d_ch=16".into(),
        "model.z_dim=32".into(),
        "train.batch_size=16".into(),
        "dist.sync_check_every=10".into(),
        "dist.dump_rank_state=true".into(),
        "eval.enabled=false".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut opts: Vec<&str> = vec!["-J", name];
    opts.extend(shape.iter().map(String::as_str));
    opts.extend(["--cpus-per-task=1", "--time=10"]);
    let id = c.sbatch_train(dir, "srun", &opts, &sets);
    Job {
        cluster: c,
        submit: dir.to_path_buf(),
        name: name.to_string(),
        id,
        steps,
        owned_dir: None,
    }
}

/// `nodes` x `per_node` ranks: the nodes are idle in sinfo, srun reaches each, the job trains
/// to the end with its ranks placed node by node, every rank ends identical, and every step's
/// gradients crossed every node's link.
fn trains_across(nodes: usize, per_node: usize) {
    let Some(c) = cluster(nodes) else {
        return;
    };
    let t0 = Instant::now();
    let sinfo = text(
        &c.cmd("sinfo")
            .args(["-h", "-N", "-p", "debug", "-o", "%N %T"])
            .output()
            .unwrap(),
    );
    let want: Vec<String> = (1..=nodes).map(|k| format!("node{k} idle")).collect();
    assert_eq!(sinfo.lines().collect::<Vec<_>>(), want, "{sinfo}");
    let hosts = c
        .cmd("srun")
        .args([&format!("-N{nodes}"), "hostname"])
        .output()
        .unwrap();
    let mut names: Vec<String> = text(&hosts)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(
        names,
        (1..=nodes).map(|k| format!("node{k}")).collect::<Vec<_>>(),
        "{}",
        text(&hosts)
    );

    let before: Vec<(u64, u64)> = (1..=nodes).map(|k| link_bytes(&c, k)).collect();
    let steps = 20;
    let dir = submit_dir();
    let job = submit(
        &c,
        dir.path(),
        &format!("n{nodes}x{per_node}"),
        nodes,
        per_node,
        steps,
        &[],
    );
    let end = job.wait_end(240);
    assert_eq!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    let log = job.log();
    let ranks = nodes * per_node;
    let placed: Vec<String> = (0..nodes)
        .map(|n| {
            let rs: Vec<String> = (n * per_node..(n + 1) * per_node)
                .map(|r| r.to_string())
                .collect();
            let local: Vec<String> = (0..per_node).map(|r| r.to_string()).collect();
            format!(
                "node{} ranks {} (local {})",
                n + 1,
                rs.join(","),
                local.join(",")
            )
        })
        .collect();
    let line = format!(
        "sagan: {ranks} rank(s) on {nodes} host(s): {}",
        placed.join("; ")
    );
    assert!(
        log.contains(&line),
        "wanted {line:?} in\n{}",
        job.diagnose()
    );
    assert!(log.contains("srun --mpi=pmix"), "{log}");
    job.assert_every_step_once();
    job.assert_ranks_identical(ranks);
    let grad_bytes = steps as u64 * 4 * common::nodes::gradient_elements(&log);
    for k in 1..=nodes {
        let (b, a) = (before[k - 1], link_bytes(&c, k));
        let (rx, tx) = (a.0 - b.0, a.1 - b.1);
        eprintln!("slurm nodes: node{k}'s link {rx} B in, {tx} B out; gradients {grad_bytes} B");
        assert!(rx >= grad_bytes && tx >= grad_bytes, "node{k}'s link carried {rx} B in and {tx} B out, less than {grad_bytes} B of gradients");
    }
    eprintln!(
        "slurm nodes: {nodes} nodes x {per_node} rank(s), {steps} steps: {:?}",
        t0.elapsed()
    );
}

#[test]
fn two_nodes_one_rank_each_train_through_srun_and_end_identical() {
    trains_across(2, 1);
}

#[test]
fn two_nodes_two_ranks_each_train_through_srun_and_end_identical() {
    trains_across(2, 2);
}

#[test]
fn usr1_reaches_every_rank_on_every_node_and_the_requeued_job_runs_every_step_once() {
    let Some(c) = cluster(2) else {
        return;
    };
    let t0 = Instant::now();
    let dir = submit_dir();
    let job = running_two_node_job(&c, dir.path(), "preempt2", 30);
    let out = c
        .cmd("scancel")
        .args(["--signal=USR1", &job.id])
        .output()
        .unwrap();
    assert!(out.status.success(), "scancel: {}", text(&out));
    let stop = assert_stopped_once_and_finished(&job);
    assert!(job.log().contains("requeued job"), "{}", job.log());
    eprintln!(
        "slurm nodes: USR1 at step {stop}, requeued and finished in {:?}",
        t0.elapsed()
    );
}

/// Slurm's own preemption (tests/infra/local-slurm.sh: partition_prio, PreemptMode=REQUEUE,
/// GraceTime=60 on "debug"): a job in the higher tier "urgent" wants both nodes, Slurm sends
/// every task SIGTERM, every rank checkpoints, and the requeued job continues once the
/// preemptor is done.
#[test]
fn a_slurm_preemption_checkpoints_every_rank_and_the_job_resumes_after_the_preemptor() {
    let Some(c) = cluster(2) else {
        return;
    };
    let t0 = Instant::now();
    let dir = submit_dir();
    let job = running_two_node_job(&c, dir.path(), "preempted2", 60);
    let out = c
        .cmd("sbatch")
        .current_dir(dir.path())
        .args(["--parsable", "-J", "urgent", "-p", "urgent", "--exclusive"])
        .args(["--nodes=2", "--wrap", "sleep 5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sbatch -p urgent: {}", text(&out));
    let urgent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stop = assert_stopped_once_and_finished(&job);
    let log = job.log();
    for rank in 0..2 {
        assert!(
            log.contains(&format!("sagan: SIGTERM received (rank {rank})")),
            "rank {rank} was not told\n{log}"
        );
    }
    let (urgent, ours) = (c.job(&urgent), c.job(&job.id));
    assert_eq!(urgent["JobState"], "COMPLETED", "{urgent:?}");
    // Slurm's times have a resolution of seconds: the restart began once the preemptor ended.
    assert!(
        ours["StartTime"] >= urgent["EndTime"],
        "the requeued job started at {} before the preemptor ended at {}",
        ours["StartTime"],
        urgent["EndTime"]
    );
    eprintln!(
        "slurm nodes: preempted by job {} at step {stop}, resumed after it and finished in {:?}",
        urgent["JobId"],
        t0.elapsed()
    );
}

/// A job of 2 nodes x 1 rank and `steps` that checkpoints only at its end, once it has logged
/// step 8: a checkpoint before the end can only be a stop's.
fn running_two_node_job<'a>(c: &'a Cluster, dir: &Path, name: &str, steps: i64) -> Job<'a> {
    let job = submit(c, dir, name, 2, 1, steps, &["train.checkpoint_every=1000"]);
    job.wait_for_step(8);
    job
}

/// The job was stopped once mid-run at a checkpoint and requeued, and the restart, on both
/// nodes again, ran every step once and ended with identical ranks; the stop's step.
fn assert_stopped_once_and_finished(job: &Job) -> i64 {
    let end = job.wait_end(240);
    let log = job.log();
    assert_eq!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    assert_eq!(end["Restarts"], "1", "{}", job.diagnose());
    let stops: Vec<i64> = std::fs::read_dir(job.run_dir().join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("step_")?.parse().ok())
        .filter(|&s| s < job.steps)
        .collect();
    assert_eq!(
        stops.len(),
        1,
        "one checkpoint before the end, the stop's: {stops:?}\n{}",
        job.diagnose()
    );
    assert!(
        log.matches("sagan: 2 rank(s) on 2 host(s)").count() == 2,
        "both jobs spanned both nodes\n{log}"
    );
    job.assert_every_step_once();
    job.assert_ranks_identical(2);
    stops[0]
}

/// Processes of the job still alive anywhere: srun, step daemons, ranks (the cluster's own
/// slurmctld and slurmd are not the job's).
fn job_leftovers(c: &Cluster) -> Vec<(u32, String)> {
    c.processes()
        .into_iter()
        .filter(|(_, cmd)| {
            let prog = cmd
                .trim_start_matches([':', ' '])
                .split(' ')
                .next()
                .unwrap_or("");
            !["slurmctld", "slurmscriptd", "slurmd"].contains(&prog)
        })
        .collect()
}

#[test]
fn losing_a_node_ends_the_job_in_time_naming_it_and_a_resume_on_the_other_node_finishes() {
    let Some(c) = cluster(2) else {
        return;
    };
    let timeout = 15;
    let dir = submit_dir();
    let timeout_set = format!("dist.timeout_s={timeout}");
    let extra = [timeout_set.as_str(), "train.checkpoint_every=10"];
    let job = submit(&c, dir.path(), "lose2", 2, 1, 100_000, &extra);
    job.wait_for_step(14);
    // Everything in node2's namespace: its slurmd, the step daemon and the rank.
    let ns = format!("{}-node2", nodes_env(&c)["SAGAN_NODES_NAME"]);
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    let victims: Vec<String> = text(&pids).split_whitespace().map(str::to_string).collect();
    assert!(victims.len() >= 3, "node2 runs {victims:?}");
    let killed = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(&victims)
        .status();
    let end = job.wait_batch_end(timeout as u64 + 30);
    let took = killed.elapsed();
    assert_ne!(end["JobState"], "COMPLETED", "{}", job.diagnose());
    let log = job.log();
    assert!(log.contains("training failed"), "{}", job.diagnose());
    // Rank 0's watchdog names the ranks it may be waiting for: of two, exactly the lost one.
    let named = log
        .lines()
        .find(|l| {
            l.contains("watchdog: at step")
                && l.contains("rank 0 is on node1; the other ranks: node2 ranks 1")
        })
        .map(str::to_string);
    assert!(
        named.is_some(),
        "no line names the lost node and rank:\n{}",
        job.diagnose()
    );
    assert!(
        common::wait_for(10.0, || job_leftovers(&c).is_empty()),
        "left behind: {:?}",
        job_leftovers(&c)
    );
    // The last checkpoint is whole: a new job of the same name on node1 alone (both ranks there)
    // resumes from it and finishes.
    let latest = std::fs::read_to_string(job.run_dir().join("checkpoints/latest")).unwrap();
    let at: i64 = latest.trim().trim_start_matches("step_").parse().unwrap();
    assert!(at >= 10, "{latest}");
    eprintln!(
        "slurm nodes: node2 killed at step >= 14; the job ended ({}) after {took:?}, naming {:?}; last checkpoint {}",
        end["JobState"],
        named.unwrap().trim(),
        latest.trim()
    );
    let steps = at + 6;
    let again = submit(&c, dir.path(), "lose2", 1, 2, steps, &extra);
    let end = again.wait_end(240);
    assert_eq!(end["JobState"], "COMPLETED", "{}", again.diagnose());
    let log = again.log();
    assert!(
        log.contains("sagan: 2 rank(s) on 1 host(s): node1 ranks 0,1"),
        "{log}"
    );
    assert!(
        log.contains(&format!("step_{at:08}")),
        "resumed from the last checkpoint:\n{log}"
    );
    let logged = common::logged_steps(&job.run_dir());
    assert_eq!(logged.last().copied(), Some(steps), "{logged:?}");
    assert_eq!(
        logged.iter().filter(|&&s| s > at).count() as i64,
        steps - at,
        "{logged:?}"
    );
}

#[test]
fn a_run_moves_from_one_node_to_two_and_a_world_that_cannot_split_the_batch_is_refused() {
    let Some(c) = cluster(2) else {
        return;
    };
    let dir = submit_dir();
    // 18 images split over 2 ranks, not over 4.
    let batch = ["train.batch_size=18"];
    let first = submit(&c, dir.path(), "grow", 1, 2, 10, &batch);
    let end = first.wait_end(240);
    assert_eq!(end["JobState"], "COMPLETED", "{}", first.diagnose());
    assert!(
        first
            .log()
            .contains("sagan: 2 rank(s) on 1 host(s): node1 ranks 0,1"),
        "{}",
        first.log()
    );
    // The same run continued on two nodes, one rank each (train.steps may grow on a resume).
    let second = submit(&c, dir.path(), "grow", 2, 1, 20, &batch);
    let end = second.wait_end(240);
    assert_eq!(end["JobState"], "COMPLETED", "{}", second.diagnose());
    let log = second.log();
    assert!(
        log.contains(
            "sagan: 2 rank(s) on 2 host(s): node1 ranks 0 (local 0); node2 ranks 1 (local 0)"
        ),
        "{log}"
    );
    assert!(
        log.contains("step_00000010"),
        "resumed from the first job's end:\n{log}"
    );
    second.assert_every_step_once();
    second.assert_ranks_identical(2);
    // Four ranks cannot split the global batch of 18: the job fails at once, saying why.
    let third = submit(&c, dir.path(), "grow", 2, 2, 30, &batch);
    let end = third.wait_end(120);
    assert_eq!(end["JobState"], "FAILED", "{}", third.diagnose());
    let log = third.log();
    assert!(
        log.contains("key `train.batch_size` = 18 is not divisible by the 4 ranks"),
        "{log}"
    );
    assert_eq!(
        common::logged_steps(&third.run_dir()).len(),
        20,
        "nothing trained by the refused job"
    );
}

/// The median seconds per step of a finished run (summary.json).
fn median_step(run: &Path) -> f64 {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    s["median_step_seconds"].as_f64().unwrap()
}

#[test]
fn a_slow_link_to_one_node_slows_the_steps_and_corrupts_nothing() {
    let Some(c) = cluster(2) else {
        return;
    };
    let dir = submit_dir();
    let steps = 20;
    let fast = submit(&c, dir.path(), "fast", 2, 1, steps, &[]);
    assert_eq!(
        fast.wait_end(240)["JobState"],
        "COMPLETED",
        "{}",
        fast.diagnose()
    );
    let name = nodes_env(&c)["SAGAN_NODES_NAME"].clone();
    // nodes.sh SUBCOMMAND --name NAME ARGS...
    let delay = |args: &[&str]| {
        let o = std::process::Command::new("bash")
            .arg(repo().join("tests/infra/nodes.sh"))
            .arg(args[0])
            .args(["--name", &name])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(o.status.success(), "nodes.sh {args:?}: {}", text(&o));
    };
    // 5 ms more each way on node2's link: every all-reduce waits for it.
    let ms = 5;
    delay(&["delay", "node2", &ms.to_string()]);
    let slow = submit(&c, dir.path(), "slow", 2, 1, steps, &[]);
    let end = slow.wait_end(240);
    delay(&["undelay", "node2"]);
    assert_eq!(end["JobState"], "COMPLETED", "{}", slow.diagnose());
    slow.assert_every_step_once();
    slow.assert_ranks_identical(2);
    // The same seed and data: the delay changes the time, not one bit of the weights.
    for r in 0..2 {
        for ((n, a), (_, b)) in fast.rank_state(r).iter().zip(&slow.rank_state(r)) {
            assert!(a.equal(b), "rank {r}: {n} differs with the slow link");
        }
    }
    let (t_fast, t_slow) = (median_step(&fast.run_dir()), median_step(&slow.run_dir()));
    eprintln!("slurm nodes: median step {t_fast:.4} s, with {ms} ms more latency on node2's link {t_slow:.4} s");
    assert!(
        t_slow > t_fast,
        "the delay did not show in the step time: {t_fast} s -> {t_slow} s"
    );
}
