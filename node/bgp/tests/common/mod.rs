//! Shared fixtures for the integration tests: a ToR and a node network namespace joined by a
//! veth pair, real bird2 / gobgpd daemons in the ToR namespace, and a helper that runs the
//! speaker on a thread inside the node namespace. Everything is removed by Drop guards.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub use hybridnet_test_support::{Netns, eventually, may_run, try_sh_async, unique_name};

pub const TOR_AS: u32 = 65000;
pub const NODE_AS: u32 = 65001;
pub const TOR_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const TOR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// Two namespaces, `tor` and `node`, joined by a veth pair with 198.18.0.1/30 + fd00::1/64 on
/// the ToR side and 198.18.0.2/30 + fd00::2/64 on the node side.
pub struct Topology {
    pub tor: String,
    pub node: String,
    pub dir: PathBuf,
    /// Deleted (after `dir`) when the topology is dropped.
    _namespaces: [Netns; 2],
}

impl Topology {
    pub fn new() -> Topology {
        let tor = Netns::new("tor");
        let node = Netns::new("node");
        let dir = std::env::temp_dir().join(format!("{}-bgp", unique_name("hnt")));
        std::fs::create_dir_all(&dir).unwrap();
        // Created inside the ToR namespace with the peer end in the node namespace: the host's
        // own namespace is never touched.
        tor.ip(&[
            "link", "add", "tor0", "type", "veth", "peer", "name", "node0", "netns", &node.name,
        ]);
        for (ns, dev, v4, v6) in [
            (&tor, "tor0", "198.18.0.1/30", "fd00::1/64"),
            (&node, "node0", "198.18.0.2/30", "fd00::2/64"),
        ] {
            ns.ip(&["addr", "add", v4, "dev", dev]);
            ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        Topology {
            tor: tor.name.clone(),
            node: node.name.clone(),
            dir,
            _namespaces: [tor, node],
        }
    }

    /// Runs `body` on a new thread that has entered the node namespace, on a current-thread
    /// tokio runtime, so every socket the speaker creates belongs to the node namespace.
    pub fn run_in_node<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.node);
        let handle = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a valid netns fd.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(body());
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command inside a namespace and returns stdout (the error carries its output).
pub async fn ns_exec(ns: &str, cmd: &[&str]) -> Result<String, String> {
    try_sh_async(&[&["ip", "netns", "exec", ns], cmd].concat()).await
}

/// A bird2 daemon in a namespace, killed (by pid) on drop.
pub struct Bird {
    pub ns: String,
    pub socket: PathBuf,
    pid_file: PathBuf,
}

impl Bird {
    pub async fn start(ns: &str, dir: &Path, config: &str) -> Bird {
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).unwrap();
        let bird = Bird {
            ns: ns.to_string(),
            socket: dir.join("bird.ctl"),
            pid_file: dir.join("bird.pid"),
        };
        // bird daemonizes and writes its pid file.
        ns_exec(
            ns,
            &[
                "bird",
                "-c",
                conf.to_str().unwrap(),
                "-s",
                bird.socket.to_str().unwrap(),
                "-P",
                bird.pid_file.to_str().unwrap(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("bird did not start: {e}"));
        eventually("bird control socket", Duration::from_secs(10), || {
            bird.birdc(&["show", "status"])
        })
        .await;
        bird
    }

    pub async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The state column of `show protocols` for a protocol ("up"/"start") plus its info.
    pub async fn protocol_info(&self, name: &str) -> String {
        self.birdc(&["show", "protocols", name])
            .await
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    }

    pub async fn is_established(&self, name: &str) -> bool {
        self.protocol_info(name).await.contains("Established")
    }

    /// `show route all` parsed into paths.
    pub async fn routes(&self) -> Vec<BirdPath> {
        parse_bird_routes(
            &self
                .birdc(&["show", "route", "all"])
                .await
                .unwrap_or_default(),
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: signalling the bird process this fixture started, by its pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// One path of `birdc show route all`.
#[derive(Debug, Clone, Default)]
pub struct BirdPath {
    pub prefix: String,
    /// The protocol that brought the path (e.g. "node4").
    pub protocol: String,
    pub as_path: Option<String>,
    pub community: Option<String>,
    pub next_hop: Option<String>,
}

/// Parses bird 2 `show route all`: a line starting with a prefix opens a route; an indented
/// line with "unicast [" opens another path of the same prefix; `BGP.x: v` lines fill it in.
pub fn parse_bird_routes(out: &str) -> Vec<BirdPath> {
    let mut paths: Vec<BirdPath> = Vec::new();
    let mut prefix = String::new();
    for line in out.lines() {
        if line.starts_with("Table") || line.starts_with("BIRD") || line.trim().is_empty() {
            continue;
        }
        if line.contains(" unicast [") {
            if !line.starts_with(char::is_whitespace) {
                prefix = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            let protocol = line
                .split_once('[')
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or_default()
                .to_string();
            paths.push(BirdPath {
                prefix: prefix.clone(),
                protocol,
                ..BirdPath::default()
            });
            continue;
        }
        let Some(path) = paths.last_mut() else {
            continue;
        };
        let line = line.trim();
        if let Some(v) = line.strip_prefix("BGP.as_path:") {
            path.as_path = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("BGP.community:") {
            path.community = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("BGP.next_hop:") {
            path.next_hop = Some(v.trim().to_string());
        }
    }
    paths
}

/// A child daemon (gobgpd) killed by pid on drop.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn spawn(ns: &str, cmd: &[&str], log: &Path) -> Daemon {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
