//! Objects written by upstream hybridnet (fixtures in `tests/fixtures/upstream/objects/`, shaped by
//! upstream's Go types and writers; see the comment atop each file) go through our types unchanged,
//! and the values upstream's Go client writes mean here what they mean upstream: `gateway: ""` is
//! no gateway, `lastAllocatedSubnet: ""` no cursor, `nodeName: ""` a reserved address, `null` for an
//! absent pointer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::path::Path;

use hybridnet_api::multicluster::{
    ClusterState, RemoteCluster, RemoteEndpointSlice, RemoteSubnet, RemoteVtep,
};
use hybridnet_api::v1::{IPInstance, Network, NetworkType, NodeInfo, Subnet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixture(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream/objects")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Deserializes into `T` and serializes back: byte-for-byte the same JSON value.
fn unchanged<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let original = fixture(file);
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, original, "{file} changed in a round trip");
    typed
}

#[test]
fn upstream_objects_round_trip_unchanged() {
    for f in ["network-init.yaml", "network-vlan.yaml"] {
        unchanged::<Network>(f);
    }
    for f in ["subnet-init.yaml", "subnet-vlan.yaml"] {
        unchanged::<Subnet>(f);
    }
    for f in ["ipinstance-pod.yaml", "ipinstance-reserved.yaml"] {
        unchanged::<IPInstance>(f);
    }
    unchanged::<NodeInfo>("nodeinfo.yaml");
    unchanged::<RemoteCluster>("remotecluster.yaml");
    unchanged::<RemoteSubnet>("remotesubnet.yaml");
    unchanged::<RemoteVtep>("remotevtep.yaml");
    unchanged::<RemoteEndpointSlice>("remoteendpointslice.yaml");
}

/// The multi-cluster objects upstream writes mean here what they mean upstream, and pass our rules.
#[test]
fn upstream_multicluster_objects_keep_their_meaning() {
    use hybridnet_api::multicluster::validate;

    let rc: RemoteCluster = unchanged("remotecluster.yaml");
    validate::remote_cluster_create(&rc, &[]).expect("upstream's inline credentials are valid");
    assert_eq!(
        rc.spec
            .ca_data
            .as_ref()
            .map(|b| b.0.starts_with(b"-----BEGIN CERTIFICATE-----")),
        Some(true),
        "caData is base64 of PEM on the wire"
    );
    let status = rc.status.as_ref().unwrap();
    assert_eq!(
        ClusterState::parse(status.state.as_deref().unwrap()),
        ClusterState::Ready
    );
    assert_eq!(
        rc.remote_uuid(),
        Some("3f1d2c4b-5a6e-4f70-8192-a3b4c5d6e7f8")
    );
    let failed: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "False")
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(failed, ["SubnetNonCross"]);

    let rs: RemoteSubnet = unchanged("remotesubnet.yaml");
    assert_eq!(rs.spec.effective_type(), NetworkType::Overlay);
    assert_eq!(rs.spec.range.gateway(), None, "gateway \"\" is no gateway");
    validate::remote_subnet_create(&rs, &[], &[]).expect("a mirrored range is valid");
    let mut without_type = rs.clone();
    without_type.spec.network_type = None;
    assert_eq!(without_type.spec.effective_type(), NetworkType::Underlay);

    let vtep: RemoteVtep = unchanged("remotevtep.yaml");
    let info = vtep.spec.vtep_info();
    assert_eq!(info.ip.as_deref(), Some("192.168.56.31"));
    assert_eq!(info.local_ips, Some(vec!["192.168.56.31".to_string()]));

    let eps: RemoteEndpointSlice = unchanged("remoteendpointslice.yaml");
    assert_eq!(
        eps.spec.endpoints.as_ref().unwrap()[0].addresses,
        ["100.65.0.7"]
    );
}

/// Unknown or malformed multi-cluster objects fail to decode with the field named, rather than
/// decoding into something else.
#[test]
fn malformed_multicluster_objects_do_not_decode() {
    let mut rc = fixture("remotecluster.yaml");
    rc["spec"]["caData"] = json!("not base64!");
    let e = serde_json::from_value::<RemoteCluster>(rc)
        .unwrap_err()
        .to_string();
    assert!(!e.is_empty());
    let mut rc = fixture("remotecluster.yaml");
    rc["spec"].as_object_mut().unwrap().remove("apiEndpoint");
    let e = serde_json::from_value::<RemoteCluster>(rc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("apiEndpoint"), "{e}");
    let mut rs = fixture("remotesubnet.yaml");
    rs["spec"]["networkType"] = json!("Sideways");
    assert!(serde_json::from_value::<RemoteSubnet>(rs).is_err());
    let mut eps = fixture("remoteendpointslice.yaml");
    eps["spec"]["endpoints"][0]
        .as_object_mut()
        .unwrap()
        .remove("addresses");
    let e = serde_json::from_value::<RemoteEndpointSlice>(eps)
        .unwrap_err()
        .to_string();
    assert!(e.contains("addresses"), "{e}");
}

#[test]
fn upstream_values_keep_their_meaning() {
    let subnet: Subnet = unchanged("subnet-init.yaml");
    assert_eq!(
        subnet.spec.range.gateway(),
        None,
        "gateway \"\" is no gateway"
    );
    let parsed = hybridnet_api::range::parse_address_range(&subnet.spec.range, "spec.range")
        .expect("an upstream overlay subnet with gateway \"\" parses");
    assert_eq!(parsed.gateway, None);
    assert!(subnet.spec.auto_nat_outgoing());

    let vlan: Subnet = unchanged("subnet-vlan.yaml");
    assert_eq!(vlan.spec.range.gateway(), Some("192.168.56.1"));

    let init: Network = unchanged("network-init.yaml");
    assert_eq!(init.spec.effective_type(), NetworkType::Overlay);
    let underlay: Network = unchanged("network-vlan.yaml");
    hybridnet_api::validate::network_spec(&underlay).expect("upstream VLAN network is valid");
    hybridnet_api::validate::network_spec(&init).expect("upstream overlay network is valid");

    let reserved: IPInstance = unchanged("ipinstance-reserved.yaml");
    assert!(reserved.spec.is_reserved(), "nodeName \"\" is reserved");
    let live: IPInstance = unchanged("ipinstance-pod.yaml");
    assert!(!live.spec.is_reserved());
}

/// Both sides of an immutable field written as upstream does (`""` vs absent) are the same value.
#[test]
fn empty_and_absent_gateway_are_one_value_for_updates() {
    let old: Subnet = unchanged("subnet-init.yaml");
    let networks = [unchanged::<Network>("network-init.yaml")];
    let ex = hybridnet_api::validate::Existing {
        networks: &networks,
        subnets: std::slice::from_ref(&old),
        nodes: &[],
        ipinstances: &[],
    };
    let mut new = old.clone();
    new.spec.range.gateway = None;
    hybridnet_api::validate::subnet_update(&old, &new, &ex)
        .expect("dropping gateway \"\" changes nothing");
    new.spec.range.gateway = Some("100.64.0.1".into());
    let errs = hybridnet_api::validate::subnet_update(&old, &new, &ex).unwrap_err();
    assert!(
        errs.to_string().contains("spec.range.gateway"),
        "setting a gateway is a change: {errs}"
    );
}

/// What upstream's Go client sends before the API server prunes: `null` for pointers without
/// omitempty (`netID`, `config`, `autoNatOutgoing`, `private`, `allowSubnets`, a zero `metav1.Time`).
#[test]
fn go_client_nulls_are_absent_values() {
    let mut body = fixture("subnet-vlan.yaml");
    body["spec"]["config"] = Value::Null;
    body["spec"]["netID"] = Value::Null;
    let s: Subnet = serde_json::from_value(body).expect("nulls accepted");
    assert_eq!(s.spec.net_id, None);
    assert!(s.spec.config.is_none());

    let mut body = fixture("subnet-init.yaml");
    body["spec"]["config"] = json!({"gatewayType": "", "gatewayNode": "", "autoNatOutgoing": null,
        "private": null, "allowSubnets": null});
    let s: Subnet = serde_json::from_value(body).expect("nulls accepted");
    assert!(
        s.spec.auto_nat_outgoing(),
        "autoNatOutgoing null means true"
    );
    assert!(!s.spec.is_private());

    let mut body = fixture("ipinstance-pod.yaml");
    body["spec"]["address"]["netID"] = Value::Null;
    body["status"] = json!({"updateTimestamp": null});
    let i: IPInstance = serde_json::from_value(body).expect("nulls accepted");
    assert_eq!(i.spec.address.net_id, None);

    let mut body = fixture("nodeinfo.yaml");
    body["status"] = json!({"updateTimestamp": null});
    serde_json::from_value::<NodeInfo>(body).expect("nulls accepted");

    let mut body = fixture("network-vlan.yaml");
    body["status"] = json!({"lastAllocatedSubnet": "", "subnetList": null, "nodeList": null,
        "statistics": null});
    serde_json::from_value::<Network>(body).expect("nulls accepted");
}
