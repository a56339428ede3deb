//! `sagan sample`'s truncation, interpolation rows and .npz output, through the real binary on a
//! generator from a short real run; the .npz is read back by numpy itself.
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Kind, Tensor};

mod common;
use common::{bin, failed, ok, small, train};

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn trained_g_ema(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    ok(&train(0, &small(&run, 2)).output().unwrap());
    run.join("G_ema.safetensors")
}

/// Runs `sagan sample` on `g` with `args` and returns the tensors file's (z, y, images).
fn sample(g: &Path, dir: &Path, name: &str, args: &[&str]) -> (Tensor, Tensor, Tensor) {
    let tensors = dir.join(format!("{name}.safetensors"));
    ok(&Command::new(bin())
        .arg("sample")
        .arg("--weights")
        .arg(g)
        .arg("--out")
        .arg(dir.join(format!("{name}.png")))
        .arg("--tensors")
        .arg(&tensors)
        .args(args)
        .output()
        .unwrap());
    let read = Tensor::read_safetensors(&tensors).unwrap();
    let get = |n: &str| read.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
    (get("z"), get("y"), get("images"))
}

#[test]
fn truncation_bounds_the_noise_and_interpolations_move_along_straight_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = trained_g_ema(d);
    let grid = ["--classes", "0,4,9", "--per-class", "5"];

    let (z, _, plain) = sample(&g, d, "plain", &grid);
    assert!(z.abs().max().double_value(&[]) > 1.0);
    let (zt, _, truncated) = sample(
        &g,
        d,
        "truncated",
        &[&grid[..], &["--truncation", "0.5"]].concat(),
    );
    assert!(zt.abs().max().double_value(&[]) <= 0.5, "every |z| <= T");
    assert!(!truncated.equal(&plain));
    let (zt2, _, _) = sample(
        &g,
        d,
        "truncated2",
        &[&grid[..], &["--truncation", "0.5"]].concat(),
    );
    assert!(zt.equal(&zt2), "the same seed, the same truncated noise");

    // z rows: within a row, consecutive latents differ by the same step (a straight line) and
    // the class stays; 3 rows x 5 steps.
    let (z, y, images) = sample(&g, d, "z", &[&grid[..], &["--interpolate", "z"]].concat());
    assert_eq!(images.size()[0], 15);
    assert_eq!(
        Vec::<i64>::try_from(&y).unwrap(),
        [0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 9, 9, 9, 9, 9]
    );
    let row = z.narrow(0, 5, 5);
    let steps = row.narrow(0, 1, 4) - row.narrow(0, 0, 4);
    assert!(steps.allclose(&steps.get(0).expand_as(&steps), 1e-5, 1e-5, false));
    assert!(steps.abs().max().double_value(&[]) > 0.01);

    // class rows: one latent per row; the class weights go from one-hot on class i to one-hot
    // on the next chosen class, summing to 1 throughout.
    let (z, w, _) = sample(
        &g,
        d,
        "class",
        &[&grid[..], &["--interpolate", "class"]].concat(),
    );
    assert!(z.get(5).equal(&z.get(9)));
    assert_eq!(w.size(), [15, 10]);
    let sums = w.sum_dim_intlist(1, false, Kind::Float);
    assert!(sums.allclose(&sums.ones_like(), 1e-6, 1e-6, false));
    let at = |r: i64, c: i64| w.double_value(&[r, c]);
    assert_eq!(
        (at(0, 0), at(4, 4)),
        (1.0, 1.0),
        "row 0: class 0 to class 4"
    );
    assert_eq!(
        (at(10, 9), at(14, 0)),
        (1.0, 1.0),
        "the last row goes back to class 0"
    );
    assert_eq!((at(2, 0), at(2, 4)), (0.5, 0.5));
}

#[test]
fn npz_holds_the_images_as_numpy_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = trained_g_ema(d);
    let npz = d.join("images.npz");
    let (_, _, images) = {
        let args = [
            "--classes",
            "1,2",
            "--per-class",
            "3",
            "--npz",
            npz.to_str().unwrap(),
        ];
        sample(&g, d, "npz", &args)
    };
    let script = "import numpy as np, sys, json\n\
                  f = np.load(sys.argv[1])\n\
                  a = f['arr_0']\n\
                  print(json.dumps({'shape': list(a.shape), 'dtype': str(a.dtype), \
                  'labels': f['labels'].tolist(), 'sum': int(a.astype(np.int64).sum()), \
                  'first': int(a[1, 5, 7, 0])}))";
    let out = ok(&Command::new(python())
        .args(["-c", script])
        .arg(&npz)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["shape"], serde_json::json!([6, 32, 32, 1]));
    assert_eq!(v["dtype"], "uint8");
    assert_eq!(v["labels"], serde_json::json!([1, 1, 1, 2, 2, 2]));
    // The same pixels as the images, quantised as grids and evaluation quantise them.
    let pixels = sagan::metrics::eval::quantise(&images).to_kind(Kind::Int64);
    assert_eq!(
        v["sum"].as_i64().unwrap(),
        pixels.sum(Kind::Int64).int64_value(&[])
    );
    assert_eq!(
        v["first"].as_i64().unwrap(),
        pixels.int64_value(&[1, 0, 5, 7])
    );
}

#[test]
fn bad_sampling_options_are_refused_with_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let g = trained_g_ema(dir.path());
    let run = |args: &[&str]| {
        failed(
            &Command::new(bin())
                .arg("sample")
                .arg("--weights")
                .arg(&g)
                .arg("--out")
                .arg(dir.path().join("x.png"))
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let msg = run(&["--truncation", "0"]);
    assert!(msg.contains("--truncation must be a number > 0"), "{msg}");
    let msg = run(&["--interpolate", "z", "--per-class", "1"]);
    assert!(
        msg.contains("--per-class must be >= 2 (the steps of an interpolation)"),
        "{msg}"
    );
    let msg = run(&["--interpolate", "noise"]);
    assert!(msg.contains("possible values: z, class"), "{msg}");
}
