//! The HybridnetCluster controller: the thin I/O shell around [`render`](super::render),
//! [`certs`](super::certs) and [`status`](super::status).
//!
//! Every reconcile: check the singleton rule, add the finalizer, check the spec, make sure the
//! webhook certificate is valid, server-side apply every rendered object (field manager
//! `hybridnet-operator`, forced, so edits to fields we manage are reverted while fields and labels
//! others own survive), create the bootstrap Network/Subnet once, then compute and write the status.
//! Deletion removes exactly what the operator created (known names, carrying our label or owner reference); user data
//! (Networks, Subnets, IPInstances, including the bootstrap ones) is never touched.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hybridnet_api::constants::{field_manager, finalizer as finalizers, label};
use hybridnet_api::operator::{CLUSTER_SINGLETON_NAME, HybridnetCluster, HybridnetClusterStatus};
use hybridnet_api::v1::{Network, Subnet};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::certs::{self, CertBundle, CertDecision};
use super::names;
use super::render::{self, ManagedObject};
use super::settings::Settings;
use super::status::{self, Failure, RolloutObservation, StatusInput, reason};
use crate::controlplane::runtime::metrics::Metrics;
use crate::watch_failure::{OnceLog, WatchFailure, classify};

/// Annotation on the HybridnetCluster recording that the bootstrap Network/Subnet were created
/// (so a user who deletes them later does not see them come back).
pub const BOOTSTRAP_DONE_ANNOTATION: &str = hybridnet_api::constants::annotation::BOOTSTRAP_CREATED;

/// Annotation on the HybridnetCluster naming the release of the operator that reconciles it.
pub const OPERATOR_VERSION_ANNOTATION: &str =
    hybridnet_api::constants::annotation::OPERATOR_VERSION;

/// Settings of the lifecycle controller.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// Namespace the operator runs in and installs the node agent and webhook Service into.
    pub namespace: String,
    /// The operator's version: the operand version when the spec names none.
    pub operator_version: String,
    /// Reporter instance for Events (the pod name).
    pub instance: Option<String>,
    /// Periodic resync (drift on objects no watch covers, certificate expiry).
    pub resync: Duration,
    /// A node agent rollout without progress for longer than this is reported
    /// `Degraded=True/RolloutStuck` (`--rollout-progress-deadline-seconds`).
    pub progress_deadline: Duration,
    /// `RELATED_IMAGE_HYBRIDNET`: the operand image, ahead of `spec.registry`/`spec.version`.
    pub related_image: Option<String>,
}

/// Default of [`LifecycleConfig::progress_deadline`] (a Deployment's default too).
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

impl LifecycleConfig {
    /// Namespace from `NAMESPACE` (the Deployment sets it from the downward API), the default
    /// namespace otherwise; instance from `POD_NAME` or `HOSTNAME`.
    pub fn from_env() -> LifecycleConfig {
        LifecycleConfig {
            namespace: std::env::var(hybridnet_api::constants::env::NAMESPACE)
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| names::DEFAULT_NAMESPACE.to_string()),
            operator_version: super::install::OPERATOR_VERSION.to_string(),
            instance: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .ok(),
            resync: Duration::from_secs(300),
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            related_image: std::env::var(names::RELATED_IMAGE_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl ReconcileError {
    /// Conflicts, throttling, server errors and connection failures pass by themselves: they are
    /// retried with backoff and never reported as Degraded (a persistent-failure condition).
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Kube {
                source: kube::Error::Api(s),
                ..
            } => s.code == 409 || s.code == 429 || s.code >= 500,
            ReconcileError::Kube { .. } => true,
            _ => false,
        }
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| ReconcileError::Kube { action, source }
}

struct Context {
    client: Client,
    config: LifecycleConfig,
    recorder: Recorder,
    metrics: Metrics,
    /// One reconcile at a time, whatever key triggered it: there is one installation, and apply
    /// and clean-up must never interleave.
    serial: tokio::sync::Mutex<()>,
}

/// Runs the controller until the watch streams end (or the future is dropped).
pub async fn run(client: Client, config: LifecycleConfig, metrics: Metrics) -> anyhow::Result<()> {
    let ns = config.namespace.clone();
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    // By name: the operator's RBAC names every object of these kinds it may read
    // (`rbac::named_objects`), and a list or watch is authorized against `resourceNames` only with
    // a `metadata.name` field selector.
    let owned = |name: &str| {
        watcher::Config::default()
            .fields(&format!("metadata.name={name}"))
            .labels(&names::managed_selector())
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::OPERATOR.into(),
            instance: config.instance.clone(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        recorder,
        metrics,
        serial: tokio::sync::Mutex::new(()),
    });
    info!(namespace = %ns, "lifecycle controller starting");
    // `watches` with an explicit mapper rather than `owns`: `owns` keys a namespaced child's
    // owner with the child's namespace, which for our cluster-scoped owner is a second key for
    // the same HybridnetCluster, and two reconciles of one object could then run at once.
    Controller::new(clusters, watcher::Config::default())
        .watches(
            Api::<DaemonSet>::namespaced(client.clone(), &ns),
            owned(names::NODE_AGENT),
            owner_of,
        )
        .watches(
            Api::<Service>::namespaced(client.clone(), &ns),
            owned(names::WEBHOOK_SERVICE),
            owner_of,
        )
        .watches(
            Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            owned(names::NODE_AGENT),
            owner_of,
        )
        .watches(
            Api::<Secret>::namespaced(client.clone(), &ns),
            owned(names::WEBHOOK_SECRET),
            owner_of,
        )
        .watches(
            Api::<ClusterRole>::all(client.clone()),
            owned(names::NODE_AGENT),
            owner_of,
        )
        .watches(
            Api::<ClusterRoleBinding>::all(client.clone()),
            owned(names::NODE_AGENT),
            owner_of,
        )
        .watches(
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            owned(names::MUTATING_WEBHOOK_CONFIG),
            owner_of,
        )
        .watches(
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            owned(names::VALIDATING_WEBHOOK_CONFIG),
            owner_of,
        )
        .run(reconcile, error_policy, ctx)
        .for_each({
            // A missing HybridnetCluster CRD (a control plane installed alone) or missing RBAC
            // lasts: say so once, not at every backoff retry.
            let mut lasting = OnceLog::default();
            move |res| {
                match res {
                    Ok((obj, _)) => {
                        lasting.clear();
                        tracing::debug!(cluster = %obj.name, "reconciled");
                    }
                    Err(ControllerError::QueueError(e)) => {
                        let failure = classify(&e);
                        let first = failure != WatchFailure::Other && lasting.first(failure);
                        match (failure, first) {
                            (WatchFailure::Other, _) => {
                                warn!(error = %e, "lifecycle watch failed; retrying")
                            }
                            (_, false) => {
                                debug!(error = %e, "lifecycle watch still failing; retrying with backoff")
                            }
                            (WatchFailure::NotServed, true) => {
                                info!(error = %e, "a kind the lifecycle watches is not served (HybridnetCluster CRD not installed?); retrying quietly")
                            }
                            (WatchFailure::Forbidden, true) => {
                                warn!(error = %e, "the lifecycle may not watch a kind it needs; retrying quietly")
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "lifecycle reconcile failed"),
                }
                futures::future::ready(())
            }
        })
        .await;
    Ok(())
}

/// The HybridnetCluster a managed object belongs to (cluster-scoped: no namespace in the key).
fn owner_of<C: Resource>(child: C) -> Option<ObjectRef<HybridnetCluster>> {
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.kind == "HybridnetCluster" && o.api_version == HybridnetCluster::api_version(&())
        })
        .map(|o| ObjectRef::new(&o.name))
}

fn error_policy(obj: Arc<HybridnetCluster>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    warn!(cluster = %obj.name_any(), error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[instrument(skip_all, fields(cluster = %obj.name_any()))]
async fn reconcile(
    obj: Arc<HybridnetCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let _one_at_a_time = ctx.serial.lock().await;
    ctx.metrics
        .measure_reconcile("lifecycle", reconcile_serial(obj, &ctx))
        .await
}

async fn reconcile_serial(
    obj: Arc<HybridnetCluster>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    if obj.name_any() != CLUSTER_SINGLETON_NAME {
        return refuse(&api, &obj, ctx).await;
    }
    finalizer(&api, finalizers::CLUSTER_CLEANUP, obj, |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(o, ctx).await,
            FinalizerEvent::Cleanup(o) => cleanup(o, ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

/// A HybridnetCluster not named `default` (the CRD refuses it, but not every API server evaluates
/// its validation rules): Degraded with reason NotSingleton, nothing applied, no finalizer.
async fn refuse(
    api: &Api<HybridnetCluster>,
    obj: &HybridnetCluster,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let failure = Failure {
        reason: reason::NOT_SINGLETON,
        message: format!(
            "only the HybridnetCluster named {CLUSTER_SINGLETON_NAME:?} is acted upon; delete {:?}",
            obj.name_any()
        ),
    };
    let previous = obj.status.clone().unwrap_or_default();
    let new = status::refused(obj.metadata.generation, &failure, &previous, now_unix());
    write_status(api, obj, &previous, &new, ctx).await?;
    Ok(Action::await_change())
}

fn owner_reference(obj: &HybridnetCluster) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

async fn apply(obj: Arc<HybridnetCluster>, ctx: &Context) -> Result<Action, ReconcileError> {
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    let cfg = &ctx.config;
    let previous = obj.status.clone().unwrap_or_default();
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &cfg.namespace);
    let target_version = obj
        .spec
        .version
        .clone()
        .unwrap_or_else(|| cfg.operator_version.clone());

    let mut failure = None;
    match Settings::from_spec(&obj.spec, &cfg.operator_version, &cfg.namespace)
        .and_then(|s| s.with_related_image(cfg.related_image.as_deref()))
    {
        Err(errs) => {
            // Nothing is applied from an invalid spec: what runs keeps running.
            failure = Some(Failure {
                reason: reason::INVALID_SPEC,
                message: format!("the spec is invalid, nothing was changed: {errs}"),
            });
        }
        Ok(settings) => {
            if let Err(e) = apply_settings(&obj, &settings, ctx).await {
                if e.is_transient() {
                    return Err(e);
                }
                failure = Some(Failure {
                    reason: reason::APPLY_FAILED,
                    message: e.to_string(),
                });
            }
        }
    }
    let ds = ds_api
        .get_opt(names::NODE_AGENT)
        .await
        .map_err(kube_err(format!(
            "reading DaemonSet {}/{}",
            cfg.namespace,
            names::NODE_AGENT
        )))?;
    let rollout = ds.as_ref().map(RolloutObservation::from_daemonset);
    let deadline = i64::try_from(cfg.progress_deadline.as_secs()).unwrap_or(i64::MAX);
    let daemonset = format!("{}/{}", cfg.namespace, names::NODE_AGENT);
    let now = now_unix();
    let new = status::compute(&StatusInput {
        generation: obj.metadata.generation,
        target_version: &target_version,
        rollout: rollout.as_ref(),
        failure: failure.as_ref(),
        previous: &previous,
        now,
        progress_deadline: deadline,
        daemonset: &daemonset,
    });
    write_status(&api, &obj, &previous, &new, ctx).await?;
    record_operator_version(&api, &obj, &cfg.operator_version).await?;
    let progressing =
        new.conditions.iter().flatten().any(|c| {
            c.type_ == hybridnet_api::operator::condition::PROGRESSING && c.status == "True"
        });
    // A rollout without progress produces no event: look again when its deadline passes.
    let deadline_check = status::recheck_in(&new, now, deadline)
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1)));
    Ok(if failure.is_some() || progressing {
        // DaemonSet status changes wake us through the watch; this bounds the wait otherwise.
        let bound = Duration::from_secs(30);
        Action::requeue(deadline_check.map_or(bound, |d| d.min(bound)))
    } else {
        Action::requeue(cfg.resync)
    })
}

/// Records this operator's release on the HybridnetCluster (annotation
/// [`OPERATOR_VERSION_ANNOTATION`]) when it is not there yet, for `kubectl hybridnet version`.
async fn record_operator_version(
    api: &Api<HybridnetCluster>,
    obj: &HybridnetCluster,
    version: &str,
) -> Result<(), ReconcileError> {
    if obj
        .annotations()
        .get(OPERATOR_VERSION_ANNOTATION)
        .is_some_and(|v| v == version)
    {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {OPERATOR_VERSION_ANNOTATION: version}}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err(
        "recording the operator version on the HybridnetCluster",
    ))?;
    Ok(())
}

async fn apply_settings(
    obj: &HybridnetCluster,
    settings: &Settings,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    // The cached object may lag behind: never re-create anything for a cluster being deleted.
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    let fresh = api
        .get_opt(&obj.name_any())
        .await
        .map_err(kube_err("reading the HybridnetCluster"))?;
    if fresh.is_none_or(|c| c.metadata.deletion_timestamp.is_some()) {
        return Ok(());
    }
    let owner = owner_reference(obj);
    let bundle = ensure_certificate(obj, settings, owner.clone(), ctx).await?;
    let groups = ctx
        .client
        .list_api_groups()
        .await
        .map_err(kube_err("listing the API groups (is this OpenShift?)"))?;
    let platform = super::openshift::platform_from_groups(&groups);
    let rendered = render::render_on(settings, Some(bundle.ca_pem.as_bytes()), platform);
    for mut o in rendered.objects {
        o.meta_mut().owner_references = owner.clone().map(|r| vec![r]);
        apply_object(&ctx.client, &o).await?;
    }
    if let Some((network, subnet)) = rendered.bootstrap
        && !obj.annotations().contains_key(BOOTSTRAP_DONE_ANNOTATION)
    {
        create_once(Api::<Network>::all(ctx.client.clone()), &network).await?;
        create_once(Api::<Subnet>::all(ctx.client.clone()), &subnet).await?;
        let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
        let patch = json!({"metadata": {"annotations": {BOOTSTRAP_DONE_ANNOTATION: "true"}}});
        api.patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(kube_err("recording the bootstrap network as created"))?;
        publish(
            ctx,
            obj,
            EventType::Normal,
            "BootstrapNetworkCreated",
            format!(
                "created Network and Subnet {:?} (never updated or deleted by the operator)",
                network.name_any()
            ),
        )
        .await;
    }
    Ok(())
}

/// Server-side apply under the operator's field manager, forced.
async fn apply_object(client: &Client, o: &ManagedObject) -> Result<(), ReconcileError> {
    let what = format!(
        "applying {} {}{}",
        o.kind(),
        o.namespace().map(|n| format!("{n}/")).unwrap_or_default(),
        o.name()
    );
    let dynamic = o.to_dynamic().map_err(|source| ReconcileError::Json {
        what: what.clone(),
        source,
    })?;
    let ar = o.api_resource();
    let api: Api<DynamicObject> = match o.namespace() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let params = PatchParams::apply(field_manager::OPERATOR).force();
    // An apply carries no resourceVersion; a conflict only means someone wrote in between.
    let mut attempt = 0;
    loop {
        match api.patch(o.name(), &params, &Patch::Apply(&dynamic)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 3 => attempt += 1,
            Err(e) => return Err(kube_err(what)(e)),
        }
    }
}

/// `create`, never `apply`: an existing object (the user's from then on) is left as it is.
async fn create_once<K>(api: Api<K>, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!(
            "creating bootstrap {} {}",
            std::any::type_name::<K>()
                .rsplit("::")
                .next()
                .unwrap_or("object"),
            obj.meta().name.as_deref().unwrap_or_default()
        ))(e)),
    }
}

/// Reads the webhook Secret, reissues it when [`certs::decide`] says so, and returns the bundle.
async fn ensure_certificate(
    obj: &HybridnetCluster,
    settings: &Settings,
    owner: Option<OwnerReference>,
    ctx: &Context,
) -> Result<CertBundle, ReconcileError> {
    let ns = &settings.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = secrets
        .get_opt(names::WEBHOOK_SECRET)
        .await
        .map_err(kube_err(format!(
            "reading Secret {ns}/{}",
            names::WEBHOOK_SECRET
        )))?;
    let current = existing.as_ref().and_then(|s| {
        let data = s
            .data
            .as_ref()?
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        CertBundle::from_secret_data(&data)
    });
    let dns = certs::service_dns_names(names::WEBHOOK_SERVICE, ns);
    let now = time::OffsetDateTime::now_utc();
    let (bundle, issued) = match certs::decide(current.as_ref(), &dns, now.unix_timestamp()) {
        CertDecision::Keep => match current {
            Some(b) => (b, None),
            None => (
                certs::issue(&dns, now, None)?,
                Some("no certificate yet".to_string()),
            ),
        },
        CertDecision::Issue(why) => (certs::issue(&dns, now, current.as_ref())?, Some(why)),
    };
    // Applied every time (cheap, idempotent): labels and owner stay as rendered.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names::WEBHOOK_SECRET.into()),
            namespace: Some(ns.clone()),
            labels: Some(names::managed_labels("webhook", &settings.version)),
            owner_references: owner.map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            bundle
                .to_secret_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .patch(
            names::WEBHOOK_SECRET,
            &PatchParams::apply(field_manager::OPERATOR).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(kube_err(format!(
            "applying Secret {ns}/{}",
            names::WEBHOOK_SECRET
        )))?;
    if let Some(why) = issued {
        info!(reason = %why, "issued a new webhook certificate");
        publish(
            ctx,
            obj,
            EventType::Normal,
            "CertificateIssued",
            format!("issued a new webhook CA and serving certificate: {why}"),
        )
        .await;
    }
    Ok(bundle)
}

/// Writes the status when it changed, and one Event per condition transition.
async fn write_status(
    api: &Api<HybridnetCluster>,
    obj: &HybridnetCluster,
    previous: &HybridnetClusterStatus,
    new: &HybridnetClusterStatus,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    if previous == new {
        return Ok(());
    }
    let patch = json!({ "status": new });
    let mut attempt = 0;
    loop {
        match api
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => break,
            // No resourceVersion in the patch: a conflict is a concurrent write, try again.
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 3 => attempt += 1,
            Err(e) => {
                return Err(kube_err(format!(
                    "writing the status of HybridnetCluster {}",
                    obj.name_any()
                ))(e));
            }
        }
    }
    for (type_, status_, reason_, message) in status::transitions(previous, new) {
        let warning = (type_ == "Degraded" && status_ == "True")
            || (type_ == "Available" && status_ == "False");
        publish(
            ctx,
            obj,
            if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            &format!("{type_}{status_}"),
            format!("{type_}={status_} ({reason_}): {message}"),
        )
        .await;
    }
    Ok(())
}

/// Events are best effort: a failure is logged, never fails the reconcile.
async fn publish(
    ctx: &Context,
    obj: &HybridnetCluster,
    type_: EventType,
    reason_: &str,
    note: String,
) {
    let ev = KubeEvent {
        type_,
        reason: reason_.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, reason = reason_, "publishing an event failed");
    }
}

/// The kinds the operator creates, with scope: (resource, namespaced, known name).
fn cleanup_targets() -> Vec<(ApiResource, bool, &'static str)> {
    vec![
        (
            ApiResource::erase::<DaemonSet>(&()),
            true,
            names::NODE_AGENT,
        ),
        (
            ApiResource::erase::<Service>(&()),
            true,
            names::WEBHOOK_SERVICE,
        ),
        (
            ApiResource::erase::<Secret>(&()),
            true,
            names::WEBHOOK_SECRET,
        ),
        (
            ApiResource::erase::<ServiceAccount>(&()),
            true,
            names::NODE_AGENT,
        ),
        (
            ApiResource::erase::<ClusterRoleBinding>(&()),
            false,
            names::NODE_AGENT,
        ),
        (
            ApiResource::erase::<ClusterRole>(&()),
            false,
            names::NODE_AGENT,
        ),
        (
            ApiResource::erase::<MutatingWebhookConfiguration>(&()),
            false,
            names::MUTATING_WEBHOOK_CONFIG,
        ),
        (
            ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
            false,
            names::VALIDATING_WEBHOOK_CONFIG,
        ),
        // OpenShift only; elsewhere the kind is not served and the read answers 404.
        (
            super::openshift::scc_api_resource(),
            false,
            names::NODE_AGENT,
        ),
    ]
}

/// Whether the operator created `meta` for the cluster `owner_uid`: our managed-by label with our
/// part-of label, or an owner reference to the cluster.
fn created_by_operator(meta: &ObjectMeta, owner_uid: Option<&str>) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    let labelled = labels.get(label::MANAGED_BY).map(String::as_str)
        == Some(label::MANAGED_BY_OPERATOR)
        && labels.get(names::LABEL_PART_OF).map(String::as_str) == Some(names::PART_OF);
    let owned =
        owner_uid.is_some_and(|uid| meta.owner_references.iter().flatten().any(|r| r.uid == uid));
    labelled || owned
}

async fn cleanup(obj: Arc<HybridnetCluster>, ctx: &Context) -> Result<Action, ReconcileError> {
    let ns = &ctx.config.namespace;
    let uid = obj.uid();
    let mut removed = Vec::new();
    for (ar, namespaced, known) in cleanup_targets() {
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(ctx.client.clone(), ns, &ar)
        } else {
            Api::all_with(ctx.client.clone(), &ar)
        };
        // Only the known name: the operator may not list these kinds beyond its own objects
        // (`rbac::named_objects`), and it never created any other.
        let victims: Vec<String> = api
            .get_opt(known)
            .await
            .map_err(kube_err(format!("reading {} {known}", ar.kind)))?
            .filter(|o| created_by_operator(&o.metadata, uid.as_deref()))
            .map(|_| known.to_string())
            .into_iter()
            .collect();
        for name in victims {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => removed.push(format!("{} {name}", ar.kind)),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err(format!("deleting {} {name}", ar.kind))(e)),
            }
        }
    }
    info!(removed = ?removed, "removed what the operator created");
    publish(
        ctx,
        &obj,
        EventType::Normal,
        "CleanedUp",
        format!(
            "removed {}; Networks, Subnets and IPInstances are left in place",
            if removed.is_empty() {
                "nothing".to_string()
            } else {
                removed.join(", ")
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn only_operator_labelled_or_owned_objects_are_cleanup_victims() {
        let ours = ObjectMeta {
            labels: Some(names::managed_labels("node-agent", "0.1.0")),
            ..Default::default()
        };
        assert!(created_by_operator(&ours, None));
        let foreign = ObjectMeta {
            labels: Some(BTreeMap::from([(
                label::MANAGED_BY.to_string(),
                "helm".to_string(),
            )])),
            ..Default::default()
        };
        assert!(!created_by_operator(&foreign, Some("u1")));
        let owned = ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: "u1".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(created_by_operator(&owned, Some("u1")));
        assert!(!created_by_operator(&owned, Some("u2")));
        // The bootstrap Network/Subnet labels lack part-of: never selected.
        let mut boot = names::managed_labels("bootstrap", "0.1.0");
        boot.remove(names::LABEL_PART_OF);
        assert!(!created_by_operator(
            &ObjectMeta {
                labels: Some(boot),
                ..Default::default()
            },
            None
        ));
    }

    #[test]
    fn cleanup_reaches_only_names_the_rbac_grants() {
        for (ar, namespaced, known) in cleanup_targets() {
            let kinds = if namespaced {
                super::super::rbac::named_namespace_objects()
            } else {
                super::super::rbac::named_cluster_objects()
            };
            assert!(
                kinds
                    .iter()
                    .any(|(g, r, ns)| *g == ar.group && *r == ar.plural && ns.contains(&known)),
                "{} {known}",
                ar.kind
            );
        }
    }

    #[test]
    fn cleanup_never_targets_user_data_kinds() {
        for (ar, _, _) in cleanup_targets() {
            assert_ne!(ar.group, "networking.alibaba.com", "{}", ar.kind);
        }
    }
}
