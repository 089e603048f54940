//! Classifying watch failures, so a lasting one (a kind that is not served, missing RBAC) is
//! logged once and not at every backoff retry.

use kube::runtime::watcher;

/// Why a watch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFailure {
    /// 404 (no CRD, no API group) or 405: the kind is not served.
    NotServed,
    /// 401/403: this operator may not read it.
    Forbidden,
    /// Anything else (connection, 5xx, 410 expiry): passes by itself.
    Other,
}

/// The kind of a watcher error.
pub fn classify(e: &watcher::Error) -> WatchFailure {
    let api_code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match api_code {
        Some(404 | 405) => WatchFailure::NotServed,
        Some(401 | 403) => WatchFailure::Forbidden,
        _ => WatchFailure::Other,
    }
}

/// Remembers the last failure logged: `first` is true when a failure differs from it.
#[derive(Debug, Default)]
pub struct OnceLog {
    last: Option<WatchFailure>,
}

impl OnceLog {
    /// Records `f`; true when it should be logged (a new kind of failure).
    pub fn first(&mut self, f: WatchFailure) -> bool {
        let first = self.last != Some(f);
        self.last = Some(f);
        first
    }

    /// A success: the next failure is logged again.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        )))
    }

    #[test]
    fn classification_and_once_logging() {
        assert_eq!(classify(&api(404)), WatchFailure::NotServed);
        assert_eq!(classify(&api(405)), WatchFailure::NotServed);
        assert_eq!(classify(&api(403)), WatchFailure::Forbidden);
        assert_eq!(classify(&api(500)), WatchFailure::Other);
        assert_eq!(classify(&api(410)), WatchFailure::Other);
        let mut log = OnceLog::default();
        assert!(log.first(WatchFailure::NotServed));
        assert!(!log.first(WatchFailure::NotServed));
        assert!(!log.first(WatchFailure::NotServed));
        assert!(log.first(WatchFailure::Forbidden));
        log.clear();
        assert!(log.first(WatchFailure::Forbidden));
    }
}
