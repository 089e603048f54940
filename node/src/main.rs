//! hybridnet node agent: programs the node data plane and serves the CNI plugin

use clap::Parser;
use hybridnet_node::agent::{AgentConfig, run};

fn main() -> anyhow::Result<()> {
    let cfg = AgentConfig::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}
