//! Which process and service a sample came from, for `--pid` / `--service`: read from the
//! profile itself (a sample's `pid` / `process_id` label, the `pid:N` and `service:NAME`
//! comments forkprof writes), else from forkprof's file name `<service>-<pid>-<seq>.pprof[.gz|.zst]`.

use std::path::Path;

use forkprof::pprof::decode::Sample;
use forkprof::pprof::Profile;

/// What a whole profile says about where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub pid: Option<u32>,
    pub service: Option<String>,
}

const PID_KEYS: &[&str] = &["pid", "process_id", "process id"];

impl Origin {
    pub fn of(path: &Path, p: &Profile) -> Origin {
        let mut o = Origin::default();
        for c in &p.comments {
            if let Some((k, v)) = c.split_once(':') {
                if o.pid.is_none() && PID_KEYS.contains(&k) {
                    o.pid = v.trim().parse().ok();
                }
                if o.service.is_none() && k == "service" && !v.is_empty() {
                    o.service = Some(v.to_string());
                }
            }
        }
        if o.pid.is_none() || o.service.is_none() {
            if let Some((service, pid)) = from_file_name(path) {
                o.pid = o.pid.or(Some(pid));
                o.service = o.service.or(Some(service));
            }
        }
        o
    }

    /// A sample's own pid label wins over the profile's.
    pub fn pid_of(&self, s: &Sample) -> Option<u32> {
        s.labels
            .iter()
            .find(|l| PID_KEYS.contains(&l.key.as_str()))
            .and_then(|l| {
                if l.str.is_empty() {
                    u32::try_from(l.num).ok()
                } else {
                    l.str.trim().parse().ok()
                }
            })
            .or(self.pid)
    }

    pub fn service_of<'a>(&'a self, s: &'a Sample) -> Option<&'a str> {
        s.labels
            .iter()
            .find(|l| l.key == "service" && !l.str.is_empty())
            .map(|l| l.str.as_str())
            .or(self.service.as_deref())
    }
}

/// `<service>-<pid>-<stamp>-<seq>.pprof[.gz|.zst]`, the file exporter's naming (the stamp is
/// `20261206T192439123456`; the service may hold dashes itself), or the older
/// `<service>-<pid>-<seq>.pprof[.gz|.zst]`.
fn from_file_name(path: &Path) -> Option<(String, u32)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.split(".pprof").next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (rest, seq) = stem.rsplit_once('-')?;
    if !digits(seq) {
        return None;
    }
    let rest = match rest.rsplit_once('-') {
        Some((before, stamp)) if is_stamp(stamp) => before,
        _ => rest,
    };
    let (service, pid) = rest.rsplit_once('-')?;
    if service.is_empty() || !digits(pid) {
        return None;
    }
    Some((service.to_string(), pid.parse().ok()?))
}

/// `20261206T192439123456`.
fn is_stamp(s: &str) -> bool {
    s.len() == 21
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use forkprof::pprof::decode::Label;

    #[test]
    fn file_names_give_service_and_pid() {
        assert_eq!(
            from_file_name(Path::new("/d/forkprof-demo-4242-3.pprof.gz")),
            Some(("forkprof-demo".into(), 4242))
        );
        assert_eq!(
            from_file_name(Path::new("api-7-0.pprof")),
            Some(("api".into(), 7))
        );
        assert_eq!(
            from_file_name(Path::new(
                "/d/forkprof-demo-4242-20261206T192439123456-3.pprof.gz"
            )),
            Some(("forkprof-demo".into(), 4242))
        );
        assert_eq!(
            from_file_name(Path::new("api-7-20261206T192439123456-0.pprof")),
            Some(("api".into(), 7))
        );
        assert_eq!(from_file_name(Path::new("cpu.pprof")), None);
        assert_eq!(from_file_name(Path::new("a-b-c.pprof")), None);
    }

    #[test]
    fn comments_then_labels_then_file_name() {
        let p = Profile {
            comments: vec!["service:api".into(), "pid:12".into(), "env:dev".into()],
            ..Profile::default()
        };
        let o = Origin::of(Path::new("other-99-1.pprof"), &p);
        assert_eq!(o.pid, Some(12));
        assert_eq!(o.service.as_deref(), Some("api"));
        let mut s = Sample::default();
        assert_eq!(o.pid_of(&s), Some(12));
        s.labels.push(Label {
            key: "process_id".into(),
            num: 77,
            ..Label::default()
        });
        assert_eq!(o.pid_of(&s), Some(77));
        let o = Origin::of(Path::new("other-99-1.pprof"), &Profile::default());
        assert_eq!(o.pid, Some(99));
        assert_eq!(o.service.as_deref(), Some("other"));
    }
}
