//! Profiler configuration: a builder that validates every field and names the bad one.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::export::{Compression, ExporterConfig, Retention};

/// One value column of the profile, e.g. `wall-time` in `nanoseconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleType {
    pub name: String,
    pub unit: String,
}

impl SampleType {
    pub fn new(name: impl Into<String>, unit: impl Into<String>) -> Self {
        SampleType {
            name: name.into(),
            unit: unit.into(),
        }
    }
}

/// What a child process does with profiling after `fork()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChildPolicy {
    /// The child gets fresh threads and its own profiles, tagged with its pid, holding only the
    /// samples it records after the fork. Started lazily on the first profiler call in the child
    /// (or by `after_fork_child()`), never inside the atfork handler.
    #[default]
    Restart,
    /// The child records nothing; every call is a cheap counted no-op.
    Disable,
}

/// A validated configuration. Build it with [`Config::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) service: String,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) sample_types: Vec<SampleType>,
    pub(crate) period: Duration,
    pub(crate) max_stack_depth: usize,
    pub(crate) buffer_capacity: usize,
    pub(crate) drain_interval: Duration,
    pub(crate) max_pending_profiles: usize,
    pub(crate) exporter: ExporterConfig,
    pub(crate) child_policy: ChildPolicy,
    pub(crate) sampling: Option<(SampleType, i64)>,
    /// Index into `sample_types` of the type tools show when none is named.
    pub(crate) default_sample_type: usize,
}

impl Config {
    /// Starts a configuration for `service`.
    pub fn builder(service: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder::new(service)
    }
    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn tags(&self) -> &[(String, String)] {
        &self.tags
    }
    /// What an exporter of this configuration is built from, in process `pid`.
    pub fn export_context(&self, pid: u32) -> crate::export::ExportContext<'_> {
        crate::export::ExportContext {
            service: &self.service,
            tags: &self.tags,
            pid,
            in_forked_child: false,
        }
    }
    pub fn sample_types(&self) -> &[SampleType] {
        &self.sample_types
    }
    /// The sample type `go tool pprof` and `forkprof top`/`flame` show when none is named.
    pub fn default_sample_type(&self) -> &SampleType {
        &self.sample_types[self.default_sample_type]
    }
    pub fn period(&self) -> Duration {
        self.period
    }
    pub fn max_stack_depth(&self) -> usize {
        self.max_stack_depth
    }
    pub fn buffer_capacity(&self) -> usize {
        self.buffer_capacity
    }
    pub fn exporter(&self) -> &ExporterConfig {
        &self.exporter
    }
    pub fn child_policy(&self) -> ChildPolicy {
        self.child_policy
    }
    pub fn max_pending_profiles(&self) -> usize {
        self.max_pending_profiles
    }
}

/// Default rotation period: one profile a minute, as the Datadog and Pyroscope back ends expect.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);
/// Deeper stacks are truncated to this many frames, the last one saying how many were dropped.
pub const DEFAULT_MAX_STACK_DEPTH: usize = 128;
/// Bytes of encoded samples that can wait between the host threads and the collector (the
/// buffer holds twice that: the halves being filled and the halves being read).
pub const DEFAULT_BUFFER_CAPACITY: usize = 4 << 20;
/// How often the collector drains the sample buffers.
pub const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// Encoded profiles waiting for the exporter; beyond this the oldest is dropped and counted.
pub const DEFAULT_MAX_PENDING_PROFILES: usize = 8;

/// Builder for [`Config`]; `build()` validates every field.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    service: String,
    tags: Vec<String>,
    sample_types: Vec<SampleType>,
    period: Duration,
    max_stack_depth: usize,
    buffer_capacity: usize,
    drain_interval: Duration,
    max_pending_profiles: usize,
    exporter: ExporterConfig,
    /// Set by `output_retention`; applied to the file exporter at `build`, so it holds
    /// whichever of `output_dir` and `output_retention` came first.
    retention: Option<Retention>,
    child_policy: ChildPolicy,
    sampling: Option<(SampleType, i64)>,
    default_sample_type: Option<String>,
}

impl ConfigBuilder {
    fn new(service: impl Into<String>) -> Self {
        ConfigBuilder {
            service: service.into(),
            tags: Vec::new(),
            sample_types: Vec::new(),
            period: DEFAULT_PERIOD,
            max_stack_depth: DEFAULT_MAX_STACK_DEPTH,
            buffer_capacity: DEFAULT_BUFFER_CAPACITY,
            drain_interval: DEFAULT_DRAIN_INTERVAL,
            max_pending_profiles: DEFAULT_MAX_PENDING_PROFILES,
            exporter: ExporterConfig::file("profiles", Compression::Gzip),
            retention: None,
            child_policy: ChildPolicy::Restart,
            sampling: None,
            default_sample_type: None,
        }
    }

    /// Adds a `key:value` tag (or a bare `key`, a tag with an empty value), attached to every
    /// profile.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Adds a value column; samples carry one value per sample type, in this order.
    pub fn sample_type(mut self, name: impl Into<String>, unit: impl Into<String>) -> Self {
        self.sample_types.push(SampleType::new(name, unit));
        self
    }
    /// How often the current profile is closed and exported.
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }
    pub fn max_stack_depth(mut self, depth: usize) -> Self {
        self.max_stack_depth = depth;
        self
    }
    /// Bytes of sample buffer between host threads and the collector (bounded memory).
    pub fn buffer_capacity(mut self, bytes: usize) -> Self {
        self.buffer_capacity = bytes;
        self
    }
    pub fn drain_interval(mut self, interval: Duration) -> Self {
        self.drain_interval = interval;
        self
    }
    pub fn max_pending_profiles(mut self, n: usize) -> Self {
        self.max_pending_profiles = n;
        self
    }
    pub fn exporter(mut self, exporter: ExporterConfig) -> Self {
        self.exporter = exporter;
        self
    }
    /// The exporter set so far (for hosts and bindings that adjust it before `build`).
    pub fn exporter_config(&self) -> &ExporterConfig {
        &self.exporter
    }
    /// Shorthand for the file exporter: `<dir>/<service>-<pid>-<stamp>-<seq>.pprof[.gz|.zst]`.
    pub fn output_dir(mut self, dir: impl Into<PathBuf>, compression: Compression) -> Self {
        self.exporter = ExporterConfig::file(dir, compression);
        self
    }
    /// How much of its directory the file exporter keeps (default [`Retention::DEFAULT`]:
    /// 1,000 files, 256 MiB); the oldest profile files beyond it are deleted after each write.
    /// An error at `build` if profiles do not go to files.
    pub fn output_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }
    pub fn child_policy(mut self, policy: ChildPolicy) -> Self {
        self.child_policy = policy;
        self
    }
    /// The pprof `period_type` / `period` (e.g. `cpu`/`nanoseconds`, 10_000_000 at 100 Hz).
    /// The sample type (by name) that tools show when the user names none, written as the
    /// profile's `default_sample_type`; the first configured type when not set.
    pub fn default_sample_type(mut self, name: impl Into<String>) -> Self {
        self.default_sample_type = Some(name.into());
        self
    }
    pub fn sampling_period(mut self, kind: SampleType, period: i64) -> Self {
        self.sampling = Some((kind, period));
        self
    }

    pub fn build(self) -> Result<Config> {
        if self.service.trim().is_empty() {
            return Err(Error::config("service", "must not be empty"));
        }
        if self.sample_types.is_empty() {
            return Err(Error::config(
                "sample_types",
                "must name at least one sample type, e.g. (\"wall-time\", \"nanoseconds\")",
            ));
        }
        for st in &self.sample_types {
            if st.name.is_empty() || st.unit.is_empty() {
                return Err(Error::config(
                    "sample_types",
                    "names and units must not be empty",
                ));
            }
        }
        if self.sample_types.len() > u8::MAX as usize {
            return Err(Error::config("sample_types", "at most 255 sample types"));
        }
        let default_sample_type = match &self.default_sample_type {
            None => 0,
            Some(name) => self
                .sample_types
                .iter()
                .position(|t| &t.name == name)
                .ok_or_else(|| {
                    let have: Vec<&str> =
                        self.sample_types.iter().map(|t| t.name.as_str()).collect();
                    Error::config(
                        "default_sample_type",
                        format!(
                            "`{name}` is not a configured sample type ({})",
                            have.join(", ")
                        ),
                    )
                })?,
        };
        if self.period.is_zero() {
            return Err(Error::config("period", "must be greater than zero"));
        }
        if self.max_stack_depth < 2 || self.max_stack_depth > u16::MAX as usize {
            return Err(Error::config(
                "max_stack_depth",
                "must be between 2 and 65535",
            ));
        }
        if self.buffer_capacity < 64 << 10 {
            return Err(Error::config("buffer_capacity", "must be at least 64 KiB"));
        }
        if self.drain_interval.is_zero() {
            return Err(Error::config("drain_interval", "must be greater than zero"));
        }
        if self.max_pending_profiles == 0 {
            return Err(Error::config("max_pending_profiles", "must be at least 1"));
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for tag in &self.tags {
            // A bare `key` is a tag with an empty value, as Datadog's tags may be.
            let (k, v) = tag.split_once(':').unwrap_or((tag, ""));
            if k.trim().is_empty() {
                return Err(Error::config(
                    "tags",
                    format!("`{tag}` has no key: expected key:value or key"),
                ));
            }
            tags.push((k.to_string(), v.to_string()));
        }
        let mut exporter = self.exporter;
        if let Some(r) = self.retention {
            match &mut exporter {
                ExporterConfig::File { retention, .. } => *retention = r,
                _ => {
                    return Err(Error::config(
                        "output_retention",
                        "applies to the file exporter: profiles here go elsewhere (set output_dir, or drop the retention)",
                    ))
                }
            }
        }
        exporter.validate()?;
        Ok(Config {
            service: self.service,
            tags,
            sample_types: self.sample_types,
            period: self.period,
            max_stack_depth: self.max_stack_depth,
            buffer_capacity: self.buffer_capacity,
            drain_interval: self.drain_interval,
            max_pending_profiles: self.max_pending_profiles,
            exporter,
            child_policy: self.child_policy,
            sampling: self.sampling,
            default_sample_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ConfigBuilder {
        Config::builder("svc").sample_type("samples", "count")
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (Config::builder(" ").sample_type("a", "b"), "service"),
            (Config::builder("svc"), "sample_types"),
            (base().period(Duration::ZERO), "period"),
            (base().tag(":novalue"), "tags"),
            (base().tag(" "), "tags"),
            (base().max_stack_depth(1), "max_stack_depth"),
            (base().buffer_capacity(10), "buffer_capacity"),
            (base().max_pending_profiles(0), "max_pending_profiles"),
            (base().default_sample_type("nope"), "default_sample_type"),
        ];
        for (builder, field) in cases {
            match builder.build() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an error naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn tags_are_split() {
        let c = base()
            .tag("env:prod")
            .tag("url:http://x")
            .tag("canary")
            .build()
            .unwrap();
        assert_eq!(c.tags()[0], ("env".into(), "prod".into()));
        assert_eq!(c.tags()[1], ("url".into(), "http://x".into()));
        assert_eq!(c.tags()[2], ("canary".into(), "".into()));
    }
}
