//! The oldest Kubernetes hybridnet runs on, derived from the API features it relies on (not from
//! the client library's newest API version). The CSV's `minKubeVersion`, its OpenShift versions
//! annotation and `kubectl hybridnet install` all read [`MIN_KUBE_VERSION`]; docs/operations.md
//! ("Kubernetes floor") explains each line of [`FEATURES`].

/// Oldest supported Kubernetes: the newest `since` of [`FEATURES`].
pub const MIN_KUBE_VERSION: &str = "1.32.0";

/// An API server feature hybridnet needs and the first Kubernetes minor where it is GA (always
/// on; a beta feature can be switched off by the cluster's operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// GA in Kubernetes 1.`since`.
    pub since: u32,
    /// What breaks without it.
    pub used_for: &'static str,
}

/// Every API feature hybridnet relies on, with the release where it became GA (Kubernetes'
/// `pkg/features/kube_features.go` and `apiextensions-apiserver` feature gates).
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "Server-side apply",
        since: 22,
        used_for: "the operator and kubectl-hybridnet apply with field managers; NodeInfos are server-side applied",
    },
    Feature {
        name: "CRD validation rules (x-kubernetes-validations, CEL, with oldSelf transition rules)",
        since: 29,
        used_for: "immutable Network/Subnet fields and HybridnetCluster checks while the webhook is down",
    },
    Feature {
        name: "Admission webhook matchConditions (AdmissionWebhookMatchConditions)",
        since: 30,
        used_for: "the node-scope webhook sees only the node agents' writes",
    },
    Feature {
        name: "Node name in pod-bound ServiceAccount tokens (ServiceAccountTokenPodNodeInfo)",
        since: 32,
        used_for: "the node-scope webhook knows which node an agent's request comes from; without it every agent write is refused",
    },
];

/// What a server's version says about support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSupport {
    Supported,
    /// Older than [`MIN_KUBE_VERSION`]: the message names the version and the first missing
    /// feature.
    TooOld(String),
    /// The version string does not parse (some distributions rewrite it): cannot tell.
    Unknown,
}

fn floor_minor() -> u32 {
    FEATURES.iter().map(|f| f.since).max().unwrap_or(0)
}

/// Judges an API server by its `/version` `gitVersion` (`v1.31.4`, `v1.32.1+k3s1`,
/// `v1.33.0-gke.100`).
pub fn server_support(git_version: &str) -> ServerSupport {
    let v = git_version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().and_then(|m| m.parse::<u32>().ok());
    let minor = parts.next().and_then(|m| {
        let digits: String = m.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let (Some(major), Some(minor)) = (major, minor) else {
        return ServerSupport::Unknown;
    };
    if major > 1 || minor >= floor_minor() {
        return ServerSupport::Supported;
    }
    let missing = FEATURES
        .iter()
        .filter(|f| f.since > minor)
        .map(|f| f.name)
        .next()
        .unwrap_or("?");
    let shown: String = git_version.chars().take(40).collect();
    ServerSupport::TooOld(format!(
        "Kubernetes {shown:?} is older than {MIN_KUBE_VERSION}, the oldest hybridnet supports: it lacks {missing} (GA in 1.{}) and maybe more (docs/operations.md, \"Kubernetes floor\")",
        FEATURES
            .iter()
            .find(|f| f.name == missing)
            .map(|f| f.since)
            .unwrap_or(0)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_newest_feature() {
        let (major, minor) = MIN_KUBE_VERSION
            .split_once('.')
            .map(|(a, b)| (a, b.split('.').next().unwrap_or("")))
            .unwrap_or_default();
        assert_eq!(major, "1");
        assert_eq!(minor.parse::<u32>().ok(), Some(floor_minor()));
        assert_eq!(MIN_KUBE_VERSION.split('.').count(), 3);
    }

    #[test]
    fn server_versions() {
        for ok in [
            "v1.32.0",
            "v1.32.1+k3s1",
            "v1.33.0-gke.100",
            "v1.37.0-kube-lite",
            "1.40",
            "v2.0.0",
        ] {
            assert_eq!(server_support(ok), ServerSupport::Supported, "{ok}");
        }
        for old in ["v1.31.9", "v1.29.0-eks-1", "v1.16.0", "1.30+"] {
            match server_support(old) {
                ServerSupport::TooOld(m) => {
                    assert!(m.contains("older than 1.32.0"), "{m}");
                    assert!(m.contains(old), "{m}");
                }
                other => panic!("{old}: {other:?}"),
            }
        }
        // 1.31 lacks only the token node claim; 1.29 also matchConditions (the first missing
        // one is named).
        let ServerSupport::TooOld(m) = server_support("v1.31.0") else {
            unreachable!()
        };
        assert!(
            m.contains("ServiceAccountTokenPodNodeInfo") && m.contains("GA in 1.32"),
            "{m}"
        );
        let ServerSupport::TooOld(m) = server_support("v1.29.3") else {
            unreachable!()
        };
        assert!(m.contains("AdmissionWebhookMatchConditions"), "{m}");
        for odd in ["", "v", "latest", "vX.Y", "v1", "v1.x"] {
            assert_eq!(server_support(odd), ServerSupport::Unknown, "{odd:?}");
        }
        // A hostile version string is cut in the message.
        let ServerSupport::TooOld(m) = server_support(&format!("v1.1.{}", "9".repeat(10_000)))
        else {
            unreachable!()
        };
        assert!(m.len() < 600, "{}", m.len());
    }
}
