//! gzip and zstd, chosen per exporter, and a reader that accepts any of them.

use std::io::{Read, Write};
use std::ptr::NonNull;

use zstd_sys as zs;

use crate::error::{Error, Result};
use crate::export::Compression;
use crate::region_vec::{Memory, RegionVec};

/// zstd level 1: the Datadog intake's preference, and about as fast as gzip level 1.
const ZSTD_LEVEL: i32 = 1;

/// Compresses profiles one after the other, keeping its zstd context between them (the
/// serializer, `serialize.rs`, feeds it the encoder's output).
///
/// A zstd context at level 1 holds about a megabyte of tables. Made afresh per profile, that
/// memory came from new pages every time where the allocator returns large blocks to the
/// kernel at once (musl), which tripled the cost of compressing there; the collector keeps one
/// `Compressor` for its whole life instead. The context is a static one (`ZSTD_initStaticCCtx`)
/// in a region of the compressor's own [`Memory`]: in the collector, excluded from forked
/// children, and never allocated again after the first profile.
pub struct Compressor {
    mem: Memory,
    zstd: Option<StaticCCtx>,
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

/// A zstd compression context living in a workspace we own.
struct StaticCCtx {
    /// Keeps the workspace mapped for as long as the context lives (zstd never frees it).
    _workspace: RegionVec<u8>,
    cctx: NonNull<zs::ZSTD_CCtx>,
}

// SAFETY: the context is used only through `&mut Compressor`; zstd contexts are not tied to
// a thread.
unsafe impl Send for StaticCCtx {}

fn zstd_error(code: usize) -> std::io::Error {
    // SAFETY: ZSTD_getErrorName returns a static NUL-terminated string for any code.
    let name = unsafe { std::ffi::CStr::from_ptr(zs::ZSTD_getErrorName(code)) };
    std::io::Error::other(format!("zstd: {}", name.to_string_lossy()))
}

fn zstd_check(code: usize) -> std::io::Result<usize> {
    // SAFETY: ZSTD_isError is a pure function of its argument.
    if unsafe { zs::ZSTD_isError(code) } != 0 {
        Err(zstd_error(code))
    } else {
        Ok(code)
    }
}

impl StaticCCtx {
    fn new(mem: Memory) -> std::io::Result<StaticCCtx> {
        // SAFETY: a pure size computation.
        let size = unsafe { zs::ZSTD_estimateCStreamSize(ZSTD_LEVEL) };
        zstd_check(size)?;
        let mut ws = RegionVec::<u8>::fixed(size, mem);
        ws.reserve(size).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "cannot map the zstd context's workspace",
            )
        })?;
        // SAFETY: `size` writable bytes, page-aligned (zstd wants 8), owned by `ws`, which the
        // context keeps alive; zstd never frees a static context's workspace.
        let cctx = unsafe { zs::ZSTD_initStaticCCtx(ws.spare_ptr().cast(), size) };
        let cctx = NonNull::new(cctx)
            .ok_or_else(|| std::io::Error::other("zstd refused the static workspace"))?;
        let mut c = StaticCCtx {
            _workspace: ws,
            cctx,
        };
        // SAFETY: a valid context; setting a parameter between frames.
        zstd_check(unsafe {
            zs::ZSTD_CCtx_setParameter(
                c.cctx.as_ptr(),
                zs::ZSTD_cParameter::ZSTD_c_compressionLevel,
                ZSTD_LEVEL,
            )
        })?;
        c.reset()?;
        Ok(c)
    }

    fn reset(&mut self) -> std::io::Result<()> {
        // SAFETY: a valid context; a session reset keeps the parameters.
        zstd_check(unsafe {
            zs::ZSTD_CCtx_reset(
                self.cctx.as_ptr(),
                zs::ZSTD_ResetDirective::ZSTD_reset_session_only,
            )
        })
        .map(drop)
    }
}

/// A zstd frame being written into a `Vec` (grown fallibly: out of memory is an error here,
/// not an abort).
struct ZstdWriter<'a> {
    ctx: &'a mut StaticCCtx,
    out: &'a mut Vec<u8>,
}

impl ZstdWriter<'_> {
    fn step(&mut self, input: &[u8], op: zs::ZSTD_EndDirective) -> std::io::Result<()> {
        let mut inb = zs::ZSTD_inBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: 0,
        };
        loop {
            // SAFETY: a pure size query.
            let want = unsafe { zs::ZSTD_CStreamOutSize() };
            if self.out.capacity() - self.out.len() < want {
                self.out
                    .try_reserve(want.max(self.out.len() / 2))
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            "cannot grow the compressed profile",
                        )
                    })?;
            }
            let len = self.out.len();
            let mut outb = zs::ZSTD_outBuffer {
                dst: self.out.as_mut_ptr().cast(),
                size: self.out.capacity(),
                pos: len,
            };
            // SAFETY: `outb` covers the Vec's allocation, bytes `len..capacity` writable;
            // `inb` covers `input`; the context is valid.
            let left = zstd_check(unsafe {
                zs::ZSTD_compressStream2(self.ctx.cctx.as_ptr(), &mut outb, &mut inb, op)
            });
            // SAFETY: zstd wrote bytes `len..outb.pos`, within the capacity.
            unsafe { self.out.set_len(outb.pos) };
            let left = left?;
            let done = match op {
                zs::ZSTD_EndDirective::ZSTD_e_end => left == 0,
                _ => inb.pos == inb.size,
            };
            if done {
                return Ok(());
            }
        }
    }
}

impl Write for ZstdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.step(buf, zs::ZSTD_EndDirective::ZSTD_e_continue)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Compressor {
    /// A compressor in ordinary memory.
    pub fn new() -> Self {
        Self::new_in(Memory::inherited())
    }

    /// A compressor whose context lives in `mem`.
    pub fn new_in(mem: Memory) -> Self {
        Compressor { mem, zstd: None }
    }

    /// Runs `write` into an encoder for `c` whose output lands in `out` (cleared first).
    pub(crate) fn write(
        &mut self,
        c: Compression,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        write_with(&mut self.zstd, self.mem, c, out, write)
    }

    /// Compresses `raw` into `out` (cleared first).
    pub fn compress(
        &mut self,
        c: Compression,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        write_with(&mut self.zstd, self.mem, c, out, |w| w.write_all(raw))
    }
}

/// Runs `write` into an encoder for `c` whose output lands in `out` (zstd through the context
/// in `zstd`, made in `mem` on first use).
fn write_with(
    zstd: &mut Option<StaticCCtx>,
    mem: Memory,
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
            if zstd.is_none() {
                *zstd = Some(StaticCCtx::new(mem)?);
            }
            let ctx = zstd
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no zstd context"))?;
            ctx.reset()?;
            let mut w = ZstdWriter { ctx, out };
            let r = write(&mut w).and_then(|()| w.step(&[], zs::ZSTD_EndDirective::ZSTD_e_end));
            if r.is_err() {
                // A failed frame leaves the context mid-stream: start the next one clean.
                let _ = w.ctx.reset();
            }
            r
        }
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
