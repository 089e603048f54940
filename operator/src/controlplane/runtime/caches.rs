//! Reflector caches shared by the webhook, the status writers and the leak detector.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, future::BoxFuture};
use hybridnet_api::v1::{IPInstance, Network, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

/// Read-only views of the objects the webhook and the status logic need.
#[derive(Clone)]
pub struct Caches {
    pub networks: Store<Network>,
    pub subnets: Store<Subnet>,
    pub ipinstances: Store<IPInstance>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    ready: Arc<AtomicBool>,
}

fn reflect<K>(api: Api<K>) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let fut = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |ev| {
            if let Err(e) = ev {
                warn!(kind = %kind, error = %e, "cache watch failed; retrying");
            }
            futures::future::ready(())
        });
    (reader, Box::pin(fut))
}

impl Caches {
    /// The Namespace `name`: from the cache, else read from the API. A Namespace created just
    /// before its pods (one `kubectl apply`) can be missing from the cache, and resolving a pod
    /// without it would silently ignore its network annotations. Used by the pod controller and
    /// the pod webhook.
    pub async fn namespace_or_live(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<Option<Arc<Namespace>>, kube::Error> {
        if let Some(cached) = self.namespaces.get(&reflector::ObjectRef::new(name)) {
            return Ok(Some(cached));
        }
        Ok(Api::<Namespace>::all(client.clone())
            .get_opt(name)
            .await?
            .map(Arc::new))
    }

    /// Creates the caches and the future that keeps them filled (run it until shutdown).
    pub fn start(client: &Client) -> (Self, BoxFuture<'static, ()>) {
        let (networks, f1) = reflect(Api::<Network>::all(client.clone()));
        let (subnets, f2) = reflect(Api::<Subnet>::all(client.clone()));
        let (ipinstances, f3) = reflect(Api::<IPInstance>::all(client.clone()));
        let (nodes, f4) = reflect(Api::<Node>::all(client.clone()));
        let (namespaces, f5) = reflect(Api::<Namespace>::all(client.clone()));
        let ready = Arc::new(AtomicBool::new(false));
        let caches = Self {
            networks,
            subnets,
            ipinstances,
            nodes,
            namespaces,
            ready: ready.clone(),
        };
        let waiter = {
            let c = caches.clone();
            async move {
                let all = futures::future::join5(
                    c.networks.wait_until_ready(),
                    c.subnets.wait_until_ready(),
                    c.ipinstances.wait_until_ready(),
                    c.nodes.wait_until_ready(),
                    c.namespaces.wait_until_ready(),
                )
                .await;
                if all.0.is_ok() && all.1.is_ok() && all.2.is_ok() && all.3.is_ok() && all.4.is_ok()
                {
                    ready.store(true, Ordering::SeqCst);
                }
            }
        };
        let run = async move {
            futures::future::join(futures::future::join5(f1, f2, f3, f4, f5), waiter).await;
        };
        (caches, Box::pin(run))
    }

    /// Every cache has seen its first full list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub async fn wait_ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn networks(&self) -> Vec<Network> {
        self.networks
            .state()
            .iter()
            .map(|n| (**n).clone())
            .collect()
    }

    pub fn subnets(&self) -> Vec<Subnet> {
        self.subnets.state().iter().map(|n| (**n).clone()).collect()
    }
}
