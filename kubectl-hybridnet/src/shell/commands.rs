//! The commands: fetch, call the pure core, print.

use std::io::{BufRead, IsTerminal, Write};

use hybridnet_api::constants::field_manager;
use hybridnet_api::operator::{CLUSTER_SINGLETON_NAME, HybridnetCluster};
use hybridnet_api::v1::{IPInstance, Network, Subnet};
use hybridnet_api::validate::{self, Existing, NodeLabels};
use k8s_openapi::ClusterResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use kubectl_hybridnet::check::{self, CheckInput, SubnetFacts};
use kubectl_hybridnet::cli::*;
use kubectl_hybridnet::inventory::{InstanceFacts, IpFilter, PodFacts, ip_rows, ip_table};
use kubectl_hybridnet::manifest::{
    self, InvalidManifest, build_cluster, build_network, build_subnet, manifest_value,
    validate_object_name,
};
use kubectl_hybridnet::output::{ListOutput, OutputFormat};
use kubectl_hybridnet::{VERSION, bgp_status, resources, status, usage, versions};

use super::connect::{Ctx, Failure, Res, exit};
use super::io::{self, CLUSTERS_CRD, NETWORKS_CRD, SUBNETS_CRD};
use super::print;
use super::wait::{self, Waited};
use kubectl_hybridnet::wait::WaitFor;

const CLUSTER_REF: &str = "hybridnetcluster.operator.hybridnet.io";

/// A cluster-scoped hybridnet kind as the network and subnet commands name it.
struct ClusterKind {
    /// The command's noun: `network` in `kubectl hybridnet network ls`.
    noun: &'static str,
    /// kubectl's prefix of printed names: `network.networking.alibaba.com`.
    kind_ref: &'static str,
    crd: &'static str,
}

const NETWORK: ClusterKind = ClusterKind {
    noun: "network",
    kind_ref: "network.networking.alibaba.com",
    crd: NETWORKS_CRD,
};

const SUBNET: ClusterKind = ClusterKind {
    noun: "subnet",
    kind_ref: "subnet.networking.alibaba.com",
    crd: SUBNETS_CRD,
};

fn invalid(e: InvalidManifest) -> Failure {
    Failure::usage(format!("invalid flags:\n  {}", e.problems.join("\n  ")))
}

fn post_params(dry: DryRun) -> PostParams {
    PostParams {
        dry_run: dry == DryRun::Server,
        field_manager: Some(field_manager::KUBECTL_PLUGIN.to_string()),
    }
}

fn dry_suffix(dry: DryRun) -> &'static str {
    match dry {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    }
}

/// Prints a created object (`-o yaml|json|name`) or `kind/name created`.
fn print_created<K: serde::Serialize>(
    obj: &K,
    name: &str,
    kind_ref: &str,
    output: Option<OutputFormat>,
    dry: DryRun,
) -> Res<()> {
    match output {
        None => print::out(&format!("{kind_ref}/{name} created{}\n", dry_suffix(dry))),
        Some(OutputFormat::Name) => print::out(&format!("{kind_ref}/{name}\n")),
        Some(f @ (OutputFormat::Yaml | OutputFormat::Json)) => {
            let v = if dry == DryRun::Client {
                manifest_value(obj).map_err(|e| Failure::error(format!("cannot render: {e}")))?
            } else {
                print::object_value(obj)?
            };
            if f == OutputFormat::Yaml {
                print::yaml(&v)
            } else {
                print::json(&v)
            }
        }
        // The flag's parser admits only the formats above.
        Some(f) => Err(Failure::usage(format!(
            "-o {f} is not an output of create: use yaml, json or name"
        ))),
    }
}

/// Gets the named objects, in the order given; an invalid name fails the command before any
/// request, the first missing one after.
async fn get_named<K>(ctx: &Ctx, kind: &ClusterKind, names: &[String]) -> Res<Vec<K>>
where
    K: Resource<Scope = ClusterResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    for name in names {
        validate_object_name(kind.noun, name).map_err(Failure::usage)?;
    }
    let mut objects = Vec::with_capacity(names.len());
    for name in names {
        objects.push(io::get_cluster_scoped::<K>(ctx, name, kind.noun, kind.crd).await?);
    }
    Ok(objects)
}

/// Creates an object the caller has validated and prints it as `-o` asks.
async fn create_object<K>(
    ctx: &Ctx,
    kind: &ClusterKind,
    obj: &K,
    name: &str,
    output: Option<OutputFormat>,
    dry: DryRun,
) -> Res<()>
where
    K: Resource<Scope = ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    let created = api
        .create(&post_params(dry), obj)
        .await
        .map_err(|e| ctx.fail(e, &format!("create {} {name}", kind.noun), Some(kind.crd)))?;
    print_created(&created, name, kind.kind_ref, output, dry)
}

/// Deletes an object the caller has checked may go, and says so as kubectl does.
async fn delete_object<K>(ctx: &Ctx, kind: &ClusterKind, name: &str, dry: DryRun) -> Res<()>
where
    K: Resource<Scope = ClusterResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    api.delete(
        name,
        &DeleteParams {
            dry_run: dry == DryRun::Server,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| ctx.fail(e, &format!("delete {} {name}", kind.noun), Some(kind.crd)))?;
    print::out(&format!(
        "{}/{name} deleted{}\n",
        kind.kind_ref,
        dry_suffix(dry)
    ))
}

fn node_labels(nodes: &[k8s_openapi::api::core::v1::Node]) -> Vec<NodeLabels> {
    nodes
        .iter()
        .map(|n| NodeLabels {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
        .collect()
}

// ---------------------------------------------------------------- network

pub async fn network(g: &GlobalFlags, cmd: &NetworkCommand) -> Res<i32> {
    match cmd {
        NetworkCommand::Ls(a) => {
            let ctx = Ctx::connect(g).await?;
            let nets = io::networks_listed(&ctx, &io::Listing::of(&a.list)).await?;
            let subs = io::subnets(&ctx).await?;
            show_networks(&nets, &subs, &a.list.output, a.list.no_headers, false)?;
        }
        NetworkCommand::Get(a) => {
            let ctx = Ctx::connect(g).await?;
            let nets = get_named::<Network>(&ctx, &NETWORK, &a.names).await?;
            let subs = io::subnets(&ctx).await?;
            show_networks(&nets, &subs, &a.output, a.no_headers, true)?;
        }
        NetworkCommand::Create(a) => {
            let net = build_network(a).map_err(invalid)?;
            if a.dry_run == DryRun::Client {
                print_created(&net, &a.name, NETWORK.kind_ref, a.output, a.dry_run)?;
                return Ok(exit::OK);
            }
            let ctx = Ctx::connect(g).await?;
            let nets = io::networks(&ctx).await?;
            let nodes = io::nodes(&ctx).await?;
            let labels = node_labels(&nodes);
            if nets
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(a.name.as_str()))
            {
                return Err(Failure::error(format!(
                    "network {:?} already exists",
                    a.name
                )));
            }
            manifest::check_network_create(
                &net,
                &Existing {
                    networks: &nets,
                    nodes: &labels,
                    ..Default::default()
                },
            )
            .map_err(invalid)?;
            create_object(&ctx, &NETWORK, &net, &a.name, a.output, a.dry_run).await?;
        }
        NetworkCommand::Delete(a) => {
            let ctx = Ctx::connect(g).await?;
            let subs = io::subnets(&ctx).await?;
            // Every name is checked before the first is deleted: a refusal deletes nothing.
            for (name, net) in a
                .names
                .iter()
                .zip(get_named::<Network>(&ctx, &NETWORK, &a.names).await?)
            {
                validate::network_delete(
                    &net,
                    &Existing {
                        subnets: &subs,
                        ..Default::default()
                    },
                )
                .map_err(|e| Failure::error(format!("cannot delete network {name}: {e}")))?;
            }
            for name in &a.names {
                delete_object::<Network>(&ctx, &NETWORK, name, a.dry_run).await?;
            }
        }
    }
    Ok(exit::OK)
}

fn show_networks(
    nets: &[Network],
    subs: &[Subnet],
    out: &ListOutput,
    no_headers: bool,
    single: bool,
) -> Res<()> {
    match out {
        ListOutput::JsonPath(t) => print::jsonpath(nets, t, single),
        ListOutput::Format(fmt @ (OutputFormat::Table | OutputFormat::Wide)) => {
            let (h, rows) = resources::network_table(nets, subs, *fmt == OutputFormat::Wide);
            if rows.is_empty() {
                eprintln!("No networks found.");
                return Ok(());
            }
            print::table_with(&h, &rows, !no_headers)
        }
        ListOutput::Format(f) => print::objects(nets, *f, NETWORK.kind_ref, single),
    }
}

// ---------------------------------------------------------------- subnet

pub async fn subnet(g: &GlobalFlags, cmd: &SubnetCommand) -> Res<i32> {
    match cmd {
        SubnetCommand::Ls(a) => {
            let ctx = Ctx::connect(g).await?;
            let mut subs = io::subnets_listed(&ctx, &io::Listing::of(&a.list)).await?;
            if let Some(n) = &a.network {
                subs.retain(|s| &s.spec.network == n);
            }
            show_subnets(&subs, &a.list.output, a.list.no_headers, false)?;
        }
        SubnetCommand::Get(a) => {
            let ctx = Ctx::connect(g).await?;
            let subs = get_named::<Subnet>(&ctx, &SUBNET, &a.names).await?;
            show_subnets(&subs, &a.output, a.no_headers, true)?;
        }
        SubnetCommand::Create(a) => {
            let (sub, _) = build_subnet(a).map_err(invalid)?;
            if a.dry_run == DryRun::Client {
                print_created(&sub, &a.name, SUBNET.kind_ref, a.output, a.dry_run)?;
                return Ok(exit::OK);
            }
            let ctx = Ctx::connect(g).await?;
            let nets = io::networks(&ctx).await?;
            let subs = io::subnets(&ctx).await?;
            manifest::check_subnet_create(
                &sub,
                &Existing {
                    networks: &nets,
                    subnets: &subs,
                    ..Default::default()
                },
            )
            .map_err(invalid)?;
            create_object(&ctx, &SUBNET, &sub, &a.name, a.output, a.dry_run).await?;
        }
        SubnetCommand::Delete(a) => {
            let ctx = Ctx::connect(g).await?;
            let insts = io::ipinstances(&ctx, true).await?;
            // Every name is checked before the first is deleted: a refusal deletes nothing.
            for (name, sub) in a
                .names
                .iter()
                .zip(get_named::<Subnet>(&ctx, &SUBNET, &a.names).await?)
            {
                validate::subnet_delete(&sub, &Existing { ipinstances: &insts, ..Default::default() })
                    .map_err(|e| Failure::error(format!("cannot delete subnet {name}: {e} (`kubectl hybridnet ip ls -A --subnet {name}` lists them)")))?;
            }
            for name in &a.names {
                delete_object::<Subnet>(&ctx, &SUBNET, name, a.dry_run).await?;
            }
        }
    }
    Ok(exit::OK)
}

fn show_subnets(subs: &[Subnet], out: &ListOutput, no_headers: bool, single: bool) -> Res<()> {
    match out {
        ListOutput::JsonPath(t) => print::jsonpath(subs, t, single),
        ListOutput::Format(fmt @ (OutputFormat::Table | OutputFormat::Wide)) => {
            let (h, rows) = resources::subnet_table(subs, *fmt == OutputFormat::Wide);
            if rows.is_empty() {
                eprintln!("No subnets found.");
                return Ok(());
            }
            print::table_with(&h, &rows, !no_headers)
        }
        ListOutput::Format(f) => print::objects(subs, *f, SUBNET.kind_ref, single),
    }
}

// ---------------------------------------------------------------- cluster

pub async fn cluster(g: &GlobalFlags, cmd: &ClusterCommand) -> Res<i32> {
    match cmd {
        ClusterCommand::Ls(a) => {
            let ctx = Ctx::connect(g).await?;
            let rcs = io::remote_clusters_listed(&ctx, &io::Listing::of(&a.list)).await?;
            match &a.list.output {
                ListOutput::JsonPath(t) => print::jsonpath(&rcs, t, false)?,
                ListOutput::Format(fmt @ (OutputFormat::Table | OutputFormat::Wide)) => {
                    let (h, rows) =
                        resources::remote_cluster_table(&rcs, *fmt == OutputFormat::Wide);
                    if rows.is_empty() {
                        eprintln!("No remote clusters found.");
                    } else {
                        print::table_with(&h, &rows, !a.list.no_headers)?;
                    }
                }
                ListOutput::Format(f) => {
                    print::objects(&rcs, *f, "remotecluster.multicluster.alibaba.com", false)?
                }
            }
        }
        ClusterCommand::Status(a) => {
            use hybridnet_api::multicluster::{RemoteCluster, RemoteSubnet, RemoteVtep};
            let ctx = Ctx::connect(g).await?;
            let rc = match Api::<RemoteCluster>::all(ctx.client.clone())
                .get_opt(&a.name)
                .await
            {
                Ok(Some(rc)) => rc,
                Ok(None) => {
                    return Err(Failure::error(format!(
                        "remote cluster {:?} not found",
                        a.name
                    )));
                }
                Err(e) => {
                    return Err(ctx.fail(e, "get remote cluster", Some(io::REMOTE_CLUSTERS_CRD)));
                }
            };
            let listing = io::Listing {
                selector: Some(format!(
                    "{}={}",
                    hybridnet_api::constants::label::CLUSTER,
                    a.name
                )),
                chunk_size: io::DEFAULT_CHUNK_SIZE,
            };
            // Mirrors are shown when they can be read; the RemoteCluster alone otherwise.
            let subnets: Vec<RemoteSubnet> = io::list_listed(&ctx, "list remote subnets", &listing)
                .await
                .unwrap_or_default();
            let vteps: Vec<RemoteVtep> = io::list_listed(&ctx, "list remote vteps", &listing)
                .await
                .unwrap_or_default();
            match a.output {
                OutputFormat::Json | OutputFormat::Yaml => {
                    let doc = serde_json::json!({
                        "remoteCluster": rc,
                        "remoteSubnets": subnets,
                        "remoteVteps": vteps,
                    });
                    print::objects(
                        std::slice::from_ref(&doc),
                        a.output,
                        "remotecluster.multicluster.alibaba.com",
                        true,
                    )?;
                }
                _ => print!(
                    "{}",
                    resources::remote_cluster_status_text(&rc, &subnets, &vteps)
                ),
            }
        }
        ClusterCommand::Connect(a) => return super::cluster_connect::connect(g, a).await,
        ClusterCommand::Disconnect(a) => return super::cluster_connect::disconnect(g, a).await,
    }
    Ok(exit::OK)
}

// ---------------------------------------------------------------- ip

/// `ip ls --remote`: other clusters' pods from the mirrors (none when the multi-cluster CRDs are
/// not installed).
async fn remote_ip_rows(
    ctx: &Ctx,
    filter: &IpFilter,
) -> Res<Vec<kubectl_hybridnet::inventory::IpRow>> {
    use hybridnet_api::multicluster::{RemoteSubnet, RemoteVtep};
    let lp = kube::api::ListParams::default();
    let vteps = match Api::<RemoteVtep>::all(ctx.client.clone()).list(&lp).await {
        Ok(l) => l.items,
        Err(e) if io::is_missing_type(&e) => Vec::new(),
        Err(e) => return Err(ctx.fail(e, "list remote vteps", None)),
    };
    let subnets = match Api::<RemoteSubnet>::all(ctx.client.clone()).list(&lp).await {
        Ok(l) => l.items,
        Err(e) if io::is_missing_type(&e) => Vec::new(),
        Err(e) => return Err(ctx.fail(e, "list remote subnets", None)),
    };
    Ok(kubectl_hybridnet::inventory::remote_rows(
        &vteps, &subnets, filter,
    ))
}

fn facts(insts: &[IPInstance]) -> Vec<InstanceFacts> {
    insts.iter().map(InstanceFacts::from_ipinstance).collect()
}

pub async fn ip(g: &GlobalFlags, cmd: &IpCommand) -> Res<i32> {
    match cmd {
        IpCommand::Ls(a) => {
            let ctx = Ctx::connect(g).await?;
            let insts =
                io::ipinstances_listed(&ctx, g.all_namespaces, &io::Listing::of(&a.list)).await?;
            let filter = IpFilter {
                network: a.network.clone(),
                subnet: a.subnet.clone(),
                node: a.node.clone(),
                pod: a.pod.clone(),
                reserved_only: a.reserved,
            };
            let mut rows = ip_rows(&facts(&insts), &filter);
            if a.remote {
                rows.extend(remote_ip_rows(&ctx, &filter).await?);
            }
            let fmt = match &a.list.output {
                ListOutput::Format(f) => *f,
                ListOutput::JsonPath(t) => {
                    // the IPInstance objects of the rows, in the rows' order
                    let by_key: std::collections::HashMap<(&str, &str), &IPInstance> = insts
                        .iter()
                        .map(|i| {
                            (
                                (
                                    i.metadata.namespace.as_deref().unwrap_or_default(),
                                    i.metadata.name.as_deref().unwrap_or_default(),
                                ),
                                i,
                            )
                        })
                        .collect();
                    let objs: Vec<&IPInstance> = rows
                        .iter()
                        .filter_map(|r| {
                            by_key
                                .get(&(r.namespace.as_str(), r.name.as_str()))
                                .copied()
                        })
                        .collect();
                    print::jsonpath(&objs, t, false)?;
                    return Ok(exit::OK);
                }
            };
            match fmt {
                OutputFormat::Table | OutputFormat::Wide => {
                    if rows.is_empty() {
                        let scope = if g.all_namespaces {
                            "any namespace".to_string()
                        } else {
                            format!("namespace {}", ctx.namespace)
                        };
                        eprintln!("No addresses found in {scope}.");
                    } else {
                        let (h, cells) = ip_table(&rows, fmt == OutputFormat::Wide);
                        print::table_with(&h, &cells, !a.list.no_headers)?;
                    }
                }
                OutputFormat::Json => print::json(&rows)?,
                OutputFormat::Yaml => print::yaml(&rows)?,
                OutputFormat::Name => {
                    let s: String = rows
                        .iter()
                        .filter(|r| r.state != kubectl_hybridnet::inventory::IpState::Remote)
                        .map(|r| format!("ipinstance.networking.alibaba.com/{}\n", r.name))
                        .collect();
                    print::out(&s)?;
                }
            }
            Ok(exit::OK)
        }
        IpCommand::Usage(a) => {
            print::only(
                a.output,
                &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
                "ip usage",
            )?;
            let ctx = Ctx::connect(g).await?;
            let nets = io::networks(&ctx).await?;
            let subs = io::subnets(&ctx).await?;
            // Usage is cluster-wide: addresses of every namespace count.
            let insts = io::ipinstances(&ctx, true).await?;
            let report = usage::usage_report(
                &nets,
                &subs,
                &facts(&insts),
                a.network.as_deref(),
                a.threshold,
            );
            match a.output {
                OutputFormat::Json => print::json(&report)?,
                OutputFormat::Yaml => print::yaml(&report)?,
                _ => {
                    if report.subnets.is_empty() && report.networks.is_empty() {
                        eprintln!("No networks or subnets found.");
                        return Ok(exit::OK);
                    }
                    let (h, rows) = usage::subnet_table(&report.subnets);
                    if !rows.is_empty() {
                        print::table(&h, &rows)?;
                        print::out("\n")?;
                    }
                    let (h, rows) = usage::network_table(&report.networks);
                    print::table(&h, &rows)?;
                }
            }
            Ok(exit::OK)
        }
        IpCommand::Check(a) => ip_check(g, a).await,
    }
}

fn confirm(question: &str) -> Res<bool> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::error(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn ip_check(g: &GlobalFlags, a: &IpCheckArgs) -> Res<i32> {
    print::only(
        a.output,
        &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
        "ip check",
    )?;
    if a.fix && !a.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "--fix asks for confirmation, but stdin is not a terminal: add --yes to delete without asking",
        ));
    }
    let ctx = Ctx::connect(g).await?;
    // Cluster-wide unless -n is given: duplicates span namespaces.
    let all = g.namespace.is_none() || g.all_namespaces;
    let insts = io::ipinstances(&ctx, all).await?;
    let pods = io::pods(&ctx, all).await?;
    let sets = io::statefulsets(&ctx, all).await?;
    let subs = io::subnets(&ctx).await?;
    let input = CheckInput {
        instances: facts(&insts),
        pods: pods.iter().map(PodFacts::from_pod).collect(),
        statefulsets: sets
            .iter()
            .map(|s| {
                (
                    (
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.metadata.name.clone().unwrap_or_default(),
                    ),
                    s.metadata.uid.clone(),
                )
            })
            .collect(),
        subnets: SubnetFacts::by_name(&subs),
        stateful_kinds: a.stateful_kinds.clone(),
    };
    let report = check::check(&input);
    match a.output {
        OutputFormat::Json => print::json(&report)?,
        OutputFormat::Yaml => print::yaml(&report)?,
        _ => {
            if !report.is_clean() {
                let (h, rows) = check::findings_table(&report);
                print::table(&h, &rows)?;
                print::out("\n")?;
            }
            let scope = if all {
                "all namespaces".to_string()
            } else {
                format!("namespace {}", ctx.namespace)
            };
            print::out(&format!(
                "{} in {scope} ({} addresses, {} pods checked)\n",
                check::summary(&report),
                insts.len(),
                pods.len()
            ))?;
        }
    }
    if report.is_clean() {
        return Ok(exit::OK);
    }
    if !a.fix {
        if !report.fixes.is_empty() && a.output == OutputFormat::Table {
            eprintln!(
                "`kubectl hybridnet ip check --fix` deletes the {} leaked IPInstance(s).",
                report.fixes.len()
            );
        }
        return Ok(exit::FINDINGS);
    }
    if report.fixes.is_empty() {
        eprintln!("nothing --fix can repair: the remaining problems need a person");
        return Ok(exit::FINDINGS);
    }
    if !a.yes
        && !confirm(&format!(
            "Delete {} leaked IPInstance(s)?",
            report.fixes.len()
        ))?
    {
        eprintln!("nothing deleted");
        return Ok(exit::FINDINGS);
    }
    for (ns, name) in &report.fixes {
        let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => eprintln!("ipinstance.networking.alibaba.com/{name} deleted (namespace {ns})"),
            Err(e) if io::is_not_found(&e) => {
                eprintln!("ipinstance.networking.alibaba.com/{name} already gone (namespace {ns})")
            }
            Err(e) => return Err(ctx.fail(e, &format!("delete ipinstance {ns}/{name}"), None)),
        }
    }
    let unfixed = report.findings.iter().filter(|f| !f.fixable).count();
    if unfixed > 0 {
        eprintln!("{unfixed} problem(s) left that --fix does not repair");
        Ok(exit::FINDINGS)
    } else {
        Ok(exit::OK)
    }
}

// ---------------------------------------------------------------- status, install, version

pub async fn status(g: &GlobalFlags, a: &StatusArgs) -> Res<i32> {
    print::only(
        a.output,
        &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
        "status",
    )?;
    let ctx = Ctx::connect(g).await?;
    let mut timed_out = None;
    if let Some(limit) = a.wait {
        // Without the CRD nothing can become Available: say so now instead of waiting. A
        // missing object is waited for.
        let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
        match api.get(CLUSTER_SINGLETON_NAME).await {
            Err(e) if io::is_missing_type(&e) => {
                return Err(Failure::error(format!(
                    "status --wait: the {CLUSTERS_CRD} CRD is not installed: the hybridnet operator is not installed"
                )));
            }
            Err(e) if !io::is_not_found(&e) => {
                return Err(ctx.fail(e, "get hybridnetcluster default", Some(CLUSTERS_CRD)));
            }
            _ => {}
        }
        if let Waited::TimedOut(last) = wait::until_available(&ctx, limit).await? {
            timed_out = Some(last);
        }
    }
    let cluster = io::cluster(&ctx).await?;
    let nets = io::networks(&ctx).await?;
    let subs = io::subnets(&ctx).await?;
    let insts = io::ipinstances(&ctx, true).await?;
    let usage = usage::usage_report(&nets, &subs, &facts(&insts), None, 90);
    // Without NodeInfos (CRD missing, no permission) the rest of the status still shows.
    let (bgp, refused) = match io::nodeinfos(&ctx).await {
        Ok(infos) => (
            bgp_status::bgp_summary(&infos, &nets),
            status::kernel_check_warnings(&infos),
        ),
        Err(f) => (
            bgp_status::BgpSummary {
                warnings: vec![format!("BGP sessions unknown: {}", f.message)],
                ..Default::default()
            },
            Vec::new(),
        ),
    };
    let mut report = status::status_report(VERSION, cluster.as_ref().ok(), &nets, usage, bgp);
    report.warnings.extend(refused);
    if let Err(why) = &cluster
        && let Some(w) = report.warnings.first_mut()
    {
        *w = format!(
            "{why}: {}",
            "hybridnet is not installed through the operator"
        );
    }
    match a.output {
        OutputFormat::Json => print::json(&report)?,
        OutputFormat::Yaml => print::yaml(&report)?,
        _ => print::out(&status::render_status(
            &report,
            k8s_openapi::jiff::Timestamp::now(),
            print::style(),
        ))?,
    }
    if let (Some(last), Some(limit)) = (timed_out, a.wait) {
        return Err(wait_timed_out(limit, &last));
    }
    Ok(status::exit_code(&report))
}

/// The failure of a `--wait` that ran out of time (exit code 6).
fn wait_timed_out(limit: WaitFor, last: &str) -> Failure {
    let after = limit
        .0
        .map(|d| format!(" after {}", kubectl_hybridnet::wait::show_duration(d)))
        .unwrap_or_default();
    Failure {
        code: kubectl_hybridnet::wait::EXIT_WAIT_TIMEOUT,
        message: format!(
            "timed out{after} waiting for hybridnetcluster/{CLUSTER_SINGLETON_NAME} to be Available: {}",
            if last.is_empty() {
                "no state seen"
            } else {
                last
            }
        ),
    }
}

pub async fn install(g: &GlobalFlags, a: &InstallArgs) -> Res<i32> {
    if a.wait.is_some() && (a.dry_run != DryRun::None || a.output.is_some()) {
        return Err(Failure::usage(
            "install --wait applies the HybridnetCluster and waits for it: it cannot be combined with --dry-run or -o",
        ));
    }
    let cluster = build_cluster(a).map_err(invalid)?;
    if a.dry_run == DryRun::Client || (a.output.is_some() && a.dry_run == DryRun::None) {
        let v =
            manifest_value(&cluster).map_err(|e| Failure::error(format!("cannot render: {e}")))?;
        return match a.output.unwrap_or(OutputFormat::Yaml) {
            OutputFormat::Json => print::json(&v).map(|_| exit::OK),
            OutputFormat::Yaml => print::yaml(&v).map(|_| exit::OK),
            f => Err(Failure::usage(format!("install -o {f}: use yaml or json"))),
        };
    }
    let ctx = Ctx::connect(g).await?;
    // The API features hybridnet needs (hybridnet_api::platform): refuse an older server before
    // anything is written. A version that does not parse, or no answer, is left to the apply.
    if let Ok(v) = ctx.client.apiserver_version().await
        && let hybridnet_api::platform::ServerSupport::TooOld(why) =
            hybridnet_api::platform::server_support(&v.git_version)
    {
        return Err(Failure::error(format!("install: {why}")));
    }
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    let mut pp = PatchParams::apply(field_manager::KUBECTL_PLUGIN);
    pp.force = a.force_conflicts;
    pp.dry_run = a.dry_run == DryRun::Server;
    let applied = match api
        .patch(CLUSTER_SINGLETON_NAME, &pp, &Patch::Apply(&cluster))
        .await
    {
        Ok(c) => c,
        Err(e) if io::is_missing_type(&e) => {
            return Err(Failure::error(format!(
                "install: the {CLUSTERS_CRD} CRD is not installed: install the hybridnet operator first (its OLM bundle, or the operator manifests from the hybridnet repository); `kubectl hybridnet install -o yaml` prints the HybridnetCluster to apply afterwards"
            )));
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(Failure::error(format!(
                "install: {}; another field manager owns these fields of hybridnetcluster/default: rerun with --force-conflicts to take them over (as `kubectl apply --server-side --force-conflicts`), or change them with that manager",
                s.message.trim()
            )));
        }
        Err(e) => return Err(ctx.fail(e, "apply hybridnetcluster default", Some(CLUSTERS_CRD))),
    };
    match a.output {
        Some(OutputFormat::Yaml) => print::yaml(&print::object_value(&applied)?)?,
        Some(OutputFormat::Json) => print::json(&print::object_value(&applied)?)?,
        _ => print::out(&format!(
            "{CLUSTER_REF}/{CLUSTER_SINGLETON_NAME} serverside-applied{}\n",
            dry_suffix(a.dry_run)
        ))?,
    }
    if let Some(limit) = a.wait
        && let Waited::TimedOut(last) = wait::until_available(&ctx, limit).await?
    {
        return Err(wait_timed_out(limit, &last));
    }
    Ok(exit::OK)
}

pub async fn version(g: &GlobalFlags, a: &VersionArgs) -> Res<i32> {
    print::only(
        a.output,
        &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
        "version",
    )?;
    let show = |r: &versions::VersionReport, plugin_only: bool| -> Res<()> {
        match a.output {
            OutputFormat::Json => print::json(r),
            OutputFormat::Yaml => print::yaml(r),
            _ if plugin_only => print::out(&versions::plugin_line(r)),
            _ => print::out(&versions::render_versions(r, print::style())),
        }
    };
    if a.client {
        let r = versions::version_report(VERSION, Err("--client"), Ok(&[]));
        let plugin_only = versions::VersionReport {
            warnings: Vec::new(),
            ..r
        };
        show(&plugin_only, true)?;
        return Ok(exit::OK);
    }
    // As `kubectl version`: the plugin's version is printed even when the cluster cannot be
    // reached, then the error.
    let unreachable = |f: Failure| -> Res<i32> {
        let r = versions::version_report(VERSION, Err(&f.message), Err("not asked"));
        let plugin_only = versions::VersionReport {
            warnings: Vec::new(),
            ..r
        };
        show(&plugin_only, true)?;
        Err(Failure {
            code: f.code,
            message: format!(
                "the operator's and the node agents' versions are unknown: {}",
                f.message
            ),
        })
    };
    let ctx = match Ctx::connect(g).await {
        Ok(c) => c,
        Err(f) => return unreachable(f),
    };
    let cluster = match io::cluster(&ctx).await {
        Ok(c) => c,
        Err(f) => return unreachable(f),
    };
    let infos = io::nodeinfos(&ctx).await;
    let r = versions::version_report(
        VERSION,
        cluster.as_ref().map_err(String::as_str),
        infos
            .as_ref()
            .map(Vec::as_slice)
            .map_err(|f| f.message.as_str()),
    );
    show(&r, false)?;
    Ok(exit::OK)
}
