//! Shared fixtures of the CNI tests: unique network namespaces with Drop guards, an in-process
//! agent (cniserver) whose node is a test namespace, Debian's libcni through target/tools/cnitool,
//! and the real `hybridnet` plugin binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(unused_imports)]
pub use hybridnet_test_support::{Netns, may_run, sh, skip};

use hybridnet_api::v1::{Address, Binding, IPInstance, IPInstanceSpec, IpVersion};
use hybridnet_cni::PodRef;
use hybridnet_node::cniserver::{CniServer, CniServerConfig, IpInstanceLookup};

/// `true` when the CNI test `test` may run: root, Debian's CNI plugins and iproute2, and
/// target/tools/cnitool. Otherwise it is skipped visibly, or fails under CI=true.
pub fn prerequisites(test: &str) -> bool {
    may_run(
        test,
        &[
            "/usr/lib/cni/portmap",
            "/usr/lib/cni/bandwidth",
            "/usr/sbin/ip",
        ],
    ) && (cnitool().is_some()
        || skip(
            test,
            "target/tools/cnitool missing (make tools; needs golang-go, golang-github-appc-cni-dev)",
        ))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// target/tools/cnitool, built by scripts/tools/cnitool.sh when missing.
pub fn cnitool() -> Option<PathBuf> {
    let root = workspace_root();
    let tool = root.join("target/tools/cnitool");
    if !tool.exists() {
        let _ = Command::new("bash")
            .arg(root.join("scripts/tools/cnitool.sh"))
            .status();
    }
    tool.exists().then_some(tool)
}

fn newest_source_mtime(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_source_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).unwrap_or(newest)
        };
        newest = newest.max(t);
    }
    newest
}

/// The `hybridnet` plugin binary of this workspace. `cargo test --workspace` has built it next to
/// the test executable; when it is missing or older than the plugin's sources it is built here.
pub fn plugin_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let root = workspace_root();
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let p = profile_dir.join("hybridnet");
    let sources = newest_source_mtime(&root.join("cni"));
    let fresh = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= sources);
    if !fresh {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", "hybridnet-cni", "--bin", "hybridnet"])
            .current_dir(&root);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let status = c.status().expect("running cargo build for the plugin");
        assert!(status.success(), "building the hybridnet plugin failed");
    }
    assert!(p.exists(), "plugin binary not found at {}", p.display());
    *built = Some(p.clone());
    p
}

/// CNI-suite views of a test namespace.
pub trait CniNetns {
    /// `ip -n <ns> ARGS` succeeded.
    fn ip_status(&self, args: &[&str]) -> bool;
    /// `/proc/sys/net/<key>` inside the namespace.
    fn sysctl(&self, key: &str) -> String;
    /// Interface names in the namespace.
    fn links(&self) -> Vec<String>;
}

impl CniNetns for Netns {
    fn ip_status(&self, args: &[&str]) -> bool {
        self.try_ip(args).is_ok()
    }

    fn sysctl(&self, key: &str) -> String {
        self.exec(&["cat", &format!("/proc/sys/net/{key}")])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn links(&self) -> Vec<String> {
        let out = self.ip(&["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

/// IPInstances served from memory, keyed by pod.
#[derive(Default)]
pub struct StaticLookup {
    pub instances: Mutex<Vec<IPInstance>>,
    pub attached: Mutex<Vec<String>>,
    /// When set, the readiness hook says the pod is not reachable (as BGP mode does before the
    /// pod's route is announced).
    pub unreachable: std::sync::atomic::AtomicBool,
    /// When set, every pod is a KubeVirt live migration's target sharing its VM's addresses
    /// with the source pod on another node.
    pub migration_peer: std::sync::atomic::AtomicBool,
}

impl IpInstanceLookup for StaticLookup {
    fn pod_instances(&self, pod: &PodRef) -> Vec<IPInstance> {
        self.instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| {
                i.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
                    && i.spec.binding.pod_name.as_deref() == Some(pod.name.as_str())
            })
            .cloned()
            .collect()
    }

    fn wait_pod_reachable<'a>(
        &'a self,
        a: &'a hybridnet_node::cniserver::PodAddressing,
    ) -> hybridnet_node::cniserver::ReadinessFuture<'a> {
        let unreachable = self.unreachable.load(Ordering::SeqCst);
        Box::pin(async move {
            if unreachable {
                Err(hybridnet_cni::CniError::try_again_later(format!(
                    "pod {:?} is not announced yet",
                    a.ipv4
                )))
            } else {
                Ok(())
            }
        })
    }

    fn migration_peer(&self, _pod: &PodRef) -> bool {
        self.migration_peer.load(Ordering::SeqCst)
    }

    fn attached(&self, e: &hybridnet_node::cniserver::AttachmentEvent) {
        self.attached.lock().unwrap().push(e.container_id.clone());
    }
}

pub fn ipinstance(ns: &str, pod: &str, ip: &str, version: IpVersion, mac: &str) -> IPInstance {
    let addr: std::net::IpAddr = ip.split('/').next().unwrap().parse().unwrap();
    let mut i = IPInstance::new(
        &hybridnet_api::naming::ip_to_instance_name(addr),
        IPInstanceSpec {
            network: "net1".into(),
            subnet: "subnet1".into(),
            address: Address {
                version,
                ip: ip.into(),
                gateway: None,
                net_id: None,
                mac: mac.into(),
            },
            binding: Binding {
                node_name: Some("node1".into()),
                pod_name: Some(pod.into()),
                ..Default::default()
            },
        },
    );
    i.metadata.namespace = Some(ns.into());
    i
}

/// A node namespace with an in-process agent serving the CNI socket, a plugin directory and a
/// conflist directory.
pub struct Agent {
    pub node: Netns,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub lookup: Arc<StaticLookup>,
    pub runtime: tokio::runtime::Runtime,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Agent {
    pub fn start(wait: Duration) -> Agent {
        let node = Netns::new("node");
        // The node's own addresses live on lo (this kernel has no dummy links); rule 1 sends
        // traffic for local pods to table 39999 as the data plane does.
        node.ip(&["addr", "add", "198.19.0.1/32", "dev", "lo"]);
        node.ip(&["addr", "add", "fd00:ff::1/128", "dev", "lo"]);
        node.ip(&["rule", "add", "pref", "1", "lookup", "39999"]);
        node.ip(&["-6", "rule", "add", "pref", "1", "lookup", "39999"]);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/hybridnet.sock");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(plugin_binary(), bin.join("hybridnet")).unwrap();
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        let lookup = Arc::new(StaticLookup::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = CniServerConfig {
            host_netns: Some(node.path().into()),
            ipinstance_wait: wait,
            ipinstance_poll: Duration::from_millis(20),
            ..Default::default()
        };
        let server = {
            let _g = runtime.enter();
            let l: Arc<dyn IpInstanceLookup> = lookup.clone();
            let srv = CniServer::bind(&socket, l, config).expect("binding the CNI socket");
            runtime.spawn(async move {
                let _ = srv.run().await;
            })
        };
        Agent {
            node,
            dir,
            socket,
            lookup,
            runtime,
            server,
        }
    }

    pub fn add_instances(&self, list: Vec<IPInstance>) {
        self.lookup.instances.lock().unwrap().extend(list);
    }

    /// Writes `<name>.conflist`: hybridnet, then Debian's portmap and bandwidth.
    pub fn write_conflist(&self, name: &str, version: &str) {
        self.write_plugins(
            name,
            version,
            serde_json::json!([
                {"type": "hybridnet", "server_socket": self.socket},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ]),
        );
    }

    /// Writes `<name>.conflist`: hybridnet, then Debian's bandwidth (portmap 1.1.1 cannot CHECK).
    pub fn write_conflist_without_portmap(&self, name: &str, version: &str) {
        self.write_plugins(
            name,
            version,
            serde_json::json!([
                {"type": "hybridnet", "server_socket": self.socket},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            ]),
        );
    }

    pub fn write_plugins(&self, name: &str, version: &str, plugins: serde_json::Value) {
        let conf = serde_json::json!({"cniVersion": version, "name": name, "plugins": plugins});
        std::fs::write(
            self.dir.path().join(format!("net.d/{name}.conflist")),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    pub fn cni_path(&self) -> String {
        format!("{}:/usr/lib/cni", self.dir.path().join("bin").display())
    }

    /// `cnitool CMD NET NETNS` run inside the node namespace (chained plugins program the node).
    pub fn cnitool(
        &self,
        cmd: &str,
        net: &str,
        netns: &str,
        container_id: &str,
        pod: (&str, &str),
        cap_args: Option<&str>,
    ) -> Output {
        let tool = cnitool().expect("cnitool");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node.name])
            .arg(tool)
            .args([cmd, net, netns])
            .env("NETCONFPATH", self.dir.path().join("net.d"))
            .env("CNI_PATH", self.cni_path())
            .env("CNI_CACHE_DIR", self.dir.path().join("cache"))
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id}", pod.0, pod.1),
            );
        if let Some(caps) = cap_args {
            c.env("CAP_ARGS", caps);
        }
        c.output().expect("running cnitool")
    }

    /// The plugin binary invoked directly, as a runtime would: env + stdin.
    pub fn plugin(
        &self,
        env: &HashMap<&str, String>,
        stdin: &[u8],
    ) -> (i32, serde_json::Value, String) {
        let mut c = Command::new(plugin_binary());
        c.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawning the plugin");
        {
            let mut si = child.stdin.take().unwrap();
            // The plugin may stop reading once it has seen too much: ignore EPIPE.
            let _ = si.write_all(stdin);
        }
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        (o.status.code().unwrap_or(-1), v, stdout)
    }

    pub fn conf(&self, version: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": version, "name": "hnt", "type": "hybridnet", "server_socket": self.socket
        }))
        .unwrap()
    }
}

/// The standard env of a direct plugin call.
pub fn plugin_env(
    cmd: &str,
    netns: &str,
    cid: &str,
    ns: &str,
    pod: &str,
) -> HashMap<&'static str, String> {
    HashMap::from([
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", cid.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod}"),
        ),
    ])
}

/// The parsed CNI error object cnitool printed on stderr.
pub fn cnitool_error(o: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no CNI error object on cnitool's stderr: {err}"))
}
