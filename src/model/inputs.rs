//! The generator's fixed inputs: class-conditional noise drawn from its own seeded generator, for
//! sample grids and evaluation, identical at every step, on every rank and after every resume.
use rand_core::{RngCore, SeedableRng};
use tch::{Device, Kind, Tensor};

/// `per_class` latents for each class, drawn from their own generator so they never disturb (or
/// depend on) the training RNG: the same grid inputs at every step and on every resume.
pub fn fixed_inputs(
    num_classes: i64,
    per_class: i64,
    z_dim: i64,
    seed: u64,
    device: Device,
) -> (Tensor, Tensor) {
    let z = fixed_noise(num_classes * per_class, z_dim, seed, None, device);
    let y = Tensor::arange(num_classes, (Kind::Int64, device))
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
}

/// `rows` standard-normal latents from `seed`'s own stream. With a `truncation` T, values with
/// |v| > T are drawn again (BigGAN's truncation trick: samples nearer the mode, less varied);
/// without one the stream is the untruncated one every grid and evaluation uses.
pub fn fixed_noise(
    rows: i64,
    z_dim: i64,
    seed: u64,
    truncation: Option<f64>,
    device: Device,
) -> Tensor {
    let n = (rows * z_dim) as usize;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let uniform =
        |rng: &mut rand_pcg::Pcg64| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let keep = |v: f64| truncation.is_none_or(|t| v.abs() <= t);
    let mut z = Vec::with_capacity(n);
    while z.len() < n {
        // Box-Muller: two standard normals from two uniforms.
        let (a, b) = (uniform(&mut rng), uniform(&mut rng));
        let r = (-2.0 * a.ln()).sqrt();
        for v in [
            r * (std::f64::consts::TAU * b).cos(),
            r * (std::f64::consts::TAU * b).sin(),
        ] {
            if keep(v) {
                z.push(v as f32);
            }
        }
    }
    z.truncate(n);
    Tensor::from_slice(&z).view([rows, z_dim]).to_device(device)
}

/// At most `wanted` classes (0 = all), spread evenly over the `num_classes`, for grids: ImageNet's
/// 1,000 rows would neither fit one forward pass nor be readable.
pub fn grid_classes(num_classes: i64, wanted: i64) -> Vec<i64> {
    let n = if wanted <= 0 {
        num_classes
    } else {
        wanted.min(num_classes)
    };
    (0..n).map(|i| i * num_classes / n).collect()
}

/// `per_class` fixed latents for each of `classes` (see [`fixed_inputs`]), labels row by row.
pub fn grid_inputs(
    classes: &[i64],
    per_class: i64,
    z_dim: i64,
    seed: u64,
    device: Device,
) -> (Tensor, Tensor) {
    grid_inputs_truncated(classes, per_class, z_dim, seed, None, device)
}

/// [`grid_inputs`] with the noise truncated at `truncation` (see [`fixed_noise`]).
pub fn grid_inputs_truncated(
    classes: &[i64],
    per_class: i64,
    z_dim: i64,
    seed: u64,
    truncation: Option<f64>,
    device: Device,
) -> (Tensor, Tensor) {
    let rows = classes.len() as i64;
    let z = fixed_noise(rows * per_class, z_dim, seed, truncation, device);
    let y = Tensor::from_slice(classes)
        .to_device(device)
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
}

/// Interpolation rows, `steps` columns each, for `sagan sample --interpolate`: the weights t of
/// the columns, evenly from 0 to 1.
fn interpolation_weights(steps: i64, device: Device) -> Tensor {
    Tensor::linspace(0.0, 1.0, steps, (Kind::Float, device)).view([1, steps, 1])
}

/// One row per class of `classes`: the class fixed, the noise moving in a straight line from
/// one latent to another (both drawn per row from `seed`). Returns z `[rows * steps, z_dim]` and
/// class indices.
pub fn noise_interpolation(
    classes: &[i64],
    steps: i64,
    z_dim: i64,
    seed: u64,
    truncation: Option<f64>,
    device: Device,
) -> (Tensor, Tensor) {
    let rows = classes.len() as i64;
    let ends = fixed_noise(2 * rows, z_dim, seed, truncation, device).view([rows, 2, z_dim]);
    let t = interpolation_weights(steps, device);
    let z: Tensor =
        ends.select(1, 0).unsqueeze(1) * (1.0 - &t) + ends.select(1, 1).unsqueeze(1) * &t;
    let y = Tensor::from_slice(classes)
        .to_device(device)
        .repeat_interleave_self_int(steps, 0, None);
    (z.view([rows * steps, z_dim]), y)
}

/// One row per consecutive pair of `classes` (the last back to the first): the noise fixed per
/// row, the class moving from one to the other as a mixture of their class-conditional BN
/// parameters. Returns z and class weights `[rows * steps, num_classes]` (see
/// `ConditionalBatchNorm::forward`).
pub fn class_interpolation(
    classes: &[i64],
    num_classes: i64,
    steps: i64,
    z_dim: i64,
    seed: u64,
    truncation: Option<f64>,
    device: Device,
) -> (Tensor, Tensor) {
    let rows = classes.len() as i64;
    let z = fixed_noise(rows, z_dim, seed, truncation, device)
        .repeat_interleave_self_int(steps, 0, None);
    let one_hot = |c: &[i64]| {
        Tensor::from_slice(c)
            .to_device(device)
            .one_hot(num_classes)
            .to_kind(Kind::Float)
            .unsqueeze(1)
    };
    let next: Vec<i64> = classes
        .iter()
        .cycle()
        .skip(1)
        .take(classes.len())
        .copied()
        .collect();
    let t = interpolation_weights(steps, device);
    let weights: Tensor = one_hot(classes) * (1.0 - &t) + one_hot(&next) * &t;
    (z, weights.view([rows * steps, num_classes]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_classes_are_bounded_and_spread() {
        assert_eq!(grid_classes(10, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(grid_classes(10, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(grid_classes(3, 10), vec![0, 1, 2]);
        let many = grid_classes(1000, 10);
        assert_eq!(many, vec![0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
        let (_, y) = grid_inputs(&many[..2], 3, 8, 1, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(&y).unwrap(),
            vec![0, 0, 0, 100, 100, 100]
        );
    }

    #[test]
    fn truncation_bounds_the_noise_and_keeps_the_untruncated_stream() {
        let plain = fixed_noise(50, 16, 9, None, Device::Cpu);
        let (z, _) = fixed_inputs(50, 1, 16, 9, Device::Cpu);
        assert!(plain.equal(&z), "grids and evaluations keep their noise");
        let t = fixed_noise(50, 16, 9, Some(0.5), Device::Cpu);
        assert!(t.abs().max().double_value(&[]) <= 0.5);
        assert!(plain.abs().max().double_value(&[]) > 0.5);
        assert!(t.equal(&fixed_noise(50, 16, 9, Some(0.5), Device::Cpu)));
    }

    #[test]
    fn interpolations_run_from_one_end_to_the_other() {
        let (z, y) = noise_interpolation(&[2, 5], 4, 8, 3, None, Device::Cpu);
        assert_eq!(z.size(), [8, 8]);
        assert_eq!(
            Vec::<i64>::try_from(&y).unwrap(),
            vec![2, 2, 2, 2, 5, 5, 5, 5]
        );
        let ends = fixed_noise(4, 8, 3, None, Device::Cpu);
        assert!(z.get(0).allclose(&ends.get(0), 1e-6, 1e-6, false));
        assert!(z.get(3).allclose(&ends.get(1), 1e-6, 1e-6, false));
        assert!(z.get(7).allclose(&ends.get(3), 1e-6, 1e-6, false));

        let (z, w) = class_interpolation(&[1, 3], 4, 3, 8, 3, None, Device::Cpu);
        assert!(z.get(0).equal(&z.get(2)), "one latent per row");
        let row = |i: i64| Vec::<f32>::try_from(&w.get(i)).unwrap();
        assert_eq!(row(0), vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(row(1), vec![0.0, 0.5, 0.0, 0.5]);
        assert_eq!(row(2), vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            row(5),
            vec![0.0, 1.0, 0.0, 0.0],
            "the last row goes back to the first class"
        );
    }

    #[test]
    fn fixed_inputs_are_reproducible_and_normal() {
        let (z1, y) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        let (z2, _) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        assert!(z1.equal(&z2));
        assert_eq!(y.int64_value(&[8]), 1);
        assert!(z1.mean(None).double_value(&[]).abs() < 0.1);
        assert!((z1.std(true).double_value(&[]) - 1.0).abs() < 0.1);
    }
}
