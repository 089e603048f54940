//! The real `hybridnet-node` stopped (SIGTERM) and restarted under CNI load: 50 pods go through
//! ADD and DEL over the agent's socket without pause while the agent drains, is gone and comes
//! back. Every answer is a success or CNI code 11 ("try again later"; the client retries, as
//! the runtime does); a request in flight when SIGTERM came finishes successfully; afterwards
//! nothing is half-done: every pod that ended attached has its veth, address, route, nft element
//! and IPInstance status, every pod that ended detached has none of them, and no other interface
//! exists.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::{IPInstance, NetworkType};

const PODS: usize = 50;
const PORT: u16 = 11051;

/// What one request over the socket got.
#[derive(Debug)]
enum Answer {
    Ok,
    /// A CNI error: code and message.
    Cni(u64, String),
    /// No agent answered (no socket, refused, or a connection still in the backlog when the
    /// agent exited): the plugin maps these to code 11 as well.
    Down(#[allow(dead_code)] String),
}

fn call(socket: &Path, req: &serde_json::Value) -> Answer {
    let body = serde_json::to_vec(req).unwrap();
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return Answer::Down(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut header = [0u8; 4];
    let io = s
        .write_all(&(body.len() as u32).to_be_bytes())
        .and_then(|_| s.write_all(&body))
        .and_then(|_| s.read_exact(&mut header));
    if let Err(e) = io {
        return Answer::Down(format!("exchange: {e}"));
    }
    let mut out = vec![0u8; u32::from_be_bytes(header) as usize];
    if let Err(e) = s.read_exact(&mut out) {
        return Answer::Down(format!("answer: {e}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    match v.get("error") {
        None => Answer::Ok,
        Some(e) => Answer::Cni(
            e["code"].as_u64().unwrap_or(0),
            e["msg"].as_str().unwrap_or_default().to_string(),
        ),
    }
}

fn request(command: &str, pod: &str, cid: &str, netns: &str) -> serde_json::Value {
    serde_json::json!({"version": 1, "command": command, "containerId": cid,
        "netns": netns, "ifname": "eth0",
        "pod": {"namespace": "default", "name": pod}})
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    shutting_down: AtomicUsize,
    other_11: AtomicUsize,
    down: AtomicUsize,
    /// Anything else: the test fails with these.
    unexpected: Mutex<Vec<String>>,
}

impl Tally {
    /// Sends until the agent succeeds; code 11 and "down" are retried (after 20 ms, like a
    /// runtime's back-off but faster).
    fn until_ok(&self, socket: &Path, req: &serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            match call(socket, req) {
                Answer::Ok => {
                    self.ok.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Answer::Cni(11, msg) if msg.contains("shutting down") => {
                    self.shutting_down.fetch_add(1, Ordering::SeqCst);
                }
                Answer::Cni(11, _) => {
                    self.other_11.fetch_add(1, Ordering::SeqCst);
                }
                Answer::Down(_) => {
                    self.down.fetch_add(1, Ordering::SeqCst);
                }
                Answer::Cni(code, msg) => {
                    self.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{req}: code {code}: {msg}"));
                    return;
                }
            }
            if Instant::now() > deadline {
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{req}: no success within 180 s"));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The log without terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn pod_ip(i: usize) -> String {
    format!("198.19.0.{}", 10 + i)
}

fn ready(socket: &Path) -> bool {
    socket.exists()
        && matches!(
            call(
                socket,
                &serde_json::json!({"version": 1, "command": "STATUS"})
            ),
            Answer::Ok
        )
}

#[test]
fn sigterm_drains_cni_requests_and_leaves_nothing_half_done() {
    let t = "sigterm_drains_cni_requests_and_leaves_nothing_half_done";
    if !require_root(t) || !may_run(t, &["nft"]) {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    for i in 0..PODS {
        cp.create_ns(
            "default",
            &ipinstance(
                "default",
                &format!("p{i}"),
                &pod_ip(i),
                "overlay",
                "ov4",
                "n1",
                &format!("02:aa:00:00:00:{i:02x}"),
            ),
        );
    }
    let pod_ns: Vec<Netns> = (0..PODS).map(|_| Netns::new("dp")).collect();
    let late_ns = Netns::new("dl");

    let socket: PathBuf = std::env::temp_dir().join(format!("{}.sock", unique_name("drain")));
    let log = |tag: &str| std::env::temp_dir().join(format!("{}.log", unique_name(tag)));
    let flags = ["--check-pod-connectivity-from-host=false"];
    // Debug for the CNI server: its "CNI request started" line shows a request is in flight.
    let filter = "info,hybridnet_node::cniserver=debug";
    let mut first = start_agent_at(
        &n1,
        "n1",
        &cp.kubeconfig,
        PORT,
        &socket,
        &log("drain-a"),
        filter,
        &flags,
    );
    wait_for("first agent ready", 60, || ready(&socket).then_some(()));

    // 50 pods, each ADD then DEL again and again (a new sandbox id per round) until `stop`;
    // then the even pods end attached, the odd ones detached.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let last_cid: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![String::new(); PODS]));
    let workers: Vec<_> = pod_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (tally, stop, last_cid) = (tally.clone(), stop.clone(), last_cid.clone());
            let socket = socket.clone();
            let netns = ns.path();
            std::thread::spawn(move || {
                let ns = netns.as_str();
                let pod = format!("p{i}");
                let mut round = 0;
                loop {
                    let cid = format!("c{i}-{round}");
                    tally.until_ok(&socket, &request("ADD", &pod, &cid, ns));
                    last_cid.lock().unwrap()[i] = cid.clone();
                    if stop.load(Ordering::SeqCst) && i % 2 == 0 {
                        break;
                    }
                    tally.until_ok(&socket, &request("DEL", &pod, &cid, ns));
                    if stop.load(Ordering::SeqCst) && i % 2 == 1 {
                        break;
                    }
                    round += 1;
                }
            })
        })
        .collect();
    wait_for("100 requests answered before the stop", 60, || {
        (tally.ok.load(Ordering::SeqCst) >= 100).then_some(())
    });

    // A request surely in flight at SIGTERM: ADD of a pod whose IPInstance does not exist yet
    // waits for it (up to 10 s).
    let late = {
        let socket = socket.clone();
        let req = request("ADD", "late", "c-late", &late_ns.path());
        std::thread::spawn(move || call(&socket, &req))
    };
    wait_for("the late ADD in flight", 10, || {
        std::fs::read_to_string(&first.1)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("CNI request started") && l.contains("\"late\""))
            .then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(first.0.id() as i32);
    let ok_before_stop = tally.ok.load(Ordering::SeqCst);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let sigterm = Instant::now();
    // While it drains, new requests are told to try again later ...
    wait_for("a request refused while draining", 10, || {
        (tally.shutting_down.load(Ordering::SeqCst) > 0).then_some(())
    });
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the agent exited with the late ADD in flight"
    );
    // ... and the one in flight completes once its IPInstance exists.
    cp.create_ns(
        "default",
        &ipinstance(
            "default",
            "late",
            "198.19.0.200",
            "overlay",
            "ov4",
            "n1",
            "02:aa:00:00:00:c8",
        ),
    );
    let late = late.join().unwrap();
    assert!(matches!(late, Answer::Ok), "late ADD: {late:?}");
    let status = wait_for("first agent exited", 30, || first.0.try_wait().unwrap());
    let drained_after = sigterm.elapsed();
    let first_log = strip_ansi(&std::fs::read_to_string(&first.1).unwrap_or_default());
    assert!(status.success(), "exit {status:?}\n{first_log}");
    let drained = first_log
        .lines()
        .find(|l| l.contains("CNI server drained"))
        .unwrap_or_else(|| panic!("no drain line in\n{first_log}"))
        .to_string();
    assert!(drained.contains("abandoned=0"), "{drained}");
    assert!(!drained.contains("in_flight=0"), "{drained}");
    assert!(!drained.contains("refused=0"), "{drained}");
    assert!(first_log.contains("agent stopped"), "{first_log}");

    // Gone: requests find no agent (and keep retrying).
    let down_before = tally.down.load(Ordering::SeqCst);
    wait_for("requests while no agent runs", 10, || {
        (tally.down.load(Ordering::SeqCst) > down_before).then_some(())
    });
    // The restarted agent logs JSON lines (`--log-json`).
    let second = start_agent_at(
        &n1,
        "n1",
        &cp.kubeconfig,
        PORT,
        &socket,
        &log("drain-b"),
        filter,
        &[flags[0], "--log-json"],
    );
    let ok_at_restart = tally.ok.load(Ordering::SeqCst);
    wait_for("100 requests answered by the restarted agent", 120, || {
        (tally.ok.load(Ordering::SeqCst) >= ok_at_restart + 100).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    eprintln!(
        "answers: {} ok ({} before SIGTERM), {} shutting down, {} other code 11, {} no agent; drain took {:?}: {drained}",
        tally.ok.load(Ordering::SeqCst),
        ok_before_stop,
        tally.shutting_down.load(Ordering::SeqCst),
        tally.other_11.load(Ordering::SeqCst),
        tally.down.load(Ordering::SeqCst),
        drained_after,
    );

    // Nothing half-done.
    let last_cid = last_cid.lock().unwrap().clone();
    let links = n1.ip("-o link show");
    let table = n1.ip("route show table 39999");
    let mut want_veths = vec![host_veth_name("default", "late")];
    for (i, ns) in pod_ns.iter().enumerate() {
        let veth = host_veth_name("default", &format!("p{i}"));
        let ip = pod_ip(i);
        let inside = ns.try_ip("-o addr show dev eth0");
        let route = table
            .lines()
            .any(|l| l.starts_with(&format!("{ip} ")) && l.contains(&veth));
        if i % 2 == 0 {
            want_veths.push(veth.clone());
            let alias = n1.ip(&format!("-d link show dev {veth}"));
            assert!(
                alias.contains(&format!("alias hybridnet/{}/eth0", last_cid[i])),
                "p{i}: {alias}"
            );
            let inside = inside.unwrap_or_else(|e| panic!("p{i} has no eth0: {e}"));
            assert!(inside.contains(&format!("inet {ip}/")), "p{i}: {inside}");
            assert!(route, "p{i}: no route to {ip} via {veth} in\n{table}");
        } else {
            assert!(!links.contains(&format!(" {veth}@")), "p{i} kept {veth}");
            assert!(inside.is_err(), "p{i} kept eth0: {inside:?}");
            assert!(!route, "p{i}: route to {ip} left in\n{table}");
        }
    }
    // No interface besides lo, eth0, the VXLAN device and the attached pods' veths.
    let mut extra: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| !["lo", "eth0", "eth0.vxlan4"].contains(n))
        .filter(|n| !want_veths.iter().any(|w| w == n))
        .collect();
    extra.sort();
    assert!(
        extra.is_empty(),
        "unexpected interfaces {extra:?} in\n{links}"
    );
    assert_eq!(
        links.lines().filter(|l| l.contains(": hybr")).count(),
        want_veths.len(),
        "{links}"
    );
    // The pod set of the nft table holds exactly the node's pods (IPInstances), all 51.
    let mut want_elems: Vec<String> = (0..PODS).map(pod_ip).collect();
    want_elems.push("198.19.0.200".into());
    want_elems.sort();
    wait_for("local_pod_ip4 with every pod of the node", 30, || {
        let set = n1
            .exec(&["nft", "list", "set", "inet", "hybridnet", "local_pod_ip4"])
            .unwrap_or_default();
        let mut got: Vec<String> = set
            .split("elements = {")
            .nth(1)
            .and_then(|e| e.split('}').next())
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        got.sort();
        (got == want_elems).then_some(())
    });
    // The IPInstance status of every attached pod names its last sandbox.
    for (i, cid) in last_cid.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let name = pod_ip(i).replace('.', "-");
        let cid = cid.clone();
        wait_for(&format!("IPInstance status of p{i}"), 30, || {
            let name = name.clone();
            let got: IPInstance = cp.run(move |c| async move {
                kube::Api::<IPInstance>::namespaced(c, "default")
                    .get(&name)
                    .await
                    .unwrap()
            });
            (got.status?.sandbox_id? == cid).then_some(())
        });
    }
    // Every line of the restarted agent's log is one JSON object with level, target and fields.
    let json_log = std::fs::read_to_string(&second.1).unwrap();
    let mut messages = Vec::new();
    for line in json_log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "CNI server listening"),
        "{json_log}"
    );
    let _ = std::fs::remove_file(&socket);
}
