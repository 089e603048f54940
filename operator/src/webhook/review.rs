//! AdmissionReview handling: decode, dispatch by kind and operation, answer with a decision or a
//! JSON patch.

use hybridnet_api::FieldErrors;
use hybridnet_api::multicluster::{self, RemoteCluster, RemoteSubnet};
use hybridnet_api::v1::{Network, Subnet};
use hybridnet_api::validate::{self, Existing, NodeLabels};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::WebhookState;
use crate::controlplane::runtime::metrics::WebhookLabels;

/// The outcome of one rule set.
#[derive(Debug)]
pub enum Verdict {
    Allow,
    /// Refused: the errors name the fields.
    Deny(FieldErrors),
    /// The request cannot be judged (malformed object).
    Invalid(String),
    /// The objects the rule compares with could not be read: refused, to be retried.
    Unavailable(String),
}

fn typed<K: DeserializeOwned>(obj: Option<&DynamicObject>, what: &str) -> Result<K, String> {
    let obj = obj.ok_or_else(|| format!("the request carries no {what}"))?;
    let v = serde_json::to_value(obj).map_err(|e| format!("{what}: {e}"))?;
    serde_json::from_value(v).map_err(|e| format!("{what} is malformed: {e}"))
}

fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn respond(
    st: &WebhookState,
    webhook: &str,
    req: &AdmissionRequest<DynamicObject>,
    verdict: Verdict,
    patch: Option<json_patch::Patch>,
) -> AdmissionReview<DynamicObject> {
    let kind = req.kind.kind.clone();
    let op = op_name(&req.operation);
    let (decision, resp) = match verdict {
        Verdict::Allow => {
            let resp = AdmissionResponse::from(req);
            match patch {
                Some(p) if !p.0.is_empty() => match resp.with_patch(p) {
                    Ok(r) => ("allowed", r),
                    Err(e) => (
                        "error",
                        AdmissionResponse::from(req)
                            .deny(format!("could not encode the patch: {e}")),
                    ),
                },
                _ => ("allowed", resp),
            }
        }
        Verdict::Deny(errs) => {
            let mut r = AdmissionResponse::from(req).deny(format!(
                "{} {:?} refused by hybridnet: {errs}",
                kind, req.name
            ));
            r.result.code = 403;
            r.result.reason = "Forbidden".into();
            r.result.status = Some(StatusSummary::Failure);
            r.result.details = Some(StatusDetails {
                name: req.name.clone(),
                kind: kind.clone(),
                causes: errs
                    .0
                    .iter()
                    .map(|e| StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: e.message.clone(),
                        field: e.field.clone(),
                    })
                    .collect(),
                group: req.kind.group.clone(),
                uid: String::new(),
                retry_after_seconds: 0,
            });
            debug!(kind = %kind, name = %req.name, operation = op, reason = %r.result.message, "admission denied");
            ("denied", r)
        }
        Verdict::Invalid(msg) => {
            let mut r = AdmissionResponse::from(req).deny(format!("{kind} {:?}: {msg}", req.name));
            r.result.code = 400;
            r.result.reason = "BadRequest".into();
            warn!(kind = %kind, name = %req.name, operation = op, error = %msg, "admission request not understood");
            ("error", r)
        }
        Verdict::Unavailable(msg) => {
            let mut r = AdmissionResponse::from(req).deny(format!(
                "{kind} {:?} cannot be checked now, retry: {msg}",
                req.name
            ));
            r.result.code = 500;
            r.result.reason = "InternalError".into();
            warn!(kind = %kind, name = %req.name, operation = op, error = %msg, "admission check could not read what it compares with");
            ("error", r)
        }
    };
    st.metrics
        .webhook_decisions
        .get_or_create(&WebhookLabels {
            webhook: webhook.into(),
            kind,
            operation: op.into(),
            decision: decision.into(),
        })
        .inc();
    resp.into_review()
}

fn decode(
    review: AdmissionReview<DynamicObject>,
) -> Result<AdmissionRequest<DynamicObject>, Box<AdmissionReview<DynamicObject>>> {
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
            Box::new(
                AdmissionResponse::invalid(format!("not an AdmissionReview request: {e}"))
                    .into_review(),
            )
        })
}

/// The review as sent on the wire. kube-core serialises the patch bytes as a JSON number array;
/// the AdmissionReview API (and kube-lite) define it as base64 text (Go accepts both), so it is
/// rewritten as base64.
pub fn to_wire(review: AdmissionReview<DynamicObject>) -> serde_json::Value {
    let patch = review.response.as_ref().and_then(|r| r.patch.clone());
    let mut v = serde_json::to_value(&review).unwrap_or_else(|e| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false, "status": {"message": format!("could not encode the review: {e}")}},
        })
    });
    if let (Some(bytes), Some(resp)) = (patch, v.get_mut("response")) {
        resp["patch"] = serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
    }
    v
}

/// `/validate`: Network, Subnet, RemoteCluster, RemoteSubnet and Pod rules.
pub async fn validate(
    st: &WebhookState,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionReview<DynamicObject> {
    let req = match decode(review) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let verdict = match req.kind.kind.as_str() {
        "Network" | "Subnet" => {
            let mut snap = Snapshot::take(st);
            if let Some((networks, subnets)) = live_networks_and_subnets(st).await {
                snap.networks = networks;
                snap.subnets = subnets;
            }
            let verdict = if req.kind.kind == "Network" {
                validate_network(&snap, &req)
            } else {
                validate_subnet(&snap, &req)
            };
            match verdict {
                Verdict::Allow => multicluster_rules(st, &req).await,
                other => other,
            }
        }
        "RemoteCluster" if req.kind.group == multicluster::GROUP => {
            validate_remote_cluster(st, &req).await
        }
        "RemoteSubnet" if req.kind.group == multicluster::GROUP => {
            validate_remote_subnet(st, &req).await
        }
        "Pod" => validate_pod(st, &req).await,
        "NodeInfo" | "IPInstance" => validate_node_scope(st, &req),
        _ => Verdict::Allow,
    };
    respond(st, "validate", &req, verdict, None)
}

/// `/mutate`: Pod CREATE.
pub async fn mutate(
    st: &WebhookState,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionReview<DynamicObject> {
    let req = match decode(review) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if req.kind.kind != "Pod" || req.operation != Operation::Create {
        return respond(st, "mutate", &req, Verdict::Allow, None);
    }
    let pod: Pod = match typed(req.object.as_ref(), "object") {
        Ok(p) => p,
        Err(e) => return respond(st, "mutate", &req, Verdict::Invalid(e), None),
    };
    let ns = super::mutate::review_namespace(&pod, req.namespace.as_deref());
    let namespace = super::mutate::pod_namespace(st, ns).await;
    match super::mutate::mutate_pod(st, &pod, req.namespace.as_deref(), namespace.as_deref()) {
        Ok(patch) => respond(st, "mutate", &req, Verdict::Allow, Some(patch)),
        Err(errs) => respond(st, "mutate", &req, Verdict::Deny(errs), None),
    }
}

fn to_verdict(r: Result<(), FieldErrors>) -> Verdict {
    match r {
        Ok(()) => Verdict::Allow,
        Err(e) => Verdict::Deny(e),
    }
}

struct Snapshot {
    networks: Vec<Network>,
    subnets: Vec<Subnet>,
    nodes: Vec<NodeLabels>,
    ipinstances: Vec<hybridnet_api::v1::IPInstance>,
}

impl Snapshot {
    fn take(st: &WebhookState) -> Self {
        Self {
            networks: st.caches.networks(),
            subnets: st.caches.subnets(),
            nodes: st
                .caches
                .nodes
                .state()
                .iter()
                .map(|n| NodeLabels {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                })
                .collect(),
            ipinstances: st
                .caches
                .ipinstances
                .state()
                .iter()
                .map(|i| (**i).clone())
                .collect(),
        }
    }

    fn existing(&self) -> Existing<'_> {
        Existing {
            networks: &self.networks,
            subnets: &self.subnets,
            nodes: &self.nodes,
            ipinstances: &self.ipinstances,
        }
    }
}

/// Runs the rule of the request's operation on the typed object(s): one dispatch for every kind
/// whose rules take (new), (old, new) and (old).
fn validate_typed<K: DeserializeOwned>(
    req: &AdmissionRequest<DynamicObject>,
    create: impl FnOnce(&K) -> Result<(), FieldErrors>,
    update: impl FnOnce(&K, &K) -> Result<(), FieldErrors>,
    delete: impl FnOnce(&K) -> Result<(), FieldErrors>,
) -> Verdict {
    match req.operation {
        Operation::Create => match typed::<K>(req.object.as_ref(), "object") {
            Ok(o) => to_verdict(create(&o)),
            Err(e) => Verdict::Invalid(e),
        },
        Operation::Update => match (
            typed::<K>(req.old_object.as_ref(), "oldObject"),
            typed::<K>(req.object.as_ref(), "object"),
        ) {
            (Ok(old), Ok(new)) => to_verdict(update(&old, &new)),
            (Err(e), _) | (_, Err(e)) => Verdict::Invalid(e),
        },
        Operation::Delete => match typed::<K>(req.old_object.as_ref(), "oldObject") {
            Ok(o) => to_verdict(delete(&o)),
            Err(e) => Verdict::Invalid(e),
        },
        Operation::Connect => Verdict::Allow,
    }
}

/// Every Network and Subnet, read from the API server. The rules for these kinds span objects
/// (one overlay network, a Subnet's Network exists, ranges do not overlap), and a Network and its
/// Subnets applied together (one `kubectl apply -f`) reach the webhook before their watch events
/// reach the cache: checked against the cache, a valid Subnet was refused ("network does not
/// exist", the lab e2e under load) and a second overlay network could be let in. These writes are
/// rare admin operations, so two reads per review cost nothing that matters. `None` (the cache
/// is used) when a read fails.
async fn live_networks_and_subnets(st: &WebhookState) -> Option<(Vec<Network>, Vec<Subnet>)> {
    let params = kube::api::ListParams::default();
    let networks = kube::Api::<Network>::all(st.client.clone())
        .list(&params)
        .await;
    let subnets = kube::Api::<Subnet>::all(st.client.clone())
        .list(&params)
        .await;
    match (networks, subnets) {
        (Ok(n), Ok(s)) => Some((n.items, s.items)),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot list Networks and Subnets: checking against the cache");
            None
        }
    }
}

/// Every object of a kind, read from the API server; none when its CRD is not installed (a
/// cluster without the multi-cluster CRDs has no RemoteClusters).
async fn live_list<K>(st: &WebhookState) -> Result<Vec<K>, String>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    match kube::Api::<K>::all(st.client.clone())
        .list(&kube::api::ListParams::default())
        .await
    {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(format!("cannot list {}: {e}", K::plural(&()))),
    }
}

/// The multi-cluster rules of Networks and Subnets (upstream `network.go` and `subnet.go`): the
/// overlay network is not deleted while RemoteClusters exist; a new Subnet shares no address with
/// a RemoteSubnet. They hold whether or not the MultiCluster feature is on: without
/// RemoteClusters and RemoteSubnets they have nothing to refuse.
async fn multicluster_rules(st: &WebhookState, req: &AdmissionRequest<DynamicObject>) -> Verdict {
    match (req.kind.kind.as_str(), &req.operation) {
        ("Network", Operation::Delete) => {
            let net: Network = match typed(req.old_object.as_ref(), "oldObject") {
                Ok(n) => n,
                Err(e) => return Verdict::Invalid(e),
            };
            if net.spec.effective_type() != hybridnet_api::v1::NetworkType::Overlay {
                return Verdict::Allow;
            }
            match live_list::<RemoteCluster>(st).await {
                Ok(rcs) => to_verdict(
                    multicluster::validate::network_delete_remote(&net, &rcs)
                        .map_err(FieldErrors::from),
                ),
                Err(e) => Verdict::Unavailable(e),
            }
        }
        ("Subnet", Operation::Create) => {
            let subnet: Subnet = match typed(req.object.as_ref(), "object") {
                Ok(s) => s,
                Err(e) => return Verdict::Invalid(e),
            };
            let Ok(parsed) =
                hybridnet_api::range::parse_address_range(&subnet.spec.range, "spec.range")
            else {
                return Verdict::Allow; // refused by the Subnet rules already
            };
            match live_list::<RemoteSubnet>(st).await {
                Ok(rs) => to_verdict(
                    multicluster::validate::subnet_against_remote(&parsed, &rs)
                        .map_err(FieldErrors::from),
                ),
                Err(e) => Verdict::Unavailable(e),
            }
        }
        _ => Verdict::Allow,
    }
}

/// RemoteCluster CREATE/UPDATE (upstream `remotecluster.go`), against the RemoteClusters the API
/// server holds. DELETE is allowed.
/// One RemoteCluster or RemoteSubnet review at a time per replica, so that two created together
/// are compared with each other (upstream serialises them with a mutex too).
static MULTICLUSTER_REVIEWS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn validate_remote_cluster(
    st: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::Allow;
    }
    let _one_at_a_time = MULTICLUSTER_REVIEWS.lock().await;
    let existing = match live_list::<RemoteCluster>(st).await {
        Ok(l) => l,
        Err(e) => return Verdict::Unavailable(e),
    };
    validate_typed::<RemoteCluster>(
        req,
        |rc| multicluster::validate::remote_cluster_create(rc, &existing),
        |old, new| multicluster::validate::remote_cluster_update(old, new, &existing),
        |_| Ok(()),
    )
}

/// RemoteSubnet CREATE/UPDATE (upstream `remotesubnet.go`), against the Subnets and RemoteSubnets
/// the API server holds. DELETE is allowed.
async fn validate_remote_subnet(
    st: &WebhookState,
    req: &AdmissionRequest<DynamicObject>,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::Allow;
    }
    let _one_at_a_time = MULTICLUSTER_REVIEWS.lock().await;
    let subnets = match live_list::<Subnet>(st).await {
        Ok(l) => l,
        Err(e) => return Verdict::Unavailable(e),
    };
    let remote = match live_list::<RemoteSubnet>(st).await {
        Ok(l) => l,
        Err(e) => return Verdict::Unavailable(e),
    };
    validate_typed::<RemoteSubnet>(
        req,
        |rs| multicluster::validate::remote_subnet_create(rs, &subnets, &remote),
        |old, new| multicluster::validate::remote_subnet_update(old, new, &subnets, &remote),
        |_| Ok(()),
    )
}

fn validate_network(snap: &Snapshot, req: &AdmissionRequest<DynamicObject>) -> Verdict {
    let ex = snap.existing();
    validate_typed::<Network>(
        req,
        |n| validate::network_create(n, &ex),
        |old, new| validate::network_update(old, new, &ex),
        |n| validate::network_delete(n, &ex),
    )
}

fn validate_subnet(snap: &Snapshot, req: &AdmissionRequest<DynamicObject>) -> Verdict {
    let ex = snap.existing();
    validate_typed::<Subnet>(
        req,
        |s| validate::subnet_create(s, &ex),
        |old, new| validate::subnet_update(old, new, &ex),
        |s| validate::subnet_delete(s, &ex),
    )
}

async fn validate_pod(st: &WebhookState, req: &AdmissionRequest<DynamicObject>) -> Verdict {
    if req.operation != Operation::Create {
        return Verdict::Allow;
    }
    let pod: Pod = match typed(req.object.as_ref(), "object") {
        Ok(p) => p,
        Err(e) => return Verdict::Invalid(e),
    };
    let ns = super::mutate::review_namespace(&pod, req.namespace.as_deref());
    let namespace = super::mutate::pod_namespace(st, ns).await;
    to_verdict(super::mutate::check_pod(
        st,
        &pod,
        req.namespace.as_deref(),
        namespace.as_deref(),
    ))
}

/// A node agent writes only its own node's NodeInfo and IPInstances ([`super::nodescope`]).
fn validate_node_scope(st: &WebhookState, req: &AdmissionRequest<DynamicObject>) -> Verdict {
    let value = |o: Option<&DynamicObject>| o.map(serde_json::to_value).transpose();
    match (value(req.old_object.as_ref()), value(req.object.as_ref())) {
        (Ok(old), Ok(new)) => to_verdict(super::nodescope::check(
            &req.user_info,
            &super::nodescope::agent_username(&st.config.namespace),
            &req.kind.kind,
            old.as_ref(),
            new.as_ref(),
        )),
        (Err(e), _) | (_, Err(e)) => Verdict::Invalid(format!("object: {e}")),
    }
}
