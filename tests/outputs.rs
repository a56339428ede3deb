//! What a run writes, checked from outside: sample grids and attention figures that show the same
//! images, and logs that are on disk as soon as a step is reported.
use std::process::Stdio;

use tch::Tensor;

mod common;
use common::{
    logged_steps, ok, scalar_steps, sets, small, train, untrained_classifier, wait_for,
    write_small_fmnist,
};

/// Cell (row, col) of a grid PNG whose cells (h x w, 1-pixel borders) start `left` pixels in,
/// after the label column; first channel.
fn cell(grid: &Tensor, left: i64, row: i64, col: i64, h: i64, w: i64) -> Tensor {
    grid.get(0)
        .narrow(0, row * (h + 2) + 1, h)
        .narrow(1, left + col * (w + 2) + 1, w)
        .to_kind(tch::Kind::Int)
}

/// The label column sagan draws for these rows (class names), `row_height` pixels per row.
fn labels(names: &[&str], row_height: i64) -> Tensor {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sagan::output::font::label_column(&names, row_height)
}

#[test]
fn the_attention_figure_annotates_the_grid_images_from_chunked_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = small(dir.path(), 3);
    // 3 classes x 4 samples, drawn 2 rows (8 images) per forward pass.
    args.extend(sets(&[
        "output.sample_classes=3".into(),
        "output.samples_per_class=4".into(),
        "eval.batch=8".into(),
    ]));
    ok(&train(0, &args).output().unwrap());
    let grid = tch::vision::image::load(dir.path().join("samples.png")).unwrap();
    let figure = tch::vision::image::load(dir.path().join("attention_G.attention.1.png")).unwrap();
    // Classes 0, 3, 6 of 10 (spread evenly), labelled with their Fashion-MNIST names.
    let names = ["T-shirt/top", "Dress", "Shirt"];
    let grid_labels = labels(&names, 34);
    let left = grid_labels.size()[2];
    assert_eq!(
        grid.size(),
        vec![3, 3 * 34, left + 4 * 34],
        "3 labelled rows of 4 samples"
    );
    assert!(
        grid.narrow(2, 0, left).equal(&grid_labels),
        "the rows are not labelled with their class names"
    );
    // The figure's tiles are enlarged 3x (nearest) to 96 px; its rows are labelled too.
    let zoom = 3;
    let figure_labels = labels(&names, 96 + 2);
    let figure_left = figure_labels.size()[2];
    assert_eq!(
        figure.size(),
        vec![3, 3 * 98, figure_left + 4 * 98],
        "3 rows: the image and 3 queries, 96 px each"
    );
    assert!(figure.narrow(2, 0, figure_left).equal(&figure_labels));
    for row in 0..3 {
        let a = cell(&grid, left, row, 0, 32, 32);
        let b = cell(&figure, figure_left, row, 0, 96, 96);
        let b_pixels = b.slice(0, 0, 96, zoom).slice(1, 0, 96, zoom);
        let b_blocks = b.reshape([32, zoom, 32, zoom]);
        let diff = (&a - &b_pixels).abs().max().int64_value(&[]);
        assert_eq!(
            (&b_blocks - b_pixels.reshape([32, 1, 32, 1]))
                .abs()
                .max()
                .int64_value(&[]),
            0,
            "row {row}: the figure's image is not a whole-pixel enlargement"
        );
        assert!(
            diff <= 1,
            "row {row}: the figure's image differs from the grid's by {diff}"
        );
    }
}

#[test]
fn every_reported_step_is_in_the_event_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = small(dir.path(), 100_000);
    args.extend(sets(&["train.log_every=1".into()]));
    let mut child = train(0, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(120.0, || logged_steps(dir.path()).len() >= 5));
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = logged_steps(dir.path());
    let in_events = scalar_steps(dir.path(), "loss/D");
    // The step being reported at the kill may be half written; every earlier one is complete.
    assert!(
        in_events.len() + 1 >= logged.len() && in_events.len() >= 4,
        "metrics.jsonl has steps {logged:?}, the event file {in_events:?}"
    );
}

/// summary.json and the last console line give G_ema's and the raw G's scores, named for the
/// feature network; the gammas are named by block; TensorBoard has both networks' FID.
#[test]
fn the_summary_scores_g_and_g_ema_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = d.join("run");
    let mut args = small(&run, 2);
    args.extend(sets(&[
        "eval.enabled=true".into(),
        format!(
            "eval.weights={}",
            untrained_classifier(&d.join("cls.safetensors")).display()
        ),
        format!(
            "data.path={}",
            write_small_fmnist(&d.join("data"), 200).display()
        ),
        format!("eval.reference_stats={}", d.join("ref.npz").display()),
        "eval.num_samples=50".into(),
        "eval.batch=50".into(),
    ]));
    let text = ok(&train(0, &args).output().unwrap());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["feature_net"], "fmnist_classifier");
    let score = |when: &str, net: &str, metric: &str| {
        summary[when][net][format!("{metric}_fmnist_classifier")]
            .as_f64()
            .unwrap_or_else(|| panic!("no {when}.{net}.{metric}_fmnist_classifier in {summary}"))
    };
    for net in ["G_ema", "G"] {
        assert!(score("scores_end", net, "FID") > 0.0);
        assert!(score("scores_end", net, "IS") >= 1.0);
    }
    assert!(score("scores_start", "G_ema", "FID") > 0.0);
    assert_eq!(summary["best"]["step"], 2);
    assert!(
        summary["best"]["FID_fmnist_classifier"].is_number(),
        "{summary}"
    );
    let gammas = summary["gammas"].as_object().unwrap();
    let names: Vec<&String> = gammas.keys().collect();
    assert_eq!(names, ["D.attention.0", "G.attention.1"], "{summary}");
    let last = text
        .lines()
        .find(|l| l.starts_with("FID_fmnist_classifier: "))
        .unwrap_or_else(|| panic!("no final score line in {text}"));
    let g_ema = format!("G_ema {:.3}", score("scores_end", "G_ema", "FID"));
    let g = format!(", G {:.3}", score("scores_end", "G", "FID"));
    assert!(last.contains(&g_ema) && last.contains(&g), "{last}");
    assert!(last.contains("IS_fmnist_classifier: "), "{last}");
    assert_eq!(scalar_steps(&run, "eval/FID_fmnist_classifier"), vec![0, 2]);
    assert_eq!(scalar_steps(&run, "eval/FID_fmnist_classifier_G"), vec![2]);
    // Class accuracy beside FID and IS: summary.json, the final line, TensorBoard.
    for (when, net) in [
        ("scores_start", "G_ema"),
        ("scores_end", "G_ema"),
        ("scores_end", "G"),
    ] {
        let a = summary[when][net]["class_accuracy"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {when}.{net}.class_accuracy in {summary}"));
        assert!((0.0..=1.0).contains(&a), "{summary}");
    }
    let acc = 100.0
        * summary["scores_end"]["G_ema"]["class_accuracy"]
            .as_f64()
            .unwrap();
    assert!(
        last.contains("class accuracy: ") && last.contains(&format!("G_ema {acc:.1}%")),
        "{last}"
    );
    assert_eq!(
        scalar_steps(&run, "eval/class_accuracy_fmnist_classifier"),
        vec![0, 2]
    );
    assert_eq!(
        scalar_steps(&run, "eval/class_accuracy_fmnist_classifier_G"),
        vec![2]
    );
    // No test split beside this training set: no real-data references, and no failure.
    assert!(summary["real_data"].is_null(), "{summary}");
    // The last lines say what to open.
    let samples = run.join("samples.png");
    let attention = run.join("attention_G.attention.1.png");
    for want in [
        samples.display().to_string(),
        attention.display().to_string(),
        format!("tensorboard --logdir {}", d.display()),
    ] {
        assert!(text.contains(&want), "no {want:?} in\n{text}");
    }
    assert!(samples.is_file() && attention.is_file());
}

/// The live progress line: drawn in place (carriage returns) only where asked for or where the
/// terminal is the user's; never under mpirun on `auto`, whose ranks always see a terminal; the
/// plain log lines in every mode.
#[test]
fn the_progress_line_is_drawn_only_where_someone_watches() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = |ranks: usize, mode: &str| {
        let run = dir.path().join(format!("{mode}{ranks}"));
        let mut args = small(&run, 4);
        args.extend(sets(&[
            "train.log_every=2".into(),
            format!("output.progress={mode}"),
        ]));
        let out = train(ranks, &args).output().unwrap();
        ok(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let line = stdout(0, "line");
    assert!(
        line.contains("\rstep 1/4 (25%)") && line.contains("ETA "),
        "{line:?}"
    );
    assert!(
        line.contains("\r\x1b[K"),
        "the line is wiped before other output: {line:?}"
    );
    for (ranks, mode) in [(0, "plain"), (0, "auto"), (2, "auto")] {
        let text = stdout(ranks, mode);
        assert!(!text.contains('\r'), "{mode} on {ranks} rank(s): {text:?}");
        assert!(text.contains("step      2  D real"), "{mode}: {text}");
    }
}
