//! The resource registry: built-in kinds and resources registered by CRDs.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// `additionalPrinterColumns` of a CRD version (or a built-in column).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// Everything the server knows about one served resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group, "" for the core group.
    pub group: String,
    /// Served versions; the first one is the storage version.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (spec/status split).
    pub status: bool,
    /// Extra subresources besides status (e.g. pods/binding).
    pub extra_subresources: Vec<String>,
    /// Printer columns per version (CRDs); empty for the default Name/Age.
    pub columns: HashMap<String, Vec<PrinterColumn>>,
    /// Defined by a CustomResourceDefinition (no strategic merge patch).
    pub custom: bool,
    /// `openAPIV3Schema` per version (custom resources).
    pub schemas: HashMap<String, Value>,
}

impl ResourceInfo {
    pub fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    pub fn gr(&self) -> Gr {
        (self.group.clone(), self.plural.clone())
    }
    /// Whether status is kept on create (Kubernetes keeps Node status on create).
    pub fn keeps_status_on_create(&self) -> bool {
        !self.status || (self.group.is_empty() && self.plural == "nodes")
    }
}

/// (group, plural)
pub type Gr = (String, String);

#[derive(Clone, Copy)]
struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    extra: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced,
        short,
        status,
        extra: &[],
        categories: &[],
    }
}

const BUILTINS: &[Builtin] = &[
    b("", "v1", "namespaces", "Namespace", false, &["ns"], true),
    b("", "v1", "nodes", "Node", false, &["no"], true),
    Builtin {
        extra: &["binding"],
        categories: &["all"],
        ..b("", "v1", "pods", "Pod", true, &["po"], true)
    },
    Builtin {
        categories: &["all"],
        ..b("", "v1", "services", "Service", true, &["svc"], true)
    },
    b("", "v1", "endpoints", "Endpoints", true, &["ep"], false),
    b("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
    b("", "v1", "secrets", "Secret", true, &[], false),
    b(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
    ),
    b("", "v1", "events", "Event", true, &["ev"], false),
    b(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        false,
    ),
    // With a status subresource, as Kubernetes 1.24-1.27 served it (NetworkPolicyStatus).
    b(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        true,
    ),
    b(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        false,
    ),
    Builtin {
        categories: &["all"],
        ..b("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true)
    },
    Builtin {
        categories: &["all"],
        ..b(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
        )
    },
    Builtin {
        categories: &["all"],
        ..b(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
        )
    },
    Builtin {
        categories: &["all"],
        ..b(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
        )
    },
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
    ),
];

/// The set of served resources.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_gr: BTreeMap<Gr, Arc<ResourceInfo>>,
}

fn col(name: &str, type_: &str, path: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority,
        json_path: path.into(),
    }
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for bi in BUILTINS {
            let mut columns = HashMap::new();
            let cols = match (bi.group, bi.plural) {
                ("", "namespaces") => vec![col("Status", "string", ".status.phase", 0)],
                ("", "nodes") => vec![
                    col("Status", "string", "@node-ready", 0),
                    col("Roles", "string", "@node-roles", 0),
                    col("Age", "date", ".metadata.creationTimestamp", 0),
                    col("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
                    col("Internal-IP", "string", "@node-internal-ip", 1),
                ],
                ("", "pods") => vec![
                    col("Ready", "string", "@pod-ready", 0),
                    col("Status", "string", "@pod-status", 0),
                    col("Restarts", "string", "@pod-restarts", 0),
                    col("Age", "date", ".metadata.creationTimestamp", 0),
                    col("IP", "string", ".status.podIP", 1),
                    col("Node", "string", ".spec.nodeName", 1),
                ],
                ("networking.k8s.io", "networkpolicies") => vec![
                    col("Pod-Selector", "string", "@netpol-pod-selector", 0),
                    col("Age", "date", ".metadata.creationTimestamp", 0),
                ],
                _ => vec![],
            };
            if !cols.is_empty() {
                let mut cols = cols;
                if !cols.iter().any(|c| c.name == "Age") {
                    cols.push(col("Age", "date", ".metadata.creationTimestamp", 0));
                }
                columns.insert(bi.version.to_string(), cols);
            }
            r.insert(ResourceInfo {
                group: bi.group.into(),
                versions: vec![bi.version.into()],
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                kind: bi.kind.into(),
                list_kind: format!("{}List", bi.kind),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                categories: bi.categories.iter().map(|s| s.to_string()).collect(),
                status: bi.status,
                extra_subresources: bi.extra.iter().map(|s| s.to_string()).collect(),
                columns,
                custom: false,
                schemas: HashMap::new(),
            });
        }
        r
    }

    pub fn insert(&mut self, info: ResourceInfo) {
        self.by_gr.insert(info.gr(), Arc::new(info));
    }

    pub fn remove(&mut self, gr: &Gr) -> Option<Arc<ResourceInfo>> {
        self.by_gr.remove(gr)
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.by_gr.get(&(group.to_string(), plural.to_string()))
    }

    /// Look a resource up by group, served version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.get(group, plural)
            .filter(|i| i.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// Find by group + kind (used for ownerReferences and admission).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.by_gr
            .values()
            .find(|i| i.group == group && i.kind == kind)
            .cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.by_gr.values()
    }

    /// Groups with their versions, sorted with the core group excluded; "preferred" first version.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in self.by_gr.values().filter(|i| !i.group.is_empty()) {
            let e = g.entry(i.group.clone()).or_default();
            for v in &i.versions {
                if !e.contains(v) {
                    e.push(v.clone());
                }
            }
        }
        for vs in g.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        g
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, num.parse().unwrap_or(0))
}

/// Build a `ResourceInfo` from a CustomResourceDefinition object.
/// Returns the list of (field, message) validation errors on failure.
pub fn crd_resource(crd: &Value) -> Result<ResourceInfo, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let group = s(&spec, "group");
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let plural = s(&names, "plural");
    let kind = s(&names, "kind");
    let name = crate::util::meta_str(crd, "name");
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    } else if !group.contains('.') {
        errs.push((
            "spec.group".into(),
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    } else if !crate::validate::is_dns_label(&plural) {
        errs.push((
            "spec.names.plural".into(),
            format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label"),
        ));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = s(&spec, "scope");
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push((
            "spec.scope".into(),
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    let mut storage = None;
    let mut status = false;
    let mut columns = HashMap::new();
    let mut schemas = HashMap::new();
    let vs = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if vs.is_empty() {
        errs.push((
            "spec.versions".into(),
            "Required value: must have exactly one version marked as storage version".into(),
        ));
    }
    for (i, v) in vs.iter().enumerate() {
        let vname = s(v, "name");
        if vname.is_empty() {
            errs.push((format!("spec.versions[{i}].name"), "Required value".into()));
            continue;
        }
        if v.get("storage").and_then(Value::as_bool).unwrap_or(false) {
            if storage.is_some() {
                errs.push((
                    "spec.versions".into(),
                    "Invalid value: must have exactly one version marked as storage version".into(),
                ));
            }
            storage = Some(vname.clone());
        }
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        let cols: Vec<PrinterColumn> = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| PrinterColumn {
                        name: s(c, "name"),
                        type_: s(c, "type"),
                        format: s(c, "format"),
                        description: s(c, "description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: s(c, "jsonPath"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !cols.is_empty() {
            columns.insert(vname.clone(), cols);
        }
        if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(vname.clone(), s.clone());
        }
        versions.push(vname);
    }
    if storage.is_none() && !vs.is_empty() {
        errs.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    // storage version first
    if let Some(st) = &storage {
        versions.retain(|v| v != st);
        versions.insert(0, st.clone());
    }
    let strs = |k: &str| -> Vec<String> {
        names
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = match s(&names, "singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let list_kind = match s(&names, "listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    Ok(ResourceInfo {
        group,
        versions,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strs("shortNames"),
        categories: strs("categories"),
        status,
        extra_subresources: vec![],
        columns,
        custom: true,
        schemas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtins_are_registered() {
        let r = Registry::with_builtins();
        let pods = r.lookup("", "v1", "pods").unwrap();
        assert!(pods.namespaced && pods.status);
        assert!(!r.lookup("", "v1", "nodes").unwrap().namespaced);
        assert!(r.lookup("", "v2", "pods").is_none());
        assert_eq!(
            r.by_kind("apps", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(r.groups().contains_key("apps"));
        let np = r
            .lookup("networking.k8s.io", "v1", "networkpolicies")
            .unwrap();
        assert!(np.namespaced && np.status && !np.custom);
        assert_eq!(np.kind, "NetworkPolicy");
        assert_eq!(np.short_names, vec!["netpol"]);
    }

    #[test]
    fn version_order() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2", "foo"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_parsing_and_validation() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
        "group": "example.com", "scope": "Cluster",
        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wg"]},
        "versions": [
            {"name": "v1alpha1", "served": true, "storage": false},
            {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
             "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}
        ]}});
        let i = crd_resource(&crd).unwrap();
        assert_eq!(i.versions, vec!["v1", "v1alpha1"]);
        assert!(!i.namespaced && i.status && i.custom);
        assert_eq!(i.singular, "widget");
        assert_eq!(i.list_kind, "WidgetList");
        assert_eq!(i.columns["v1"][0].json_path, ".spec.size");

        let bad = json!({"metadata": {"name": "wrong"}, "spec": {"group": "nodots", "scope": "Sideways",
            "names": {"plural": "Widgets"}, "versions": []}});
        let errs = crd_resource(&bad).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "spec.group",
            "spec.names.plural",
            "spec.names.kind",
            "metadata.name",
            "spec.scope",
            "spec.versions",
        ] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }
}
