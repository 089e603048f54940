//! Test environment for the control-plane tests: a kube-lite server per test, hybridnet CRDs,
//! a webhook certificate, operator replicas with their webhooks registered in kube-lite, and
//! object helpers. Everything goes through the real kube client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hybridnet_api::constants::{annotation, label};
use hybridnet_api::v1::{
    AddressRange, IPInstance, IpVersion, Network, NetworkMode, NetworkSpec, NetworkType, Subnet,
    SubnetSpec,
};
use hybridnet_operator::controlplane::rules::defaults::PodDefaults;
use hybridnet_operator::controlplane::runtime::config::ControlPlaneConfig;
use hybridnet_operator::controlplane::runtime::replica::{Replica, ReplicaConfig};
use hybridnet_operator::webhook::server::CertSource;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Namespace, Node, Pod, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

pub const T: Duration = Duration::from_secs(20);

/// A serving certificate for 127.0.0.1 signed by a test CA.
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_certs() -> TestCerts {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hybridnet-test-ca");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    let cert = params.signed_by(&key, &ca).expect("leaf");
    TestCerts {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

pub struct Env {
    pub srv: kube_lite::ServerHandle,
    pub client: Client,
    pub certs: TestCerts,
    pub cert_dir: tempfile::TempDir,
}

/// A replica as started with `--default-network-type=Underlay` (the tests below were written
/// for that fallback; no HybridnetCluster exists in them).
pub fn test_config(identity: &str) -> ControlPlaneConfig {
    ControlPlaneConfig {
        identity: identity.to_string(),
        defaults: PodDefaults {
            network_type: NetworkType::Underlay,
            ..Default::default()
        },
        lease_duration: Duration::from_secs(2),
        lease_retry: Duration::from_millis(200),
        leak_check_interval: Duration::from_millis(700),
        remote_cluster_check_interval: Duration::from_millis(300),
        pod_concurrency: 16,
        concurrency: 4,
        ..Default::default()
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_without_crds(&[]).await
    }

    /// Like [`Env::start`], without the CRDs whose file names are in `skip` (e.g.
    /// `operator.hybridnet.io_hybridnetclusters.yaml` for a control plane installed alone).
    pub async fn start_without_crds(skip: &[&str]) -> Env {
        Self::start_with(skip, Vec::new()).await
    }

    /// Like [`Env::start_without_crds`], with kube-lite authenticating `users`' tokens as them.
    pub async fn start_with(skip: &[&str], users: Vec<kube_lite::TokenUser>) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let srv = kube_lite::Server::start(kube_lite::Config {
            bookmark_interval: Duration::from_millis(500),
            users,
            ..Default::default()
        })
        .await
        .expect("start kube-lite");
        let client = srv.client().await.expect("client");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, crd) in hybridnet_api::crd::all()
            .into_iter()
            .filter(|(file, _)| !skip.contains(file))
        {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("create CRD");
        }
        let certs = make_certs();
        let cert_dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(cert_dir.path().join("tls.crt"), &certs.cert_pem).expect("write cert");
        std::fs::write(cert_dir.path().join("tls.key"), &certs.key_pem).expect("write key");
        let env = Env {
            srv,
            client,
            certs,
            cert_dir,
        };
        // CRDs are served once registered; wait until lists work.
        wait_for("CRDs served", || async {
            Api::<Network>::all(env.client.clone())
                .list(&ListParams::default())
                .await
                .is_ok()
                && Api::<IPInstance>::all(env.client.clone())
                    .list(&ListParams::default())
                    .await
                    .is_ok()
        })
        .await;
        env
    }

    /// Starts a replica (control plane + webhook on a free port).
    pub async fn replica_with(&self, config: ControlPlaneConfig, control_plane: bool) -> Replica {
        let client = self.srv.client().await.expect("client");
        Replica::start(
            client,
            ReplicaConfig {
                control: config,
                webhook: Some((
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    CertSource::Dir(self.cert_dir.path().to_path_buf()),
                )),
                cert_reload: Duration::from_millis(200),
                metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                control_plane,
            },
            None,
        )
        .await
        .expect("start replica")
    }

    pub async fn replica(&self, identity: &str) -> Replica {
        self.replica_with(test_config(identity), true).await
    }

    /// Registers the validating and mutating webhooks of `addr` in kube-lite (as the lifecycle
    /// reconciler does in a cluster: Fail for Network/Subnet, Ignore for pods).
    pub async fn register_webhooks(&self, addr: SocketAddr) {
        let cc = |path: &str| WebhookClientConfig {
            url: Some(format!("https://{addr}{path}")),
            ca_bundle: Some(ByteString(self.certs.ca_pem.clone().into_bytes())),
            service: None,
        };
        let rule = |groups: &[&str], resources: &[&str], ops: &[&str]| RuleWithOperations {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            api_versions: Some(vec!["v1".into()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            operations: Some(ops.iter().map(|s| s.to_string()).collect()),
            scope: None,
        };
        let ignore_sel = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: label::WEBHOOK_IGNORE.into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["true".into(), "TRUE".into()]),
                },
            ]),
            match_labels: None,
        };
        let vwc = ValidatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some("hybridnet-validating".into()),
                ..Default::default()
            },
            webhooks: Some(vec![
                ValidatingWebhook {
                    name: "hybridnet-v1.validating.hybridnet".into(),
                    admission_review_versions: vec!["v1".into()],
                    client_config: cc("/validate"),
                    failure_policy: Some("Fail".into()),
                    side_effects: "None".into(),
                    rules: Some(vec![
                        rule(
                            &["networking.alibaba.com"],
                            &["networks", "subnets"],
                            &["CREATE", "UPDATE", "DELETE"],
                        ),
                        rule(
                            &["multicluster.alibaba.com"],
                            &["remoteclusters", "remotesubnets"],
                            &["CREATE", "UPDATE", "DELETE"],
                        ),
                    ]),
                    timeout_seconds: Some(10),
                    ..Default::default()
                },
                ValidatingWebhook {
                    name: "core-v1.validating.hybridnet".into(),
                    admission_review_versions: vec!["v1".into()],
                    client_config: cc("/validate"),
                    failure_policy: Some("Ignore".into()),
                    side_effects: "None".into(),
                    rules: Some(vec![rule(&[""], &["pods"], &["CREATE"])]),
                    object_selector: Some(ignore_sel.clone()),
                    timeout_seconds: Some(10),
                    ..Default::default()
                },
            ]),
        };
        let mwc = MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some("hybridnet-mutating".into()),
                ..Default::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: "core-v1.mutating.hybridnet".into(),
                admission_review_versions: vec!["v1".into()],
                client_config: cc("/mutate"),
                failure_policy: Some("Ignore".into()),
                side_effects: "None".into(),
                rules: Some(vec![rule(&[""], &["pods"], &["CREATE"])]),
                object_selector: Some(ignore_sel),
                reinvocation_policy: Some("Never".into()),
                timeout_seconds: Some(10),
                ..Default::default()
            }]),
        };
        let pp = PatchParams::apply("test").force();
        // Injected conflicts may hit these writes too: retry them.
        for _ in 0..100 {
            let v = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                .patch("hybridnet-validating", &pp, &Patch::Apply(&vwc))
                .await;
            let m = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
                .patch("hybridnet-mutating", &pp, &Patch::Apply(&mwc))
                .await;
            if v.is_ok() && m.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("could not register the webhooks");
    }

    pub async fn namespace(&self, name: &str, annotations: &[(&str, &str)]) {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    pub async fn node(&self, name: &str, labels: &[(&str, &str)]) {
        let n = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(map(labels)),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &n)
            .await
            .expect("create node");
    }

    pub async fn create_network(&self, net: Network) -> Result<Network, kube::Error> {
        Api::<Network>::all(self.client.clone())
            .create(&PostParams::default(), &net)
            .await
    }

    /// Creates a Subnet; while the webhook's cache has not seen a just-created parent Network
    /// the webhook refuses, so retry that case for a bounded time (as `kubectl apply` users do).
    pub async fn create_subnet(&self, s: Subnet) -> Result<Subnet, kube::Error> {
        let api = Api::<Subnet>::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match api.create(&PostParams::default(), &s).await {
                Err(kube::Error::Api(st))
                    if st.message.contains("does not exist")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// An underlay VLAN network selecting nodes labelled `network=<name>`, with one /24 subnet.
    pub async fn underlay(&self, name: &str, subnet: &str, cidr: &str, gateway: &str) {
        self.create_network(network(
            name,
            NetworkType::Underlay,
            Some(0),
            Some(("network", name)),
        ))
        .await
        .expect("underlay network");
        self.create_subnet(subnet_of(subnet, name, IpVersion::V4, cidr, Some(gateway)))
            .await
            .expect("underlay subnet");
    }

    /// Waits until the Network's status shows free addresses of the versions in `v4`/`v6`.
    pub async fn network_ready(&self, name: &str, v4: bool, v6: bool) {
        let api = Api::<Network>::all(self.client.clone());
        wait_for(&format!("status of network {name}"), || async {
            let Ok(n) = api.get(name).await else {
                return false;
            };
            let st = n.status.unwrap_or_default();
            let ok = |c: Option<hybridnet_api::v1::Count>| c.is_some_and(|c| c.has_available());
            (!v4 || ok(st.statistics)) && (!v6 || ok(st.ipv6_statistics))
        })
        .await;
    }

    pub async fn pod(&self, p: Pod) -> Pod {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        Api::<Pod>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &p)
            .await
            .expect("create pod")
    }

    pub async fn delete_pod(&self, ns: &str, name: &str) {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete pod");
    }

    pub async fn pod_gone(&self, ns: &str, name: &str) {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        wait_for(&format!("pod {ns}/{name} gone"), || async {
            matches!(api.get_opt(name).await, Ok(None))
        })
        .await;
    }

    pub async fn set_pod_status(&self, ns: &str, name: &str, status: PodStatus) {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("pod status");
    }

    /// As a kubelet reports a pod being deleted: the status is set while the pod is still there;
    /// one already gone (nothing held it: no finalizer, or the operator released it at once) is
    /// fine.
    pub async fn set_pod_status_if_present(&self, ns: &str, name: &str, status: PodStatus) {
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("pod status of {ns}/{name}: {e}"),
        }
    }

    /// Live (non-terminating) IPInstances of a pod name in a namespace.
    pub async fn instances_of(&self, ns: &str, pod: &str) -> Vec<IPInstance> {
        let api = Api::<IPInstance>::namespaced(self.client.clone(), ns);
        let mut v: Vec<IPInstance> = api
            .list(&ListParams::default().labels(&format!("{}={}", label::POD, pod)))
            .await
            .expect("list ipinstances")
            .items
            .into_iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .collect();
        v.sort_by_key(|i| i.spec.address.version == IpVersion::V6);
        v
    }

    /// Waits until the pod has `n` IPInstances bound to its current uid and returns them.
    pub async fn allocated(&self, ns: &str, pod: &str, n: usize) -> Vec<IPInstance> {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if let Ok(Some(p)) = api.get_opt(pod).await {
                let v = self.instances_of(ns, pod).await;
                if v.len() == n
                    && v.iter()
                        .all(|i| i.spec.binding.pod_uid == p.metadata.uid && !i.spec.is_reserved())
                {
                    return v;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {n} IPInstances of {ns}/{pod}: {:?}",
                    self.instances_of(ns, pod)
                        .await
                        .iter()
                        .map(ip_of)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn all_instances(&self) -> Vec<IPInstance> {
        Api::<IPInstance>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
    }

    pub async fn create_statefulset(&self, ns: &str, name: &str) -> StatefulSet {
        let sts = StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: StatefulSetSpec {
                selector: LabelSelector {
                    match_labels: Some(map(&[("app", name)])),
                    ..Default::default()
                },
                service_name: Some(name.into()),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(map(&[("app", name)])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<StatefulSet>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &sts)
            .await
            .expect("create statefulset")
    }
}

pub fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn network(
    name: &str,
    t: NetworkType,
    net_id: Option<i32>,
    selector: Option<(&str, &str)>,
) -> Network {
    Network::new(
        name,
        NetworkSpec {
            node_selector: selector.map(|(k, v)| map(&[(k, v)])),
            net_id,
            network_type: Some(t),
            mode: match t {
                NetworkType::Underlay => Some(NetworkMode::Vlan),
                NetworkType::Overlay => Some(NetworkMode::Vxlan),
                NetworkType::GlobalBgp => Some(NetworkMode::GlobalBgp),
            },
            config: None,
        },
    )
}

pub fn subnet_of(
    name: &str,
    network: &str,
    v: IpVersion,
    cidr: &str,
    gateway: Option<&str>,
) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            network: network.into(),
            net_id: None,
            range: AddressRange {
                version: v,
                cidr: cidr.into(),
                gateway: gateway.map(String::from),
                ..Default::default()
            },
            config: None,
        },
    )
}

/// A pod bound to `node` (there is no scheduler) with one container.
pub fn pod(ns: &str, name: &str, node: &str, annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(map(annotations)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod of StatefulSet `sts` (controller owner reference).
pub fn stateful_pod(
    sts: &StatefulSet,
    ordinal: u32,
    node: &str,
    annotations: &[(&str, &str)],
) -> Pod {
    let name = sts.name_any();
    let mut p = pod(
        &sts.namespace().unwrap_or_default(),
        &format!("{name}-{ordinal}"),
        node,
        annotations,
    );
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: name.clone(),
        uid: sts.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    p.metadata.labels = Some(map(&[("app", &name)]));
    p
}

pub fn running() -> PodStatus {
    container_status("Running", true)
}

pub fn container_status(phase: &str, running: bool) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "c".into(),
            ready: running,
            restart_count: 0,
            image: "busybox".into(),
            image_id: String::new(),
            state: Some(if running {
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }
            } else {
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Polls `f` every 50 ms until true; panics after [`T`].
pub async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address of an IPInstance without prefix.
pub fn ip_of(i: &IPInstance) -> String {
    i.spec
        .address
        .ip
        .split('/')
        .next()
        .unwrap_or("")
        .to_string()
}

pub fn ann(p: &Pod, key: &str) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
}

pub const IP_POOL: &str = annotation::IP_POOL;
pub const MAC_POOL: &str = annotation::MAC_POOL;

pub type Shared<T> = Arc<T>;

/// A second cluster for the multi-cluster tests: an HTTPS kube-lite serving the hybridnet CRDs,
/// with the overlay network `init` (VNI 4) and its subnet `init` of `cidr`.
pub struct RemoteApi {
    pub server: kube_lite::ServerHandle,
    pub client: Client,
    /// The PEM CA of its serving certificate.
    pub ca: String,
    pub url: String,
}

pub async fn remote_api(cidr: &str) -> RemoteApi {
    let server = kube_lite::Server::start(kube_lite::Config {
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    for (_, crd) in hybridnet_api::crd::all() {
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    wait_for("the remote API server serves the CRDs", || async {
        Api::<hybridnet_api::multicluster::RemoteCluster>::all(client.clone())
            .list(&Default::default())
            .await
            .is_ok()
    })
    .await;
    let pp = PostParams::default();
    Api::<Network>::all(client.clone())
        .create(&pp, &network("init", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    Api::<Subnet>::all(client.clone())
        .create(&pp, &subnet_of("init", "init", IpVersion::V4, cidr, None))
        .await
        .unwrap();
    let ca = server.ca_pem().unwrap().to_string();
    let url = server.url().to_string();
    RemoteApi {
        server,
        client,
        ca,
        url,
    }
}

/// A RemoteCluster with upstream's inline credentials (CA, client certificate and key).
pub fn inline_remote_cluster(
    name: &str,
    endpoint: &str,
    ca: &str,
    client: &TestCerts,
) -> hybridnet_api::multicluster::RemoteCluster {
    hybridnet_api::multicluster::RemoteCluster::new(
        name,
        hybridnet_api::multicluster::RemoteClusterSpec {
            api_endpoint: endpoint.into(),
            ca_data: Some(ByteString(ca.as_bytes().to_vec())),
            cert_data: Some(ByteString(client.cert_pem.as_bytes().to_vec())),
            key_data: Some(ByteString(client.key_pem.as_bytes().to_vec())),
            timeout: Some(5),
            credentials_secret_ref: None,
        },
    )
}

/// The cluster's identity: the UID of its `kube-system` Namespace.
pub async fn uid_of_kube_system(c: &Client) -> String {
    Api::<Namespace>::all(c.clone())
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// The RemoteCluster `cluster-a` in the remote cluster `b`, pointing back at the cluster whose
/// identity is `a_uid`, Ready, as the remote cluster's operator would record it.
pub async fn point_back(b: &RemoteApi, a_uid: &str) {
    let rcs: Api<hybridnet_api::multicluster::RemoteCluster> = Api::all(b.client.clone());
    rcs.create(
        &PostParams::default(),
        &inline_remote_cluster("cluster-a", "https://192.0.2.1:6443", &b.ca, &make_certs()),
    )
    .await
    .unwrap();
    rcs.patch_status(
        "cluster-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"uuid": a_uid, "state": "Ready"}})),
    )
    .await
    .unwrap();
}

/// The overlay network `init` (VNI 4) with its subnet `init` 198.18.0.0/20.
pub async fn init_overlay(env: &Env) {
    env.create_network(network("init", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    env.create_subnet(subnet_of(
        "init",
        "init",
        IpVersion::V4,
        "198.18.0.0/20",
        None,
    ))
    .await
    .unwrap();
}

/// Cluster A of the multi-cluster tests: the overlay network `init` (VNI 4) with its subnet
/// `init` 198.18.0.0/20, and a control-plane replica of `config` with the MultiCluster feature
/// on; with A's identity (its kube-system UID).
pub async fn multicluster_a(mut config: ControlPlaneConfig) -> (Env, Replica, String) {
    let a = Env::start().await;
    init_overlay(&a).await;
    config.defaults.multi_cluster = true;
    let r = a.replica_with(config, true).await;
    let a_uid = uid_of_kube_system(&a.client).await;
    (a, r, a_uid)
}
