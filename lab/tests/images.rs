//! The archives of `make images` (docs/images.md; `make test` builds them from the debug binaries
//! before the tests) imported into a private containerd running in a network namespace of the
//! test, and run there with runc: the operator and the node agent print their version, every
//! program the agent runs is in the image and starts, the static plugin answers VERSION, the image
//! runs as the generated operator Deployment says, the pause image stops at SIGTERM, and the bundle
//! image holds bundle/ with bundle.Dockerfile's labels.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hybridnet_lab::containerd::{Containerd, ContainerdSpec};
use hybridnet_test_support::{Netns, may_run, skip, unique_name};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn archive(name: &str) -> PathBuf {
    workspace()
        .join("target/images")
        .join(format!("{name}.oci.tar"))
}

/// Root, the runtime's tools and the archives; otherwise a skip (a failure under CI=true).
fn may_run_images(test: &str, names: &[&str]) -> bool {
    if !may_run(test, &["containerd", "ctr", "runc", "nsenter", "tar"]) {
        return false;
    }
    for n in names {
        if !archive(n).is_file() {
            return skip(
                test,
                &format!(
                    "{} missing: run `scripts/images/build.sh images debug` (make test does)",
                    archive(n).display()
                ),
            );
        }
    }
    true
}

/// One member of an OCI archive (`tar -xO`).
fn archive_member(archive: &Path, member: &str) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "{member} of {}", archive.display());
    out.stdout
}

fn blob(archive: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&archive_member(archive, &format!("./blobs/sha256/{hex}"))).unwrap()
}

/// The image reference containerd imports the archive as, and the image's configuration.
fn image_of(archive: &Path) -> (String, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&archive_member(archive, "./index.json")).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image per archive");
    let name = manifests[0]["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = blob(archive, manifests[0]["digest"].as_str().unwrap());
    let config = blob(archive, manifest["config"]["digest"].as_str().unwrap());
    (name, config)
}

/// `key: value` lines of the generated operator Deployment, first occurrence each, and the first
/// item after `command:`.
fn operator_deployment() -> (BTreeMap<String, String>, String) {
    let text = std::fs::read_to_string(workspace().join("deploy/operator.yaml")).unwrap();
    let mut fields = BTreeMap::new();
    let mut command = None;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t == "command:" {
            command = lines
                .next()
                .and_then(|n| n.trim().strip_prefix("- "))
                .map(str::to_string);
        } else if let Some((k, v)) = t.split_once(": ") {
            fields
                .entry(k.trim_start_matches("- ").to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    (fields, command.expect("deploy/operator.yaml: command"))
}

fn start_containerd(ns: &Netns) -> Containerd {
    let spec = ContainerdSpec {
        dir: std::env::temp_dir().join(unique_name("hnt-containerd")),
        netns: Some(ns.name.clone()),
        cri: None,
    };
    Containerd::start(spec, Duration::from_secs(30)).unwrap()
}

/// Imports `archive` and returns the image reference containerd lists.
fn import(c: &mut Containerd, ns: &str, archive: &Path) -> String {
    let (name, _) = image_of(archive);
    c.ctr(ns, &["images", "import", &archive.to_string_lossy()])
        .unwrap();
    let listed = c.ctr(ns, &["images", "ls", "-q"]).unwrap();
    assert!(
        listed.lines().any(|l| l == name),
        "containerd lists {name} after importing {}: {listed}",
        archive.display()
    );
    name
}

/// `ctr run --rm IMAGE ID ARGS...` with `env`: what the program printed (stdout and stderr), or a
/// panic with it. The output goes to a file (`--log-uri`): then the container's stdin is empty,
/// whereas ctr 1.6 never closes the stdin it forwards (a program reading it to the end, like the CNI
/// plugin, would wait forever).
fn run(c: &mut Containerd, ns: &str, image: &str, env: &[&str], args: &[&str]) -> String {
    let flags: Vec<&str> = env.iter().flat_map(|e| ["--env", *e]).collect();
    run_with(c, ns, image, &flags, args)
}

/// [`run`] with `ctr run` flags.
fn run_with(c: &mut Containerd, ns: &str, image: &str, flags: &[&str], args: &[&str]) -> String {
    let id = unique_name("run");
    let log = c.spec().dir.join(format!("{id}.log"));
    let uri = format!("file://{}", log.display());
    let mut cmd = vec!["run", "--rm", "--log-uri", &uri];
    cmd.extend(flags);
    cmd.extend([image, &id]);
    cmd.extend(args);
    let result = c.ctr(ns, &cmd);
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = result {
        panic!("{e}: {output}");
    }
    output
}

#[test]
fn hybridnet_and_pause_images_run_in_containerd() {
    let test = "hybridnet_and_pause_images_run_in_containerd";
    if !may_run_images(test, &["hybridnet", "pause"]) {
        return;
    }
    let netns = Netns::new("ctrd");
    let mut c = start_containerd(&netns);
    let ns = unique_name("hnt");

    // The hybridnet image: named and configured as the generated operator Deployment says.
    let (fields, command) = operator_deployment();
    let (_, config) = image_of(&archive("hybridnet"));
    let image = import(&mut c, &ns, &archive("hybridnet"));
    assert_eq!(image, fields["image"], "deploy/operator.yaml image");
    // The Deployment fixes no user (OpenShift assigns one): the image's own, non-root, runs.
    assert_eq!(config["config"]["User"], "65532:65532", "the image's user");
    assert!(
        !fields.contains_key("runAsUser") && !fields.contains_key("runAsGroup"),
        "deploy/operator.yaml fixes a user: {fields:?}"
    );
    assert_eq!(fields["runAsNonRoot"], "true");
    assert_eq!(command, "hybridnet-operator");
    assert_eq!(config["config"]["Cmd"], serde_json::json!([command]));
    // The Deployment's and the DaemonSet's commands are found on the image's PATH.
    assert_eq!(
        run(&mut c, &ns, &image, &[], &[&command, "--version"]).trim(),
        format!("hybridnet-operator {VERSION}")
    );
    assert_eq!(
        run(&mut c, &ns, &image, &[], &["hybridnet-node", "--version"]).trim(),
        format!("hybridnet-node {VERSION}")
    );
    assert_eq!(
        run(
            &mut c,
            &ns,
            &image,
            &[],
            &["kubectl-hybridnet", "--version"]
        )
        .trim(),
        format!("kubectl-hybridnet {VERSION}")
    );
    let v: serde_json::Value = serde_json::from_str(&run(
        &mut c,
        &ns,
        &image,
        &["CNI_COMMAND=VERSION"],
        &["hybridnet"],
    ))
    .unwrap();
    assert!(v["supportedVersions"].as_array().unwrap().len() >= 5, "{v}");

    // Every program the agent runs (the list node/tests/image_tools.rs checks against node/src)
    // is in the image and starts, with its libraries.
    let tools =
        std::fs::read_to_string(workspace().join("scripts/images/agent-tools.txt")).unwrap();
    let tools: Vec<&str> = tools
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!tools.is_empty());
    // As the image's user (ctr 1.6 has no --user): `ipset --version` also asks the kernel, which
    // needs NET_ADMIN, so ipset prints its help instead (no kernel call).
    for t in tools {
        let probe = if t == "ipset" { "--help" } else { "--version" };
        let out = run(&mut c, &ns, &image, &[], &[t, probe]);
        assert!(!out.trim().is_empty(), "{t} {probe} printed nothing");
    }

    // The pause image: PID 1 of its container, it stops with status 0 at SIGTERM (PID 1 has no
    // default signal actions: without its handler, this would wait for the bound and fail).
    let pause = import(&mut c, &ns, &archive("pause"));
    let id = unique_name("pause");
    let mut child = c
        .ctr_command(&ns, &["run", "--rm", &pause, &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = c.ctr(&ns, &["tasks", "ls"]).unwrap();
        if tasks
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "pause never ran: {tasks}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ctr(&ns, &["tasks", "kill", "-s", "SIGTERM", &id])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = c.ctr(&ns, &["tasks", "kill", "-s", "SIGKILL", &id]);
            let _ = child.wait();
            panic!("the pause container ignored SIGTERM for 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "pause exited {status}");

    c.stop().unwrap();
}

/// Every file below `dir`, relative, with its contents.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn bundle_image_holds_the_bundle_with_its_labels() {
    let test = "bundle_image_holds_the_bundle_with_its_labels";
    if !may_run_images(test, &["bundle"]) {
        return;
    }
    // bundle.Dockerfile is generated (bundlegen): its LABELs are the image's labels.
    let dockerfile = std::fs::read_to_string(workspace().join("bundle.Dockerfile")).unwrap();
    let labels: BTreeMap<String, serde_json::Value> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("LABEL "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), serde_json::Value::from(v))
        })
        .collect();
    assert!(labels.len() >= 6, "{labels:?}");
    let (_, config) = image_of(&archive("bundle"));
    let got: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(config["config"]["Labels"].clone()).unwrap();
    assert_eq!(got, labels);

    let netns = Netns::new("ctrb");
    let mut c = start_containerd(&netns);
    let ns = unique_name("hnt");
    let image = import(&mut c, &ns, &archive("bundle"));
    let mnt = c.spec().dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    c.ctr(&ns, &["images", "mount", &image, &mnt.to_string_lossy()])
        .unwrap();
    let inside = tree(&mnt);
    c.ctr(&ns, &["images", "unmount", &mnt.to_string_lossy()])
        .unwrap();
    // What bundle.Dockerfile's COPYs put where.
    let mut want = BTreeMap::new();
    for l in dockerfile.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        let (src, dst) = l.split_once(' ').unwrap();
        let dst = Path::new(dst.trim().trim_start_matches('/'));
        for (p, bytes) in tree(&workspace().join(src)) {
            want.insert(dst.join(p), bytes);
        }
    }
    assert!(want.len() >= 7, "{:?}", want.keys());
    assert_eq!(
        inside.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(inside == want, "file contents differ from bundle/");
    c.stop().unwrap();
}
