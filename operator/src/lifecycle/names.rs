//! Names, labels and fixed paths of everything the lifecycle part renders.

use std::collections::BTreeMap;

/// Namespace of the GitOps install (OLM picks its own: the operator reads it from `NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "hybridnet-system";
/// Registry and repository prefix when the spec names none.
pub const DEFAULT_REGISTRY: &str = "docker.io/hybridnet";
/// Image repository (one image for every binary, like the original).
pub const IMAGE_NAME: &str = "hybridnet";

pub const OPERATOR: &str = "hybridnet-operator";
pub const NODE_AGENT: &str = "hybridnet-node";
pub const WEBHOOK_SERVICE: &str = "hybridnet-webhook";
pub const WEBHOOK_SECRET: &str = "hybridnet-webhook-cert";
pub const MUTATING_WEBHOOK_CONFIG: &str = "hybridnet-mutating-webhook";
pub const VALIDATING_WEBHOOK_CONFIG: &str = "hybridnet-validating-webhook";
/// The control plane's leader-election Lease (`--leader-election-id`'s default; the operator's
/// Role names it, so a different id needs the Role changed too).
pub const LEADER_LEASE: &str = "hybridnet-manager-election";

/// Webhook entries, named as upstream's chart names them.
pub const WEBHOOK_NETWORKING: &str = "hybridnet-v1.validating.hybridnet";
pub const WEBHOOK_POD_VALIDATING: &str = "core-v1.validating.hybridnet";
pub const WEBHOOK_POD_MUTATING: &str = "core-v1.mutating.hybridnet";
/// Ours (no upstream counterpart): node agents write only their own node's objects.
pub const WEBHOOK_NODE_SCOPE: &str = "node-agent.validating.hybridnet";

/// Standard labels.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "hybridnet";

/// Secret keys of the webhook certificate.
pub const SECRET_CA: &str = "ca.crt";
pub const SECRET_CERT: &str = "tls.crt";
pub const SECRET_KEY: &str = "tls.key";

/// Node agent paths inside its container.
pub const AGENT_SOCKET_DIR: &str = "/run/hybridnet";
pub const NETNS_DIR: &str = "/var/run/netns";
pub const LIB_MODULES: &str = "/lib/modules";
pub const PROC_SYS_NET_HOST: &str = "/proc/sys/net";
/// `/proc/sys` is read-only in a non-privileged container; the host's net sysctls are mounted here.
pub const PROC_SYS_NET_IN_CONTAINER: &str = "/host/proc/sys/net";
/// Host CNI directories are mounted under this prefix in the `install-cni` init container.
pub const HOST_PREFIX: &str = "/host";

/// Labels every managed object carries: the selector the finalizer cleans up by.
pub fn managed_labels(component: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            hybridnet_api::constants::label::MANAGED_BY.to_string(),
            hybridnet_api::constants::label::MANAGED_BY_OPERATOR.to_string(),
        ),
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_VERSION.to_string(), version.to_string()),
    ])
}

/// The label selector matching every object the operator manages.
pub fn managed_selector() -> String {
    format!(
        "{}={},{}={}",
        hybridnet_api::constants::label::MANAGED_BY,
        hybridnet_api::constants::label::MANAGED_BY_OPERATOR,
        LABEL_PART_OF,
        PART_OF
    )
}

/// Selector labels of a workload (stable across versions: a DaemonSet selector is immutable).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), name.to_string()),
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
    ])
}

/// `<registry>/hybridnet:v<version>`.
pub fn image(registry: &str, version: &str) -> String {
    format!("{}/{IMAGE_NAME}:v{version}", registry.trim_end_matches('/'))
}
