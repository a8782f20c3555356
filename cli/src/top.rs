//! `forkprof top FILE...`: the top functions of pprof files (raw, gzip or zstd), flat and
//! cumulative, per sample type, in the layout of `go tool pprof -top`.

use std::path::Path;

use forkprof::pprof::top::{default_sample_type_index, sample_type_index, top, Top};
use forkprof::pprof::{self, Profile};

/// The options (their help text is in main.rs, on the subcommand).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Functions to show per sample type (0 = all).
    #[arg(short = 'n', value_name = "N", default_value_t = 20)]
    n: usize,
    /// Only this sample type (e.g. wall-time, cpu-time).
    #[arg(long, value_name = "NAME")]
    sample_type: Option<String>,
    /// pprof files, raw, gzip or zstd.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<String>,
}

/// Decompressed profiles larger than this are refused, so a hostile file cannot exhaust memory.
pub const MAX_PROFILE_BYTES: u64 = 1 << 30;

/// Reads and decodes one pprof file. The error is one line that names the file.
pub fn load(path: &Path) -> Result<Profile, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let raw = forkprof::compress::decompress_any(&bytes, MAX_PROFILE_BYTES)
        .map_err(|e| format!("{name}: {}", reason(e)))?;
    pprof::decode(&raw).map_err(|e| format!("{name}: {}", reason(e.into())))
}

fn reason(e: forkprof::Error) -> String {
    match e {
        forkprof::Error::Export { reason } => reason,
        other => other.to_string(),
    }
}

/// A value in its unit, scaled for reading: `1.25s`, `830.10ms`, `12.50MB`, `42`.
pub fn format_value(v: i64, unit: &str) -> String {
    let a = v.unsigned_abs() as f64;
    let sign = if v < 0 { "-" } else { "" };
    let scaled = |steps: &[(f64, &str)]| {
        for &(div, suffix) in steps {
            if a >= div {
                return format!("{sign}{:.2}{suffix}", a / div);
            }
        }
        format!("{v}{}", steps.last().map(|s| s.1).unwrap_or(""))
    };
    match unit {
        "nanoseconds" => scaled(&[(1e9, "s"), (1e6, "ms"), (1e3, "us"), (1.0, "ns")]),
        "microseconds" => scaled(&[(1e6, "s"), (1e3, "ms"), (1.0, "us")]),
        "milliseconds" => scaled(&[(1e3, "s"), (1.0, "ms")]),
        "bytes" => scaled(&[(1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B")]),
        _ => v.to_string(),
    }
}

/// The `go tool pprof -top` table for one sample type.
pub fn render(t: &Top, unit: &str, n: usize) -> String {
    use std::fmt::Write;
    let shown = if n == 0 {
        t.functions.len()
    } else {
        n.min(t.functions.len())
    };
    let shown_flat: i64 = t.functions[..shown].iter().map(|f| f.flat).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Showing top {shown} of {} functions, {} ({:.2}%) of {} total",
        t.functions.len(),
        format_value(shown_flat, unit),
        t.percent(shown_flat),
        format_value(t.total, unit)
    );
    let _ = writeln!(
        out,
        "{:>10} {:>6} {:>6} {:>10} {:>6}",
        "flat", "flat%", "sum%", "cum", "cum%"
    );
    let mut sum = 0i64;
    for f in &t.functions[..shown] {
        sum = sum.saturating_add(f.flat);
        let _ = writeln!(
            out,
            "{:>10} {:>5.2}% {:>5.2}% {:>10} {:>5.2}%  {}",
            format_value(f.flat, unit),
            t.percent(f.flat),
            t.percent(sum),
            format_value(f.cum, unit),
            t.percent(f.cum),
            f.name
        );
    }
    out
}

fn report(path: &str, o: &Args) -> Result<String, String> {
    let p = load(Path::new(path))?;
    let types: Vec<usize> = match &o.sample_type {
        Some(name) => vec![sample_type_index(&p, name).ok_or_else(|| {
            let have: Vec<&str> = p.sample_types.iter().map(|t| t.ty.as_str()).collect();
            format!(
                "{path}: no sample type `{name}` (it has: {})",
                have.join(", ")
            )
        })?],
        // The default type first, as `go tool pprof` shows it, then the others.
        None => {
            let first = default_sample_type_index(&p).unwrap_or(0);
            std::iter::once(first)
                .chain((0..p.sample_types.len()).filter(|&i| i != first))
                .filter(|&i| i < p.sample_types.len())
                .collect()
        }
    };
    let mut out = format!("File: {path}\n");
    if p.duration_nanos > 0 {
        out += &format!(
            "Duration: {}, {} sample rows\n",
            format_value(p.duration_nanos, "nanoseconds"),
            p.samples.len()
        );
    }
    for i in types {
        let st = &p.sample_types[i];
        out += &format!("Type: {} ({})\n", st.ty, st.unit);
        out += &render(&top(&p, i), &st.unit, o.n);
    }
    Ok(out)
}

pub fn main(o: Args) -> i32 {
    let mut code = 0;
    for (i, path) in o.files.iter().enumerate() {
        match report(path, &o) {
            Ok(text) => {
                use std::io::Write;
                let sep = if i > 0 { "\n" } else { "" };
                let mut out = std::io::stdout().lock();
                // A reader that closed the pipe (`| head`) has all it wanted: stop quietly
                // rather than panic as print! does.
                if write!(out, "{sep}{text}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return code;
                }
            }
            Err(e) => {
                eprintln!("forkprof top: {e}");
                code = 1;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_scaled_by_unit() {
        assert_eq!(format_value(1_250_000_000, "nanoseconds"), "1.25s");
        assert_eq!(format_value(830_100_000, "nanoseconds"), "830.10ms");
        assert_eq!(format_value(0, "nanoseconds"), "0ns");
        assert_eq!(format_value(-2_000, "nanoseconds"), "-2.00us");
        assert_eq!(format_value(12_500_000, "bytes"), "12.50MB");
        assert_eq!(format_value(42, "count"), "42");
    }

    #[test]
    fn options_are_parsed() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let o = T::try_parse_from(["top", "-n", "3", "--sample-type=cpu-time", "a.pprof", "b"])
            .unwrap()
            .a;
        assert_eq!(o.n, 3);
        assert_eq!(o.sample_type.as_deref(), Some("cpu-time"));
        assert_eq!(o.files, ["a.pprof", "b"]);
        for bad in [
            &["top", "-n"][..],
            &["top", "-n", "x", "f"],
            &["top", "--bogus", "f"],
            &["top"],
        ] {
            assert!(T::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }
}
