//! Pure rendering: from the effective [`Settings`] to the typed objects the operator applies.
//!
//! Deterministic (same input, same output, same order), no I/O. The reconciler applies
//! [`Rendered::objects`] with server-side apply and creates [`Rendered::bootstrap`] once.

use std::collections::BTreeMap;

use hybridnet_api::constants::{agent_shutdown, env, label};
use hybridnet_api::v1::{Network, NetworkSpec, NetworkType, Subnet, SubnetSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, DynamicObject};

use super::names;
use super::openshift::{self, Platform, SecurityContextConstraints};
use super::rbac;
use super::settings::Settings;

/// One object the operator owns and keeps applied.
// A handful per reconcile: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ManagedObject {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    DaemonSet(DaemonSet),
    Service(Service),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
    /// OpenShift only.
    SecurityContextConstraints(SecurityContextConstraints),
}

impl ManagedObject {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::ServiceAccount(o) => &o.metadata,
            Self::ClusterRole(o) => &o.metadata,
            Self::ClusterRoleBinding(o) => &o.metadata,
            Self::DaemonSet(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::MutatingWebhookConfiguration(o) => &o.metadata,
            Self::ValidatingWebhookConfiguration(o) => &o.metadata,
            Self::SecurityContextConstraints(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::ServiceAccount(o) => &mut o.metadata,
            Self::ClusterRole(o) => &mut o.metadata,
            Self::ClusterRoleBinding(o) => &mut o.metadata,
            Self::DaemonSet(o) => &mut o.metadata,
            Self::Service(o) => &mut o.metadata,
            Self::MutatingWebhookConfiguration(o) => &mut o.metadata,
            Self::ValidatingWebhookConfiguration(o) => &mut o.metadata,
            Self::SecurityContextConstraints(o) => &mut o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.api_resource_static().1
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    fn api_resource_static(&self) -> (ApiResource, &'static str) {
        match self {
            Self::ServiceAccount(_) => {
                (ApiResource::erase::<ServiceAccount>(&()), "ServiceAccount")
            }
            Self::ClusterRole(_) => (ApiResource::erase::<ClusterRole>(&()), "ClusterRole"),
            Self::ClusterRoleBinding(_) => (
                ApiResource::erase::<ClusterRoleBinding>(&()),
                "ClusterRoleBinding",
            ),
            Self::DaemonSet(_) => (ApiResource::erase::<DaemonSet>(&()), "DaemonSet"),
            Self::Service(_) => (ApiResource::erase::<Service>(&()), "Service"),
            Self::MutatingWebhookConfiguration(_) => (
                ApiResource::erase::<MutatingWebhookConfiguration>(&()),
                "MutatingWebhookConfiguration",
            ),
            Self::ValidatingWebhookConfiguration(_) => (
                ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
                "ValidatingWebhookConfiguration",
            ),
            Self::SecurityContextConstraints(_) => {
                (openshift::scc_api_resource(), openshift::SCC_KIND)
            }
        }
    }

    /// The API resource (group, version, plural) for a dynamic client.
    pub fn api_resource(&self) -> ApiResource {
        self.api_resource_static().0
    }

    /// The object as JSON with `apiVersion` and `kind`.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::ServiceAccount(o) => serde_json::to_value(o),
            Self::ClusterRole(o) => serde_json::to_value(o),
            Self::ClusterRoleBinding(o) => serde_json::to_value(o),
            Self::DaemonSet(o) => serde_json::to_value(o),
            Self::Service(o) => serde_json::to_value(o),
            Self::MutatingWebhookConfiguration(o) => serde_json::to_value(o),
            Self::ValidatingWebhookConfiguration(o) => serde_json::to_value(o),
            Self::SecurityContextConstraints(o) => serde_json::to_value(o),
        }
    }

    /// The object as a `DynamicObject` for server-side apply.
    pub fn to_dynamic(&self) -> Result<DynamicObject, serde_json::Error> {
        serde_json::from_value(self.to_value()?)
    }
}

/// Everything the operator renders from one HybridnetCluster.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Applied with server-side apply on every reconcile, in this order.
    pub objects: Vec<ManagedObject>,
    /// Created once with `create` (never applied, never overwritten, never deleted).
    pub bootstrap: Option<(Network, Subnet)>,
}

fn meta(name: &str, namespace: Option<&str>, component: &str, s: &Settings) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(names::managed_labels(component, &s.version)),
        ..Default::default()
    }
}

/// Renders every object for the given settings on plain Kubernetes ([`render_on`]).
pub fn render(s: &Settings, ca_bundle: Option<&[u8]>) -> Rendered {
    render_on(s, ca_bundle, Platform::Kubernetes)
}

/// Renders every object for the given settings on `platform`. `ca_bundle` (PEM) goes into the
/// webhook configurations; `None` renders them without one (the reconciler always passes the
/// CA). On OpenShift the agent's SCC comes before the DaemonSet whose pods it admits, and the
/// agent's ClusterRole may `use` it.
pub fn render_on(s: &Settings, ca_bundle: Option<&[u8]>, platform: Platform) -> Rendered {
    let ns = s.namespace.as_str();
    let daemonset = node_agent_daemonset(s);
    let mut objects = vec![
        ManagedObject::ServiceAccount(ServiceAccount {
            metadata: meta(names::NODE_AGENT, Some(ns), "node-agent", s),
            ..Default::default()
        }),
        ManagedObject::ClusterRole(ClusterRole {
            metadata: meta(names::NODE_AGENT, None, "node-agent", s),
            rules: Some(rbac::node_agent_rules_on(platform)),
            ..Default::default()
        }),
        ManagedObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(names::NODE_AGENT, None, "node-agent", s),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: names::NODE_AGENT.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: names::NODE_AGENT.into(),
                namespace: Some(ns.into()),
                ..Default::default()
            }]),
        }),
    ];
    if platform == Platform::OpenShift {
        objects.push(ManagedObject::SecurityContextConstraints(agent_scc(
            &daemonset, s,
        )));
    }
    objects.push(ManagedObject::DaemonSet(daemonset));
    objects.push(ManagedObject::Service(webhook_service(s)));
    objects.push(ManagedObject::ValidatingWebhookConfiguration(
        validating_webhooks(s, ca_bundle),
    ));
    objects.push(ManagedObject::MutatingWebhookConfiguration(
        mutating_webhooks(s, ca_bundle),
    ));
    Rendered {
        objects,
        bootstrap: s.bootstrap.as_ref().map(|b| bootstrap_objects(s, b)),
    }
}

/// A duration as the agent's `--vlan-check-timeout` parser (`node/src/agent/config.rs`,
/// `parse_duration`) takes it: `0`, `<n>s` for whole seconds, `<n>ms` otherwise. Settings hold
/// whole milliseconds, so nothing is lost or rounded.
pub fn agent_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".to_string()
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The flags of the node agent's main container (its command-line contract, see docs/operations.md).
///
/// Every flag is one `--name=value` argument. The VLAN check flags appear only when the
/// HybridnetCluster sets them, so an unset field keeps the agent's own default:
/// - `--vlan-check-timeout=<d>`: [`agent_duration`], `0` to `30s` (`0` disables the checks);
/// - `--enable-vlan-arp-enhancement=true|false` and `--check-pod-connectivity-from-host=true|false`:
///   the agent declares both with `ArgAction::Set`, so they take an explicit value (a bare flag is
///   refused there).
pub fn node_agent_args(s: &Settings) -> Vec<String> {
    let mut args = vec![
        "agent".to_string(),
        format!("--health-port={}", s.health_port),
        format!("--metrics-port={}", s.metrics_port),
        format!("--vxlan-udp-port={}", s.vxlan_udp_port),
        format!("--socket-dir={}", names::AGENT_SOCKET_DIR),
        format!("--proc-sys-net={}", names::PROC_SYS_NET_IN_CONTAINER),
    ];
    let lists = [
        ("--prefer-vlan-interfaces", &s.prefer_vlan_interfaces),
        ("--prefer-vxlan-interfaces", &s.prefer_vxlan_interfaces),
        ("--prefer-bgp-interfaces", &s.prefer_bgp_interfaces),
    ];
    for (flag, list) in lists {
        if !list.is_empty() {
            args.push(format!("{flag}={}", list.join(",")));
        }
    }
    if let Some(t) = s.vlan_check_timeout {
        args.push(format!("--vlan-check-timeout={}", agent_duration(t)));
    }
    let switches = [
        (
            "--enable-vlan-arp-enhancement",
            s.enable_vlan_arp_enhancement,
        ),
        (
            "--check-pod-connectivity-from-host",
            s.check_pod_connectivity_from_host,
        ),
        ("--update-ipinstance-status", s.update_ipinstance_status),
        ("--remove-upstream-leftovers", s.remove_upstream_leftovers),
        ("--remove-felix-leftovers", s.remove_felix_leftovers),
    ];
    for (flag, value) in switches {
        if let Some(on) = value {
            args.push(format!("{flag}={on}"));
        }
    }
    if !s.vtep_address_cidrs.is_empty() {
        args.push(format!(
            "--vtep-address-cidrs={}",
            s.vtep_address_cidrs.join(",")
        ));
    }
    args
}

/// The `install-cni` init container's command line.
pub fn install_cni_command(s: &Settings) -> Vec<String> {
    let mut cmd = vec![
        "hybridnet-node".to_string(),
        "install-cni".to_string(),
        "--bin-dir".to_string(),
        format!("{}{}", names::HOST_PREFIX, s.bin_dir),
        "--conf-dir".to_string(),
        format!("{}{}", names::HOST_PREFIX, s.conf_dir),
        "--conflist-name".to_string(),
        s.conflist_name.clone(),
        "--chained-plugins".to_string(),
        s.chained_plugins.join(","),
    ];
    if let Some(mtu) = s.mtu {
        cmd.push("--mtu".to_string());
        cmd.push(mtu.to_string());
    }
    cmd
}

fn host_path_volume(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
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

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Capabilities the node agent needs (documented in docs/operations.md).
pub const NODE_AGENT_CAPABILITIES: [&str; 4] = [
    // links, addresses, routes, rules, neighbours, nftables, sysctls
    "NET_ADMIN",
    // gratuitous ARP / unsolicited NA on raw sockets
    "NET_RAW",
    // setns(2) into pod network namespaces
    "SYS_ADMIN",
    // the BGP speaker listens on TCP 179
    "NET_BIND_SERVICE",
];

fn default_agent_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        ..Default::default()
    }
}

/// The SCC `hybridnet-node` for the agent DaemonSet's pods, derived from the DaemonSet itself
/// (`openshift::agent_scc`). The DaemonSet is rendered here, so it always has a template and
/// only hostPath volumes; an error would be a rendering bug, answered with the narrowest SCC
/// (nothing allowed, the pods refused and the rollout reported) rather than a wider one.
pub fn agent_scc(ds: &DaemonSet, s: &Settings) -> SecurityContextConstraints {
    let mut scc = openshift::agent_scc(ds, names::NODE_AGENT).unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering the node agent's SCC");
        SecurityContextConstraints {
            api_version: format!("{}/{}", openshift::SECURITY_GROUP, openshift::SCC_VERSION),
            kind: openshift::SCC_KIND.into(),
            volumes: Some(vec!["none".into()]),
            ..Default::default()
        }
    });
    scc.metadata = meta(names::NODE_AGENT, None, "node-agent", s);
    scc
}

/// The node agent DaemonSet `hybridnet-node`.
pub fn node_agent_daemonset(s: &Settings) -> DaemonSet {
    let selector = names::selector_labels(names::NODE_AGENT);
    let mut pod_labels = names::managed_labels("node-agent", &s.version);
    pod_labels.extend(selector.clone());
    // The agent pods run on the host network before the webhook exists: never send them to it.
    pod_labels.insert(label::WEBHOOK_IGNORE.into(), "true".into());
    let image = s.image.clone();
    let pull = Some(s.image_pull_policy.as_str().to_string());

    let mut tolerations = vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }];
    tolerations.extend(s.extra_tolerations.iter().cloned());
    let mut node_selector = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
    node_selector.extend(s.node_selector.clone());

    let install_cni = Container {
        name: "install-cni".into(),
        image: Some(image.clone()),
        image_pull_policy: pull.clone(),
        command: Some(install_cni_command(s)),
        volume_mounts: Some(vec![
            mount(
                "cni-bin-dir",
                &format!("{}{}", names::HOST_PREFIX, s.bin_dir),
                false,
            ),
            mount(
                "cni-conf-dir",
                &format!("{}{}", names::HOST_PREFIX, s.conf_dir),
                false,
            ),
        ]),
        security_context: Some(SecurityContext {
            // Writes root-owned host directories: root, but no capability at all.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let agent = Container {
        name: names::NODE_AGENT.into(),
        image: Some(image),
        image_pull_policy: pull,
        command: Some(vec!["hybridnet-node".into()]),
        args: Some(node_agent_args(s)),
        env: Some(vec![
            env_field(env::KUBE_NODE_NAME, "spec.nodeName"),
            env_field(env::NAMESPACE, "metadata.namespace"),
            env_value(env::DEFAULT_IP_FAMILY, s.default_ip_family.as_str()),
            env_value(env::DEFAULT_NETWORK_TYPE, s.default_network_type.as_str()),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("health".into()),
                container_port: s.health_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: s.metrics_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", s.health_port, 10, 6)
        }),
        readiness_probe: Some(http_probe("/readyz", s.health_port, 5, 3)),
        resources: Some(s.resources.clone().unwrap_or_else(default_agent_resources)),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(
                    NODE_AGENT_CAPABILITIES
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                ),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("run-hybridnet", names::AGENT_SOCKET_DIR, false),
            VolumeMount {
                // The runtime bind-mounts new pod netns here after the agent started: they must
                // propagate into the container. HostToContainer is enough to see them and, unlike
                // Bidirectional, is allowed without `privileged`.
                mount_propagation: Some("HostToContainer".into()),
                ..mount("netns", names::NETNS_DIR, false)
            },
            mount("lib-modules", names::LIB_MODULES, true),
            mount("proc-sys-net", names::PROC_SYS_NET_IN_CONTAINER, false),
        ]),
        ..Default::default()
    };

    DaemonSet {
        metadata: meta(names::NODE_AGENT, Some(&s.namespace), "node-agent", s),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(s.max_unavailable.clone()),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::NODE_AGENT.into()),
                    host_network: Some(true),
                    host_pid: Some(false),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    priority_class_name: Some("system-node-critical".into()),
                    termination_grace_period_seconds: Some(
                        agent_shutdown::TERMINATION_GRACE_PERIOD_SECONDS,
                    ),
                    tolerations: Some(tolerations),
                    node_selector: Some(node_selector),
                    image_pull_secrets: (!s.image_pull_secrets.is_empty())
                        .then(|| s.image_pull_secrets.clone()),
                    init_containers: Some(vec![install_cni]),
                    containers: vec![agent],
                    volumes: Some(vec![
                        host_path_volume("cni-bin-dir", &s.bin_dir, "DirectoryOrCreate"),
                        host_path_volume("cni-conf-dir", &s.conf_dir, "DirectoryOrCreate"),
                        host_path_volume(
                            "run-hybridnet",
                            names::AGENT_SOCKET_DIR,
                            "DirectoryOrCreate",
                        ),
                        host_path_volume("netns", names::NETNS_DIR, "DirectoryOrCreate"),
                        host_path_volume("lib-modules", names::LIB_MODULES, "Directory"),
                        host_path_volume("proc-sys-net", names::PROC_SYS_NET_HOST, "Directory"),
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// The Service in front of the operator's webhook server.
pub fn webhook_service(s: &Settings) -> Service {
    Service {
        metadata: meta(names::WEBHOOK_SERVICE, Some(&s.namespace), "webhook", s),
        spec: Some(ServiceSpec {
            selector: Some(names::selector_labels(names::OPERATOR)),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(s.webhook_port)),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn client_config(s: &Settings, path: &str, ca_bundle: Option<&[u8]>) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: names::WEBHOOK_SERVICE.into(),
            namespace: s.namespace.clone(),
            path: Some(path.into()),
            port: Some(443),
        }),
        ca_bundle: ca_bundle.map(|b| ByteString(b.to_vec())),
        url: None,
    }
}

fn rules(groups: &[&str], resources: &[&str], ops: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        api_versions: Some(vec!["v1".into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        operations: Some(ops.iter().map(|s| s.to_string()).collect()),
        scope: Some(
            if groups == [""] {
                "Namespaced"
            } else {
                "Cluster"
            }
            .into(),
        ),
    }
}

/// Pods labelled `webhook.hybridnet.io/ignore: "true"` (e.g. hybridnet's own) skip the webhooks,
/// and so do pods that miss one of `spec.webhook.additionalPodMatchExpressions` (as upstream's
/// charts/hybridnet/templates/webhookconfigurations.yaml).
fn pod_object_selector(s: &Settings) -> LabelSelector {
    let mut exprs = vec![LabelSelectorRequirement {
        key: label::WEBHOOK_IGNORE.into(),
        operator: "NotIn".into(),
        values: Some(vec!["true".into(), "TRUE".into()]),
    }];
    exprs.extend(s.pod_match_expressions.iter().cloned());
    LabelSelector {
        match_expressions: Some(exprs),
        ..Default::default()
    }
}

/// Validating webhooks: Networks and Subnets fail closed, Pods use the spec's failurePolicy.
pub fn validating_webhooks(
    s: &Settings,
    ca_bundle: Option<&[u8]>,
) -> ValidatingWebhookConfiguration {
    let common = |name: &str| ValidatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        side_effects: "None".into(),
        timeout_seconds: Some(10),
        match_policy: Some("Equivalent".into()),
        client_config: client_config(s, "/validate", ca_bundle),
        ..Default::default()
    };
    ValidatingWebhookConfiguration {
        metadata: meta(names::VALIDATING_WEBHOOK_CONFIG, None, "webhook", s),
        webhooks: Some(vec![
            ValidatingWebhook {
                failure_policy: Some("Fail".into()),
                rules: Some(vec![
                    rules(
                        &["networking.alibaba.com"],
                        &["networks", "subnets"],
                        &["CREATE", "UPDATE", "DELETE"],
                    ),
                    // As upstream's charts/hybridnet/templates/webhookconfigurations.yaml.
                    rules(
                        &[hybridnet_api::multicluster::GROUP],
                        &["remoteclusters", "remotesubnets"],
                        &["CREATE", "UPDATE", "DELETE"],
                    ),
                ]),
                ..common(names::WEBHOOK_NETWORKING)
            },
            ValidatingWebhook {
                failure_policy: Some(s.pod_failure_policy.as_str().into()),
                rules: Some(vec![rules(&[""], &["pods"], &["CREATE"])]),
                object_selector: Some(pod_object_selector(s)),
                ..common(names::WEBHOOK_POD_VALIDATING)
            },
            node_scope_webhook(s, common(names::WEBHOOK_NODE_SCOPE)),
        ]),
    }
}

/// Node agents write only their own node's NodeInfo and IPInstances (`webhook::nodescope`):
/// every write the agent's ClusterRole allows on those kinds, only for the agent's ServiceAccount
/// (matchConditions, so the operator's and users' writes never wait for the webhook), failing
/// closed.
fn node_scope_webhook(s: &Settings, common: ValidatingWebhook) -> ValidatingWebhook {
    let rule = |resources: &[&str], ops: &[&str], scope: &str| RuleWithOperations {
        scope: Some(scope.into()),
        ..rules(&["networking.alibaba.com"], resources, ops)
    };
    ValidatingWebhook {
        failure_policy: Some("Fail".into()),
        rules: Some(vec![
            rule(
                &["nodeinfoes", "nodeinfoes/status"],
                &["CREATE", "UPDATE", "DELETE"],
                "Cluster",
            ),
            rule(
                &["ipinstances", "ipinstances/status"],
                &["CREATE", "UPDATE", "DELETE"],
                "Namespaced",
            ),
        ]),
        match_conditions: Some(vec![MatchCondition {
            name: "node-agent".into(),
            expression: format!(
                "request.userInfo.username == '{}'",
                crate::webhook::nodescope::agent_username(&s.namespace)
            ),
        }]),
        ..common
    }
}

/// The mutating Pod webhook (spec's failurePolicy, never reinvoked).
pub fn mutating_webhooks(s: &Settings, ca_bundle: Option<&[u8]>) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(names::MUTATING_WEBHOOK_CONFIG, None, "webhook", s),
        webhooks: Some(vec![MutatingWebhook {
            name: names::WEBHOOK_POD_MUTATING.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(10),
            match_policy: Some("Equivalent".into()),
            failure_policy: Some(s.pod_failure_policy.as_str().into()),
            reinvocation_policy: Some("Never".into()),
            rules: Some(vec![rules(&[""], &["pods"], &["CREATE"])]),
            object_selector: Some(pod_object_selector(s)),
            client_config: client_config(s, "/mutate", ca_bundle),
            ..Default::default()
        }]),
    }
}

/// The bootstrap overlay Network and its Subnet (same name). They carry the managed-by label for
/// information only: the operator never updates or deletes them.
pub fn bootstrap_objects(s: &Settings, b: &super::settings::Bootstrap) -> (Network, Subnet) {
    let mut labels = names::managed_labels("bootstrap", &s.version);
    labels.remove(names::LABEL_VERSION);
    // Not part of the clean-up selector: these are user data from the moment they exist.
    labels.remove(names::LABEL_PART_OF);
    let m = ObjectMeta {
        name: Some(b.name.clone()),
        labels: Some(labels),
        ..Default::default()
    };
    let network = Network {
        metadata: m.clone(),
        spec: NetworkSpec {
            net_id: Some(b.vxlan_id),
            network_type: Some(NetworkType::Overlay),
            mode: Some(hybridnet_api::v1::NetworkMode::Vxlan),
            ..Default::default()
        },
        status: None,
    };
    let subnet = Subnet {
        metadata: m,
        spec: SubnetSpec {
            network: b.name.clone(),
            range: b.range.clone(),
            config: Some(hybridnet_api::v1::SubnetConfig {
                auto_nat_outgoing: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    (network, subnet)
}

/// Used by tests and bundlegen: the kind/name/namespace of each object.
pub fn object_key(o: &ManagedObject) -> (String, String, Option<String>) {
    (
        o.kind().to_string(),
        o.name().to_string(),
        o.namespace().map(str::to_string),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::{
        BootstrapNetwork, CniSpec, FailurePolicy, HybridnetClusterSpec, NodeAgentSpec,
        NodeAgentUpdateStrategy, WebhookSpec,
    };
    use proptest::prelude::*;

    fn settings(spec: &HybridnetClusterSpec) -> Settings {
        Settings::from_spec(spec, "0.1.0", "hybridnet-system").unwrap()
    }

    fn defaults() -> Rendered {
        render(&settings(&HybridnetClusterSpec::default()), Some(b"CA"))
    }

    fn find<'a>(r: &'a Rendered, kind: &str, name: &str) -> &'a ManagedObject {
        r.objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
    }

    fn ds(r: &Rendered) -> DaemonSet {
        match find(r, "DaemonSet", "hybridnet-node") {
            ManagedObject::DaemonSet(d) => d.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn renders_exactly_the_expected_objects_in_order() {
        let keys: Vec<_> = defaults().objects.iter().map(object_key).collect();
        let ns = Some("hybridnet-system".to_string());
        assert_eq!(
            keys,
            vec![
                ("ServiceAccount".into(), "hybridnet-node".into(), ns.clone()),
                ("ClusterRole".into(), "hybridnet-node".into(), None),
                ("ClusterRoleBinding".into(), "hybridnet-node".into(), None),
                ("DaemonSet".into(), "hybridnet-node".into(), ns.clone()),
                ("Service".into(), "hybridnet-webhook".into(), ns),
                (
                    "ValidatingWebhookConfiguration".into(),
                    "hybridnet-validating-webhook".into(),
                    None
                ),
                (
                    "MutatingWebhookConfiguration".into(),
                    "hybridnet-mutating-webhook".into(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn every_object_carries_the_managed_labels_and_its_kind() {
        for o in defaults().objects {
            let labels = o.meta().labels.clone().unwrap();
            assert_eq!(
                labels["app.kubernetes.io/managed-by"],
                "hybridnet-operator",
                "{}",
                o.kind()
            );
            assert_eq!(labels["app.kubernetes.io/part-of"], "hybridnet");
            assert_eq!(labels["app.kubernetes.io/version"], "0.1.0");
            let v = o.to_value().unwrap();
            assert_eq!(v["kind"], o.kind());
            let d = o.to_dynamic().unwrap();
            assert_eq!(d.metadata.name.as_deref(), Some(o.name()));
            let ar = o.api_resource();
            assert_eq!(ar.kind, o.kind());
        }
    }

    #[test]
    fn every_rendered_object_is_named_in_the_operators_rbac() {
        // The operator may apply and delete what it renders, and only by name.
        let mut rules = rbac::operator_cluster_rules();
        let namespaced = rbac::operator_namespace_rules();
        for o in &defaults().objects {
            let ar = o.api_resource();
            let scope = if o.namespace().is_some() {
                &namespaced
            } else {
                &rules
            };
            for v in ["get", "patch", "delete", "watch"] {
                assert!(
                    rbac::allows_name(scope, &ar.group, &ar.plural, v, o.name()),
                    "{v} {} {}",
                    ar.kind,
                    o.name()
                );
                assert!(
                    !rbac::allows(scope, &ar.group, &ar.plural, v),
                    "{v} {}",
                    ar.kind
                );
            }
        }
        rules.extend(namespaced);
        assert!(rbac::allows_name(
            &rules,
            "",
            "secrets",
            "patch",
            names::WEBHOOK_SECRET
        ));
    }

    #[test]
    fn node_agent_rbac_is_exact() {
        let r = defaults();
        let ManagedObject::ClusterRole(role) = find(&r, "ClusterRole", "hybridnet-node") else {
            unreachable!()
        };
        let rules = role.rules.clone().unwrap();
        let allowed = |g: &str, res: &str, v: &str| rbac::allows(&rules, g, res, v);
        for res in ["networks", "subnets", "ipinstances", "nodeinfoes"] {
            for v in ["get", "list", "watch"] {
                assert!(allowed("networking.alibaba.com", res, v), "{v} {res}");
            }
        }
        assert!(allowed("", "nodes", "watch"));
        assert!(allowed("", "pods", "get"));
        // NetworkPolicy enforcement: pods, namespaces and policies, read only
        for (g, res) in [
            ("", "pods"),
            ("", "namespaces"),
            ("networking.k8s.io", "networkpolicies"),
        ] {
            for v in ["list", "watch"] {
                assert!(allowed(g, res, v), "{v} {res}");
            }
        }
        assert!(!allowed("", "pods", "patch"));
        assert!(!allowed("networking.k8s.io", "networkpolicies", "create"));
        assert!(allowed("events.k8s.io", "events", "create"));
        assert!(allowed(
            "networking.alibaba.com",
            "ipinstances/status",
            "patch"
        ));
        assert!(!allowed("networking.alibaba.com", "ipinstances", "patch"));
        assert!(allowed("networking.alibaba.com", "nodeinfoes", "create"));
        assert!(allowed("networking.alibaba.com", "nodeinfoes", "patch"));
        assert!(!allowed("networking.alibaba.com", "nodeinfoes", "delete"));
        assert!(!allowed("", "secrets", "get"));
        let ManagedObject::ClusterRoleBinding(b) = find(&r, "ClusterRoleBinding", "hybridnet-node")
        else {
            unreachable!()
        };
        assert_eq!(b.role_ref.name, "hybridnet-node");
        let subj = &b.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (
                subj.kind.as_str(),
                subj.name.as_str(),
                subj.namespace.as_deref()
            ),
            ("ServiceAccount", "hybridnet-node", Some("hybridnet-system"))
        );
    }

    #[test]
    fn daemonset_runs_on_every_node_with_host_network_and_only_needed_capabilities() {
        let d = ds(&defaults());
        let spec = d.spec;
        assert_eq!(
            spec.selector.match_labels.clone().unwrap(),
            names::selector_labels("hybridnet-node")
        );
        let strategy = spec.update_strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let ru = strategy.rolling_update.unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
        let tpl_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in names::selector_labels("hybridnet-node") {
            assert_eq!(tpl_labels[&k], v);
        }
        assert_eq!(tpl_labels["webhook.hybridnet.io/ignore"], "true");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.host_pid, Some(false));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("hybridnet-node"));
        // The kubelet's SIGKILL comes after the agent's drain of in-flight CNI requests
        // (`--shutdown-grace-seconds`, default DRAIN_GRACE_SECONDS) with room to exit.
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        assert!(
            agent_shutdown::DRAIN_GRACE_SECONDS as i64 + 5
                <= pod.termination_grace_period_seconds.unwrap_or(0)
        );
        let tol = pod.tolerations.unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tol[0].key, None);
        assert_eq!(tol[0].effect, None);
        assert_eq!(pod.image_pull_secrets, None);

        let c = &pod.containers[0];
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(
            c.image.as_deref(),
            Some("docker.io/hybridnet/hybridnet:v0.1.0")
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            caps.add.unwrap(),
            vec!["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "NET_BIND_SERVICE"]
        );
        assert_eq!(
            c.args.clone().unwrap(),
            vec![
                "agent",
                "--health-port=11021",
                "--metrics-port=9101",
                "--vxlan-udp-port=8472",
                "--socket-dir=/run/hybridnet",
                "--proc-sys-net=/host/proc/sys/net"
            ]
        );
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(
            env["KUBE_NODE_NAME"]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        assert_eq!(env["DEFAULT_IP_FAMILY"].value.as_deref(), Some("IPv4"));
        assert_eq!(
            env["DEFAULT_NETWORK_TYPE"].value.as_deref(),
            Some("Overlay")
        );
        let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(
            (live.path.as_deref(), &live.port),
            (Some("/healthz"), &IntOrString::Int(11021))
        );
        let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(
            (ready.path.as_deref(), &ready.port),
            (Some("/readyz"), &IntOrString::Int(11021))
        );

        let mounts: BTreeMap<_, _> = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| (m.mount_path.clone(), m))
            .collect();
        assert_eq!(
            mounts["/var/run/netns"].mount_propagation.as_deref(),
            Some("HostToContainer")
        );
        assert_eq!(mounts["/lib/modules"].read_only, Some(true));
        assert!(mounts.contains_key("/run/hybridnet"));
        assert!(mounts.contains_key("/host/proc/sys/net"));
        let volumes: BTreeMap<_, _> = pod
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| (v.name.clone(), v.host_path.unwrap().path))
            .collect();
        assert_eq!(volumes["cni-bin-dir"], "/opt/cni/bin");
        assert_eq!(volumes["cni-conf-dir"], "/etc/cni/net.d");
        assert_eq!(volumes["run-hybridnet"], "/run/hybridnet");
        assert_eq!(volumes["netns"], "/var/run/netns");
        assert_eq!(volumes["lib-modules"], "/lib/modules");
        assert_eq!(volumes["proc-sys-net"], "/proc/sys/net");
        // Every mount refers to a declared volume.
        let inits = pod.init_containers.unwrap();
        for m in c
            .volume_mounts
            .iter()
            .flatten()
            .chain(inits[0].volume_mounts.iter().flatten())
        {
            assert!(volumes.contains_key(&m.name), "{}", m.name);
        }

        assert_eq!(inits.len(), 1);
        assert_eq!(inits[0].name, "install-cni");
        assert_eq!(
            inits[0].command.clone().unwrap(),
            vec![
                "hybridnet-node",
                "install-cni",
                "--bin-dir",
                "/host/opt/cni/bin",
                "--conf-dir",
                "/host/etc/cni/net.d",
                "--conflist-name",
                "06-hybridnet.conflist",
                "--chained-plugins",
                "bandwidth,portmap"
            ]
        );
        assert_eq!(inits[0].image, c.image);
    }

    #[test]
    fn daemonset_follows_the_spec() {
        let spec = HybridnetClusterSpec {
            version: Some("0.3.1".into()),
            registry: Some("quay.io/acme".into()),
            image_pull_policy: Some(hybridnet_api::operator::ImagePullPolicy::Always),
            image_pull_secrets: Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                name: "pull".into(),
            }]),
            node_agent: Some(NodeAgentSpec {
                update_strategy: Some(NodeAgentUpdateStrategy {
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
                prefer_vxlan_interfaces: Some(vec!["eth1".into(), "bond0".into()]),
                prefer_vlan_interfaces: Some(vec!["eth2".into()]),
                vxlan_udp_port: Some(4789),
                health_port: Some(12000),
                node_selector: Some(BTreeMap::from([("net".into(), "yes".into())])),
                tolerations: Some(vec![Toleration {
                    key: Some("special".into()),
                    operator: Some("Equal".into()),
                    value: Some("x".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            cni: Some(CniSpec {
                bin_dir: Some("/usr/libexec/cni".into()),
                conf_dir: Some("/etc/kubernetes/cni/net.d".into()),
                conflist_name: Some("00-hybridnet.conflist".into()),
                chained_plugins: Some(vec!["tuning".into()]),
                mtu: Some(1450),
            }),
            defaults: Some(hybridnet_api::operator::ClusterDefaults {
                ip_family: Some(hybridnet_api::operator::IpFamily::DualStack),
                network_type: Some(NetworkType::Underlay),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = ds(&render(&settings(&spec), None));
        assert_eq!(
            d.metadata.labels.unwrap()["app.kubernetes.io/version"],
            "0.3.1"
        );
        let ru = d.spec.update_strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 2);
        assert_eq!(pod.node_selector.as_ref().unwrap()["net"], "yes");
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["kubernetes.io/os"],
            "linux"
        );
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "pull");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("quay.io/acme/hybridnet:v0.3.1"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let args = c.args.clone().unwrap();
        assert!(args.contains(&"--vxlan-udp-port=4789".to_string()));
        assert!(args.contains(&"--health-port=12000".to_string()));
        assert!(args.contains(&"--prefer-vxlan-interfaces=eth1,bond0".to_string()));
        assert!(args.contains(&"--prefer-vlan-interfaces=eth2".to_string()));
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--prefer-bgp-interfaces"))
        );
        let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(live.port, IntOrString::Int(12000));
        let env = c.env.clone().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "DEFAULT_IP_FAMILY" && e.value.as_deref() == Some("DualStack"))
        );
        assert!(env.iter().any(|e| e.name == "DEFAULT_NETWORK_TYPE" && e.value.as_deref() == Some("Underlay")));
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let cmd = init.command.clone().unwrap();
        assert_eq!(
            cmd[2..],
            [
                "--bin-dir",
                "/host/usr/libexec/cni",
                "--conf-dir",
                "/host/etc/kubernetes/cni/net.d",
                "--conflist-name",
                "00-hybridnet.conflist",
                "--chained-plugins",
                "tuning",
                "--mtu",
                "1450"
            ]
        );
        let vols = pod.volumes.unwrap();
        assert!(
            vols.iter()
                .any(|v| v.host_path.as_ref().unwrap().path == "/usr/libexec/cni")
        );
    }

    #[test]
    fn webhooks_route_to_the_service_with_the_right_policies() {
        let spec = HybridnetClusterSpec {
            webhook: Some(WebhookSpec {
                failure_policy: Some(FailurePolicy::Fail),
                port: Some(9443),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = render(&settings(&spec), Some(b"PEM"));
        let ManagedObject::Service(svc) = find(&r, "Service", "hybridnet-webhook") else {
            unreachable!()
        };
        let sspec = svc.spec.clone().unwrap();
        assert_eq!(
            sspec.selector.unwrap(),
            names::selector_labels("hybridnet-operator")
        );
        let port = &sspec.ports.unwrap()[0];
        assert_eq!(
            (port.port, port.target_port.clone()),
            (443, Some(IntOrString::Int(9443)))
        );

        let ManagedObject::ValidatingWebhookConfiguration(v) = find(
            &r,
            "ValidatingWebhookConfiguration",
            "hybridnet-validating-webhook",
        ) else {
            unreachable!()
        };
        let hooks = v.webhooks.clone().unwrap();
        assert_eq!(hooks.len(), 3);
        let scope = &hooks[2];
        assert_eq!(scope.name, names::WEBHOOK_NODE_SCOPE);
        assert_eq!(scope.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(
            scope.match_conditions.clone().unwrap()[0].expression,
            "request.userInfo.username == 'system:serviceaccount:hybridnet-system:hybridnet-node'"
        );
        let scoped: Vec<_> = scope
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.clone().unwrap())
            .collect();
        // Every write the agent's ClusterRole grants goes through the webhook, except Events:
        // reports (on NetworkPolicies it cannot program), not state, and not tied to one node's
        // objects, as Kubernetes leaves a kubelet's events unrestricted by NodeRestriction.
        for rule in rbac::node_agent_rules() {
            let writes = rule
                .verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch")
                && rule.resources.iter().flatten().all(|r| r != "events");
            for res in rule.resources.iter().flatten().filter(|_| writes) {
                assert!(scoped.contains(res), "{res}");
            }
        }
        let net = &hooks[0];
        assert_eq!(net.name, "hybridnet-v1.validating.hybridnet");
        assert_eq!(net.failure_policy.as_deref(), Some("Fail"));
        let rule = &net.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.api_groups.clone().unwrap(),
            vec!["networking.alibaba.com"]
        );
        assert_eq!(rule.resources.clone().unwrap(), vec!["networks", "subnets"]);
        assert_eq!(
            rule.operations.clone().unwrap(),
            vec!["CREATE", "UPDATE", "DELETE"]
        );
        assert_eq!(net.object_selector, None);
        let pod = &hooks[1];
        assert_eq!(pod.name, "core-v1.validating.hybridnet");
        assert_eq!(pod.failure_policy.as_deref(), Some("Fail"));
        let m = MutatingWebhookConfiguration::clone(
            match find(
                &r,
                "MutatingWebhookConfiguration",
                "hybridnet-mutating-webhook",
            ) {
                ManagedObject::MutatingWebhookConfiguration(m) => m,
                _ => unreachable!(),
            },
        );
        let mh = &m.webhooks.unwrap()[0];
        assert_eq!(mh.name, "core-v1.mutating.hybridnet");
        assert_eq!(mh.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(mh.reinvocation_policy.as_deref(), Some("Never"));
        for (cc, sel, path, side, versions, timeout) in [
            (
                &pod.client_config,
                &pod.object_selector,
                "/validate",
                &pod.side_effects,
                &pod.admission_review_versions,
                pod.timeout_seconds,
            ),
            (
                &mh.client_config,
                &mh.object_selector,
                "/mutate",
                &mh.side_effects,
                &mh.admission_review_versions,
                mh.timeout_seconds,
            ),
        ] {
            let svc = cc.service.as_ref().unwrap();
            assert_eq!(
                (
                    svc.name.as_str(),
                    svc.namespace.as_str(),
                    svc.path.as_deref(),
                    svc.port
                ),
                (
                    "hybridnet-webhook",
                    "hybridnet-system",
                    Some(path),
                    Some(443)
                )
            );
            assert_eq!(cc.ca_bundle.as_ref().unwrap().0, b"PEM");
            let expr = &sel.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
            assert_eq!(expr.key, "webhook.hybridnet.io/ignore");
            assert_eq!(expr.operator, "NotIn");
            assert_eq!(expr.values.clone().unwrap(), vec!["true", "TRUE"]);
            assert_eq!(side, "None");
            assert_eq!(versions, &vec!["v1".to_string()]);
            assert_eq!(timeout, Some(10));
        }
        // Default pod failurePolicy is Ignore; networking stays Fail.
        let d = defaults();
        let ManagedObject::ValidatingWebhookConfiguration(v) = find(
            &d,
            "ValidatingWebhookConfiguration",
            "hybridnet-validating-webhook",
        ) else {
            unreachable!()
        };
        let hooks = v.webhooks.clone().unwrap();
        assert_eq!(hooks[0].failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hooks[1].failure_policy.as_deref(), Some("Ignore"));
    }

    #[test]
    fn bootstrap_network_and_subnet_only_when_asked() {
        assert!(defaults().bootstrap.is_none());
        let spec = HybridnetClusterSpec {
            bootstrap: Some(BootstrapNetwork {
                name: Some("init".into()),
                vxlan_id: Some(7),
                cidr: "100.64.0.0/16".into(),
                ip_version: None,
            }),
            ..Default::default()
        };
        let (n, s) = render(&settings(&spec), None).bootstrap.unwrap();
        assert_eq!(n.metadata.name.as_deref(), Some("init"));
        assert_eq!(n.spec.network_type, Some(NetworkType::Overlay));
        assert_eq!(n.spec.net_id, Some(7));
        assert_eq!(s.spec.network, "init");
        assert_eq!(s.spec.range.cidr, "100.64.0.0/16");
        assert!(s.spec.auto_nat_outgoing());
        // Not selected by the clean-up selector (no part-of label).
        let labels = s.metadata.labels.unwrap();
        assert!(!labels.contains_key("app.kubernetes.io/part-of"));
    }

    fn agent_args_of(a: NodeAgentSpec) -> Vec<String> {
        let spec = HybridnetClusterSpec {
            node_agent: Some(a),
            ..Default::default()
        };
        let d = ds(&render(&settings(&spec), None));
        d.spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    }

    #[test]
    fn vlan_check_flags_reach_the_agent_only_when_set() {
        let base = agent_args_of(NodeAgentSpec::default());
        for flag in [
            "--vlan-check-timeout",
            "--enable-vlan-arp-enhancement",
            "--check-pod-connectivity-from-host",
        ] {
            assert!(
                !base.iter().any(|a| a.starts_with(flag)),
                "{flag}: {base:?}"
            );
        }
        let args = agent_args_of(NodeAgentSpec {
            vlan_check_timeout: Some("1.5s".into()),
            enable_vlan_arp_enhancement: Some(false),
            check_pod_connectivity_from_host: Some(true),
            ..Default::default()
        });
        assert_eq!(args[..base.len()], base[..]);
        assert_eq!(
            args[base.len()..],
            [
                "--vlan-check-timeout=1500ms",
                "--enable-vlan-arp-enhancement=false",
                "--check-pod-connectivity-from-host=true"
            ]
        );
        for (value, arg) in [
            ("0", "--vlan-check-timeout=0"),
            ("0s", "--vlan-check-timeout=0"),
            ("30s", "--vlan-check-timeout=30s"),
            ("0.5m", "--vlan-check-timeout=30s"),
            ("1s250ms", "--vlan-check-timeout=1250ms"),
            ("3000ms", "--vlan-check-timeout=3s"),
        ] {
            let args = agent_args_of(NodeAgentSpec {
                vlan_check_timeout: Some(value.into()),
                ..Default::default()
            });
            assert_eq!(args[base.len()..], [arg], "{value:?}");
        }
        let args = agent_args_of(NodeAgentSpec {
            enable_vlan_arp_enhancement: Some(true),
            check_pod_connectivity_from_host: Some(false),
            ..Default::default()
        });
        assert_eq!(
            args[base.len()..],
            [
                "--enable-vlan-arp-enhancement=true",
                "--check-pod-connectivity-from-host=false"
            ]
        );
    }

    #[test]
    fn upstream_helm_settings_reach_the_agent_only_when_set() {
        let base = agent_args_of(NodeAgentSpec::default());
        for flag in [
            "--vtep-address-cidrs",
            "--update-ipinstance-status",
            "--remove-upstream-leftovers",
            "--remove-felix-leftovers",
        ] {
            assert!(
                !base.iter().any(|a| a.starts_with(flag)),
                "{flag}: {base:?}"
            );
        }
        let args = agent_args_of(NodeAgentSpec {
            vtep_address_cidrs: Some(vec!["192.168.0.0/16".into(), "fd00::/8".into()]),
            update_ip_instance_status: Some(false),
            remove_upstream_leftovers: Some(false),
            remove_felix_leftovers: Some(true),
            ..Default::default()
        });
        assert_eq!(args[..base.len()], base[..]);
        assert_eq!(
            args[base.len()..],
            [
                "--update-ipinstance-status=false",
                "--remove-upstream-leftovers=false",
                "--remove-felix-leftovers=true",
                "--vtep-address-cidrs=192.168.0.0/16,fd00::/8",
            ]
        );
    }

    fn pod_selectors(spec: &HybridnetClusterSpec) -> Vec<Vec<LabelSelectorRequirement>> {
        let r = render(&settings(spec), None);
        let ManagedObject::ValidatingWebhookConfiguration(v) = find(
            &r,
            "ValidatingWebhookConfiguration",
            "hybridnet-validating-webhook",
        ) else {
            unreachable!()
        };
        let ManagedObject::MutatingWebhookConfiguration(m) = find(
            &r,
            "MutatingWebhookConfiguration",
            "hybridnet-mutating-webhook",
        ) else {
            unreachable!()
        };
        let vh = v.webhooks.clone().unwrap();
        let mh = m.webhooks.clone().unwrap();
        // Only the Pod webhooks carry an object selector.
        assert_eq!(vh[0].object_selector, None);
        assert_eq!(vh[2].object_selector, None);
        [&vh[1].object_selector, &mh[0].object_selector]
            .into_iter()
            .map(|s| s.clone().unwrap().match_expressions.unwrap())
            .collect()
    }

    #[test]
    fn pod_webhooks_take_upstreams_additional_match_expressions() {
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let ignore = req("webhook.hybridnet.io/ignore", "NotIn", &["true", "TRUE"]);
        // Absent: upstream's chart default, kube-proxy's pods are skipped.
        for exprs in pod_selectors(&HybridnetClusterSpec::default()) {
            assert_eq!(
                exprs,
                vec![ignore.clone(), req("app", "NotIn", &["kube-proxy"])]
            );
        }
        let with = |extra: Vec<LabelSelectorRequirement>| HybridnetClusterSpec {
            webhook: Some(WebhookSpec {
                additional_pod_match_expressions: Some(extra),
                ..Default::default()
            }),
            ..Default::default()
        };
        // `[]`: only the ignore label.
        for exprs in pod_selectors(&with(vec![])) {
            assert_eq!(exprs, vec![ignore.clone()]);
        }
        let extra = vec![
            req("k8s-app", "NotIn", &["kube-proxy", "node-local-dns"]),
            req("example.com/legacy-cni", "NotIn", &["true"]),
        ];
        for exprs in pod_selectors(&with(extra.clone())) {
            assert_eq!(exprs[0], ignore);
            assert_eq!(exprs[1..], extra[..]);
        }
    }

    fn scc_of(r: &Rendered) -> SecurityContextConstraints {
        match find(r, "SecurityContextConstraints", names::NODE_AGENT) {
            ManagedObject::SecurityContextConstraints(o) => o.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn nothing_scc_related_is_rendered_on_plain_kubernetes() {
        let r = defaults();
        for o in &r.objects {
            let text = o.to_value().unwrap().to_string();
            assert!(
                !text.contains("security.openshift.io") && !text.contains("SecurityContext"),
                "{} {}: {text}",
                o.kind(),
                o.name()
            );
        }
        assert_eq!(r.objects.len(), 7);
    }

    #[test]
    fn on_openshift_the_agent_gets_an_scc_derived_from_its_daemonset() {
        let s = settings(&HybridnetClusterSpec::default());
        let r = render_on(&s, Some(b"CA"), Platform::OpenShift);
        let kinds: Vec<_> = r.objects.iter().map(|o| o.kind()).collect();
        let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
        // Admission needs the SCC and the `use` grant before the first pod is created.
        assert!(
            at("SecurityContextConstraints") < at("DaemonSet"),
            "{kinds:?}"
        );
        assert!(at("ClusterRole") < at("DaemonSet"), "{kinds:?}");
        let scc = scc_of(&r);
        let d = ds(&r);
        // Exactly what the DaemonSet needs.
        let mut caps: Vec<String> = NODE_AGENT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect();
        caps.sort();
        assert_eq!(scc.allowed_capabilities, Some(caps));
        assert_eq!(scc.default_add_capabilities, Some(vec![]));
        assert_eq!(
            scc.required_drop_capabilities,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            scc.volumes,
            Some(vec!["hostPath".to_string(), "projected".to_string()])
        );
        assert!(scc.allow_host_dir_volume_plugin && scc.allow_host_network && scc.allow_host_ports);
        assert!(!scc.allow_privileged_container && !scc.allow_host_pid && !scc.allow_host_ipc);
        assert_eq!(scc.allow_privilege_escalation, Some(false));
        assert!(scc.read_only_root_filesystem);
        assert_eq!(
            (scc.run_as_user.type_.as_str(), scc.run_as_user.uid),
            ("MustRunAs", Some(0))
        );
        assert!(scc.users.is_empty() && scc.groups.is_empty());
        assert_eq!(scc.metadata.name.as_deref(), Some(names::NODE_AGENT));
        assert_eq!(scc.metadata.namespace, None);
        assert!(
            openshift::refusals(&scc, &d).is_empty(),
            "{:?}",
            openshift::refusals(&scc, &d)
        );
        // And nothing more: taking away any one allowance refuses the pods.
        let mut narrower: Vec<(&str, SecurityContextConstraints)> = Vec::new();
        for (i, cap) in NODE_AGENT_CAPABILITIES.iter().enumerate() {
            let mut n = scc.clone();
            n.allowed_capabilities
                .as_mut()
                .unwrap()
                .retain(|c| c != cap);
            narrower.push((NODE_AGENT_CAPABILITIES[i], n));
        }
        let mut n = scc.clone();
        n.allow_host_network = false;
        narrower.push(("hostNetwork", n));
        let mut n = scc.clone();
        n.allow_host_ports = false;
        narrower.push(("hostPorts", n));
        let mut n = scc.clone();
        n.allow_host_dir_volume_plugin = false;
        narrower.push(("hostDir", n));
        let mut n = scc.clone();
        n.volumes = Some(vec!["projected".into()]);
        narrower.push(("volumes", n));
        let mut n = scc.clone();
        n.run_as_user.uid = Some(1000);
        narrower.push(("user", n));
        for (what, n) in narrower {
            assert!(!openshift::refusals(&n, &d).is_empty(), "{what}");
        }
        // The agent may use it, by name.
        let ManagedObject::ClusterRole(role) = find(&r, "ClusterRole", names::NODE_AGENT) else {
            unreachable!()
        };
        let rules = role.rules.clone().unwrap();
        assert!(rbac::allows_name(
            &rules,
            openshift::SECURITY_GROUP,
            openshift::SCC_RESOURCE,
            "use",
            names::NODE_AGENT
        ));
        assert!(!rbac::allows(
            &rules,
            openshift::SECURITY_GROUP,
            openshift::SCC_RESOURCE,
            "use"
        ));
    }

    #[test]
    fn the_scc_follows_the_daemonset() {
        // One rule, one place: a capability added to the DaemonSet is in the SCC, a privileged
        // container makes it allow privileged containers, a second user makes it RunAsAny.
        let s = settings(&HybridnetClusterSpec::default());
        let mut d = node_agent_daemonset(&s);
        let pod = d.spec.template.spec.as_mut().unwrap();
        let sc = pod.containers[0].security_context.as_mut().unwrap();
        sc.capabilities
            .as_mut()
            .unwrap()
            .add
            .as_mut()
            .unwrap()
            .push("SYS_PTRACE".into());
        sc.privileged = Some(true);
        sc.run_as_user = Some(1);
        let scc = agent_scc(&d, &s);
        assert!(
            scc.allowed_capabilities
                .unwrap()
                .contains(&"SYS_PTRACE".to_string())
        );
        assert!(scc.allow_privileged_container);
        assert_eq!(scc.run_as_user.type_, "RunAsAny");
        // A volume kind the SCC cannot name gives the narrowest SCC, never a wider one.
        let pod = d.spec.template.spec.as_mut().unwrap();
        pod.volumes.as_mut().unwrap().push(Volume {
            name: "nfs".into(),
            nfs: Some(Default::default()),
            ..Default::default()
        });
        let scc = agent_scc(&d, &s);
        assert_eq!(scc.volumes, Some(vec!["none".to_string()]));
        assert!(!scc.allow_host_network && scc.allowed_capabilities.is_none());
    }

    #[test]
    fn the_scc_serializes_every_field_openshifts_crd_requires() {
        // openshift/api security/v1/zz_generated.crd-manifests/0000_03_config-operator_01_securitycontextconstraints.crd.yaml
        let required = [
            "allowHostDirVolumePlugin",
            "allowHostIPC",
            "allowHostNetwork",
            "allowHostPID",
            "allowHostPorts",
            "allowPrivilegedContainer",
            "allowedCapabilities",
            "defaultAddCapabilities",
            "priority",
            "readOnlyRootFilesystem",
            "requiredDropCapabilities",
            "volumes",
        ];
        let s = settings(&HybridnetClusterSpec::default());
        let r = render_on(&s, None, Platform::OpenShift);
        let v = find(&r, "SecurityContextConstraints", names::NODE_AGENT)
            .to_value()
            .unwrap();
        assert_eq!(v["priority"], 0);
        for f in required {
            assert!(v.get(f).is_some_and(|x| !x.is_null()), "{f} missing: {v}");
        }
        assert_eq!(v["apiVersion"], "security.openshift.io/v1");
        assert_eq!(v["kind"], "SecurityContextConstraints");
        for f in [
            "seLinuxContext",
            "runAsUser",
            "fsGroup",
            "supplementalGroups",
        ] {
            assert!(v[f]["type"].is_string(), "{f}: {v}");
        }
        assert!(v.get("spec").is_none());
        let back: SecurityContextConstraints = serde_json::from_value(v).unwrap();
        assert_eq!(back, scc_of(&r));
    }

    #[test]
    fn agent_durations_are_exact_strings() {
        use std::time::Duration;
        for (d, want) in [
            (Duration::ZERO, "0"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_secs(30), "30s"),
        ] {
            assert_eq!(agent_duration(d), want, "{d:?}");
        }
    }

    fn arb_spec() -> impl Strategy<Value = HybridnetClusterSpec> {
        (
            proptest::option::of("[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}"),
            proptest::option::of(1i32..=100),
            proptest::option::of(1i32..=65535),
            proptest::option::of(proptest::collection::vec("[a-z]{1,5}[0-9]{0,2}", 0..3)),
            proptest::option::of(prop_oneof![
                Just(FailurePolicy::Ignore),
                Just(FailurePolicy::Fail)
            ]),
        )
            .prop_map(|(version, mu, port, ifaces, fp)| HybridnetClusterSpec {
                version,
                node_agent: Some(NodeAgentSpec {
                    update_strategy: mu.map(|m| NodeAgentUpdateStrategy {
                        max_unavailable: Some(IntOrString::Int(m)),
                    }),
                    vxlan_udp_port: port,
                    prefer_vxlan_interfaces: ifaces,
                    ..Default::default()
                }),
                webhook: Some(WebhookSpec {
                    failure_policy: fp,
                    port: None,
                    additional_pod_match_expressions: None,
                }),
                ..Default::default()
            })
    }

    proptest! {
        #[test]
        fn rendering_is_deterministic(spec in arb_spec()) {
            let s = settings(&spec);
            let a = render(&s, Some(b"x"));
            let b = render(&s.clone(), Some(b"x"));
            prop_assert_eq!(&a.objects, &b.objects);
            let ja: Vec<_> = a.objects.iter().map(|o| o.to_value().unwrap()).collect();
            let jb: Vec<_> = b.objects.iter().map(|o| o.to_value().unwrap()).collect();
            prop_assert_eq!(ja, jb);
        }

        #[test]
        fn no_cluster_role_rule_has_a_wildcard(spec in arb_spec()) {
            let r = render(&settings(&spec), None);
            let mut all = rbac::operator_cluster_rules();
            all.extend(rbac::operator_namespace_rules());
            for o in &r.objects {
                if let ManagedObject::ClusterRole(c) = o {
                    all.extend(c.rules.clone().unwrap_or_default());
                }
            }
            for rule in all {
                let words = rule.verbs.iter()
                    .chain(rule.resources.iter().flatten())
                    .chain(rule.api_groups.iter().flatten());
                for w in words {
                    prop_assert!(!w.contains('*'), "{:?}", rule);
                }
                prop_assert!(rule.non_resource_urls.is_none());
            }
        }

        /// Every timeout the settings accept renders as `0`, `<n>s` or `<n>ms` (the forms the
        /// agent's `parse_duration` takes, documented at `agent_duration`) and reads back to the
        /// same value.
        #[test]
        fn rendered_vlan_check_timeouts_round_trip(ms in 0u64..=30_000) {
            let d = std::time::Duration::from_millis(ms);
            let text = agent_duration(d);
            let digits = text.trim_end_matches("ms").trim_end_matches('s');
            prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{}", text);
            prop_assert!(text == "0" || text.ends_with('s'), "{}", text);
            prop_assert_eq!(super::super::settings::parse_vlan_check_timeout(&text), Ok(d));
        }

        #[test]
        fn max_unavailable_and_version_reach_the_daemonset(spec in arb_spec()) {
            let s = settings(&spec);
            let d = ds(&render(&s, None));
            let ru = d.spec.update_strategy.unwrap().rolling_update.unwrap();
            prop_assert_eq!(ru.max_unavailable, Some(s.max_unavailable.clone()));
            prop_assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
            let img = d.spec.template.spec.unwrap().containers[0].image.clone().unwrap();
            let suffix = format!(":v{}", s.version);
            prop_assert!(img.ends_with(&suffix), "{} {}", img, suffix);
        }
    }
}
