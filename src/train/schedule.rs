//! The training loop's periodic duties in one table: what runs after which steps, in which order.
use crate::config::Config;

/// A duty of the loop, run after a step when it is due, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Losses and rates to the console, metrics.jsonl and TensorBoard (rank 0).
    Log,
    /// Spectral-norm u/v agreement across ranks, repaired from rank 0.
    BufferCheck,
    /// Sample grids and attention figures.
    Samples,
    /// FID and IS (all ranks generate).
    Evaluate,
    /// A resumable checkpoint (rank 0 writes).
    Checkpoint,
    /// Did any rank receive SIGUSR1/SIGTERM/SIGINT? Then checkpoint and exit 75.
    Preemption,
}

/// When: every `every` steps (0 = never during the run), and whether it also runs after the last
/// step of the run (otherwise the end of the run does its own final version of the duty).
#[derive(Debug, Clone, Copy)]
struct Entry {
    duty: Duty,
    every: i64,
    at_last_step: bool,
}

pub struct Schedule {
    entries: Vec<Entry>,
}

impl Schedule {
    pub fn new(cfg: &Config) -> Schedule {
        let eval_every = if cfg.eval.enabled { cfg.eval.every } else { 0 };
        let e = |duty, every, at_last_step| Entry {
            duty,
            every,
            at_last_step,
        };
        Schedule {
            entries: vec![
                e(Duty::Log, cfg.train.log_every, true),
                e(Duty::BufferCheck, cfg.dist.sync_check_every, true),
                e(Duty::Samples, cfg.train.sample_every, false),
                e(Duty::Evaluate, eval_every, false),
                e(Duty::Checkpoint, cfg.train.checkpoint_every, false),
                e(Duty::Preemption, 1, false),
            ],
        }
    }

    /// The duties due after `step` of a run of `total` steps, in order.
    pub fn due(&self, step: i64, total: i64) -> Vec<Duty> {
        self.entries
            .iter()
            .filter(|e| {
                let periodic = e.every > 0 && step % e.every == 0;
                if step == total {
                    e.at_last_step && (periodic || e.duty == Duty::Log)
                } else {
                    periodic
                }
            })
            .map(|e| e.duty)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duties_follow_the_config() {
        let mut cfg = Config::default();
        cfg.train.log_every = 10;
        cfg.train.sample_every = 20;
        cfg.train.checkpoint_every = 20;
        cfg.dist.sync_check_every = 0;
        cfg.eval.enabled = true;
        cfg.eval.every = 40;
        let s = Schedule::new(&cfg);
        assert_eq!(s.due(3, 100), vec![Duty::Preemption]);
        assert_eq!(s.due(10, 100), vec![Duty::Log, Duty::Preemption]);
        assert_eq!(
            s.due(40, 100),
            vec![
                Duty::Log,
                Duty::Samples,
                Duty::Evaluate,
                Duty::Checkpoint,
                Duty::Preemption
            ]
        );
        // The last step logs; the end of the run samples, evaluates and checkpoints itself.
        assert_eq!(s.due(100, 100), vec![Duty::Log]);
        assert_eq!(s.due(95, 95), vec![Duty::Log]);
    }
}
