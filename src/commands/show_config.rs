//! `sagan show-config`: the effective config as TOML, or with `--explain` every key's meaning,
//! default and (with a config) value.
use crate::cli::ShowConfigArgs;
use crate::config::{explain, Config};
use crate::error::Result;

pub fn run(args: ShowConfigArgs) -> Result<u8> {
    let cfg = match &args.config {
        Some(path) => Some(Config::load(path, &args.overrides)?),
        None if args.overrides.is_empty() => None,
        None => Some(Config::from_toml_str("", "<defaults>", &args.overrides)?),
    };
    match (args.explain, cfg) {
        (true, cfg) => print!("{}", explain::explain(cfg.as_ref())),
        (false, Some(cfg)) => print!("{}", cfg.to_toml()),
        (false, None) => unreachable!("clap requires --config without --explain"),
    }
    Ok(0)
}
