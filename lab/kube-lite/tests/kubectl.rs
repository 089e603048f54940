//! kube-lite driven by the real `kubectl` (v1.32 at /usr/bin/kubectl): the project's CRDs,
//! create/get/list/watch/patch/label/annotate/delete of custom and built-in objects, Table output
//! with printer columns, and the `kube-lite` binary with TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use hybridnet_test_support::skip;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The real kubectl, or None after `test` was skipped (a failure under CI=true).
fn kubectl_bin(test: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into()));
    if p.exists() {
        return Some(p);
    }
    skip(
        test,
        &format!(
            "kubectl not found at {}; set KUBECTL to run the kubectl tests",
            p.display()
        ),
    );
    None
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Starts a kube-lite server and points kubectl at it; the server lives as long as the handle.
    async fn with_server(bin: PathBuf) -> (kube_lite::ServerHandle, Kubectl) {
        let srv = kube_lite::Server::start(kube_lite::Config::default())
            .await
            .expect("start kube-lite");
        let kubeconfig = srv.kubeconfig_path().to_path_buf();
        (srv, Kubectl { bin, kubeconfig })
    }

    /// Waits (at most 10 s) until kubectl sees the CRD as established.
    async fn wait_established(&self, crd: &str) {
        self.ok(&[
            "wait",
            "--for",
            "condition=established",
            &format!("crd/{crd}"),
            "--timeout=10s",
        ])
        .await;
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let (bin, kc) = (self.bin.clone(), self.kubeconfig.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(bin)
                .arg("--kubeconfig")
                .arg(kc)
                .arg("--request-timeout=10s")
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kubectl");
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            drop(child.stdin.take());
            child.wait_with_output().expect("kubectl output")
        })
        .await
        .unwrap()
    }

    /// Run and require success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None).await
    }

    async fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Run and require failure; returns stderr.
    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
"#;

#[tokio::test]
async fn kubectl_custom_resources_with_printer_columns_and_watch() {
    let Some(bin) = kubectl_bin("kubectl_custom_resources_with_printer_columns_and_watch") else {
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;

    k.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(WIDGET_CRD))
        .await;
    k.wait_established("widgets.example.com").await;
    k.ok_stdin(
        &["create", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"),
    )
    .await;
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 7}\n"),
    )
    .await;

    let table = k.ok(&["get", "wg"]).await;
    let r = rows(&table);
    assert_eq!(r[0], vec!["NAME", "SIZE", "PHASE"], "{table}");
    assert_eq!(r[1], vec!["w1", "3"]);
    assert_eq!(r[2], vec!["w2", "7"]);

    // get -w: a watch with Table output, ended by killing kubectl once the expected rows came
    let mut child = tokio::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["get", "widgets", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // initial state: header + two rows
    while seen.len() < 3 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ])
    .await;
    while seen.len() < 5 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    let _ = child.kill().await;
    let seen: Vec<Vec<String>> = seen
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(seen[0], vec!["NAME", "SIZE", "PHASE"]);
    assert_eq!(seen[3], vec!["w1", "4"]);
    assert_eq!(seen[4], vec!["w1", "4", "Ready"]);

    // -o yaml, label, annotate, json patch, delete
    let yaml = k.ok(&["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: Widget") && yaml.contains("size: 4") && yaml.contains("phase: Ready"),
        "{yaml}"
    );
    k.ok(&["label", "widget", "w1", "team=net"]).await;
    k.ok(&["annotate", "widget", "w1", "note=hi"]).await;
    k.ok(&[
        "patch",
        "widget",
        "w2",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/size","value":8}]"#,
    ])
    .await;
    let labelled = k
        .ok(&[
            "get",
            "wg",
            "-l",
            "team=net",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    assert_eq!(labelled, "w1");
    let size = k
        .ok(&["get", "wg", "w2", "-o", "jsonpath={.spec.size}"])
        .await;
    assert_eq!(size, "8");
    // strategic merge is refused for custom resources, as by a real API server
    let err = k
        .fails(
            &[
                "patch",
                "widget",
                "w2",
                "--type=strategic",
                "-p",
                r#"{"spec":{"size":9}}"#,
            ],
            None,
        )
        .await;
    assert!(
        err.contains("unknown format")
            || err.contains("UnsupportedMediaType")
            || err.contains("415"),
        "{err}"
    );
    k.ok(&["delete", "widget", "w1", "w2"]).await;
    assert!(k.ok(&["get", "wg", "-o", "name"]).await.trim().is_empty());
    let err = k.fails(&["get", "widget", "w1"], None).await;
    assert!(
        err.contains("NotFound") && err.contains("\"w1\" not found"),
        "{err}"
    );
}

fn project_crds() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    dir.is_dir().then_some(dir)
}

#[tokio::test]
async fn kubectl_applies_the_project_crds() {
    let Some(bin) = kubectl_bin("kubectl_applies_the_project_crds") else {
        return;
    };
    let Some(dir) = project_crds() else {
        skip(
            "kubectl_applies_the_project_crds",
            "deploy/crds not present in this checkout",
        );
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;
    let dir = dir.to_string_lossy().into_owned();
    k.ok(&["apply", "--server-side", "-k", &dir]).await;
    // client-side apply of the same files also works (last-applied annotation, 3-way merge)
    k.ok(&["apply", "-k", &dir]).await;
    let crds = k.ok(&["get", "crd", "-o", "name"]).await;
    for name in [
        "networks.networking.alibaba.com",
        "subnets.networking.alibaba.com",
        "ipinstances.networking.alibaba.com",
    ] {
        assert!(crds.contains(name), "{name} missing in {crds}");
        k.wait_established(name).await;
    }
    let resources = k
        .ok(&[
            "api-resources",
            "--api-group=networking.alibaba.com",
            "-o",
            "name",
        ])
        .await;
    assert!(
        resources.contains("networks.networking.alibaba.com"),
        "{resources}"
    );
    // a cluster-scoped project object with its printer columns
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        Some("apiVersion: networking.alibaba.com/v1\nkind: Network\nmetadata: {name: underlay1}\nspec: {netID: 100, type: Underlay, mode: VLAN}\n"),
    )
    .await;
    let table = k.ok(&["get", "hnet"]).await;
    let r = rows(&table);
    assert_eq!(&r[0][..4], &["NAME", "NETID", "TYPE", "MODE"], "{table}");
    assert_eq!(
        &r[1][..4],
        &["underlay1", "100", "Underlay", "VLAN"],
        "{table}"
    );
}

#[tokio::test]
async fn kubectl_builtin_objects() {
    let Some(bin) = kubectl_bin("kubectl_builtin_objects") else {
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;
    let ns = k.ok(&["get", "ns"]).await;
    assert!(
        rows(&ns)
            .iter()
            .any(|r| r.first().map(String::as_str) == Some("kube-system")
                && r.get(1).map(String::as_str) == Some("Active")),
        "{ns}"
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, labels: {app: web}}\nspec:\n  nodeName: node-1\n  containers:\n  - {name: app, image: nginx}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n",
        ),
    )
    .await;
    let pods = k.ok(&["get", "pods", "-o", "wide"]).await;
    let r = rows(&pods);
    assert_eq!(
        &r[0][..4],
        &["NAME", "READY", "STATUS", "RESTARTS"],
        "{pods}"
    );
    assert_eq!(&r[1][..3], &["p1", "0/1", "Pending"], "{pods}");
    assert!(r[1].contains(&"node-1".to_string()), "{pods}");
    // client-side apply again with a changed image: strategic 3-way merge on containers
    k.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p1, labels: {app: web}}\nspec:\n  nodeName: node-1\n  containers:\n  - {name: app, image: nginx:2}\n"),
    )
    .await;
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ])
        .await,
        "nginx:2"
    );
    k.ok(&[
        "patch",
        "pod",
        "p1",
        "-p",
        r#"{"spec":{"containers":[{"name":"app","env":[{"name":"X","value":"1"}]}]}}"#,
    ])
    .await;
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.spec.containers[0].env[0].name}"
        ])
        .await,
        "X"
    );
    k.ok(&["label", "cm", "cfg", "tier=a"]).await;
    k.ok(&["annotate", "cm", "cfg", "owner=me"]).await;
    assert_eq!(
        k.ok(&["get", "cm", "-l", "tier in (a,b)", "-o", "name"])
            .await
            .trim(),
        "configmap/cfg"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "name"
        ])
        .await
        .trim(),
        "pod/p1"
    );
    let err = k
        .fails(&["get", "pods", "--field-selector", "spec.bogus=1"], None)
        .await;
    assert!(err.contains("field label not supported"), "{err}");
    let err = k.fails(&["get", "pods", "-l", "a in b"], None).await;
    assert!(!err.is_empty());
    k.ok(&["delete", "pod", "p1"]).await;
    k.ok(&["delete", "cm", "cfg"]).await;
    assert!(
        k.ok(&["get", "pods,cm", "-o", "name"])
            .await
            .trim()
            .is_empty()
    );
}

#[tokio::test]
async fn binary_serves_tls_with_token_until_sigterm() {
    let Some(bin) = kubectl_bin("binary_serves_tls_with_token_until_sigterm") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-lite"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "--token",
            "s3cret",
            "--kubeconfig",
        ])
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains(&format!("server: https://{addr}"))
            && text.contains("certificate-authority-data:")
            && text.contains("token: s3cret")
    );
    let k = Kubectl {
        bin,
        kubeconfig: kc.clone(),
    };
    let v = k.ok(&["get", "--raw", "/version"]).await;
    assert!(v.contains("\"gitVersion\""), "{v}");
    k.ok(&["get", "ns", "default"]).await;
    // the wrong token is refused
    let bad = dir.path().join("bad");
    std::fs::write(&bad, text.replace("token: s3cret", "token: wrong")).unwrap();
    let kb = Kubectl {
        bin: k.bin.clone(),
        kubeconfig: bad,
    };
    let err = kb.fails(&["get", "ns"], None).await;
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    // SIGTERM ends it cleanly
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

const SCHEMA_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gizmos, kind: Gizmo}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [mode]
            properties:
              mode: {type: string, enum: [VLAN, VXLAN]}
              netID: {type: integer, minimum: 0, maximum: 4095}
              replicas: {type: integer, default: 1}
"#;

#[tokio::test]
async fn kubectl_custom_resource_schema_validation_pruning_and_defaults() {
    let Some(bin) = kubectl_bin("kubectl_custom_resource_schema_validation_pruning_and_defaults")
    else {
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(SCHEMA_CRD))
        .await;
    k.wait_established("gizmos.example.com").await;
    // kubectl validates strictly by default: unknown fields are refused
    let err = k
        .fails(&["apply", "-f", "-"], Some("apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\nspec: {mode: VLAN, typo: 1}\n"))
        .await;
    assert!(err.contains("unknown field \"spec.typo\""), "{err}");
    // ... and pruned when validation is off
    k.ok_stdin(
        &["apply", "--validate=false", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\nspec: {mode: VLAN, typo: 1}\n"),
    )
    .await;
    let spec = k.ok(&["get", "gizmo", "g", "-o", "jsonpath={.spec}"]).await;
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(
        spec,
        serde_json::json!({"mode": "VLAN", "replicas": 1}),
        "pruned and defaulted"
    );
    // schema violations are 422 Invalid with the field named
    let err = k
        .fails(&["apply", "-f", "-"], Some("apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: h}\nspec: {mode: GRE, netID: 5000}\n"))
        .await;
    assert!(
        err.contains("spec.mode") && err.contains("supported values") && err.contains("spec.netID"),
        "{err}"
    );
    let err = k
        .fails(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: i}\nspec: {netID: 1}\n",
            ),
        )
        .await;
    assert!(err.contains("spec.mode: Required value"), "{err}");
}

#[tokio::test]
async fn kubectl_imperative_create_generators() {
    let Some(bin) = kubectl_bin("kubectl_imperative_create_generators") else {
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;
    // these generators send protobuf bodies
    k.ok(&["create", "namespace", "lab"]).await;
    k.ok(&[
        "-n",
        "lab",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
        "--from-literal=c=d",
    ])
    .await;
    k.ok(&[
        "-n",
        "lab",
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=user=admin",
    ])
    .await;
    k.ok(&["-n", "lab", "create", "serviceaccount", "robot"])
        .await;
    assert_eq!(
        k.ok(&[
            "-n",
            "lab",
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.data.a}{.data.c}"
        ])
        .await,
        "bd"
    );
    assert_eq!(
        k.ok(&[
            "-n",
            "lab",
            "get",
            "secret",
            "sec",
            "-o",
            "jsonpath={.data.user}"
        ])
        .await,
        "YWRtaW4="
    );
    k.ok(&["-n", "lab", "get", "sa", "robot"]).await;
    assert_eq!(
        k.ok(&["get", "ns", "lab", "-o", "jsonpath={.status.phase}"])
            .await,
        "Active"
    );
    // a generator whose protobuf kind is not decoded fails with a clear 415
    let err = k
        .fails(
            &["-n", "lab", "create", "deployment", "web", "--image=nginx"],
            None,
        )
        .await;
    assert!(
        err.contains("send JSON") || err.contains("unknown format"),
        "{err}"
    );
}

const NETPOL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: default}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 198.18.0.0/16, except: [198.18.1.0/24]}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}
    ports:
    - {protocol: TCP, port: 80}
    - {protocol: UDP, port: dns}
    - {protocol: SCTP, port: 3000, endPort: 3100}
  egress:
  - {}
"#;

#[tokio::test]
async fn kubectl_network_policies() {
    let Some(bin) = kubectl_bin("kubectl_network_policies") else {
        return;
    };
    let (_srv, k) = Kubectl::with_server(bin).await;
    k.ok_stdin(&["apply", "-f", "-"], Some(NETPOL)).await;
    k.ok_stdin(
        &["create", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all}\nspec: {podSelector: {}}\n"),
    )
    .await;
    let table = k.ok(&["get", "netpol"]).await;
    let r = rows(&table);
    assert_eq!(r[0], vec!["NAME", "POD-SELECTOR", "AGE"], "{table}");
    assert_eq!(&r[1][..2], &["db", "role=db"], "{table}");
    assert_eq!(&r[2][..2], &["deny-all", "<none>"], "{table}");
    let ports = k
        .ok(&[
            "get",
            "networkpolicy",
            "db",
            "-o",
            "jsonpath={.spec.ingress[0].ports[*].port}",
        ])
        .await;
    assert_eq!(ports, "80 dns 3000");
    let end = k
        .ok(&[
            "get",
            "networkpolicies.networking.k8s.io",
            "db",
            "-o",
            "jsonpath={.spec.ingress[0].ports[2].endPort} {.spec.ingress[0].from[0].ipBlock.except[0]}",
        ])
        .await;
    assert_eq!(end, "3100 198.18.1.0/24");

    // get -w sees an update; the re-apply replaces the (atomic) rule list as Kubernetes does
    let mut child = tokio::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args([
            "get",
            "netpol",
            "db",
            "-w",
            "-o",
            "jsonpath={.spec.ingress[0].ports[*].port}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next = async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert_eq!(next(&mut lines).await, "80 dns 3000");
    k.ok_stdin(
        &["apply", "-f", "-"],
        Some(&NETPOL.replace(
            "    - {protocol: TCP, port: 80}\n    - {protocol: UDP, port: dns}\n",
            "    - {protocol: TCP, port: 81}\n",
        )),
    )
    .await;
    assert_eq!(next(&mut lines).await, "81 3000");
    let _ = child.kill().await;

    // status only through the subresource
    k.ok(&[
        "patch",
        "netpol",
        "db",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Enforced","status":"True","reason":"Programmed","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "netpol",
        "db",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[]},"metadata":{"labels":{"x":"y"}}}"#,
    ])
    .await;
    let st = k
        .ok(&[
            "get",
            "netpol",
            "db",
            "-o",
            "jsonpath={.status.conditions[0].type} {.metadata.labels.x}",
        ])
        .await;
    assert_eq!(st, "Enforced y");
    k.ok(&["delete", "netpol", "db", "deny-all"]).await;
    assert!(
        k.ok(&["get", "netpol", "-o", "name"])
            .await
            .trim()
            .is_empty()
    );
}
