//! Arms from runs: runs whose configs differ only by seed form an arm; each arm's end and best
//! scores are summarised over its seeds (mean, sample standard deviation) and set against the
//! first arm's with Welch's 95% interval of the difference.
use std::collections::BTreeMap;
use std::fmt::Write;

use super::curves_plot::{Curve, Panel};
use super::plan::Plan;
use super::run_results::{Point, RunResults};
use super::welch::{mean, std_dev, welch_interval, Interval};

/// The confidence of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// The runs of one arm.
pub struct Arm {
    pub name: String,
    pub runs: Vec<RunResults>,
}

/// What the tables report, per run: a name (markdown), a CSV name, and how to read it.
type Metric = (&'static str, &'static str, fn(&RunResults) -> Option<f64>);

/// Read from a finished run's end scores, or from its evaluation with the lowest FID.
pub const METRICS: [Metric; 7] = [
    ("FID at the end", "fid_end", |r| r.end.map(|p| p.fid)),
    ("IS at the end", "is_end", |r| r.end.map(|p| p.is)),
    ("class accuracy at the end", "class_accuracy_end", |r| {
        r.end.and_then(|p| p.class_accuracy)
    }),
    ("best FID", "fid_best", |r| finished_best(r).map(|p| p.fid)),
    ("step of the best FID", "best_step", |r| {
        finished_best(r).map(|p| p.step as f64)
    }),
    ("IS at the best FID", "is_best", |r| {
        finished_best(r).map(|p| p.is)
    }),
    (
        "class accuracy at the best FID",
        "class_accuracy_best",
        |r| finished_best(r).and_then(|p| p.class_accuracy),
    ),
];

fn finished_best(r: &RunResults) -> Option<Point> {
    r.finished.then(|| r.best()).flatten()
}

/// One metric of one arm over its seeds.
#[derive(Debug, Clone)]
pub struct MetricSummary {
    pub values: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    /// This arm's mean minus the first arm's; None for the first arm and where either arm has
    /// fewer than two values.
    pub difference: Option<Interval>,
}

/// Groups runs that differ only by seed, in the order their first run comes. Arms are named as
/// the sweep that made them names them, or else by the config keys in which they differ.
pub fn group(runs: Vec<RunResults>) -> Vec<Arm> {
    let mut arms: Vec<(toml::Table, Arm)> = Vec::new();
    for r in runs {
        match arms.iter_mut().find(|(c, _)| *c == r.config) {
            Some((_, arm)) => arm.runs.push(r),
            None => arms.push((
                r.config.clone(),
                Arm {
                    name: sweep_arm_name(&r).unwrap_or_default(),
                    runs: vec![r],
                },
            )),
        }
    }
    let flat: Vec<BTreeMap<String, String>> = arms.iter().map(|(c, _)| flatten(c)).collect();
    let differing: Vec<&String> = flat
        .iter()
        .flat_map(|f| f.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| flat.iter().any(|f| f.get(*k) != flat[0].get(*k)))
        .collect();
    let mut out = Vec::new();
    for (i, (_, mut arm)) in arms.into_iter().enumerate() {
        if arm.name.is_empty() {
            let parts: Vec<String> = differing
                .iter()
                .map(|k| format!("{k}={}", flat[i].get(*k).map_or("(absent)", String::as_str)))
                .collect();
            arm.name = if parts.is_empty() {
                "all".into()
            } else {
                parts.join(",")
            };
        }
        arm.runs.sort_by_key(|r| r.seed);
        out.push(arm);
    }
    out
}

/// The arm a sweep recorded for this run (its manifest sits two levels up: <out>/<arm>/seed<S>).
fn sweep_arm_name(r: &RunResults) -> Option<String> {
    let sweep_dir = r.dir.parent()?.parent()?;
    let plan = Plan::read(sweep_dir).ok()??;
    let canonical = |p: &std::path::Path| p.canonicalize().ok();
    let me = canonical(&r.dir);
    plan.runs
        .into_iter()
        .find(|p| canonical(&p.dir) == me)
        .map(|p| p.arm)
}

fn flatten(t: &toml::Table) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    walk("", t, &mut out);
    out
}

/// Every metric of every arm, the first arm the reference of the differences.
pub fn summarise(arms: &[Arm]) -> Vec<Vec<MetricSummary>> {
    let values = |arm: &Arm, m: &Metric| -> Vec<f64> { arm.runs.iter().filter_map(m.2).collect() };
    arms.iter()
        .enumerate()
        .map(|(i, arm)| {
            METRICS
                .iter()
                .map(|m| {
                    let v = values(arm, m);
                    let difference = (i > 0)
                        .then(|| welch_interval(&values(&arms[0], m), &v, CONFIDENCE))
                        .flatten();
                    MetricSummary {
                        mean: mean(&v),
                        std: std_dev(&v),
                        values: v,
                        difference,
                    }
                })
                .collect()
        })
        .collect()
}

/// The markdown report: a table of the scores and a table of the differences from the first arm.
pub fn markdown(arms: &[Arm], s: &[Vec<MetricSummary>], label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Scores of G_ema on {label}: mean ± standard deviation over the seeds that finished \
         (best: the evaluation with the lowest FID)."
    );
    let _ = writeln!(out);
    let head: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
    let _ = writeln!(out, "| arm | seeds | {} |", head.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(METRICS.len()));
    for (arm, row) in arms.iter().zip(s) {
        let finished = arm.runs.iter().filter(|r| r.finished).count();
        let cells: Vec<String> = METRICS
            .iter()
            .zip(row)
            .map(|(m, v)| mean_std(m.1, v))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {finished} of {} | {} |",
            arm.name,
            arm.runs.len(),
            cells.join(" | ")
        );
    }
    if arms.len() > 1 {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Difference from `{}` (arm minus it) with Welch's {:.0}% t interval (unequal variances, \
             Welch-Satterthwaite df); an interval that holds 0 does not tell the arms apart.",
            arms[0].name,
            CONFIDENCE * 100.0
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "| arm | {} |", head.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(METRICS.len()));
        for (arm, row) in arms.iter().zip(s).skip(1) {
            let cells: Vec<String> = METRICS
                .iter()
                .zip(row)
                .map(|(m, v)| match v.difference {
                    Some(iv) => format!(
                        "{} [{}, {}]",
                        number(m.1, iv.difference),
                        number(m.1, iv.low),
                        number(m.1, iv.high)
                    ),
                    None => "n/a".into(),
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", arm.name, cells.join(" | "));
        }
    }
    out
}

fn mean_std(metric: &str, v: &MetricSummary) -> String {
    match v.values.len() {
        0 => "n/a".into(),
        1 => number(metric, v.mean),
        _ => format!("{} ± {}", number(metric, v.mean), number(metric, v.std)),
    }
}

/// Accuracies as percentages, steps whole, scores to two decimals.
fn number(metric: &str, v: f64) -> String {
    if metric.starts_with("class_accuracy") {
        format!("{:.1}%", 100.0 * v)
    } else if metric == "best_step" {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The same as CSV, one row per arm and metric (full precision; empty where not defined).
pub fn csv(arms: &[Arm], s: &[Vec<MetricSummary>]) -> String {
    let mut out = String::from("arm,metric,n,mean,std,diff,diff_low,diff_high,diff_df\n");
    let f = |v: f64| {
        if v.is_finite() {
            format!("{v}")
        } else {
            String::new()
        }
    };
    for (arm, row) in arms.iter().zip(s) {
        for (m, v) in METRICS.iter().zip(row) {
            let d = v.difference;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                arm.name,
                m.1,
                v.values.len(),
                f(v.mean),
                f(v.std),
                d.map_or(String::new(), |d| f(d.difference)),
                d.map_or(String::new(), |d| f(d.low)),
                d.map_or(String::new(), |d| f(d.high)),
                d.map_or(String::new(), |d| f(d.df)),
            );
        }
    }
    out
}

/// The FID and IS panels: per arm, at each step every finished seed evaluated, the mean and the
/// range over those seeds.
pub fn panels(arms: &[Arm], label: &str) -> Vec<Panel> {
    let curve = |arm: &Arm, read: fn(&Point) -> f64| -> Curve {
        let finished: Vec<&RunResults> = arm.runs.iter().filter(|r| r.finished).collect();
        let mut steps: Vec<i64> = finished
            .iter()
            .flat_map(|r| r.curve.iter().map(|p| p.step))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
            .into_iter()
            .filter_map(|s| {
                let v: Vec<f64> = finished
                    .iter()
                    .filter_map(|r| r.curve.iter().find(|p| p.step == s).map(read))
                    .collect();
                (v.len() == finished.len()).then(|| {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (s, mean(&v), lo, hi)
                })
            })
            .collect()
    };
    vec![
        Panel {
            title: format!("FID_{label} (G_ema)"),
            x_label: "STEP".into(),
            curves: arms.iter().map(|a| curve(a, |p| p.fid)).collect(),
            points: Vec::new(),
        },
        Panel {
            title: format!("IS_{label} (G_ema)"),
            x_label: "STEP".into(),
            curves: arms.iter().map(|a| curve(a, |p| p.is)).collect(),
            points: Vec::new(),
        },
    ]
}
