//! Fault injection for tests: latency, errors on chosen verbs/resources, watch disconnects and
//! forced conflicts. Reached through [`crate::ServerHandle::faults`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// An injected error: requests matching `verb` and `resource` fail with `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRule {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or None for all.
    pub verb: Option<String>,
    /// Resource plural (optionally `plural/subresource`), or None for all.
    pub resource: Option<String>,
    /// HTTP status code to return (e.g. 500, 503, 429).
    pub code: u16,
    /// How many requests fail; None = until cleared.
    pub remaining: Option<u32>,
}

/// Shared fault state.
pub struct Faults {
    latency_ms: AtomicU64,
    rules: Mutex<Vec<ErrorRule>>,
    conflicts: AtomicU32,
    conflicts_hit: AtomicU64,
    disconnect: watch::Sender<u64>,
    /// Requests seen, by (verb, resource).
    seen: Mutex<BTreeMap<(String, String), u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: AtomicU64::new(0),
            rules: Mutex::new(Vec::new()),
            conflicts: AtomicU32::new(0),
            conflicts_hit: AtomicU64::new(0),
            disconnect: watch::channel(0).0,
            seen: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Faults {
    /// Add latency to every API request (0 to turn off).
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::SeqCst))
    }
    /// Fail matching requests.
    pub fn add_error(&self, rule: ErrorRule) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }
    /// Convenience: fail the next `count` requests with `verb` on `resource` with `code`.
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16, count: u32) {
        self.add_error(ErrorRule {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            code,
            remaining: Some(count),
        });
    }
    pub fn clear_errors(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    /// The next `n` updates/patches (any resource) fail with 409 Conflict.
    pub fn conflict_next_updates(&self, n: u32) {
        self.conflicts.store(n, Ordering::SeqCst);
    }
    /// Injected conflicts not yet hit by an update or patch.
    pub fn conflicts_pending(&self) -> u32 {
        self.conflicts.load(Ordering::SeqCst)
    }
    /// Injected conflicts that updates or patches actually hit, since the server started.
    pub fn conflicts_hit(&self) -> u64 {
        self.conflicts_hit.load(Ordering::SeqCst)
    }
    /// Close every open watch now (clients see the stream end and re-watch).
    pub fn disconnect_watches(&self) {
        self.disconnect.send_modify(|g| *g += 1);
    }
    /// How many requests with `verb` (`list`, `get`, `watch`, ...) on `resource` (a plural,
    /// optionally `plural/subresource`) the server has answered or refused since it started:
    /// for tests that check how a client asks (e.g. that it pages with limit/continue).
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn record(&self, verb: &str, resource: &str, sub: Option<&str>) {
        let key = match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen.entry((verb.to_string(), key)).or_insert(0) += 1;
    }

    /// Clear everything.
    pub fn reset(&self) {
        self.set_latency(Duration::ZERO);
        self.clear_errors();
        self.conflict_next_updates(0);
    }

    pub(crate) fn disconnects(&self) -> watch::Receiver<u64> {
        self.disconnect.subscribe()
    }

    pub(crate) fn take_conflict(&self) -> bool {
        let hit = self
            .conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hit {
            self.conflicts_hit.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    /// The injected error code for a request, consuming one use of the rule.
    pub(crate) fn error_for(&self, verb: &str, resource: &str, sub: Option<&str>) -> Option<u16> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let full = match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        let idx = rules.iter().position(|r| {
            r.verb.as_deref().is_none_or(|v| v == verb)
                && r.resource
                    .as_deref()
                    .is_none_or(|x| x == full || (sub.is_none() && x == resource))
                && r.remaining != Some(0)
        })?;
        let code = rules[idx].code;
        if let Some(n) = rules[idx].remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                rules.remove(idx);
            }
        }
        Some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_expire() {
        let f = Faults::default();
        f.fail_next("create", "pods", 503, 2);
        assert_eq!(f.error_for("get", "pods", None), None);
        assert_eq!(f.error_for("create", "pods", None), Some(503));
        assert_eq!(f.error_for("create", "pods", Some("status")), None);
        assert_eq!(f.error_for("create", "pods", None), Some(503));
        assert_eq!(f.error_for("create", "pods", None), None);
        f.add_error(ErrorRule {
            verb: None,
            resource: Some("nodes/status".into()),
            code: 500,
            remaining: None,
        });
        assert_eq!(f.error_for("patch", "nodes", Some("status")), Some(500));
        assert_eq!(f.error_for("patch", "nodes", None), None);
        f.conflict_next_updates(1);
        assert_eq!(f.conflicts_pending(), 1);
        assert!(f.take_conflict());
        assert!(!f.take_conflict());
        assert_eq!((f.conflicts_pending(), f.conflicts_hit()), (0, 1));
    }

    #[test]
    fn requests_are_counted_by_verb_and_resource() {
        let f = Faults::default();
        assert_eq!(f.requests("list", "pods"), 0);
        f.record("list", "pods", None);
        f.record("list", "pods", None);
        f.record("patch", "pods", Some("status"));
        assert_eq!(f.requests("list", "pods"), 2);
        assert_eq!(f.requests("patch", "pods/status"), 1);
        assert_eq!(f.requests("patch", "pods"), 0);
    }
}
