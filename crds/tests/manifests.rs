//! Upstream-style manifests deserialize into our types and serialize back without losing or
//! renaming a field; the committed CRD files match the types.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::Path;

use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Drops nulls: `netID: null` (upstream Go serialises absent pointers that way) carries no data.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let original: Value = serde_saphyr::from_str(&text).unwrap();
    let typed: T = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        without_nulls(back),
        without_nulls(original),
        "{file} did not round-trip"
    );
    typed
}

#[test]
fn networks_round_trip() {
    let vlan: Network = round_trip("network-vlan.yaml");
    assert_eq!(
        vlan.spec.effective_mode(),
        hybridnet_api::v1::NetworkMode::Vlan
    );
    let bgp: Network = round_trip("network-bgp.yaml");
    assert_eq!(bgp.spec.bgp_peers().len(), 2);
    assert_eq!(
        bgp.spec.bgp_peers()[1].effective_graceful_restart_seconds(),
        300
    );
    let overlay: Network = round_trip("network-overlay.yaml");
    assert_eq!(overlay.spec.net_id, Some(4));
    let global: Network = round_trip("network-globalbgp.yaml");
    assert_eq!(global.spec.net_id, None);
    assert!(global.spec.bgp_peers().is_empty());
}

#[test]
fn subnets_round_trip() {
    let s: Subnet = round_trip("subnet-vlan.yaml");
    assert!(!s.spec.is_private());
    let v6: Subnet = round_trip("subnet-overlay-v6.yaml");
    assert!(!v6.spec.auto_nat_outgoing());
}

#[test]
fn ipinstance_and_nodeinfo_round_trip() {
    let i: IPInstance = round_trip("ipinstance.yaml");
    assert!(!i.spec.is_reserved());
    let _: NodeInfo = round_trip("nodeinfo.yaml");
    let _: HybridnetCluster = round_trip("hybridnetcluster.yaml");
}

#[test]
fn unknown_enum_values_are_refused_with_the_field() {
    let bad = "apiVersion: networking.alibaba.com/v1\nkind: Network\nmetadata: {name: x}\nspec: {type: Bridge}\n";
    let err = serde_saphyr::from_str::<Network>(bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Bridge"), "{err}");
}

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in hybridnet_api::crd::all() {
        let want = hybridnet_api::crd::to_yaml(&crd).unwrap();
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{file} is stale: run `cargo run -p hybridnet-api --bin crdgen` and commit the result"
        );
    }
}
