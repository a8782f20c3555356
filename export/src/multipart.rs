//! `multipart/form-data` bodies (RFC 7578), built in one buffer: the profile is already in
//! memory and compressed, so streaming would save nothing.

/// A form body being built; `finish` closes it and returns the content type and the bytes.
pub(crate) struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    /// `seed` makes the boundary differ between uploads; a boundary must not occur in any
    /// part, and 32 random hex digits after dashes do not occur in JSON or in our pprof by
    /// chance often enough to matter, but we check anyway in `part`.
    pub fn new(seed: u64, capacity: usize) -> Multipart {
        Multipart {
            boundary: format!("------------------------forkprof{seed:016x}"),
            body: Vec::with_capacity(capacity + 512),
        }
    }

    #[cfg(test)]
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// Adds a part. Names and file names are ours (ASCII, no quotes), never user input.
    pub fn part(&mut self, name: &str, filename: Option<&str>, content_type: &str, data: &[u8]) {
        debug_assert!(!name.contains('"') && !filename.unwrap_or("").contains('"'));
        let b = &mut self.body;
        b.extend_from_slice(b"--");
        b.extend_from_slice(self.boundary.as_bytes());
        b.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        b.extend_from_slice(name.as_bytes());
        b.push(b'"');
        if let Some(f) = filename {
            b.extend_from_slice(b"; filename=\"");
            b.extend_from_slice(f.as_bytes());
            b.push(b'"');
        }
        b.extend_from_slice(b"\r\nContent-Type: ");
        b.extend_from_slice(content_type.as_bytes());
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }

    /// True if `data` contains the delimiter line; the caller then picks another boundary.
    pub fn collides(&self, data: &[u8]) -> bool {
        let needle = self.boundary.as_bytes();
        data.windows(needle.len()).any(|w| w == needle)
    }

    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body.extend_from_slice(b"--\r\n");
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut m = Multipart::new(0xab, 0);
        m.part("event", Some("event.json"), "application/json", b"{}");
        m.part("x", None, "text/plain", b"1");
        let b = m.boundary().to_string();
        assert!(!m.collides(b"{}"));
        let (ct, body) = m.finish();
        assert_eq!(ct, format!("multipart/form-data; boundary={b}"));
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"event\"; filename=\"event.json\"\r\n\
                 Content-Type: application/json\r\n\r\n{{}}\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Type: text/plain\r\n\r\n1\r\n\
                 --{b}--\r\n"
            )
        );
    }
}
