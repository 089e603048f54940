//! Connection to the cluster (kubeconfig, context, in-cluster) and errors that say what to do.

use std::fmt;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use kubectl_hybridnet::cli::GlobalFlags;

/// Exit codes (documented in `--help` and docs/cli.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const FINDINGS: i32 = 3;
}

/// A failed command: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            code: exit::ERROR,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Res<T> = Result<T, Failure>;

/// What to tell a user whose cluster lacks the hybridnet CRDs.
pub const INSTALL_HINT: &str = "install hybridnet first: apply its CRDs and operator (the OLM bundle, or `kubectl apply --server-side -f crds/` from the hybridnet repository), then run `kubectl hybridnet install`";

/// A connected client and the scope the flags ask for.
pub struct Ctx {
    pub client: Client,
    /// The namespace of `-n`, else the kubeconfig context's, else `default`.
    pub namespace: String,
    pub cluster_url: String,
    pub global: GlobalFlags,
}

fn default_kubeconfig_exists() -> bool {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
    home.map(|h| PathBuf::from(h).join(".kube").join("config").exists())
        .unwrap_or(false)
}

async fn load_config(g: &GlobalFlags) -> Res<Config> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        cluster: g.cluster.clone(),
        user: g.user.clone(),
    };
    if let Some(path) = &g.kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            Failure::error(format!(
                "cannot read the kubeconfig {}: {e}",
                path.display()
            ))
        })?;
        return Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| {
                Failure::error(format!(
                    "cannot use the kubeconfig {}: {e}{}",
                    path.display(),
                    context_hint(g)
                ))
            });
    }
    if default_kubeconfig_exists() {
        return Config::from_kubeconfig(&opts).await.map_err(|e| {
            Failure::error(format!(
                "cannot use the kubeconfig ($KUBECONFIG or ~/.kube/config): {e}{}",
                context_hint(g)
            ))
        });
    }
    if g.context.is_some() {
        return Err(Failure::error(
            "--context needs a kubeconfig: none found (give --kubeconfig or set KUBECONFIG)",
        ));
    }
    Config::incluster().map_err(|e| {
        Failure::error(format!(
            "no cluster configured: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a pod ({e})"
        ))
    })
}

fn context_hint(g: &GlobalFlags) -> String {
    match &g.context {
        Some(c) => {
            format!(" (is there a context named {c:?}? `kubectl config get-contexts` lists them)")
        }
        None => String::new(),
    }
}

impl Ctx {
    pub async fn connect(g: &GlobalFlags) -> Res<Ctx> {
        if let Some(ns) = &g.namespace {
            kubectl_hybridnet::manifest::validate_namespace(ns)
                .map_err(|e| Failure::usage(format!("-n/--namespace: {e}")))?;
        }
        if !g.as_group.is_empty() && g.as_user.is_none() {
            return Err(Failure::usage("--as-group needs --as (as kubectl)"));
        }
        for (flag, v) in [("--token", &g.token), ("--as", &g.as_user)] {
            if let Some(v) = v
                && (v.is_empty() || v.chars().any(|c| c.is_control()))
            {
                return Err(Failure::usage(format!(
                    "{flag}: empty or with control characters"
                )));
            }
        }
        let mut config = load_config(g).await?;
        if let Some(t) = &g.token {
            // kube's AuthInfo keeps the token secret; it is only built by deserializing.
            let ai: kube::config::AuthInfo =
                serde_json::from_value(serde_json::json!({"token": t}))
                    .map_err(|e| Failure::usage(format!("--token: {e}")))?;
            config.auth_info.token = ai.token;
            config.auth_info.token_file = None;
            config.auth_info.exec = None;
            config.auth_info.auth_provider = None;
        }
        if let Some(u) = &g.as_user {
            config.auth_info.impersonate = Some(u.clone());
            config.auth_info.impersonate_groups =
                (!g.as_group.is_empty()).then(|| g.as_group.clone());
        }
        if let Some(t) = g.request_timeout.0 {
            config.connect_timeout = Some(t);
            config.read_timeout = Some(t);
            config.write_timeout = Some(t);
        }
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let cluster_url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| {
            Failure::error(format!("cannot set up a client for {cluster_url}: {e}"))
        })?;
        Ok(Ctx {
            client,
            namespace,
            cluster_url,
            global: g.clone(),
        })
    }

    /// Turns a kube error of the request `what` (e.g. "list networks") into a message that says
    /// what to do. `crd` names the hybridnet CRD involved, if any: a 404 on it means it is missing.
    pub fn fail(&self, e: kube::Error, what: &str, crd: Option<&str>) -> Failure {
        describe_error(&e, what, crd, &self.cluster_url)
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The message for a failed request.
pub fn describe_error(e: &kube::Error, what: &str, crd: Option<&str>, url: &str) -> Failure {
    match e {
        kube::Error::Api(status) => {
            let msg = status.message.trim();
            match status.code {
                404 if crd.is_some()
                    && status.reason == "NotFound"
                    && msg.contains("could not find the requested resource") =>
                {
                    Failure::error(format!(
                        "{what}: the {} CRD is not installed in this cluster; {INSTALL_HINT}",
                        crd.unwrap_or_default()
                    ))
                }
                404 => Failure::error(format!("{what}: {msg}")),
                401 => Failure::error(format!(
                    "{what}: unauthorized ({msg}); the credentials of the kubeconfig were rejected: log in again or pick another --context"
                )),
                403 => Failure::error(format!(
                    "{what}: forbidden ({msg}); ask for RBAC permissions or use another --context"
                )),
                409 => Failure::error(format!("{what}: {msg}")),
                422 | 400 => Failure::usage(format!("{what}: the API server refused it: {msg}")),
                _ => Failure::error(format!(
                    "{what}: the API server answered {} {}: {msg}",
                    status.code, status.reason
                )),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let chain = source_chain(e);
            let timed_out = chain.to_ascii_lowercase().contains("timed out")
                || chain.to_ascii_lowercase().contains("timeout");
            Failure::error(format!(
                "{what}: cannot reach the cluster at {url}: {chain}\n{}",
                if timed_out {
                    "the request timed out: check the network path to the API server, or raise --request-timeout"
                } else {
                    "check that the API server is running and that --kubeconfig/--context point at it (`kubectl cluster-info`)"
                }
            ))
        }
        other => Failure::error(format!("{what}: {}", source_chain(other))),
    }
}
