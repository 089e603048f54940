//! One operator replica, wired: caches, the elected control plane, the webhook server and the
//! metrics endpoint. `main.rs` runs one; tests run several against kube-lite.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::controlplane::runtime::caches::Caches;
use crate::controlplane::runtime::config::ControlPlaneConfig;
use crate::controlplane::runtime::live_defaults::LiveDefaults;
use crate::controlplane::runtime::metrics::{self, Metrics};
use crate::controlplane::runtime::run::{ControlPlane, TermTask};
use crate::webhook::WebhookState;
use crate::webhook::server::{CertSource, ServerError, load_certificate, serve};

/// What to serve besides the control plane.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub control: ControlPlaneConfig,
    /// Webhook listen address and certificate; None runs no webhook.
    pub webhook: Option<(SocketAddr, CertSource)>,
    pub cert_reload: Duration,
    /// `/metrics` listen address (plain HTTP); None serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Run the control plane (elections and controllers); false serves the webhook only.
    pub control_plane: bool,
}

/// A running replica.
pub struct Replica {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    control_plane: Option<JoinHandle<()>>,
    webhook: Option<Handle<SocketAddr>>,
    pub webhook_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    pub caches: Caches,
    /// Pod defaults in force (HybridnetCluster, else the flags).
    pub defaults: LiveDefaults,
}

/// Errors starting a replica.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("webhook: {0}")]
    Webhook(#[from] ServerError),
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("webhook server did not start listening")]
    NotListening,
}

impl Replica {
    /// Starts everything and returns once the servers listen.
    pub async fn start(
        client: Client,
        cfg: ReplicaConfig,
        with_term: Option<TermTask>,
    ) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let (caches, caches_run) = Caches::start(&client);
        tasks.push(tokio::spawn(caches_run));
        let (defaults, defaults_run) = LiveDefaults::watch(&client, cfg.control.defaults.clone());
        tasks.push(tokio::spawn(defaults_run));

        let mut webhook = None;
        let mut webhook_addr = None;
        if let Some((addr, source)) = &cfg.webhook {
            let state = Arc::new(WebhookState {
                caches: caches.clone(),
                client: client.clone(),
                config: cfg.control.clone(),
                defaults: defaults.clone(),
                metrics: metrics.clone(),
            });
            let handle: Handle<SocketAddr> = Handle::new();
            let h = handle.clone();
            let addr = *addr;
            match load_certificate(&client, source, cfg.cert_reload).await {
                Ok(tls) => {
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = serve(addr, tls, state, h).await {
                            error!(error = %e, "webhook server stopped");
                        }
                    }));
                    webhook_addr = Some(handle.listening().await.ok_or(StartError::NotListening)?);
                    info!(addr = ?webhook_addr, "webhook server listening");
                }
                // The certificate Secret is written by the lifecycle reconciler of whichever
                // replica leads, which may be this one: failing here would crash-loop a fresh
                // install forever. Serve as soon as the Secret is there instead.
                Err(first @ ServerError::SecretGet { .. }) => {
                    warn!(error = %first, "webhook certificate Secret not there yet; the webhook starts once it is");
                    let (client, source, reload) =
                        (client.clone(), source.clone(), cfg.cert_reload);
                    tasks.push(tokio::spawn(async move {
                        let tls = loop {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            match load_certificate(&client, &source, reload).await {
                                Ok(tls) => break tls,
                                Err(e) => debug!(error = %e, "webhook certificate still missing"),
                            }
                        };
                        info!(%addr, "webhook certificate found; starting the webhook server");
                        if let Err(e) = serve(addr, tls, state, h).await {
                            error!(error = %e, "webhook server stopped");
                        }
                    }));
                }
                Err(e) => return Err(e.into()),
            }
            webhook = Some(handle);
        }

        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Metrics { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            let app = metrics::router(metrics.clone());
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }

        let mut control_plane = None;
        if cfg.control_plane {
            let cp = ControlPlane {
                client,
                config: cfg.control.clone(),
                metrics: metrics.clone(),
                caches: caches.clone(),
                defaults: defaults.clone(),
                with_term,
            };
            control_plane = Some(tokio::spawn(cp.run(shutdown_rx)));
        }
        Ok(Self {
            shutdown,
            tasks,
            control_plane,
            webhook,
            webhook_addr,
            metrics_addr,
            metrics,
            caches,
            defaults,
        })
    }

    /// Graceful stop: controllers stop, the Lease is released, servers close.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(h) = self.webhook.take() {
            h.graceful_shutdown(Some(Duration::from_secs(2)));
        }
        // The control plane returns after releasing the Lease; the rest is aborted.
        if let Some(cp) = self.control_plane.take() {
            let abort = cp.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), cp)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
        }
    }

    /// Like a crashed process: everything stops at once, nothing is released.
    pub fn kill(mut self) {
        if let Some(h) = self.webhook.take() {
            h.shutdown();
        }
        for t in std::mem::take(&mut self.tasks)
            .into_iter()
            .chain(self.control_plane.take())
        {
            t.abort();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(h) = self.webhook.take() {
            h.shutdown();
        }
        for t in self.tasks.iter().chain(self.control_plane.iter()) {
            t.abort();
        }
    }
}
