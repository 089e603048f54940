//! A TCP forwarder from 127.0.0.1 in the host's namespace to an address inside a lab namespace, so
//! the host's kubectl reaches the lab's API server without the lab touching the host's network
//! namespace (no links or routes there; only a listening socket).

use std::net::SocketAddr;
use std::os::fd::AsFd;

use tokio::net::{TcpListener, TcpStream};

/// Opens a TCP connection from inside network namespace `netns` (a short-lived thread enters the
/// namespace; the socket stays bound to it).
pub async fn connect_in_netns(netns: &str, target: SocketAddr) -> std::io::Result<TcpStream> {
    let path = format!("/run/netns/{netns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let s =
                std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(5))?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })();
        let _ = tx.send(r);
    });
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread vanished"))??;
    TcpStream::from_std(std_stream)
}

/// Forwards every connection accepted on `listener` to `target` inside `netns`, until the task is
/// dropped.
pub async fn forward(listener: TcpListener, netns: String, target: SocketAddr) {
    loop {
        let Ok((mut inbound, peer)) = listener.accept().await else {
            continue;
        };
        let netns = netns.clone();
        tokio::spawn(async move {
            match connect_in_netns(&netns, target).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                }
                Err(e) => {
                    tracing::warn!(%peer, %target, netns, error = %e, "lab proxy: cannot reach the API server")
                }
            }
        });
    }
}
