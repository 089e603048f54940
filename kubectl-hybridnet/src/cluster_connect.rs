//! `cluster connect|disconnect`: what to create in each of two clusters so that each one's
//! operator reaches the other (docs/multicluster.md, Connecting two clusters). Pure: the
//! kubeconfig is parsed into an endpoint and credentials, and the objects of each side are
//! computed here; the shell only reads files and applies them.
//!
//! Per side, for the RemoteCluster `NAME` that points at the other cluster:
//! - Secret `hybridnet-remote-NAME` in the operator's namespace, with the other cluster's CA and
//!   the credentials of its kubeconfig context (`hybridnet_api::multicluster::credentials`, the
//!   keys the operator reads back);
//! - Role and RoleBinding `hybridnet-remote-NAME` that let the operator's ServiceAccount `get`
//!   exactly that Secret (the operator holds no grant on Secrets by arbitrary name);
//! - the RemoteCluster `NAME` (`spec.credentialsSecretRef` naming the Secret), annotated with the
//!   name of its counterpart on the other side, which `disconnect` removes too.

use std::collections::BTreeMap;

use hybridnet_api::constants::{field_manager, label};
use hybridnet_api::multicluster::credentials::{ClientAuth, Credentials, check_token};
use hybridnet_api::multicluster::validate::{parse_api_endpoint, remote_cluster_spec};
use hybridnet_api::multicluster::{RemoteCluster, RemoteClusterSpec, SecretRef};
use hybridnet_api::names;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::Kubeconfig;

/// On a RemoteCluster that `connect` created: the name of the RemoteCluster on the other side
/// that points back here.
pub const PEER_ANNOTATION: &str = "multicluster.hybridnet.io/peer";
/// The operator's ServiceAccount (deploy/operator.yaml, the OLM bundle's CSV).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "hybridnet-operator";
/// The operator's namespace unless `--operator-namespace` says otherwise.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "hybridnet-system";

/// How to reach one cluster, as its kubeconfig context says.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAccess {
    /// The kubeconfig context it was read from.
    pub context: String,
    /// `https://host:port` (the port made explicit).
    pub endpoint: String,
    pub credentials: Credentials,
}

/// Decodes a kubeconfig `*-data` field (base64).
fn base64_field(what: &str, v: &str) -> Result<Vec<u8>, String> {
    serde_json::from_value::<ByteString>(serde_json::Value::String(v.trim().to_string()))
        .map(|b| b.0)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// The server URL as a RemoteCluster's `spec.apiEndpoint` takes it: https, the port explicit,
/// nothing after it.
fn endpoint_of(context: &str, server: &str) -> Result<String, String> {
    let trimmed = server.trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").ok_or_else(|| {
        format!(
            "context {context:?}: server {server:?} is not https; the remote cluster's operator must reach it over TLS"
        )
    })?;
    // An explicit port ends the authority: `host:port` or `[v6]:port`.
    let has_port = match rest.rfind(']') {
        Some(close) => rest[close..].contains(':'),
        None => rest.contains(':'),
    };
    let endpoint = if has_port {
        trimmed.to_string()
    } else {
        format!("{trimmed}:443")
    };
    parse_api_endpoint(&endpoint)
        .map_err(|e| format!("context {context:?}: server {server:?}: {e}"))?;
    Ok(endpoint)
}

/// Endpoint and credentials of `context` in `kc`. `read_file` reads a file the kubeconfig names
/// (`certificate-authority`, `client-certificate`, `client-key`, `tokenFile`).
pub fn peer_access(
    kc: &Kubeconfig,
    context: &str,
    read_file: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<PeerAccess, String> {
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            format!(
                "no context {context:?} in the kubeconfig (`kubectl config get-contexts` lists them)"
            )
        })?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("context {context:?}: cluster {:?} not found", ctx.cluster))?;
    let server = cluster.server.as_deref().ok_or_else(|| {
        format!(
            "context {context:?}: cluster {:?} has no server",
            ctx.cluster
        )
    })?;
    let endpoint = endpoint_of(context, server)?;
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => base64_field(
            &format!("context {context:?}: certificate-authority-data"),
            d,
        )?,
        (None, Some(path)) => read_file(path)
            .map_err(|e| format!("context {context:?}: certificate-authority {path:?}: {e}"))?,
        (None, None) => {
            return Err(format!(
                "context {context:?}: cluster {:?} names no CA (certificate-authority[-data]); the other cluster's operator must verify this API server",
                ctx.cluster
            ));
        }
    };
    let user_name = ctx.user.as_deref().unwrap_or_default();
    let user = kc
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref())
        .ok_or_else(|| format!("context {context:?}: user {user_name:?} not found"))?;
    // The secret fields are read through kube's own serialization of them.
    let user = serde_json::to_value(user).map_err(|e| format!("context {context:?}: {e}"))?;
    let field = |k: &str| {
        user.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let from = |data_key: &str, file_key: &str| -> Result<Option<Vec<u8>>, String> {
        if let Some(d) = field(data_key) {
            return base64_field(&format!("context {context:?}: user {data_key}"), d).map(Some);
        }
        match field(file_key) {
            Some(path) => read_file(path)
                .map(Some)
                .map_err(|e| format!("context {context:?}: user {file_key} {path:?}: {e}")),
            None => Ok(None),
        }
    };
    let cert = from("client-certificate-data", "client-certificate")?;
    let key = from("client-key-data", "client-key")?;
    let token = match (field("token"), field("tokenFile")) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(path)) => {
            let bytes = read_file(path)
                .map_err(|e| format!("context {context:?}: user tokenFile {path:?}: {e}"))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| format!("context {context:?}: tokenFile {path:?} is not UTF-8"))?
                    .trim()
                    .to_string(),
            )
        }
        (None, None) => None,
    };
    let auth = match (cert, key, token) {
        (Some(cert_pem), Some(key_pem), _) => ClientAuth::Certificate { cert_pem, key_pem },
        (None, None, Some(t)) => {
            check_token(&format!("context {context:?}: user token"), &t)?;
            ClientAuth::Token(t)
        }
        _ if user.get("exec").is_some() || user.get("auth-provider").is_some() => {
            return Err(format!(
                "context {context:?}: user {user_name:?} authenticates through an exec or auth-provider plugin, which the other cluster's operator cannot run; use a context with a client certificate or a token (for example of a ServiceAccount)"
            ));
        }
        _ => {
            return Err(format!(
                "context {context:?}: user {user_name:?} has neither a client certificate with its key nor a token"
            ));
        }
    };
    let credentials = Credentials { ca_pem, auth };
    // The same rules the operator applies when it reads the Secret back.
    Credentials::from_secret_data(&credentials.to_secret_data())
        .map_err(|e| format!("context {context:?}: {e}"))?;
    Ok(PeerAccess {
        context: context.to_string(),
        endpoint,
        credentials,
    })
}

/// Name of the Secret, Role and RoleBinding for the RemoteCluster `name`.
pub fn access_object_name(name: &str) -> String {
    format!("hybridnet-remote-{name}")
}

/// What `connect` creates in one cluster for its RemoteCluster `name` pointing at `peer`.
#[derive(Debug, Clone)]
pub struct ConnectSide {
    pub secret: Secret,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub remote_cluster: RemoteCluster,
}

fn meta(name: &str, namespace: Option<&str>, remote_cluster: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([
            (
                label::MANAGED_BY.to_string(),
                field_manager::KUBECTL_PLUGIN.to_string(),
            ),
            (
                label::REMOTE_CLUSTER.to_string(),
                remote_cluster.to_string(),
            ),
        ])),
        ..Default::default()
    }
}

/// The objects of one side: the RemoteCluster `name` here, pointing at `peer`, whose own
/// RemoteCluster pointing back is `peer_name`.
pub fn connect_side(
    name: &str,
    peer_name: &str,
    peer: &PeerAccess,
    operator_namespace: &str,
    timeout: Option<i32>,
) -> Result<ConnectSide, String> {
    names::dns_label(name).map_err(|e| format!("remote cluster name {name:?}: {e}"))?;
    names::dns_label(peer_name).map_err(|e| format!("remote cluster name {peer_name:?}: {e}"))?;
    names::dns_label(operator_namespace)
        .map_err(|e| format!("--operator-namespace {operator_namespace:?}: {e}"))?;
    let object = access_object_name(name);
    let secret = Secret {
        metadata: meta(&object, Some(operator_namespace), name),
        type_: Some("Opaque".into()),
        data: Some(peer.credentials.to_secret_data()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(&object, Some(operator_namespace), name),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec![object.clone()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    let role_binding = RoleBinding {
        metadata: meta(&object, Some(operator_namespace), name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: object.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: OPERATOR_SERVICE_ACCOUNT.into(),
            namespace: Some(operator_namespace.to_string()),
            ..Default::default()
        }]),
    };
    let mut remote_cluster = RemoteCluster::new(
        name,
        RemoteClusterSpec {
            api_endpoint: peer.endpoint.clone(),
            timeout,
            credentials_secret_ref: Some(SecretRef {
                namespace: operator_namespace.to_string(),
                name: object,
            }),
            ..Default::default()
        },
    );
    remote_cluster.metadata.labels = Some(BTreeMap::from([(
        label::MANAGED_BY.to_string(),
        field_manager::KUBECTL_PLUGIN.to_string(),
    )]));
    remote_cluster.metadata.annotations = Some(BTreeMap::from([(
        PEER_ANNOTATION.to_string(),
        peer_name.to_string(),
    )]));
    // The webhook's rules, here before anything is written.
    remote_cluster_spec(&remote_cluster.spec)
        .map_err(|e| format!("remote cluster {name:?}: {e}"))?;
    Ok(ConnectSide {
        secret,
        role,
        role_binding,
        remote_cluster,
    })
}

/// What `connect --dry-run` prints for one side (never the key material).
pub fn side_text(cluster_label: &str, side: &ConnectSide) -> String {
    let auth = side
        .secret
        .data
        .as_ref()
        .map(|d| {
            if d.contains_key(hybridnet_api::multicluster::secret_key::TOKEN) {
                "a bearer token"
            } else {
                "a client certificate"
            }
        })
        .unwrap_or("nothing");
    let ns = side
        .secret
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    let object = side.secret.metadata.name.as_deref().unwrap_or_default();
    let rc = &side.remote_cluster;
    format!(
        "In {cluster_label}:\n  Secret {ns}/{object} (the CA bundle and {auth})\n  Role and RoleBinding {ns}/{object} (ServiceAccount {ns}/{OPERATOR_SERVICE_ACCOUNT} may get that Secret)\n  RemoteCluster {} -> {}\n",
        rc.metadata.name.as_deref().unwrap_or_default(),
        rc.spec.api_endpoint
    )
}

/// What `disconnect` removes in one cluster for its RemoteCluster `rc`: the RemoteCluster and,
/// when `connect` made them (its label on the Secret), the Secret, Role and RoleBinding.
/// Returns `(namespace, name)` of the access objects, if any.
pub fn access_objects_of(rc: &RemoteCluster) -> Option<(String, String)> {
    let r = rc.spec.credentials_secret_ref.as_ref()?;
    let name = rc.metadata.name.as_deref()?;
    (r.name == access_object_name(name)).then(|| (r.namespace.clone(), r.name.clone()))
}

/// Whether the Secret was written by `connect` for the RemoteCluster `name` (only those are
/// deleted; a Secret the user made stays).
pub fn made_by_connect(secret: &Secret, name: &str) -> bool {
    let labels = secret.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(label::MANAGED_BY))
        .map(String::as_str)
        == Some(field_manager::KUBECTL_PLUGIN)
        && labels
            .and_then(|l| l.get(label::REMOTE_CLUSTER))
            .map(String::as_str)
            == Some(name)
}

/// The counterpart's name that `connect` recorded on `rc`.
pub fn peer_of(rc: &RemoteCluster) -> Option<&str> {
    rc.metadata
        .annotations
        .as_ref()?
        .get(PEER_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";

    fn b64(s: &str) -> String {
        serde_json::to_value(ByteString(s.as_bytes().to_vec()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn kubeconfig(server: &str, cluster_extra: &str, user: &str) -> Kubeconfig {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{cluster_extra}contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n{user}"
        );
        Kubeconfig::from_yaml(&yaml).unwrap()
    }

    fn no_files(p: &str) -> Result<Vec<u8>, String> {
        Err(format!("no file {p}"))
    }

    fn ca_data() -> String {
        format!("    certificate-authority-data: {}\n", b64(CA))
    }

    #[test]
    fn a_token_context_gives_endpoint_and_token() {
        let kc = kubeconfig("https://198.18.0.1:6443", &ca_data(), "    token: abc\n");
        let p = peer_access(&kc, "ctx", &no_files).unwrap();
        assert_eq!(p.endpoint, "https://198.18.0.1:6443");
        assert_eq!(p.credentials.auth, ClientAuth::Token("abc".into()));
        assert_eq!(p.credentials.ca_pem, CA.as_bytes());
    }

    #[test]
    fn a_certificate_context_reads_files_and_gets_port_443() {
        let kc = kubeconfig(
            "https://api.example.com/",
            "    certificate-authority: /ca.pem\n",
            "    client-certificate: /c.pem\n    client-key: /k.pem\n",
        );
        let files = |p: &str| -> Result<Vec<u8>, String> {
            Ok(match p {
                "/ca.pem" | "/c.pem" => CA.as_bytes().to_vec(),
                "/k.pem" => KEY.as_bytes().to_vec(),
                _ => return Err("missing".into()),
            })
        };
        let p = peer_access(&kc, "ctx", &files).unwrap();
        assert_eq!(p.endpoint, "https://api.example.com:443");
        assert!(matches!(p.credentials.auth, ClientAuth::Certificate { .. }));
        let v6 = kubeconfig("https://[fd00::1]", &ca_data(), "    token: abc\n");
        assert_eq!(
            peer_access(&v6, "ctx", &no_files).unwrap().endpoint,
            "https://[fd00::1]:443"
        );
    }

    #[test]
    fn unusable_contexts_are_refused_with_the_reason() {
        let token = "    token: abc\n";
        for (kc, ctx, want) in [
            (
                kubeconfig("https://a:6443", &ca_data(), token),
                "other",
                "no context \"other\"",
            ),
            (
                kubeconfig("http://a:6443", &ca_data(), token),
                "ctx",
                "is not https",
            ),
            (
                kubeconfig("https://a:99999", &ca_data(), token),
                "ctx",
                "outside 1..65535",
            ),
            (
                kubeconfig("https://a:6443/path", &ca_data(), token),
                "ctx",
                "server",
            ),
            (
                kubeconfig("https://a:6443", "", token),
                "ctx",
                "names no CA",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    "    certificate-authority-data: '%%%'\n",
                    token,
                ),
                "ctx",
                "is not base64",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    &format!("    certificate-authority-data: {}\n", b64("not pem")),
                    token,
                ),
                "ctx",
                "is not PEM",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    "    certificate-authority: /nope\n",
                    token,
                ),
                "ctx",
                "no file /nope",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    &ca_data(),
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n",
                ),
                "ctx",
                "exec or auth-provider",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    &ca_data(),
                    "    username: admin\n    password: x\n",
                ),
                "ctx",
                "neither a client certificate",
            ),
            (
                kubeconfig("https://a:6443", &ca_data(), "    token: \"a b\"\n"),
                "ctx",
                "whitespace",
            ),
            (
                kubeconfig(
                    "https://a:6443",
                    &ca_data(),
                    &format!("    client-certificate-data: {}\n", b64(CA)),
                ),
                "ctx",
                "neither a client certificate",
            ),
        ] {
            match peer_access(&kc, ctx, &no_files) {
                Err(e) => assert!(e.contains(want), "{want}: {e}"),
                Ok(p) => panic!("{want}: accepted {p:?}"),
            }
        }
    }

    fn peer() -> PeerAccess {
        PeerAccess {
            context: "b".into(),
            endpoint: "https://198.18.0.2:6443".into(),
            credentials: Credentials {
                ca_pem: CA.as_bytes().to_vec(),
                auth: ClientAuth::Token("tok".into()),
            },
        }
    }

    #[test]
    fn one_side_grants_the_operator_exactly_its_secret() {
        let s = connect_side(
            "cluster-b",
            "cluster-a",
            &peer(),
            "hybridnet-system",
            Some(5),
        )
        .unwrap();
        assert_eq!(
            s.secret.metadata.name.as_deref(),
            Some("hybridnet-remote-cluster-b")
        );
        assert_eq!(
            Credentials::from_secret_data(s.secret.data.as_ref().unwrap()).unwrap(),
            peer().credentials
        );
        let rule = &s.role.rules.as_ref().unwrap()[0];
        assert_eq!(rule.verbs, vec!["get"]);
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["hybridnet-remote-cluster-b".to_string()][..])
        );
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["secrets".to_string()][..])
        );
        let subject = &s.role_binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            (
                "ServiceAccount",
                "hybridnet-operator",
                Some("hybridnet-system")
            )
        );
        assert_eq!(s.role_binding.role_ref.name, "hybridnet-remote-cluster-b");
        let rc = &s.remote_cluster;
        assert_eq!(rc.spec.api_endpoint, "https://198.18.0.2:6443");
        assert_eq!(rc.spec.timeout, Some(5));
        assert_eq!(peer_of(rc), Some("cluster-a"));
        assert_eq!(
            access_objects_of(rc),
            Some((
                "hybridnet-system".into(),
                "hybridnet-remote-cluster-b".into()
            ))
        );
        assert!(made_by_connect(&s.secret, "cluster-b"));
        assert!(!made_by_connect(&s.secret, "cluster-c"));
        let text = side_text("cluster a", &s);
        assert!(
            text.contains("a bearer token") && !text.contains("tok\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for (name, peer_name, ns, want) in [
            ("Cluster_B", "a", "hybridnet-system", "\"Cluster_B\""),
            ("b.c", "a", "hybridnet-system", "\"b.c\""),
            ("b", "", "hybridnet-system", "\"\""),
            ("b", "a", "../etc", "--operator-namespace"),
        ] {
            let e = connect_side(name, peer_name, &peer(), ns, None).unwrap_err();
            assert!(e.contains(want), "{name} {peer_name} {ns}: {e}");
        }
    }

    #[test]
    fn a_secret_the_user_made_is_not_ours_to_delete() {
        let mut s = connect_side("b", "a", &peer(), "hybridnet-system", None)
            .unwrap()
            .secret;
        s.metadata.labels = None;
        assert!(!made_by_connect(&s, "b"));
        let mut rc = RemoteCluster::new("b", RemoteClusterSpec::default());
        assert_eq!(access_objects_of(&rc), None);
        rc.spec.credentials_secret_ref = Some(SecretRef {
            namespace: "x".into(),
            name: "mine".into(),
        });
        assert_eq!(access_objects_of(&rc), None);
    }
}
