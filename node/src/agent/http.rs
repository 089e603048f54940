//! The health and metrics HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::caches::Shared;

/// Serves /healthz, /readyz and /metrics on a bound `listener` (bound by the caller, so a port
/// in use fails the agent's start instead of a background task).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    health: bool,
    metrics: bool,
    max_age: Duration,
) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let mut app = axum::Router::new();
    if health {
        // `/live` and `/ready` are upstream's daemon paths on the same port (11021; upstream
        // cmd/daemon/main.go), kept so probes and scripts written for it keep working.
        for (path, ready) in [
            ("/healthz", false),
            ("/live", false),
            ("/readyz", true),
            ("/ready", true),
        ] {
            let s = shared.clone();
            app = app.route(
                path,
                get(move || {
                    let s = s.clone();
                    async move {
                        let res = if ready {
                            s.readiness()
                        } else {
                            s.liveness(max_age)
                        };
                        match res {
                            Ok(()) => (StatusCode::OK, "ok".to_string()),
                            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                        }
                    }
                }),
            );
        }
    }
    if metrics {
        let s = shared.clone();
        app = app.route(
            "/metrics",
            get(move || {
                let s = s.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        s.metrics.encode(),
                    )
                }
            }),
        );
    }
    axum::serve(listener, app).await.context("http server")?;
    Ok(())
}

pub(super) async fn bind_http(
    addr: SocketAddr,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the {what} port {addr}"))
}
