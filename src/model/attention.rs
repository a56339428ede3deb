//! SAGAN self-attention block: y = x + gamma * o, gamma starting at 0.
use tch::{nn, Tensor};

use super::spectral_norm::{SnConv2d, SnRegistry};
use crate::config::AttentionKind;

pub struct SelfAttention {
    theta: SnConv2d,
    phi: SnConv2d,
    g: SnConv2d,
    out: Option<SnConv2d>,
    pub gamma: Tensor,
    kind: AttentionKind,
}

impl SelfAttention {
    pub fn new(reg: &SnRegistry, p: nn::Path, c: i64, kind: AttentionKind) -> Self {
        let value_ch = match kind {
            AttentionKind::Official => c / 2,
            AttentionKind::Paper => c,
        };
        Self {
            theta: SnConv2d::new(reg, &p / "theta", c, c / 8, 1, false),
            phi: SnConv2d::new(reg, &p / "phi", c, c / 8, 1, false),
            g: SnConv2d::new(reg, &p / "g", c, value_ch, 1, false),
            out: (kind == AttentionKind::Official)
                .then(|| SnConv2d::new(reg, &p / "out", value_ch, c, 1, false)),
            gamma: p.zeros("gamma", &[1]),
            kind,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with_map(x).0
    }

    /// Also returns the attention weights, (batch, queries = H*W, keys).
    pub fn forward_with_map(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (b, _, h, w) = x.size4().expect("attention input is NCHW");
        let pool = |t: Tensor| match self.kind {
            AttentionKind::Official => t.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            AttentionKind::Paper => t,
        };
        // reshape: the convolution's output may be channels-last (see SpectralNorm::refresh).
        let theta = self.theta.forward(x).reshape([b, -1, h * w]);
        let phi = pool(self.phi.forward(x)).flatten(2, 3);
        let g = pool(self.g.forward(x)).flatten(2, 3);
        let attn = theta.transpose(1, 2).bmm(&phi).softmax(-1, theta.kind());
        let o = g.bmm(&attn.transpose(1, 2)).view([b, -1, h, w]);
        let o = match &self.out {
            Some(conv) => conv.forward(&o),
            None => o,
        };
        (x + &self.gamma * o, attn)
    }
}
