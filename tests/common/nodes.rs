//! Two "nodes" on this machine for the multi-host tests (tests/infra/nodes.sh): network
//! namespaces on a bridge, mpirun starting its daemons in them through the script's rsh agent.
//! A [`Nodes`] tears everything down when dropped, also when the test panics, and
//! [`assert_nothing_left`] checks that no namespace, link, iptables rule, state or process is left.
//!
//! They need root (namespaces, bridges, iptables). Without it they fail, loudly: CI runs as root,
//! and a multi-host test that passes without running would say nothing. `SAGAN_SKIP_NODES=1`
//! skips them on purpose, with a banner.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/infra/nodes.sh")
}

/// stdout and stderr of a finished command.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// False (after a banner) when the caller asked to skip these tests; panics without root.
pub fn available() -> bool {
    if std::env::var_os("SAGAN_SKIP_NODES").is_some_and(|v| v == "1") {
        eprintln!(
            "\n!!!!!!!! NODE TESTS SKIPPED (SAGAN_SKIP_NODES=1): sagan was NOT tested across hosts\n"
        );
        return false;
    }
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "the multi-host tests need root (network namespaces, a bridge, iptables); run them as \
         root, or set SAGAN_SKIP_NODES=1 to skip them knowingly"
    );
    true
}

/// A name no other test (of this or a concurrent run) uses: at most 12 of [a-z0-9].
pub fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}x{}",
        std::process::id() % 10_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Namespaces head, node1 and node2 on a bridge, from `nodes.sh up`.
pub struct Nodes {
    pub name: String,
    pub env: HashMap<String, String>,
    /// mpirun's arguments for these nodes: rsh agent, transports on the bridge's subnet.
    pub mpirun_args: Vec<String>,
}

impl Nodes {
    /// Two nodes with `slots` slots each.
    pub fn up(slots: usize) -> Nodes {
        let name = unique_name();
        let out = Command::new("bash")
            .arg(script())
            .args(["up", "--name", &name, "--slots", &slots.to_string()])
            .output()
            .expect("running nodes.sh");
        // From here on the guard owns whatever was made, even if `up` failed halfway.
        let mut nodes = Nodes {
            name,
            env: HashMap::new(),
            mpirun_args: Vec::new(),
        };
        assert!(out.status.success(), "nodes.sh up failed:\n{}", text(&out));
        let env_file = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let env = std::fs::read_to_string(&env_file).expect("the env file of nodes.sh up");
        for line in env.lines() {
            if let Some((k, v)) = line.split_once('=') {
                nodes
                    .env
                    .insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        let args =
            std::fs::read_to_string(Path::new(&nodes.env["SAGAN_NODES_DIR"]).join("mpirun-args"))
                .unwrap();
        nodes.mpirun_args = args.lines().map(str::to_string).collect();
        nodes
    }

    pub fn hostfile(&self) -> &str {
        &self.env["SAGAN_NODES_HOSTFILE"]
    }

    /// The root-namespace end of node k's link.
    pub fn veth(&self, k: usize) -> &str {
        &self.env[&format!("SAGAN_NODES_VETH_{k}")]
    }

    /// (rx, tx) bytes of node k's link, counted at the bridge's end.
    pub fn link_bytes(&self, k: usize) -> (u64, u64) {
        let read = |what: &str| -> u64 {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", self.veth(k)))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        (read("rx_bytes"), read("tx_bytes"))
    }

    /// The inode of host's network namespace (`/proc/PID/ns/net` of its processes has it too).
    pub fn netns_inode(&self, host: &str) -> u64 {
        std::fs::metadata(format!("/run/netns/{}-{host}", self.name))
            .unwrap()
            .ino()
    }

    /// Processes in host's network namespace.
    pub fn pids(&self, host: &str) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &format!("{}-{host}", self.name)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// `nodes.sh SUB... --name NAME`, asserted to succeed; returns its output.
    pub fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .args(["--name", &self.name])
            .args(&args[1..])
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "nodes.sh {args:?} failed:\n{t}");
        t
    }

    /// mpirun in this (root) namespace, `per_node` ranks on each node, nothing bound (two
    /// "nodes" share this machine's cores).
    pub fn mpirun(&self, per_node: usize) -> Command {
        let mut c = Command::new("mpirun");
        self.mpirun_options(&mut c, per_node);
        c
    }

    /// mpirun on the head namespace, as on a login node (see nodes.sh: a lost node is given up
    /// in seconds there, not after the root namespace's TCP timeout).
    pub fn mpirun_on_head(&self, per_node: usize) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .args(["exec", "--name", &self.name, "head", "mpirun"]);
        self.mpirun_options(&mut c, per_node);
        c
    }

    fn mpirun_options(&self, c: &mut Command, per_node: usize) {
        c.args(["--allow-run-as-root", "--hostfile", self.hostfile()])
            .args(&self.mpirun_args)
            .args(["-np", &(2 * per_node).to_string()])
            .args([
                "--map-by",
                &format!("ppr:{per_node}:node"),
                "--bind-to",
                "none",
            ]);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        down(&self.name);
    }
}

/// `nodes.sh down --name NAME` (reports a failure; never panics: it runs in Drop).
pub fn down(name: &str) {
    let out = Command::new("bash")
        .arg(script())
        .args(["down", "--name", name])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!("nodes.sh down --name {name} failed:\n{}", text(&o)),
        Err(e) => eprintln!("nodes.sh down --name {name}: {e}"),
    }
}

/// Runs `nodes.sh down` for a name when dropped: for tests that let the script make nodes.
pub struct DownOnDrop(pub String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        down(&self.0);
    }
}

/// Asserts that nothing of nodes `name` is left: namespaces, links, iptables rules, state,
/// delay.py processes.
pub fn assert_nothing_left(name: &str) {
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "namespaces left: {netns:?}");
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}-")))
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");
    if let Ok(out) = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
    {
        let rules = String::from_utf8_lossy(&out.stdout).into_owned();
        let tag = format!("sagan-nodes:{name}");
        assert!(
            !rules.lines().any(|l| l.contains(&format!("{tag}\""))
                || l.ends_with(&tag)
                || l.contains(&format!("{tag} "))),
            "iptables rules left:\n{rules}"
        );
    }
    let state = Path::new("/run/sagan-nodes").join(name);
    assert!(!state.exists(), "{} left", state.display());
}

/// Waits for `child` at most `secs`; kills it and panics with its output file after that.
pub fn wait_within(child: &mut Child, secs: f64, log: &Path) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if t0.elapsed() > Duration::from_secs_f64(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {secs} s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child whose output goes to a file; killed (with what it started in the nodes' namespaces,
/// which `Nodes` removes) if the test ends before it does.
pub struct Job {
    pub child: Child,
    pub log: PathBuf,
}

impl Job {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Job {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Job { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            for pid in super::descendants(self.child.id()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// "G 25602 params, D 17202 params" of the start-up line: the elements all-reduced per step.
pub fn gradient_elements(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.contains(" params, D "))
        .unwrap_or_else(|| panic!("no start-up line:\n{out}"));
    let num_before = |word: &str| -> u64 {
        let i = line.find(word).unwrap();
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    num_before(" params, D") + num_before(" params, steps")
}
