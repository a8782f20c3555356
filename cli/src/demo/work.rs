//! What a demo worker does: serve generated requests through real, CPU-bound steps, each a
//! named frame on the shadow stack, with safe points inside their loops so the profile shows
//! where the time actually goes.
//!
//! A request is form-encoded text (request line, headers, ~25 KB body). Handling it means:
//! parse it (headers, then body fields with URL-decoding and number parsing), digest it with a
//! small hash written here, deflate the body, and render an HTML response with escaping.

use std::io::Write;
use std::time::Instant;

use super::shadow::{self, frame, safepoint, Func};

/// Body lines per generated request (about 25 KB of body).
const BODY_LINES: usize = 300;
/// Passes of the payload digest (a keyed hash per pass, as an etag plus integrity check).
const DIGEST_PASSES: u64 = 4;
/// Bytes handled between safe points in the byte-wise loops.
const CHUNK: usize = 4096;

const WORDS: [&str; 24] = [
    "alpha", "bravo", "charlie", "delta", "echo", "fox&trot", "golf", "<hotel>", "india",
    "juliett", "kilo", "lima", "\"mike\"", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "x-ray",
];

/// xorshift64*: deterministic payloads per request number.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Buffers reused across requests, as a server keeps per-connection buffers.
#[derive(Default)]
pub struct Buffers {
    request: Vec<u8>,
    response: String,
}

/// What `parse_request` understood.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub fields: Vec<Field>,
    pub body_start: usize,
}

#[derive(Debug, Default)]
pub struct Field {
    pub key: String,
    pub value: String,
    pub number_sum: u64,
    pub words: u32,
}

/// Serves requests until `deadline`; returns (requests served, a checksum of the responses so
/// none of the work can be optimised away).
pub fn serve_requests(deadline: Instant, seed: u64) -> (u64, u64) {
    let _f = frame!(Func::ServeRequests);
    let mut bufs = Buffers::default();
    let mut served = 0u64;
    let mut checksum = 0u64;
    while Instant::now() < deadline {
        checksum = checksum.rotate_left(5) ^ handle_request(seed.wrapping_add(served), &mut bufs);
        served += 1;
        safepoint();
    }
    shadow::sample_now();
    (served, checksum)
}

fn handle_request(n: u64, bufs: &mut Buffers) -> u64 {
    let _f = frame!(Func::HandleRequest);
    read_request(n, &mut bufs.request);
    safepoint();
    let Some(req) = parse_request(&bufs.request) else {
        return 0;
    };
    let body = &bufs.request[req.body_start..];
    let digest = hash_payload(body);
    let compressed = compress_body(body);
    render_response(&req, digest, &compressed, &mut bufs.response);
    digest ^ bufs.response.len() as u64 ^ compressed.len() as u64
}

/// "Reads" request `n` from the client: generates it into `out`.
fn read_request(n: u64, out: &mut Vec<u8>) {
    let _f = frame!(Func::ReadRequest);
    let mut rng = Rng::new(n);
    out.clear();
    let _ = write!(
        out,
        "POST /api/v1/orders/{} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: forkprof-demo/1.0\r\n\
         Accept: text/html\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Request-Id: {:016x}\r\nCookie: session={:016x}\r\n",
        rng.below(1_000_000),
        rng.next(),
        rng.next()
    );
    for h in 0..8 {
        let _ = write!(out, "X-Trace-{h}: {:x}\r\n", rng.next());
    }
    out.extend_from_slice(b"\r\n");
    for line in 0..BODY_LINES {
        let _ = write!(out, "item_{line}=");
        for w in 0..(4 + rng.below(10)) {
            if w > 0 {
                out.push(b'+');
            }
            if rng.below(3) == 0 {
                let _ = write!(out, "{}", rng.below(100_000));
            } else {
                // Reserved characters percent-encoded, as a browser sends them.
                for &b in WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes() {
                    match b {
                        b'&' | b'<' | b'>' | b'"' | b'=' | b'+' | b'%' => {
                            let _ = write!(out, "%{b:02X}");
                        }
                        _ => out.push(b),
                    }
                }
            }
        }
        out.push(b'\n');
        if line % 32 == 0 {
            safepoint();
        }
    }
}

fn parse_request(buf: &[u8]) -> Option<Request> {
    let _f = frame!(Func::ParseRequest);
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut req = parse_headers(&buf[..end])?;
    req.body_start = end + 4;
    req.fields = parse_body(&buf[req.body_start..]);
    Some(req)
}

fn parse_headers(head: &[u8]) -> Option<Request> {
    let _f = frame!(Func::ParseHeaders);
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let mut req = Request {
        method: first.next()?.to_string(),
        path: first.next()?.to_string(),
        ..Request::default()
    };
    for line in lines {
        let (name, value) = line.split_once(':')?;
        req.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    safepoint();
    Some(req)
}

fn parse_body(body: &[u8]) -> Vec<Field> {
    let _f = frame!(Func::ParseBody);
    let mut fields = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = String::from_utf8_lossy(&line[..eq]).into_owned();
        let value = url_decode(&line[eq + 1..]);
        let mut field = Field {
            key,
            ..Field::default()
        };
        for token in value.split(' ') {
            match token.parse::<u64>() {
                Ok(n) => field.number_sum = field.number_sum.wrapping_add(n),
                Err(_) => field.words += 1,
            }
        }
        field.value = value;
        fields.push(field);
        if i % 16 == 0 {
            safepoint();
        }
    }
    fields
}

fn url_decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A keyed 64-bit digest, byte at a time (FNV-1a's step with a final avalanche), one pass per
/// key: the kind of hash a VM computes in its own code for etags and integrity checks.
fn hash_payload(body: &[u8]) -> u64 {
    let _f = frame!(Func::HashPayload);
    let mut digest = 0u64;
    for pass in 0..DIGEST_PASSES {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for chunk in body.chunks(CHUNK) {
            for &b in chunk {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01B3);
            }
            safepoint();
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        digest = digest.rotate_left(17) ^ h;
    }
    digest
}

fn compress_body(body: &[u8]) -> Vec<u8> {
    let _f = frame!(Func::CompressBody);
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::default(),
    );
    for chunk in body.chunks(CHUNK) {
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(chunk);
        safepoint();
    }
    enc.finish().unwrap_or_default()
}

fn render_response(req: &Request, digest: u64, compressed: &[u8], out: &mut String) {
    use std::fmt::Write;
    let _f = frame!(Func::RenderResponse);
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nETag: \"{digest:016x}\"\r\nX-Body-Deflated: {}\r\n\
         Content-Type: text/html\r\n\r\n<html><body><h1>{} ",
        compressed.len(),
        req.method
    );
    escape_html(&req.path, out);
    out.push_str("</h1><table>");
    for (name, value) in &req.headers {
        out.push_str("<tr><th>");
        escape_html(name, out);
        out.push_str("</th><td>");
        escape_html(value, out);
        out.push_str("</td></tr>");
    }
    for (i, f) in req.fields.iter().enumerate() {
        out.push_str("<tr><td>");
        escape_html(&f.key, out);
        out.push_str("</td><td>");
        escape_html(&f.value, out);
        let _ = write!(
            out,
            "</td><td>{}</td><td>{}</td></tr>",
            f.number_sum, f.words
        );
        if i % 16 == 0 {
            safepoint();
        }
    }
    out.push_str("</table></body></html>\n");
}

fn escape_html(s: &str, out: &mut String) {
    let _f = frame!(Func::EscapeHtml);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_request_parses_back() {
        let mut buf = Vec::new();
        read_request(7, &mut buf);
        let req = parse_request(&buf).expect("parses");
        assert_eq!(req.method, "POST");
        assert!(req.path.starts_with("/api/v1/orders/"));
        assert_eq!(req.fields.len(), BODY_LINES);
        assert!(req.headers.iter().any(|(n, _)| n == "x-request-id"));
        // Percent-encoded reserved characters come back decoded.
        let all: String = req.fields.iter().map(|f| f.value.as_str()).collect();
        assert!(all.contains('<') || all.contains('&') || all.contains('"'));
        let mut out = String::new();
        render_response(&req, 1, &[0; 3], &mut out);
        assert!(!out.contains("<hotel>"));
    }

    #[test]
    fn url_decoding_and_escaping() {
        assert_eq!(url_decode(b"a+b%3Cc%3E%"), "a b<c>%");
        assert_eq!(url_decode(b"%4"), "%4");
        let mut out = String::new();
        escape_html("<a&'\">", &mut out);
        assert_eq!(out, "&lt;a&amp;&#39;&quot;&gt;");
    }

    #[test]
    fn digest_depends_on_every_byte() {
        let a = hash_payload(b"hello world");
        let b = hash_payload(b"hello worle");
        assert_ne!(a, b);
        assert_eq!(a, hash_payload(b"hello world"));
    }
}
