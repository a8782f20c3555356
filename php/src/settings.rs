//! The extension's settings: `forkprof.*` INI directives, each with its default and the
//! environment variables Datadog's PHP profiler reads for the same thing.
//!
//! Precedence, for every directive: a value set in INI (php.ini, a `conf.d` file, `-d`, a
//! php-fpm pool's `php_value` / `php_admin_value`), then its environment variable, then the
//! default. [`crate::ini`] applies the environment at MINIT by writing it into the directive
//! (so `ini_get()` and `php --ri` show the value in effect), and [`Settings::read`] parses the
//! directives' values at the first request of each process, after php-fpm applied its pool's
//! values. Parsing is pure (values are looked up through a function) so it is tested without
//! PHP.

use std::time::Duration;

/// One INI directive: its name, its default (what PHP registers and `ini_get()` returns when
/// nothing sets it), and the environment variables read, in order, when INI does not set it.
pub struct Entry {
    pub ini: &'static str,
    pub default: &'static str,
    pub env: &'static [&'static str],
}

pub const ENABLED: Entry = Entry {
    ini: "forkprof.enabled",
    default: "1",
    env: &["DD_PROFILING_ENABLED"],
};
pub const SERVICE: Entry = Entry {
    ini: "forkprof.service",
    default: "php",
    env: &["DD_SERVICE"],
};
pub const ENV: Entry = Entry {
    ini: "forkprof.env",
    default: "",
    env: &["DD_ENV"],
};
pub const VERSION: Entry = Entry {
    ini: "forkprof.version",
    default: "",
    env: &["DD_VERSION"],
};
pub const TAGS: Entry = Entry {
    ini: "forkprof.tags",
    default: "",
    env: &["DD_TAGS"],
};
pub const OUTPUT_DIR: Entry = Entry {
    ini: "forkprof.output_dir",
    default: "/tmp/forkprof",
    env: &[],
};
/// `DD_TRACE_AGENT_URL`, else `DD_AGENT_HOST` and/or `DD_TRACE_AGENT_PORT` (the other one
/// defaulting to `localhost` / `8126`), as Datadog's profiler picks its agent; else an OTLP
/// receiver: `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` (the whole URL), else
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL), written into the directive as `otlp+URL`.
pub const ENDPOINT: Entry = Entry {
    ini: "forkprof.endpoint",
    default: "",
    env: &[
        "DD_TRACE_AGENT_URL",
        "DD_AGENT_HOST",
        "DD_TRACE_AGENT_PORT",
        OTLP_PROFILES_ENDPOINT,
        OTLP_ENDPOINT,
    ],
};
/// The whole URL of an OTLP receiver's profiles path, used as is.
pub const OTLP_PROFILES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT";
/// The base URL of an OTLP receiver: the profiles path is appended.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const PERIOD_MS: Entry = Entry {
    ini: "forkprof.period_ms",
    default: "10",
    env: &[],
};
pub const EXPORT_PERIOD_S: Entry = Entry {
    ini: "forkprof.export_period_s",
    default: "60",
    env: &[],
};
pub const MAX_DEPTH: Entry = Entry {
    ini: "forkprof.max_depth",
    default: "128",
    env: &[],
};
pub const SHUTDOWN_TIMEOUT_MS: Entry = Entry {
    ini: "forkprof.shutdown_timeout_ms",
    default: "250",
    env: &[],
};

pub const ENDPOINT_COLLECTION: Entry = Entry {
    ini: "forkprof.endpoint_collection_enabled",
    default: "1",
    env: &["DD_PROFILING_ENDPOINT_COLLECTION_ENABLED"],
};

pub const ALLOCATION_ENABLED: Entry = Entry {
    ini: "forkprof.allocation_enabled",
    default: "1",
    env: &["DD_PROFILING_ALLOCATION_ENABLED"],
};
pub const ALLOCATION_DISTANCE: Entry = Entry {
    ini: "forkprof.allocation_sampling_distance",
    default: "4194304",
    env: &["DD_PROFILING_ALLOCATION_SAMPLING_DISTANCE"],
};

pub const EXCEPTION_ENABLED: Entry = Entry {
    ini: "forkprof.exception_enabled",
    default: "1",
    env: &["DD_PROFILING_EXCEPTION_ENABLED"],
};
pub const EXCEPTION_DISTANCE: Entry = Entry {
    ini: "forkprof.exception_sampling_distance",
    default: "100",
    env: &["DD_PROFILING_EXCEPTION_SAMPLING_DISTANCE"],
};
pub const TIMELINE_ENABLED: Entry = Entry {
    ini: "forkprof.timeline_enabled",
    default: "1",
    env: &["DD_PROFILING_TIMELINE_ENABLED"],
};

/// Every directive, in the order `php --ri forkprof` lists them.
pub const ALL: &[&Entry] = &[
    &ENABLED,
    &SERVICE,
    &ENV,
    &VERSION,
    &TAGS,
    &OUTPUT_DIR,
    &ENDPOINT,
    &PERIOD_MS,
    &EXPORT_PERIOD_S,
    &MAX_DEPTH,
    &SHUTDOWN_TIMEOUT_MS,
    &ENDPOINT_COLLECTION,
    &ALLOCATION_ENABLED,
    &ALLOCATION_DISTANCE,
    &EXCEPTION_ENABLED,
    &EXCEPTION_DISTANCE,
    &TIMELINE_ENABLED,
];

pub const DEFAULT_SERVICE: &str = "php";
pub const DEFAULT_OUTPUT_DIR: &str = "/tmp/forkprof";
#[cfg(test)]
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Where profiles go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Files(String),
    Agent(String),
    /// An OTLP/HTTP receiver: `url` is its base URL (the profiles path is appended), or with
    /// `whole`, the profiles URL itself (from `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`).
    Otlp {
        url: String,
        whole: bool,
    },
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
    /// Each sample carries its request's endpoint (the `trace endpoint` label).
    pub endpoint_label: bool,
    /// The mean distance in bytes between two sampled allocations; `None`: allocation
    /// profiling is off.
    pub allocation_distance: Option<u64>,
    /// The mean number of throws between two sampled ones; `None`: exception profiling is off.
    pub exception_distance: Option<u64>,
    /// Timestamps on every sample, and GC runs and compilations as timeline events.
    pub timeline: bool,
}

/// A setting that cannot be used: the message names it and says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting(pub String);

impl std::fmt::Display for BadSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn nonblank(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The value `e` takes from the environment, and the variable it came from (for messages).
pub fn env_value(
    e: &Entry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    if e.ini == ENDPOINT.ini {
        if let Some(url) = nonblank(env("DD_TRACE_AGENT_URL")) {
            return Some(("DD_TRACE_AGENT_URL", url));
        }
        let host = nonblank(env("DD_AGENT_HOST"));
        let port = nonblank(env("DD_TRACE_AGENT_PORT"));
        if host.is_none() && port.is_none() {
            return [OTLP_PROFILES_ENDPOINT, OTLP_ENDPOINT]
                .into_iter()
                .find_map(|name| nonblank(env(name)).map(|url| (name, format!("otlp+{url}"))));
        }
        let from = if host.is_some() {
            "DD_AGENT_HOST"
        } else {
            "DD_TRACE_AGENT_PORT"
        };
        let host = host.unwrap_or_else(|| "localhost".into());
        let port = port.unwrap_or_else(|| "8126".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        return Some((from, format!("http://{host}:{port}")));
    }
    e.env
        .iter()
        .find_map(|&name| nonblank(env(name)).map(|v| (name, v)))
}

/// The value of `e` given what INI configured (`None`: nothing set it) and the environment:
/// INI first, then the environment. `None`: the default applies. (At run time the same
/// order is split between [`crate::ini::apply_env`] and the engine's own INI handling.)
#[cfg(test)]
pub fn resolve(
    e: &Entry,
    configured: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    match configured {
        Some(v) => Some((e.ini, v)),
        None => env_value(e, env),
    }
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

fn parse_endpoint(from: &str, v: &str) -> Result<Destination, BadSetting> {
    let has_scheme = |v: &str, schemes: &[&str]| {
        schemes
            .iter()
            .any(|s| v.len() > s.len() && v.starts_with(s))
    };
    if let Some(url) = v.strip_prefix("otlp+") {
        if has_scheme(url, &["http://", "https://"]) {
            return Ok(Destination::Otlp {
                url: url.to_string(),
                whole: from == OTLP_PROFILES_ENDPOINT,
            });
        }
    } else if has_scheme(v, &["http://", "https://", "unix://"]) {
        return Ok(Destination::Agent(v.to_string()));
    }
    Err(BadSetting(format!(
        "{from}: `{v}` is not an agent URL; use http://host:port or unix:///path/to/socket \
         for the Datadog agent, otlp+http://host:port for an OTLP receiver"
    )))
}

impl Settings {
    /// Reads every setting from `get`, which returns a directive's value in effect and the
    /// name it came from (the directive, or the environment variable that set it); `None`
    /// (or a blank value) means the default. The first unusable value is the error.
    pub fn read(
        get: &dyn Fn(&Entry) -> Option<(&'static str, String)>,
    ) -> Result<Settings, BadSetting> {
        let get = |e: &Entry| {
            get(e)
                .and_then(|(from, v)| nonblank(Some(v)).map(|v| (from, v)))
                .or_else(|| nonblank(Some(e.default.to_string())).map(|v| (e.ini, v)))
        };
        let flag = |e: &Entry| match get(e) {
            Some((from, v)) => parse_bool(from, &v),
            None => parse_bool(e.ini, e.default),
        };
        let enabled = flag(&ENABLED)?;
        let service = get(&SERVICE).map_or_else(|| DEFAULT_SERVICE.to_string(), |(_, v)| v);
        // Read as Datadog's tracers read `DD_TAGS` (a bare `team` is a tag with an empty
        // value): never an error, as the tracer beside the profiler does not refuse them.
        let tags =
            get(&TAGS).map_or_else(Vec::new, |(_, v)| forkprof::export::env::parse_dd_tags(&v));
        let destination = match get(&ENDPOINT) {
            Some((from, v)) => parse_endpoint(from, &v)?,
            None => Destination::Files(
                get(&OUTPUT_DIR).map_or_else(|| DEFAULT_OUTPUT_DIR.to_string(), |(_, v)| v),
            ),
        };
        let number = |e: &Entry, min: u64, max: u64, unit: &str| match get(e) {
            Some((from, v)) => parse_range(from, &v, min, max, unit),
            None => parse_range(e.ini, e.default, min, max, unit),
        };
        let period_ms = number(&PERIOD_MS, 1, 1000, "milliseconds")?;
        let export_s = number(&EXPORT_PERIOD_S, 1, 3600, "seconds")?;
        let max_depth = number(&MAX_DEPTH, 2, 10_000, "frames")?;
        let shutdown_ms = number(&SHUTDOWN_TIMEOUT_MS, 0, 60_000, "milliseconds")?;
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
            endpoint_label: flag(&ENDPOINT_COLLECTION)?,
            allocation_distance: match flag(&ALLOCATION_ENABLED)? {
                true => Some(number(&ALLOCATION_DISTANCE, 1, 1 << 40, "bytes")?),
                false => None,
            },
            exception_distance: match flag(&EXCEPTION_ENABLED)? {
                true => Some(number(&EXCEPTION_DISTANCE, 1, 1 << 32, "throws")?),
                false => None,
            },
            timeline: flag(&TIMELINE_ENABLED)?,
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
        Settings::read(&|e| {
            resolve(e, nonblank(ini.get(e.ini).cloned()), &|k| {
                env.get(k).cloned()
            })
        })
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
        assert_eq!(s.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(s.allocation_distance, Some(4 << 20));
        assert_eq!(s.exception_distance, Some(100));
        assert!(s.timeline);
    }

    #[test]
    fn every_default_parses_and_names_are_unique() {
        let s = Settings::read(&|e| Some((e.ini, e.default.to_string()))).unwrap();
        assert_eq!(s, read(&[], &[]).unwrap());
        let mut names: Vec<_> = ALL.iter().map(|e| e.ini).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|e| e.ini.starts_with("forkprof.")));
    }

    #[test]
    fn the_sample_ini_file_shows_every_directive_with_its_default() {
        let file = include_str!("../forkprof.ini");
        for e in ALL {
            let line = format!(";{} = {}", e.ini, e.default);
            assert!(
                file.lines().any(|l| l.trim_end() == line.trim_end()),
                "php/forkprof.ini lacks `{line}`"
            );
            for env in e.env {
                assert!(file.contains(env), "php/forkprof.ini does not name {env}");
            }
        }
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
    fn the_agent_comes_from_its_url_or_host_and_port() {
        let s = read(&[], &[("DD_TRACE_AGENT_URL", "http://127.0.0.1:8126")]).unwrap();
        assert_eq!(
            s.destination,
            Destination::Agent("http://127.0.0.1:8126".into())
        );
        // The URL wins over host and port.
        let s = read(
            &[],
            &[
                ("DD_TRACE_AGENT_URL", "unix:///run/apm.socket"),
                ("DD_AGENT_HOST", "agent"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.destination,
            Destination::Agent("unix:///run/apm.socket".into())
        );
        let agent = |env: &[(&str, &str)]| read(&[], env).unwrap().destination;
        assert_eq!(
            agent(&[("DD_AGENT_HOST", "dd-agent")]),
            Destination::Agent("http://dd-agent:8126".into())
        );
        assert_eq!(
            agent(&[("DD_TRACE_AGENT_PORT", "9126")]),
            Destination::Agent("http://localhost:9126".into())
        );
        assert_eq!(
            agent(&[("DD_AGENT_HOST", "::1"), ("DD_TRACE_AGENT_PORT", "9126")]),
            Destination::Agent("http://[::1]:9126".into())
        );
        // forkprof.endpoint wins over all of them.
        let s = read(
            &[("forkprof.endpoint", "http://ini:1")],
            &[("DD_AGENT_HOST", "dd-agent")],
        )
        .unwrap();
        assert_eq!(s.destination, Destination::Agent("http://ini:1".into()));
    }

    #[test]
    fn otlp_comes_from_its_url_scheme_or_the_otel_variables_after_the_agent() {
        let dest = |ini: &[(&str, &str)], env: &[(&str, &str)]| read(ini, env).unwrap().destination;
        let otlp = |url: &str, whole| Destination::Otlp {
            url: url.into(),
            whole,
        };
        assert_eq!(
            dest(&[("forkprof.endpoint", "otlp+http://c:4318")], &[]),
            otlp("http://c:4318", false)
        );
        assert_eq!(
            dest(&[], &[(OTLP_ENDPOINT, "http://c:4318")]),
            otlp("http://c:4318", false)
        );
        // The profiles URL wins over the base URL, and is used whole.
        assert_eq!(
            dest(
                &[],
                &[
                    (OTLP_ENDPOINT, "http://base:4318"),
                    (
                        OTLP_PROFILES_ENDPOINT,
                        "http://c:4318/v1development/profiles"
                    )
                ]
            ),
            otlp("http://c:4318/v1development/profiles", true)
        );
        // forkprof.endpoint wins over every variable, the Datadog agent's over OTLP's.
        assert_eq!(
            dest(
                &[("forkprof.endpoint", "http://ini:1")],
                &[(OTLP_ENDPOINT, "http://c:4318")]
            ),
            Destination::Agent("http://ini:1".into())
        );
        assert_eq!(
            dest(
                &[],
                &[(OTLP_ENDPOINT, "http://c:4318"), ("DD_AGENT_HOST", "dd")]
            ),
            Destination::Agent("http://dd:8126".into())
        );
        // What a variable set is named in the message about it.
        let e = read(&[], &[(OTLP_ENDPOINT, "c:4318")]).unwrap_err();
        assert!(
            e.0.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: `otlp+c:4318`"),
            "{e}"
        );
        let e = read(&[("forkprof.endpoint", "otlp+unix:///x")], &[]).unwrap_err();
        assert!(e.0.contains("otlp+http://host:port"), "{e}");
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
    }

    #[test]
    fn tags_are_read_as_the_tracers_read_dd_tags() {
        let tags = |ini: &[(&str, &str)], env: &[(&str, &str)]| read(ini, env).unwrap().tags;
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            tags(&[("forkprof.tags", "team")], &[]),
            vec![pair("team", "")]
        );
        assert_eq!(
            tags(&[("forkprof.tags", "team:php,oops")], &[]),
            vec![pair("team", "php"), pair("oops", "")]
        );
        assert_eq!(
            tags(&[], &[("DD_TAGS", "team:data platform,url:http://x:1")]),
            vec![pair("team", "data platform"), pair("url", "http://x:1")]
        );
        assert_eq!(
            tags(&[], &[("DD_TAGS", "team:a zone:b")]),
            vec![pair("team", "a"), pair("zone", "b")]
        );
        // INI wins over the environment.
        assert_eq!(
            tags(&[("forkprof.tags", "a:1")], &[("DD_TAGS", "b:2")]),
            vec![pair("a", "1")]
        );
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
