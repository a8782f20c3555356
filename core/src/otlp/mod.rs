//! OpenTelemetry profiles (OTLP): a hand-written encoder of `ExportProfilesServiceRequest`,
//! pinned to opentelemetry-proto [`PROTO_VERSION`] (package [`PROTO_PACKAGE`]), written from
//! the same builder tables as the pprof encoder and streamed into the compressor the same way.
//!
//! What a profile becomes: one `ResourceProfiles` for the process (`service.name`,
//! `process.pid`, `host.name` and the configured tags), one `ScopeProfiles` (scope `forkprof`
//! and its version), and one `Profile` per sample type, since a v1development `Profile` has a
//! single sample type. Functions, locations, stacks, strings, attributes and links are shared
//! by all of them in the request's `ProfilesDictionary`. A sample whose value is zero for a
//! type is left out of that type's profile. Labels become sample attributes, except the trace
//! context labels of [`crate::trace`], which become the sample's `Link` (when both a trace id
//! and a span id are set; otherwise they stay attributes, so nothing recorded is lost).

pub(crate) mod encode;

pub(crate) use encode::OtlpScratch;

/// The opentelemetry-proto release whose `profiles.proto` the encoder writes.
pub const PROTO_VERSION: &str = "1.10.0";
/// The protobuf package of the profiles messages in that release.
pub const PROTO_PACKAGE: &str = "opentelemetry.proto.profiles.v1development";
/// The instrumentation scope name every profile carries.
pub const SCOPE_NAME: &str = "forkprof";

/// The process a profile describes: its resource attributes.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// `service.name`.
    pub service: &'a str,
    /// `process.pid`.
    pub pid: u32,
    /// `host.name`, when the kernel gave one.
    pub host: Option<&'a str>,
    /// The profiler's tags, each an attribute with a string value (resource keys are unique:
    /// a tag named like one of the attributes above, or like an earlier tag, is left out).
    pub tags: &'a [(String, String)],
}
