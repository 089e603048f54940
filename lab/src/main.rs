//! hybridnet lab: the whole system on one Linux host in network namespaces.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hybridnet_lab::cluster::{self, LabParams, Runtime};
use hybridnet_lab::cri::CriClient;
use hybridnet_lab::cri_node::{self, CriRuntime};
use hybridnet_lab::kubelet::{self, KubeletConfig};
use hybridnet_lab::state::LabDirs;
use hybridnet_lab::supervisor::{self, ProcessSpec};
use hybridnet_lab::topology::{self, Role};
use hybridnet_lab::{demo, proxy, scheduler};

#[derive(Parser, Debug)]
#[command(
    name = "hybridnet-lab",
    version,
    about = "hybridnet lab: the whole system on one Linux host in network namespaces"
)]
struct Cli {
    /// Lab id: several labs can coexist under different ids.
    #[arg(long, global = true, default_value = "0", value_parser = parse_id)]
    id: String,
    #[command(subcommand)]
    command: Command,
}

fn parse_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{s:?}: a lab id is 1-4 letters or digits"));
    }
    Ok(s.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the lab: namespaces, API server, operator, node agents, scheduler and kubelets.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
        nodes: u32,
        /// How many of the nodes are in the lab's underlay network (label network=underlay).
        #[arg(long, default_value_t = 2)]
        underlay_nodes: u32,
        /// Extra nodes on their own routed links to the ToR (label network=bgp), which runs
        /// bird2 and peers with them.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
        bgp_nodes: u32,
        /// Clusters, each with its own API server (HTTPS), operator (MultiCluster feature on),
        /// nodes and agents, and the numbers of nodes above, on segments of their own behind the
        /// one ToR; the same overlay VNI, no shared address (docs/multicluster.md, the lab).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=topology::MAX_CLUSTERS as i64))]
        clusters: u32,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Remove every namespace, process and file of the lab (also after a crash of `up`).
    Down,
    /// Show the lab's hosts, processes and nodes.
    Status,
    /// Up, networks and pods of both kinds, IP list, connectivity matrix, one trace, down.
    Demo {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=16))]
        nodes: u32,
        /// BGP nodes (0, or at least 2 for the BGP pods).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=8))]
        bgp_nodes: u32,
        /// Leave the lab running at the end.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// (internal) The lab daemon of one cluster: host proxy to the API server, scheduler and
    /// kubelets.
    #[command(hide = true)]
    Daemon {
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..topology::MAX_CLUSTERS as i64))]
        cluster: u32,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct RuntimeArgs {
    /// What creates the pods' sandboxes: the lab kubelet itself, or a containerd on every node
    /// (its CRI plugin and runc; needs the pause image of `make images`).
    #[arg(long, value_enum, default_value_t = Runtime::Direct)]
    runtime: Runtime,
    /// Folder with the image archives of `make images` [default: target/images next to this
    /// binary's folder].
    #[arg(long)]
    images: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hybridnet_lab=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let dirs = LabDirs::new(&cli.id);
    match cli.command {
        Command::Up {
            nodes,
            underlay_nodes,
            bgp_nodes,
            clusters,
            runtime,
        } => up(
            &cli.id,
            &dirs,
            nodes,
            underlay_nodes,
            bgp_nodes,
            clusters,
            &runtime,
        ),
        Command::Down => down(&cli.id, &dirs),
        Command::Status => status(&cli.id, &dirs),
        Command::Demo {
            nodes,
            bgp_nodes,
            keep,
            runtime: runtime_args,
        } => {
            let r = up(
                &cli.id,
                &dirs,
                nodes,
                nodes.saturating_sub(1).max(1),
                bgp_nodes,
                1,
                &runtime_args,
            )
            .and_then(|()| runtime()?.block_on(demo::run(&dirs)));
            if !keep {
                down(&cli.id, &dirs)?;
            }
            r
        }
        Command::Daemon { cluster } => runtime()?.block_on(daemon(&dirs.cluster(cluster))),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces: run it as root");
    }
    Ok(())
}

fn up(
    id: &str,
    dirs: &LabDirs,
    nodes: u32,
    underlay_nodes: u32,
    bgp_nodes: u32,
    clusters: u32,
    runtime: &RuntimeArgs,
) -> anyhow::Result<()> {
    require_root()?;
    if clusters > 1 && runtime.runtime != Runtime::Direct {
        bail!("--clusters {clusters} runs the lab kubelet's own sandboxes (--runtime direct) only");
    }
    if dirs.root.join("lab.json").exists() {
        bail!(
            "lab {id} exists already ({}); run `hybridnet-lab --id {id} down` first",
            dirs.root.display()
        );
    }
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("no folder of the running binary")?
        .to_path_buf();
    let images_dir = match &runtime.images {
        Some(d) => d.clone(),
        None => bin_dir
            .parent()
            .map(|t| t.join("images"))
            .unwrap_or_default(),
    };
    if runtime.runtime == Runtime::Containerd {
        for name in ["pause.oci.tar", "hybridnet.oci.tar"] {
            let archive = images_dir.join(name);
            if !archive.is_file() {
                bail!(
                    "{} not found: build the images (make images, or scripts/images/build.sh images debug) or pass --images",
                    archive.display()
                );
            }
        }
    }
    let params = LabParams {
        id: id.to_string(),
        cluster: 0,
        clusters,
        nodes,
        underlay_nodes: underlay_nodes.min(nodes),
        bgp_nodes,
        bin_dir,
        runtime: runtime.runtime,
        images_dir,
    };
    for c in 0..clusters {
        let d = dirs.cluster(c);
        d.create()?;
        params.for_cluster(c).save(&d)?;
    }
    let r = up_steps(&params, dirs);
    if r.is_err() {
        eprintln!(
            "hybridnet-lab: up failed; logs are in {} (run `hybridnet-lab --id {id} down` to clean up)",
            dirs.logs().display()
        );
    }
    r
}

fn up_steps(params: &LabParams, dirs: &LabDirs) -> anyhow::Result<()> {
    let clusters: Vec<LabParams> = (0..params.clusters)
        .map(|c| params.for_cluster(c))
        .collect();
    let layouts: Vec<topology::Layout> = clusters.iter().map(LabParams::layout).collect();
    let hosts: usize = layouts.iter().map(|l| l.namespaces().len()).sum();
    eprintln!("lab {}: building {hosts} hosts", params.id);
    for layout in &layouts {
        topology::build(layout)?;
    }
    cluster::start_tor_bird(dirs, &layouts)?;
    if clusters.len() == 1 {
        up_cluster(params, dirs)?;
    } else {
        // The clusters come up side by side: nothing of one waits for the other.
        std::thread::scope(|s| {
            let running: Vec<_> = clusters
                .iter()
                .map(|p| s.spawn(|| up_cluster(p, &dirs.cluster(p.cluster))))
                .collect();
            running.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("bringing up a cluster panicked"))?
            })
        })?;
        cluster::write_clusters_kubeconfig(dirs, params.clusters)?;
    }
    if clusters.len() == 1 {
        eprintln!(
            "lab {} is up: export KUBECONFIG={}",
            params.id,
            dirs.host_kubeconfig().display()
        );
    } else {
        eprintln!("lab {} is up:", params.id);
        for p in &clusters {
            eprintln!(
                "  {}: export KUBECONFIG={}",
                p.label(),
                dirs.cluster(p.cluster).host_kubeconfig().display()
            );
        }
        let c0 = topology::cluster_name(0);
        let c1 = topology::cluster_name(1);
        eprintln!(
            "  connect them from the outside host (contexts {c0} and {c1}, servers inside the lab):\n  \
             KUBECONFIG={} ip netns exec {} kubectl hybridnet --context {c0} cluster connect --remote-context {c1}",
            dirs.clusters_kubeconfig().display(),
            layouts[0].outside.netns,
        );
    }
    Ok(())
}

/// Brings up one cluster of the lab in the hosts `up_steps` built: API server, lab daemon, Node
/// objects, CRDs, operator, HybridnetCluster and the node agents.
fn up_cluster(params: &LabParams, dirs: &LabDirs) -> anyhow::Result<()> {
    let layout = params.layout();
    let label = params.label();
    cluster::start_api_server(params, dirs, &layout)?;
    supervisor::start(
        dirs,
        &ProcessSpec {
            name: "lab-daemon".into(),
            netns: None,
            program: std::env::current_exe()?,
            args: vec![
                "--id".into(),
                params.id.clone(),
                "daemon".into(),
                "--cluster".into(),
                params.cluster.to_string(),
            ],
            env: std::env::vars().filter(|(k, _)| k == "RUST_LOG").collect(),
        },
    )?;
    cluster::wait_for_file(&dirs.host_kubeconfig(), Duration::from_secs(20))?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = cluster::client_from(&dirs.host_kubeconfig()).await?;
        cluster::register_nodes(&client, params, &layout).await?;
        cluster::apply_crds(&client).await?;
        cluster::create_operator_namespace(&client).await?;
        let cp = layout
            .host(&Role::ControlPlane)
            .context("no control plane")?;
        eprintln!("{label}: starting the operator");
        supervisor::start(dirs, &cluster::operator_process(params, dirs, &cp.netns)?)?;
        demo::create_cluster_object_for(&client, params.net(), params.clusters > 1).await?;
        let ds = cluster::wait_for_agent_daemonset(&client, Duration::from_secs(60)).await?;
        eprintln!(
            "{label}: starting node agents from DaemonSet {}",
            ds.metadata.name.as_deref().unwrap_or("")
        );
        match params.runtime {
            Runtime::Direct => cluster::start_node_agents(params, dirs, &layout, &ds).await?,
            Runtime::Containerd => {
                start_containerds(params, dirs, &layout).await?;
                for h in layout.nodes() {
                    hybridnet_lab::cri_agent::start(params, dirs, h, &ds)
                        .await
                        .with_context(|| format!("the node agent on {}", h.netns))?;
                }
            }
        }
        cluster::wait_for_available(&client, Duration::from_secs(120)).await?;
        anyhow::Ok(())
    })?;
    cluster::wait_for_conflists(dirs, &layout, Duration::from_secs(60))
}

/// Starts containerd on every node, with the pause and hybridnet images imported.
async fn start_containerds(
    params: &LabParams,
    dirs: &LabDirs,
    layout: &topology::Layout,
) -> anyhow::Result<()> {
    eprintln!("lab {}: starting containerd on every node", params.id);
    let images = [params.images_dir.join("hybridnet.oci.tar")];
    let images = &images;
    let starts = layout.nodes().filter_map(|h| match h.role {
        Role::Node(n) => Some(async move {
            let node = format!("node{n}");
            cri_node::start(dirs, &node, &h.netns, &params.pause_archive(), images)
                .await
                .with_context(|| format!("containerd on {node}"))
        }),
        _ => None,
    });
    for r in futures::future::join_all(starts).await {
        r?;
    }
    Ok(())
}

async fn daemon(dirs: &LabDirs) -> anyhow::Result<()> {
    let params = LabParams::load(dirs)?;
    let layout = params.layout();
    let cp = layout
        .host(&Role::ControlPlane)
        .context("no control plane")?
        .netns
        .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let target = cluster::api_addr(&params).parse()?;
    tokio::spawn(proxy::forward(listener, cp, target));
    let lab_kc = std::fs::read_to_string(dirs.lab_kubeconfig())?;
    // The same scheme: with TLS the server's certificate names 127.0.0.1 too.
    let url = cluster::api_url(&params);
    let scheme = url.split("://").next().unwrap_or("http");
    let host_kc = lab_kc.replace(&url, &format!("{scheme}://127.0.0.1:{port}"));
    let tmp = dirs.root.join("kubeconfig.tmp");
    std::fs::write(&tmp, host_kc)?;
    std::fs::rename(&tmp, dirs.host_kubeconfig())?;
    let client = cluster::client_from(&dirs.host_kubeconfig()).await?;
    let pause_image = match params.runtime {
        Runtime::Containerd => Some(hybridnet_lab::containerd::archive_image_name(
            &params.pause_archive(),
        )?),
        Runtime::Direct => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(scheduler::run(client.clone()));
    if params.runtime == Runtime::Containerd {
        tasks.spawn(hybridnet_lab::cri_agent::restart_exited(
            client.clone(),
            params.clone(),
            dirs.clone(),
            layout.clone(),
        ));
    }
    tasks.spawn(cluster::daemonset_controller(
        client.clone(),
        params.clone(),
        dirs.clone(),
        layout.clone(),
    ));
    for h in layout.nodes() {
        let Role::Node(n) = h.role else { continue };
        let node = format!("node{n}");
        let cfg = KubeletConfig {
            lab_id: params.id.clone(),
            node_name: node.clone(),
            node_netns: h.netns.clone(),
            node_ip: h.ip4().unwrap_or_default().to_string(),
            cni_conf_dir: dirs.cni_conf(&node),
            cni_path: vec![dirs.cni_bin(&node), PathBuf::from("/usr/lib/cni")],
            log_dir: dirs.logs(),
            host_paths: hybridnet_lab::cri_node::host_paths(dirs, &node),
            cri: pause_image.as_ref().map(|image| CriRuntime {
                client: CriClient::new(
                    &hybridnet_lab::cri_node::containerd_dir(dirs, &node).join("containerd.sock"),
                ),
                dirs: dirs.clone(),
                node: node.clone(),
                lab_id: params.id.clone(),
                pause_image: image.clone(),
            }),
        };
        tasks.spawn(kubelet::run(client.clone(), cfg));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        Some(r) = tasks.join_next() => {
            r??;
        }
    }
    Ok(())
}

fn down(id: &str, dirs: &LabDirs) -> anyhow::Result<()> {
    require_root()?;
    // Every cluster's processes (a lab of several clusters has c1/ ... beside cluster 0's files),
    // the later clusters first; then the namespaces of all of them.
    let mut cluster_dirs: Vec<LabDirs> = (1..topology::MAX_CLUSTERS)
        .map(|c| dirs.cluster(c))
        .filter(|d| d.root.exists())
        .collect();
    cluster_dirs.push(dirs.clone());
    for d in &cluster_dirs {
        stop_cluster(id, d)?;
    }
    topology::destroy(id)?;
    if dirs.root.exists() {
        std::fs::remove_dir_all(&dirs.root)
            .with_context(|| format!("removing {}", dirs.root.display()))?;
    }
    eprintln!("lab {id} is down");
    Ok(())
}

/// Stops one cluster's processes (its containerd nodes' pods first).
fn stop_cluster(id: &str, dirs: &LabDirs) -> anyhow::Result<()> {
    // Pods of containerd nodes go first, through CRI, while the agents still answer CNI DEL, and
    // after the kubelets (in the lab daemon) are gone, which would create them again.
    let cri_nodes = cri_node::nodes_with_containerd(dirs);
    if !cri_nodes.is_empty() {
        supervisor::stop(dirs, "lab-daemon", Duration::from_secs(3));
        let problems = runtime()?.block_on(async {
            let all = futures::future::join_all(
                cri_nodes
                    .iter()
                    .map(|n| cri_node::remove_all_sandboxes(dirs, n)),
            );
            tokio::time::timeout(Duration::from_secs(90), all)
                .await
                .map(|v| v.concat())
                .unwrap_or_else(|_| vec!["removing the pods timed out after 90 s".into()])
        });
        for p in problems {
            eprintln!("hybridnet-lab down: {p}");
        }
    }
    supervisor::stop_all(dirs, Duration::from_secs(3));
    for n in &cri_nodes {
        for p in cri_node::cleanup(dirs, id, n) {
            eprintln!("hybridnet-lab down: {n}: {p}");
        }
    }
    Ok(())
}

fn status(id: &str, dirs: &LabDirs) -> anyhow::Result<()> {
    let params = LabParams::load(dirs)?;
    let clusters = if params.clusters > 1 {
        format!(" in each of {} clusters", params.clusters)
    } else {
        String::new()
    };
    println!(
        "lab {id}: {} nodes ({} underlay) and {} BGP nodes{clusters}, state in {}",
        params.nodes,
        params.underlay_nodes,
        params.bgp_nodes,
        dirs.root.display()
    );
    for c in 0..params.clusters {
        let d = dirs.cluster(c);
        let label = params.for_cluster(c).label();
        if params.clusters > 1 {
            println!("{label} kubeconfig: {}", d.host_kubeconfig().display());
        } else {
            println!("kubeconfig: {}", d.host_kubeconfig().display());
        }
    }
    if params.clusters > 1 {
        println!(
            "kubeconfig inside the lab (contexts c0, c1): {}",
            dirs.clusters_kubeconfig().display()
        );
    }
    println!("\nnamespaces:");
    for ns in hybridnet_lab::netns::list_with_prefix(&format!("{}{id}-", topology::NS_PREFIX))? {
        println!("  {ns}");
    }
    for c in 0..params.clusters {
        let d = dirs.cluster(c);
        if params.clusters > 1 {
            println!("\nprocesses of {}:", params.for_cluster(c).label());
        } else {
            println!("\nprocesses:");
        }
        for name in supervisor::names(&d) {
            let state = if supervisor::alive(&d, &name) {
                "running"
            } else {
                "EXITED"
            };
            println!("  {name:<28} {state}");
        }
    }
    if params.bgp_nodes > 0 {
        println!("\nToR BGP sessions (birdc show protocols):");
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(cluster::tor_bird_socket(dirs))
            .args(["show", "protocols"])
            .output()
            .context("running birdc")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hybridnet-lab").chain(args.iter().copied()))
    }

    #[test]
    fn clusters_is_one_by_default_and_refuses_what_the_lab_cannot_build() {
        match parse(&["up"]).unwrap().command {
            Command::Up { clusters, .. } => assert_eq!(clusters, 1),
            other => panic!("{other:?}"),
        }
        match parse(&["up", "--clusters", "2", "--bgp-nodes", "1"])
            .unwrap()
            .command
        {
            Command::Up { clusters, .. } => assert_eq!(clusters, 2),
            other => panic!("{other:?}"),
        }
        for bad in ["0", "3", "-1", "two", "", "18446744073709551617"] {
            assert!(
                parse(&["up", "--clusters", bad]).is_err(),
                "--clusters {bad:?}"
            );
        }
        // The lab daemon serves one of the clusters `up` can build.
        assert!(parse(&["daemon", "--cluster", "1"]).is_ok());
        for bad in ["2", "-1", "x"] {
            assert!(
                parse(&["daemon", "--cluster", bad]).is_err(),
                "--cluster {bad:?}"
            );
        }
    }
}
