//! The `trailkeep` binary: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = trailkeep::cli::Cli::parse();
    trailkeep::cli::run(cli)
}
