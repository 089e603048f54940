//! Control-plane benchmarks against kube-lite (a bench binary timed with std::time::Instant):
//!
//! 1. pods/s from creation to IPInstance written, for 2,000 pods created 64 at a time;
//! 2. per-pod latency from create to IPInstance under a steady 100 pods/s for 10 s;
//! 3. IPAM rebuild at leader start from 100,000 IPInstances (paginated API list + rebuild).
//!
//! Run: `cargo bench -p hybridnet-operator --bench controlplane`
//! (env `CP_BENCH_PODS`, `CP_BENCH_RATE`, `CP_BENCH_SECONDS` and `CP_BENCH_INSTANCES` change the
//! sizes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hybridnet_api::constants::{finalizer, label};
use hybridnet_api::v1::{
    Address, AddressRange, Binding, IPInstance, IPInstanceSpec, IpVersion, Network, NetworkMode,
    NetworkSpec, NetworkType, ReferredObject, Subnet, SubnetSpec,
};
use hybridnet_operator::controlplane::rules::defaults::PodDefaults;
use hybridnet_operator::controlplane::runtime::config::ControlPlaneConfig;
use hybridnet_operator::controlplane::runtime::replica::{Replica, ReplicaConfig};
use hybridnet_operator::controlplane::runtime::run::rebuild;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn server() -> (kube_lite::ServerHandle, Client) {
    let srv = kube_lite::Server::start(kube_lite::Config::default())
        .await
        .expect("kube-lite");
    let client = srv.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in hybridnet_api::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("crd");
    }
    for _ in 0..200 {
        if Api::<IPInstance>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (srv, client)
}

fn overlay(name: &str) -> Network {
    Network::new(
        name,
        NetworkSpec {
            network_type: Some(NetworkType::Overlay),
            mode: Some(NetworkMode::Vxlan),
            net_id: Some(4),
            ..Default::default()
        },
    )
}

fn subnet(name: &str, network: &str, cidr: &str) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            network: network.into(),
            net_id: None,
            range: AddressRange {
                version: IpVersion::V4,
                cidr: cidr.into(),
                ..Default::default()
            },
            config: None,
        },
    )
}

/// kube-lite with the overlay network `o` (a /20), node `n1` and a leading replica whose IPAM
/// holds the subnet.
async fn control_plane() -> (kube_lite::ServerHandle, Client, Replica) {
    let (srv, client) = server().await;
    Api::<Network>::all(client.clone())
        .create(&PostParams::default(), &overlay("o"))
        .await
        .unwrap();
    Api::<Subnet>::all(client.clone())
        .create(
            &PostParams::default(),
            &subnet("o-v4", "o", "100.64.0.0/20"),
        )
        .await
        .unwrap();
    let mut node = Node::default();
    node.metadata.name = Some("n1".into());
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let replica = Replica::start(
        srv.client().await.unwrap(),
        ReplicaConfig {
            control: ControlPlaneConfig {
                identity: "bench".into(),
                defaults: PodDefaults {
                    network_type: NetworkType::Overlay,
                    ..Default::default()
                },
                pod_concurrency: 16,
                lease_duration: Duration::from_secs(5),
                lease_retry: Duration::from_millis(200),
                leak_check_interval: Duration::from_secs(600),
                ..Default::default()
            },
            webhook: None,
            cert_reload: Duration::from_secs(60),
            metrics_addr: None::<SocketAddr>,
            control_plane: true,
        },
        None,
    )
    .await
    .unwrap();
    // Wait for the term to start (the subnet is in the IPAM once the network status shows it).
    let nets: Api<Network> = Api::all(client.clone());
    for _ in 0..500 {
        if nets
            .get("o")
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.statistics)
            .is_some_and(|c| c.has_available())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (srv, client, replica)
}

fn pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn pods_per_second(n: usize) {
    let (srv, client, replica) = control_plane().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let creator = tokio::spawn({
        let pods = pods.clone();
        async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    async move {
                        pods.create(&PostParams::default(), &pod(format!("p-{i}")))
                            .await
                            .expect("create pod");
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await;
        }
    });
    let mut created_at = None;
    loop {
        if created_at.is_none() && creator.is_finished() {
            created_at = Some(started.elapsed());
        }
        let written = srv.object_count("networking.alibaba.com", "ipinstances");
        if written >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let created = created_at.unwrap_or(total);
    let p50 = {
        let text = replica.metrics.encode();
        text.lines()
            .find(|l| l.starts_with("hybridnet_ip_allocation_seconds_count"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    println!(
        "pods: {n} pods, all created after {:.2} s, all IPInstances written after {:.2} s => {:.0} pods/s ({p50})",
        created.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    replica.shutdown().await;
}

/// Pods created at a steady `rate` per second for `seconds`; per pod, the time from the start of
/// its create request until a watch on IPInstances sees its first IPInstance (the watch's own
/// delivery delay included, so an upper bound).
async fn steady_latency(rate: usize, seconds: usize) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let (_srv, client, replica) = control_plane().await;
    let n = rate * seconds;
    let requested: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = tokio::spawn({
        let seen = seen.clone();
        let api: Api<IPInstance> = Api::all(client.clone());
        async move {
            let mut events = std::pin::pin!(kube::runtime::watcher(
                api,
                kube::runtime::watcher::Config::default()
            ));
            while let Some(ev) = events.next().await {
                let objs = match ev {
                    Ok(kube::runtime::watcher::Event::Apply(o))
                    | Ok(kube::runtime::watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                let now = Instant::now();
                let mut seen = seen.lock().unwrap();
                for o in objs {
                    if let Some(p) = o.metadata.labels.as_ref().and_then(|l| l.get(label::POD)) {
                        seen.entry(p.clone()).or_insert(now);
                    }
                }
            }
        }
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut creates = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let name = format!("s-{i}");
        requested
            .lock()
            .unwrap()
            .insert(name.clone(), Instant::now());
        let pods = pods.clone();
        creates.push(tokio::spawn(async move {
            pods.create(&PostParams::default(), &pod(name))
                .await
                .expect("create pod");
        }));
    }
    let offered = started.elapsed();
    for c in creates {
        c.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch.abort();
    let mut lat: Vec<Duration> = {
        let requested = requested.lock().unwrap();
        let seen = seen.lock().unwrap();
        requested
            .iter()
            .filter_map(|(p, t)| seen.get(p).map(|s| s.saturating_duration_since(*t)))
            .collect()
    };
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "steady: {n} pods at {rate}/s (offered over {:.1} s), {} with an IPInstance: create-to-IPInstance p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        offered.as_secs_f64(),
        lat.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    replica.shutdown().await;
}

async fn rebuild_time(n: usize) {
    let (srv, client) = server().await;
    Api::<Network>::all(client.clone())
        .create(&PostParams::default(), &overlay("o"))
        .await
        .unwrap();
    for (i, cidr) in ["10.0.0.0/16", "10.1.0.0/16"].iter().enumerate() {
        Api::<Subnet>::all(client.clone())
            .create(&PostParams::default(), &subnet(&format!("s{i}"), "o", cidr))
            .await
            .unwrap();
    }
    let api: Api<IPInstance> = Api::namespaced(client.clone(), "default");
    let fill = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let (s, host) = (i / 65_000, i % 65_000 + 1);
                let ip = format!("10.{s}.{}.{}", host / 256, host % 256);
                let name = ip.replace('.', "-");
                let pod = format!("pod-{i}");
                let inst = IPInstance {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some(
                            [
                                (label::SUBNET.to_string(), format!("s{s}")),
                                (label::NETWORK.to_string(), "o".to_string()),
                                (label::POD.to_string(), pod.clone()),
                            ]
                            .into(),
                        ),
                        finalizers: Some(vec![finalizer::IP_ALLOCATED.into()]),
                        ..Default::default()
                    },
                    spec: IPInstanceSpec {
                        network: "o".into(),
                        subnet: format!("s{s}"),
                        address: Address {
                            version: IpVersion::V4,
                            ip: format!("{ip}/16"),
                            gateway: None,
                            net_id: Some(4),
                            mac: format!(
                                "02:12:34:{:02x}:{:02x}:{:02x}",
                                (i >> 16) & 0xff,
                                (i >> 8) & 0xff,
                                i & 0xff
                            ),
                        },
                        binding: Binding {
                            referred_object: Some(ReferredObject {
                                kind: Some("Pod".into()),
                                name: Some(pod.clone()),
                                uid: Some(format!("uid-{i}")),
                            }),
                            node_name: Some("n1".into()),
                            pod_uid: Some(format!("uid-{i}")),
                            pod_name: Some(pod),
                            stateful: None,
                        },
                    },
                    status: None,
                };
                api.create(&PostParams::default(), &inst)
                    .await
                    .expect("create IPInstance");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    println!(
        "rebuild: created {n} IPInstances in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    for round in 0..3 {
        let t = Instant::now();
        let r = rebuild(&client).await.expect("rebuild");
        println!(
            "rebuild: round {round}: {} IPInstances, {} conflicts, list+rebuild {:.2} s (rebuild reported {:.2} s), {} pods recorded",
            r.instances,
            r.conflicts,
            t.elapsed().as_secs_f64(),
            r.elapsed.as_secs_f64(),
            r.pods.len()
        );
    }
    drop(srv);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pods = env_usize("CP_BENCH_PODS", 2000);
    let instances = env_usize("CP_BENCH_INSTANCES", 100_000);
    let rate = env_usize("CP_BENCH_RATE", 100);
    let seconds = env_usize("CP_BENCH_SECONDS", 10);
    rt.block_on(pods_per_second(pods));
    rt.block_on(steady_latency(rate, seconds));
    rt.block_on(rebuild_time(instances));
}
