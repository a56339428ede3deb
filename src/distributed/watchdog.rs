//! A bound on how long any collective may take.
//!
//! A rank that stops answering without dying (SIGSTOP, a hung node, a dead link) leaves every other
//! rank blocked in its next collective forever, and neither MPI nor NCCL notices. Every collective
//! therefore runs under [`Watchdog::enter`]; a thread per process checks the one in flight and, past
//! `dist.timeout_s`, prints which operation at which step has waited how long and ends the whole
//! job through [`super::abort::abort_job`]. It also polls a backend's asynchronous errors (NCCL).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::abort;
use crate::error::{Error, Result};

/// Exit code of a job ended by the watchdog (a collective timed out, or the backend failed).
pub const EXIT_TIMEOUT: i32 = 3;

type AsyncCheck = Box<dyn Fn() -> Result<()> + Send>;

struct InFlight {
    op: &'static str,
    elements: usize,
    started: Instant,
}

#[derive(Default)]
struct State {
    in_flight: Option<InFlight>,
    /// Where the training loop is, for the message: the step and its phase.
    step: Option<i64>,
    phase: &'static str,
    collectives: u64,
}

struct Shared {
    timeout: Duration,
    rank: usize,
    /// Where this rank and the others run, once known (see [`Watchdog::set_peers`]).
    peers: Mutex<Option<String>>,
    state: Mutex<State>,
    async_check: Mutex<Option<AsyncCheck>>,
}

/// The process's watchdog; clones share it.
#[derive(Clone)]
pub struct Watchdog(Arc<Shared>);

impl Watchdog {
    /// Starts the checking thread for this rank.
    pub fn start(rank: usize, timeout: Duration) -> Watchdog {
        let shared = Arc::new(Shared {
            timeout,
            rank,
            peers: Mutex::new(None),
            state: Mutex::new(State::default()),
            async_check: Mutex::new(None),
        });
        let dog = Watchdog(shared);
        let watcher = dog.clone();
        let poll = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("sagan-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(poll);
                if let Some(msg) = watcher.overdue() {
                    eprintln!(
                        "sagan: error (rank {}): watchdog: {msg}; aborting the job",
                        watcher.0.rank
                    );
                    abort::abort_job(EXIT_TIMEOUT);
                }
            })
            .expect("spawning the watchdog thread");
        dog
    }

    /// Also polls `check` (e.g. ncclCommGetAsyncError) every round; an error ends the job.
    /// Where the ranks run ("rank 0 is on node1; the other ranks: node2 ranks 1"): a timeout
    /// names the hosts whose ranks it may be waiting for, since the collective cannot.
    pub fn set_peers(&self, peers: String) {
        *self.0.peers.lock().unwrap_or_else(|p| p.into_inner()) = Some(peers);
    }

    pub fn watch_async_errors(&self, check: impl Fn() -> Result<()> + Send + 'static) {
        *self.0.async_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(check));
    }

    /// Names the training step and phase that the following collectives belong to.
    pub fn at(&self, step: i64, phase: &'static str) {
        let mut s = self.state();
        s.step = Some(step);
        s.phase = phase;
    }

    /// Marks a collective as in flight until the returned guard is dropped.
    pub fn enter(&self, op: &'static str, elements: usize) -> InFlightGuard<'_> {
        let mut s = self.state();
        s.collectives += 1;
        s.in_flight = Some(InFlight {
            op,
            elements,
            started: Instant::now(),
        });
        InFlightGuard(self)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The message to abort with, if a collective has overrun or the backend reported an error.
    fn overdue(&self) -> Option<String> {
        let async_error = match &*self.0.async_check.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(check) => check().err(),
            None => None,
        };
        let s = self.state();
        let place = match s.step {
            Some(step) if s.phase.is_empty() => format!("at step {step}"),
            Some(step) => format!("at step {step} ({})", s.phase),
            None => "during start-up".to_string(),
        };
        if let Some(e) = async_error {
            return Some(format!("{place}: the communication backend failed: {e}"));
        }
        let f = s.in_flight.as_ref()?;
        let waited = f.started.elapsed();
        if waited < self.0.timeout {
            return None;
        }
        let size = if f.elements > 0 {
            format!(" of {} elements", f.elements)
        } else {
            String::new()
        };
        let peers = match &*self.0.peers.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => format!(" ({p})"),
            None => String::new(),
        };
        Some(format!(
            "{place}: {}{size} (collective #{} of this rank) has not completed after {:.0} s \
             (dist.timeout_s = {}); another rank stopped taking part (stopped, hung, or its node or \
             link lost), and MPI/NCCL cannot say which: ranks that print this line were waiting, \
             the others were not{peers}",
            f.op,
            s.collectives,
            waited.as_secs_f64(),
            self.0.timeout.as_secs_f64()
        ))
    }
}

/// Clears the in-flight collective when dropped.
pub struct InFlightGuard<'a>(&'a Watchdog);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.state().in_flight = None;
    }
}

/// `dist.timeout_s` as a duration, refusing values that cannot be one.
pub fn timeout_from_secs(secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::Dist(format!(
                "dist.timeout_s = {secs} is not a positive duration"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_names_step_phase_and_operation() {
        let dog = Watchdog(Arc::new(Shared {
            timeout: Duration::from_millis(10),
            rank: 0,
            peers: Mutex::new(None),
            state: Mutex::new(State::default()),
            async_check: Mutex::new(None),
        }));
        assert!(dog.overdue().is_none());
        dog.at(12, "G step");
        let g = dog.enter("all-reduce", 97410);
        std::thread::sleep(Duration::from_millis(20));
        let msg = dog.overdue().expect("overdue");
        assert!(msg.contains("at step 12 (G step)"), "{msg}");
        assert!(msg.contains("all-reduce of 97410 elements"), "{msg}");
        assert!(!msg.contains("the other ranks"), "{msg}");
        dog.set_peers("rank 0 is on a; the other ranks: b ranks 1".into());
        let msg = dog.overdue().expect("overdue");
        assert!(
            msg.ends_with("(rank 0 is on a; the other ranks: b ranks 1)"),
            "{msg}"
        );
        drop(g);
        assert!(dog.overdue().is_none());
        dog.watch_async_errors(|| Err(Error::Dist("peer gone".into())));
        assert!(dog.overdue().unwrap().contains("peer gone"));
    }
}
