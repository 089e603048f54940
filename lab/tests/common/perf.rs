//! Measuring helpers the lab's benchmarks share (lab/benches/netpol.rs, lab/benches/datapath.rs):
//! environment knobs, medians and percentiles, iperf3 between network namespaces, and a TCP
//! request/response latency probe run inside the namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hybridnet_test_support::paced::spawn_in_netns;
use serde_json::Value;

/// An environment knob: `name` parsed, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median (the upper one of an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// The `p`th percentile of sorted durations (nearest rank); zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `iperf3 -s` inside a network namespace (reporting every 100 ms), killed on drop.
pub struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    pub fn start(netns: &str) -> Iperf3Server {
        let child = Command::new("ip")
            .args([
                "netns", "exec", netns, "iperf3", "-s", "-p", "5201", "-i", "0.1", "-J",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting iperf3 -s in {netns}: {e}"));
        Iperf3Server { child }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `iperf3 -c SERVER -J ARGS` inside `client_ns` (port 5201): its JSON report. Retried every
/// 100 ms for 30 s while the server does not answer yet (just started, or still busy with the
/// previous test).
pub fn iperf3(client_ns: &str, server: &str, args: &[&str]) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", client_ns, "iperf3", "-c", server, "-J"])
            .args(args)
            .output()
            .map_err(|e| format!("running iperf3 in {client_ns}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if out.status.success() && v.get("end").is_some() {
            return Ok(v);
        }
        let err = v["error"].as_str().map_or_else(
            || format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
            str::to_string,
        );
        let transient = err.contains("unable to connect") || err.contains("busy");
        if !transient || Instant::now() > deadline {
            return Err(format!(
                "iperf3 {client_ns} -> {server} {args:?}: {}",
                err.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The 90th percentile (nearest rank) of `rate` over the report's intervals (`-i`), leaving out a
/// last interval shorter than 50 ms; NaN without intervals. What the path carries while the
/// endpoints have a CPU: a shared machine that takes it from them for a while only lowers the
/// other intervals.
fn interval_p90(intervals: &Value, rate: impl Fn(&Value) -> Option<f64>) -> f64 {
    let mut v: Vec<f64> = intervals
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| &i["sum"])
        .filter(|s| s["seconds"].as_f64().is_some_and(|t| t >= 0.05))
        .filter_map(&rate)
        .filter(|x| !x.is_nan())
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (0.9 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// [`interval_p90`] of the bits per second the server received (TCP, run with
/// `--get-server-output` against an [`Iperf3Server`], which reports every 100 ms).
pub fn p90_interval_received_bits(v: &Value) -> f64 {
    interval_p90(&v["server_output_json"]["intervals"], |s| {
        s["bits_per_second"].as_f64()
    })
}

/// [`interval_p90`] of the datagrams per second the server received (UDP with `-l len`, run as
/// [`p90_interval_received_bits`]).
pub fn p90_interval_received_packets(v: &Value, len: usize) -> f64 {
    interval_p90(&v["server_output_json"]["intervals"], |s| {
        Some(s["bytes"].as_f64()? / len as f64 / s["seconds"].as_f64()?)
    })
}

/// Bits per second the receiver got (TCP).
pub fn received_bits(v: &Value) -> f64 {
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Size of one request and one response of [`rr_latency`].
pub const RR_MESSAGE: usize = 64;

/// A TCP server inside a network namespace that answers every [`RR_MESSAGE`]-byte request with
/// as many bytes (one connection at a time), on `port` of every address of both families;
/// stopped on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl EchoServer {
    pub fn start(netns: &str, port: u16) -> Result<EchoServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let thread = spawn_in_netns(Some(netns), move || {
            // `[::]` takes IPv4 too (net.ipv6.bindv6only is 0 in a new namespace)
            let l = TcpListener::bind(("::", port)).map_err(|e| format!("bind :{port}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let _ = tx.send(());
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = echo(c, &s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            }
            Ok(())
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("echo server in {netns} did not start"))?;
        Ok(EchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

fn echo(mut c: TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = [0u8; RR_MESSAGE];
    while !stop.load(Ordering::SeqCst) {
        match c.read_exact(&mut buf) {
            Ok(()) => c.write_all(&buf)?,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Request/response round trips over one TCP connection (no Nagle) from inside `netns` to an
/// [`EchoServer`] for `duration`, back to back: the sorted round-trip times, after 100 not
/// counted.
pub fn rr_latency(
    netns: &str,
    to: SocketAddr,
    duration: Duration,
) -> Result<Vec<Duration>, String> {
    spawn_in_netns(Some(netns), move || {
        let io = |e: std::io::Error| format!("request/response to {to}: {e}");
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        let req = [7u8; RR_MESSAGE];
        let mut resp = [0u8; RR_MESSAGE];
        let mut v = Vec::with_capacity(100_000);
        let mut n = 0usize;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let t = Instant::now();
            s.write_all(&req).map_err(io)?;
            s.read_exact(&mut resp).map_err(io)?;
            if n >= 100 {
                v.push(t.elapsed());
            }
            n += 1;
        }
        v.sort();
        Ok(v)
    })
    .join()
    .map_err(|_| format!("request/response thread to {to} panicked"))?
}
