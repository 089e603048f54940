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
/// The opt-in ClusterRole (and binding) for global services (`deploy/global-services/`;
/// docs/multicluster.md, Global services).
pub const GLOBAL_SERVICES: &str = "hybridnet-operator-global-services";
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

/// The environment variable of the operand image on the operator's Deployment. OLM bundles pin
/// images by digest in `relatedImages` and in `RELATED_IMAGE_*` variables (disconnected installs
/// mirror exactly these); the operator deploys this image before `spec.registry`/`spec.version`.
pub const RELATED_IMAGE_ENV: &str = "RELATED_IMAGE_HYBRIDNET";

/// `<registry>/hybridnet@<digest>` for a digest `sha256:<64 hex>`.
pub fn image_by_digest(registry: &str, digest: &str) -> Result<String, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?}: want sha256:<64 hex digits>"))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?}: want sha256:<64 lowercase hex digits>"
        ));
    }
    Ok(format!(
        "{}/{IMAGE_NAME}@{digest}",
        registry.trim_end_matches('/')
    ))
}

/// An image reference as a container runtime takes it: `host[:port]/path[:tag][@sha256:<hex>]`,
/// printable ASCII without spaces, at most 1024 bytes, a tag of at most 128 word characters.
pub fn validate_image_ref(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("image {s:?}: {why}"));
    if s.is_empty() || s.len() > 1024 {
        return bad("empty or longer than 1024 bytes");
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces");
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        image_by_digest("x", d).map_err(|e| format!("image {s:?}: {e}"))?;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let (path, tag) = match last.split_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    if let Some(t) = tag
        && (t.is_empty()
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
    {
        return bad("the tag must be 1-128 of [A-Za-z0-9_.-]");
    }
    if tag.is_none() && digest.is_none() {
        return bad("name a tag or a digest");
    }
    if path.is_empty()
        || path.starts_with('/')
        || path.ends_with('/')
        || path.contains("//")
        || path.split('/').any(|c| c == ".." || c == ".")
    {
        return bad("malformed repository path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn images_by_digest() {
        assert_eq!(
            image_by_digest("quay.io/h/", D).unwrap(),
            format!("quay.io/h/hybridnet@{D}")
        );
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &D.to_uppercase(),
            &D[..70],
            "md5:x",
        ] {
            assert!(image_by_digest("r", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_references_are_checked() {
        for ok in [
            "docker.io/hybridnet/hybridnet:v0.1.0".to_string(),
            format!("mirror.local:5000/h/hybridnet@{D}"),
            format!("h/hybridnet:v1@{D}"),
            "localhost:5000/hybridnet:latest".into(),
        ] {
            assert!(validate_image_ref(&ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "docker.io/hybridnet/hybridnet",
            "docker.io/hybridnet/hybridnet:",
            "a b:v1",
            "x:v1\n",
            "/abs:v1",
            "a//b:v1",
            "a/../b:v1",
            "a/b:v1@sha256:xyz",
            "a/b:t!g",
        ] {
            assert!(validate_image_ref(bad).is_err(), "{bad:?}");
        }
        assert!(validate_image_ref(&"a".repeat(1025)).is_err());
    }
}
