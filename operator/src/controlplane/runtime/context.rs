//! State shared by the controllers of one leadership term.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use crate::controlplane::rules::defaults::EffectiveDefaults;
use crate::controlplane::runtime::caches::Caches;
use crate::controlplane::runtime::config::ControlPlaneConfig;
use crate::controlplane::runtime::engine::Engine;
use crate::controlplane::runtime::live_defaults::LiveDefaults;
use crate::controlplane::runtime::metrics::Metrics;

/// What we know a pod was given (upstream PodIPCache): guards against allocating twice before the
/// IPInstance cache shows the first allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub uid: String,
    pub instances: Vec<String>,
    /// Written by this term after a full allocation; records rebuilt from the API may describe
    /// a partial one and are checked again.
    pub complete: bool,
}

/// Errors of a reconcile; all are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: {message}")]
    Allocation { pod: String, message: String },
    #[error("this replica is not the leader any more")]
    NotLeader,
}

impl ReconcileError {
    pub fn kube(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let name = name.into();
        move |source| Self::Kube {
            action,
            kind,
            name,
            source,
        }
    }
}

/// Everything the controllers share during one leadership term.
pub struct Ctx {
    pub client: Client,
    pub config: ControlPlaneConfig,
    /// Pod defaults in force (HybridnetCluster, else the flags).
    pub live_defaults: LiveDefaults,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Pod Events waiting for [`publish_events`] (bounded: Events are best effort and never hold
    /// up an allocation).
    events: mpsc::Sender<(Event, ObjectReference)>,
    pub caches: Caches,
    engine: Mutex<Engine>,
    pods: Mutex<HashMap<(String, String), PodRecord>>,
    inflight: Mutex<std::collections::HashSet<(String, String)>>,
    leading: watch::Receiver<bool>,
    /// Pods the leak detector wants looked at again.
    pub pod_requeue: mpsc::UnboundedSender<ObjectRef<Pod>>,
    /// Rung after every change of the in-memory IPAM (status writers listen).
    pub ipam_changed: Arc<Notify>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        config: ControlPlaneConfig,
        live_defaults: LiveDefaults,
        metrics: Metrics,
        recorder: Recorder,
        caches: Caches,
        engine: Engine,
        pods: HashMap<(String, String), PodRecord>,
        leading: watch::Receiver<bool>,
        pod_requeue: mpsc::UnboundedSender<ObjectRef<Pod>>,
    ) -> Self {
        let (events, queued) = mpsc::channel(EVENT_QUEUE);
        // Ends when the term's Ctx is dropped (the channel closes), after the queued Events.
        tokio::spawn(publish_events(recorder.clone(), queued));
        Self {
            client,
            config,
            live_defaults,
            metrics,
            recorder,
            events,
            caches,
            engine: Mutex::new(engine),
            pods: Mutex::new(pods),
            inflight: Mutex::new(Default::default()),
            leading,
            pod_requeue,
            ipam_changed: Arc::new(Notify::new()),
        }
    }

    /// The pod defaults in force now.
    pub fn defaults(&self) -> Arc<EffectiveDefaults> {
        self.live_defaults.current()
    }

    /// The in-memory IPAM. Held only for pure, quick operations, never across an await.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pod_records(&self) -> MutexGuard<'_, HashMap<(String, String), PodRecord>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a pod for one reconcile at a time (the controller and the leak detector's requeue
    /// may both reach it); None when another task holds it.
    pub fn claim_pod(self: &Arc<Self>, key: (String, String)) -> Option<PodClaim> {
        let mut set = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(key.clone()) {
            return None;
        }
        Some(PodClaim {
            ctx: self.clone(),
            key,
        })
    }

    /// Fencing: refuse to write once leadership is gone (the term's tasks are also aborted).
    pub fn ensure_leading(&self) -> Result<(), ReconcileError> {
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err(ReconcileError::NotLeader)
        }
    }

    pub fn notify_ipam_changed(&self) {
        self.ipam_changed.notify_waiters();
        self.ipam_changed.notify_one();
    }

    /// Queues an Event about `pod` for publication. Publishing is off the reconcile path: an
    /// Event costs an API write, and awaiting it held a pod worker for a round trip after the
    /// allocation was already written. When the queue is full the Event is dropped (logged).
    pub fn pod_event(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.events.try_send((ev, pod.object_ref(&()))) {
            debug!(pod = %pod.name_any(), reason, error = %e, "event not queued");
        }
    }
}

/// How many pod Events may wait for publication.
const EVENT_QUEUE: usize = 4096;

/// Publishes queued Events in order, one at a time; failures are logged only.
async fn publish_events(recorder: Recorder, mut queued: mpsc::Receiver<(Event, ObjectReference)>) {
    while let Some((ev, object)) = queued.recv().await {
        if let Err(e) = recorder.publish(&ev, &object).await {
            debug!(object = ?object.name, reason = %ev.reason, error = %e, "could not publish event");
        }
    }
}

/// Held while a pod is reconciled; released on drop.
pub struct PodClaim {
    ctx: Arc<Ctx>,
    key: (String, String),
}

impl Drop for PodClaim {
    fn drop(&mut self) {
        self.ctx
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Pod key for maps.
pub fn pod_key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// A Resource's name for messages.
pub fn display_name<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.meta().name.as_deref().unwrap_or("")),
        None => o.meta().name.clone().unwrap_or_default(),
    }
}
