//! The committed OLM bundle against the rules `operator-sdk bundle validate --select-optional
//! suite=operatorframework` applies. In operator-sdk (internal/cmd/operator-sdk/bundle/validate/
//! optional.go) that suite selects one validator, `OperatorHubValidator` of operator-framework/api;
//! its rules, written down from pkg/validation/internal/operatorhub.go (validateHubCSVSpec,
//! validateHubDeprecatedAPIS, validateHubChannels) and removed_apis.go (getRemovedAPIsOn1_22From)
//! at commit 2c20e68a485a8519448d99cbdddbb0bf450aeb16, are [`operatorhub`] below, error or warning
//! as there. The committed bundle has neither; each rule is also shown to fire on a bundle that
//! breaks it, so a bundle OperatorHub would reject fails here. Beyond that validator: the
//! OLM-specific claims of docs/operations.md (suggested namespace template, owned resources, images pinned
//! by digest with `RELATED_IMAGE_HYBRIDNET`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;

use hybridnet_operator::lifecycle::install::{self, OPERATOR_VERSION};
use serde_json::{Value, json};

fn docs(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    parse(&text)
}

fn parse(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The bundle as the validator sees it: the CSV, every other manifest, the channels.
struct Bundle {
    csv: Value,
    objects: Vec<Value>,
    channels: Vec<String>,
}

fn committed() -> Bundle {
    let mut csv = None;
    let mut objects = Vec::new();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle/manifests"))
        .unwrap()
    {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        for d in docs(&format!("bundle/manifests/{name}")) {
            if d["kind"] == "ClusterServiceVersion" {
                csv = Some(d);
            } else {
                objects.push(d);
            }
        }
    }
    let ann = &docs("bundle/metadata/annotations.yaml")[0]["annotations"];
    let channels = ann["operators.operatorframework.io.bundle.channels.v1"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    Bundle {
        csv: csv.expect("a CSV"),
        objects,
        channels,
    }
}

/// semver.ParseTolerant: an optional `v`, 1-3 numeric parts (missing ones are 0), optional
/// pre-release/build.
fn semver_tolerant(s: &str) -> bool {
    let s = s.trim().trim_start_matches('v');
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    !core.is_empty()
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// semver.Parse: exactly MAJOR.MINOR.PATCH without leading zeros, optional pre-release/build.
fn semver_strict(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

/// net/mail.ParseAddress for the plain `local@domain` form (optionally `Name <local@domain>`).
fn mail_address(s: &str) -> bool {
    let addr = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b && b == s.len() - 1 => &s[a + 1..b],
        (None, None) => s,
        _ => return false,
    };
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && addr.bytes().all(|b| b.is_ascii_graphic())
}

/// url.ParseRequestURI: an absolute URI (scheme:...) or an absolute path, no spaces.
fn request_uri(s: &str) -> bool {
    if s.is_empty()
        || s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    match s.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

const CAPABILITIES: &[&str] = &[
    "Basic Install",
    "Seamless Upgrades",
    "Full Lifecycle",
    "Deep Insights",
    "Auto Pilot",
];
const MEDIATYPES: &[&str] = &["image/gif", "image/jpeg", "image/png", "image/svg+xml"];
const CATEGORIES: &[&str] = &[
    "AI/Machine Learning",
    "Application Runtime",
    "Big Data",
    "Cloud Provider",
    "Developer Tools",
    "Database",
    "Integration & Delivery",
    "Logging & Tracing",
    "Monitoring",
    "Networking",
    "OpenShift Optional",
    "Security",
    "Storage",
    "Streaming & Messaging",
];
/// getRemovedAPIsOn1_22From: (apiVersion, kinds) no longer served since Kubernetes 1.22.
const REMOVED_1_22: &[(&str, &[&str])] = &[
    (
        "apiextensions.k8s.io/v1beta1",
        &["CustomResourceDefinition"],
    ),
    ("scheduling.k8s.io/v1beta1", &["PriorityClass"]),
    (
        "rbac.authorization.k8s.io/v1beta1",
        &["Role", "ClusterRoleBinding", "RoleBinding", "ClusterRole"],
    ),
    ("apiregistration.k8s.io/v1beta1", &["APIService"]),
    ("authentication.k8s.io/v1beta1", &["TokenReview"]),
    (
        "authorization.k8s.io/v1beta1",
        &[
            "LocalSubjectAccessReview",
            "SelfSubjectAccessReview",
            "SubjectAccessReview",
        ],
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        &[
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ],
    ),
    ("coordination.k8s.io/v1beta1", &["Lease"]),
    ("extensions/v1beta1", &["Ingress"]),
    ("networking.k8s.io/v1beta1", &["Ingress", "IngressClass"]),
    (
        "storage.k8s.io/v1beta1",
        &["CSIDriver", "CSINode", "StorageClass", "VolumeAttachment"],
    ),
    (
        "certificates.k8s.io/v1beta1",
        &["CertificateSigningRequest"],
    ),
];

/// OperatorHubValidator: (errors, warnings), each naming its rule.
fn operatorhub(b: &Bundle) -> (Vec<String>, Vec<String>) {
    let (mut e, mut w) = (Vec::new(), Vec::new());
    let csv = &b.csv;
    let spec = &csv["spec"];
    let ann = &csv["metadata"]["annotations"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    // checkSpecProviderName
    if s(&spec["provider"]["name"]).is_empty() {
        e.push("provider.name not specified".into());
    }
    // checkSpecMaintainers
    for m in spec["maintainers"].as_array().into_iter().flatten() {
        if s(&m["name"]).is_empty() || s(&m["email"]).is_empty() {
            e.push("maintainers: name and email".into());
        }
        if !s(&m["email"]).is_empty() && !mail_address(&s(&m["email"])) {
            e.push(format!("maintainers: email {} invalid", m["email"]));
        }
    }
    // checkSpecLinks
    for l in spec["links"].as_array().into_iter().flatten() {
        if s(&l["name"]).is_empty() || s(&l["url"]).is_empty() {
            e.push("links: name and url".into());
        }
        if !s(&l["url"]).is_empty() && !request_uri(&s(&l["url"])) {
            e.push(format!("links: url {} invalid", l["url"]));
        }
    }
    // checkAnnotations (default categories; OPERATOR_BUNDLE_CATEGORIES unset)
    if let Some(c) = ann["capabilities"].as_str()
        && !CAPABILITIES.contains(&c)
    {
        e.push(format!("capabilities {c} invalid"));
    }
    if let Some(cats) = ann["categories"].as_str() {
        for c in cats.split(',') {
            if !CATEGORIES.contains(&c.trim()) {
                e.push(format!("category {c} not a default category"));
            }
        }
    }
    // checkSpecVersion
    if !spec["version"].as_str().is_some_and(semver_strict) || spec["version"] == "0.0.0" {
        e.push("spec.version must be set".into());
    }
    // checkSpecIcon
    match spec["icon"].as_array() {
        None => w.push("icon not specified".into()),
        Some(icons) => {
            if icons.len() != 1 {
                e.push("icon: exactly one element".into());
            }
            if let Some(i) = icons.first() {
                if s(&i["mediatype"]).is_empty() || s(&i["base64data"]).is_empty() {
                    e.push("icon: data and mediatype".into());
                }
                if !s(&i["mediatype"]).is_empty()
                    && !MEDIATYPES.contains(&s(&i["mediatype"]).as_str())
                {
                    e.push(format!("icon: mediatype {} invalid", i["mediatype"]));
                }
            }
        }
    }
    // checkSpecMinKubeVersion
    let min_kube = s(&spec["minKubeVersion"]);
    if min_kube.trim().is_empty() {
        w.push("minKubeVersion not informed".into());
    } else if !semver_tolerant(&min_kube) {
        e.push(format!("minKubeVersion {min_kube} invalid"));
    }
    // checkBundleName
    let name = s(&csv["metadata"]["name"]);
    let tail_semver = name
        .rsplit_once(".v")
        .map(|(_, v)| v)
        .or_else(|| name.rsplit('.').next())
        .is_some_and(semver_strict);
    if !tail_semver {
        w.push(format!(
            "metadata.name {name} not ending in a semantic version"
        ));
    }
    if name.split(".v").count() < 2 {
        w.push(format!(
            "metadata.name {name} not <operator-name>.v<semver>"
        ));
    }
    // validateHubDeprecatedAPIS: minKubeVersion >= 1.22 makes removed APIs an error.
    for o in &b.objects {
        let (av, kind) = (s(&o["apiVersion"]), s(&o["kind"]));
        if REMOVED_1_22
            .iter()
            .any(|(v, kinds)| *v == av && kinds.contains(&kind.as_str()))
        {
            e.push(format!(
                "{kind} {} uses {av}, removed in 1.22",
                o["metadata"]["name"]
            ));
        }
    }
    // validateHubChannels
    for c in &b.channels {
        if !["preview", "stable", "fast"]
            .iter()
            .any(|p| c.starts_with(p))
        {
            w.push(format!("channel {c} not following the naming convention"));
        }
    }
    (e, w)
}

#[test]
fn committed_bundle_passes_the_operatorhub_validator() {
    let b = committed();
    let (errors, warnings) = operatorhub(&b);
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(warnings.is_empty(), "warnings: {warnings:?}");
}

#[test]
fn every_operatorhub_rule_fires_on_a_bundle_that_breaks_it() {
    type Break = (&'static str, fn(&mut Bundle), bool);
    let cases: &[Break] = &[
        (
            "provider.name",
            |b| b.csv["spec"]["provider"]["name"] = json!(""),
            true,
        ),
        (
            "maintainers: name",
            |b| b.csv["spec"]["maintainers"][0]["name"] = json!(""),
            true,
        ),
        (
            "email",
            |b| b.csv["spec"]["maintainers"][0]["email"] = json!("not-an-address"),
            true,
        ),
        (
            "links: name",
            |b| b.csv["spec"]["links"][0]["name"] = json!(""),
            true,
        ),
        (
            "url",
            |b| b.csv["spec"]["links"][0]["url"] = json!("github.com/x y"),
            true,
        ),
        (
            "capabilities",
            |b| b.csv["metadata"]["annotations"]["capabilities"] = json!("Magic"),
            true,
        ),
        (
            "category",
            |b| b.csv["metadata"]["annotations"]["categories"] = json!("Networking, Plumbing"),
            true,
        ),
        (
            "spec.version",
            |b| b.csv["spec"]["version"] = json!("1.0"),
            true,
        ),
        (
            "icon not specified",
            |b| {
                b.csv["spec"].as_object_mut().unwrap().remove("icon");
            },
            false,
        ),
        (
            "exactly one",
            |b| {
                let i = b.csv["spec"]["icon"][0].clone();
                b.csv["spec"]["icon"] = json!([i.clone(), i]);
            },
            true,
        ),
        (
            "data and mediatype",
            |b| b.csv["spec"]["icon"][0]["base64data"] = json!(""),
            true,
        ),
        (
            "mediatype",
            |b| b.csv["spec"]["icon"][0]["mediatype"] = json!("image/bmp"),
            true,
        ),
        (
            "minKubeVersion not informed",
            |b| b.csv["spec"]["minKubeVersion"] = json!(""),
            false,
        ),
        (
            "minKubeVersion",
            |b| b.csv["spec"]["minKubeVersion"] = json!("1.x"),
            true,
        ),
        (
            "semantic version",
            |b| b.csv["metadata"]["name"] = json!("hybridnet-operator.v1"),
            false,
        ),
        (
            "<operator-name>.v<semver>",
            |b| b.csv["metadata"]["name"] = json!("hybridnet-operator-0.1.0"),
            false,
        ),
        (
            "removed in 1.22",
            |b| b.objects[0]["apiVersion"] = json!("apiextensions.k8s.io/v1beta1"),
            true,
        ),
        (
            "naming convention",
            |b| b.channels = vec!["alpha".into()],
            false,
        ),
    ];
    for (rule, break_it, is_error) in cases {
        let mut b = committed();
        break_it(&mut b);
        let (errors, warnings) = operatorhub(&b);
        let hit = if *is_error { &errors } else { &warnings };
        assert!(
            hit.iter().any(|m| m.contains(rule)),
            "{rule}: errors {errors:?} warnings {warnings:?}"
        );
    }
    // The helpers follow Go's parsers on the values that matter here.
    assert!(semver_tolerant("1.33") && semver_tolerant("v1.33.0") && !semver_tolerant("1.x"));
    assert!(semver_strict("0.1.0") && !semver_strict("01.1.0") && !semver_strict("1.2"));
    assert!(mail_address("a@b.io") && mail_address("A B <a@b.io>") && !mail_address("a@"));
    assert!(request_uri("https://x.io/a") && request_uri("/p") && !request_uri("x.io"));
}

#[test]
fn olm_claims_hold() {
    let b = committed();
    let ann = &b.csv["metadata"]["annotations"];
    // A suggested namespace template with the Pod Security level the node agent needs, named as
    // the suggested namespace.
    let tpl: Value = serde_json::from_str(
        ann["operatorframework.io/suggested-namespace-template"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(tpl["kind"], "Namespace");
    assert_eq!(
        tpl["metadata"]["name"],
        ann["operatorframework.io/suggested-namespace"]
    );
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            tpl["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
            "privileged"
        );
    }
    // deploy/ creates the same namespace labels.
    let ns = &docs("deploy/namespace.yaml")[0];
    for (k, v) in tpl["metadata"]["labels"].as_object().unwrap() {
        assert_eq!(&ns["metadata"]["labels"][k], v, "{k}");
    }

    // Each owned CRD lists what its objects make the operator create: the HybridnetCluster the
    // whole installation; Networks, Subnets, IPInstances and NodeInfos nothing.
    let owned = b.csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap();
    for o in owned {
        let resources: BTreeSet<&str> = o["resources"]
            .as_array()
            .expect("resources listed")
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        if o["kind"] == "HybridnetCluster" {
            let want: BTreeSet<&str> = [
                "DaemonSet",
                "Service",
                "Secret",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
                "Network",
                "Subnet",
                // On OpenShift only.
                "SecurityContextConstraints",
            ]
            .into();
            assert_eq!(resources, want);
            // Everything the operator renders, on either platform, is listed.
            let s = hybridnet_operator::lifecycle::settings::Settings::from_spec(
                &hybridnet_operator::lifecycle::install::sample_cluster("0.1.0").spec,
                "0.1.0",
                "hybridnet-system",
            )
            .unwrap();
            let r = hybridnet_operator::lifecycle::render::render_on(
                &s,
                None,
                hybridnet_operator::lifecycle::openshift::Platform::OpenShift,
            );
            for o in &r.objects {
                assert!(resources.contains(o.kind()), "{} not listed", o.kind());
            }
        } else {
            assert!(resources.is_empty(), "{}: {resources:?}", o["kind"]);
        }
    }

    // The operator Deployment carries RELATED_IMAGE_HYBRIDNET = the related image it runs.
    let related: Vec<&str> = b.csv["spec"]["relatedImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    let container = &b.csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]
        ["containers"][0];
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RELATED_IMAGE_HYBRIDNET")
        .expect("RELATED_IMAGE_HYBRIDNET");
    assert_eq!(related, [env["value"].as_str().unwrap()]);
    assert_eq!(container["image"], env["value"]);

    // A release bundle pins every image by digest.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let files = install::files_pinned(OPERATOR_VERSION, Some(digest)).unwrap();
    let csv_text = &files
        .iter()
        .find(|(p, _)| p.ends_with(".clusterserviceversion.yaml"))
        .unwrap()
        .1;
    let csv: Value = parse(csv_text).remove(0);
    let pinned = format!("docker.io/hybridnet/hybridnet@{digest}");
    assert_eq!(csv["spec"]["relatedImages"][0]["image"], pinned.as_str());
    assert_eq!(
        csv["metadata"]["annotations"]["containerImage"],
        pinned.as_str()
    );
    let c = &csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(c["image"], pinned.as_str());
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"] == pinned.as_str())
    );
    assert!(!csv_text.contains(":v0."), "a tag left in the pinned CSV");
    for bad in ["sha256:xyz", "latest", ""] {
        assert!(
            install::files_pinned(OPERATOR_VERSION, Some(bad)).is_err(),
            "{bad:?}"
        );
    }
}
