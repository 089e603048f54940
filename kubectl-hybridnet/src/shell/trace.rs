//! `trace`: fetch the API state, compute the path with the node agent's plan, optionally ask the
//! kernels of the nodes (`kubectl exec` into the node agent pods).

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_api::ipmath::parse_ip;
use hybridnet_api::v1::IpVersion;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use kubectl_hybridnet::cli::{GlobalFlags, TraceArgs};
use kubectl_hybridnet::inventory::InstanceFacts;
use kubectl_hybridnet::output::OutputFormat;
use kubectl_hybridnet::pathtrace::{
    self, Destination, PathReport, Source, TraceInputs, kernel_query_args, trace_path,
};

use super::connect::{Ctx, Failure, Res, exit};
use super::{io, print};

const OUTSIDE_V4: &str = "198.51.100.1";
const OUTSIDE_V6: &str = "2001:db8::1";

fn split_ref<'a>(s: &'a str, default_ns: &'a str) -> (&'a str, &'a str) {
    s.split_once('/').unwrap_or((default_ns, s))
}

/// Pod and namespace names go into request paths: only valid names get there.
fn check_ref(ns: &str, name: &str) -> Res<()> {
    kubectl_hybridnet::manifest::validate_namespace(ns).map_err(Failure::usage)?;
    kubectl_hybridnet::manifest::validate_object_name("pod", name).map_err(Failure::usage)
}

fn node_ip(
    addrs: &BTreeMap<String, Vec<IpAddr>>,
    node: &str,
    family: Option<IpVersion>,
) -> Option<IpAddr> {
    addrs
        .get(node)?
        .iter()
        .copied()
        .find(|ip| family.is_none_or(|f| IpVersion::of(ip) == f))
}

/// The `--to` argument.
enum To {
    Ip(IpAddr),
    Pod(String, String),
    Node(String),
}

/// Parses `--to` (an IP address, `[namespace/]pod` or `node/NAME`); names are checked before they
/// reach a request path.
fn parse_to(t: Option<&str>, default_ns: &str) -> Res<Option<To>> {
    let Some(t) = t else { return Ok(None) };
    if let Some(name) = t.strip_prefix("node/") {
        kubectl_hybridnet::manifest::validate_object_name("node", name)
            .map_err(|e| Failure::usage(format!("--to: {e}")))?;
        return Ok(Some(To::Node(name.to_string())));
    }
    match parse_ip(t) {
        Ok(ip) => Ok(Some(To::Ip(ip))),
        Err(_)
            if t.split_once('/')
                .is_some_and(|(ip, _)| parse_ip(ip).is_ok()) =>
        {
            Err(Failure::usage(format!(
                "--to {t:?}: a destination is one IP address, not a CIDR"
            )))
        }
        Err(_) if t.contains(':') || t.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            Err(Failure::usage(format!(
                "--to {t:?} is not an IP address, a pod or node/NAME"
            )))
        }
        Err(_) => {
            let (ns, name) = split_ref(t, default_ns);
            check_ref(ns, name).map_err(|e| Failure::usage(format!("--to: {}", e.message)))?;
            Ok(Some(To::Pod(ns.to_string(), name.to_string())))
        }
    }
}

/// The uplink name and VXLAN port the trace assumes: `--uplink`, else the cluster's node-agent
/// settings, else the defaults.
fn agent_settings(
    a: &TraceArgs,
    agent: Option<&hybridnet_api::operator::NodeAgentSpec>,
) -> (String, u16) {
    let uplink = a
        .uplink
        .clone()
        .or_else(|| {
            agent
                .and_then(|n| n.prefer_vxlan_interfaces.clone())
                .and_then(|v| v.into_iter().next())
        })
        .unwrap_or_else(|| "eth0".to_string());
    let vxlan_udp_port = agent
        .and_then(|n| n.vxlan_udp_port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(8472);
    (uplink, vxlan_udp_port)
}

/// The traced packet's source: a node's address or a pod's (which must exist in the API).
async fn resolve_source(
    ctx: &Ctx,
    pod: &str,
    facts: &[InstanceFacts],
    node_addresses: &BTreeMap<String, Vec<IpAddr>>,
    want_family: Option<IpVersion>,
) -> Res<Source> {
    if let Some(name) = pod.strip_prefix("node/") {
        kubectl_hybridnet::manifest::validate_object_name("node", name).map_err(Failure::usage)?;
        if !node_addresses.contains_key(name) {
            return Err(Failure::error(format!(
                "node {name:?} not found (`kubectl get nodes` lists them)"
            )));
        }
        let ip = node_ip(node_addresses, name, want_family).ok_or_else(|| {
            Failure::error(format!(
                "node {name} has no address{} in .status.addresses",
                want_family
                    .map(|f| format!(" of IPv{f}"))
                    .unwrap_or_default()
            ))
        })?;
        return Ok(Source::Node {
            name: name.to_string(),
            ip,
        });
    }
    let (ns, name) = split_ref(pod, &ctx.namespace);
    check_ref(ns, name)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match pods.get(name).await {
        Ok(_) => {}
        Err(e) if io::is_not_found(&e) => {
            return Err(Failure::error(format!(
                "pod {ns}/{name} not found (`kubectl get pods -n {ns}` lists them)"
            )));
        }
        Err(e) => return Err(ctx.fail(e, &format!("get pod {ns}/{name}"), None)),
    }
    let (ip, node) = pathtrace::pod_address(facts, ns, name, want_family).ok_or_else(|| {
        Failure::error(format!(
            "pod {ns}/{name} has no {}address bound to a node (`kubectl hybridnet ip ls -n {ns} --pod {name}`)",
            want_family.map(|f| format!("IPv{f} ")).unwrap_or_default()
        ))
    })?;
    Ok(Source::Pod {
        namespace: ns.to_string(),
        name: name.to_string(),
        node,
        ip,
    })
}

/// The destination of a packet from `src_ip`: the given address (with the pod or node that holds
/// it), a pod's or a node's address of the same family, or an outside address.
fn resolve_destination(
    to: Option<To>,
    src_ip: IpAddr,
    facts: &[InstanceFacts],
    node_addresses: &BTreeMap<String, Vec<IpAddr>>,
) -> Res<Destination> {
    let family = Some(IpVersion::of(&src_ip));
    Ok(match to {
        None => Destination {
            ip: (if src_ip.is_ipv4() {
                OUTSIDE_V4
            } else {
                OUTSIDE_V6
            })
            .parse()
            .map_err(|_| Failure::error("internal: outside address"))?,
            pod: None,
            node: None,
        },
        Some(To::Ip(ip)) => {
            let owner = facts
                .iter()
                .find(|f| f.ip == Some(ip) && !f.is_reserved() && !f.terminating);
            let node = owner.and_then(|f| f.node.clone()).or_else(|| {
                node_addresses
                    .iter()
                    .find(|(_, a)| a.contains(&ip))
                    .map(|(n, _)| n.clone())
            });
            Destination {
                ip,
                pod: owner.and_then(|f| f.pod.as_ref().map(|p| format!("{}/{p}", f.namespace))),
                node,
            }
        }
        Some(To::Pod(ns, name)) => {
            let (ip, node) =
                pathtrace::pod_address(facts, &ns, &name, family).ok_or_else(|| {
                    Failure::error(format!(
                        "destination pod {ns}/{name} has no IPv{} address bound to a node",
                        IpVersion::of(&src_ip)
                    ))
                })?;
            Destination {
                ip,
                pod: Some(format!("{ns}/{name}")),
                node: Some(node),
            }
        }
        Some(To::Node(n)) => {
            if !node_addresses.contains_key(&n) {
                return Err(Failure::error(format!(
                    "node {n:?} not found (`kubectl get nodes` lists them)"
                )));
            }
            let ip = node_ip(node_addresses, &n, family).ok_or_else(|| {
                Failure::error(format!(
                    "node {n} has no IPv{} address",
                    IpVersion::of(&src_ip)
                ))
            })?;
            Destination {
                ip,
                pod: None,
                node: Some(n),
            }
        }
    })
}

/// The text output: the path, the policy verdicts and the kernels' answers.
fn render_text(
    report: &PathReport,
    policy: &kubectl_hybridnet::policytrace::PolicyReport,
    live: Option<&[LiveHop]>,
    uplink: &str,
) -> String {
    let mut text = pathtrace::render(report, true, uplink);
    text.push('\n');
    text.push_str(&kubectl_hybridnet::policytrace::render(policy));
    if let Some(l) = live {
        text.push_str("\nkernel (--live):\n");
        for h in l {
            text.push_str(&format!("  {} $ {}\n", h.node, h.command));
            match (&h.output, &h.error) {
                (Some(o), _) => {
                    for line in o.lines() {
                        text.push_str(&format!("    {line}\n"));
                    }
                }
                (None, Some(e)) => text.push_str(&format!("    error: {e}\n")),
                _ => {}
            }
        }
    }
    text
}

pub async fn trace(g: &GlobalFlags, a: &TraceArgs) -> Res<i32> {
    print::only(
        a.output,
        &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
        "trace",
    )?;
    let ctx = Ctx::connect(g).await?;
    let nodes = io::nodes(&ctx).await?;
    let node_addresses: BTreeMap<String, Vec<IpAddr>> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                hybridnet_node::plan::node_status_addresses(n),
            )
        })
        .collect();
    let networks = io::networks(&ctx).await?;
    let subnets = io::subnets(&ctx).await?;
    let ip_instances = io::ipinstances(&ctx, true).await?;
    let node_infos = io::nodeinfos(&ctx).await?;
    // Other clusters' subnets and nodes when they can be read (no multi-cluster CRDs, or no
    // permission: a path inside this cluster only).
    let listing = io::Listing {
        selector: None,
        chunk_size: io::DEFAULT_CHUNK_SIZE,
    };
    let remote_subnets = io::list_listed(&ctx, "list remote subnets", &listing)
        .await
        .unwrap_or_default();
    let remote_vteps = io::list_listed(&ctx, "list remote vteps", &listing)
        .await
        .unwrap_or_default();
    let cluster = io::cluster(&ctx).await?.ok();
    let agent = cluster.as_ref().and_then(|c| c.spec.node_agent.as_ref());
    let (uplink, vxlan_udp_port) = agent_settings(a, agent);
    let facts: Vec<InstanceFacts> = ip_instances
        .iter()
        .map(InstanceFacts::from_ipinstance)
        .collect();

    // The destination first: it decides the family of the source address.
    let to = parse_to(a.to.as_deref(), &ctx.namespace)?;
    let want_family = match &to {
        Some(To::Ip(ip)) => Some(IpVersion::of(ip)),
        _ => None,
    };
    let source = resolve_source(&ctx, &a.pod, &facts, &node_addresses, want_family).await?;
    let src_ip = match &source {
        Source::Pod { ip, .. } | Source::Node { ip, .. } => *ip,
    };
    let dst = resolve_destination(to, src_ip, &facts, &node_addresses)?;
    let policy = {
        let model = kubectl_hybridnet::policytrace::model_of(
            io::network_policies(&ctx).await?,
            &io::pods(&ctx, true).await?,
            &io::namespaces(&ctx).await?,
            node_addresses.clone(),
        );
        kubectl_hybridnet::policytrace::report(&model, src_ip, dst.ip, a.port)
    };
    let inputs = TraceInputs {
        networks,
        subnets,
        ip_instances,
        node_infos,
        remote_subnets,
        remote_vteps,
        node_addresses,
        uplink: uplink.clone(),
        vxlan_udp_port,
    };
    let report =
        trace_path(&inputs, &source, &dst, a.reply).map_err(|e| Failure::usage(e.to_string()))?;

    let mut policy = policy;
    let live = if a.live {
        let agents = agent_pods(&ctx, a).await;
        let listings = policy_listings(&ctx, a, &agents, &policy).await;
        policy.live = kubectl_hybridnet::policytrace::live_counters(&policy.counted, &listings);
        Some(live_answers(&ctx, a, &agents, &report).await)
    } else {
        None
    };
    match a.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let mut v = serde_json::to_value(&report)
                .map_err(|e| Failure::error(format!("cannot render: {e}")))?;
            if let Some(l) = &live {
                v["live"] = serde_json::to_value(l)
                    .map_err(|e| Failure::error(format!("cannot render: {e}")))?;
            }
            v["policy"] = serde_json::to_value(&policy)
                .map_err(|e| Failure::error(format!("cannot render: {e}")))?;
            if a.output == OutputFormat::Json {
                print::json(&v)?
            } else {
                print::yaml(&v)?
            }
        }
        _ => print::out(&render_text(&report, &policy, live.as_deref(), &uplink))?,
    }
    match &live {
        Some(l)
            if l.iter().any(|h| h.error.is_some())
                || policy.live.iter().any(|c| c.error.is_some()) =>
        {
            Ok(exit::ERROR)
        }
        _ => Ok(exit::OK),
    }
}

#[derive(serde::Serialize)]
struct LiveHop {
    node: String,
    command: String,
    output: Option<String>,
    error: Option<String>,
}

/// The node agent pods (for --live).
async fn agent_pods(ctx: &Ctx, a: &TraceArgs) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &a.agent_namespace);
    pods.list(&ListParams::default().labels(&a.agent_selector))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("cannot list node agent pods in {}: {e}", a.agent_namespace))
}

/// Runs `args` in the node agent pod of `node` (`kubectl exec`): its stdout, or what failed.
async fn exec_on_node(
    ctx: &Ctx,
    a: &TraceArgs,
    agents: &Result<Vec<Pod>, String>,
    node: &str,
    args: &[String],
) -> Result<String, String> {
    let pod = match agents {
        Err(e) => return Err(e.clone()),
        Ok(l) => l
            .iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .and_then(|p| p.metadata.name.clone())
            .ok_or_else(|| {
                format!(
                    "no node agent pod on node {node} (namespace {}, selector {}; see --agent-namespace, --agent-selector)",
                    a.agent_namespace, a.agent_selector
                )
            })?,
    };
    let mut cmd = tokio::process::Command::new("kubectl");
    if let Some(k) = &ctx.global.kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    if let Some(c) = &ctx.global.context {
        cmd.arg("--context").arg(c);
    }
    cmd.args(["-n", &a.agent_namespace, "exec", &pod, "--"])
        .args(args)
        .kill_on_drop(true);
    // A hung exec must not hang the trace: bounded by --request-timeout, else 30 s.
    let limit = ctx
        .global
        .request_timeout
        .0
        .unwrap_or(std::time::Duration::from_secs(30));
    match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => Err(format!(
            "kubectl exec {pod} did not finish within {limit:?}"
        )),
        Ok(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(Ok(o)) => Err(format!(
            "kubectl exec {pod} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("cannot run kubectl: {e}")),
    }
}

async fn live_answers(
    ctx: &Ctx,
    a: &TraceArgs,
    agents: &Result<Vec<Pod>, String>,
    report: &PathReport,
) -> Vec<LiveHop> {
    let mut out = Vec::new();
    for h in &report.hops {
        let args = kernel_query_args(&h.query);
        let command = args.join(" ");
        let (output, error) = match exec_on_node(ctx, a, agents, &h.node, &args).await {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        out.push(LiveHop {
            node: h.node.clone(),
            command,
            output,
            error,
        });
    }
    out
}

/// The policy table of each node that decides a side of the flow (for --live).
async fn policy_listings(
    ctx: &Ctx,
    a: &TraceArgs,
    agents: &Result<Vec<Pod>, String>,
    policy: &kubectl_hybridnet::policytrace::PolicyReport,
) -> BTreeMap<String, Result<String, String>> {
    let mut out = BTreeMap::new();
    for side in &policy.counted {
        if out.contains_key(&side.node) {
            continue;
        }
        let args: Vec<String> = kubectl_hybridnet::policytrace::LISTING_COMMAND
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = exec_on_node(ctx, a, agents, &side.node, &args).await;
        out.insert(side.node.clone(), r);
    }
    out
}
