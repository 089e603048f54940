//! Running code inside a named network namespace (`ip netns add NAME`): a dedicated OS thread
//! enters the namespace, builds a current-thread tokio runtime and opens its own netlink socket
//! there (netlink sockets stay bound to the namespace they were created in). Child processes the
//! thread spawns (`nft`) and `/proc/sys` reads/writes follow the thread's namespace.
//!
//! Used by the tests, the lab and the benchmark; the agent itself runs in the node's namespace.

use std::future::Future;
use std::os::fd::AsFd;

use nix::sched::{CloneFlags, setns};

/// Runs `f(handle)` inside `/run/netns/<name>` and returns its output.
pub fn run_in_netns<F, Fut, T>(name: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{name}");
    let handle = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || -> anyhow::Result<T> {
            let ns = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("open {path}: {e}"))?;
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| anyhow::anyhow!("setns {path}: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(conn);
                f(handle).await
            })
        })?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}
