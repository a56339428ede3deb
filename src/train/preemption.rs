//! Preemption: SIGUSR1, SIGTERM or SIGINT asks the run to checkpoint and exit with
//! [`EXIT_PREEMPTED`] (75, EX_TEMPFAIL: "requeue me").
//!
//! A signal reaches some ranks and not others (Slurm signals every task, `kill` one process, and
//! mpirun forwards SIGUSR1/SIGUSR2 to all ranks but answers SIGTERM/SIGINT by killing them itself;
//! launch/mpirun.sh turns those into SIGUSR1). So the handler only sets a flag, and at every step
//! boundary the ranks combine their flags in one small collective: all of them stop at the same
//! step, none is left behind in a collective. A second SIGINT (Ctrl-C twice) exits at once.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use crate::distributed::{agree, Comm};
use crate::error::{Error, Result};

/// "Checkpointed; run me again with --resume."
pub const EXIT_PREEMPTED: i32 = 75;
/// A second Ctrl-C: stop without a checkpoint.
pub const EXIT_INTERRUPTED: i32 = 130;

pub struct Preemption {
    /// The signal number received, 0 for none.
    received: Arc<AtomicUsize>,
}

impl Preemption {
    pub fn install() -> Result<Preemption> {
        let received = Arc::new(AtomicUsize::new(0));
        let failed = |e: std::io::Error| Error::Train(format!("installing signal handlers: {e}"));
        let second_ctrl_c = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Registered first, so it sees the flag as it was before this SIGINT.
        signal_hook::flag::register_conditional_shutdown(
            SIGINT,
            EXIT_INTERRUPTED,
            second_ctrl_c.clone(),
        )
        .map_err(failed)?;
        signal_hook::flag::register(SIGINT, second_ctrl_c).map_err(failed)?;
        for sig in [SIGUSR1, SIGTERM, SIGINT] {
            signal_hook::flag::register_usize(sig, received.clone(), sig as usize)
                .map_err(failed)?;
        }
        Ok(Preemption { received })
    }

    /// The signal this rank received, if any.
    pub fn received_here(&self) -> Option<&'static str> {
        match self.received.load(Ordering::Relaxed) as i32 {
            0 => None,
            SIGUSR1 => Some("SIGUSR1"),
            SIGTERM => Some("SIGTERM"),
            SIGINT => Some("SIGINT"),
            _ => Some("a signal"),
        }
    }

    /// Whether any rank received a signal: the same answer on every rank.
    pub fn agreed(&self, comm: &dyn Comm) -> Result<bool> {
        agree::any(comm, self.received_here().is_some())
    }
}
