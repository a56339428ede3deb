//! A progress line for long jobs (packing a dataset): count, images/s, ETA. On a terminal it is
//! redrawn in place; in a log file (Slurm) a line every 10 s, so logs stay short and readable.
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    start: Instant,
    last: Instant,
    every: Duration,
    tty: bool,
    enabled: bool,
}

pub fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    pub fn new(label: &str, total: u64, enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let now = Instant::now();
        Self {
            label: label.into(),
            total,
            start: now,
            last: now,
            every: Duration::from_secs(if tty { 1 } else { 10 }),
            tty,
            enabled,
        }
    }

    /// The line for `done` items after `elapsed` seconds.
    pub fn line(&self, done: u64, elapsed: f64) -> String {
        let rate = done as f64 / elapsed.max(1e-9);
        let eta = if rate > 0.0 {
            clock((self.total.saturating_sub(done)) as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{}: {done}/{} images ({:.1}%), {rate:.0} images/s, ETA {eta}",
            self.label,
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64
        )
    }

    /// Reports `done` if enough time has passed since the last report.
    pub fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let line = self.line(done, self.start.elapsed().as_secs_f64());
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }

    /// The final line (always printed when enabled).
    pub fn finish(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let line = self.line(done, self.start.elapsed().as_secs_f64());
        let line = line.split(", ETA").next().unwrap_or(&line).to_string();
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            writeln!(
                err,
                "\r{line}, {}\x1b[K",
                clock(self.start.elapsed().as_secs_f64())
            )
        } else {
            writeln!(err, "{line}, {}", clock(self.start.elapsed().as_secs_f64()))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_rate_and_eta() {
        let p = Progress::new("prepare", 1000, false);
        let line = p.line(250, 5.0);
        assert!(line.contains("250/1000 images (25.0%)"), "{line}");
        assert!(line.contains("50 images/s"), "{line}");
        assert!(line.contains("ETA 0m15s"), "{line}");
    }
}
