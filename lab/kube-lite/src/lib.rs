//! kube-lite: a small, faithful in-memory Kubernetes API server for tests and the lab.
//!
//! It serves the Kubernetes REST API over HTTP (or HTTPS with a generated CA) from memory:
//! CRUD, list with selectors and pagination, watch with bookmarks and 410 after compaction,
//! finalizers, owner garbage collection, the status subresource, JSON/merge/strategic patches,
//! server-side apply with managedFields, CRD registration, discovery, Table output and admission
//! webhooks. The real `kube::Client` and the real `kubectl` work against it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube::{Api, api::PostParams};
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! let srv = kube_lite::Server::start(kube_lite::Config::default()).await?;
//! let client = srv.client().await?;
//! let cms: Api<ConfigMap> = Api::namespaced(client, "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("demo".into());
//! cms.create(&PostParams::default(), &cm).await?;
//! // for kubectl: kubectl --kubeconfig <path> get configmaps
//! println!("{}", srv.kubeconfig_path().display());
//! # Ok(()) }
//! ```
//!
//! See `README.md` for the exact differences from a real API server.

#![forbid(unsafe_code)]

pub mod admission;
pub mod error;
pub mod faults;
mod http;
pub mod managed;
pub mod merge;
pub mod ops;
mod proto;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod store;
pub mod table;
pub mod tls;
pub mod util;
pub mod validate;

pub use admission::ServiceResolver;
pub use error::ApiError;
pub use faults::{ErrorRule, Faults};

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::{Expect, Store};

/// Server configuration.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve HTTPS with a generated CA; the kubeconfig embeds the CA.
    pub tls: bool,
    /// Require `Authorization: Bearer <token>` (the kubeconfig carries it). None: no auth.
    pub token: Option<String>,
    /// Events kept per resource for watches from an old resourceVersion (the compaction window).
    pub watch_window: usize,
    /// Interval of BOOKMARK events for watches with allowWatchBookmarks.
    pub bookmark_interval: Duration,
    /// Watch duration when the client gives no timeoutSeconds.
    pub default_watch_timeout: Duration,
    /// Creating a namespaced object needs its Namespace (as with the NamespaceLifecycle plugin).
    pub require_namespace: bool,
    /// Base URLs for webhook `clientConfig.service`, keyed by "namespace/name"
    /// (e.g. `https://127.0.0.1:8443`); there is no cluster DNS.
    pub service_overrides: HashMap<String, String>,
    /// Fallback resolver for webhook services: (namespace, name, port) -> base URL.
    pub service_resolver: Option<ServiceResolver>,
    /// Namespaces created at start.
    pub namespaces: Vec<String>,
    /// Where to write the kubeconfig (None: a file in the temp dir, removed on drop).
    pub kubeconfig_path: Option<PathBuf>,
    /// Reported by /version as gitVersion.
    pub git_version: String,
    /// Further bearer tokens, each authenticating as its user (username, groups and extra go into
    /// admission requests' `userInfo`, as a real API server's authenticators fill them). The
    /// `token` above and unauthenticated access (no `token`) are the admin `kube-lite-admin`.
    pub users: Vec<TokenUser>,
}

/// A bearer token and the user it authenticates as (see [`Config::users`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenUser {
    pub token: String,
    pub username: String,
    pub groups: Vec<String>,
    /// For example `authentication.kubernetes.io/node-name` of a pod-bound ServiceAccount token.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl TokenUser {
    /// The admin every request without one of [`Config::users`]' tokens acts as.
    pub fn admin() -> TokenUser {
        TokenUser {
            token: String::new(),
            username: "kube-lite-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: Default::default(),
        }
    }

    /// `userInfo` of an AdmissionReview.
    pub fn user_info(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.username, "groups": self.groups});
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            token: None,
            watch_window: 10_000,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
            require_namespace: true,
            service_overrides: HashMap::new(),
            service_resolver: None,
            namespaces: vec![
                "default".into(),
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
            kubeconfig_path: None,
            git_version: "v1.37.0-kube-lite".into(),
            users: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("watch_window", &self.watch_window)
            .finish_non_exhaustive()
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("generating TLS certificates: {0}")]
    Certs(String),
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Shared server state.
pub struct State {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) faults: Arc<Faults>,
    pub(crate) gc: tokio::sync::Notify,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    pub(crate) started: i64,
}

/// Register, update or remove the resource defined by a CRD object.
pub(crate) fn register_crd(state: &State, crd: &Value, removed: bool) {
    let parsed = resources::crd_resource(crd);
    let mut inner = state.store.write();
    let gr = match &parsed {
        Ok(info) => info.gr(),
        Err(_) => return,
    };
    if removed {
        inner.drop_resource(&gr);
        inner.registry.remove(&gr);
        tracing::info!(group = %gr.0, resource = %gr.1, "CRD removed");
    } else if let Ok(info) = parsed {
        tracing::info!(group = %info.group, resource = %info.plural, namespaced = info.namespaced, "CRD registered");
        inner.registry.insert(info);
    }
}

/// Entry point.
pub struct Server;

impl Server {
    /// Start serving; the server stops when the handle is dropped.
    pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let certs = if config.tls {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            let ip = addr.ip().to_string();
            if !names.contains(&ip) && !addr.ip().is_unspecified() {
                names.push(ip);
            }
            Some(tls::generate(&names).map_err(|e| StartError::Certs(e.to_string()))?)
        } else {
            None
        };
        let store = Store::new(resources::Registry::with_builtins(), config.watch_window);
        {
            let mut inner = store.write();
            for ns in &config.namespaces {
                let obj = json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": util::new_uid(), "creationTimestamp": util::now_rfc3339(),
                                 "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                });
                let _ = inner.put(&(String::new(), "namespaces".into()), obj, Expect::Absent);
            }
        }
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let state = Arc::new(State {
            store,
            config: config.clone(),
            faults: Arc::new(Faults::default()),
            gc: tokio::sync::Notify::new(),
            shutdown,
            started: util::now_secs(),
        });
        let scheme = if certs.is_some() { "https" } else { "http" };
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url = format!("{scheme}://{host}:{}", addr.port());

        let server_handle = axum_server::Handle::new();
        let app = http::router(state.clone());
        let sh = server_handle.clone();
        match &certs {
            Some(c) => {
                let cfg = tls::server_config(&c.cert_pem, &c.key_pem).map_err(StartError::Certs)?;
                let rustls_cfg = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg));
                let server = axum_server::from_tcp_rustls(listener, rustls_cfg)
                    .map_err(|source| StartError::Bind { addr, source })?
                    .handle(sh);
                tokio::spawn(async move {
                    if let Err(e) = server.serve(app.into_make_service()).await {
                        tracing::error!(error = %e, "kube-lite server failed");
                    }
                });
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(|source| StartError::Bind { addr, source })?
                    .handle(sh);
                tokio::spawn(async move {
                    if let Err(e) = server.serve(app.into_make_service()).await {
                        tracing::error!(error = %e, "kube-lite server failed");
                    }
                });
            }
        }
        // background garbage collector
        let gc_state = Arc::downgrade(&state);
        let mut stop = state.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let Some(st) = gc_state.upgrade() else { return };
                tokio::select! {
                    _ = st.gc.notified() => {}
                    _ = stop.changed() => return,
                }
                // cascades: keep collecting while something was deleted
                while ops::collect_garbage(&st).await > 0 {}
            }
        });

        let kubeconfig = kubeconfig_yaml(
            &url,
            certs.as_ref().map(|c| c.ca_pem.as_str()),
            config.token.as_deref(),
        );
        let (path, temp) = match &config.kubeconfig_path {
            Some(p) => (p.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "kube-lite-{}-{}.kubeconfig",
                    std::process::id(),
                    util::name_suffix()
                )),
                true,
            ),
        };
        std::fs::write(&path, &kubeconfig).map_err(|source| StartError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
        tracing::info!(%url, kubeconfig = %path.display(), "kube-lite serving");
        Ok(ServerHandle {
            state,
            url,
            addr,
            kubeconfig,
            kubeconfig_path: path,
            temp_kubeconfig: temp,
            server: server_handle,
            certs,
        })
    }
}

fn kubeconfig_yaml(url: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let ca = ca_pem
        .map(|c| {
            format!(
                "\n    certificate-authority-data: {}",
                util::base64_encode(c.as_bytes())
            )
        })
        .unwrap_or_default();
    let user = match token {
        Some(t) => format!("\n    token: {t}"),
        None => " {}".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-lite\n  cluster:\n    server: {url}{ca}\ncontexts:\n- name: kube-lite\n  context:\n    cluster: kube-lite\n    user: kube-lite\n    namespace: default\ncurrent-context: kube-lite\nusers:\n- name: kube-lite\n  user:{user}\npreferences: {{}}\n"
    )
}

/// A running server. Dropping it stops the server and removes a temporary kubeconfig.
pub struct ServerHandle {
    state: Arc<State>,
    url: String,
    addr: SocketAddr,
    kubeconfig: String,
    kubeconfig_path: PathBuf,
    temp_kubeconfig: bool,
    server: axum_server::Handle<SocketAddr>,
    certs: Option<tls::CertBundle>,
}

impl ServerHandle {
    /// Base URL (`http://127.0.0.1:PORT` or `https://...`).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The kubeconfig YAML for this server.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }
    /// Path of the written kubeconfig (for `kubectl --kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }
    /// PEM of the CA that signed the serving certificate (TLS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.certs.as_ref().map(|c| c.ca_pem.as_str())
    }
    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }
    /// Drop all buffered watch events: watches from any older resourceVersion get 410 Expired.
    pub fn compact(&self) {
        self.state.store.write().compact();
    }
    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.read().rv
    }
    /// Number of stored objects of a resource (group "" for core).
    pub fn object_count(&self, group: &str, plural: &str) -> usize {
        self.state
            .store
            .read()
            .count(&(group.to_string(), plural.to_string()))
    }
    /// Run garbage collection now and wait for it (normally it runs in the background after deletes).
    pub async fn collect_garbage(&self) {
        while ops::collect_garbage(&self.state).await > 0 {}
    }
    /// A `kube::Client` configured from this server's kubeconfig.
    #[cfg(feature = "client")]
    pub async fn client(&self) -> Result<kube::Client, kube::Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig)
            .map_err(kube::Error::InferKubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?;
        kube::Client::try_from(cfg)
    }
    /// A `kube::Client` like [`ServerHandle::client`] that authenticates with `token` (one of
    /// [`Config::users`]).
    #[cfg(feature = "client")]
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client, kube::Error> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig)
            .map_err(kube::Error::InferKubeconfig)?;
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?;
        cfg.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(cfg)
    }
    /// Stop serving now (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.state.shutdown.send(true);
        self.server.shutdown();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
        if self.temp_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_shape() {
        let k = kubeconfig_yaml("https://127.0.0.1:1", Some("PEM"), Some("tok"));
        assert!(k.contains("certificate-authority-data: UEVN"));
        assert!(k.contains("token: tok"));
        let k = kubeconfig_yaml("http://127.0.0.1:1", None, None);
        assert!(k.contains("user: {}"));
    }
}
