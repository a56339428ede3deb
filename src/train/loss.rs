//! Hinge loss of the official code.
use tch::Tensor;

/// D's loss parts: (E[relu(1 - D(x))], E[relu(1 + D(G(z)))]).
pub fn d_hinge(real_logits: &Tensor, fake_logits: &Tensor) -> (Tensor, Tensor) {
    (
        (1.0f64 - real_logits).relu().mean(None),
        (1.0f64 + fake_logits).relu().mean(None),
    )
}

/// G's loss: -E[D(G(z))].
pub fn g_hinge(fake_logits: &Tensor) -> Tensor {
    -fake_logits.mean(None)
}
