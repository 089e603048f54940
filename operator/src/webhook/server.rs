//! The HTTPS server: routes, serving certificate (files or Secret, reloaded on change) and
//! readiness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{info, warn};

use super::WebhookState;
use crate::controlplane::runtime::metrics::WebhookLatencyLabels;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in a directory; re-read when their content changes.
    Dir(PathBuf),
    /// A `kubernetes.io/tls` Secret; reloaded when it changes.
    Secret { namespace: String, name: String },
}

/// Errors of the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading the serving certificate from {path}: {source}")]
    CertFiles {
        path: String,
        source: std::io::Error,
    },
    #[error("reading Secret {namespace}/{name}: {source}")]
    SecretGet {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} lacks data key {key}")]
    SecretKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("the certificate or key of Secret {namespace}/{name} is not usable: {source}")]
    SecretPem {
        namespace: String,
        name: String,
        source: std::io::Error,
    },
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The router: `/validate`, `/mutate`, `/readyz`, `/healthz`.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn readyz(State(st): State<Arc<WebhookState>>) -> (StatusCode, &'static str) {
    if st.caches.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn validate(
    State(st): State<Arc<WebhookState>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<serde_json::Value> {
    let started = Instant::now();
    let out = super::review::to_wire(super::review::validate(&st, review).await);
    st.metrics
        .webhook_seconds
        .get_or_create(&WebhookLatencyLabels {
            webhook: "validate".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    Json(out)
}

async fn mutate(
    State(st): State<Arc<WebhookState>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<serde_json::Value> {
    let started = Instant::now();
    let out = super::review::to_wire(super::review::mutate(&st, review).await);
    st.metrics
        .webhook_seconds
        .get_or_create(&WebhookLatencyLabels {
            webhook: "mutate".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    Json(out)
}

/// Installs rustls' ring provider as the process default (the only provider we ship).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn read_dir_pem(dir: &std::path::Path) -> Result<(Vec<u8>, Vec<u8>), ServerError> {
    let read = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| ServerError::CertFiles {
                    path: path.display().to_string(),
                    source,
                })
        }
    };
    Ok((read("tls.crt").await?, read("tls.key").await?))
}

async fn read_secret_pem(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(Vec<u8>, Vec<u8>), ServerError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| ServerError::SecretGet {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })?;
    secret_pem(&secret, namespace, name)
}

fn secret_pem(
    secret: &Secret,
    namespace: &str,
    name: &str,
) -> Result<(Vec<u8>, Vec<u8>), ServerError> {
    let data = secret.data.clone().unwrap_or_default();
    let get = |key: &'static str| {
        data.get(key)
            .map(|b| b.0.clone())
            .ok_or_else(|| ServerError::SecretKey {
                namespace: namespace.into(),
                name: name.into(),
                key,
            })
    };
    Ok((get("tls.crt")?, get("tls.key")?))
}

/// Loads the first certificate and keeps reloading it in the background.
pub async fn load_certificate(
    client: &Client,
    source: &CertSource,
    reload_every: Duration,
) -> Result<RustlsConfig, ServerError> {
    install_crypto_provider();
    match source {
        CertSource::Dir(dir) => {
            let (cert, key) = read_dir_pem(dir).await?;
            let config = RustlsConfig::from_pem(cert.clone(), key.clone())
                .await
                .map_err(|source| ServerError::CertFiles {
                    path: dir.display().to_string(),
                    source,
                })?;
            let cfg = config.clone();
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut last = (cert, key);
                loop {
                    tokio::time::sleep(reload_every).await;
                    match read_dir_pem(&dir).await {
                        Ok(now) if now != last => {
                            match cfg.reload_from_pem(now.0.clone(), now.1.clone()).await {
                                Ok(()) => {
                                    info!(dir = %dir.display(), "reloaded the serving certificate");
                                    last = now;
                                }
                                Err(e) => {
                                    warn!(dir = %dir.display(), error = %e, "new serving certificate is not usable; keeping the old one")
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "could not re-read the serving certificate"),
                    }
                }
            });
            Ok(config)
        }
        CertSource::Secret { namespace, name } => {
            let (cert, key) = read_secret_pem(client, namespace, name).await?;
            let config = RustlsConfig::from_pem(cert.clone(), key.clone())
                .await
                .map_err(|source| ServerError::SecretPem {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            let cfg = config.clone();
            let api = Api::<Secret>::namespaced(client.clone(), namespace);
            let (namespace, name) = (namespace.clone(), name.clone());
            tokio::spawn(async move {
                let mut last = (cert, key);
                let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut stream = watcher(api, wc).default_backoff().applied_objects().boxed();
                while let Some(ev) = stream.next().await {
                    let secret = match ev {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(error = %e, "watching the certificate Secret failed; retrying");
                            continue;
                        }
                    };
                    match secret_pem(&secret, &namespace, &name) {
                        Ok(now) if now != last => {
                            match cfg.reload_from_pem(now.0.clone(), now.1.clone()).await {
                                Ok(()) => {
                                    info!(secret = %name, "reloaded the serving certificate from the Secret");
                                    last = now;
                                }
                                Err(e) => {
                                    warn!(secret = %name, error = %e, "new certificate in the Secret is not usable; keeping the old one")
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "certificate Secret is incomplete"),
                    }
                }
            });
            Ok(config)
        }
    }
}

/// Serves the webhook over TLS on `addr` until `handle` is shut down.
pub async fn serve(
    addr: SocketAddr,
    tls: RustlsConfig,
    state: Arc<WebhookState>,
    handle: Handle<SocketAddr>,
) -> Result<(), ServerError> {
    let app = router(state);
    axum_server::bind_rustls(addr, tls)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}
