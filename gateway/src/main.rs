//! The `sessiongate` binary: parse the command line, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser as _;
use gateway::cli::{Cli, UsageError, run};

/// mimalloc instead of glibc's malloc: Pingora allocates and frees per request from
/// several threads, and glibc's malloc spent about 13% of a loaded gateway's CPU (perf,
/// cached path); see docs/performance.md. Built with `no_thp`: with transparent huge
/// pages mimalloc's eagerly committed arena cost ~18 MiB of idle RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
