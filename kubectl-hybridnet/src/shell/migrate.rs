//! `migrate check`: gathers what [`kubectl_hybridnet::migrate`] judges.

use std::collections::{BTreeMap, BTreeSet};

use hybridnet_api::migration::{
    UPSTREAM_DAEMON, UPSTREAM_LEADER_LEASE, UPSTREAM_MANAGER, UPSTREAM_NAMESPACE, UPSTREAM_WEBHOOK,
    UPSTREAM_WEBHOOK_CONFIGS,
};
use hybridnet_api::v1::NodeInfo;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;

use kubectl_hybridnet::cli::{GlobalFlags, MigrateCheckArgs, MigrateCommand};
use kubectl_hybridnet::migrate::{self, LeaseFacts, MigrateInput, WebhookConfig, Workload};
use kubectl_hybridnet::output::OutputFormat;

use super::connect::{Ctx, Res, exit};
use super::io::{self, NODEINFO_CRD};
use super::print;

pub async fn migrate(g: &GlobalFlags, c: &MigrateCommand) -> Res<i32> {
    match c {
        MigrateCommand::Check(a) => check(g, a).await,
    }
}

/// Our node agent's pods (the DaemonSet's selector label, operator/src/lifecycle/names.rs).
const AGENT_SELECTOR: &str = "app.kubernetes.io/name=hybridnet-node";
/// Upstream's daemon pods (its chart's `templates/daemonsets.yaml`).
const UPSTREAM_DAEMON_SELECTOR: &str = "app=hybridnet,component=daemon";

fn services(cfgs: impl Iterator<Item = Option<WebhookClientConfig>>) -> Vec<String> {
    cfgs.flatten()
        .filter_map(|c| c.service)
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect()
}

fn running_nodes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect()
}

async fn check(g: &GlobalFlags, a: &MigrateCheckArgs) -> Res<i32> {
    print::only(
        a.output,
        &[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml],
        "migrate check",
    )?;
    let ctx = Ctx::connect(g).await?;
    let c = &ctx.client;
    let mut input = MigrateInput::default();

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), UPSTREAM_NAMESPACE);
    for name in [UPSTREAM_MANAGER, UPSTREAM_WEBHOOK] {
        let d = deployments.get_opt(name).await.map_err(|e| {
            ctx.fail(
                e,
                &format!("get deployment {UPSTREAM_NAMESPACE}/{name}"),
                None,
            )
        })?;
        if let Some(d) = d {
            input.workloads.push(Workload {
                kind: "Deployment",
                name: name.to_string(),
                desired: d.spec.replicas.unwrap_or(1),
                ready: d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
            });
        }
    }
    let daemonsets: Api<DaemonSet> = Api::namespaced(c.clone(), UPSTREAM_NAMESPACE);
    if let Some(d) = daemonsets.get_opt(UPSTREAM_DAEMON).await.map_err(|e| {
        ctx.fail(
            e,
            &format!("get daemonset {UPSTREAM_NAMESPACE}/{UPSTREAM_DAEMON}"),
            None,
        )
    })? {
        let st = d.status.unwrap_or_default();
        input.workloads.push(Workload {
            kind: "DaemonSet",
            name: UPSTREAM_DAEMON.to_string(),
            desired: st.desired_number_scheduled,
            ready: st.number_ready,
        });
    }

    let [validating, mutating] = UPSTREAM_WEBHOOK_CONFIGS;
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
    if let Some(v) = vwc.get_opt(validating).await.map_err(|e| {
        ctx.fail(
            e,
            &format!("get validatingwebhookconfiguration {validating}"),
            None,
        )
    })? {
        input.webhook_configs.push(WebhookConfig {
            kind: "ValidatingWebhookConfiguration",
            name: validating.to_string(),
            services: services(
                v.webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| Some(w.client_config)),
            ),
        });
    }
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    if let Some(m) = mwc.get_opt(mutating).await.map_err(|e| {
        ctx.fail(
            e,
            &format!("get mutatingwebhookconfiguration {mutating}"),
            None,
        )
    })? {
        input.webhook_configs.push(WebhookConfig {
            kind: "MutatingWebhookConfiguration",
            name: mutating.to_string(),
            services: services(
                m.webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| Some(w.client_config)),
            ),
        });
    }

    let now = k8s_openapi::jiff::Timestamp::now();
    let leases: Api<Lease> = Api::all(c.clone());
    let all_leases = leases
        .list(&ListParams::default())
        .await
        .map_err(|e| ctx.fail(e, "list leases", None))?;
    for l in all_leases.items {
        if l.metadata.name.as_deref() != Some(UPSTREAM_LEADER_LEASE) {
            continue;
        }
        let spec = l.spec.unwrap_or_default();
        input.leases.push(LeaseFacts {
            namespace: l.metadata.namespace.unwrap_or_default(),
            name: UPSTREAM_LEADER_LEASE.to_string(),
            holder: spec.holder_identity,
            renewed_ago: spec.renew_time.map(|t| now.duration_since(t.0).as_secs()),
            duration_seconds: spec.lease_duration_seconds,
        });
    }

    let nodes: Api<Node> = Api::all(c.clone());
    input.nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| ctx.fail(e, "list nodes", None))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let infos: Api<NodeInfo> = Api::all(c.clone());
    input.nodeinfo_annotations = match infos.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|i| Some((i.metadata.name?, i.metadata.annotations.unwrap_or_default())))
            .collect(),
        Err(e) if io::is_missing_type(&e) => BTreeMap::new(),
        Err(e) => return Err(ctx.fail(e, "list nodeinfoes", Some(NODEINFO_CRD))),
    };
    let pods: Api<Pod> = Api::all(c.clone());
    let list = |sel: &'static str| {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default().labels(sel)).await }
    };
    input.agent_nodes = running_nodes(
        &list(AGENT_SELECTOR)
            .await
            .map_err(|e| ctx.fail(e, "list node agent pods", None))?
            .items,
    );
    let upstream_pods: Api<Pod> = Api::namespaced(c.clone(), UPSTREAM_NAMESPACE);
    input.upstream_daemon_nodes = running_nodes(
        &upstream_pods
            .list(&ListParams::default().labels(UPSTREAM_DAEMON_SELECTOR))
            .await
            .map_err(|e| ctx.fail(e, "list upstream daemon pods", None))?
            .items,
    );

    let report = migrate::check(&input);
    match a.output {
        OutputFormat::Json => print::json(&report)?,
        OutputFormat::Yaml => print::yaml(&report)?,
        _ => {
            if !report.is_clean() {
                let (h, rows) = migrate::findings_table(&report);
                print::table(&h, &rows)?;
                print::out("\n")?;
            }
            print::out(&format!("{}\n", migrate::summary(&report)))?;
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}
