//! hybridnet lab: the whole system on one Linux host in network namespaces.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-lab",
    version,
    about = "hybridnet lab: the whole system on one Linux host in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the lab.
    Up,
    /// Remove everything the lab created.
    Down,
    /// Show the lab.
    Status,
    /// Up, create networks and pods, show them, down.
    Demo,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "hybridnet-lab {:?}: the lab (issue 9) has not landed yet; nothing to run",
        cli.command
    )
}
