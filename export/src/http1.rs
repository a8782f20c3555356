//! The HTTP/1.1 an upload needs, and nothing more: one `POST` with a `Content-Length` body and
//! `Connection: close`, and the status, `Retry-After` and a bounded part of the body of its
//! response. forkprof writes this itself because the HTTP clients it could use log every
//! request through the `log` facade from the uploader thread, and a host's logger must never
//! run on a forkprof thread (its lock could be held across a fork).

use std::io::{self, Read, Write};

/// A request header value, and whether it holds a secret. A secret one never appears in
/// `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HeaderValue {
    value: String,
    sensitive: bool,
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sensitive {
            f.write_str("Sensitive")
        } else {
            write!(f, "{:?}", self.value)
        }
    }
}

impl HeaderValue {
    /// `None` for a value with a control character (CR and LF would end the header).
    pub fn new(value: &str) -> Option<HeaderValue> {
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return None;
        }
        Some(HeaderValue {
            value: value.to_string(),
            sensitive: false,
        })
    }

    /// A value fixed in forkprof's code (a name, a version): no control characters.
    pub fn fixed(value: &'static str) -> HeaderValue {
        debug_assert!(HeaderValue::new(value).is_some(), "{value:?}");
        HeaderValue {
            value: value.to_string(),
            sensitive: false,
        }
    }

    pub fn sensitive(mut self) -> HeaderValue {
        self.sensitive = true;
        self
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    #[cfg(test)]
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
}

/// Whether `name` is an HTTP field name (RFC 9110's `token`).
pub(crate) fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The request head: request line, `Host`, the fixed headers, then `headers`.
pub(crate) fn request_head(
    path: &str,
    host: &str,
    user_agent: &str,
    content_type: &str,
    content_length: usize,
    headers: &[(String, HeaderValue)],
) -> Vec<u8> {
    let mut h = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\n\
         Content-Type: {content_type}\r\nContent-Length: {content_length}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        h.push_str(name);
        h.push_str(": ");
        h.push_str(value.as_str());
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// What forkprof reads of a response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// At most the bound given to [`read_response`]; empty for a success (not read).
    pub body: Vec<u8>,
}

/// Reads a response: the head (at most `max_head` bytes, interim 1xx responses skipped), then,
/// unless the status is a success, up to `max_body` bytes of the body. A body cut short (the
/// connection closed or timed out) is kept as far as it came: it is only for the message.
pub(crate) fn read_response(
    r: &mut impl Read,
    max_head: usize,
    max_body: usize,
) -> io::Result<Response> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(i) = find(&buf[..buf.len().min(max_head + 4)], b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() >= max_head + 4 {
                return Err(bad(format!("response head longer than {max_head} bytes")));
            }
            if fill(r, &mut buf, 4096)? == 0 {
                return Err(if buf.is_empty() {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before any response",
                    )
                } else {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the response head",
                    )
                });
            }
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| bad("response head is not text".into()))?
            .to_string();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = parse_status(status_line)
            .ok_or_else(|| bad(format!("bad status line `{}`", clip(status_line))))?;
        if (100..200).contains(&status) {
            continue;
        }
        let mut retry_after = None;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("retry-after") {
                retry_after = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let mut body = Vec::new();
        if !(200..300).contains(&status) {
            body = read_body(r, buf, length, chunked, max_body);
        }
        return Ok(Response {
            status,
            retry_after,
            body,
        });
    }
}

fn read_body(
    r: &mut impl Read,
    mut raw: Vec<u8>,
    length: Option<usize>,
    chunked: bool,
    max: usize,
) -> Vec<u8> {
    loop {
        if chunked {
            let (body, complete) = dechunk(&raw);
            if complete || body.len() >= max || raw.len() > max + 4096 {
                return cap(body, max);
            }
        } else if raw.len() >= length.unwrap_or(usize::MAX).min(max) {
            return cap(raw, length.unwrap_or(usize::MAX).min(max));
        }
        match fill(r, &mut raw, 4096) {
            Ok(0) | Err(_) => {
                return if chunked {
                    cap(dechunk(&raw).0, max)
                } else {
                    cap(raw, length.unwrap_or(usize::MAX).min(max))
                }
            }
            Ok(_) => {}
        }
    }
}

fn cap(mut v: Vec<u8>, n: usize) -> Vec<u8> {
    v.truncate(n);
    v
}

/// The data of a chunked body as far as it goes, and whether its last chunk was seen.
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(b, b"\r\n") else {
            return (out, false);
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return (out, true); // not chunked after all: stop
        };
        if size == 0 {
            return (out, true);
        }
        b = &b[eol + 2..];
        let take = size.min(b.len());
        out.extend_from_slice(&b[..take]);
        if take < size || b.len() < size + 2 {
            return (out, false);
        }
        b = &b[size + 2..];
    }
}

/// Reads once into the end of `buf`, at most `n` bytes; `Interrupted` is retried.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    let at = buf.len();
    buf.resize(at + n, 0);
    let got = loop {
        match r.read(&mut buf[at..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                buf.truncate(at);
                return Err(e);
            }
            Ok(k) => break k,
        }
    };
    buf.truncate(at + got);
    Ok(got)
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn clip(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Writes all of `head` and `body`, each write bounded by the stream's own deadline.
pub(crate) fn write_request(w: &mut impl Write, head: &[u8], body: &[u8]) -> io::Result<()> {
    w.write_all(head)?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> io::Result<Response> {
        read_response(&mut raw.as_bytes(), 1024, 16)
    }

    #[test]
    fn statuses_headers_and_bodies_are_read() {
        let r = read("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = read("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 429 Too Many\r\nretry-after:  7 \r\nContent-Length: 4\r\n\r\nslowXX").unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("7"));
        assert_eq!(r.body, b"slow");
        let r = read("HTTP/1.1 500 E\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
        // No length: until the end, capped.
        let r = read("HTTP/1.1 503 E\r\n\r\n0123456789abcdefghij").unwrap();
        assert_eq!(r.body, b"0123456789abcdef");
        // Cut short: what came.
        let r = read("HTTP/1.1 502 E\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn malformed_responses_are_errors() {
        for raw in [
            "",
            "HTTP/1.1 200 OK\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 999 OK\r\n\r\n",
        ] {
            assert!(read(raw).is_err(), "{raw:?}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "x".repeat(2000));
        let e = read(&long).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn the_head_carries_the_fixed_and_given_headers() {
        let secret = HeaderValue::new("k").unwrap().sensitive();
        let head = request_head(
            "/p?q=1",
            "h:1",
            "ua/1",
            "a/b",
            3,
            &[("K".into(), secret.clone())],
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: ua/1\r\nAccept: */*\r\nContent-Type: a/b\r\nContent-Length: 3\r\nConnection: close\r\nK: k\r\n\r\n"
        );
        assert_eq!(format!("{secret:?}"), "Sensitive");
        assert!(HeaderValue::new("a\r\nb").is_none());
        assert!(valid_header_name("X-Scope-OrgID"));
        assert!(!valid_header_name("bad name") && !valid_header_name(""));
    }
}
