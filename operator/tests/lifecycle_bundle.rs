//! The committed OLM bundle and kustomize install: no drift from the generator, the OLM rules of
//! peers-and-conventions.md section 3, and every manifest valid against the Kubernetes OpenAPI
//! schemas (offline validator `kubernetes-validate`, installed by scripts/tools/kubernetes-validate.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::operator::values::is_release_version;
use hybridnet_operator::lifecycle::install::{self, OPERATOR_VERSION};
use hybridnet_operator::lifecycle::render::{self, ManagedObject};
use hybridnet_operator::lifecycle::settings::Settings;
use hybridnet_test_support::skip;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn committed_bundle_and_deploy_match_the_generator() {
    let files = install::files(OPERATOR_VERSION).unwrap();
    let mut drift = Vec::new();
    for (rel, content) in &files {
        match std::fs::read_to_string(root().join(rel)) {
            Ok(on_disk) if &on_disk == content => {}
            Ok(_) => drift.push(format!("{rel} differs")),
            Err(e) => drift.push(format!("{rel}: {e}")),
        }
    }
    // Nothing stale either: every file under bundle/ and deploy/ is generated.
    let generated: BTreeSet<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
    for dir in ["bundle", "deploy"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(root())
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    if !generated.contains(rel.as_str()) {
                        drift.push(format!("{rel} is not generated"));
                    }
                }
            }
        }
    }
    assert!(
        drift.is_empty(),
        "run `cargo run -p hybridnet-operator --bin bundlegen`: {drift:?}"
    );
}

#[test]
fn generation_is_reproducible() {
    assert_eq!(
        install::files(OPERATOR_VERSION).unwrap(),
        install::files(OPERATOR_VERSION).unwrap()
    );
}

struct Bundle {
    csv: Value,
    crds: Vec<Value>,
    annotations: BTreeMap<String, String>,
}

fn load_bundle() -> Bundle {
    let mut csvs = Vec::new();
    let mut crds = Vec::new();
    for e in std::fs::read_dir(root().join("bundle/manifests")).unwrap() {
        let p = e.unwrap().path();
        let rel = format!(
            "bundle/manifests/{}",
            p.file_name().unwrap().to_string_lossy()
        );
        for d in docs(&rel) {
            match d["kind"].as_str() {
                Some("ClusterServiceVersion") => csvs.push(d),
                Some("CustomResourceDefinition") => crds.push(d),
                other => panic!("{rel}: {other:?} is not a kind this bundle should ship"),
            }
        }
    }
    assert_eq!(csvs.len(), 1, "exactly one CSV per bundle");
    let ann = docs("bundle/metadata/annotations.yaml");
    assert_eq!(ann.len(), 1);
    let annotations = ann[0]["annotations"]
        .as_object()
        .expect("annotations: map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_string()))
        .collect();
    Bundle {
        csv: csvs.remove(0),
        crds,
        annotations,
    }
}

fn schema_has_path(schema: &Value, path: &str) -> bool {
    let mut cur = schema;
    for part in path.split('.') {
        match cur["properties"].get(part) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

#[test]
fn bundle_follows_the_olm_rules() {
    let b = load_bundle();
    let csv = &b.csv;
    let meta_ann = csv["metadata"]["annotations"].as_object().unwrap();
    let spec = &csv["spec"];

    // metadata/annotations.yaml: required keys; at least one channel; default among them.
    for key in [
        "operators.operatorframework.io.bundle.mediatype.v1",
        "operators.operatorframework.io.bundle.manifests.v1",
        "operators.operatorframework.io.bundle.metadata.v1",
        "operators.operatorframework.io.bundle.package.v1",
        "operators.operatorframework.io.bundle.channels.v1",
        "operators.operatorframework.io.bundle.channel.default.v1",
    ] {
        assert!(
            b.annotations.contains_key(key),
            "annotations.yaml lacks {key}"
        );
    }
    assert_eq!(
        b.annotations["operators.operatorframework.io.bundle.mediatype.v1"],
        "registry+v1"
    );
    assert_eq!(
        b.annotations["operators.operatorframework.io.bundle.manifests.v1"],
        "manifests/"
    );
    assert_eq!(
        b.annotations["operators.operatorframework.io.bundle.metadata.v1"],
        "metadata/"
    );
    let channels: Vec<&str> = b.annotations["operators.operatorframework.io.bundle.channels.v1"]
        .split(',')
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!channels.is_empty());
    assert!(channels.contains(
        &b.annotations["operators.operatorframework.io.bundle.channel.default.v1"].as_str()
    ));
    if let Some(dir) = b
        .annotations
        .get("operators.operatorframework.io.test.config.v1")
    {
        let sc = docs(&format!("bundle/{dir}config.yaml"));
        assert_eq!(sc[0]["kind"], "Configuration");
        assert!(!sc[0]["stages"][0]["tests"].as_array().unwrap().is_empty());
    }
    // metadata/ holds only annotations.yaml (and optionally dependencies.yaml).
    for e in std::fs::read_dir(root().join("bundle/metadata")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            ["annotations.yaml", "dependencies.yaml"].contains(&name.as_str()),
            "{name}"
        );
    }

    // bundle.Dockerfile LABELs mirror annotations.yaml exactly.
    let labels: BTreeMap<String, String> = read("bundle.Dockerfile")
        .lines()
        .filter_map(|l| l.strip_prefix("LABEL "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(labels, b.annotations);
    let dockerfile = read("bundle.Dockerfile");
    assert!(dockerfile.contains("FROM scratch"));
    for dir in ["manifests", "metadata"] {
        assert!(
            dockerfile.contains(&format!("COPY bundle/{dir} /{dir}/")),
            "{dir}"
        );
    }

    // CSV metadata annotations OperatorHub expects.
    assert_eq!(meta_ann["capabilities"], "Seamless Upgrades");
    let cats = meta_ann["categories"].as_str().unwrap();
    assert!(cats.split(',').map(str::trim).any(|c| c == "Networking"));
    assert_eq!(meta_ann["features.operators.openshift.io/cni"], "true");
    for f in [
        "disconnected",
        "fips-compliant",
        "proxy-aware",
        "tls-profiles",
        "token-auth-aws",
        "token-auth-azure",
        "token-auth-gcp",
    ] {
        let v = meta_ann[&format!("features.operators.openshift.io/{f}")]
            .as_str()
            .unwrap();
        assert!(v == "true" || v == "false", "{f}: {v}");
    }
    let created = meta_ann["createdAt"].as_str().unwrap();
    // yyyy-mm-ddThh:mm:ssZ
    assert!(
        created.len() == 20
            && created.ends_with('Z')
            && created.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{created}"
    );
    assert!(meta_ann["description"].as_str().unwrap().len() <= 135);
    for k in ["containerImage", "repository", "support"] {
        assert!(!meta_ann[k].as_str().unwrap().is_empty(), "{k}");
    }

    // CSV spec.
    let version = spec["version"].as_str().unwrap();
    assert!(is_release_version(version));
    assert_eq!(version, OPERATOR_VERSION);
    let package = &b.annotations["operators.operatorframework.io.bundle.package.v1"];
    assert_eq!(csv["metadata"]["name"], format!("{package}.v{version}"));
    assert!(is_release_version(spec["minKubeVersion"].as_str().unwrap()));
    assert!(!spec["displayName"].as_str().unwrap().is_empty());
    assert!(!spec["description"].as_str().unwrap().is_empty());
    assert!(!spec["provider"]["name"].as_str().unwrap().is_empty());
    assert!(!spec["maintainers"].as_array().unwrap().is_empty());
    assert_eq!(spec["icon"][0]["mediatype"], "image/svg+xml");
    let modes: BTreeMap<&str, bool> = spec["installModes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap(),
                m["supported"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(modes.len(), 4, "all four install modes are declared");
    assert!(modes["AllNamespaces"], "OLM v1 requires AllNamespaces");
    // Machine-written kinds are internal objects (a JSON array of owned CRD names).
    let internal: Vec<String> = serde_json::from_str(
        csv["metadata"]["annotations"]["operators.operatorframework.io/internal-objects"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        internal,
        vec![
            "ipinstances.networking.alibaba.com",
            "nodeinfoes.networking.alibaba.com",
            "remotesubnets.multicluster.alibaba.com",
            "remotevteps.multicluster.alibaba.com",
            "remoteendpointslice.multicluster.alibaba.com"
        ]
    );
    let owned: Vec<&str> = spec["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for i in &internal {
        assert!(owned.contains(&i.as_str()), "{i} is not an owned CRD");
    }
    // A cluster-wide operator: only AllNamespaces works.
    assert_eq!(
        modes
            .iter()
            .filter(|(_, s)| **s)
            .map(|(m, _)| *m)
            .collect::<Vec<_>>(),
        vec!["AllNamespaces"]
    );
    // The OpenShift versions annotation agrees with minKubeVersion: OpenShift 4.N ships
    // Kubernetes 1.(N+13) (4.16 = 1.29, 4.20 = 1.33), and v4.N means "4.N and later".
    let min_kube = spec["minKubeVersion"].as_str().unwrap();
    let kube_minor: u32 = min_kube.split('.').nth(1).unwrap().parse().unwrap();
    let ann = read("bundle/metadata/annotations.yaml");
    let ocp = ann
        .lines()
        .find_map(|l| l.trim().strip_prefix("com.redhat.openshift.versions: "))
        .expect("OpenShift versions annotation");
    let ocp_minor: u32 = ocp.strip_prefix("v4.").unwrap().parse().unwrap();
    assert_eq!(
        ocp_minor + 13,
        kube_minor,
        "{ocp} vs minKubeVersion {min_kube}"
    );
    for (kube, want) in [
        ("1.29.0", Some("v4.16")),
        ("1.33.0", Some("v4.20")),
        ("1.24.0", Some("v4.12")),
        ("1.99.0", None),
        ("2.0.0", None),
        ("x", None),
    ] {
        assert_eq!(install::openshift_versions(kube).as_deref(), want, "{kube}");
    }
    assert!(install::openshift_versions(install::MIN_KUBE_VERSION).is_some());

    // Install strategy: the operator Deployment on the host network, tolerating every taint.
    let inst = &spec["install"];
    assert_eq!(inst["strategy"], "deployment");
    let deps = inst["spec"]["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 1);
    let pod = &deps[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())
    );
    let sa = pod["serviceAccountName"].as_str().unwrap();
    for kind in ["permissions", "clusterPermissions"] {
        let perms = inst["spec"][kind].as_array().unwrap();
        assert!(!perms.is_empty(), "{kind}");
        for p in perms {
            assert_eq!(
                p["serviceAccountName"], sa,
                "{kind} names the deployment's service account"
            );
            for rule in p["rules"].as_array().unwrap() {
                for field in ["verbs", "resources", "apiGroups"] {
                    for w in rule[field].as_array().unwrap() {
                        assert!(
                            !w.as_str().unwrap().contains('*'),
                            "{kind}: wildcard in {rule}"
                        );
                    }
                }
            }
        }
    }
    // relatedImages lists every image the operator runs or deploys (disconnected installs).
    let related: BTreeSet<&str> = spec["relatedImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert!(related.contains(meta_ann["containerImage"].as_str().unwrap()));
    for c in pod["containers"].as_array().unwrap() {
        assert!(related.contains(c["image"].as_str().unwrap()));
    }
    let operand = Settings::from_spec(&Default::default(), OPERATOR_VERSION, "x")
        .unwrap()
        .image;
    assert!(
        related.contains(operand.as_str()),
        "node agent image {operand}"
    );

    // Owned CRDs: each shipped in the bundle with the version served, described and with descriptors.
    let crds_by_name: BTreeMap<&str, &Value> = b
        .crds
        .iter()
        .map(|c| (c["metadata"]["name"].as_str().unwrap(), c))
        .collect();
    let owned = spec["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap();
    assert_eq!(
        owned.len(),
        hybridnet_api::crd::all().len(),
        "every hybridnet CRD is owned"
    );
    assert_eq!(
        crds_by_name.len(),
        owned.len(),
        "every bundled CRD is owned"
    );
    let mut owned_kinds = BTreeSet::new();
    for o in owned {
        let name = o["name"].as_str().unwrap();
        let crd = crds_by_name
            .get(name)
            .unwrap_or_else(|| panic!("owned CRD {name} not in the bundle"));
        assert_eq!(crd["spec"]["names"]["kind"], o["kind"], "{name}");
        let ver = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == o["version"])
            .unwrap_or_else(|| panic!("{name}: version {} not in the CRD", o["version"]));
        assert_eq!(ver["served"], true);
        for k in ["displayName", "description"] {
            assert!(!o[k].as_str().unwrap().is_empty(), "{name}: {k}");
        }
        let schema = &ver["schema"]["openAPIV3Schema"];
        for (list, root_prop) in [("specDescriptors", "spec"), ("statusDescriptors", "status")] {
            let ds = o[list].as_array().unwrap();
            assert!(!ds.is_empty(), "{name}: {list}");
            for d in ds {
                let path = d["path"].as_str().unwrap();
                assert!(
                    schema_has_path(&schema["properties"][root_prop], path),
                    "{name}: {list} path {path} is not in the schema"
                );
                assert!(!d["displayName"].as_str().unwrap().is_empty());
                assert!(!d["description"].as_str().unwrap().is_empty());
            }
        }
        let group = crd["spec"]["group"].as_str().unwrap();
        owned_kinds.insert((
            format!("{group}/{}", o["version"].as_str().unwrap()),
            o["kind"].as_str().unwrap().to_string(),
        ));
    }

    // alm-examples: valid JSON, one per owned CRD, apiVersion/kind of an owned CRD.
    let examples: Vec<Value> =
        serde_json::from_str(meta_ann["alm-examples"].as_str().unwrap()).unwrap();
    let mut covered = BTreeSet::new();
    for ex in &examples {
        let key = (
            ex["apiVersion"].as_str().unwrap().to_string(),
            ex["kind"].as_str().unwrap().to_string(),
        );
        assert!(
            owned_kinds.contains(&key),
            "example {key:?} is not an owned CRD"
        );
        assert!(covered.insert(key.1.clone()), "two examples of {}", key.1);
        assert!(!ex["metadata"]["name"].as_str().unwrap().is_empty());
    }
    let kinds: BTreeSet<String> = owned_kinds.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(covered, kinds, "one alm-example per owned CRD");
    // The HybridnetCluster example is a valid, usable installation.
    let hnc = examples
        .iter()
        .find(|e| e["kind"] == "HybridnetCluster")
        .unwrap();
    let typed: HybridnetCluster = serde_json::from_value(hnc.clone()).unwrap();
    assert_eq!(typed.metadata.name.as_deref(), Some("default"));
    Settings::from_spec(&typed.spec, OPERATOR_VERSION, "hybridnet-system").unwrap();
}

#[test]
fn deploy_is_a_complete_kustomization() {
    let k = &docs("deploy/kustomization.yaml")[0];
    assert_eq!(k["kind"], "Kustomization");
    let mut kinds = BTreeSet::new();
    for r in k["resources"].as_array().unwrap() {
        for d in docs(&format!("deploy/{}", r.as_str().unwrap())) {
            kinds.insert(d["kind"].as_str().unwrap().to_string());
        }
    }
    // The CRDs are their own kustomization, with the annotations that keep GitOps tools from
    // pruning or deleting them; `kubectl delete -k deploy/` never reaches them.
    assert!(
        !kinds.contains("CustomResourceDefinition"),
        "deploy/ must not carry the CRDs"
    );
    let kc = &docs("deploy/crds/kustomization.yaml")[0];
    let crd_files: Vec<&str> = kc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(crd_files.len(), hybridnet_api::crd::all().len());
    for f in crd_files {
        let crd = &docs(&format!("deploy/crds/{f}"))[0];
        assert_eq!(crd["kind"], "CustomResourceDefinition", "{f}");
        let ann = &crd["metadata"]["annotations"];
        assert_eq!(ann["kustomize.toolkit.fluxcd.io/prune"], "disabled", "{f}");
        let argo = ann["argocd.argoproj.io/sync-options"]
            .as_str()
            .unwrap_or("");
        assert!(
            argo.split(',').any(|o| o == "Prune=false")
                && argo.split(',').any(|o| o == "Delete=false"),
            "{f}: {argo}"
        );
    }
    for want in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "HybridnetCluster",
    ] {
        assert!(kinds.contains(want), "deploy/ lacks a {want}");
    }
    // The sample is the same as the CSV's example, and it is valid.
    let sample: HybridnetCluster =
        serde_json::from_value(docs("deploy/hybridnetcluster.yaml").remove(0)).unwrap();
    assert_eq!(sample.spec, install::sample_cluster(OPERATOR_VERSION).spec);
    // The deployment's image is the operator's own version.
    let dep = &docs("deploy/operator.yaml")[0];
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("docker.io/hybridnet/hybridnet:v{OPERATOR_VERSION}")
    );
}

// ----------------------------------------------------------------------------------------------
// OpenAPI validation with kubernetes-validate (offline, bundled Kubernetes 1.37 schemas).

/// The validator, or None after `test` was skipped (a failure under CI=true).
fn validator(test: &str) -> Option<PathBuf> {
    let bin = root().join("target/tools/kv-venv/bin/kubernetes-validate");
    if bin.exists() {
        return Some(bin);
    }
    skip(
        test,
        "kubernetes-validate is not installed: run `bash scripts/tools/kubernetes-validate.sh` (make tools)",
    );
    None
}

/// Runs the validator on `files`; returns (success, output).
fn validate(bin: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(bin)
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_yaml(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_saphyr::to_string(v).unwrap()).unwrap();
    p
}

#[test]
fn every_rendered_manifest_validates_against_the_kubernetes_openapi_schemas() {
    let Some(bin) =
        validator("every_rendered_manifest_validates_against_the_kubernetes_openapi_schemas")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    // Rendered from the sample and from a spec that sets every optional knob.
    let sample = install::sample_cluster(OPERATOR_VERSION);
    let mut full = sample.spec.clone();
    full.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: "pull".into(),
    }]);
    full.node_agent.as_mut().unwrap().prefer_vxlan_interfaces = Some(vec!["eth0".into()]);
    full.node_agent
        .as_mut()
        .unwrap()
        .update_strategy
        .as_mut()
        .unwrap()
        .max_unavailable =
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into()));
    full.cni.as_mut().unwrap().mtu = Some(1450);
    for (i, spec) in [sample.spec.clone(), full].iter().enumerate() {
        let s = Settings::from_spec(spec, OPERATOR_VERSION, "hybridnet-system").unwrap();
        let r = render::render(&s, Some(b"-----BEGIN CERTIFICATE-----\n"));
        for o in &r.objects {
            let name = format!("{i}-{}-{}.yaml", o.kind(), o.name());
            files.push(write_yaml(dir.path(), &name, &o.to_value().unwrap()));
        }
        assert!(
            r.objects
                .iter()
                .any(|o| matches!(o, ManagedObject::DaemonSet(_)))
        );
    }
    // The operator's own install and the committed deploy/ files (CRDs included).
    for e in std::fs::read_dir(root().join("deploy")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_file() && name != "kustomization.yaml" && name != "hybridnetcluster.yaml" {
            files.push(p);
        }
    }
    for e in std::fs::read_dir(root().join("deploy/crds")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "kustomization.yaml") {
            files.push(p);
        }
    }
    // The OLM deployment spec as a Deployment.
    let csv = docs("bundle/manifests/hybridnet-operator.clusterserviceversion.yaml").remove(0);
    let dep = &csv["spec"]["install"]["spec"]["deployments"][0];
    files.push(write_yaml(
        dir.path(),
        "csv-deployment.yaml",
        &serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": dep["name"]}, "spec": dep["spec"]}),
    ));
    let (ok, out) = validate(&bin, &files);
    assert!(ok, "{out}");
    let passed = out.matches(" passed for resource ").count();
    assert!(
        passed >= files.len(),
        "every document must be checked, got {passed} passes:\n{out}"
    );
    assert!(!out.contains("Couldn't find schema"), "{out}");

    // Negative control: the validator really rejects a broken DaemonSet.
    let s = Settings::from_spec(&sample.spec, OPERATOR_VERSION, "hybridnet-system").unwrap();
    let mut v = serde_json::to_value(render::node_agent_daemonset(&s)).unwrap();
    v["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
        serde_json::json!("NET_ADMIN");
    let bad = write_yaml(dir.path(), "bad.yaml", &v);
    let (ok, out) = validate(&bin, &[bad]);
    assert!(
        !ok,
        "a capabilities string instead of a list must be refused:\n{out}"
    );
}
