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
    let n = (num_classes * per_class * z_dim) as usize;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let uniform =
        |rng: &mut rand_pcg::Pcg64| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut z = Vec::with_capacity(n);
    while z.len() < n {
        // Box-Muller: two standard normals from two uniforms.
        let (a, b) = (uniform(&mut rng), uniform(&mut rng));
        let r = (-2.0 * a.ln()).sqrt();
        z.push((r * (std::f64::consts::TAU * b).cos()) as f32);
        z.push((r * (std::f64::consts::TAU * b).sin()) as f32);
    }
    z.truncate(n);
    let z = Tensor::from_slice(&z)
        .view([num_classes * per_class, z_dim])
        .to_device(device);
    let y = Tensor::arange(num_classes, (Kind::Int64, device))
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
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
    let rows = classes.len() as i64;
    let (z, _) = fixed_inputs(rows, per_class, z_dim, seed, device);
    let y = Tensor::from_slice(classes)
        .to_device(device)
        .repeat_interleave_self_int(per_class, 0, None);
    (z, y)
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
    fn fixed_inputs_are_reproducible_and_normal() {
        let (z1, y) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        let (z2, _) = fixed_inputs(10, 8, 64, 5, Device::Cpu);
        assert!(z1.equal(&z2));
        assert_eq!(y.int64_value(&[8]), 1);
        assert!(z1.mean(None).double_value(&[]).abs() < 0.1);
        assert!((z1.std(true).double_value(&[]) - 1.0).abs() < 0.1);
    }
}
