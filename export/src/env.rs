//! Exporter settings from environment variables.
//!
//! # Precedence
//! For every setting, the first that is set wins:
//! 1. the explicit builder call (`Datadog::env("prod")` applied after `Datadog::from_env()`,
//!    or an [`ExporterConfig`] built without the environment at all);
//! 2. forkprof's own variables, `FORKPROF_*`;
//! 3. the conventional variables of the back end, `DD_*` for Datadog, `PYROSCOPE_*` for
//!    Pyroscope, `OTEL_EXPORTER_OTLP_*` for OTLP;
//! 4. the defaults (the agent's Unix socket if it exists, else `http://localhost:8126`;
//!    `http://localhost:4040` for Pyroscope, `http://localhost:4318` for OTLP; the service
//!    name of the profiler's `Config`).
//!
//! | setting | FORKPROF_* | back end's | default |
//! |---|---|---|---|
//! | which exporter | `FORKPROF_EXPORTER` = `datadog`, `datadog-agentless`, `pyroscope` | `PYROSCOPE_SERVER_ADDRESS` set (and no `DD_TRACE_AGENT_URL` / `DD_AGENT_HOST`): pyroscope; `DD_PROFILING_AGENTLESS=true`: agentless | datadog |
//! | endpoint | `FORKPROF_ENDPOINT` (see [`ExporterConfig::from_url`]) | `DD_TRACE_AGENT_URL`, then `DD_AGENT_HOST` + `DD_TRACE_AGENT_PORT`; `PYROSCOPE_SERVER_ADDRESS` | see above |
//! | service | `FORKPROF_SERVICE` | `DD_SERVICE`; `PYROSCOPE_APPLICATION_NAME` | `Config::service` |
//! | env, version | `FORKPROF_ENV`, `FORKPROF_VERSION` | `DD_ENV`, `DD_VERSION` | none |
//! | tags | `FORKPROF_TAGS` | `DD_TAGS` (read as the tracers do: [`parse_dd_tags`]) | none |
//! | intake | `FORKPROF_SITE` | `DD_SITE`, `DD_API_KEY` | `datadoghq.com` |
//! | timeouts | `FORKPROF_CONNECT_TIMEOUT_MS`, `FORKPROF_UPLOAD_TIMEOUT_MS` | | 2 s, 10 s |
//! | retries | `FORKPROF_MAX_RETRIES`, `FORKPROF_RETRY_BUDGET_MS`, `FORKPROF_INITIAL_BACKOFF_MS`, `FORKPROF_MAX_BACKOFF_MS` | | 3, 30 s, 250 ms, 4 s |
//! | Pyroscope auth | | `PYROSCOPE_BASIC_AUTH_USER` + `PYROSCOPE_BASIC_AUTH_PASSWORD`, or `PYROSCOPE_AUTH_TOKEN` (bearer); credentials in `PYROSCOPE_SERVER_ADDRESS`'s URL | none |
//! | Pyroscope tenant | | `PYROSCOPE_TENANT_ID` (sent as `X-Scope-OrgID`) | none |
//! | OTLP | `FORKPROF_EXPORTER=otlp`, or `FORKPROF_ENDPOINT=otlp+http://…` (a base URL) | `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` (the whole URL, used as is; setting it alone selects OTLP), then `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL: `/v1development/profiles` is appended) | `http://localhost:4318` |
//! | OTLP headers | | `OTEL_EXPORTER_OTLP_PROFILES_HEADERS`, then `OTEL_EXPORTER_OTLP_HEADERS` (`name=value,…`, values percent-decoded) | none |
//!
//! An OTLP profile's resource is the profiler's own: `service.name` is `Config::service` and
//! the tags are `Config::tags` (the exporter does not rename them).
//!
//! The environment is read once, by the call that builds the configuration, on the caller's
//! thread. Nothing reads it later: not `start()`, not a forked child's restart, never a
//! profiler thread (Rust's env lock, held by another thread at fork time, stays held in the
//! child).

use std::path::Path;
use std::time::Duration;

use crate::datadog::{Datadog, DEFAULT_AGENT_SOCKET, DEFAULT_AGENT_URL, DEFAULT_SITE};
use crate::http::HttpOptions;
use crate::otlp::Otlp;
use crate::pyroscope::Pyroscope;
use crate::ExporterConfig;
use forkprof_core::error::{Error, Result};

pub const DEFAULT_PYROSCOPE_URL: &str = "http://localhost:4040";

/// The variables, looked up through a function so tests need no `setenv`.
pub(crate) struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    socket_exists: &'a dyn Fn(&Path) -> bool,
}

impl<'a> Vars<'a> {
    pub fn new(
        get: &'a dyn Fn(&str) -> Option<String>,
        socket_exists: &'a dyn Fn(&Path) -> bool,
    ) -> Self {
        Vars { get, socket_exists }
    }

    /// The first of `names` that is set and not blank, with its name.
    fn any(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|n| {
            (self.get)(n)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (*n, v))
        })
    }

    fn value(&self, names: &[&'static str]) -> Option<String> {
        self.any(names).map(|(_, v)| v)
    }

    fn millis(&self, name: &'static str) -> Result<Option<Duration>> {
        match self.value(&[name]) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
                _ => Err(Error::config(
                    name,
                    format!("`{v}` is not a positive number of milliseconds"),
                )),
            },
        }
    }

    fn http(&self) -> Result<HttpOptions> {
        let mut o = HttpOptions::default();
        if let Some(d) = self.millis("FORKPROF_CONNECT_TIMEOUT_MS")? {
            o.connect_timeout = d;
        }
        if let Some(d) = self.millis("FORKPROF_UPLOAD_TIMEOUT_MS")? {
            o.request_timeout = d;
        }
        if let Some(v) = self.value(&["FORKPROF_MAX_RETRIES"]) {
            o.max_retries = v.parse().map_err(|_| {
                Error::config(
                    "FORKPROF_MAX_RETRIES",
                    format!("`{v}` is not a number of retries"),
                )
            })?;
        }
        if let Some(d) = self.millis("FORKPROF_RETRY_BUDGET_MS")? {
            o.retry_budget = d;
        }
        if let Some(d) = self.millis("FORKPROF_INITIAL_BACKOFF_MS")? {
            o.initial_backoff = d;
        }
        if let Some(d) = self.millis("FORKPROF_MAX_BACKOFF_MS")? {
            o.max_backoff = d;
        }
        Ok(o)
    }

    fn tags(&self) -> Vec<(String, String)> {
        self.value(&["FORKPROF_TAGS", "DD_TAGS"])
            .map_or_else(Vec::new, |list| parse_dd_tags(&list))
    }

    fn agent_url(&self) -> String {
        if let Some(u) = self.value(&["FORKPROF_ENDPOINT", "DD_TRACE_AGENT_URL"]) {
            return u;
        }
        let host = self.value(&["DD_AGENT_HOST"]);
        let port = self.value(&["DD_TRACE_AGENT_PORT"]);
        if host.is_some() || port.is_some() {
            let host = host.unwrap_or_else(|| "localhost".into());
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]") // an IPv6 literal
            } else {
                host
            };
            return format!("http://{host}:{}", port.as_deref().unwrap_or("8126"));
        }
        if (self.socket_exists)(Path::new(DEFAULT_AGENT_SOCKET)) {
            return format!("unix://{DEFAULT_AGENT_SOCKET}");
        }
        DEFAULT_AGENT_URL.into()
    }

    fn agentless_requested(&self) -> bool {
        self.value(&["DD_PROFILING_AGENTLESS"])
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }

    fn datadog(&self, agentless: bool) -> Result<Datadog> {
        let mut d = if agentless {
            let key = self
                .value(&["DD_API_KEY"])
                .ok_or_else(|| Error::config("DD_API_KEY", "must be set for agentless uploads"))?;
            let site = self
                .value(&["FORKPROF_SITE", "DD_SITE"])
                .unwrap_or_else(|| DEFAULT_SITE.into());
            Datadog::agentless(&site, &key)
        } else {
            Datadog::agent(&self.agent_url())
        };
        if let Some(s) = self.value(&["FORKPROF_SERVICE", "DD_SERVICE"]) {
            d = d.service(s);
        }
        if let Some(e) = self.value(&["FORKPROF_ENV", "DD_ENV"]) {
            d = d.env(e);
        }
        if let Some(v) = self.value(&["FORKPROF_VERSION", "DD_VERSION"]) {
            d = d.version(v);
        }
        for (k, v) in self.tags() {
            d = d.tag(k, v);
        }
        Ok(d.http_options(self.http()?))
    }

    fn pyroscope(&self) -> Result<Pyroscope> {
        let url = self
            .value(&["FORKPROF_ENDPOINT", "PYROSCOPE_SERVER_ADDRESS"])
            .unwrap_or_else(|| DEFAULT_PYROSCOPE_URL.into());
        let url = url.strip_prefix("pyroscope+").unwrap_or(&url).to_string();
        let app = self
            .value(&["FORKPROF_SERVICE", "PYROSCOPE_APPLICATION_NAME"])
            .unwrap_or_default();
        let mut p = Pyroscope::new(&url, &app);
        for (k, v) in self.tags() {
            p = p.tag(k, v);
        }
        match (
            self.value(&["PYROSCOPE_BASIC_AUTH_USER"]),
            self.value(&["PYROSCOPE_BASIC_AUTH_PASSWORD"]),
        ) {
            (Some(user), Some(password)) => p = p.basic_auth(user, password),
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "PYROSCOPE_BASIC_AUTH_USER",
                    "and PYROSCOPE_BASIC_AUTH_PASSWORD must be set together",
                ))
            }
        }
        if let Some(token) = self.value(&["PYROSCOPE_AUTH_TOKEN"]) {
            p = p.bearer_token(token);
        }
        if let Some(tenant) = self.value(&["PYROSCOPE_TENANT_ID"]) {
            p = p.tenant_id(tenant);
        }
        Ok(p.http_options(self.http()?))
    }

    fn otlp(&self) -> Result<Otlp> {
        let mut o = match (
            self.value(&["FORKPROF_ENDPOINT"]),
            self.value(&["OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"]),
        ) {
            (Some(base), _) => Otlp::new(base.strip_prefix("otlp+").unwrap_or(&base)),
            (None, Some(url)) => Otlp::profiles_url(&url),
            (None, None) => Otlp::new(
                &self
                    .value(&["OTEL_EXPORTER_OTLP_ENDPOINT"])
                    .unwrap_or_else(|| crate::otlp::DEFAULT_OTLP_URL.into()),
            ),
        };
        let names = [
            "OTEL_EXPORTER_OTLP_PROFILES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ];
        if let Some((name, list)) = self.any(&names) {
            for (k, v) in crate::otlp::parse_headers(name, &list)? {
                o = o.header(k, v);
            }
        }
        Ok(o.http_options(self.http()?))
    }

    pub fn exporter(&self) -> Result<ExporterConfig> {
        let kind = match self.any(&["FORKPROF_EXPORTER"]) {
            Some((_, k)) => k.to_ascii_lowercase(),
            None => {
                let endpoint = self.value(&["FORKPROF_ENDPOINT"]);
                let pyroscope = match &endpoint {
                    Some(e) => e.starts_with("pyroscope+"),
                    None => {
                        self.value(&["PYROSCOPE_SERVER_ADDRESS"]).is_some()
                            && self
                                .value(&["DD_TRACE_AGENT_URL", "DD_AGENT_HOST"])
                                .is_none()
                    }
                };
                let otlp = match &endpoint {
                    Some(e) => e.starts_with("otlp+"),
                    None => self
                        .value(&["OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"])
                        .is_some(),
                };
                if otlp {
                    "otlp".into()
                } else if pyroscope {
                    "pyroscope".into()
                } else if endpoint.is_none() && self.agentless_requested() {
                    "datadog-agentless".into()
                } else {
                    "datadog".into()
                }
            }
        };
        match kind.as_str() {
            "datadog" => Ok(self.datadog(false)?.into()),
            "datadog-agentless" => Ok(self.datadog(true)?.into()),
            "pyroscope" => Ok(self.pyroscope()?.into()),
            "otlp" => Ok(self.otlp()?.into()),
            other => Err(Error::config(
                "FORKPROF_EXPORTER",
                format!("`{other}`: expected datadog, datadog-agentless, pyroscope or otlp"),
            )),
        }
    }
}

/// Tags as Datadog's tracers read `DD_TAGS`: entries separated by commas when the list has
/// one (`team:data platform,zone:b` keeps the space inside a value), else by whitespace
/// (`team:a zone:b`, the agent's own form). Each entry is `key:value` split at the first colon
/// (`url:http://x` keeps its colons), or a bare `key`, a tag with an empty value. Whitespace
/// around keys and values is trimmed; empty entries and entries with an empty key (`:v`) are
/// skipped. Never fails: a tracer ignores what it cannot use rather than refusing to start,
/// and a profiler configured from the same variable should not be stricter than the tracer
/// beside it.
pub fn parse_dd_tags(list: &str) -> Vec<(String, String)> {
    let entries: Vec<&str> = if list.contains(',') {
        list.split(',').collect()
    } else {
        list.split_whitespace().collect()
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let (k, v) = entry.split_once(':').unwrap_or((entry, ""));
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The real environment.
pub(crate) fn from_process_env() -> Result<ExporterConfig> {
    let get = |n: &str| std::env::var(n).ok();
    let exists = |p: &Path| p.exists();
    Vars::new(&get, &exists).exporter()
}

/// The Datadog settings the environment gives, for a host that then overrides some.
pub(crate) fn datadog_from_process_env() -> Result<Datadog> {
    let get = |n: &str| std::env::var(n).ok();
    let exists = |p: &Path| p.exists();
    let v = Vars::new(&get, &exists);
    v.datadog(v.agentless_requested())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)], socket: bool) -> Result<ExporterConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |n: &str| map.get(n).cloned();
        let exists = move |_: &Path| socket;
        Vars::new(&get, &exists).exporter()
    }

    fn dd(cfg: ExporterConfig) -> Datadog {
        match crate::datadog_settings(&cfg) {
            Some(d) => d.clone(),
            None => panic!("expected Datadog, got {cfg:?}"),
        }
    }

    #[test]
    fn defaults_prefer_the_socket_then_localhost() {
        assert_eq!(
            dd(with(&[], true).unwrap()),
            Datadog::agent("unix:///var/run/datadog/apm.socket")
        );
        assert_eq!(
            dd(with(&[], false).unwrap()),
            Datadog::agent("http://localhost:8126")
        );
    }

    #[test]
    fn forkprof_beats_dd_beats_defaults() {
        let d = dd(with(
            &[
                ("DD_TRACE_AGENT_URL", "http://dd:1"),
                ("DD_AGENT_HOST", "ignored"),
                ("DD_SERVICE", "dd-svc"),
                ("FORKPROF_SERVICE", "fp-svc"),
                ("DD_ENV", "staging"),
                ("DD_VERSION", "1.2"),
                ("DD_TAGS", "team:a, zone:b"),
            ],
            true,
        )
        .unwrap());
        let want = Datadog::agent("http://dd:1")
            .service("fp-svc")
            .env("staging")
            .version("1.2")
            .tag("team", "a")
            .tag("zone", "b");
        assert_eq!(d, want);
        let d = dd(with(
            &[
                ("FORKPROF_ENDPOINT", "http://fp:2"),
                ("DD_TRACE_AGENT_URL", "http://dd:1"),
            ],
            false,
        )
        .unwrap());
        assert_eq!(d, Datadog::agent("http://fp:2"));
        let d = dd(with(
            &[("DD_AGENT_HOST", "::1"), ("DD_TRACE_AGENT_PORT", "9000")],
            false,
        )
        .unwrap());
        assert_eq!(d, Datadog::agent("http://[::1]:9000"));
        let d = dd(with(&[("DD_TRACE_AGENT_PORT", "9000")], true).unwrap());
        assert_eq!(d, Datadog::agent("http://localhost:9000"));
    }

    #[test]
    fn agentless_and_pyroscope_are_chosen_by_their_variables() {
        let d = dd(with(
            &[
                ("DD_PROFILING_AGENTLESS", "true"),
                ("DD_API_KEY", "k"),
                ("DD_SITE", "datadoghq.eu"),
            ],
            false,
        )
        .unwrap());
        assert_eq!(d, Datadog::agentless("datadoghq.eu", "k"));
        let err = with(&[("FORKPROF_EXPORTER", "datadog-agentless")], false).unwrap_err();
        assert!(err.to_string().contains("DD_API_KEY"), "{err}");
        let pyro = |cfg: ExporterConfig| match crate::pyroscope_settings(&cfg) {
            Some(p) => p.clone(),
            None => panic!("expected Pyroscope, got {cfg:?}"),
        };
        let p = pyro(
            with(
                &[
                    ("PYROSCOPE_SERVER_ADDRESS", "http://py:4040"),
                    ("PYROSCOPE_APPLICATION_NAME", "app"),
                ],
                true,
            )
            .unwrap(),
        );
        assert_eq!(p, Pyroscope::new("http://py:4040", "app"));
        // A Datadog agent setting wins over a stray Pyroscope address…
        assert!(crate::datadog_settings(
            &with(
                &[
                    ("PYROSCOPE_SERVER_ADDRESS", "http://py:4040"),
                    ("DD_AGENT_HOST", "a")
                ],
                false
            )
            .unwrap()
        )
        .is_some());
        // …and FORKPROF_EXPORTER over both.
        let p = pyro(
            with(
                &[("FORKPROF_EXPORTER", "pyroscope"), ("DD_AGENT_HOST", "a")],
                false,
            )
            .unwrap(),
        );
        assert_eq!(p, Pyroscope::new(DEFAULT_PYROSCOPE_URL, ""));
        let p = pyro(with(&[("FORKPROF_ENDPOINT", "pyroscope+http://p:1")], false).unwrap());
        assert_eq!(p, Pyroscope::new("http://p:1", ""));
        // Grafana Cloud style: basic auth and a tenant from Pyroscope's own variables.
        let p = pyro(
            with(
                &[
                    ("PYROSCOPE_SERVER_ADDRESS", "https://profiles.example"),
                    ("PYROSCOPE_APPLICATION_NAME", "checkout"),
                    ("PYROSCOPE_BASIC_AUTH_USER", "123456"),
                    ("PYROSCOPE_BASIC_AUTH_PASSWORD", "glc_token"),
                    ("PYROSCOPE_TENANT_ID", "team-a"),
                ],
                false,
            )
            .unwrap(),
        );
        assert_eq!(
            p,
            Pyroscope::new("https://profiles.example", "checkout")
                .basic_auth("123456", "glc_token")
                .tenant_id("team-a")
        );
        let p = pyro(
            with(
                &[
                    ("PYROSCOPE_SERVER_ADDRESS", "http://py:4040"),
                    ("PYROSCOPE_AUTH_TOKEN", "tok"),
                ],
                false,
            )
            .unwrap(),
        );
        assert_eq!(p, Pyroscope::new("http://py:4040", "").bearer_token("tok"));
        let err = with(
            &[
                ("PYROSCOPE_SERVER_ADDRESS", "http://py:4040"),
                ("PYROSCOPE_BASIC_AUTH_USER", "u"),
            ],
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("PYROSCOPE_BASIC_AUTH_PASSWORD"),
            "{err}"
        );
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dd_tags_are_read_as_the_tracers_read_them() {
        // Commas, when there is one; whitespace trimmed, empty entries skipped.
        assert_eq!(
            parse_dd_tags(" team:a , zone:b,,"),
            pairs(&[("team", "a"), ("zone", "b")])
        );
        // With a comma, a space belongs to the value.
        assert_eq!(
            parse_dd_tags("team:data platform,zone:b"),
            pairs(&[("team", "data platform"), ("zone", "b")])
        );
        // No comma: whitespace of any kind separates.
        assert_eq!(
            parse_dd_tags("team:a  zone:b\tfoo"),
            pairs(&[("team", "a"), ("zone", "b"), ("foo", "")])
        );
        // A bare key is a tag with an empty value; the first colon splits.
        assert_eq!(
            parse_dd_tags("foo,url:http://x:1,key:"),
            pairs(&[("foo", ""), ("url", "http://x:1"), ("key", "")])
        );
        // Nothing usable is no tag, never an error.
        assert!(parse_dd_tags("").is_empty());
        assert!(parse_dd_tags(" , ,:orphan, : ").is_empty());
    }

    #[test]
    fn a_tag_without_a_value_does_not_fail_the_configuration() {
        let d = dd(with(&[("DD_TAGS", "foo team:a")], false).unwrap());
        assert_eq!(
            d,
            Datadog::agent(DEFAULT_AGENT_URL)
                .tag("foo", "")
                .tag("team", "a")
        );
        // FORKPROF_TAGS wins over DD_TAGS, read the same way.
        let d = dd(with(
            &[("DD_TAGS", "foo"), ("FORKPROF_TAGS", "bar, baz:1")],
            false,
        )
        .unwrap());
        assert_eq!(
            d,
            Datadog::agent(DEFAULT_AGENT_URL)
                .tag("bar", "")
                .tag("baz", "1")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, name) in [
            (
                vec![("FORKPROF_UPLOAD_TIMEOUT_MS", "soon")],
                "FORKPROF_UPLOAD_TIMEOUT_MS",
            ),
            (
                vec![("FORKPROF_EXPORTER", "carrier-pigeon")],
                "FORKPROF_EXPORTER",
            ),
            (
                vec![("FORKPROF_MAX_RETRIES", "many")],
                "FORKPROF_MAX_RETRIES",
            ),
        ] {
            let err = with(&vars, false).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let t = dd(with(
            &[
                ("FORKPROF_CONNECT_TIMEOUT_MS", "150"),
                ("FORKPROF_MAX_RETRIES", "0"),
                ("FORKPROF_RETRY_BUDGET_MS", "5000"),
                ("FORKPROF_INITIAL_BACKOFF_MS", "20"),
                ("FORKPROF_MAX_BACKOFF_MS", "80"),
            ],
            false,
        )
        .unwrap());
        let o = HttpOptions {
            connect_timeout: Duration::from_millis(150),
            max_retries: 0,
            retry_budget: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(80),
            ..HttpOptions::default()
        };
        assert_eq!(t, Datadog::agent(DEFAULT_AGENT_URL).http_options(o));
    }

    #[test]
    fn otlp_is_chosen_and_configured_by_its_variables() {
        let otlp = |vars: &[(&str, &str)]| {
            let cfg = with(vars, true).unwrap();
            match crate::otlp_settings(&cfg) {
                Some(o) => o.clone(),
                None => panic!("expected OTLP for {vars:?}, got {cfg:?}"),
            }
        };
        let url = |vars: &[(&str, &str)]| otlp(vars).url().unwrap();
        // The signal's own variable selects OTLP and is the whole URL.
        assert_eq!(
            url(&[
                ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://c:4318/p"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            ]),
            "http://c:4318/p"
        );
        // The generic endpoint alone does not take profiles from Datadog...
        assert!(crate::datadog_settings(
            &with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], true).unwrap()
        )
        .is_some());
        // ...but is the base URL once OTLP is chosen.
        assert_eq!(
            url(&[
                ("FORKPROF_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
            ]),
            "http://c:4318/v1development/profiles"
        );
        assert_eq!(
            url(&[("FORKPROF_EXPORTER", "OTLP")]),
            "http://localhost:4318/v1development/profiles"
        );
        // FORKPROF_ENDPOINT wins over both, and its otlp+ scheme selects OTLP.
        assert_eq!(
            url(&[
                ("FORKPROF_ENDPOINT", "otlp+http://f:9"),
                ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://c:4318/p"),
                ("DD_TRACE_AGENT_URL", "http://agent:8126"),
            ]),
            "http://f:9/v1development/profiles"
        );
        // The profiles headers win over the generic ones; every entry is kept.
        let o = otlp(&[
            ("FORKPROF_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "c=3"),
        ]);
        assert_eq!(o.header_names().collect::<Vec<_>>(), ["a", "b"]);
        let o = otlp(&[
            ("FORKPROF_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20t"),
            ("FORKPROF_MAX_RETRIES", "7"),
        ]);
        assert_eq!(o.header_names().collect::<Vec<_>>(), ["Authorization"]);
        assert_eq!(o.http().max_retries, 7);
        let err = with(
            &[
                ("FORKPROF_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "junk"),
            ],
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
    }
}
