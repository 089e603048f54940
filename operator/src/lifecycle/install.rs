//! The operator's own install, rendered by the same code for both the OLM bundle (`bundle/`) and
//! the plain kustomize install (`deploy/`): the operator Deployment, its ServiceAccount and RBAC,
//! the CRDs, a sample HybridnetCluster, the ClusterServiceVersion, `metadata/annotations.yaml`,
//! the scorecard config and `bundle.Dockerfile`. `bundlegen` writes [`files`]; a test fails when
//! the committed files drift from it.
//!
//! The operator's own objects do not carry `app.kubernetes.io/managed-by: hybridnet-operator`: the
//! HybridnetCluster finalizer removes by that label and must never remove the operator itself.

use std::collections::BTreeMap;

use hybridnet_api::constants::{env, label};
use hybridnet_api::operator::{
    BootstrapNetwork, ClusterDefaults, CniSpec, FailurePolicy, HybridnetCluster,
    HybridnetClusterSpec, ImagePullPolicy, IpFamily, NodeAgentSpec, NodeAgentUpdateStrategy,
    WebhookSpec,
};
use hybridnet_api::v1::{IpVersion, NetworkType};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount, Toleration,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::names;
use super::rbac;
use super::settings;

/// The operator's version: one operator release runs exactly one operand version.
pub const OPERATOR_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Oldest Kubernetes supported: derived from the API features hybridnet relies on
/// (`hybridnet_api::platform`, docs/operations.md "Kubernetes floor").
pub const MIN_KUBE_VERSION: &str = hybridnet_api::platform::MIN_KUBE_VERSION;
/// OpenShift 4 minor releases and the Kubernetes minor each ships (OpenShift 4.N carries
/// Kubernetes 1.(N+13), from 4.12/1.25 to 4.20/1.33, as OpenShift's release notes state).
const OPENSHIFT_KUBE: &[(u32, u32)] = &[
    (12, 25),
    (13, 26),
    (14, 27),
    (15, 28),
    (16, 29),
    (17, 30),
    (18, 31),
    (19, 32),
    (20, 33),
];

/// `com.redhat.openshift.versions` for a `minKubeVersion`: `v4.N` ("4.N and later") for the oldest
/// OpenShift whose Kubernetes is at least `min_kube`, so the two claims agree. None when the
/// version does not parse or is newer than the table (the table then needs a line).
pub fn openshift_versions(min_kube: &str) -> Option<String> {
    let mut parts = min_kube.split('.');
    let (major, minor) = (parts.next()?, parts.next()?.parse::<u32>().ok()?);
    if major != "1" {
        return None;
    }
    OPENSHIFT_KUBE
        .iter()
        .find(|(_, k)| *k >= minor)
        .map(|(ocp, _)| format!("v4.{ocp}"))
}

/// Release date written into the CSV (`createdAt`); fixed so that generation is reproducible.
pub const RELEASE_DATE: &str = "2026-11-26T00:00:00Z";
pub const PACKAGE: &str = "hybridnet-operator";
/// `preview`: one of the prefixes OperatorHub's validator accepts (preview, fast, stable;
/// operator-framework/api pkg/validation/internal/operatorhub.go, validateHubChannels) for an
/// operator of maturity alpha.
pub const CHANNEL: &str = "preview";

/// Where the generated files go, relative to the repository root.
pub const BUNDLE_DIR: &str = "bundle";
pub const DEPLOY_DIR: &str = "deploy";

fn install_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::LABEL_NAME.to_string(), names::OPERATOR.to_string()),
        (names::LABEL_PART_OF.to_string(), names::PART_OF.to_string()),
    ])
}

fn install_meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(install_labels()),
        ..Default::default()
    }
}

/// Port of the operator's `/metrics` (its `--metrics-port` default).
pub const OPERATOR_METRICS_PORT: i32 = 9899;

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The operator container's Deployment spec (same in the CSV and in `deploy/`).
pub fn operator_deployment_spec(image: &str) -> DeploymentSpec {
    let selector = names::selector_labels(names::OPERATOR);
    let mut pod_labels = selector.clone();
    // The webhook server runs in this pod: it must never depend on itself to be admitted.
    pod_labels.insert(label::WEBHOOK_IGNORE.into(), "true".into());
    DeploymentSpec {
        replicas: Some(1),
        selector: LabelSelector {
            match_labels: Some(selector),
            ..Default::default()
        },
        strategy: Some(DeploymentStrategy {
            // Host network: a second pod on the same node could not bind the webhook port.
            type_: Some("Recreate".into()),
            ..Default::default()
        }),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                service_account_name: Some(names::OPERATOR.into()),
                // The pod network does not exist until this operator has installed it.
                host_network: Some(true),
                dns_policy: Some("ClusterFirstWithHostNet".into()),
                priority_class_name: Some("system-cluster-critical".into()),
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
                node_selector: Some(BTreeMap::from([(
                    "kubernetes.io/os".to_string(),
                    "linux".to_string(),
                )])),
                // No fixed user: the image's own (65532:65532, scripts/images/build.sh) runs on
                // Kubernetes, runAsNonRoot checks it; OpenShift's default SCC restricted-v2
                // assigns one from the namespace's range and refuses any other fixed user
                // (docs/operations.md, "OpenShift").
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: names::OPERATOR.into(),
                    image: Some(image.to_string()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    command: Some(vec![names::OPERATOR.into()]),
                    // The webhook server reads (and reloads) the certificate the lifecycle keeps
                    // in this Secret.
                    args: Some(vec![format!(
                        "--webhook-cert-secret={}",
                        names::WEBHOOK_SECRET
                    )]),
                    env: Some(vec![
                        field_env(env::NAMESPACE, "metadata.namespace"),
                        field_env("POD_NAME", "metadata.name"),
                        // The operand image (the same image): pinned by digest in a release
                        // bundle, rewritten by mirroring tools for disconnected installs.
                        EnvVar {
                            name: names::RELATED_IMAGE_ENV.into(),
                            value: Some(image.to_string()),
                            ..Default::default()
                        },
                    ]),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("webhook".into()),
                            container_port: settings::DEFAULT_WEBHOOK_PORT,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("metrics".into()),
                            container_port: OPERATOR_METRICS_PORT,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                    ]),
                    // Ready once the webhook serves; no liveness probe: before the first leader
                    // has issued the certificate the server cannot answer, and restarting would
                    // not help.
                    readiness_probe: Some(Probe {
                        http_get: Some(HTTPGetAction {
                            path: Some("/readyz".into()),
                            port: IntOrString::Int(settings::DEFAULT_WEBHOOK_PORT),
                            scheme: Some("HTTPS".into()),
                            ..Default::default()
                        }),
                        period_seconds: Some(10),
                        timeout_seconds: Some(5),
                        failure_threshold: Some(3),
                        ..Default::default()
                    }),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), Quantity("100m".into())),
                            ("memory".to_string(), Quantity("128Mi".into())),
                        ])),
                        ..Default::default()
                    }),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        read_only_root_filesystem: Some(true),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".into()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

/// Annotations on the CRDs of `deploy/crds/`: Argo CD neither prunes them (removed from Git) nor
/// deletes them (Application deleted), Flux's kustomize-controller never garbage-collects them.
/// Deleting a CRD deletes every object of its kind, so removing hybridnet's CRDs is always a
/// deliberate `kubectl delete -k deploy/crds/` (docs/operations.md, "Removing").
pub const CRD_KEEP_ANNOTATIONS: &[(&str, &str)] = &[
    (
        "argocd.argoproj.io/sync-options",
        "Prune=false,Delete=false",
    ),
    ("kustomize.toolkit.fluxcd.io/prune", "disabled"),
];

/// The operator's own objects for the plain install, in apply order (CRDs come separately).
pub struct OperatorInstall {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
}

pub fn operator_install(namespace: &str, image: &str) -> OperatorInstall {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: names::OPERATOR.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    let mut ns_meta = install_meta(namespace, None);
    // The node agent needs host namespaces and capabilities.
    ns_meta
        .labels
        .get_or_insert_default()
        .extend(namespace_pod_security_labels());
    OperatorInstall {
        namespace: Namespace {
            metadata: ns_meta,
            ..Default::default()
        },
        service_account: ServiceAccount {
            metadata: install_meta(names::OPERATOR, Some(namespace)),
            ..Default::default()
        },
        cluster_role: ClusterRole {
            metadata: install_meta(names::OPERATOR, None),
            rules: Some(rbac::operator_cluster_rules()),
            ..Default::default()
        },
        cluster_role_binding: ClusterRoleBinding {
            metadata: install_meta(names::OPERATOR, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: names::OPERATOR.into(),
            },
            subjects: Some(vec![subject.clone()]),
        },
        role: Role {
            metadata: install_meta(names::OPERATOR, Some(namespace)),
            rules: Some(rbac::operator_namespace_rules()),
        },
        role_binding: RoleBinding {
            metadata: install_meta(names::OPERATOR, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: names::OPERATOR.into(),
            },
            subjects: Some(vec![subject]),
        },
        deployment: Deployment {
            metadata: install_meta(names::OPERATOR, Some(namespace)),
            spec: operator_deployment_spec(image),
            status: None,
        },
    }
}

/// The opt-in grant for global services (`deploy/global-services/`): the ClusterRole
/// `rbac::global_services_rules` and its binding to the operator's ServiceAccount in `namespace`.
pub fn global_services_rbac(namespace: &str) -> (ClusterRole, ClusterRoleBinding) {
    (
        ClusterRole {
            metadata: install_meta(names::GLOBAL_SERVICES, None),
            rules: Some(rbac::global_services_rules()),
            ..Default::default()
        },
        ClusterRoleBinding {
            metadata: install_meta(names::GLOBAL_SERVICES, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: names::GLOBAL_SERVICES.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: names::OPERATOR.into(),
                namespace: Some(namespace.into()),
                ..Default::default()
            }]),
        },
    )
}

/// The sample HybridnetCluster (also the CSV's alm-example): every knob at its default, spelled out.
pub fn sample_cluster(version: &str) -> HybridnetCluster {
    let mut c = HybridnetCluster::new(
        hybridnet_api::operator::CLUSTER_SINGLETON_NAME,
        HybridnetClusterSpec {
            version: Some(version.into()),
            registry: Some(names::DEFAULT_REGISTRY.into()),
            image_pull_policy: Some(ImagePullPolicy::IfNotPresent),
            image_pull_secrets: None,
            defaults: Some(ClusterDefaults {
                network_type: Some(NetworkType::Overlay),
                ip_family: Some(IpFamily::IPv4),
                ip_retain: Some(true),
                ..Default::default()
            }),
            node_agent: Some(NodeAgentSpec {
                update_strategy: Some(NodeAgentUpdateStrategy {
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
                vxlan_udp_port: Some(settings::DEFAULT_VXLAN_UDP_PORT),
                health_port: Some(settings::DEFAULT_HEALTH_PORT),
                metrics_port: Some(settings::DEFAULT_METRICS_PORT),
                ..Default::default()
            }),
            cni: Some(CniSpec {
                bin_dir: Some(settings::DEFAULT_BIN_DIR.into()),
                conf_dir: Some(settings::DEFAULT_CONF_DIR.into()),
                conflist_name: Some(settings::DEFAULT_CONFLIST.into()),
                chained_plugins: Some(
                    settings::DEFAULT_CHAINED_PLUGINS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
                ..Default::default()
            }),
            webhook: Some(WebhookSpec {
                failure_policy: Some(FailurePolicy::Ignore),
                port: Some(settings::DEFAULT_WEBHOOK_PORT),
                additional_pod_match_expressions: Some(
                    settings::upstream_default_pod_match_expressions(),
                ),
            }),
            bootstrap: Some(BootstrapNetwork {
                name: Some(settings::DEFAULT_BOOTSTRAP_NAME.into()),
                vxlan_id: Some(settings::DEFAULT_BOOTSTRAP_VNI),
                cidr: "100.64.0.0/16".into(),
                ip_version: Some(IpVersion::V4),
            }),
            features: None,
        },
    );
    c.metadata.labels = None;
    c
}

/// Examples of the other owned kinds for `alm-examples` (templates in the console UI).
fn alm_examples(version: &str) -> Value {
    let cluster = serde_json::to_value(sample_cluster(version)).unwrap_or(Value::Null);
    json!([
        cluster,
        {
            "apiVersion": "networking.alibaba.com/v1", "kind": "Network",
            "metadata": {"name": "underlay-network1"},
            "spec": {"type": "Underlay", "mode": "VLAN", "netID": 0,
                     "nodeSelector": {"network": "underlay-network1"}}
        },
        {
            "apiVersion": "networking.alibaba.com/v1", "kind": "Subnet",
            "metadata": {"name": "underlay-subnet1"},
            "spec": {"network": "underlay-network1", "netID": 0,
                     "range": {"version": "4", "cidr": "192.168.56.0/24", "gateway": "192.168.56.1",
                               "start": "192.168.56.100", "end": "192.168.56.200"}}
        },
        {
            "apiVersion": "networking.alibaba.com/v1", "kind": "IPInstance",
            "metadata": {"name": "192-168-56-100", "namespace": "default"},
            "spec": {"network": "underlay-network1", "subnet": "underlay-subnet1",
                     "address": {"version": "4", "ip": "192.168.56.100/24", "gateway": "192.168.56.1",
                                 "netID": 0, "mac": "02:12:34:ab:cd:ef"}}
        },
        {
            "apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
            "metadata": {"name": "node1"},
            "spec": {"vtepInfo": {"ip": "192.168.56.11", "mac": "52:54:00:12:34:56",
                                  "localIPs": ["192.168.56.11"]}}
        },
        {
            "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteCluster",
            "metadata": {"name": "cluster-b"},
            "spec": {"apiEndpoint": "https://192.168.56.200:6443",
                     "credentialsSecretRef": {"namespace": "hybridnet-system", "name": "cluster-b"}}
        },
        {
            "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteSubnet",
            "metadata": {"name": "cluster-b.init"},
            "spec": {"range": {"version": "4", "cidr": "100.65.0.0/16"},
                     "networkType": "Overlay", "clusterName": "cluster-b"}
        },
        {
            "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteVtep",
            "metadata": {"name": "cluster-b.node1"},
            "spec": {"clusterName": "cluster-b", "nodeName": "node1", "ip": "192.168.56.31",
                     "mac": "52:54:00:ab:cd:01", "endpointIPList": ["100.65.0.7"]}
        },
        {
            "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteEndpointSlice",
            "metadata": {"name": "cluster-b.default.web"},
            "spec": {"remoteService": {"cluster": "cluster-b", "name": "web", "namespace": "default"},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": ["100.65.0.7"], "conditions": {"ready": true}}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
        }
    ])
}

fn descriptor(path: &str, name: &str, description: &str, x: &[&str]) -> Value {
    json!({"path": path, "displayName": name, "description": description, "x-descriptors": x})
}

fn owned_crds() -> Value {
    let text = "urn:alm:descriptor:com.tectonic.ui:text";
    let number = "urn:alm:descriptor:com.tectonic.ui:number";
    let conditions = "urn:alm:descriptor:io.kubernetes.conditions";
    let boolean = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch";
    let advanced = "urn:alm:descriptor:com.tectonic.ui:advanced";
    let managed = |kinds: &[(&str, &str)]| -> Value {
        Value::Array(
            kinds
                .iter()
                .map(|(k, v)| json!({"kind": k, "version": v, "name": ""}))
                .collect(),
        )
    };
    json!([
        {
            "name": "hybridnetclusters.operator.hybridnet.io",
            "version": "v1alpha1",
            "kind": "HybridnetCluster",
            "displayName": "Hybridnet Cluster",
            "description": "The hybridnet installation of this cluster (exactly one, named default): version, images, node agent, CNI, webhook and the bootstrap overlay network.",
            "resources": managed(&[
                ("DaemonSet", "v1"), ("Service", "v1"), ("Secret", "v1"), ("ServiceAccount", "v1"),
                ("ClusterRole", "v1"), ("ClusterRoleBinding", "v1"),
                ("MutatingWebhookConfiguration", "v1"), ("ValidatingWebhookConfiguration", "v1"),
                ("Network", "v1"), ("Subnet", "v1"),
                // On OpenShift only (lifecycle::openshift).
                ("SecurityContextConstraints", "v1")
            ]),
            "specDescriptors": [
                descriptor("version", "Version", "Operand version (the operator's own when absent).", &[text]),
                descriptor("registry", "Registry", "Image registry and repository prefix.", &[text]),
                descriptor("imagePullPolicy", "Image Pull Policy", "Pull policy of every hybridnet image.", &["urn:alm:descriptor:com.tectonic.ui:imagePullPolicy"]),
                descriptor("defaults", "Defaults", "Default network type, IP family and IP retention of pods.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:defaults"]),
                descriptor("nodeAgent", "Node Agent", "The node agent DaemonSet: rollout, interfaces, ports, resources.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:nodeAgent"]),
                descriptor("nodeAgent.updateStrategy.maxUnavailable", "Max Unavailable", "Nodes updated at once during an upgrade.", &[text]),
                descriptor("nodeAgent.vlanCheckTimeout", "VLAN Check Timeout", "How long CNI ADD of a VLAN pod waits for the gateway (e.g. 3s, at most 30s; 0 disables the VLAN checks).", &[text, advanced]),
                descriptor("nodeAgent.enableVlanArpEnhancement", "VLAN ARP Enhancement", "Keep a pod address on VLAN interfaces so ARP from the node has a sender inside the subnet.", &[boolean, advanced]),
                descriptor("nodeAgent.checkPodConnectivityFromHost", "Check Pod Connectivity From Host", "CNI ADD pings the new pod from the node.", &[boolean, advanced]),
                descriptor("cni", "CNI", "Where the CNI plugin and conflist are installed.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:cni"]),
                descriptor("webhook", "Webhook", "Admission webhook failure policy and port.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:webhook"]),
                descriptor("bootstrap", "Bootstrap Network", "Overlay Network and Subnet created once at install.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:bootstrap"]),
                descriptor("features", "Features", "Feature switches.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:features"])
            ],
            "statusDescriptors": [
                descriptor("conditions", "Conditions", "Available, Progressing and Degraded.", &[conditions]),
                descriptor("version", "Version", "Operand version every component runs.", &[text]),
                descriptor("targetVersion", "Target Version", "Operand version being rolled out.", &[text]),
                descriptor("observedGeneration", "Observed Generation", "Generation the status describes.", &[number]),
                descriptor("nodeAgents.desired", "Node Agents Desired", "Nodes that should run the agent.", &["urn:alm:descriptor:com.tectonic.ui:podCount"]),
                descriptor("nodeAgents.updated", "Node Agents Updated", "Agents running the target version.", &[number]),
                descriptor("nodeAgents.ready", "Node Agents Ready", "Agents ready.", &[number]),
                descriptor("nodeAgents.available", "Node Agents Available", "Agents available.", &[number])
            ]
        },
        {
            "name": "networks.networking.alibaba.com",
            "version": "v1", "kind": "Network", "displayName": "Network",
            "description": "A pod network and scheduling domain: Underlay (VLAN or BGP), Overlay (VXLAN) or GlobalBGP.",
            "resources": [],
            "specDescriptors": [
                descriptor("type", "Type", "Underlay, Overlay or GlobalBGP.", &[text]),
                descriptor("mode", "Mode", "VLAN, BGP, VXLAN or GlobalBGP.", &[text]),
                descriptor("netID", "Net ID", "VLAN id, VNI or local AS number.", &[number]),
                descriptor("nodeSelector", "Node Selector", "Nodes that belong to this underlay network.", &["urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Node"]),
                descriptor("config", "Config", "BGP peers and other mode settings.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:config"])
            ],
            "statusDescriptors": [
                descriptor("statistics", "IPv4 Statistics", "Total, used and available IPv4 addresses.", &[text]),
                descriptor("ipv6Statistics", "IPv6 Statistics", "Total, used and available IPv6 addresses.", &[text]),
                descriptor("dualStackStatistics", "Dual-Stack Statistics", "Available dual-stack address pairs.", &[text]),
                descriptor("nodeList", "Nodes", "Nodes attached to this network.", &[text]),
                descriptor("subnetList", "Subnets", "Subnets of this network.", &[text])
            ]
        },
        {
            "name": "subnets.networking.alibaba.com",
            "version": "v1", "kind": "Subnet", "displayName": "Subnet",
            "description": "An address range of a Network, with gateway, reserved and excluded addresses.",
            "resources": [],
            "specDescriptors": [
                descriptor("network", "Network", "Parent Network.", &[text]),
                descriptor("netID", "Net ID", "VLAN id of this subnet (VLAN networks).", &[number]),
                descriptor("range", "Range", "CIDR, start, end, gateway, reserved and excluded addresses.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:range"]),
                descriptor("config", "Config", "Private subnet and NAT settings.", &["urn:alm:descriptor:com.tectonic.ui:fieldGroup:config"])
            ],
            "statusDescriptors": [
                descriptor("total", "Total", "Allocatable addresses.", &[number]),
                descriptor("used", "Used", "Allocated addresses.", &[number]),
                descriptor("available", "Available", "Free addresses.", &[number]),
                descriptor("lastAllocatedIP", "Last Allocated IP", "Allocation cursor.", &[text])
            ]
        },
        {
            "name": "ipinstances.networking.alibaba.com",
            "version": "v1", "kind": "IPInstance", "displayName": "IP Instance",
            "description": "One allocated pod address (name = the IP), written by the operator's IPAM.",
            "resources": [],
            "specDescriptors": [
                descriptor("network", "Network", "Network of the address.", &[text]),
                descriptor("subnet", "Subnet", "Subnet of the address.", &[text]),
                descriptor("address", "Address", "IP, gateway, VLAN/VNI and MAC.", &[text]),
                descriptor("binding", "Binding", "Pod, node and owner the address is bound to.", &[text])
            ],
            "statusDescriptors": [
                descriptor("nodeName", "Node", "Node of the pod.", &[text]),
                descriptor("podName", "Pod", "Pod using the address.", &[text]),
                descriptor("podNamespace", "Pod Namespace", "Namespace of the pod.", &[text])
            ]
        },
        {
            "name": "nodeinfoes.networking.alibaba.com",
            "version": "v1", "kind": "NodeInfo", "displayName": "Node Info",
            "description": "A node's VXLAN tunnel endpoint, published by its node agent.",
            "resources": [],
            "specDescriptors": [
                descriptor("vtepInfo", "VTEP", "Tunnel endpoint IP, MAC and local IPs.", &[text])
            ],
            "statusDescriptors": [
                descriptor("updateTimestamp", "Updated", "Last update by the node agent.", &[text])
            ]
        },
        {
            "name": "remoteclusters.multicluster.alibaba.com",
            "version": "v1", "kind": "RemoteCluster", "displayName": "Remote Cluster",
            "description": "Another cluster sharing the overlay VNI, whose pods this cluster's pods reach directly (docs/multicluster.md).",
            "resources": [],
            "specDescriptors": [
                descriptor("apiEndpoint", "API Endpoint", "The remote API server, https://host:port.", &[text]),
                descriptor("credentialsSecretRef", "Credentials Secret", "Secret with ca.crt and tls.crt/tls.key or token.", &[text]),
                descriptor("timeout", "Timeout", "Seconds per request to the remote API server.", &[number])
            ],
            "statusDescriptors": [
                descriptor("state", "State", "Ready, NotReady, Offline or Unknown.", &[text]),
                descriptor("uuid", "UUID", "UID of the remote cluster's kube-system namespace.", &[text]),
                descriptor("conditions", "Conditions", "One per connection check.", &[conditions])
            ]
        },
        {
            "name": "remotesubnets.multicluster.alibaba.com",
            "version": "v1", "kind": "RemoteSubnet", "displayName": "Remote Subnet",
            "description": "Mirror of a remote cluster's Subnet, named <cluster>.<subnet>.",
            "resources": [],
            "specDescriptors": [
                descriptor("range", "Range", "The remote subnet's address range.", &[text]),
                descriptor("networkType", "Network Type", "Overlay or Underlay.", &[text]),
                descriptor("clusterName", "Cluster", "The RemoteCluster it belongs to.", &[text])
            ],
            "statusDescriptors": [
                descriptor("lastModifyTime", "Last Modified", "Last change of the mirror.", &[text])
            ]
        },
        {
            "name": "remotevteps.multicluster.alibaba.com",
            "version": "v1", "kind": "RemoteVtep", "displayName": "Remote VTEP",
            "description": "Mirror of a remote node's VXLAN endpoint and its pods' addresses, named <cluster>.<node>.",
            "resources": [],
            "specDescriptors": [
                descriptor("ip", "VTEP IP", "Tunnel endpoint address.", &[text]),
                descriptor("mac", "VTEP MAC", "Tunnel endpoint MAC.", &[text]),
                descriptor("endpointIPList", "Endpoints", "Addresses of the node's pods.", &[text])
            ],
            "statusDescriptors": [
                descriptor("lastModifyTime", "Last Modified", "Last change of the mirror.", &[text])
            ]
        },
        {
            "name": "remoteendpointslice.multicluster.alibaba.com",
            "version": "v1", "kind": "RemoteEndpointSlice", "displayName": "Remote Endpoint Slice",
            "description": "Endpoints of a remote cluster's global Service.",
            "resources": [],
            "specDescriptors": [
                descriptor("remoteService", "Service", "Cluster, namespace and name of the Service.", &[text]),
                descriptor("addressType", "Address Type", "IPv4, IPv6 or FQDN.", &[text]),
                descriptor("endpoints", "Endpoints", "The Service's endpoints.", &[text])
            ],
            "statusDescriptors": [
                descriptor("lastModifyTime", "Last Modified", "Last change of the mirror.", &[text])
            ]
        }
    ])
}

const CSV_DESCRIPTION: &str = "hybridnet runs overlay (VXLAN) and underlay (VLAN, BGP) pod networks in one cluster. Traffic between them is steered by Linux policy routing: any connection with an overlay end goes over the overlay un-NATed, so overlay and underlay pods reach each other directly.

## Features
- Overlay, VLAN and BGP underlay Networks side by side; a Network is a scheduling domain.
- IPAM with static IPs for StatefulSets, IP pools, reserved and excluded addresses, dual stack.
- One `HybridnetCluster` named `default` installs, configures and upgrades everything, with Available/Progressing/Degraded conditions.

## Prerequisites
Install at cluster bootstrap (before other pods need a network), or migrate the cluster network live. Nodes need Linux with VXLAN and nftables.";

/// A tiny SVG icon (1:2), base64.
const ICON_SVG_B64: &str = "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCA4MCA0MCI+PHJlY3Qgd2lkdGg9IjgwIiBoZWlnaHQ9IjQwIiBmaWxsPSIjMWY2ZmViIi8+PHBhdGggZD0iTTEwIDMwIEw0MCAxMCBMNzAgMzAiIHN0cm9rZT0iI2ZmZiIgc3Ryb2tlLXdpZHRoPSI0IiBmaWxsPSJub25lIi8+PC9zdmc+";

fn rules_json(rules: Vec<PolicyRule>) -> Value {
    serde_json::to_value(rules).unwrap_or(Value::Null)
}

/// The ClusterServiceVersion.
/// `image` is the one image (operator and operands), by tag or pinned by digest.
pub fn cluster_service_version(image: &str, version: &str) -> Value {
    let examples = serde_json::to_string_pretty(&alm_examples(version)).unwrap_or_default();
    let deployment = serde_json::to_value(operator_deployment_spec(image)).unwrap_or(Value::Null);
    json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{PACKAGE}.v{version}"),
            "annotations": {
                "alm-examples": examples,
                "capabilities": "Seamless Upgrades",
                "categories": "Networking",
                "containerImage": image,
                "createdAt": RELEASE_DATE,
                "description": "Hybrid overlay (VXLAN) and underlay (VLAN/BGP) container networking for Kubernetes.",
                "repository": "https://github.com/hybridnet/hybridnet",
                "support": "hybridnet",
                "operatorframework.io/suggested-namespace": names::DEFAULT_NAMESPACE,
                // The console creates this namespace (the template wins over the name above):
                // the node agent needs host networking, host paths and capabilities, which only
                // the `privileged` Pod Security level admits.
                "operatorframework.io/suggested-namespace-template": suggested_namespace_template(),
                // Written by the operator and the node agents, not by users: the console hides
                // them from the "create" views.
                "operators.operatorframework.io/internal-objects": internal_objects(),
                "features.operators.openshift.io/cni": "true",
                "features.operators.openshift.io/disconnected": "true",
                "features.operators.openshift.io/fips-compliant": "false",
                "features.operators.openshift.io/proxy-aware": "false",
                "features.operators.openshift.io/tls-profiles": "false",
                "features.operators.openshift.io/token-auth-aws": "false",
                "features.operators.openshift.io/token-auth-azure": "false",
                "features.operators.openshift.io/token-auth-gcp": "false",
                "features.operators.openshift.io/cnf": "false",
                "features.operators.openshift.io/csi": "false"
            },
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/arch.arm64": "supported",
                "operatorframework.io/os.linux": "supported"
            }
        },
        "spec": {
            "displayName": "hybridnet",
            "description": CSV_DESCRIPTION,
            "version": version,
            "minKubeVersion": MIN_KUBE_VERSION,
            "maturity": "alpha",
            "keywords": ["cni", "networking", "overlay", "underlay", "vxlan", "vlan", "bgp", "ipam"],
            "provider": {"name": "hybridnet"},
            "maintainers": [{"name": "hybridnet maintainers", "email": "hybridnet@googlegroups.com"}],
            "links": [{"name": "Source", "url": "https://github.com/hybridnet/hybridnet"}],
            "icon": [{"base64data": ICON_SVG_B64, "mediatype": "image/svg+xml"}],
            "installModes": [
                // Cluster-wide only: the operator watches pods, nodes and its CRDs in every
                // namespace whatever the OperatorGroup targets, so OwnNamespace would be a lie.
                {"type": "OwnNamespace", "supported": false},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": true}
            ],
            "customresourcedefinitions": {"owned": owned_crds()},
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [{
                        "name": names::OPERATOR,
                        "label": install_labels(),
                        "spec": deployment
                    }],
                    "permissions": [{
                        "serviceAccountName": names::OPERATOR,
                        "rules": rules_json(rbac::operator_namespace_rules())
                    }],
                    "clusterPermissions": [{
                        "serviceAccountName": names::OPERATOR,
                        "rules": rules_json(rbac::operator_cluster_rules())
                    }]
                }
            },
            "relatedImages": [{"name": "hybridnet", "image": image}]
        }
    })
}

/// The labels of the operator's namespace: Pod Security `privileged` (enforced, audited and
/// warned), the level the node agent DaemonSet needs.
pub fn namespace_pod_security_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .map(|m| {
            (
                format!("pod-security.kubernetes.io/{m}"),
                "privileged".to_string(),
            )
        })
        .collect()
}

/// `operatorframework.io/suggested-namespace-template`: the Namespace as JSON.
pub fn suggested_namespace_template() -> String {
    serde_json::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": names::DEFAULT_NAMESPACE, "labels": namespace_pod_security_labels()}
    }))
    .unwrap_or_default()
}

/// `operators.operatorframework.io/internal-objects`: the machine-written kinds, IPInstance
/// (the operator's IPAM), NodeInfo (each node agent) and the multi-cluster mirrors (RemoteSubnet,
/// RemoteVtep, RemoteEndpointSlice), as a JSON array of CRD names.
pub fn internal_objects() -> String {
    use hybridnet_api::multicluster::{RemoteEndpointSlice, RemoteSubnet, RemoteVtep};
    use kube::CustomResourceExt;
    serde_json::to_string(&[
        hybridnet_api::v1::IPInstance::crd_name(),
        hybridnet_api::v1::NodeInfo::crd_name(),
        RemoteSubnet::crd_name(),
        RemoteVtep::crd_name(),
        RemoteEndpointSlice::crd_name(),
    ])
    .unwrap_or_default()
}

/// `metadata/annotations.yaml` keys, also the `bundle.Dockerfile` LABELs.
pub fn bundle_annotations() -> Vec<(&'static str, String)> {
    vec![
        (
            "operators.operatorframework.io.bundle.mediatype.v1",
            "registry+v1".into(),
        ),
        (
            "operators.operatorframework.io.bundle.manifests.v1",
            "manifests/".into(),
        ),
        (
            "operators.operatorframework.io.bundle.metadata.v1",
            "metadata/".into(),
        ),
        (
            "operators.operatorframework.io.bundle.package.v1",
            PACKAGE.into(),
        ),
        (
            "operators.operatorframework.io.bundle.channels.v1",
            CHANNEL.into(),
        ),
        (
            "operators.operatorframework.io.bundle.channel.default.v1",
            CHANNEL.into(),
        ),
        (
            "operators.operatorframework.io.test.mediatype.v1",
            "scorecard+v1".into(),
        ),
        (
            "operators.operatorframework.io.test.config.v1",
            "tests/scorecard/".into(),
        ),
        (
            "com.redhat.openshift.versions",
            // A test checks MIN_KUBE_VERSION is in the table, so this never falls back.
            openshift_versions(MIN_KUBE_VERSION).unwrap_or_else(|| "v4.20".into()),
        ),
    ]
}

fn scorecard_config() -> Value {
    let test = |name: &str, suite: &str, label: &str| {
        json!({
            "entrypoint": ["scorecard-test", name],
            "image": "quay.io/operator-framework/scorecard-test:v1.39.0",
            "labels": {"suite": suite, "test": label},
            "storage": {"spec": {"mountPath": {}}}
        })
    };
    json!({
        "apiVersion": "scorecard.operatorframework.io/v1alpha3",
        "kind": "Configuration",
        "metadata": {"name": "config"},
        "stages": [{
            "parallel": true,
            "tests": [
                test("basic-check-spec", "basic", "basic-check-spec-test"),
                test("olm-bundle-validation", "olm", "olm-bundle-validation-test"),
                test("olm-crds-have-validation", "olm", "olm-crds-have-validation-test"),
                test("olm-crds-have-resources", "olm", "olm-crds-have-resources-test"),
                test("olm-spec-descriptors", "olm", "olm-spec-descriptors-test"),
                test("olm-status-descriptors", "olm", "olm-status-descriptors-test")
            ]
        }],
        "storage": {"spec": {"mountPath": {}}}
    })
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("rendering {file} as YAML: {source}")]
    Yaml {
        file: String,
        source: serde_saphyr::ser::Error,
    },
    #[error("rendering {file} as JSON: {source}")]
    Json {
        file: String,
        source: serde_json::Error,
    },
    #[error("bundle input: {0}")]
    Input(String),
}

const HEADER: &str =
    "# Generated by `cargo run -p hybridnet-operator --bin bundlegen`; do not edit.\n";

fn yaml_docs(file: &str, docs: &[Value]) -> Result<String, GenerateError> {
    let mut out = String::from(HEADER);
    for d in docs {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(d).map_err(|source| GenerateError::Yaml {
                file: file.into(),
                source,
            })?,
        );
    }
    Ok(out)
}

fn to_value<T: serde::Serialize>(file: &str, v: &T) -> Result<Value, GenerateError> {
    serde_json::to_value(v).map_err(|source| GenerateError::Json {
        file: file.into(),
        source,
    })
}

/// Every generated file: (path relative to the repository root, content).
pub fn files(version: &str) -> Result<Vec<(String, String)>, GenerateError> {
    files_pinned(version, None)
}

/// [`files`] with the image pinned by `digest` (`sha256:<hex>`), as a release bundle has it:
/// `relatedImages`, the operator Deployment, its `RELATED_IMAGE_HYBRIDNET` and `containerImage`.
pub fn files_pinned(
    version: &str,
    digest: Option<&str>,
) -> Result<Vec<(String, String)>, GenerateError> {
    let registry = names::DEFAULT_REGISTRY;
    let image = match digest {
        Some(d) => names::image_by_digest(registry, d).map_err(GenerateError::Input)?,
        None => names::image(registry, version),
    };
    let image = image.as_str();
    let mut out = Vec::new();

    // OLM bundle.
    let csv_file = format!("{BUNDLE_DIR}/manifests/{PACKAGE}.clusterserviceversion.yaml");
    out.push((
        csv_file.clone(),
        yaml_docs(&csv_file, &[cluster_service_version(image, version)])?,
    ));
    let crds = hybridnet_api::crd::all();
    for (name, crd) in &crds {
        let file = format!("{BUNDLE_DIR}/manifests/{name}");
        out.push((file.clone(), yaml_docs(&file, &[to_value(&file, crd)?])?));
    }
    let ann_file = format!("{BUNDLE_DIR}/metadata/annotations.yaml");
    let ann: serde_json::Map<String, Value> = bundle_annotations()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    out.push((
        ann_file.clone(),
        yaml_docs(&ann_file, &[json!({"annotations": ann})])?,
    ));
    let sc_file = format!("{BUNDLE_DIR}/tests/scorecard/config.yaml");
    out.push((sc_file.clone(), yaml_docs(&sc_file, &[scorecard_config()])?));
    let mut dockerfile = String::from(
        "# Generated by `cargo run -p hybridnet-operator --bin bundlegen`; do not edit.\n\
         # The OLM bundle image: `docker build -f bundle.Dockerfile -t <registry>/hybridnet-operator-bundle:v<version> .`\n\
         FROM scratch\n\n",
    );
    for (k, v) in bundle_annotations() {
        dockerfile.push_str(&format!("LABEL {k}={v}\n"));
    }
    dockerfile.push_str(&format!(
        "\nCOPY {BUNDLE_DIR}/manifests /manifests/\nCOPY {BUNDLE_DIR}/metadata /metadata/\nCOPY {BUNDLE_DIR}/tests/scorecard /tests/scorecard/\n"
    ));
    out.push(("bundle.Dockerfile".into(), dockerfile));

    // Plain kustomize install.
    let ns = names::DEFAULT_NAMESPACE;
    let inst = operator_install(ns, image);
    let mut resources = Vec::new();
    let ns_file = format!("{DEPLOY_DIR}/namespace.yaml");
    out.push((
        ns_file.clone(),
        yaml_docs(&ns_file, &[to_value(&ns_file, &inst.namespace)?])?,
    ));
    resources.push("namespace.yaml".to_string());
    // The CRDs are a kustomization of their own, never part of `deploy/`: deleting or pruning the
    // operator's install must not delete every Network, Subnet and IPInstance with their CRDs.
    let mut crd_resources = Vec::new();
    for (name, crd) in &crds {
        let file = format!("{DEPLOY_DIR}/crds/{name}");
        let mut v = to_value(&file, crd)?;
        for (k, a) in CRD_KEEP_ANNOTATIONS {
            v["metadata"]["annotations"][*k] = json!(a);
        }
        out.push((file.clone(), yaml_docs(&file, &[v])?));
        crd_resources.push(name.to_string());
    }
    let crd_kfile = format!("{DEPLOY_DIR}/crds/kustomization.yaml");
    out.push((
        crd_kfile.clone(),
        yaml_docs(
            &crd_kfile,
            &[json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": crd_resources
            })],
        )?,
    ));
    let rbac_file = format!("{DEPLOY_DIR}/rbac.yaml");
    out.push((
        rbac_file.clone(),
        yaml_docs(
            &rbac_file,
            &[
                to_value(&rbac_file, &inst.service_account)?,
                to_value(&rbac_file, &inst.cluster_role)?,
                to_value(&rbac_file, &inst.cluster_role_binding)?,
                to_value(&rbac_file, &inst.role)?,
                to_value(&rbac_file, &inst.role_binding)?,
            ],
        )?,
    ));
    resources.push("rbac.yaml".into());
    // Opt-in, a kustomization of its own (docs/multicluster.md, Global services).
    let gs = global_services_rbac(ns);
    let gs_file = format!("{DEPLOY_DIR}/global-services/rbac.yaml");
    out.push((
        gs_file.clone(),
        yaml_docs(
            &gs_file,
            &[to_value(&gs_file, &gs.0)?, to_value(&gs_file, &gs.1)?],
        )?,
    ));
    let gs_kfile = format!("{DEPLOY_DIR}/global-services/kustomization.yaml");
    out.push((
        gs_kfile.clone(),
        yaml_docs(
            &gs_kfile,
            &[json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["rbac.yaml"]
            })],
        )?,
    ));
    let op_file = format!("{DEPLOY_DIR}/operator.yaml");
    out.push((
        op_file.clone(),
        yaml_docs(&op_file, &[to_value(&op_file, &inst.deployment)?])?,
    ));
    resources.push("operator.yaml".into());
    let sample_file = format!("{DEPLOY_DIR}/hybridnetcluster.yaml");
    let mut sample = to_value(&sample_file, &sample_cluster(version))?;
    // Argo CD: create the CR after its CRD exists (Flux applies CRDs first by itself).
    sample["metadata"]["annotations"] = json!({
        "argocd.argoproj.io/sync-wave": "1",
        "argocd.argoproj.io/sync-options": "SkipDryRunOnMissingResource=true"
    });
    out.push((sample_file.clone(), yaml_docs(&sample_file, &[sample])?));
    resources.push("hybridnetcluster.yaml".into());
    let kfile = format!("{DEPLOY_DIR}/kustomization.yaml");
    out.push((
        kfile.clone(),
        yaml_docs(
            &kfile,
            &[json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": resources
            })],
        )?,
    ));
    Ok(out)
}
