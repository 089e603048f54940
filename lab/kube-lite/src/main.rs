//! kube-lite: a small in-memory Kubernetes API server for tests and the lab

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "kube-lite",
    version,
    about = "kube-lite: a small in-memory Kubernetes API server for tests and the lab"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("kube-lite is not implemented yet in this build")
}
