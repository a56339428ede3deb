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
        // The softmax in fp32 whatever the logits' precision: under bf16 autocast they come
        // from a bf16 product, and a bf16 softmax over H*W keys loses the small weights.
        let attn = theta
            .bmm(&phi.transpose(1, 2))
            .softmax(-1, tch::Kind::Float);
        let o = attn.bmm(&g).view([b, h, w, -1]).permute([0, 3, 1, 2]);
        let o = match &self.out {
            Some(conv) => conv.forward(&o),
            None => o,
        };
        (x + &self.gamma * o, attn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Autocast;
    use crate::model::SnMode;
    use tch::{Device, Kind};

    /// Under bf16 autocast the projections run in bf16 but the attention weights are an fp32
    /// softmax: fp32 maps whose rows sum to one to fp32 precision.
    #[test]
    fn the_softmax_stays_fp32_under_bf16_autocast() {
        for kind in [AttentionKind::Official, AttentionKind::Paper] {
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let reg = SnRegistry::new(1e-12);
            let attn = SelfAttention::new(&reg, vs.root() / "a", 32, kind);
            reg.refresh(SnMode::Detached);
            let x = Tensor::randn([2, 32, 8, 8], (Kind::Float, Device::Cpu));
            let (y, map) = tch::no_grad(|| {
                crate::host::autocast::run(Autocast::Bf16, Device::Cpu, || {
                    attn.forward_with_map(&x)
                })
            });
            assert_eq!(map.kind(), Kind::Float, "{kind:?}");
            let worst = (map.sum_dim_intlist(-1, false, Kind::Double) - 1.0)
                .abs()
                .max()
                .double_value(&[]);
            assert!(worst < 1e-5, "{kind:?}: rows sum to 1 within {worst}");
            assert!(bool::try_from(y.isfinite().all()).unwrap());
        }
    }
}
