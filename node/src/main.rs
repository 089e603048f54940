//! hybridnet node agent: programs the node data plane and serves the CNI plugin

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-node",
    version,
    about = "hybridnet node agent: programs the node data plane and serves the CNI plugin"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("hybridnet-node is not implemented yet in this build")
}
