//! The `sagan` binary: parses the command line, runs the command (src/commands/), and makes sure
//! that an error or a panic on any rank ends the whole job instead of leaving the others waiting.
use std::process::ExitCode;

use clap::Parser;

use sagan::cli::Cli;
use sagan::distributed::abort;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "sagan: error{}: internal error: {}{at}",
            abort::rank_suffix(),
            sagan::error::strip_cpp_backtrace(&payload)
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        // Whatever thread this is, the other ranks must not wait for this one.
        abort::abort_job(1);
    }));
    match sagan::commands::run(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sagan: error{}: {e}", abort::rank_suffix());
            abort::abort_job(1)
        }
    }
}
