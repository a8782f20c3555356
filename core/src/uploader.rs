//! The uploader thread: takes finished profiles from the queue and hands them to the
//! exporter. It holds no lock while exporting, so a hung endpoint stalls only this thread,
//! and never a fork, a `record()` or the collector.

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;

use crate::export::Exporter;
use crate::hooks::{pause_point, Point};
use crate::session::{set_activity, Activity, Session, UPLOADER_IDLE_WAIT};

pub(crate) fn run(s: Arc<Session>, mut exporter: Box<dyn Exporter>) {
    let watched = s.clone(); // lets a pause between upload attempts end at the stop deadline
    crate::export::watch_stop(Box::new(move || {
        (watched.stopping.load(Acquire)).then(|| watched.stop_deadline.get().copied())?
    }));
    loop {
        let next = {
            let mut q = s.queue.lock();
            pause_point(Point::QueuePop);
            q.pop_front()
        };
        let Some(p) = next else {
            if s.collector_done.load(Acquire) {
                if s.queue.lock().is_empty() {
                    break;
                }
                continue;
            }
            set_activity(&s.uploader_activity, Activity::Idle);
            std::thread::park_timeout(UPLOADER_IDLE_WAIT);
            continue;
        };
        if p.seq != u64::MAX {
            set_activity(&s.uploader_activity, Activity::Exporting);
            pause_point(Point::Export);
            let deadline = if s.stopping.load(Acquire) {
                s.stop_deadline.get().copied()
            } else {
                None
            };
            let c = &s.counters;
            match exporter.export(&p, deadline) {
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
        s.flushed.raise_to(p.flush_ticket);
    }
    set_activity(&s.uploader_activity, Activity::Finished);
    s.finished.raise_to(1);
}
