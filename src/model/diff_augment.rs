//! Differentiable augmentation (DiffAugment, Zhao et al. 2020, "Differentiable Augmentation for
//! Data-Efficient GAN Training"): the same random transforms applied to every image D sees, real
//! and generated, in D's step and in G's, with gradients flowing through them to G. The three
//! transforms of the paper's "color,translation,cutout" policy, as its reference code defines
//! them:
//! - color: brightness + U(-0.5, 0.5); saturation (x - mean over channels) * U(0, 2) + mean;
//!   contrast (x - mean over the image) * U(0.5, 1.5) + mean;
//! - translation: a shift by up to 1/8 of the image size in each direction, zero-filled;
//! - cutout: a zeroed square of half the image size at a random position (clipped at the edges).
//!
//! The random parameters come from a seeded CPU generator (`Params::draw`), one set per image of
//! the global batch, of which each rank takes its own rows, so they depend only on the seed, the
//! step and the phase: a resumed run, or the same run on another number of ranks, draws the same
//! transforms for the same images.
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// One transform of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Color,
    Translation,
    Cutout,
}

/// The reference code's ratios: translation by up to 1/8 of the size, cutout of 1/2.
const TRANSLATION_RATIO: f64 = 0.125;
const CUTOUT_RATIO: f64 = 0.5;

/// The ops of a policy string such as "color,translation,cutout" (the paper's), in order.
pub fn parse_policy(policy: &str) -> Result<Vec<Op>> {
    policy
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "color" => Ok(Op::Color),
            "translation" => Ok(Op::Translation),
            "cutout" => Ok(Op::Cutout),
            other => Err(Error::Model(format!(
                "train.augment_policy: unknown transform \"{other}\"; the transforms are {} \
                 (comma-separated)",
                crate::config::AUGMENT_OPS.join(", ")
            ))),
        })
        .collect()
}

/// The random parameters of one augmentation of `n` images of `size` x `size` pixels.
pub struct Params {
    brightness: Tensor,
    saturation: Tensor,
    contrast: Tensor,
    /// Shifts in pixels, in -shift..=shift.
    translate: (Tensor, Tensor),
    /// Centres of the cutout squares.
    cutout: (Tensor, Tensor),
}

impl Params {
    /// Draws the parameters of `global` images from `seed` on the CPU and keeps rows
    /// `first..first + n` on `device`. Every parameter is drawn whatever the policy, so that a
    /// policy's draws do not depend on which other transforms it holds.
    pub fn draw(seed: i64, global: i64, first: i64, n: i64, size: i64, device: Device) -> Self {
        tch::manual_seed(seed);
        let cpu = (Kind::Float, Device::Cpu);
        let rows = |t: Tensor| t.narrow(0, first, n).to_device(device);
        let brightness = rows(Tensor::rand([global, 1, 1, 1], cpu) - 0.5);
        let saturation = rows(Tensor::rand([global, 1, 1, 1], cpu) * 2.0);
        let contrast = rows(Tensor::rand([global, 1, 1, 1], cpu) + 0.5);
        let shift = (size as f64 * TRANSLATION_RATIO + 0.5) as i64;
        let long = (Kind::Int64, Device::Cpu);
        let tx = rows(Tensor::randint_low(-shift, shift + 1, [global, 1, 1], long));
        let ty = rows(Tensor::randint_low(-shift, shift + 1, [global, 1, 1], long));
        let cut = cutout_size(size);
        let high = size + (1 - cut % 2);
        let cx = rows(Tensor::randint_low(0, high, [global, 1, 1], long));
        let cy = rows(Tensor::randint_low(0, high, [global, 1, 1], long));
        Self {
            brightness,
            saturation,
            contrast,
            translate: (tx, ty),
            cutout: (cx, cy),
        }
    }
}

fn cutout_size(size: i64) -> i64 {
    (size as f64 * CUTOUT_RATIO + 0.5) as i64
}

/// `x` (`[n, C, H, W]`, H = W) with the policy's transforms applied in order, differentiably.
pub fn augment(x: &Tensor, ops: &[Op], p: &Params) -> Tensor {
    ops.iter().fold(x.shallow_clone(), |x, op| match op {
        Op::Color => color(&x, p),
        Op::Translation => translation(&x, p),
        Op::Cutout => cutout(&x, p),
    })
}

fn color(x: &Tensor, p: &Params) -> Tensor {
    let x = x + p.brightness.to_kind(x.kind());
    let mean = x.mean_dim(1, true, x.kind());
    let x = (&x - &mean) * p.saturation.to_kind(x.kind()) + mean;
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, x.kind());
    (&x - &mean) * p.contrast.to_kind(x.kind()) + mean
}

/// Index grids `[n, h, w]` of the batch, row and column of every output pixel.
fn grids(n: i64, h: i64, w: i64, device: Device) -> (Tensor, Tensor, Tensor) {
    let long = (Kind::Int64, device);
    let b = Tensor::arange(n, long)
        .view([n, 1, 1])
        .expand([n, h, w], false);
    let r = Tensor::arange(h, long)
        .view([1, h, 1])
        .expand([n, h, w], false);
    let c = Tensor::arange(w, long)
        .view([1, 1, w])
        .expand([n, h, w], false);
    (b, r, c)
}

fn translation(x: &Tensor, p: &Params) -> Tensor {
    let (n, _, h, w) = x.size4().expect("[n, C, H, W] images");
    let (b, r, c) = grids(n, h, w, x.device());
    // Padded by one zero pixel on every side: a shifted-out index lands on the padding.
    let r = (r + &p.translate.0 + 1).clamp(0, h + 1);
    let c = (c + &p.translate.1 + 1).clamp(0, w + 1);
    let padded = x.constant_pad_nd([1, 1, 1, 1]).permute([0, 2, 3, 1]);
    padded
        .index(&[Some(b), Some(r), Some(c)])
        .permute([0, 3, 1, 2])
        .contiguous()
}

fn cutout(x: &Tensor, p: &Params) -> Tensor {
    let (n, _, h, w) = x.size4().expect("[n, C, H, W] images");
    let cut = cutout_size(h);
    let (b, r, c) = grids(n, cut, cut, x.device());
    let r = (r + &p.cutout.0 - cut / 2).clamp(0, h - 1);
    let c = (c + &p.cutout.1 - cut / 2).clamp(0, w - 1);
    let mask = Tensor::ones([n, h, w], (x.kind(), x.device()));
    let zeros = Tensor::zeros([1], (x.kind(), x.device()));
    let mask = mask.index_put(&[Some(b), Some(r), Some(c)], &zeros, false);
    x * mask.unsqueeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::IndexOp;

    const ALL: [Op; 3] = [Op::Color, Op::Translation, Op::Cutout];

    /// The (row, column) shift and cutout centre of image `i`.
    fn describe(p: &Params, i: i64) -> (i64, i64, i64, i64) {
        let at = |t: &Tensor| t.i(i).int64_value(&[0, 0]);
        (
            at(&p.translate.0),
            at(&p.translate.1),
            at(&p.cutout.0),
            at(&p.cutout.1),
        )
    }

    /// libtorch's CPU generator is one per process and the tests run on parallel threads: each
    /// test that draws holds this, so another test's reseeding cannot land between its draws.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        RNG.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn images(n: i64, c: i64, size: i64) -> Tensor {
        tch::manual_seed(11);
        Tensor::rand([n, c, size, size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
    }

    #[test]
    fn policy_names_parse_and_unknown_ones_are_named() {
        assert_eq!(
            parse_policy("color,translation,cutout").unwrap(),
            ALL.to_vec()
        );
        assert_eq!(parse_policy(" cutout ").unwrap(), vec![Op::Cutout]);
        let msg = parse_policy("color,flip").unwrap_err().to_string();
        assert!(
            msg.contains("\"flip\"") && msg.contains("train.augment_policy"),
            "{msg}"
        );
    }

    #[test]
    fn translation_shifts_with_zero_fill() {
        let _rng = serial();
        let x = images(4, 1, 16);
        let p = Params::draw(5, 4, 0, 4, 16, Device::Cpu);
        let y = translation(&x, &p);
        for i in 0..4 {
            let (tx, ty, _, _) = describe(&p, i);
            assert!(tx.abs() <= 2 && ty.abs() <= 2, "shift of at most 1/8 of 16");
            // Output pixel (r, c) is input pixel (r + tx, c + ty), or 0 outside.
            for (r, c) in [(0i64, 0i64), (7, 9), (15, 15), (3, 14)] {
                let (sr, sc) = (r + tx, c + ty);
                let want = if (0..16).contains(&sr) && (0..16).contains(&sc) {
                    x.double_value(&[i, 0, sr, sc])
                } else {
                    0.0
                };
                assert_eq!(
                    y.double_value(&[i, 0, r, c]),
                    want,
                    "image {i} at ({r}, {c})"
                );
            }
        }
    }

    #[test]
    fn cutout_zeroes_one_square_of_half_the_size() {
        let _rng = serial();
        let x = images(6, 3, 16) + 3.0; // no pixel is 0 before the cut
        let p = Params::draw(7, 6, 0, 6, 16, Device::Cpu);
        let y = cutout(&x, &p);
        for i in 0..6 {
            let zeros = y
                .i(i)
                .eq(0.0)
                .to_kind(Kind::Int64)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let (_, _, cx, cy) = describe(&p, i);
            // 8 x 8 pixels centred at (cx, cy), clipped by the edges, in all 3 channels.
            let span = |centre: i64| (centre - 4).max(0)..(centre + 4).min(16);
            let want = 3 * span(cx).count() as i64 * span(cy).count() as i64;
            assert_eq!(zeros, want, "image {i}, centre ({cx}, {cy})");
        }
    }

    #[test]
    fn gradients_flow_through_every_transform() {
        let _rng = serial();
        let p = Params::draw(3, 4, 0, 4, 16, Device::Cpu);
        let share_with_gradient = |ops: &[Op]| {
            let x = images(4, 3, 16).set_requires_grad(true);
            augment(&x, ops, &p).sum(Kind::Float).backward();
            let g = x.grad();
            assert!(g.isfinite().all().int64_value(&[]) == 1);
            g.ne(0.0)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        // Cutout removes a quarter of each image and translation shifts a border out: those
        // pixels get no gradient, the rest do.
        let geometric = share_with_gradient(&[Op::Translation, Op::Cutout]);
        assert!(
            geometric > 0.5 && geometric < 0.8,
            "share with a gradient: {geometric}"
        );
        // Colour's image means reach every pixel, even those cut out afterwards.
        assert_eq!(share_with_gradient(&ALL), 1.0);
    }

    #[test]
    fn draws_depend_on_the_seed_only_and_rows_match_the_global_batch() {
        let _rng = serial();
        let x = images(8, 1, 16);
        let whole = Params::draw(42, 8, 0, 8, 16, Device::Cpu);
        let again = Params::draw(42, 8, 0, 8, 16, Device::Cpu);
        assert!(augment(&x, &ALL, &whole).equal(&augment(&x, &ALL, &again)));
        // Rank 1 of 2 draws the same parameters for its rows as one rank does for them.
        let second = Params::draw(42, 8, 4, 4, 16, Device::Cpu);
        let mine = augment(&x.narrow(0, 4, 4), &ALL, &second);
        assert!(mine.equal(&augment(&x, &ALL, &whole).narrow(0, 4, 4)));
        let other = Params::draw(43, 8, 0, 8, 16, Device::Cpu);
        assert!(!augment(&x, &ALL, &whole).equal(&augment(&x, &ALL, &other)));
    }
}
