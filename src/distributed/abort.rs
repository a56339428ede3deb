//! Ending the whole job from any rank, at any moment.
//!
//! A rank that fails must not leave the others waiting in a collective, and must not wait itself in
//! MPI_Finalize's barrier (which is what a plain return from `main` does). So every failure path
//! (an error reaching `main`, a panic on any thread, the watchdog) prints its message first and then
//! calls [`abort_job`]: communicators that can hang are aborted (NCCL), then the launcher is told to
//! end every rank (MPI_Abort). The backends register how to do each when they start.
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

type CommAbort = Box<dyn Fn() + Send>;
type JobAbort = Box<dyn Fn(i32) + Send>;

struct Hooks {
    comm_aborts: Vec<CommAbort>,
    job_abort: Option<JobAbort>,
}

static HOOKS: Mutex<Hooks> = Mutex::new(Hooks {
    comm_aborts: Vec::new(),
    job_abort: None,
});
static ABORTING: AtomicBool = AtomicBool::new(false);
/// This process's rank and the job's size, once known (for messages and the abort decision).
static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);
static SIZE: AtomicUsize = AtomicUsize::new(1);

/// Records who this process is in the job.
pub fn set_identity(rank: usize, size: usize) {
    RANK.store(rank, Ordering::Relaxed);
    SIZE.store(size, Ordering::Relaxed);
}

/// " (rank r)" when this process is one of several ranks, else "".
pub fn rank_suffix() -> String {
    match (RANK.load(Ordering::Relaxed), SIZE.load(Ordering::Relaxed)) {
        (usize::MAX, _) | (_, 1) => String::new(),
        (r, _) => format!(" (rank {r})"),
    }
}

/// Registers how to abort a communicator whose pending collectives would otherwise hang (NCCL).
pub fn on_abort_comm(hook: impl Fn() + Send + 'static) {
    lock().comm_aborts.push(Box::new(hook));
}

/// Registers how to end every rank of the job (MPI_Abort).
pub fn set_job_abort(hook: impl Fn(i32) + Send + 'static) {
    lock().job_abort = Some(Box::new(hook));
}

fn lock() -> std::sync::MutexGuard<'static, Hooks> {
    HOOKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the job is being aborted (by another thread of this process).
pub fn aborting() -> bool {
    ABORTING.load(Ordering::SeqCst)
}

/// Ends this rank with `code`, and with it every other rank of the job. The caller has already
/// printed why. Safe to call from any thread and more than once: later callers wait for the first.
pub fn abort_job(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if ABORTING.swap(true, Ordering::SeqCst) {
        // Another thread is already ending the job; give it time, then make sure we go.
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(code);
    }
    let hooks = lock();
    for abort_comm in &hooks.comm_aborts {
        abort_comm();
    }
    // One process has no one to tell; MPI_Abort would only add a banner.
    if SIZE.load(Ordering::Relaxed) > 1 {
        if let Some(job_abort) = &hooks.job_abort {
            job_abort(code);
        }
    }
    std::process::exit(code)
}
