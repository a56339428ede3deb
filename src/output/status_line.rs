//! Rank 0's live progress line during training: step, images/s, ETA and the last losses, redrawn
//! in place after every step. Only on a terminal that is really the user's (see
//! [`ProgressKind`]); everywhere else the plain log lines every `train.log_every` steps are the
//! whole record, so CI and Slurm logs carry no carriage returns.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::StepStats;
use crate::config::ProgressKind;
use crate::data::progress::clock;

/// At most this often, so drawing costs nothing next to a step.
const REDRAW: Duration = Duration::from_millis(200);

pub struct StatusLine {
    enabled: bool,
    drawn: bool,
    last: Option<Instant>,
}

/// Whether `kind` draws a line here: `Auto` needs a terminal and no mpirun (OpenMPI gives every
/// rank a pseudo-terminal, so `isatty` says nothing about where the output ends up).
pub fn draws_line(kind: ProgressKind, stdout_is_terminal: bool, under_mpirun: bool) -> bool {
    match kind {
        ProgressKind::Line => true,
        ProgressKind::Plain => false,
        ProgressKind::Auto => stdout_is_terminal && !under_mpirun,
    }
}

/// What the line says after `step` of `total`, at `images_per_second` and `seconds_per_step`.
pub fn line(
    step: i64,
    total: i64,
    images_per_second: f64,
    seconds_per_step: f64,
    s: &StepStats,
) -> String {
    let eta = clock((total - step).max(0) as f64 * seconds_per_step);
    format!(
        "step {step}/{total} ({:.0}%)  {images_per_second:.1} img/s  ETA {eta}  D {:.3} (real {:.3} fake {:.3})  G {:.3}",
        100.0 * step as f64 / total.max(1) as f64,
        s.d_loss_real + s.d_loss_fake,
        s.d_loss_real,
        s.d_loss_fake,
        s.g_loss
    )
}

impl StatusLine {
    pub fn new(kind: ProgressKind, rank0: bool) -> Self {
        let under_mpirun = std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
            || std::env::var_os("PMI_SIZE").is_some();
        Self {
            enabled: rank0 && draws_line(kind, std::io::stdout().is_terminal(), under_mpirun),
            drawn: false,
            last: None,
        }
    }

    /// Redraws the line (at most every [`REDRAW`]).
    pub fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last = Some(Instant::now());
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{}\x1b[K", text());
        let _ = out.flush();
        self.drawn = true;
    }

    /// Wipes the line, so that other output starts at the left margin; the next update redraws it.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
            self.drawn = false;
            self.last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_draws_only_on_a_terminal_without_mpirun() {
        assert!(draws_line(ProgressKind::Auto, true, false));
        assert!(!draws_line(ProgressKind::Auto, true, true));
        assert!(!draws_line(ProgressKind::Auto, false, false));
        assert!(draws_line(ProgressKind::Line, false, true));
        assert!(!draws_line(ProgressKind::Plain, true, false));
    }

    #[test]
    fn line_has_step_rate_eta_and_losses() {
        let s = StepStats {
            d_loss_real: 0.25,
            d_loss_fake: 0.5,
            g_loss: 1.5,
            ..Default::default()
        };
        let l = line(150, 750, 160.0, 0.4, &s);
        assert!(l.starts_with("step 150/750 (20%)"), "{l}");
        assert!(l.contains("160.0 img/s"), "{l}");
        assert!(l.contains("ETA 4m00s"), "{l}");
        assert!(
            l.contains("D 0.750 (real 0.250 fake 0.500)  G 1.500"),
            "{l}"
        );
    }
}
