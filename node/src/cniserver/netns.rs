//! Network namespaces as open file descriptors, and running rtnetlink inside one.
//!
//! Netlink sockets stay bound to the namespace they were created in, so work inside a namespace
//! runs on a dedicated OS thread that entered it with setns(2) and opened its own connection
//! (rust-stack-notes §3). The thread ends with the work; the caller's threads never move.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use rtnetlink::Handle;

use super::error::PodNetError;

/// An open network namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    /// (device, inode) of the nsfs file: equal ids mean the same namespace.
    id: (u64, u64),
}

// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): the namespace type of an nsfs fd.
const NS_GET_NSTYPE: nix::libc::c_ulong = 0xb703;

impl Netns {
    /// Opens a namespace file (`/var/run/netns/x`, `/proc/<pid>/ns/net`). Fails with
    /// [`PodNetError::NetnsGone`] when the path does not exist and
    /// [`PodNetError::NotANetns`] when it is something else.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, PodNetError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PodNetError::NetnsGone(path.clone()),
            _ => PodNetError::NotANetns(path.clone(), e.to_string()),
        })?;
        let fs = fstatfs(&file).map_err(|e| PodNetError::NotANetns(path.clone(), e.to_string()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(PodNetError::NotANetns(
                path,
                "it is not a namespace file (nsfs)".into(),
            ));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace type.
        let kind = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != nix::libc::CLONE_NEWNET {
            return Err(PodNetError::NotANetns(
                path,
                "it is a namespace, but not a network namespace".into(),
            ));
        }
        let meta = file
            .metadata()
            .map_err(|e| PodNetError::NotANetns(path.clone(), e.to_string()))?;
        Ok(Netns {
            id: (meta.dev(), meta.ino()),
            fd: Arc::new(OwnedFd::from(file)),
            path,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns, PodNetError> {
        Netns::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn same_as(&self, other: &Netns) -> bool {
        self.id == other.id
    }

    pub(crate) fn fd(&self) -> &Arc<OwnedFd> {
        &self.fd
    }

    /// Runs `f` with an rtnetlink handle inside this namespace, on a thread of its own (which
    /// also makes `/proc/sys/net` show this namespace's sysctls to `f`).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, PodNetError>
    where
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PodNetError>> + 'static,
        T: Send + 'static,
    {
        let fd = self.fd.clone();
        let path = self.path.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hybridnet-netns".into())
            .spawn(move || {
                let res = (|| {
                    nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| PodNetError::NotANetns(path.clone(), format!("setns: {e}")))?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| PodNetError::io("starting a netns runtime", e))?;
                    rt.block_on(async move {
                        let (conn, handle, _) = rtnetlink::new_connection()
                            .map_err(|e| PodNetError::io("opening rtnetlink", e))?;
                        tokio::spawn(conn);
                        f(handle).await
                    })
                })();
                let _ = tx.send(res);
            })
            .map_err(|e| PodNetError::io("spawning the netns thread", e))?;
        rx.await.map_err(|_| {
            PodNetError::Thread(format!("netns worker for {} died", self.path.display()))
        })?
    }
}

/// Writes a sysctl below `/proc/sys/net/` (call from inside [`Netns::run`]).
pub fn write_sysctl(key: &str, value: &str) -> Result<(), PodNetError> {
    let path = crate::procfs::net_root().join(key);
    std::fs::write(&path, value)
        .map_err(|e| PodNetError::io(format!("writing {value} to {}", path.display()), e))
}

/// Reads a sysctl below `/proc/sys/net/` (call from inside [`Netns::run`]).
pub fn read_sysctl(key: &str) -> Result<String, PodNetError> {
    let path = crate::procfs::net_root().join(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| PodNetError::io(format!("reading {}", path.display()), e))
}
