//! hybridnet operator: cluster lifecycle, network control plane (IPAM) and admission webhooks

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-operator",
    version,
    about = "hybridnet operator: cluster lifecycle, network control plane (IPAM) and admission webhooks"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("hybridnet-operator is not implemented yet in this build")
}
