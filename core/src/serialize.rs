//! A profile being built, turned into the bytes an exporter sends: the pprof encoder
//! (`pprof/encode.rs`) or the OTLP one (`otlp/encode.rs`) streamed into the compressor (`compress.rs`) 64 KiB at a time, so the
//! uncompressed profile never exists whole and the peak is the tables plus the compressed
//! bytes (see BENCHMARKS.md, peak RSS). The one module that knows both the encoder and the
//! compressor: neither knows the other.

use std::time::SystemTime;

use crate::compress::Compressor;
use crate::export::{Compression, ProfileFormat};
use crate::otlp::{OtlpScratch, Resource};
use crate::pprof::encode::{EncodeScratch, Out, RegionBytes};
use crate::profile::ProfileBuilder;
use crate::region_vec::Memory;

/// Bytes of pprof encoded at a time before they go to the compressor.
const SPILL_AT: usize = 64 << 10;

/// Serializes profiles one after the other, keeping its working memory between them: the
/// compressor's zstd context, the encoder's chunk and per-id caches (the collector keeps one
/// for its whole life, in memory excluded from forked children).
pub struct Serializer {
    compressor: Compressor,
    chunk: RegionBytes,
    scratch: EncodeScratch,
    otlp: OtlpScratch,
}

impl Default for Serializer {
    fn default() -> Self {
        Self::new()
    }
}

impl Serializer {
    /// A serializer in ordinary memory.
    pub fn new() -> Self {
        Self::new_in(Memory::inherited())
    }

    /// A serializer whose context and buffers live in `mem`.
    pub fn new_in(mem: Memory) -> Self {
        Serializer {
            compressor: Compressor::new_in(mem),
            chunk: RegionBytes::new(mem),
            scratch: EncodeScratch::new(mem),
            otlp: OtlpScratch::new(mem),
        }
    }

    /// Encodes `profile` as pprof and compresses it into `out` (cleared first), handing the
    /// encoder's output to the compressor every 64 KiB.
    pub fn encode_compressed(
        &mut self,
        profile: &ProfileBuilder,
        end: SystemTime,
        c: Compression,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.encode_as(ProfileFormat::Pprof, profile, end, None, c, out)
    }

    /// Encodes `profile` in `format` and compresses it into `out` (cleared first), as
    /// [`Serializer::encode_compressed`] does. `resource` describes the process for OTLP
    /// (pprof carries it in the profile's comments).
    pub fn encode_as(
        &mut self,
        format: ProfileFormat,
        profile: &ProfileBuilder,
        end: SystemTime,
        resource: Option<&Resource<'_>>,
        c: Compression,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let Serializer {
            compressor,
            chunk,
            scratch,
            otlp,
        } = self;
        chunk.reset();
        let unknown = Resource {
            service: "",
            pid: 0,
            host: None,
            tags: &[],
        };
        compressor.write(c, out, |w| {
            let spill = &mut |b: &[u8]| w.write_all(b);
            match format {
                ProfileFormat::Pprof => {
                    crate::pprof::encode_spilling(profile, end, chunk, SPILL_AT, spill, scratch)?
                }
                ProfileFormat::Otlp => crate::otlp::encode::encode_spilling(
                    profile,
                    end,
                    resource.unwrap_or(&unknown),
                    chunk,
                    SPILL_AT,
                    spill,
                    otlp,
                )?,
            }
            if !chunk.ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "the encoder's buffer could not grow",
                ));
            }
            w.write_all(chunk.bytes())
        })
    }
}

/// [`Serializer::encode_compressed`] with a context made for this call only.
pub fn encode_compressed(
    profile: &ProfileBuilder,
    end: SystemTime,
    c: Compression,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    Serializer::new().encode_compressed(profile, end, c, out)
}

impl ProfileBuilder {
    /// Encodes the profile as pprof and compresses it into `out`, streaming (what the
    /// collector does): see [`Serializer::encode_compressed`].
    pub fn encode_compressed(
        &self,
        end: SystemTime,
        c: Compression,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        encode_compressed(self, end, c, out)
    }

    /// Encodes the profile as pprof protobuf (uncompressed) into `out`.
    pub fn encode(&self, end: SystemTime, out: &mut Vec<u8>) {
        crate::pprof::encode(self, end, out)
    }

    /// Encodes the profile as an OTLP `ExportProfilesServiceRequest` (uncompressed) for the
    /// process `resource` into `out`.
    pub fn encode_otlp(&self, end: SystemTime, resource: &Resource<'_>, out: &mut Vec<u8>) {
        crate::otlp::encode::encode(self, end, resource, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_encoding_matches_encode_then_compress() {
        use crate::config::SampleType;
        use crate::profile::{ProfFrame, ProfLabel};
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut b = ProfileBuilder::new(&[SampleType::new("samples", "count")], None, t0);
        // Enough distinct stacks that the encoder spills several times.
        for i in 0..20_000u32 {
            let frames: Vec<ProfFrame> = (0..8)
                .map(|d| ProfFrame {
                    function: b.intern(&format!("fn_{}", (i * 7 + d) % 3000)),
                    file: b.intern("file.rs"),
                    line: d,
                })
                .collect();
            let key = b.intern("k");
            let label = [ProfLabel {
                key,
                str: 0,
                num: i as i64,
                num_unit: 0,
            }];
            b.add(frames, &[1], &label, (i % 2 == 0).then_some(i as i64));
        }
        let end = t0 + std::time::Duration::from_secs(60);
        let mut raw = Vec::new();
        b.encode(end, &mut raw);
        assert!(
            raw.len() > 4 * SPILL_AT,
            "the test must spill: {} bytes",
            raw.len()
        );
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            encode_compressed(&b, end, c, &mut out).unwrap();
            assert_eq!(crate::compress::sniff(&out), c);
            assert!(
                crate::compress::decompress_any(&out, 1 << 30).unwrap() == raw,
                "{c:?} differs"
            );
        }
        let resource = Resource {
            service: "svc",
            pid: 7,
            host: Some("h"),
            tags: &[],
        };
        let mut raw = Vec::new();
        b.encode_otlp(end, &resource, &mut raw);
        assert!(raw.len() > 4 * SPILL_AT, "{} bytes", raw.len());
        let mut s = Serializer::new();
        for c in [Compression::None, Compression::Gzip] {
            let mut out = Vec::new();
            s.encode_as(ProfileFormat::Otlp, &b, end, Some(&resource), c, &mut out)
                .unwrap();
            assert!(
                crate::compress::decompress_any(&out, 1 << 30).unwrap() == raw,
                "OTLP {c:?} differs"
            );
        }
    }
}
