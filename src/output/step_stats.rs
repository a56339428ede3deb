//! What one training step measured: the figures the reporter logs and the status line shows.
//! The trainer produces them; they live here, below it, because output is what names them.

/// What one step measured (rank-local losses; gradient norms are of the averaged gradients).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StepStats {
    pub d_loss_real: f64,
    pub d_loss_fake: f64,
    pub g_loss: f64,
    pub d_real: f64,
    pub d_fake: f64,
    pub d_grad_norm: f64,
    pub g_grad_norm: f64,
    /// Seconds this rank spent in the gradient all-reduces of the step (on GPUs: enqueue and wait).
    pub allreduce_seconds: f64,
    /// The step's gradients were not finite under autocast, and G and D were put back as they
    /// were before it (see `train::undo`).
    pub skipped: bool,
}
