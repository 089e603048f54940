//! Offline checks of the generated CRDs (no API server needed): structural schemas, printer columns
//! that point at real fields, status subresources, scopes and names as upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use serde_json::Value;

fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// A structural schema gives every node a type (Kubernetes refuses non-structural CRDs).
fn assert_structural(path: &str, node: &Value) {
    let special = node.get("x-kubernetes-int-or-string").is_some()
        || node.get("x-kubernetes-preserve-unknown-fields").is_some();
    assert!(
        special || node.get("type").is_some(),
        "{path} has no type: {node}"
    );
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = node.get(key).and_then(Value::as_array) {
            for a in alts {
                // Inside a value validation, types are optional, but no nested properties may add new fields.
                assert!(
                    a.get("properties").is_none() || node.get("properties").is_some(),
                    "{path}.{key}"
                );
            }
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(&format!("{path}.{k}"), v);
        }
    }
    if let Some(items) = node.get("items") {
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(&format!("{path}{{}}"), ap);
    }
}

/// Resolves a simple printer-column JSONPath (`.spec.a.b`, ignoring filters) in the schema.
fn resolves(schema: &Value, json_path: &str) -> bool {
    // Drop `[...]` filters first: they contain dots of their own.
    let mut plain = String::new();
    let mut depth = 0;
    for c in json_path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let mut node = schema;
    for seg in plain.trim_start_matches('.').split('.') {
        if seg == "metadata" {
            return true;
        }
        match node.get("properties").and_then(|p| p.get(seg)) {
            Some(n) => node = n,
            None => return false,
        }
        if let Some(items) = node.get("items") {
            node = items;
        }
    }
    true
}

#[test]
fn crds_are_structural_and_columns_resolve() {
    let all = hybridnet_api::crd::all();
    assert_eq!(all.len(), 9);
    for (file, crd) in all {
        let crd = serde_json::to_value(&crd).unwrap();
        let schema = schema_of(&crd);
        assert_structural(file, schema);
        let version = &crd["spec"]["versions"][0];
        assert_eq!(
            version["subresources"]["status"],
            serde_json::json!({}),
            "{file}: status subresource"
        );
        for col in version["additionalPrinterColumns"].as_array().unwrap() {
            let jp = col["jsonPath"].as_str().unwrap();
            assert!(
                resolves(schema, jp),
                "{file}: printer column {jp} points nowhere"
            );
        }
        assert!(
            !crd["spec"]["names"]["shortNames"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{file}: short names"
        );
    }
}

#[test]
fn scopes_and_names_match_upstream() {
    let by_name: std::collections::BTreeMap<String, Value> = hybridnet_api::crd::all()
        .into_iter()
        .map(|(_, c)| {
            let v = serde_json::to_value(&c).unwrap();
            (v["metadata"]["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    for (name, scope) in [
        ("networks.networking.alibaba.com", "Cluster"),
        ("subnets.networking.alibaba.com", "Cluster"),
        ("ipinstances.networking.alibaba.com", "Namespaced"),
        ("nodeinfoes.networking.alibaba.com", "Cluster"),
        ("hybridnetclusters.operator.hybridnet.io", "Cluster"),
        ("remoteclusters.multicluster.alibaba.com", "Cluster"),
        ("remotesubnets.multicluster.alibaba.com", "Cluster"),
        ("remotevteps.multicluster.alibaba.com", "Cluster"),
        // Upstream's plural is the singular.
        ("remoteendpointslice.multicluster.alibaba.com", "Cluster"),
    ] {
        assert_eq!(by_name[name]["spec"]["scope"], scope, "{name}");
    }
    // Immutability is enforced by the schema too, so a cluster stays safe while the webhook is down.
    let subnet = serde_json::to_string(&by_name["subnets.networking.alibaba.com"]).unwrap();
    assert!(subnet.contains("self.network == oldSelf.network"));
    assert!(subnet.contains("self.range.cidr == oldSelf.range.cidr"));
    let network = serde_json::to_string(&by_name["networks.networking.alibaba.com"]).unwrap();
    assert!(network.contains("spec.type is immutable"));
    let cluster =
        serde_json::to_string(&by_name["hybridnetclusters.operator.hybridnet.io"]).unwrap();
    assert!(cluster.contains("self.metadata.name == 'default'"));
}
