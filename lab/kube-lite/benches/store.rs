//! kube-lite benchmark: 100,000 stored objects.
//!
//! Measures, through HTTP with the real kube client:
//! - create throughput (100,000 ConfigMaps in 10 namespaces, 32 requests in flight),
//! - list latency with 100,000 objects stored (all, one namespace, a label selector, a 500 page),
//! - watch event throughput with 20 concurrent watchers while 20,000 objects are patched.
//!
//! Run: `cargo bench -p kube-lite --bench store` (env KUBE_LITE_BENCH_OBJECTS overrides 100000).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NAMESPACES: usize = 10;
const IN_FLIGHT: usize = 32;
const WATCHERS: usize = 20;
const PATCHES: usize = 20_000;

fn cm(i: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": format!("cm-{i:06}"), "labels": {"app": "bench", "shard": (i % 100).to_string()}},
        "data": {"key": format!("value-{i}")}
    }))
    .expect("valid ConfigMap")
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn time_list(label: &str, api: Api<ConfigMap>, lp: ListParams, runs: usize) {
    let mut samples = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let l = api.list(&lp).await.expect("list");
        samples.push(t.elapsed());
        n = l.items.len();
    }
    println!(
        "list {label:<38} items={n:>6}  p50={:>8.1?}  max={:>8.1?}  (runs={runs})",
        pct(samples.clone(), 0.5),
        pct(samples, 1.0)
    );
}

/// List through HTTP without decoding into typed objects: the server's share of list latency.
async fn time_raw_list(client: &Client, path: &str, runs: usize) {
    let mut samples = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let req = hyper::Request::get(path)
            .body(kube::client::Body::empty())
            .expect("request");
        let resp = client.send(req).await.expect("list");
        bytes = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
        samples.push(t.elapsed());
    }
    println!(
        "raw list {path:<36} bytes={bytes:>9}  p50={:>8.1?}  max={:>8.1?}  (runs={runs}, no client decoding)",
        pct(samples.clone(), 0.5),
        pct(samples, 1.0)
    );
}

/// A raw watch that only counts event lines, so the client does not dominate the measurement.
async fn raw_watch(client: Client, rv: String, want: usize, done: Arc<AtomicUsize>) -> Duration {
    let t = Instant::now();
    let req = hyper::Request::get(format!(
        "/api/v1/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=false&timeoutSeconds=600"
    ))
    .body(kube::client::Body::empty())
    .expect("request");
    let resp = client.send(req).await.expect("watch");
    let mut body = resp.into_body().into_data_stream();
    let mut seen = 0usize;
    while seen < want {
        match body.next().await {
            Some(Ok(chunk)) => seen += chunk.iter().filter(|b| **b == b'\n').count(),
            other => panic!("watch ended after {seen} events: {other:?}"),
        }
    }
    done.fetch_add(1, Ordering::SeqCst);
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let objects: usize = std::env::var("KUBE_LITE_BENCH_OBJECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let srv = kube_lite::Server::start(kube_lite::Config {
        watch_window: 50_000,
        ..Default::default()
    })
    .await
    .expect("start kube-lite");
    let client = srv.client().await.expect("client");
    let nss: Api<Namespace> = Api::all(client.clone());
    for n in 0..NAMESPACES {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("bench-{n}")}}))
                .expect("ns");
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create ns");
    }
    println!(
        "kube-lite bench: {objects} ConfigMaps, {NAMESPACES} namespaces, {IN_FLIGHT} requests in flight"
    );

    // create throughput
    let t = Instant::now();
    futures::stream::iter(0..objects)
        .map(|i| {
            let api: Api<ConfigMap> =
                Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES));
            async move {
                api.create(&PostParams::default(), &cm(i))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let el = t.elapsed();
    println!(
        "create {objects} objects: {el:.2?}  => {:.0} creates/s",
        objects as f64 / el.as_secs_f64()
    );
    assert_eq!(srv.object_count("", "configmaps"), objects);

    // list latency
    let all: Api<ConfigMap> = Api::all(client.clone());
    let one: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-3");
    time_list("all namespaces", all.clone(), ListParams::default(), 5).await;
    time_list("one namespace", one.clone(), ListParams::default(), 10).await;
    time_list(
        "all, labelSelector shard=7 (1%)",
        all.clone(),
        ListParams::default().labels("shard=7"),
        10,
    )
    .await;
    time_list(
        "all, limit=500 (first page)",
        all.clone(),
        ListParams::default().limit(500),
        20,
    )
    .await;
    time_list(
        "one ns, fieldSelector metadata.name",
        one,
        ListParams::default().fields("metadata.name=cm-000003"),
        20,
    )
    .await;

    time_raw_list(&client, "/api/v1/configmaps", 5).await;
    time_raw_list(&client, "/api/v1/namespaces/bench-3/configmaps", 10).await;

    // watch throughput: 20 watchers, PATCHES modifications
    let patches = PATCHES.min(objects);
    let rv = srv.resource_version().to_string();
    let done = Arc::new(AtomicUsize::new(0));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| tokio::spawn(raw_watch(client.clone(), rv.clone(), patches, done.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the watches connect
    let t = Instant::now();
    futures::stream::iter(0..patches)
        .map(|i| {
            let api: Api<ConfigMap> =
                Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES));
            let name = format!("cm-{i:06}");
            async move {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"key": format!("patched-{i}")}})),
                )
                .await
                .expect("patch")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let write = t.elapsed();
    for w in watchers {
        w.await.expect("watcher");
    }
    let total = t.elapsed();
    println!(
        "watch: {patches} patches in {write:.2?} ({:.0} patches/s); all {WATCHERS} watchers received all events after {total:.2?} => {:.0} events/s delivered",
        patches as f64 / write.as_secs_f64(),
        (patches * WATCHERS) as f64 / total.as_secs_f64()
    );
}
