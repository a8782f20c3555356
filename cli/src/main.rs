//! `forkprof`: the pre-fork demo (the main job), the fork torture run, and a pprof reader.

mod demo;
mod top;
mod torture;

const USAGE: &str = "usage: forkprof <command> [options]

commands:
  demo      a pre-fork server profiling its forked workers (the main job)
  torture   fork from many threads while samples stream and uploads stall
  top       print the top functions of pprof files (raw, gzip or zstd)

run `forkprof <command> --help` for its options";

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next();
    let rest: Vec<String> = args.collect();
    let code = match cmd.as_deref() {
        Some("demo") => demo::main(&rest),
        Some("torture") => torture::main(&rest),
        Some("top") => top::main(&rest),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("forkprof: unknown command `{other}`\n\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
