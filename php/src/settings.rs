//! The extension's settings: `forkprof.*` INI entries, each with a Datadog-style environment
//! fallback, parsed once at MINIT into [`Settings`]. Parsing is pure (values are looked up
//! through a function) so it is tested without PHP.

use std::time::Duration;

/// One INI entry: its name, and the environment variable read when the INI value is empty.
pub struct Entry {
    pub ini: &'static str,
    pub env: Option<&'static str>,
}

pub const ENABLED: Entry = Entry {
    ini: "forkprof.enabled",
    env: Some("DD_PROFILING_ENABLED"),
};
pub const SERVICE: Entry = Entry {
    ini: "forkprof.service",
    env: Some("DD_SERVICE"),
};
pub const ENV: Entry = Entry {
    ini: "forkprof.env",
    env: Some("DD_ENV"),
};
pub const VERSION: Entry = Entry {
    ini: "forkprof.version",
    env: Some("DD_VERSION"),
};
pub const TAGS: Entry = Entry {
    ini: "forkprof.tags",
    env: Some("DD_TAGS"),
};
pub const OUTPUT_DIR: Entry = Entry {
    ini: "forkprof.output_dir",
    env: None,
};
pub const ENDPOINT: Entry = Entry {
    ini: "forkprof.endpoint",
    env: Some("DD_TRACE_AGENT_URL"),
};
pub const PERIOD_MS: Entry = Entry {
    ini: "forkprof.period_ms",
    env: None,
};
pub const EXPORT_PERIOD_S: Entry = Entry {
    ini: "forkprof.export_period_s",
    env: None,
};
pub const MAX_DEPTH: Entry = Entry {
    ini: "forkprof.max_depth",
    env: None,
};
pub const SHUTDOWN_TIMEOUT_MS: Entry = Entry {
    ini: "forkprof.shutdown_timeout_ms",
    env: None,
};

pub const DEFAULT_SERVICE: &str = "php";
pub const DEFAULT_OUTPUT_DIR: &str = "/tmp/forkprof";
pub const DEFAULT_PERIOD_MS: u64 = 10;
pub const DEFAULT_EXPORT_PERIOD_S: u64 = 60;
pub const DEFAULT_MAX_DEPTH: usize = 128;
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 250;

/// Where profiles go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Files(String),
    Agent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub service: String,
    pub env: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<(String, String)>,
    pub destination: Destination,
    pub period: Duration,
    pub export_period: Duration,
    pub max_depth: usize,
    pub shutdown_timeout: Duration,
}

/// A setting that cannot be used: the message names it and says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting(pub String);

impl std::fmt::Display for BadSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of `e`: the INI value if it is not blank, else its environment variable's.
/// Returns the name the value came from, for error messages.
fn value(
    e: &Entry,
    ini: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    let nonblank = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(v) = nonblank(ini(e.ini)) {
        return Some((e.ini, v));
    }
    let name = e.env?;
    nonblank(env(name)).map(|v| (name, v))
}

fn parse_bool(from: &str, v: &str) -> Result<bool, BadSetting> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(BadSetting(format!(
            "{from}: `{v}` is not a boolean; use 1/0, on/off, yes/no or true/false"
        ))),
    }
}

fn parse_range(from: &str, v: &str, min: u64, max: u64, unit: &str) -> Result<u64, BadSetting> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(BadSetting(format!(
            "{from}: `{v}` is not a whole number of {unit} between {min} and {max}"
        ))),
    }
}

/// `key:value` pairs separated by commas or spaces, Datadog's `DD_TAGS` form.
fn parse_tags(from: &str, v: &str) -> Result<Vec<(String, String)>, BadSetting> {
    v.split([',', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, val)) if !k.is_empty() && !val.is_empty() => {
                Ok((k.to_string(), val.to_string()))
            }
            _ => Err(BadSetting(format!(
                "{from}: `{v}` has tag `{t}`, which is not of the form key:value"
            ))),
        })
        .collect()
}

fn parse_endpoint(from: &str, v: &str) -> Result<String, BadSetting> {
    let scheme_ok = ["http://", "https://", "unix://"]
        .iter()
        .any(|s| v.len() > s.len() && v.starts_with(s));
    if scheme_ok {
        Ok(v.to_string())
    } else {
        Err(BadSetting(format!(
            "{from}: `{v}` is not an agent URL; use http://host:port or unix:///path/to/socket"
        )))
    }
}

impl Settings {
    /// Reads every setting; the first unusable one is the error.
    pub fn read(
        ini: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, BadSetting> {
        let get = |e: &Entry| value(e, ini, env);
        let enabled = match get(&ENABLED) {
            Some((from, v)) => parse_bool(from, &v)?,
            None => true,
        };
        let service = get(&SERVICE).map_or_else(|| DEFAULT_SERVICE.to_string(), |(_, v)| v);
        let tags = match get(&TAGS) {
            Some((from, v)) => parse_tags(from, &v)?,
            None => Vec::new(),
        };
        let destination = match get(&ENDPOINT) {
            Some((from, v)) => Destination::Agent(parse_endpoint(from, &v)?),
            None => Destination::Files(
                get(&OUTPUT_DIR).map_or_else(|| DEFAULT_OUTPUT_DIR.to_string(), |(_, v)| v),
            ),
        };
        let number = |e: &Entry, default: u64, min: u64, max: u64, unit: &str| match get(e) {
            Some((from, v)) => parse_range(from, &v, min, max, unit),
            None => Ok(default),
        };
        let period_ms = number(&PERIOD_MS, DEFAULT_PERIOD_MS, 1, 1000, "milliseconds")?;
        let export_s = number(
            &EXPORT_PERIOD_S,
            DEFAULT_EXPORT_PERIOD_S,
            1,
            3600,
            "seconds",
        )?;
        let max_depth = number(&MAX_DEPTH, DEFAULT_MAX_DEPTH as u64, 2, 10_000, "frames")?;
        let shutdown_ms = number(
            &SHUTDOWN_TIMEOUT_MS,
            DEFAULT_SHUTDOWN_TIMEOUT_MS,
            0,
            60_000,
            "milliseconds",
        )?;
        Ok(Settings {
            enabled,
            service,
            env: get(&ENV).map(|(_, v)| v),
            version: get(&VERSION).map(|(_, v)| v),
            tags,
            destination,
            period: Duration::from_millis(period_ms),
            export_period: Duration::from_secs(export_s),
            max_depth: max_depth as usize,
            shutdown_timeout: Duration::from_millis(shutdown_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(ini: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Settings, BadSetting> {
        let ini: HashMap<String, String> = ini
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::read(&|k| ini.get(k).cloned(), &|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_profile_to_files_every_10_ms() {
        let s = read(&[], &[]).unwrap();
        assert!(s.enabled);
        assert_eq!(s.service, DEFAULT_SERVICE);
        assert_eq!(
            s.destination,
            Destination::Files(DEFAULT_OUTPUT_DIR.to_string())
        );
        assert_eq!(s.period, Duration::from_millis(10));
        assert_eq!(s.max_depth, DEFAULT_MAX_DEPTH);
    }

    #[test]
    fn ini_wins_over_env_and_blank_ini_falls_back() {
        let s = read(
            &[("forkprof.service", "from-ini"), ("forkprof.env", " ")],
            &[("DD_SERVICE", "from-env"), ("DD_ENV", "staging")],
        )
        .unwrap();
        assert_eq!(s.service, "from-ini");
        assert_eq!(s.env.as_deref(), Some("staging"));
    }

    #[test]
    fn endpoint_selects_the_agent() {
        let s = read(&[], &[("DD_TRACE_AGENT_URL", "http://127.0.0.1:8126")]).unwrap();
        assert_eq!(
            s.destination,
            Destination::Agent("http://127.0.0.1:8126".into())
        );
    }

    #[test]
    fn bad_values_name_the_setting_they_came_from() {
        let e = read(&[("forkprof.period_ms", "fast")], &[]).unwrap_err();
        assert!(e.0.starts_with("forkprof.period_ms: `fast`"), "{e}");
        let e = read(&[("forkprof.period_ms", "0")], &[]).unwrap_err();
        assert!(e.0.contains("between 1 and 1000"), "{e}");
        let e = read(&[], &[("DD_PROFILING_ENABLED", "maybe")]).unwrap_err();
        assert!(e.0.starts_with("DD_PROFILING_ENABLED: `maybe`"), "{e}");
        let e = read(&[("forkprof.endpoint", "localhost:8126")], &[]).unwrap_err();
        assert!(e.0.starts_with("forkprof.endpoint:"), "{e}");
        let e = read(&[("forkprof.tags", "team:php,oops")], &[]).unwrap_err();
        assert!(e.0.contains("tag `oops`"), "{e}");
    }

    #[test]
    fn disabled_and_tags_parse() {
        let s = read(
            &[
                ("forkprof.enabled", "Off"),
                ("forkprof.tags", "team:php, tier:web"),
            ],
            &[],
        )
        .unwrap();
        assert!(!s.enabled);
        assert_eq!(
            s.tags,
            vec![
                ("team".to_string(), "php".to_string()),
                ("tier".to_string(), "web".to_string())
            ]
        );
    }
}
