//! The uploader thread: takes finished profiles from the queue and hands them to the
//! exporter. It holds no lock while exporting, so a hung endpoint stalls only this thread,
//! and never a fork, a `record()` or the collector.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::export::Exporter;
use crate::pause_points::{pause_point, Point};
use crate::session::{Activity, Session};

pub(crate) fn run(s: Arc<Session>, mut exporter: Box<dyn Exporter>) {
    s.check_in();
    // Lets a pause between upload attempts end when the profiler stops.
    let _pause = crate::export::PauseScope::new(&*s);
    loop {
        let Some(p) = s.pop_profile() else {
            if s.nothing_left_to_export() {
                break;
            }
            s.set_uploader_activity(Activity::Idle);
            s.uploader_sleep();
            continue;
        };
        if p.seq != u64::MAX {
            s.set_uploader_activity(Activity::Exporting);
            pause_point(Point::InsideExport);
            let c = s.counters();
            match exporter.export(&p, s.export_deadline()) {
                Ok(d) => {
                    c.profiles_written.fetch_add(1, Relaxed);
                    c.bytes_written.fetch_add(d.bytes, Relaxed);
                    c.uploads_retried.fetch_add(d.retries as u64, Relaxed);
                }
                Err(f) => {
                    crate::messages::export_failed(&p, &f);
                    if f.too_large {
                        c.profiles_too_large.fetch_add(1, Relaxed);
                    } else {
                        c.profiles_failed.fetch_add(1, Relaxed);
                    }
                    c.uploads_retried.fetch_add(f.retries as u64, Relaxed);
                }
            }
        }
        s.profile_handled(p.flush_ticket);
    }
    s.set_uploader_activity(Activity::Finished);
    s.uploader_finished();
}
