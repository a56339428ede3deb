//! launch/gpu-check.sh, the one prepared run for a lent GPU machine, run here where there is no
//! CUDA: it must go through every step, run `sagan gpu-check`'s checks on the CPU (which tests
//! their logic), leave its report, and end with a clear "no CUDA" verdict (exit code 3).
use std::process::Command;

mod common;
use common::bin;

fn python() -> String {
    std::env::var("SAGAN_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string())
}

#[test]
fn without_cuda_the_script_runs_every_check_on_the_cpu_and_says_no_cuda() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/gpu-check.sh"))
        .args(["--steps", "2"])
        .env("SAGAN_BIN", bin())
        .env("PYTHON", python())
        .env("OUT", out.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(3), "{text}");
    assert!(text.contains("gpu-check: NO CUDA"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap())
            .unwrap();
    assert_eq!(json["result"], "no_cuda", "{json}");
    let status = |name: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {json}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("cuda"), "fail");
    for name in [
        "train_fp32_vs_cpu",
        "train_bf16",
        "throughput_32px_fp32",
        "throughput_32px_bf16",
        "checkpoint_resume",
        "overlap_hooks",
    ] {
        assert_eq!(status(name), "pass", "{name}: {json}");
    }
    for name in ["throughput_128px_fp32", "throughput_128px_bf16", "nccl"] {
        assert_eq!(status(name), "skip", "{name}: {json}");
    }
    // The CUDA check names what is missing: here libtorch's CUDA is linked, the driver absent.
    let cuda = &json["checks"][0];
    assert_eq!(cuda["figures"]["libtorch_cuda_loaded"], true, "{cuda}");
    assert!(
        cuda["detail"].as_str().unwrap().contains("libcuda.so.1"),
        "{cuda}"
    );
    let md = std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap();
    assert!(md.contains("Result: **no_cuda**"), "{md}");
    assert!(md.contains("| checkpoint_resume | Pass |"), "{md}");
    assert!(md.contains("## Model FLOP utilisation"), "{md}");
    assert!(out.path().join("mfu.json").is_file());
    assert!(out.path().join("gpu-check.log").is_file());
}

#[test]
fn a_missing_binary_is_said_and_exits_2() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/gpu-check.sh"))
        .env("SAGAN_BIN", out.path().join("no-such-sagan"))
        .env("PYTHON", python())
        .env("OUT", out.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(2), "{text}");
    assert!(text.contains("FAIL: no executable"), "{text}");
}
