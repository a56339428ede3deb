//! Bakes libtorch's location into every binary and test (rpath) and forces libtorch_cuda to be
//! linked even though nothing references it directly: without it CUDA is never detected (tch-rs #980).
//! Also records the libtorch version for checkpoints (`SAGAN_LIBTORCH_VERSION`), and compiles the
//! C++ shim that registers autograd hooks (`csrc/`), against the same libtorch headers.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/grad_ready.cpp");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB): sagan needs its headers",
    ));
    compile_shim(&lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-check-cfg=cfg(sagan_cuda)");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    // src/distributed/cuda_stream.rs calls c10_cuda's current-stream functions directly.
    if lib.join("libc10_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-cfg=sagan_cuda");
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

/// The autograd-hook shim, built the way torch-sys builds its own C++ (same headers, standard and
/// C++ ABI), so that it links against the libtorch tch uses.
fn compile_shim(lib: &std::path::Path) {
    let include = lib
        .parent()
        .expect("libtorch's lib directory has a parent")
        .join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/grad_ready.cpp")
        .compile("sagan_grad_ready");
}
