//! Errors of pod interface programming, and how they become CNI errors.

use std::path::PathBuf;

use hybridnet_cni::{CniError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error("network namespace {0} does not exist")]
    NetnsGone(PathBuf),
    #[error("{0} is not a usable network namespace: {1}")]
    NotANetns(PathBuf, String),
    #[error("{0} is the node's own network namespace; refusing to program it as a pod")]
    HostNetns(PathBuf),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something exists that ADD would have to destroy but does not own.
    #[error("{0}")]
    Conflict(String),
    /// CHECK found the live state different from what ADD builds.
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Thread(String),
}

impl PodNetError {
    pub fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> PodNetError {
        PodNetError::Netlink {
            what: what.into(),
            source,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> PodNetError {
        PodNetError::Io {
            what: what.into(),
            source,
        }
    }

    /// The errno of a netlink error (positive), if it is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            PodNetError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }

    /// The CNI error for this failure.
    pub fn to_cni(&self) -> CniError {
        let code = match self {
            PodNetError::NetnsGone(_) => ErrorCode::UnknownContainer,
            PodNetError::NotANetns(..) | PodNetError::HostNetns(_) => ErrorCode::InvalidEnvironment,
            PodNetError::Mismatch(_) => ErrorCode::CheckFailed,
            PodNetError::Io { .. } => ErrorCode::Io,
            PodNetError::Netlink { .. } | PodNetError::Conflict(_) | PodNetError::Thread(_) => {
                ErrorCode::InterfaceSetup
            }
        };
        CniError::new(code, self.to_string())
    }
}

/// errno of "no such device / object", which teardown treats as "already gone".
pub fn is_not_found(e: &PodNetError) -> bool {
    matches!(
        e.errno(),
        Some(nix::libc::ENODEV) | Some(nix::libc::ENOENT) | Some(nix::libc::ESRCH)
    )
}
