//! Skipping a non-finite step under mixed precision: G and D back where they were before it.
//!
//! Under `train.autocast` a step whose averaged gradients are not finite (one overflow in a
//! low-precision forward) is skipped, as PyTorch's GradScaler skips it, but for both networks
//! together: D's update of that step is undone too, since G's step was computed against it. The
//! decision uses the averaged gradient norms, identical on every rank, so every rank skips alike.
//! The data and noise of the skipped step are used up (the next step draws its own), so a repeat
//! of one bad batch cannot loop; too many skips in a row is divergence, and stops the run.
use tch::Tensor;

/// Skips in a row after which a run is taken to have diverged.
pub const MAX_SKIPS_IN_A_ROW: usize = 5;

/// Copies of every tensor a training step changes in place, and the optimisers' step counts.
pub struct StepUndo {
    saved: Vec<(Tensor, Tensor)>,
    adam_steps: [i64; 2],
}

impl StepUndo {
    /// Copies `live` (on its own device) for a later [`StepUndo::restore`].
    pub fn take(live: Vec<Tensor>, adam_steps: [i64; 2]) -> Self {
        let saved = tch::no_grad(|| {
            live.into_iter()
                .map(|t| {
                    let copy = t.copy();
                    (t, copy)
                })
                .collect()
        });
        Self { saved, adam_steps }
    }

    /// Writes the copies back into the live tensors; returns the optimisers' step counts.
    pub fn restore(self) -> [i64; 2] {
        tch::no_grad(|| {
            for (live, copy) in &self.saved {
                live.shallow_clone().copy_(copy);
            }
        });
        self.adam_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn restore_writes_back_every_value_and_the_step_counts() {
        let a = Tensor::arange(6, (Kind::Float, Device::Cpu));
        let b = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let (a0, b0) = (a.copy(), b.copy());
        let undo = StepUndo::take(vec![a.shallow_clone(), b.shallow_clone()], [3, 4]);
        let _ = a.shallow_clone().fill_(f64::NAN);
        let _ = b.shallow_clone().fill_(f64::INFINITY);
        assert_eq!(undo.restore(), [3, 4]);
        assert!(a.equal(&a0) && b.equal(&b0));
    }
}
