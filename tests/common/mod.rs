//! Helpers shared by the integration tests that run the real binary, alone or under mpirun.
#![allow(dead_code)]
use std::process::{Command, Output};

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
