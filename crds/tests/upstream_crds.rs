//! Every CRD we ship against upstream's own (fixtures copied from alibaba/hybridnet
//! `charts/hybridnet/crds/`, see `tests/fixtures/upstream/README.md`): group, names, scope, versions,
//! served/storage, subresources, printer columns and the schema, field by field. Each difference we
//! intend is listed in `INTENDED` with its reason; any other difference (or an intended one that went
//! away) fails, so a drift from upstream cannot slip in unnoticed. docs/api.md summarises the list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const UPSTREAM: [&str; 8] = [
    "networking.alibaba.com_networks.yaml",
    "networking.alibaba.com_subnets.yaml",
    "networking.alibaba.com_ipinstances.yaml",
    "networking.alibaba.com_nodeinfoes.yaml",
    "multicluster.alibaba.com_remoteclusters.yaml",
    "multicluster.alibaba.com_remotesubnets.yaml",
    "multicluster.alibaba.com_remotevteps.yaml",
    "multicluster.alibaba.com_remoteendpointslice.yaml",
];

/// (CRD, difference as `differences` spells it, why).
const INTENDED: &[(&str, &str, &str)] = &[
    // Short names: a kubectl convenience, no effect on the wire.
    (
        "networks",
        "names.shortNames: ours [\"hnet\"]",
        "kubectl short name",
    ),
    (
        "subnets",
        "names.shortNames: ours [\"hsubnet\"]",
        "kubectl short name",
    ),
    (
        "ipinstances",
        "names.shortNames: ours [\"ipi\"]",
        "kubectl short name",
    ),
    (
        "nodeinfoes",
        "names.shortNames: ours [\"hni\"]",
        "kubectl short name",
    ),
    // The API server serves apiVersion, kind and metadata of every custom resource itself.
    (
        "networks",
        "schema .apiVersion: only upstream",
        "served by the API server",
    ),
    (
        "networks",
        "schema .kind: only upstream",
        "served by the API server",
    ),
    (
        "networks",
        "schema .metadata: only upstream",
        "served by the API server",
    ),
    (
        "subnets",
        "schema .apiVersion: only upstream",
        "served by the API server",
    ),
    (
        "subnets",
        "schema .kind: only upstream",
        "served by the API server",
    ),
    (
        "subnets",
        "schema .metadata: only upstream",
        "served by the API server",
    ),
    (
        "ipinstances",
        "schema .apiVersion: only upstream",
        "served by the API server",
    ),
    (
        "ipinstances",
        "schema .kind: only upstream",
        "served by the API server",
    ),
    (
        "ipinstances",
        "schema .metadata: only upstream",
        "served by the API server",
    ),
    (
        "nodeinfoes",
        "schema .apiVersion: only upstream",
        "served by the API server",
    ),
    (
        "nodeinfoes",
        "schema .kind: only upstream",
        "served by the API server",
    ),
    (
        "nodeinfoes",
        "schema .metadata: only upstream",
        "served by the API server",
    ),
    // spec is required: upstream's Go client always writes one (a non-pointer struct).
    (
        "networks",
        "schema .: required upstream [] ours [\"spec\"]",
        "upstream always writes spec",
    ),
    (
        "subnets",
        "schema .: required upstream [] ours [\"spec\"]",
        "upstream always writes spec",
    ),
    (
        "ipinstances",
        "schema .: required upstream [] ours [\"spec\"]",
        "upstream always writes spec",
    ),
    (
        "nodeinfoes",
        "schema .: required upstream [] ours [\"spec\"]",
        "upstream always writes spec",
    ),
    // Validation that upstream only does in its webhook: kept in the schema so a cluster stays
    // safe while the webhook is down (docs/api.md, "Stricter than upstream").
    (
        "networks",
        "schema .spec: ours adds x-kubernetes-validations",
        "immutable type, mode, netID (upstream webhook rule)",
    ),
    (
        "networks",
        "schema .spec.config.bgpPeers[].asn: ours adds minimum",
        "asn != 0 (upstream webhook rule)",
    ),
    (
        "networks",
        "schema .spec.config.bgpPeers[].gracefulRestartSeconds: ours adds maximum",
        "BGP restart time is 12 bits (RFC 4724)",
    ),
    (
        "networks",
        "schema .spec.config.bgpPeers[].gracefulRestartSeconds: ours adds minimum",
        "no negative durations",
    ),
    (
        "networks",
        "schema .spec.mode: ours adds enum",
        "known modes (upstream webhook rule)",
    ),
    (
        "networks",
        "schema .spec.netID: ours adds minimum",
        "no negative VLAN id / VNI / ASN",
    ),
    (
        "networks",
        "schema .spec.type: ours adds enum",
        "known types (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec: ours adds x-kubernetes-validations",
        "immutable network and range (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec.netID: ours adds maximum",
        "VLAN id range (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec.netID: ours adds minimum",
        "VLAN id range (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec.network: ours adds maxLength",
        "a Kubernetes object name",
    ),
    (
        "subnets",
        "schema .spec.network: ours adds minLength",
        "network required non-empty (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec.range.cidr: ours adds maxLength",
        "longest IPv6 CIDR text",
    ),
    (
        "subnets",
        "schema .spec.range.cidr: ours adds minLength",
        "cidr required non-empty (upstream webhook rule)",
    ),
    (
        "subnets",
        "schema .spec.range.version: ours adds enum",
        "\"4\" or \"6\" (upstream webhook rule)",
    ),
    (
        "ipinstances",
        "schema .spec.address.version: ours adds enum",
        "\"4\" or \"6\"",
    ),
    (
        "ipinstances",
        "schema .spec.binding: ours adds default",
        "upstream's Go client always writes binding (a non-pointer struct)",
    ),
    // The multi-cluster kinds (docs/multicluster.md): the same four kinds of difference as
    // above (short names, root fields served by the API server, spec required), plus:
    (
        "remoteclusters",
        "names.shortNames: ours [\"hrc\"]",
        "kubectl short name",
    ),
    (
        "remotesubnets",
        "names.shortNames: ours [\"hrsubnet\"]",
        "kubectl short name",
    ),
    (
        "remotevteps",
        "names.shortNames: ours [\"hrvtep\"]",
        "kubectl short name",
    ),
    (
        "remoteendpointslice",
        "names.shortNames: ours [\"hres\"]",
        "kubectl short name",
    ),
    (
        "remoteclusters",
        "schema .spec.credentialsSecretRef: only ours",
        "credentials from a Secret instead of a key in a cluster-scoped object",
    ),
    (
        "remoteclusters",
        "schema .spec.credentialsSecretRef.name: only ours",
        "the Secret's name",
    ),
    (
        "remoteclusters",
        "schema .spec.credentialsSecretRef.namespace: only ours",
        "the Secret's namespace",
    ),
    (
        "remoteclusters",
        "schema .spec.timeout: ours adds minimum",
        "no negative timeout",
    ),
    (
        "remotesubnets",
        "schema .spec.networkType: ours adds enum",
        "known network types",
    ),
    (
        "remotesubnets",
        "schema .spec.range.cidr: ours adds maxLength",
        "a Subnet's AddressRange, as ours",
    ),
    (
        "remotesubnets",
        "schema .spec.range.cidr: ours adds minLength",
        "a Subnet's AddressRange, as ours",
    ),
    (
        "remotesubnets",
        "schema .spec.range.version: ours adds enum",
        "a Subnet's AddressRange, as ours",
    ),
];

/// The differences every CRD of ours has from upstream's: short names aside (listed per CRD),
/// the API server serves `apiVersion`, `kind` and `metadata` itself, and `spec` is required
/// (upstream's Go client always writes one, a non-pointer struct).
const COMMON: [&str; 4] = [
    "schema .apiVersion: only upstream",
    "schema .kind: only upstream",
    "schema .metadata: only upstream",
    "schema .: required upstream [] ours [\"spec\"]",
];

/// CRDs whose common differences are not spelled out in `INTENDED` (the multi-cluster ones).
const COMMON_FOR: [&str; 4] = [
    "remoteclusters",
    "remotesubnets",
    "remotevteps",
    "remoteendpointslice",
];

/// Schema keywords that only restrict or default values (never add or drop fields).
const VALUE_KEYWORDS: [&str; 9] = [
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "default",
    "x-kubernetes-validations",
    "maxItems",
];

fn upstream(file: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/upstream/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ours() -> BTreeMap<String, Value> {
    hybridnet_api::crd::all()
        .into_iter()
        .map(|(_, c)| {
            let v = serde_json::to_value(&c).unwrap();
            (v["metadata"]["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Every schema node by path (`.spec.a`, `[]` for items, `{}` for additionalProperties).
fn nodes<'a>(node: &'a Value, path: String, out: &mut BTreeMap<String, &'a Value>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = if path == "." {
                format!(".{k}")
            } else {
                format!("{path}.{k}")
            };
            nodes(v, p, out);
        }
    }
    if let Some(items) = node.get("items") {
        nodes(items, format!("{path}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        nodes(ap, format!("{path}{{}}"), out);
    }
    out.insert(path, node);
}

fn sorted_required(node: &Value) -> Vec<String> {
    let mut r: Vec<String> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    r.sort();
    r
}

/// Equal values, numbers compared as numbers (`0` and `0.0`: the API's `minimum` is a float).
fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// All differences between upstream's CRD and ours, one line each.
fn differences(up: &Value, ours: &Value) -> Vec<String> {
    let mut d = Vec::new();
    for key in ["group", "scope"] {
        if up["spec"][key] != ours["spec"][key] {
            d.push(format!(
                "{key}: upstream {} ours {}",
                up["spec"][key], ours["spec"][key]
            ));
        }
    }
    let (un, on) = (&up["spec"]["names"], &ours["spec"]["names"]);
    for key in ["kind", "listKind", "plural", "singular", "categories"] {
        if un.get(key) != on.get(key) {
            d.push(format!(
                "names.{key}: upstream {:?} ours {:?}",
                un.get(key),
                on.get(key)
            ));
        }
    }
    match (un.get("shortNames"), on.get("shortNames")) {
        (None, Some(s)) => d.push(format!("names.shortNames: ours {s}")),
        (u, o) if u != o => d.push(format!("names.shortNames: upstream {u:?} ours {o:?}")),
        _ => {}
    }
    let (uv, ov) = (
        up["spec"]["versions"].as_array().unwrap(),
        ours["spec"]["versions"].as_array().unwrap(),
    );
    if uv.len() != ov.len() {
        d.push(format!("versions: upstream {} ours {}", uv.len(), ov.len()));
    }
    for (u, o) in uv.iter().zip(ov) {
        for key in [
            "name",
            "served",
            "storage",
            "subresources",
            "additionalPrinterColumns",
            "deprecated",
        ] {
            if u.get(key) != o.get(key) {
                d.push(format!(
                    "versions[{}].{key}: upstream {:?} ours {:?}",
                    u["name"],
                    u.get(key),
                    o.get(key)
                ));
            }
        }
        let (mut un, mut on) = (BTreeMap::new(), BTreeMap::new());
        nodes(&u["schema"]["openAPIV3Schema"], ".".into(), &mut un);
        nodes(&o["schema"]["openAPIV3Schema"], ".".into(), &mut on);
        let paths: BTreeSet<&String> = un.keys().chain(on.keys()).collect();
        for p in paths {
            match (un.get(p), on.get(p)) {
                (Some(_), None) => d.push(format!("schema {p}: only upstream")),
                (None, Some(_)) => d.push(format!("schema {p}: only ours")),
                (Some(a), Some(b)) => {
                    for key in ["type", "format", "x-kubernetes-preserve-unknown-fields"] {
                        if a.get(key) != b.get(key) {
                            d.push(format!(
                                "schema {p}: {key} upstream {:?} ours {:?}",
                                a.get(key),
                                b.get(key)
                            ));
                        }
                    }
                    let (ra, rb) = (sorted_required(a), sorted_required(b));
                    if ra != rb {
                        d.push(format!("schema {p}: required upstream {ra:?} ours {rb:?}"));
                    }
                    for key in VALUE_KEYWORDS {
                        match (a.get(key), b.get(key)) {
                            (None, Some(_)) => d.push(format!("schema {p}: ours adds {key}")),
                            (x, y) if !same_value(x, y) => {
                                d.push(format!("schema {p}: {key} upstream {x:?} ours {y:?}"))
                            }
                            _ => {}
                        }
                    }
                }
                (None, None) => unreachable!(),
            }
        }
    }
    d
}

#[test]
fn every_crd_matches_upstream_but_for_the_listed_differences() {
    let ours = ours();
    let mut found = BTreeSet::new();
    for file in UPSTREAM {
        let up = upstream(file);
        let name = up["metadata"]["name"].as_str().unwrap().to_string();
        let mine = ours
            .get(&name)
            .unwrap_or_else(|| panic!("we ship no CRD {name} (upstream {file})"));
        let short = name.split('.').next().unwrap().to_string();
        for diff in differences(&up, mine) {
            found.insert((short.clone(), diff));
        }
    }
    let intended: BTreeSet<(String, String)> = INTENDED
        .iter()
        .map(|(c, d, _)| (c.to_string(), d.to_string()))
        .chain(
            COMMON_FOR
                .iter()
                .flat_map(|c| COMMON.iter().map(|d| (c.to_string(), d.to_string()))),
        )
        .collect();
    let unexpected: Vec<_> = found.difference(&intended).collect();
    let gone: Vec<_> = intended.difference(&found).collect();
    assert!(
        unexpected.is_empty() && gone.is_empty(),
        "CRDs drifted from upstream.\nunlisted differences: {unexpected:#?}\nlisted but gone: {gone:#?}"
    );
}

/// Nullable is the one difference the table leaves implicit: upstream's Go client writes `null` for
/// optional pointers without omitempty (`netID`, `autoNatOutgoing`, `private`, a zero `metav1.Time`),
/// so an optional field of ours must accept it. A required field never is nullable.
#[test]
fn only_optional_fields_are_nullable() {
    let ours = ours();
    for file in UPSTREAM {
        let up = upstream(file);
        let name = up["metadata"]["name"].as_str().unwrap();
        let mut on = BTreeMap::new();
        nodes(
            &ours[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            ".".into(),
            &mut on,
        );
        for (path, node) in &on {
            for req in sorted_required(node) {
                let child = if path == "." {
                    format!(".{req}")
                } else {
                    format!("{path}.{req}")
                };
                assert_ne!(
                    on.get(&child).and_then(|c| c.get("nullable")),
                    Some(&Value::Bool(true)),
                    "{name}: required {child} is nullable"
                );
            }
        }
        // The pointers upstream writes as null are nullable here.
        for p in [
            ".spec.netID",
            ".spec.address.netID",
            ".spec.config.autoNatOutgoing",
        ] {
            if let Some(n) = on.get(p) {
                assert_eq!(n.get("nullable"), Some(&Value::Bool(true)), "{name}: {p}");
            }
        }
    }
}

/// The differences walk itself sees a change (so an empty result means "same", not "blind").
#[test]
fn a_changed_plural_or_column_is_a_difference() {
    let up = upstream("networking.alibaba.com_nodeinfoes.yaml");
    let mut other = up.clone();
    assert!(differences(&up, &other).is_empty());
    other["spec"]["names"]["plural"] = "nodeinfos".into();
    other["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"] = ".spec.x".into();
    other["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["updateTimestamp"]["format"] = Value::Null;
    let d = differences(&up, &other);
    assert_eq!(d.len(), 3, "{d:#?}");
    assert!(d[0].starts_with("names.plural"), "{d:#?}");
}
