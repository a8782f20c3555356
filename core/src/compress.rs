//! gzip and zstd, chosen per exporter, and a reader that accepts any of them.

use std::io::{Read, Write};
use std::time::SystemTime;

use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};

use crate::error::{Error, Result};
use crate::export::Compression;
use crate::profile::ProfileBuilder;

/// zstd level 1: the Datadog intake's preference, and about as fast as gzip level 1.
const ZSTD_LEVEL: i32 = 1;

/// Bytes of pprof encoded at a time before they go to the compressor.
const SPILL_AT: usize = 64 << 10;

/// Compresses profiles one after the other, keeping zstd's context between them.
///
/// A zstd context at level 1 holds about a megabyte of tables. Made afresh per profile, that
/// memory comes from new pages every time where the allocator returns large blocks to the
/// kernel at once (musl), which tripled the cost of compressing there; the collector keeps one
/// `Compressor` for its whole life instead.
#[derive(Default)]
pub struct Compressor {
    zstd: Option<CCtx<'static>>,
}

fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

impl Compressor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The context, ready for a new frame.
    fn zstd(&mut self) -> std::io::Result<&mut CCtx<'static>> {
        if self.zstd.is_none() {
            let mut ctx = CCtx::try_create()
                .ok_or_else(|| std::io::Error::other("cannot allocate a zstd context"))?;
            ctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
                .map_err(zstd_error)?;
            self.zstd = Some(ctx);
        }
        let ctx = self
            .zstd
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no zstd context"))?;
        ctx.reset(ResetDirective::SessionOnly).map_err(zstd_error)?;
        Ok(ctx)
    }

    /// Encodes `profile` as pprof and compresses it into `out` (cleared first), handing the
    /// encoder's output to the compressor every 64 KiB: the uncompressed profile never exists
    /// whole, so the peak is the tables plus the compressed bytes (see BENCHMARKS.md, peak RSS).
    pub fn encode_compressed(
        &mut self,
        profile: &ProfileBuilder,
        end: SystemTime,
        c: Compression,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.write_with(c, out, |w| {
            let mut chunk = Vec::with_capacity(SPILL_AT + (SPILL_AT >> 2));
            crate::pprof::encode_spilling(profile, end, &mut chunk, SPILL_AT, &mut |b| {
                w.write_all(b)
            })?;
            w.write_all(&chunk)
        })
    }

    /// Compresses `raw` into `out` (cleared first).
    pub fn compress(
        &mut self,
        c: Compression,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.write_with(c, out, |w| w.write_all(raw))
    }

    /// Runs `write` into an encoder for `c` whose output lands in `out`.
    fn write_with(
        &mut self,
        c: Compression,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        out.clear();
        match c {
            Compression::None => write(out),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast());
                write(&mut enc)?;
                *out = enc.finish()?;
                Ok(())
            }
            Compression::Zstd => {
                let ctx = self.zstd()?;
                let mut enc = zstd::stream::write::Encoder::with_context(std::mem::take(out), ctx);
                write(&mut enc)?;
                *out = enc.finish()?;
                Ok(())
            }
        }
    }
}

/// [`Compressor::encode_compressed`] with a context made for this call only.
pub fn encode_compressed(
    profile: &ProfileBuilder,
    end: SystemTime,
    c: Compression,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    Compressor::new().encode_compressed(profile, end, c, out)
}

/// Compresses `raw` into `out` (cleared first), with a context made for this call only.
pub fn compress(c: Compression, raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    Compressor::new().compress(c, raw, out)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Which compression `bytes` carries, by magic number.
pub fn sniff(bytes: &[u8]) -> Compression {
    if bytes.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if bytes.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Decompresses gzip or zstd (sniffed), or returns raw bytes as they are. `limit` bounds the
/// output so a hostile file cannot exhaust memory.
pub fn decompress_any(bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let res = match sniff(bytes) {
        Compression::None => return Ok(bytes.to_vec()),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(bytes)
            .take(limit + 1)
            .read_to_end(&mut out),
        Compression::Zstd => zstd::stream::read::Decoder::new(bytes)
            .and_then(|d| d.take(limit + 1).read_to_end(&mut out)),
    };
    res.map_err(|e| Error::Export {
        reason: format!("cannot decompress: {e}"),
    })?;
    if out.len() as u64 > limit {
        return Err(Error::Export {
            reason: format!("decompressed size exceeds {limit} bytes"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all() {
        let raw: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            compress(c, &raw, &mut out).unwrap();
            assert_eq!(sniff(&out), c);
            assert_eq!(decompress_any(&out, 1 << 20).unwrap(), raw);
        }
    }

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
            assert_eq!(sniff(&out), c);
            assert!(
                decompress_any(&out, 1 << 30).unwrap() == raw,
                "{c:?} differs"
            );
        }
    }

    #[test]
    fn a_reused_compressor_makes_independent_frames() {
        let mut c = Compressor::new();
        for n in [10_000u32, 50, 200_000] {
            let raw: Vec<u8> = (0..n).flat_map(|i| (i % 251).to_le_bytes()).collect();
            let mut out = Vec::new();
            c.compress(Compression::Zstd, &raw, &mut out).unwrap();
            assert_eq!(decompress_any(&out, 1 << 24).unwrap(), raw);
        }
    }

    #[test]
    fn limit_is_enforced() {
        let raw = vec![0u8; 100_000];
        let mut out = Vec::new();
        compress(Compression::Gzip, &raw, &mut out).unwrap();
        assert!(decompress_any(&out, 1000).is_err());
    }
}
