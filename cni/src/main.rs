//! hybridnet CNI plugin: forwards CNI requests to the node agent

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet",
    version,
    about = "hybridnet CNI plugin: forwards CNI requests to the node agent"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("hybridnet is not implemented yet in this build")
}
