//! kubectl hybridnet: networks, subnets, IP usage, leak checks and policy-routing traces

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-hybridnet",
    version,
    about = "kubectl hybridnet: networks, subnets, IP usage, leak checks and policy-routing traces"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("kubectl-hybridnet is not implemented yet in this build")
}
