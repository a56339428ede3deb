//! Weights files describe themselves, and examples/load_g_ema.py, a plain-PyTorch generator built from
//! a file alone, reproduces `sagan sample`'s images within 1e-5 (with the venv's torch:
//! `$SAGAN_PYTHON`, else `.venv/bin/python`).
use std::path::{Path, PathBuf};
use std::process::Command;

use sagan::checkpoint::weights;
use tch::{Kind, Tensor};

mod common;
use common::{bin, ok, sets, small, train};

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/load_g_ema.py")
}

/// A 2-step run with `attention` ("official" or "paper"); returns its G_ema.safetensors.
fn trained_g_ema(dir: &Path, attention: &str) -> PathBuf {
    let run = dir.join("run");
    let mut args = small(&run, 2);
    args.extend(sets(&[format!("model.attention={attention}")]));
    ok(&train(0, &args).output().unwrap());
    run.join("G_ema.safetensors")
}

/// After two steps the attention gammas and class-conditional BN parameters have barely moved from
/// 0 and 1, which would hide a wrong attention block or class lookup; set them to values that
/// matter, keeping the file's metadata.
fn make_every_parameter_count(path: &Path) {
    let file = weights::read(path, None).unwrap();
    tch::manual_seed(7);
    let changed: Vec<(String, Tensor)> = file
        .tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if name.starts_with("attention.") && name.ends_with(".gamma") {
                t.ones_like() * 0.8
            } else if name.starts_with("blocks.")
                && (name.ends_with(".gamma") || name.ends_with(".beta"))
            {
                &t + t.randn_like() * 0.3
            } else {
                t
            };
            (name, t.contiguous())
        })
        .collect();
    let meta = file.metadata.into_iter().collect();
    weights::write(path, &changed, &meta).unwrap();
}

fn check_example_reproduces_sagan(attention: &str) {
    let dir = tempfile::tempdir().unwrap();
    let g = trained_g_ema(dir.path(), attention);
    make_every_parameter_count(&g);
    let drawn = dir.path().join("drawn.safetensors");
    let png = dir.path().join("sagan.png");
    let text = ok(&Command::new(bin())
        .args(["sample", "--weights"])
        .arg(&g)
        .arg("--out")
        .arg(&png)
        .arg("--tensors")
        .arg(&drawn)
        .args(["--per-class", "3", "--classes", "0,4,9"])
        .output()
        .unwrap());
    assert!(text.contains("G_ema at step 2"), "{text}");
    assert!(png.is_file());
    let images = Tensor::read_safetensors(&drawn).unwrap();
    let images = &images.iter().find(|(n, _)| n == "images").unwrap().1;
    assert_eq!(images.size(), vec![9, 1, 32, 32]);
    // Not a blank: the images vary, so agreeing means something.
    assert!(images.std(true).double_value(&[]) > 0.01);

    let run = |args: &[&str]| {
        Command::new(python())
            .arg(example())
            .arg(&g)
            .args(args)
            .output()
            .unwrap()
    };
    let check = ok(&run(&["--check", drawn.to_str().unwrap()]));
    println!("{attention}: {check}");
    assert!(check.contains("ok: (9, 1, 32, 32) images"), "{check}");
    // And it samples on its own.
    let own = dir.path().join("python.png");
    ok(&run(&["--out", own.to_str().unwrap(), "--per-class", "2"]));
    assert!(own.is_file());
    // A changed image is caught: the check is not vacuous.
    let mut tensors = Tensor::read_safetensors(&drawn).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name == "images" {
            *t = &*t + Tensor::full([1], 1e-3, (Kind::Float, tch::Device::Cpu));
        }
    }
    let wrong = dir.path().join("wrong.safetensors");
    Tensor::write_safetensors(&tensors, &wrong).unwrap();
    let out = run(&["--check", wrong.to_str().unwrap()]);
    assert!(!out.status.success(), "a 1e-3 difference passed");
}

#[test]
fn the_python_example_reproduces_official_attention_samples() {
    check_example_reproduces_sagan("official");
}

#[test]
fn the_python_example_reproduces_paper_attention_samples() {
    check_example_reproduces_sagan("paper");
}

/// A lone G_ema.safetensors says what it is: its config, step, version, network, and which
/// tensors are spectral-norm vectors.
#[test]
fn weights_files_describe_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let g = trained_g_ema(dir.path(), "official");
    let meta = weights::read(&g, None).unwrap().metadata;
    assert_eq!(meta["format"], "sagan-weights");
    assert_eq!(meta["network"], "G_ema");
    assert_eq!(meta["step"], "2");
    assert_eq!(meta["sagan_version"], env!("CARGO_PKG_VERSION"));
    let cfg = sagan::config::Config::from_toml_str(&meta["config"], "metadata", &[]).unwrap();
    assert_eq!((cfg.model.g_ch, cfg.model.z_dim), (16, 32));
    assert!(meta["spectral_norm"].contains("weight_orig"));
    let vectors: Vec<&str> = meta["spectral_norm_vectors"].split(',').collect();
    assert!(
        vectors.contains(&"attention.1.theta.weight_u"),
        "{vectors:?}"
    );
    assert!(vectors.contains(&"out.weight_v"), "{vectors:?}");
    // `sagan sample` refuses a file that is not a generator.
    let d = dir.path().join("run/D.safetensors");
    let out = Command::new(bin())
        .args(["sample", "--weights"])
        .arg(&d)
        .arg("--out")
        .arg(dir.path().join("d.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a generator"),
        "{err}"
    );
}

/// `sagan sample` as the issue spells it (`--checkpoint`, `--class`, `--n`), writing every sample
/// as its own PNG too: named by class, and holding exactly the pixels of the drawn image.
#[test]
fn sample_writes_each_image_as_its_own_png() {
    let dir = tempfile::tempdir().unwrap();
    let g = trained_g_ema(dir.path(), "official");
    let each = dir.path().join("each");
    let drawn = dir.path().join("drawn.safetensors");
    let text = ok(&Command::new(bin())
        .args(["sample", "--checkpoint"])
        .arg(&g)
        .args(["--class", "4", "--n", "3", "--seed", "5", "--out"])
        .arg(dir.path().join("grid.png"))
        .arg("--images")
        .arg(&each)
        .arg("--tensors")
        .arg(&drawn)
        .output()
        .unwrap());
    assert!(text.contains("1 classes x 3 samples"), "{text}");
    let mut names: Vec<String> = std::fs::read_dir(&each)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "class4_coat_000.png",
            "class4_coat_001.png",
            "class4_coat_002.png"
        ]
    );
    let tensors = Tensor::read_safetensors(&drawn).unwrap();
    let images = &tensors.iter().find(|(n, _)| n == "images").unwrap().1;
    let pixels = sagan::metrics::eval::quantise(images);
    for (i, name) in names.iter().enumerate() {
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(each.join(name)).unwrap(),
        ));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (32, 32), "{name}");
        let want = Vec::<u8>::try_from(&pixels.get(i as i64).view([-1])).unwrap();
        assert_eq!(&buf[..info.buffer_size()], &want[..], "{name}");
    }
}
