//! The `trailkeep` binary: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser;

// The writer thread frees what the HTTP workers allocated; glibc's malloc
// spent a quarter of the CPU on that under load (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = trailkeep::cli::Cli::parse();
    trailkeep::cli::run(cli)
}
