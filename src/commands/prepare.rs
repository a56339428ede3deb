//! `sagan prepare`: an image folder packed into one file at the training resolution.
use crate::cli::PrepareArgs;
use crate::data::prepare::{prepare, PrepareOptions};
use crate::error::Result;

pub fn run(args: PrepareArgs) -> Result<u8> {
    let opts = PrepareOptions {
        resolution: args.resolution,
        channels: args.channels,
        skip_bad: args.skip_bad,
        threads: args.threads.unwrap_or_else(super::cpus),
        progress: true,
    };
    let report = prepare(&args.input, &args.out, &opts)?;
    for line in &report.skipped {
        eprintln!("skipped: {line}");
    }
    let h = &report.header;
    println!(
        "{} images ({} classes, {}x{}x{}) -> {} in {:.1} s ({:.0} images/s){}",
        h.count,
        h.class_names.len(),
        h.channels,
        h.resolution,
        h.resolution,
        args.out.display(),
        report.seconds,
        (h.count + h.skipped) as f64 / report.seconds,
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} unreadable image(s)", report.skipped.len())
        }
    );
    Ok(0)
}
