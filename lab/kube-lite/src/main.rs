//! kube-lite binary: serve the in-memory API server until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-lite",
    version,
    about = "kube-lite: a small in-memory Kubernetes API server for tests and the lab"
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig for this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Serve HTTPS with a generated CA (embedded in the kubeconfig).
    #[arg(long)]
    tls: bool,
    /// Require this bearer token (written into the kubeconfig).
    #[arg(long, env = "KUBE_LITE_TOKEN")]
    token: Option<String>,
    /// Events kept per resource for watches from old resourceVersions.
    #[arg(long, default_value_t = 10_000)]
    watch_window: usize,
    /// Allow namespaced objects in namespaces that do not exist.
    #[arg(long)]
    no_require_namespace: bool,
    /// Webhook service address override, NAMESPACE/NAME=https://HOST:PORT (repeatable).
    #[arg(long = "webhook-service", value_parser = parse_override)]
    webhook_services: Vec<(String, String)>,
}

fn parse_override(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAMESPACE/NAME=URL")?;
    if !k.contains('/') || !(v.starts_with("https://") || v.starts_with("http://")) {
        return Err(format!(
            "expected NAMESPACE/NAME=https://HOST:PORT, got {s}"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kube_lite=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = kube_lite::Config {
        listen: cli.listen,
        tls: cli.tls,
        token: cli.token,
        watch_window: cli.watch_window,
        require_namespace: !cli.no_require_namespace,
        service_overrides: cli.webhook_services.into_iter().collect(),
        kubeconfig_path: Some(cli.kubeconfig.clone()),
        ..Default::default()
    };
    let srv = kube_lite::Server::start(config)
        .await
        .context("starting kube-lite")?;
    println!("{}", srv.addr());
    use std::io::Write;
    std::io::stdout().flush().context("flushing stdout")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    drop(srv);
    Ok(())
}
