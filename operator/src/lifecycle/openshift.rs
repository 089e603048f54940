//! OpenShift: the SecurityContextConstraints the node agent's pods are admitted under
//! (docs/operations.md, "OpenShift").
//!
//! OpenShift admits a pod only under an SCC its service account may `use`. The operator detects
//! OpenShift by its API group `security.openshift.io` ([`platform_from_groups`], pure) and then
//! renders one SCC, `hybridnet-node`, derived from the rendered agent DaemonSet ([`agent_scc`],
//! pure: host network and ports, hostPath volumes, the exact capabilities the containers add, user
//! 0, no privileged container), plus a `use` rule on that one SCC in the agent's ClusterRole. On
//! plain Kubernetes nothing of this is rendered.
//!
//! Field names and the required fields are those of openshift/api `security/v1/types.go` and its
//! CRD `security/v1/zz_generated.crd-manifests/0000_03_config-operator_01_securitycontextconstraints.crd.yaml`
//! (every field it requires is written, with a value, never left out or `null`).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, ObjectMeta};
use kube::core::ApiResource;
use serde::{Deserialize, Serialize};

/// The API group whose presence means OpenShift.
pub const SECURITY_GROUP: &str = "security.openshift.io";
pub const SCC_VERSION: &str = "v1";
pub const SCC_KIND: &str = "SecurityContextConstraints";
pub const SCC_RESOURCE: &str = "securitycontextconstraints";

/// Where the operator runs: decides whether the SCC path is rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Platform {
    #[default]
    Kubernetes,
    OpenShift,
}

/// OpenShift when the API server serves `security.openshift.io` (any version).
pub fn platform_from_groups(groups: &APIGroupList) -> Platform {
    if groups.groups.iter().any(|g| g.name == SECURITY_GROUP) {
        Platform::OpenShift
    } else {
        Platform::Kubernetes
    }
}

/// The dynamic-client resource of SCCs.
pub fn scc_api_resource() -> ApiResource {
    ApiResource {
        group: SECURITY_GROUP.into(),
        version: SCC_VERSION.into(),
        api_version: format!("{SECURITY_GROUP}/{SCC_VERSION}"),
        kind: SCC_KIND.into(),
        plural: SCC_RESOURCE.into(),
    }
}

/// An SCC strategy (`seLinuxContext`, `runAsUser`, `fsGroup`, `supplementalGroups`): only the
/// fields hybridnet sets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
}

impl Strategy {
    fn named(t: &str) -> Self {
        Strategy {
            type_: t.into(),
            uid: None,
        }
    }
}

/// `security.openshift.io/v1` SecurityContextConstraints (cluster-scoped; fields at the top
/// level, no spec). Every field the CRD requires is serialized.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContextConstraints {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub priority: Option<i32>,
    pub allow_privileged_container: bool,
    pub default_add_capabilities: Option<Vec<String>>,
    pub required_drop_capabilities: Option<Vec<String>>,
    pub allowed_capabilities: Option<Vec<String>>,
    pub allow_host_dir_volume_plugin: bool,
    pub volumes: Option<Vec<String>>,
    pub allow_host_network: bool,
    pub allow_host_ports: bool,
    #[serde(rename = "allowHostPID")]
    pub allow_host_pid: bool,
    #[serde(rename = "allowHostIPC")]
    pub allow_host_ipc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(rename = "seLinuxContext")]
    pub se_linux_context: Strategy,
    pub run_as_user: Strategy,
    pub supplemental_groups: Strategy,
    #[serde(rename = "fsGroup")]
    pub fs_group: Strategy,
    pub read_only_root_filesystem: bool,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Allowed seccomp profiles (`runtime/default`, ...); None: the pod may name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profiles: Option<Vec<String>>,
}

/// The VolumeSource field a volume uses (the SCC's `volumes` names them the same way), or None
/// for a kind hybridnet never renders.
fn volume_kind(v: &Volume) -> Option<&'static str> {
    let kinds = [
        (v.host_path.is_some(), "hostPath"),
        (v.config_map.is_some(), "configMap"),
        (v.secret.is_some(), "secret"),
        (v.empty_dir.is_some(), "emptyDir"),
        (v.projected.is_some(), "projected"),
        (v.downward_api.is_some(), "downwardAPI"),
    ];
    kinds.into_iter().find(|(set, _)| *set).map(|(_, k)| k)
}

fn all_containers(ds: &DaemonSet) -> Vec<&Container> {
    let Some(pod) = ds.spec.template.spec.as_ref() else {
        return Vec::new();
    };
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .collect()
}

/// Why a DaemonSet cannot be given a narrow SCC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SccError {
    #[error("DaemonSet {0}: no pod template")]
    NoTemplate(String),
    #[error("DaemonSet {ds}: volume {volume:?} has a kind the SCC does not allow")]
    Volume { ds: String, volume: String },
}

/// The SCC `name` for the pods of `ds`, allowing exactly what its template asks for:
/// - `allowHostNetwork`/`allowHostPID`/`allowHostIPC` as the pod; `allowHostPorts` when on the
///   host network (every container port is then a host port) or a container asks for one;
/// - `allowedCapabilities`: the union of what the containers add (nothing is added by default,
///   nothing else can be added); `requiredDropCapabilities: [ALL]` when every container drops
///   `ALL`;
/// - `volumes`: the kinds the pod uses, plus `projected` (the service account token);
///   `allowHostDirVolumePlugin` when one is a hostPath;
/// - `allowPrivilegedContainer` and `allowPrivilegeEscalation` only if a container asks;
///   `readOnlyRootFilesystem` when every container has one;
/// - `runAsUser` MustRunAs the one user every container sets (RunAsAny if they differ);
/// - `seLinuxContext` RunAsAny: the containers write host directories (CNI binaries and
///   configuration, the CNI socket directory), which the default container type may not;
/// - `users`/`groups` empty: only the agent's ClusterRole grants `use`, by name.
pub fn agent_scc(ds: &DaemonSet, name: &str) -> Result<SecurityContextConstraints, SccError> {
    let ds_name = ds.metadata.name.clone().unwrap_or_default();
    let pod = ds
        .spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| SccError::NoTemplate(ds_name.clone()))?;
    let containers = all_containers(ds);
    let sc = |c: &Container| c.security_context.clone().unwrap_or_default();

    let host_network = pod.host_network == Some(true);
    let host_ports = host_network
        || containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .any(|p| p.host_port.is_some());

    let caps: BTreeSet<String> = containers
        .iter()
        .filter_map(|c| sc(c).capabilities)
        .flat_map(|caps| caps.add.unwrap_or_default())
        .collect();

    // Every container drops ALL: the SCC requires it (as OpenShift's restricted-v2 does, next
    // to its allowed capabilities).
    let drop_all = if !containers.is_empty()
        && containers.iter().all(|c| {
            sc(c)
                .capabilities
                .and_then(|c| c.drop)
                .is_some_and(|d| d.iter().any(|x| x == "ALL"))
        }) {
        vec!["ALL".to_string()]
    } else {
        Vec::new()
    };
    let mut volumes = BTreeSet::from(["projected".to_string()]);
    for v in pod.volumes.iter().flatten() {
        let kind = volume_kind(v).ok_or_else(|| SccError::Volume {
            ds: ds_name.clone(),
            volume: v.name.clone(),
        })?;
        volumes.insert(kind.to_string());
    }

    let privileged = containers.iter().any(|c| sc(c).privileged == Some(true));
    let escalation = containers
        .iter()
        .any(|c| sc(c).allow_privilege_escalation != Some(false));
    let read_only = !containers.is_empty()
        && containers
            .iter()
            .all(|c| sc(c).read_only_root_filesystem == Some(true));
    let pod_user = pod.security_context.as_ref().and_then(|p| p.run_as_user);
    let users: BTreeSet<Option<i64>> = containers
        .iter()
        .map(|c| sc(c).run_as_user.or(pod_user))
        .collect();
    let run_as_user = match users.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(uid)] => Strategy {
            type_: "MustRunAs".into(),
            uid: Some(*uid),
        },
        _ => Strategy::named("RunAsAny"),
    };

    Ok(SecurityContextConstraints {
        api_version: format!("{SECURITY_GROUP}/{SCC_VERSION}"),
        kind: SCC_KIND.into(),
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: ds.metadata.labels.clone(),
            ..Default::default()
        },
        // The CRD requires these (nullable) fields; concrete values rather than nulls, which a
        // server-side apply could read as "not set". Priority 0 is what unset means.
        priority: Some(0),
        allow_privileged_container: privileged,
        default_add_capabilities: Some(Vec::new()),
        required_drop_capabilities: Some(drop_all),
        allowed_capabilities: Some(caps.into_iter().collect()),
        allow_host_dir_volume_plugin: volumes.contains("hostPath"),
        volumes: Some(volumes.into_iter().collect()),
        allow_host_network: host_network,
        allow_host_ports: host_ports,
        allow_host_pid: pod.host_pid == Some(true),
        allow_host_ipc: pod.host_ipc == Some(true),
        default_allow_privilege_escalation: Some(false),
        allow_privilege_escalation: Some(escalation),
        se_linux_context: Strategy::named("RunAsAny"),
        run_as_user,
        supplemental_groups: Strategy::named("RunAsAny"),
        fs_group: Strategy::named("RunAsAny"),
        read_only_root_filesystem: read_only,
        users: Vec::new(),
        groups: Vec::new(),
        // The agent's pods name no seccomp profile.
        seccomp_profiles: None,
    })
}

/// Whether `scc` admits the pods of `ds` (the checks OpenShift's SCC admission makes on the
/// fields hybridnet sets); the reasons it would refuse them. Used by the tests to show the
/// rendered SCC is enough, and that it is not more than needed.
pub fn refusals(scc: &SecurityContextConstraints, ds: &DaemonSet) -> Vec<String> {
    match ds.spec.template.spec.as_ref() {
        Some(pod) => pod_refusals(scc, pod),
        None => vec!["no pod template".into()],
    }
}

/// [`refusals`] for any pod spec. `runAsUser: MustRunAsRange` (restricted-v2) assigns a user from
/// the namespace's range, which no pod can know beforehand: a fixed user is counted as refused.
pub fn pod_refusals(scc: &SecurityContextConstraints, pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let pod_user = pod.security_context.as_ref().and_then(|p| p.run_as_user);
    if scc.run_as_user.type_ == "MustRunAsRange" && pod_user.is_some() {
        out.push(format!("pod: fixed user {pod_user:?}"));
    }
    if let Some(allowed) = &scc.seccomp_profiles {
        let profile = pod
            .security_context
            .as_ref()
            .and_then(|p| p.seccomp_profile.as_ref())
            .map(|p| match p.type_.as_str() {
                "RuntimeDefault" => "runtime/default".to_string(),
                "Localhost" => format!(
                    "localhost/{}",
                    p.localhost_profile.clone().unwrap_or_default()
                ),
                _ => "unconfined".to_string(),
            });
        if let Some(p) = profile
            && !allowed.iter().any(|a| *a == p || a == "*")
        {
            out.push(format!("pod: seccomp profile {p}"));
        }
    }
    if pod.host_network == Some(true) && !scc.allow_host_network {
        out.push("hostNetwork".into());
    }
    if pod.host_pid == Some(true) && !scc.allow_host_pid {
        out.push("hostPID".into());
    }
    if pod.host_ipc == Some(true) && !scc.allow_host_ipc {
        out.push("hostIPC".into());
    }
    let allowed_volumes = scc.volumes.clone().unwrap_or_default();
    for v in pod.volumes.iter().flatten() {
        let kind = volume_kind(v).unwrap_or("unknown");
        if !allowed_volumes.iter().any(|a| a == kind || a == "*") {
            out.push(format!("volume {} ({kind})", v.name));
        }
        if kind == "hostPath" && !scc.allow_host_dir_volume_plugin {
            out.push(format!("hostPath volume {}", v.name));
        }
    }
    let allowed_caps = scc.allowed_capabilities.clone().unwrap_or_default();
    let containers = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter());
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        // On the host network every container port is a host port (the API server defaults
        // `hostPort` to `containerPort`).
        let ports = c.ports.iter().flatten();
        let host_ports = if pod.host_network == Some(true) {
            ports.count() > 0
        } else {
            ports.into_iter().any(|p| p.host_port.is_some())
        };
        if host_ports && !scc.allow_host_ports {
            out.push(format!("{}: host ports", c.name));
        }
        for cap in sc.capabilities.and_then(|c| c.add).unwrap_or_default() {
            if !allowed_caps.contains(&cap) {
                out.push(format!("{}: capability {cap}", c.name));
            }
        }
        if sc.privileged == Some(true) && !scc.allow_privileged_container {
            out.push(format!("{}: privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false)
            && scc.allow_privilege_escalation == Some(false)
        {
            out.push(format!("{}: privilege escalation", c.name));
        }
        if scc.read_only_root_filesystem && sc.read_only_root_filesystem != Some(true) {
            out.push(format!("{}: writable root filesystem", c.name));
        }
        if scc.run_as_user.type_ == "MustRunAs" && sc.run_as_user != scc.run_as_user.uid {
            out.push(format!("{}: user {:?}", c.name, sc.run_as_user));
        }
        if scc.run_as_user.type_ == "MustRunAsRange" && sc.run_as_user.is_some() {
            out.push(format!("{}: fixed user {:?}", c.name, sc.run_as_user));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;

    fn groups(names: &[&str]) -> APIGroupList {
        APIGroupList {
            groups: names
                .iter()
                .map(|n| APIGroup {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// OpenShift's default SCC restricted-v2 as `oc get scc restricted-v2 -o yaml` shows it
    /// (OpenShift 4.11+; the fields hybridnet's check looks at).
    fn restricted_v2() -> SecurityContextConstraints {
        SecurityContextConstraints {
            allowed_capabilities: Some(vec!["NET_BIND_SERVICE".into()]),
            required_drop_capabilities: Some(vec!["ALL".into()]),
            allow_privilege_escalation: Some(false),
            volumes: Some(
                [
                    "configMap",
                    "csi",
                    "downwardAPI",
                    "emptyDir",
                    "ephemeral",
                    "persistentVolumeClaim",
                    "projected",
                    "secret",
                ]
                .map(str::to_string)
                .to_vec(),
            ),
            run_as_user: Strategy::named("MustRunAsRange"),
            se_linux_context: Strategy::named("MustRunAs"),
            fs_group: Strategy::named("MustRunAs"),
            supplemental_groups: Strategy::named("RunAsAny"),
            seccomp_profiles: Some(vec!["runtime/default".into()]),
            ..Default::default()
        }
    }

    /// hostnetwork-v2 as OpenShift documents it: restricted-v2 plus the host network and ports.
    fn hostnetwork_v2() -> SecurityContextConstraints {
        SecurityContextConstraints {
            allow_host_network: true,
            allow_host_ports: true,
            supplemental_groups: Strategy::named("MustRunAs"),
            ..restricted_v2()
        }
    }

    #[test]
    fn the_operator_itself_runs_under_hostnetwork_v2() {
        // The operator cannot create an SCC for itself before it runs: its Deployment (on the host
        // network) must be admitted by OpenShift's hostnetwork-v2, which its Role may `use`.
        let spec = crate::lifecycle::install::operator_deployment_spec("example/hybridnet:v1");
        let pod = spec.template.spec.clone().unwrap();
        assert_eq!(pod_refusals(&hostnetwork_v2(), &pod), Vec::<String>::new());
        assert!(crate::lifecycle::rbac::allows_name(
            &crate::lifecycle::rbac::operator_namespace_rules(),
            SECURITY_GROUP,
            SCC_RESOURCE,
            "use",
            crate::lifecycle::rbac::OPERATOR_SCC
        ));
        // The controls: restricted-v2 refuses the host network; a fixed user (what the
        // Deployment had) is refused.
        assert!(!pod_refusals(&restricted_v2(), &pod).is_empty());
        let mut fixed = pod.clone();
        fixed.security_context.as_mut().unwrap().run_as_user = Some(65532);
        assert!(!pod_refusals(&hostnetwork_v2(), &fixed).is_empty());
        // And the node agent needs its own SCC: hostnetwork-v2 refuses it.
        let s = crate::lifecycle::settings::Settings::from_spec(
            &Default::default(),
            "0.1.0",
            "hybridnet-system",
        )
        .unwrap();
        let ds = crate::lifecycle::render::node_agent_daemonset(&s);
        assert!(!refusals(&hostnetwork_v2(), &ds).is_empty());
    }

    #[test]
    fn openshift_is_detected_by_its_security_group_only() {
        assert_eq!(
            platform_from_groups(&groups(&["apps", "security.openshift.io"])),
            Platform::OpenShift
        );
        for plain in [
            &[][..],
            &["apps", "rbac.authorization.k8s.io"][..],
            // Look-alikes are not OpenShift.
            &[
                "security.openshift.io.example.com",
                "openshift.io",
                "security",
            ][..],
            &["config.openshift.io"][..],
        ] {
            assert_eq!(
                platform_from_groups(&groups(plain)),
                Platform::Kubernetes,
                "{plain:?}"
            );
        }
    }
}
