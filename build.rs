//! Bakes libtorch's location into every binary and test (rpath) and forces libtorch_cuda to be
//! linked even though nothing references it directly: without it CUDA is never detected (tch-rs #980).
//! Also records the libtorch version for checkpoints (`SAGAN_LIBTORCH_VERSION`).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=SAGAN_LIBTORCH_VERSION=unknown");
        return;
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    // The pip wheel: <torch>/lib is the library directory, <torch>/version.py says the version.
    let version = lib
        .parent()
        .map(|torch| torch.join("version.py"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__"))
                .map(|rest| {
                    rest.trim_matches(|c: char| c == ' ' || c == '=' || c == '\'' || c == '"')
                        .to_string()
                })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SAGAN_LIBTORCH_VERSION={version}");
}
