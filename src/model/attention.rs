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
        // Tokens as rows, (batch, positions, channels): a view of channels-last activations (see
        // SpectralNorm::refresh), and the attention output comes back channels-last as well.
        let tokens = |t: Tensor| {
            let c = t.size()[1];
            t.permute([0, 2, 3, 1]).reshape([b, -1, c])
        };
        let theta = tokens(self.theta.forward(x));
        let phi = tokens(pool(self.phi.forward(x)));
        let g = tokens(pool(self.g.forward(x)));
        let attn = theta.bmm(&phi.transpose(1, 2)).softmax(-1, theta.kind());
        let o = attn.bmm(&g).view([b, h, w, -1]).permute([0, 3, 1, 2]);
        let o = match &self.out {
            Some(conv) => conv.forward(&o),
            None => o,
        };
        (x + &self.gamma * o, attn)
    }
}
