//! The C allocator's policy for CPU tensors (`train.host_memory`).
//!
//! libtorch allocates CPU tensors with the C library's `posix_memalign`. By default glibc serves
//! blocks above its mmap threshold with a fresh `mmap` and unmaps them when freed, so large
//! activations come back every step as new pages: a page fault per 4 KiB, zeroed by the kernel,
//! with the threads of one process queueing on its address-space lock. Serving everything from
//! the heap and never trimming it lets each step reuse the previous step's pages, but the heap
//! fragments: one CIFAR-10 process with two threads peaked at 2.2 GiB that way, against 1.7 GiB
//! when only blocks of 32 MiB and more (a handful of activations per step) are mapped, for
//! 3-5 % of the speed. (PyTorch leaves all this to the user: `MALLOC_MMAP_MAX_`, or
//! jemalloc/tcmalloc by LD_PRELOAD.)
//!
//! tcmalloc keeps freed blocks in size classes and reuses them without returning their pages, so
//! it has neither cost: on the CIFAR-10 config it ran at keep-all's speed with a lower peak than
//! map-large's. It has to serve every allocation from the process's start, so the `sagan` binary
//! restarts itself with it preloaded ([`restart_on_configured_allocator`]) before anything else
//! runs; a process that was not restarted (a library user, a missing library) falls back to
//! map-large and says so.
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::config::HostMemory;

/// Debian's libtcmalloc-minimal4 (gperftools without the profilers).
const TCMALLOC: &str = "libtcmalloc_minimal.so.4";
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];
/// A path to another tcmalloc build, instead of the search above.
pub const TCMALLOC_ENV: &str = "SAGAN_TCMALLOC";
/// Set for the restarted process, which must not restart again whatever happens.
const RESTARTED_ENV: &str = "SAGAN_ALLOCATOR_RESTARTED";

/// The tcmalloc library to preload: `$SAGAN_TCMALLOC` when set, else the first of the usual
/// library folders that holds it.
fn tcmalloc_library() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(TCMALLOC_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{TCMALLOC_ENV}={} is not a file", p.display()))
        };
    }
    LIBRARY_DIRS
        .iter()
        .map(|d| PathBuf::from(d).join(TCMALLOC))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{TCMALLOC} is in none of {} (Debian/Ubuntu: apt install libtcmalloc-minimal4; \
                 or point {TCMALLOC_ENV} at it)",
                LIBRARY_DIRS.join(", ")
            )
        })
}

/// Whether tcmalloc serves this process's allocations (it is mapped into it).
pub fn tcmalloc_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtcmalloc"))
}

/// Where `policy` is tcmalloc and this process does not run on it yet, replaces the process
/// image with the same program, arguments and environment plus tcmalloc in LD_PRELOAD: the
/// PID, open files and the launcher's variables stay, so mpirun and srun see the same rank.
/// Call it first, before MPI starts or any thread runs. It returns only when nothing is to be
/// done or the restart could not happen; [`apply`] then falls back to map-large and says why.
pub fn restart_on_configured_allocator(policy: HostMemory) {
    restore_process_name();
    if policy != HostMemory::Tcmalloc
        || tcmalloc_loaded()
        || std::env::var_os(RESTARTED_ENV).is_some()
    {
        return;
    }
    let Ok(lib) = tcmalloc_library() else {
        return;
    };
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(running_file());
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env(RESTARTED_ENV, "1");
    let err = cmd.exec();
    // Only reached when exec failed; apply() reports the fallback.
    let _ = RESTART_FAILED.set(err.to_string());
}

/// The path to exec for the restart: the running file's own path while that path still is the
/// running file (same device and inode), else `/proc/self/exe`, which always is, even after a
/// rebuild replaced (unlinked) the path: restarting must not switch a rank to another version of
/// the program. The kernel names a process after the file name it was exec'd by, so the real
/// path keeps the name `sagan` in ps, top, pgrep and Slurm's and nvidia-smi's process lists;
/// after the fallback [`restore_process_name`] renames it.
fn running_file() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let proc_exe = PathBuf::from("/proc/self/exe");
    let same_file = |path: &PathBuf| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata(&proc_exe)) else {
            return false;
        };
        a.dev() == b.dev() && a.ino() == b.ino()
    };
    match std::fs::read_link(&proc_exe) {
        Ok(path) if same_file(&path) => path,
        _ => proc_exe,
    }
}

/// A process restarted through `/proc/self/exe` is called "exe"; this gives it its program's
/// name back (what the kernel would have called it), through `/proc/self/comm`, which needs no
/// privilege for one's own process. Does nothing where the name is already right.
pub fn restore_process_name() {
    let Ok(current) = std::fs::read_to_string("/proc/self/comm") else {
        return;
    };
    if current.trim_end() != "exe" {
        return;
    }
    let Some(name) = std::env::current_exe().ok().and_then(|p| {
        let name = p.file_name()?.to_string_lossy().into_owned();
        Some(name.trim_end_matches(" (deleted)").to_string())
    }) else {
        return;
    };
    // The kernel keeps the first 15 bytes; a failure leaves the name as it was, harmlessly.
    let _ = std::fs::write("/proc/self/comm", name.as_bytes());
}

static RESTART_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the policy (glibc only; elsewhere nothing changes). Call before the first large
/// allocation: blocks already allocated keep where they are. Returns what to tell the user when
/// the policy could not be had as asked (tcmalloc missing: map-large instead).
pub fn apply(policy: HostMemory) -> Option<String> {
    let (policy, note) = match policy {
        HostMemory::Tcmalloc if tcmalloc_loaded() => return None,
        HostMemory::Tcmalloc => (HostMemory::MapLarge, Some(tcmalloc_missing())),
        p => (p, None),
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h; 32 MiB is the largest mmap threshold glibc accepts on 64-bit, and
        // 65536 its default count of mapped blocks.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_MMAP_MAX: c_int = -4;
        let settings: &[(c_int, c_int)] = match policy {
            HostMemory::MapLarge => &[
                (M_MMAP_MAX, 65536),
                (M_MMAP_THRESHOLD, 32 << 20),
                (M_TRIM_THRESHOLD, c_int::MAX),
            ],
            HostMemory::KeepAll => &[(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, c_int::MAX)],
            HostMemory::System | HostMemory::Tcmalloc => &[],
        };
        for &(param, value) in settings {
            // SAFETY: mallopt only sets allocator parameters; each value is valid for its key.
            unsafe {
                mallopt(param, value);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = policy;
    note
}

/// Who serves this process's allocations under `policy`, as applied: "tcmalloc", or glibc and
/// its policy ("glibc map-large" also where tcmalloc was asked for and is missing).
pub fn serving(policy: HostMemory) -> String {
    match policy {
        _ if tcmalloc_loaded() => "tcmalloc".into(),
        HostMemory::MapLarge | HostMemory::Tcmalloc => "glibc map-large".into(),
        HostMemory::KeepAll => "glibc keep-all".into(),
        HostMemory::System => "glibc defaults".into(),
    }
}

fn tcmalloc_missing() -> String {
    let why = match (RESTART_FAILED.get(), std::env::var_os(RESTARTED_ENV)) {
        (Some(e), _) => format!("restarting on it failed: {e}"),
        (None, Some(_)) => "it was preloaded but is not mapped".to_string(),
        (None, None) => match tcmalloc_library() {
            Err(e) => e,
            Ok(lib) => format!(
                "this process did not restart itself on {} (the sagan binary's commands do)",
                lib.display()
            ),
        },
    };
    format!("train.host_memory = \"tcmalloc\": {why}; CPU tensors use \"map-large\" instead")
}
