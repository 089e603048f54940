//! The pod defaults in force, kept current: follows `HybridnetCluster/default` with a watch and
//! publishes what [`effective_defaults`] (the pure rule, in `rules/defaults.rs`) makes of it and
//! the operator flags. The watch never gates cache readiness, leadership or the webhook: until it
//! has seen the object, and whenever the CRD is not served, the flags apply.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future::BoxFuture};
use hybridnet_api::operator::{CLUSTER_SINGLETON_NAME, HybridnetCluster};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::controlplane::rules::defaults::{
    DefaultsSource, EffectiveDefaults, PodDefaults, effective_defaults,
};
use crate::watch_failure::{OnceLog, WatchFailure, classify};

/// A live view of the defaults, shared by the controllers and the webhook of one replica.
#[derive(Clone, Debug)]
pub struct LiveDefaults {
    rx: watch::Receiver<Arc<EffectiveDefaults>>,
    settled: watch::Receiver<bool>,
}

impl LiveDefaults {
    /// Defaults that never change (tests, and replicas without a cluster to watch).
    pub fn fixed(defaults: PodDefaults) -> Self {
        let (_, rx) = watch::channel(Arc::new(EffectiveDefaults {
            defaults,
            source: DefaultsSource::Flags,
        }));
        let (_, settled) = watch::channel(true);
        Self { rx, settled }
    }

    /// Starts from the flags and returns the future that follows `HybridnetCluster/default` (run
    /// it until shutdown).
    pub fn watch(client: &Client, flags: PodDefaults) -> (Self, BoxFuture<'static, ()>) {
        let initial = effective_defaults(&flags, None);
        let (tx, rx) = watch::channel(Arc::new(initial));
        let (settled_tx, settled) = watch::channel(false);
        let api: Api<HybridnetCluster> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        // The last kind of failure logged, so a lasting one is logged once, not at every retry.
        let mut reported = OnceLog::default();
        let fut = watcher(api, watcher::Config::default())
            // Exponential, capped: a missing CRD is asked about again quietly, not in a hot loop.
            .default_backoff()
            .reflect(writer)
            .for_each(move |ev| {
                match ev {
                    // `Init` starts every attempt, also one that fails next, and `InitApply` only
                    // buffers: the store still holds what was listed before (perhaps before the
                    // CRD went away), so neither is an answer to publish.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => {
                        reported.clear();
                        publish(&tx, &flags, &store);
                        if store_settled(&store) {
                            settled_tx.send_replace(true);
                        }
                    }
                    Err(e) => {
                        let failure = classify(&e);
                        let first = reported.first(failure);
                        match failure {
                            // No CRD (or no such API group): the flags apply, and that is normal.
                            WatchFailure::NotServed => {
                                if first {
                                    info!("HybridnetCluster is not served (no CRD); pod defaults come from the flags");
                                }
                                set(&tx, effective_defaults(&flags, None));
                                settled_tx.send_replace(true);
                            }
                            // Missing RBAC: a deployment error worth one warning; nothing to read.
                            WatchFailure::Forbidden => {
                                if first {
                                    warn!(error = %e, "not allowed to read HybridnetCluster; pod defaults come from the flags");
                                }
                                set(&tx, effective_defaults(&flags, None));
                                settled_tx.send_replace(true);
                            }
                            // Transient: keep what we had; the watcher retries with backoff.
                            WatchFailure::Other => {}
                        }
                        debug!(error = %e, "HybridnetCluster watch failed; retrying with backoff");
                    }
                }
                futures::future::ready(())
            });
        (Self { rx, settled }, Box::pin(fut))
    }

    /// The defaults in force now.
    pub fn current(&self) -> Arc<EffectiveDefaults> {
        self.rx.borrow().clone()
    }

    /// Waits until the first answer about `HybridnetCluster` (listed, or not served), at most
    /// `limit`; afterwards the flags or the last known value apply. Never blocks longer.
    pub async fn settle(&self, limit: Duration) -> bool {
        let mut settled = self.settled.clone();
        matches!(
            tokio::time::timeout(limit, settled.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    /// Resolves when the defaults change (for tests and logs).
    pub fn subscribe(&self) -> watch::Receiver<Arc<EffectiveDefaults>> {
        self.rx.clone()
    }
}

fn store_settled(store: &Store<HybridnetCluster>) -> bool {
    // The store is ready after the first complete list.
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

fn publish(
    tx: &watch::Sender<Arc<EffectiveDefaults>>,
    flags: &PodDefaults,
    store: &Store<HybridnetCluster>,
) {
    if !store_settled(store) {
        return;
    }
    let cluster = store.get(&ObjectRef::new(CLUSTER_SINGLETON_NAME));
    set(tx, effective_defaults(flags, cluster.as_deref()));
}

fn set(tx: &watch::Sender<Arc<EffectiveDefaults>>, new: EffectiveDefaults) {
    tx.send_if_modified(|cur| {
        if **cur == new {
            return false;
        }
        info!(
            source = new.source.as_str(),
            network_type = new.defaults.network_type.as_str(),
            ip_family = new.defaults.ip_family.as_str(),
            ip_retain = new.defaults.ip_retain,
            stateful_workload_kinds = ?new.defaults.stateful_workload_kinds,
            "pod defaults changed"
        );
        *cur = Arc::new(new);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::IpFamily;
    use hybridnet_api::v1::NetworkType;

    fn flags() -> PodDefaults {
        PodDefaults {
            network_type: NetworkType::Underlay,
            ip_family: IpFamily::DualStack,
            ip_retain: false,
            stateful_workload_kinds: vec!["AdvancedStatefulSet".into()],
            vm_ip_retain: true,
            multi_cluster: true,
        }
    }

    #[test]
    fn fixed_defaults_are_settled_and_unchanging() {
        let live = LiveDefaults::fixed(flags());
        assert_eq!(live.current().defaults, flags());
        assert_eq!(live.current().source, DefaultsSource::Flags);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert!(rt.block_on(live.settle(Duration::from_millis(1))));
    }
}
