//! gzip and zstd, chosen per exporter, and a reader that accepts any of them.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::export::Compression;

/// zstd level 1: the Datadog intake's preference, and about as fast as gzip level 1.
const ZSTD_LEVEL: i32 = 1;

/// Compresses profiles one after the other, keeping zstd's context between them.
///
/// A zstd context at level 1 holds about a megabyte of tables. Made afresh per profile, that
/// memory comes from new pages every time where the allocator returns large blocks to the
/// kernel at once (musl), which tripled the cost of compressing there; the collector keeps one
/// `Compressor` for its whole life instead.
#[derive(Default)]
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compresses `raw` into `out` (cleared first).
    pub fn compress(
        &mut self,
        c: Compression,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        out.clear();
        match c {
            Compression::None => out.extend_from_slice(raw),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast());
                enc.write_all(raw)?;
                *out = enc.finish()?;
            }
            Compression::Zstd => {
                let z = match &mut self.zstd {
                    Some(z) => z,
                    None => self.zstd.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
                };
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                z.compress_to_buffer(raw, out)?;
            }
        }
        Ok(())
    }
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
