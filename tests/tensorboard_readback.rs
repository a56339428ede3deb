//! Writes every kind of summary with our event writer and reads the directory back with the real
//! Python `tensorboard` package (tests/python/read_events.py), which must see exactly what we wrote.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sagan::output::tensorboard::HISTOGRAM_BUCKETS;
use sagan::output::EventWriter;
use serde_json::Value;
use tch::{Kind, Tensor};

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn read_back(dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_events.py");
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set SAGAN_PYTHON or run scripts/setup.sh): {e}",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "read_events.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_events.py prints JSON")
}

fn f64_at(v: &Value) -> f64 {
    f64::from_bits(v.as_u64().expect("float as IEEE bits"))
}

fn rgb_pattern(c: usize, y: usize, x: usize) -> u8 {
    ((c * 97 + y * 13 + x * 7) % 256) as u8
}

/// Row-major HWC bytes of `f(c, y, x)`, the layout PIL decodes to.
fn hwc(channels: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> u8) -> Vec<u64> {
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            for c in 0..channels {
                out.push(u64::from(f(c, y, x)));
            }
        }
    }
    out
}

fn chw_tensor(
    channels: usize,
    h: usize,
    w: usize,
    f: impl Fn(usize, usize, usize) -> u8,
) -> Tensor {
    let mut data = Vec::new();
    for c in 0..channels {
        for y in 0..h {
            for x in 0..w {
                data.push(f(c, y, x));
            }
        }
    }
    Tensor::from_slice(&data).view([channels as i64, h as i64, w as i64])
}

fn check_image(got: &Value, step: i64, w: usize, h: usize, mode: &str, pixels: &[u64]) {
    assert_eq!(got["step"], step);
    assert_eq!(got["width"], w as u64, "proto width");
    assert_eq!(got["height"], h as u64, "proto height");
    assert_eq!(got["format"], "PNG");
    assert_eq!(got["mode"], mode);
    assert_eq!(
        got["png_size"],
        serde_json::json!([w, h]),
        "PNG (width, height)"
    );
    let decoded: Vec<u64> = got["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(decoded.len(), pixels.len());
    let first_diff = decoded.iter().zip(pixels).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first differing byte of {mode} {w}x{h}");
}

#[test]
fn tensorboard_reads_back_exactly_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("run");
    let mut writer = EventWriter::create(&logdir).unwrap();
    let name = writer
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with("events.out.tfevents.")
            && name.ends_with(&format!(".{}.sagan", std::process::id())),
        "{name}"
    );

    let losses = [1.5, -0.25, 0.0, 3.0e3, 0.1];
    for (step, &loss) in losses.iter().enumerate() {
        writer.add_scalar("loss/d", loss, step as i64).unwrap();
    }
    writer.add_scalar("lr", 1e-4, 10_000_000_000).unwrap();

    // Non-square RGB, width 50 and height 20, once contiguous and once as a transposed view.
    let (h, w) = (20, 50);
    writer
        .add_image("samples", &chw_tensor(3, h, w, rgb_pattern), 3)
        .unwrap();
    let other = |c: usize, y: usize, x: usize| ((c * 31 + y * 5 + x * 11 + 1) % 251) as u8;
    let transposed = chw_tensor(3, w, h, |c, x, y| other(c, y, x)).transpose(1, 2);
    assert!(!transposed.is_contiguous());
    writer.add_image("samples", &transposed, 4).unwrap();
    // Grayscale, taller than wide, as CHW and as HW.
    let gray = |_: usize, y: usize, x: usize| (y * 30 + x) as u8;
    writer
        .add_image("gray", &chw_tensor(1, 30, 7, gray), 5)
        .unwrap();
    writer
        .add_image("gray_hw", &chw_tensor(1, 30, 7, gray).squeeze_dim(0), 5)
        .unwrap();
    // RGBA through the raw HWC entry point.
    let rgba: Vec<u8> = (0..4 * 3 * 2).map(|i| (i * 10) as u8).collect();
    writer.add_image_hwc("rgba", 2, 3, 4, &rgba, 6).unwrap();

    // Integers 0..=30 (plus repeats and a NaN) over 30 buckets of width 1: value v lands in
    // bucket min(v, 29).
    assert_eq!(HISTOGRAM_BUCKETS, 30);
    let mut values: Vec<f64> = (0..=30).map(f64::from).collect();
    values.extend([7.0, 7.0, 30.0, 0.0, f64::NAN, f64::INFINITY]);
    writer.add_histogram("weights", &values, 8).unwrap();
    let spread: Vec<f64> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f64 * 0.013 - 4.1)
        .collect();
    writer.add_histogram("spread", &spread, 9).unwrap();

    let text = "**SAGAN** run — ünïcode\n\n| a | b |\n|---|---|\n| 1 | 2 |";
    writer.add_text("config", text, 2).unwrap();

    // Rejected inputs write nothing.
    let float_image = Tensor::zeros([3, 4, 5], (Kind::Float, tch::Device::Cpu));
    assert!(writer.add_image("bad", &float_image, 0).is_err());
    assert!(writer.add_image_hwc("bad", 2, 2, 5, &[0; 20], 0).is_err());
    assert!(writer.add_image_hwc("bad", 2, 3, 3, &[0; 17], 0).is_err());
    assert!(writer.add_image_hwc("bad", 0, 3, 3, &[], 0).is_err());
    drop(writer);

    let got = read_back(&logdir);
    eprintln!("{}", serde_json::to_string(&got["files"]).unwrap());

    let files = got["files"].as_object().unwrap();
    assert_eq!(files.len(), 1);
    let file = &files[&name];
    assert_eq!(file["first_file_version"], "brain.Event:2");
    assert_eq!(file["first_has_summary"], false);
    // Header + 6 scalars + 5 images + 2 histograms + 1 text.
    assert_eq!(file["records"], 15);
    assert_eq!(got["file_version"], 2.0);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let d = got["scalars"]["loss/d"].as_array().unwrap();
    assert_eq!(d.len(), losses.len());
    for (step, (&loss, point)) in losses.iter().zip(d).enumerate() {
        assert_eq!(point[0], step as u64);
        // Summary.Value.simple_value is a float.
        assert_eq!(
            f64_at(&point[1]),
            f64::from(loss as f32),
            "loss/d at {step}"
        );
        assert!((now - f64_at(&point[2])).abs() < 600.0, "wall time");
    }
    let lr = &got["scalars"]["lr"][0];
    assert_eq!(lr[0], 10_000_000_000u64);
    assert_eq!(f64_at(&lr[1]), f64::from(1e-4f32));

    let samples = got["images"]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    check_image(&samples[0], 3, w, h, "RGB", &hwc(3, h, w, rgb_pattern));
    check_image(&samples[1], 4, w, h, "RGB", &hwc(3, h, w, other));
    let gray_expected = hwc(1, 30, 7, gray);
    check_image(&got["images"]["gray"][0], 5, 7, 30, "L", &gray_expected);
    check_image(&got["images"]["gray_hw"][0], 5, 7, 30, "L", &gray_expected);
    let rgba_expected: Vec<u64> = rgba.iter().map(|&b| u64::from(b)).collect();
    check_image(&got["images"]["rgba"][0], 6, 2, 3, "RGBA", &rgba_expected);
    assert!(got["images"].get("bad").is_none());

    let weights = &got["histograms"]["weights"][0];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    assert_eq!(weights["step"], 8);
    assert_eq!(f64_at(&weights["min"]), 0.0);
    assert_eq!(f64_at(&weights["max"]), 30.0);
    assert_eq!(f64_at(&weights["num"]), finite.len() as f64);
    assert_eq!(f64_at(&weights["sum"]), finite.iter().sum::<f64>());
    assert_eq!(
        f64_at(&weights["sum_squares"]),
        finite.iter().map(|v| v * v).sum::<f64>()
    );
    let limits: Vec<f64> = weights["bucket_limit"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64_at)
        .collect();
    assert_eq!(limits, (1..=30).map(f64::from).collect::<Vec<_>>());
    let mut expected_counts = vec![0.0; 30];
    for v in &finite {
        expected_counts[(*v as usize).min(29)] += 1.0;
    }
    let counts: Vec<f64> = weights["bucket"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64_at)
        .collect();
    assert_eq!(counts, expected_counts);

    // Fractional values: every value in exactly one bucket, between min and the bucket's limit.
    let spread_got = &got["histograms"]["spread"][0];
    let (lo, hi) = (f64_at(&spread_got["min"]), f64_at(&spread_got["max"]));
    assert_eq!(lo, spread.iter().copied().fold(f64::INFINITY, f64::min));
    assert_eq!(hi, spread.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let limits: Vec<f64> = spread_got["bucket_limit"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64_at)
        .collect();
    let counts: Vec<f64> = spread_got["bucket"]
        .as_array()
        .unwrap()
        .iter()
        .map(f64_at)
        .collect();
    assert_eq!(limits.len(), HISTOGRAM_BUCKETS);
    assert_eq!(counts.len(), HISTOGRAM_BUCKETS);
    assert!(limits.windows(2).all(|p| p[0] < p[1]));
    assert_eq!(*limits.last().unwrap(), hi);
    assert_eq!(counts.iter().sum::<f64>(), spread.len() as f64);
    // 1000 evenly spread values over 30 buckets: each holds 33 or 34.
    assert!(
        counts.iter().all(|&c| (33.0..=34.0).contains(&c)),
        "{counts:?}"
    );

    let texts = got["texts"]["config"].as_array().unwrap();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["step"], 2);
    assert_eq!(texts[0]["text"], text);
    assert_eq!(texts[0]["dtype"], 7, "DT_STRING");
    assert_eq!(texts[0]["shape"], serde_json::json!([]));
    assert_eq!(got["text_plugin_content"]["config"], "");
    assert_eq!(got["text_data_class"]["config"], 2, "DATA_CLASS_TENSOR");
}

#[test]
fn writers_never_share_a_file_and_flush_on_their_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = EventWriter::create(tmp.path()).unwrap();
    let b = EventWriter::create(tmp.path()).unwrap();
    assert_ne!(a.path(), b.path());
    let header_len = std::fs::metadata(a.path()).unwrap().len();
    assert!(header_len > 0, "header flushed on create");

    // Within the default interval an event may stay buffered; with a zero interval it may not.
    a.set_flush_interval(Duration::ZERO);
    a.add_scalar("x", 1.0, 1).unwrap();
    assert!(std::fs::metadata(a.path()).unwrap().len() > header_len);

    let bad_dir = tmp.path().join("file");
    std::fs::write(&bad_dir, b"").unwrap();
    let err = EventWriter::create(&bad_dir)
        .err()
        .expect("a file is no log directory");
    assert!(
        matches!(&err, sagan::Error::Io { path, .. } if path == &bad_dir),
        "{err}"
    );
}
