//! hybridnet node agent: programs the node data plane and serves the CNI plugin.
//!
//! Command lines (the DaemonSet contract of docs/operations.md):
//! - `hybridnet-node agent [--socket-dir DIR] [--proc-sys-net DIR] [agent flags]`: the agent as the
//!   DaemonSet runs it (the init container has installed the CNI files);
//! - `hybridnet-node install-cni --bin-dir D --conf-dir D [--conflist-name N] [--chained-plugins a,b]
//!   [--mtu N]`: the init container, copies the plugin and writes the conflist, then exits;
//! - `hybridnet-node [agent flags]`: the agent, installing the CNI files itself.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use hybridnet_api::operator::values::{MAX_MTU, MIN_MTU};
use hybridnet_node::agent::{AgentConfig, install, run};

/// The init container's job.
#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-node install-cni",
    about = "Install the hybridnet CNI plugin and its conflist, then exit"
)]
struct InstallCniArgs {
    /// CNI plugin folder of the host.
    #[arg(long)]
    bin_dir: PathBuf,
    /// CNI configuration folder of the host.
    #[arg(long)]
    conf_dir: PathBuf,
    #[arg(long, default_value = "06-hybridnet.conflist")]
    conflist_name: String,
    /// Plugins chained after hybridnet when their binaries are in --bin-dir.
    #[arg(long, value_delimiter = ',', default_value = "bandwidth,portmap")]
    chained_plugins: Vec<String>,
    /// Pod interface MTU passed to the plugin (default: derived from the parent interface).
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(MIN_MTU)..=i64::from(MAX_MTU)))]
    mtu: Option<u32>,
    /// The agent's socket as the plugin sees it.
    #[arg(long, default_value = "/run/hybridnet/hybridnet.sock")]
    server_socket: PathBuf,
    /// The plugin binary to copy (default: `hybridnet` next to this program).
    #[arg(long)]
    source_binary: Option<PathBuf>,
}

fn install_cni(a: &InstallCniArgs) -> anyhow::Result<()> {
    if a.conflist_name.contains('/') || !a.conflist_name.ends_with(".conflist") {
        anyhow::bail!(
            "--conflist-name {:?}: want a file name ending in .conflist",
            a.conflist_name
        );
    }
    let source = match &a.source_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("hybridnet"))
            .context("no folder of this program")?,
    };
    let bytes = std::fs::read(&source)
        .with_context(|| format!("reading the plugin {}", source.display()))?;
    let bin = install::write_atomic(&a.bin_dir, "hybridnet", &bytes, 0o755)
        .with_context(|| format!("installing the plugin into {}", a.bin_dir.display()))?;
    let mut conf = install::render_conflist(&a.server_socket, &a.bin_dir);
    if let Some(plugins) = conf["plugins"].as_array_mut() {
        plugins.retain(|p| {
            let t = p["type"].as_str().unwrap_or("");
            t == "hybridnet" || a.chained_plugins.iter().any(|c| c == t)
        });
        if let (Some(mtu), Some(first)) = (a.mtu, plugins.first_mut()) {
            first["mtu"] = mtu.into();
        }
    }
    let text = serde_json::to_vec_pretty(&conf)?;
    let written = install::write_atomic(&a.conf_dir, &a.conflist_name, &text, 0o644)
        .with_context(|| format!("writing the conflist into {}", a.conf_dir.display()))?;
    // An old name must not shadow the new one (runtimes take the first conflist by name).
    for e in std::fs::read_dir(&a.conf_dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != a.conflist_name && n.ends_with("-hybridnet.conflist") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    println!("installed {} and {}", bin.display(), written.display());
    Ok(())
}

/// Turns the DaemonSet's `agent` flags into the agent's own: `--socket-dir D` means
/// `--bind-socket D/hybridnet.sock`, `--proc-sys-net D` moves sysctl writes, and the init
/// container has installed the CNI files already.
fn agent_args(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = vec![
        "hybridnet-node".to_string(),
        "--skip-cni-install".to_string(),
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        match flag {
            "--socket-dir" | "--proc-sys-net" => {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .with_context(|| format!("{flag} needs a value"))?,
                };
                if v.is_empty() || !Path::new(&v).is_absolute() {
                    anyhow::bail!("{flag} {v:?}: want an absolute path");
                }
                if flag == "--socket-dir" {
                    out.push(format!(
                        "--bind-socket={}",
                        Path::new(&v).join("hybridnet.sock").display()
                    ));
                } else {
                    hybridnet_node::procfs::set_net_root(PathBuf::from(v));
                }
            }
            _ => out.push(a.clone()),
        }
    }
    Ok(out)
}

/// Logs to stderr, as JSON lines with `json` (`--log-json`, like the operator's); `RUST_LOG`
/// filters (default info).
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let cfg = match argv.get(1).map(String::as_str) {
        Some("install-cni") => {
            init_logging(false);
            let a = InstallCniArgs::parse_from(
                std::iter::once("hybridnet-node install-cni".to_string())
                    .chain(argv[2..].iter().cloned()),
            );
            return install_cni(&a);
        }
        Some("agent") => AgentConfig::parse_from(agent_args(&argv[2..])?),
        _ => AgentConfig::parse(),
    };
    init_logging(cfg.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn daemonset_flags_become_agent_flags() {
        let out = agent_args(&s(&[
            "--health-port=11021",
            "--socket-dir=/run/hybridnet",
            "--proc-sys-net",
            "/host/proc/sys/net",
        ]))
        .unwrap();
        assert_eq!(
            out,
            s(&[
                "hybridnet-node",
                "--skip-cni-install",
                "--health-port=11021",
                "--bind-socket=/run/hybridnet/hybridnet.sock"
            ])
        );
        assert_eq!(
            hybridnet_node::procfs::net_root(),
            PathBuf::from("/host/proc/sys/net")
        );
        let mut with_node = out.clone();
        with_node.push("--node-name=node1".into());
        let cfg = AgentConfig::try_parse_from(&with_node).unwrap();
        assert!(cfg.skip_cni_install);
        assert_eq!(
            cfg.bind_socket,
            PathBuf::from("/run/hybridnet/hybridnet.sock")
        );
    }

    #[test]
    fn hostile_agent_flags_are_refused() {
        assert!(agent_args(&s(&["--socket-dir"])).is_err());
        assert!(agent_args(&s(&["--socket-dir=relative"])).is_err());
        assert!(agent_args(&s(&["--proc-sys-net="])).is_err());
    }

    #[test]
    fn install_cni_writes_plugin_and_filtered_conflist() {
        let d = std::env::temp_dir().join(format!("hn-install-{}", std::process::id()));
        let (bin, conf) = (d.join("bin"), d.join("net.d"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        let src = d.join("plugin");
        std::fs::write(&src, b"#!/bin/true").unwrap();
        for p in ["bandwidth", "portmap"] {
            std::fs::write(bin.join(p), b"").unwrap();
        }
        std::fs::write(conf.join("05-hybridnet.conflist"), b"{}").unwrap();
        let a = InstallCniArgs::parse_from([
            "x",
            "--bin-dir",
            bin.to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
            "--chained-plugins",
            "portmap",
            "--mtu",
            "1400",
            "--source-binary",
            src.to_str().unwrap(),
        ]);
        install_cni(&a).unwrap();
        assert_eq!(
            std::fs::read(bin.join("hybridnet")).unwrap(),
            b"#!/bin/true"
        );
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(conf.join("06-hybridnet.conflist")).unwrap())
                .unwrap();
        let types: Vec<&str> = c["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["hybridnet", "portmap"]);
        assert_eq!(c["plugins"][0]["mtu"], 1400);
        assert_eq!(
            c["plugins"][0]["server_socket"],
            "/run/hybridnet/hybridnet.sock"
        );
        assert!(
            !conf.join("05-hybridnet.conflist").exists(),
            "old name removed"
        );
        let bad = InstallCniArgs::parse_from([
            "x",
            "--bin-dir",
            "/b",
            "--conf-dir",
            "/c",
            "--conflist-name",
            "../x",
        ]);
        assert!(
            install_cni(&bad)
                .unwrap_err()
                .to_string()
                .contains("want a file name")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
