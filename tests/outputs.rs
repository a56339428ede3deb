//! What a run writes, checked from outside: sample grids and attention figures that show the same
//! images, and logs that are on disk as soon as a step is reported.
use std::process::Stdio;

use tch::Tensor;

mod common;
use common::{logged_steps, ok, scalar_steps, sets, small, train, wait_for};

/// Cell (row, col) of a grid PNG with 1-pixel borders around h x w cells, first channel.
fn cell(grid: &Tensor, row: i64, col: i64, h: i64, w: i64) -> Tensor {
    grid.get(0)
        .narrow(0, row * (h + 2) + 1, h)
        .narrow(1, col * (w + 2) + 1, w)
        .to_kind(tch::Kind::Int)
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
    assert_eq!(grid.size(), vec![3, 3 * 34, 4 * 34], "3 rows of 4 samples");
    assert_eq!(
        figure.size(),
        vec![3, 3 * 34, 4 * 34],
        "3 rows: the image and 3 queries"
    );
    for row in 0..3 {
        let a = cell(&grid, row, 0, 32, 32);
        let b = cell(&figure, row, 0, 32, 32);
        let diff = (&a - &b).abs().max().int64_value(&[]);
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
