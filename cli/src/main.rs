//! `forkprof`: the pre-fork demo (the main job), the fork torture run, and pprof readers
//! (`top` tables and `flame` graphs).

mod demo;
mod flame;
mod stderr_log;
mod top;
mod torture;

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};

/// A fork-safe profiler core: the pre-fork demo, the fork torture run, and pprof readers.
#[derive(Parser, Debug)]
#[command(name = "forkprof", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Which of forkprof's messages (failed uploads and their reasons, dropped profiles,
    /// children that do not profile) are printed on stderr: off, error, warn, info, debug or
    /// trace. Default: RUST_LOG's level for `forkprof` (e.g. RUST_LOG=forkprof=debug), else info.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = stderr_log::parse_level)]
    log_level: Option<log::LevelFilter>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A pre-fork server profiling its forked workers (the main job); ends with a flame graph.
    ///
    /// The master starts the profiler and forks worker processes with a plain fork() (as
    /// Swoole or gunicorn do); each worker serves generated requests through real work and
    /// samples its own stack at 100 Hz. Every process writes its own profiles, and the run
    /// ends with flame.svg, a flame graph of all the workers, next to them.
    Demo(demo::Args),
    /// Fork from many threads while samples stream and uploads stall; latencies with and
    /// without the profiler.
    ///
    /// Forks from several threads at once while host threads record samples and the
    /// profiler's upload (forkprof's Datadog exporter) is stalled mid-body on a loopback
    /// endpoint that accepts and never reads or answers; then compares with the same forks
    /// and no profiler. Exit 0: all good; 1: a check failed; 2: bad usage; 3: DEADLOCK (a fork
    /// or a child made no progress within --watchdog).
    Torture(torture::Args),
    /// Print the top functions of pprof files (raw, gzip or zstd).
    ///
    /// For every sample type (or only --sample-type), the functions with flat, flat%, sum%,
    /// cum and cum%, as `go tool pprof -top` prints them.
    Top(top::Args),
    /// Write an interactive SVG flame graph of pprof files, or the difference of two.
    ///
    /// The files (raw, gzip or zstd) are merged into one graph: hover a frame for its value,
    /// click to zoom into it, Ctrl+F or "Search" to highlight frames matching a regular
    /// expression. With --diff BEFORE, a differential graph: widths are the FILEs' (AFTER),
    /// red frames grew and blue ones shrank against BEFORE.
    Flame(flame::Args),
    /// Print a shell completion script (e.g. `forkprof completions bash > /etc/bash_completion.d/forkprof`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// Ends the process with clap's usage error for `subcommand` (exit 2): for checks that
/// span several options, so they read like the ones clap makes itself.
pub fn usage_error(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let mut root = Cli::command();
    // Built, so the subcommand's usage line reads `forkprof <subcommand> ...`.
    root.build();
    let mut cmd = root.find_subcommand(subcommand).cloned().unwrap_or(root);
    cmd.error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn main() {
    let cli = Cli::parse();
    stderr_log::install(cli.log_level);
    let code = match cli.command {
        Command::Demo(a) => demo::main(a),
        Command::Torture(a) => torture::main(a),
        Command::Top(a) => top::main(a),
        Command::Flame(a) => flame::main(a),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics when its writer fails, and stdout may
            // be a pipe closed early (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "forkprof", &mut script);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("forkprof completions: cannot write to standard output: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
