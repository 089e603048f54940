//! `--wait`: watch the HybridnetCluster `default` until it is Available at its current generation
//! (kubectl_hybridnet::wait decides), printing a progress line on stderr whenever it changes.

use std::time::Instant;

use futures::StreamExt;
use hybridnet_api::operator::{CLUSTER_SINGLETON_NAME, HybridnetCluster};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use kubectl_hybridnet::wait::{WaitFor, progress, show_duration};

use super::connect::{Ctx, Failure, Res};

/// How a wait ended.
pub enum Waited {
    Available,
    /// The time ran out; the last progress line.
    TimedOut(String),
}

fn elapsed(start: Instant) -> String {
    show_duration(start.elapsed())
}

/// Watches until Available or `limit` passes. Watch errors (a lost connection, a forbidden
/// watch) are printed once each and retried with kube's backoff until the limit.
pub async fn until_available(ctx: &Ctx, limit: WaitFor) -> Res<Waited> {
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("metadata.name={CLUSTER_SINGLETON_NAME}"));
    let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
    let start = Instant::now();
    let deadline = limit.0.map(|d| tokio::time::Instant::now() + d);
    let what = format!("hybridnetcluster/{CLUSTER_SINGLETON_NAME}");
    let mut listing: Option<HybridnetCluster> = None;
    let mut last_line = String::new();
    let mut last_error = String::new();
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(n) => n,
                Err(_) => return Ok(Waited::TimedOut(last_line)),
            },
            None => events.next().await,
        };
        let ev = match next {
            None => {
                return Err(Failure::error(format!(
                    "--wait: the watch of {what} ended unexpectedly"
                )));
            }
            Some(Err(e)) => {
                let msg = e.to_string();
                if msg != last_error {
                    eprintln!("[{}] watching {what}: {msg} (retrying)", elapsed(start));
                    last_error = msg;
                }
                continue;
            }
            Some(Ok(ev)) => ev,
        };
        let current = match ev {
            Event::Init => {
                listing = None;
                continue;
            }
            Event::InitApply(o) => {
                listing = Some(o);
                continue;
            }
            Event::InitDone => listing.take(),
            Event::Apply(o) => Some(o),
            Event::Delete(_) => None,
        };
        let p = progress(current.as_ref());
        if p.ready {
            eprintln!("[{}] {what} is Available", elapsed(start));
            return Ok(Waited::Available);
        }
        if p.line != last_line {
            eprintln!("[{}] waiting for {what}: {}", elapsed(start), p.line);
            last_line = p.line;
        }
    }
}
