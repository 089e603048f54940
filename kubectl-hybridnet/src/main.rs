//! kubectl hybridnet: networks, subnets, IP usage and leaks, policy-routing traces, status.
//!
//! kubectl runs this binary as `kubectl hybridnet ...` when it is on PATH. All decisions live in
//! the library (`kubectl_hybridnet`); this file and `shell/` only talk to the cluster and print.

#![forbid(unsafe_code)]

mod shell;

use clap::Parser;

use kubectl_hybridnet::cli::{Cli, Command};
use shell::connect::{Res, exit};

async fn run(cli: Cli) -> Res<i32> {
    let g = &cli.global;
    match &cli.command {
        Command::Network(c) => shell::commands::network(g, c).await,
        Command::Subnet(c) => shell::commands::subnet(g, c).await,
        Command::Ip(c) => shell::commands::ip(g, c).await,
        Command::Cluster(c) => shell::commands::cluster(g, c).await,
        Command::Trace(a) => shell::trace::trace(g, a).await,
        Command::Status(a) => shell::commands::status(g, a).await,
        Command::Install(a) => shell::commands::install(g, a).await,
        Command::Uninstall(a) => shell::uninstall::uninstall(g, a).await,
        Command::Migrate(c) => shell::migrate::migrate(g, c).await,
        Command::Version(a) => shell::commands::version(g, a).await,
        Command::Completion(a) => shell::completion::completion(a),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    if args.get(1).map(String::as_str) == Some("__complete") {
        let code = runtime.block_on(shell::completion::complete_words(args[2..].to_vec()));
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    };
    std::process::exit(code);
}
