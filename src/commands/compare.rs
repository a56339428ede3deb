//! `sagan compare`: the arms of a sweep (or of any runs) side by side, with seed statistics.
use crate::cli::CompareArgs;
use crate::error::{Error, IoContext, Result};
use crate::experiments::run_results::{find_runs, RunResults};
use crate::experiments::{comparison, curves_plot};

pub fn run(a: CompareArgs) -> Result<u8> {
    let out = match (&a.out, a.dirs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.clone(),
        (None, _) => {
            return Err(Error::Compare(
                "several directories: say where the report goes with --out DIR".into(),
            ))
        }
    };
    let runs = find_runs(&a.dirs)?
        .iter()
        .map(|d| RunResults::read(d))
        .collect::<Result<Vec<_>>>()?;
    let label = runs
        .iter()
        .find_map(|r| r.feature_net.clone())
        .ok_or_else(|| {
            Error::Compare(format!(
                "none of the {} run(s) has an evaluation in its metrics.jsonl (eval.enabled)",
                runs.len()
            ))
        })?;
    if let Some(other) = runs
        .iter()
        .find(|r| r.feature_net.as_ref().is_some_and(|l| *l != label))
    {
        return Err(Error::Compare(format!(
            "{} is scored on {}, the others on {label}: their FIDs are not comparable",
            other.dir.display(),
            other.feature_net.as_deref().unwrap_or("?")
        )));
    }
    let arms = comparison::group(runs);
    let stats = comparison::summarise(&arms);
    let md = comparison::markdown(&arms, &stats, &label);
    println!("{md}");
    std::fs::create_dir_all(&out).at(&out)?;
    let md_path = out.join("compare.md");
    std::fs::write(&md_path, &md).at(&md_path)?;
    let csv_path = out.join("compare.csv");
    std::fs::write(&csv_path, comparison::csv(&arms, &stats)).at(&csv_path)?;
    let png_path = out.join("compare.png");
    let names: Vec<String> = arms
        .iter()
        .map(|arm| {
            let n = arm.runs.iter().filter(|r| r.finished).count();
            format!("{} ({n} of {} seeds)", arm.name, arm.runs.len())
        })
        .collect();
    curves_plot::write(&png_path, &comparison::panels(&arms, &label), &names)?;
    println!(
        "compare: {} arm(s), {} run(s); wrote {}, {} and {}",
        arms.len(),
        arms.iter().map(|a| a.runs.len()).sum::<usize>(),
        md_path.display(),
        csv_path.display(),
        png_path.display()
    );
    Ok(0)
}
