//! Lifecycle events, kept in memory for long-polling clients.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use vnsnap_proto::{Event, EventKind};

const KEEP: usize = 10_000;

/// An append-only event log with a bounded memory.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
    notify: Notify,
}

impl EventLog {
    /// Appends an event and wakes waiters.
    pub fn push(&self, domain: Option<&str>, kind: EventKind) {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0 += 1;
            let ev = Event { seq: g.0, time_ms, domain: domain.map(str::to_string), kind };
            tracing::info!(seq = ev.seq, domain = ?ev.domain, kind = ?ev.kind, "event");
            g.1.push_back(ev);
            if g.1.len() > KEEP {
                g.1.pop_front();
            }
        }
        self.notify.notify_waiters();
    }

    fn after(&self, after: u64) -> Vec<Event> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().filter(|e| e.seq > after).cloned().collect()
    }

    /// Events with `seq > after`, waiting up to `wait` for one to arrive.
    pub async fn wait_after(&self, after: u64, wait: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let evs = self.after(after);
            if !evs.is_empty() {
                return evs;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }
}
