//! The data path on real files: readers against Pillow, the packed format's round trip and its
//! refusals, `sagan prepare` on bad images, and the loader's shards and flips.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use sagan::config::{DataConfig, DatasetKind, ModelConfig};
use sagan::data::packed::PackedFile;
use sagan::data::prepare::{prepare, PrepareOptions};
use sagan::data::{flip, Dataset, DistributedSampler, Loader, LoaderOptions};
use sagan::distributed::LocalComm;

mod common;
use common::{bin, ok};

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

fn python() -> PathBuf {
    std::env::var_os("SAGAN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn reference(args: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/data_reference.py"
    );
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "data_reference.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ImageFolder tree written by Pillow (see data_reference.py), and the corrupt JPEG beside it.
fn tree(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("tree");
    reference(&["tree", root.to_str().unwrap()]);
    (root, dir.join("corrupt"))
}

fn opts(resolution: u32, channels: u8) -> PrepareOptions {
    PrepareOptions {
        resolution,
        channels,
        skip_bad: false,
        threads: 2,
        progress: false,
    }
}

fn all_images(data: &Dataset) -> Vec<u8> {
    let mut out = vec![0u8; data.len() * data.image_bytes()];
    for (i, slot) in out.chunks_exact_mut(data.image_bytes()).enumerate() {
        data.read_image(i, slot).unwrap();
    }
    out
}

fn packed(path: &Path) -> Dataset {
    Dataset::from_packed(PackedFile::open(path, true, 2).unwrap())
}

/// Largest absolute difference, and how many values differ at all.
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(m, n), (&x, &y)| {
        let d = x.abs_diff(y);
        (m.max(d), n + (d > 0) as usize)
    })
}

/// Per image of the tree: (name, max difference) between sagan's packed pixels and Pillow's.
fn compare_with_pillow(dir: &Path, root: &Path, res: u32, ch: u8) -> Vec<(String, u8)> {
    let out = dir.join(format!("packed_{res}_{ch}.sagan"));
    prepare(root, &out, &opts(res, ch)).unwrap();
    let data = packed(&out);
    let expect = dir.join(format!("expect_{res}_{ch}"));
    reference(&[
        "expect",
        root.to_str().unwrap(),
        &res.to_string(),
        &ch.to_string(),
        expect.to_str().unwrap(),
    ]);
    let want = std::fs::read(&expect).unwrap();
    let want_labels: Vec<i64> = std::fs::read(expect.with_extension("labels"))
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(data.labels(), &want_labels[..], "labels as the folders say");
    assert_eq!(data.class_names, ["cat", "dog", "eel"]);
    let listing = sagan::data::image_folder::scan(root).unwrap();
    let got = all_images(&data);
    let b = data.image_bytes();
    listing
        .files
        .iter()
        .enumerate()
        .map(|(i, (p, _))| {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            (
                name,
                diff(&got[i * b..(i + 1) * b], &want[i * b..(i + 1) * b]).0,
            )
        })
        .collect()
}

#[test]
fn image_folder_pixels_match_pillow() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = tree(dir.path());
    for ch in [3u8, 1] {
        // 32: every image but one is resized (both ways); dog/b_square.jpg is 32x32, so it is
        // decoded and converted only.
        for (name, d) in compare_with_pillow(dir.path(), &root, 32, ch) {
            // Decoding is exact (libjpeg-turbo for JPEG, as Pillow; PNG is lossless); only the
            // resize's fixed-point rounding may differ from Pillow's, by one level.
            eprintln!("{ch} channel(s), {name}: max difference from Pillow {d}");
            let limit = if name == "dog/b_square.jpg" { 0 } else { 1 };
            assert!(
                d <= limit,
                "{ch} channel(s), {name}: differs from Pillow by {d} > {limit}"
            );
        }
    }
}

#[test]
fn jpeg_decoding_equals_pillows() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = tree(dir.path());
    let file = root.join("cat/c_photo.jpg");
    let want_path = dir.path().join("pillow.rgb");
    reference(&[
        "decode",
        file.to_str().unwrap(),
        want_path.to_str().unwrap(),
    ]);
    let want = std::fs::read(&want_path).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let got = sagan::data::decode::decode(&bytes, &file).unwrap();
    assert_eq!((got.width, got.height, got.channels), (64, 48, 3));
    let (max, n) = diff(&got.pixels, &want);
    // libjpeg-turbo, as Pillow uses it: the same pixels, not merely close ones.
    assert_eq!((max, n), (0, 0), "differs from Pillow's decode");
}

/// A CIFAR-10 binary set (data_batch_1..5) with known pixels and labels.
fn write_cifar10(dir: &Path) -> (Vec<u8>, Vec<i64>) {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for b in 1..=5 {
        let mut file = Vec::new();
        for r in 0..3u32 {
            let label = ((b * 3 + r) % 10) as u8;
            let img: Vec<u8> = (0..3072u32)
                .map(|k| (k * 7 + b * 31 + r * 13) as u8)
                .collect();
            file.push(label);
            file.extend(&img);
            pixels.extend(&img);
            labels.push(label as i64);
        }
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), file).unwrap();
    }
    (pixels, labels)
}

fn data_config(kind: DatasetKind, path: &Path) -> DataConfig {
    DataConfig {
        dataset: kind,
        path: path.to_path_buf(),
        ..DataConfig::default()
    }
}

fn model(res: i64, channels: i64, classes: i64) -> ModelConfig {
    ModelConfig {
        resolution: res,
        img_channels: channels,
        num_classes: classes,
        ..ModelConfig::default()
    }
}

#[test]
fn cifar_binaries_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, labels) = write_cifar10(dir.path());
    let data = Dataset::load(
        &data_config(DatasetKind::Cifar10, dir.path()),
        &model(32, 3, 10),
        &LocalComm,
    )
    .unwrap();
    assert_eq!(data.labels(), &labels[..]);
    assert_eq!(all_images(&data), pixels);
    assert_eq!(data.class_names[0], "airplane");
    // CIFAR-100: a coarse and a fine label byte per record; the fine one is the label.
    let mut file = Vec::new();
    let mut want = Vec::new();
    for r in 0..4u8 {
        file.extend([r, 90 + r]);
        file.extend((0..3072u32).map(|k| (k as u8) ^ r));
        want.push(90 + r as i64);
    }
    let c100 = dir.path().join("c100");
    std::fs::create_dir(&c100).unwrap();
    std::fs::write(c100.join("train.bin"), file).unwrap();
    let data = Dataset::load(
        &data_config(DatasetKind::Cifar100, &c100),
        &model(32, 3, 100),
        &LocalComm,
    )
    .unwrap();
    assert_eq!(data.labels(), &want[..]);
    assert_eq!(data.num_classes, 100);
    // A record size that is neither is refused, naming the file.
    std::fs::write(dir.path().join("data_batch_2.bin"), [0u8; 100]).unwrap();
    let err = Dataset::load(
        &data_config(DatasetKind::Cifar10, dir.path()),
        &model(32, 3, 10),
        &LocalComm,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("data_batch_2.bin") && err.contains("3073"),
        "{err}"
    );
}

fn fmnist_reference(dir: &Path, n: usize, res: u32) -> (Vec<u8>, Vec<i64>) {
    let out = dir.join(format!("fmnist_{res}"));
    reference(&[
        "fmnist",
        FMNIST,
        &n.to_string(),
        &res.to_string(),
        out.to_str().unwrap(),
    ]);
    let labels = std::fs::read(out.with_extension("labels")).unwrap();
    (
        std::fs::read(&out).unwrap(),
        labels.into_iter().map(i64::from).collect(),
    )
}

#[test]
fn fashion_mnist_is_padded_at_32_and_resized_like_pillow_at_64() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200;
    for res in [32u32, 64] {
        let data = Dataset::load(
            &data_config(DatasetKind::FashionMnist, Path::new(FMNIST)),
            &model(res as i64, 1, 10),
            &LocalComm,
        )
        .unwrap();
        assert_eq!(data.len(), 60000);
        let (want, labels) = fmnist_reference(dir.path(), n, res);
        assert_eq!(&data.labels()[..n], &labels[..]);
        let got = &all_images(&data)[..want.len()];
        let (max, _) = diff(got, &want);
        // 32: zero padding, exact. 64: BICUBIC, within the fixed-point rounding.
        let limit = if res == 32 { 0 } else { 1 };
        assert!(max <= limit, "{res}: differs from the reference by {max}");
    }
}

#[test]
fn prepare_then_load_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    // Fashion-MNIST through prepare equals Fashion-MNIST read directly, byte for byte.
    let out = dir.path().join("fmnist32.sagan");
    let report = prepare(Path::new(FMNIST), &out, &opts(32, 1)).unwrap();
    assert_eq!(report.header.count, 60000);
    let direct = Dataset::load(
        &data_config(DatasetKind::FashionMnist, Path::new(FMNIST)),
        &model(32, 1, 10),
        &LocalComm,
    )
    .unwrap();
    let through = Dataset::load(
        &data_config(DatasetKind::Packed, &out),
        &model(32, 1, 10),
        &LocalComm,
    )
    .unwrap();
    assert!(through.is_packed());
    assert_eq!(through.labels(), direct.labels());
    assert!(all_images(&through) == all_images(&direct), "pixels differ");
    assert_eq!(
        through.images_sha256().unwrap(),
        direct.images_sha256().unwrap()
    );
    assert_eq!(through.class_names[9], "Ankle boot");
    // An ImageFolder: the packed pixels are what decoding each file gives.
    let (root, _) = tree(dir.path());
    let out = dir.path().join("tree.sagan");
    prepare(&root, &out, &opts(16, 3)).unwrap();
    let data = packed(&out);
    let listing = sagan::data::image_folder::scan(&root).unwrap();
    assert_eq!(data.len(), listing.files.len());
    let mut want = vec![0u8; data.image_bytes()];
    let mut got = vec![0u8; data.image_bytes()];
    for (i, (path, label)) in listing.files.iter().enumerate() {
        sagan::data::image_folder::load_image(path, 3, 16, &mut want).unwrap();
        data.read_image(i, &mut got).unwrap();
        assert_eq!(got, want, "{}", path.display());
        assert_eq!(data.labels()[i], *label as i64);
    }
}

fn refused(path: &Path) -> String {
    PackedFile::open(path, true, 2).err().unwrap().to_string()
}

#[test]
fn damaged_packed_files_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sagan");
    prepare(Path::new(FMNIST), &good, &opts(32, 1)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // One pixel of image 30000 changed.
    let flipped = variant("bitflip.sagan", &|b| b[4096 + 30000 * 1024 + 500] ^= 0x10);
    let err = refused(&flipped);
    assert!(
        err.contains("bitflip.sagan")
            && err.contains("checksum mismatch")
            && err.contains("sagan prepare"),
        "{err}"
    );
    // A label changed (labels are covered too).
    let label = variant("label.sagan", &|b| {
        let at = 4096 + 60000 * 1024 + 8;
        b[at] = (b[at] + 1) % 10;
    });
    assert!(
        refused(&label).contains("checksum mismatch"),
        "{}",
        refused(&label)
    );
    let version = variant("version.sagan", &|b| b[8] = 2);
    let err = refused(&version);
    assert!(
        err.contains("version 2") && err.contains("reads version 1"),
        "{err}"
    );
    let truncated = variant("truncated.sagan", &|b| b.truncate(b.len() - 1000));
    let err = refused(&truncated);
    assert!(
        err.contains("truncated") && err.contains("truncated.sagan"),
        "{err}"
    );
    let short = variant("short.sagan", &|b| b.truncate(100));
    assert!(refused(&short).contains("truncated"), "{}", refused(&short));
    let magic = variant("magic.sagan", &|b| b[0] = b'X');
    assert!(refused(&magic).contains("not a sagan packed dataset"));
    let header = variant("header.sagan", &|b| {
        let l = b.len();
        b[l - 5] ^= 1;
    });
    assert!(refused(&header).contains("header checksum mismatch"));
    // The good file still opens.
    assert_eq!(PackedFile::open(&good, true, 2).unwrap().len(), 60000);
}

fn run_sagan(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn a_corrupt_jpeg_stops_prepare_naming_it_and_skip_bad_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, corrupt) = tree(dir.path());
    std::fs::copy(corrupt.join("broken.jpg"), root.join("dog/broken.jpg")).unwrap();
    let out = dir.path().join("out.sagan");
    let o = out.to_str().unwrap();
    let run = run_sagan(&[
        "prepare",
        "--input",
        root.to_str().unwrap(),
        "--resolution",
        "16",
        "--out",
        o,
    ]);
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        text.contains("dog/broken.jpg") && text.contains("--skip-bad"),
        "{text}"
    );
    assert!(!out.exists(), "no packed file after a failed prepare");
    let text = ok(&run_sagan(&[
        "prepare",
        "--input",
        root.to_str().unwrap(),
        "--resolution",
        "16",
        "--out",
        o,
        "--skip-bad",
    ]));
    assert!(text.contains("skipped 1 unreadable image"), "{text}");
    assert!(text.contains("dog/broken.jpg"), "{text}");
    let data = packed(&out);
    assert_eq!(data.len(), 9);
    assert_eq!(PackedFile::open(&out, true, 1).unwrap().header.skipped, 1);
}

fn prepare_32(input: &Path, out: &Path) -> std::process::Output {
    run_sagan(&[
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--resolution",
        "32",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn empty_folders_and_too_small_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("x.sagan");
    let run = prepare_32(&empty, &out);
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && text.contains("no class subfolders"),
        "{text}"
    );
    std::fs::create_dir(empty.join("only_class")).unwrap();
    let run = prepare_32(&empty, &out);
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && text.contains("only_class") && text.contains("without images"),
        "{text}"
    );
    // 9 images cannot fill a global batch of 16 (e.g. 2 ranks x 8).
    let (root, _) = tree(dir.path());
    let packed_file = dir.path().join("tree.sagan");
    prepare(&root, &packed_file, &opts(32, 3)).unwrap();
    let run_dir = dir.path().join("run");
    let mut args: Vec<String> = ["train", "--config", &common::default_config()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::small(&run_dir, 2));
    args.extend(common::sets(&[
        "data.dataset=packed".into(),
        format!("data.path={}", packed_file.display()),
        "model.img_channels=3".into(),
        "model.num_classes=3".into(),
    ]));
    let run = Command::new(bin()).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        text.contains("9 images") && text.contains("train.batch_size"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

/// A packed file whose image i says i in its first row, asymmetrically, so a flip shows.
fn numbered(dir: &Path, n: usize, res: u32) -> Dataset {
    let path = dir.join("numbered.sagan");
    let mut w = sagan::data::packed::PackedWriter::create(&path, 3, res).unwrap();
    let bytes = w.image_bytes();
    for i in 0..n {
        let mut img = vec![0u8; bytes];
        img[0] = (i >> 8) as u8;
        img[1] = i as u8;
        img[2] = 200; // a marker at the left of row 0
        for (k, v) in img.iter_mut().enumerate().skip(res as usize) {
            *v = (k * 3 + i) as u8;
        }
        w.push(&img, (i % 5) as u32).unwrap();
    }
    w.finish((0..5).map(|c| c.to_string()).collect(), "test".into(), 0)
        .unwrap();
    packed(&path)
}

/// (sample index, flipped) of every sample of a batch, read back from the pixels.
fn identify(data: &Dataset, batch: &tch::Tensor) -> Vec<(usize, bool)> {
    let res = data.resolution() as usize;
    let px = ((batch + 1.0) * 127.5).round().to_kind(tch::Kind::Uint8);
    let px: Vec<u8> = Vec::<u8>::try_from(&px.reshape([-1])).unwrap();
    let mut stored = vec![0u8; data.image_bytes()];
    px.chunks_exact(data.image_bytes())
        .map(|img| {
            let flipped = img[res - 3] == 200;
            let i = if flipped {
                (img[res - 1] as usize) << 8 | img[res - 2] as usize
            } else {
                (img[0] as usize) << 8 | img[1] as usize
            };
            data.read_image(i, &mut stored).unwrap();
            let mut expect = stored.clone();
            if flipped {
                flip::mirror_chw(&mut expect, res);
            }
            assert!(
                img == &expect[..],
                "sample {i} is not its stored image (flipped: {flipped})"
            );
            (i, flipped)
        })
        .collect()
}

fn epoch_batches(
    data: &Dataset,
    rank: usize,
    world: usize,
    start: u64,
    count: usize,
) -> Vec<Vec<(usize, bool)>> {
    let global = 12;
    let sampler = DistributedSampler {
        len: data.len(),
        rank,
        world,
        seed: 42,
        drop_remainder: true,
        global_batch: global,
    };
    let opts = LoaderOptions {
        batch_per_rank: global / world,
        start_batch: start,
        prefetch: 2,
        workers: 3,
        flip: true,
    };
    let mut loader = Loader::new(data, sampler, &opts, tch::Device::Cpu);
    (0..count)
        .map(|_| identify(data, &loader.next_batch().unwrap().images))
        .collect()
}

#[test]
fn two_ranks_see_disjoint_shards_whose_union_is_the_epoch_flips_included() {
    let dir = tempfile::tempdir().unwrap();
    let data = numbered(dir.path(), 120, 8);
    let per_epoch = 10; // 120 / 12
    let ranks: Vec<_> = (0..2)
        .map(|r| epoch_batches(&data, r, 2, 0, 2 * per_epoch))
        .collect();
    let single = epoch_batches(&data, 0, 1, 0, 2 * per_epoch);
    let sampler = DistributedSampler {
        len: 120,
        rank: 0,
        world: 1,
        seed: 42,
        drop_remainder: true,
        global_batch: 12,
    };
    let mut flips_seen = HashSet::new();
    for epoch in 0..2 {
        let batches = epoch * per_epoch..(epoch + 1) * per_epoch;
        let a: Vec<_> = ranks[0][batches.clone()].concat();
        let b: Vec<_> = ranks[1][batches.clone()].concat();
        let ids = |v: &[(usize, bool)]| v.iter().map(|s| s.0).collect::<HashSet<_>>();
        assert!(
            ids(&a).is_disjoint(&ids(&b)),
            "epoch {epoch}: shards overlap"
        );
        let union: HashSet<usize> = ids(&a).union(&ids(&b)).copied().collect();
        let order: HashSet<usize> = sampler.epoch_order(epoch as u64).into_iter().collect();
        assert_eq!(
            union, order,
            "epoch {epoch}: the shards do not make up the epoch"
        );
        assert_eq!(union.len(), 120);
        // The flips are those of (seed, epoch, sample), on either rank and on one rank alone.
        for &(i, f) in a.iter().chain(&b) {
            assert_eq!(f, flip::flipped(42, epoch as u64, i as u64), "sample {i}");
            flips_seen.insert(f);
        }
        // Global batch j is the same set of samples on 2 ranks as on 1, flipped the same.
        for j in batches {
            let mut two: Vec<_> = [ranks[0][j].clone(), ranks[1][j].clone()].concat();
            let mut one = single[j].clone();
            two.sort();
            one.sort();
            assert_eq!(two, one, "global batch {j}");
        }
    }
    assert_eq!(flips_seen.len(), 2, "some samples flipped, some not");
    // The same again (reproducible), and started at batch 13 (a resume) it continues exactly.
    assert_eq!(epoch_batches(&data, 1, 2, 0, 2 * per_epoch), ranks[1]);
    assert_eq!(epoch_batches(&data, 1, 2, 13, 7), ranks[1][13..20].to_vec());
}

#[test]
fn loader_batches_equal_converting_uint8_tensors() {
    // The loader converts through a table built by to_signed_unit: values bitwise identical.
    let dir = tempfile::tempdir().unwrap();
    let data = numbered(dir.path(), 24, 8);
    let sampler = DistributedSampler::one_rank(24, 8, 1);
    let order = sampler.shard(0);
    let opts = LoaderOptions {
        batch_per_rank: 8,
        start_batch: 0,
        prefetch: 1,
        workers: 1,
        flip: false,
    };
    let mut loader = Loader::new(&data, sampler, &opts, tch::Device::Cpu);
    let batch = loader.next_batch().unwrap();
    let (x, y) = data.batch(&order[..8], tch::Device::Cpu).unwrap();
    assert!(batch.images.equal(&x));
    assert!(batch.labels.equal(&y));
}

#[test]
fn imagenet128_config_trains_on_a_small_image_folder() {
    // The paper's 128x128 config, its architecture at reduced width, on an ImageFolder of
    // JPEGs and PNGs (grayscale and RGBA among them) packed into the cache on first use.
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = tree(dir.path());
    let cache = dir.path().join("cache");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/imagenet128.toml");
    let run = |out: &str| {
        let mut args: Vec<String> = ["train", "--config", config]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(common::sets(&[
            format!("data.path={}", root.display()),
            format!("data.cache_dir={}", cache.display()),
            "data.flip=true".into(),
            "model.g_ch=16".into(),
            "model.d_ch=16".into(),
            "model.num_classes=3".into(),
            "train.batch_size=4".into(),
            "train.steps=2".into(),
            "train.log_every=1".into(),
            "train.sample_every=0".into(),
            "train.threads=2".into(),
            "eval.enabled=false".into(),
            "output.samples_per_class=1".into(),
            format!("output.dir={}", dir.path().join(out).display()),
        ]));
        ok(&Command::new(bin()).args(&args).output().unwrap())
    };
    let text = run("run1");
    assert!(text.contains("data: packing"), "{text}");
    assert!(dir.path().join("run1/summary.json").exists(), "{text}");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("tree_128px_3ch_") && name.ends_with(".sagan"),
        "{name}"
    );
    let file = PackedFile::open(&cached[0], true, 1).unwrap();
    assert_eq!((file.len(), file.header.resolution), (9, 128));
    // The second run reuses the packed file.
    let text = run("run2");
    assert!(
        text.contains("is packed in") && !text.contains("data: packing"),
        "{text}"
    );
    // A changed folder gets a new file.
    std::fs::remove_file(root.join("eel/c_small.png")).unwrap();
    let text = run("run3");
    assert!(text.contains("data: packing"), "{text}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
}
