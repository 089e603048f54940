//! A paced TCP stream that measures what a user of the path feels during an event (an agent
//! restart, an operator failover, an upgrade): the sender writes one numbered, timestamped record
//! every `interval`; the receiver notes when each record arrives. The report gives the longest
//! stall of the path: the longest a record took to arrive, counted from when it was sent or the
//! record before it arrived, whichever is later. A multi-second outage shows even though TCP
//! retransmits every byte (counting bytes only would hide it), while a pause of the sender (a
//! test process starved of CPU sends nothing meanwhile) does not count against the path. The
//! receiver reads with a timeout, so a dead path fails instead of hanging.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of one record: sequence number and send time (µs since the stream started), big endian.
pub const RECORD: usize = 16;

/// How long the receiver waits for the next bytes before it calls the path dead.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One record as the receiver saw it; times are since the stream started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub sent_at: Duration,
    pub at: Duration,
}

/// Encodes record `seq` sent at `sent_at`.
pub fn encode(seq: u64, sent_at: Duration) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    let micros = u64::try_from(sent_at.as_micros()).unwrap_or(u64::MAX);
    b[8..].copy_from_slice(&micros.to_be_bytes());
    b
}

/// Decodes a record into (sequence number, send time).
pub fn decode(b: &[u8; RECORD]) -> (u64, Duration) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[..8]);
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&b[8..]);
    (
        u64::from_be_bytes(seq),
        Duration::from_micros(u64::from_be_bytes(micros)),
    )
}

/// A time the path kept the receiver waiting: from when a record was sent (or the record
/// before it arrived, if later) until it arrived; or, for the gap between deliveries, from one
/// delivery to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gap {
    pub from: Duration,
    pub to: Duration,
}

impl Gap {
    pub fn len(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }

    pub fn is_empty(&self) -> bool {
        self.len().is_zero()
    }
}

/// What the stream delivered, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub sent: u64,
    pub delivered: u64,
    /// The longest stall of the path (see the module's documentation).
    pub worst_gap: Gap,
    /// The longest time between two deliveries, the sender's pauses included (shown, not
    /// judged).
    pub worst_delivery_gap: Gap,
    /// The longest time from sending a record to delivering it.
    pub worst_latency: Duration,
    /// Events the test marked (label, time since the stream started), in order.
    pub marks: Vec<(String, Duration)>,
    /// Delivery times, for [`Report::delivered_between`].
    pub arrivals: Vec<Duration>,
}

/// Checks that `deliveries` are records `0..sent` in order (nothing lost, duplicated or
/// reordered at the application level) and measures the gaps. Pure: the unit tests feed it
/// synthetic deliveries.
pub fn analyse(
    deliveries: &[Delivery],
    sent: u64,
    marks: Vec<(String, Duration)>,
) -> Result<Report, String> {
    for (i, d) in deliveries.iter().enumerate() {
        if d.seq != i as u64 {
            return Err(format!(
                "record {i} carries sequence number {} (lost, duplicated or reordered)",
                d.seq
            ));
        }
    }
    if deliveries.len() as u64 != sent {
        return Err(format!(
            "{sent} records sent, {} delivered",
            deliveries.len()
        ));
    }
    let mut worst_gap = Gap::default();
    let mut prev_at = Duration::ZERO;
    for d in deliveries {
        let g = Gap {
            from: d.sent_at.max(prev_at),
            to: d.at,
        };
        if g.len() > worst_gap.len() {
            worst_gap = g;
        }
        prev_at = d.at;
    }
    let mut worst_delivery_gap = Gap::default();
    for w in deliveries.windows(2) {
        let g = Gap {
            from: w[0].at,
            to: w[1].at,
        };
        if g.len() > worst_delivery_gap.len() {
            worst_delivery_gap = g;
        }
    }
    let worst_latency = deliveries
        .iter()
        .map(|d| d.at.saturating_sub(d.sent_at))
        .max()
        .unwrap_or_default();
    Ok(Report {
        sent,
        delivered: deliveries.len() as u64,
        worst_gap,
        worst_delivery_gap,
        worst_latency,
        marks,
        arrivals: deliveries.iter().map(|d| d.at).collect(),
    })
}

impl Report {
    /// Ok when no gap between deliveries exceeds `bound`; the error names `during`, the gap and
    /// the events marked around it.
    pub fn gap_within(&self, bound: Duration, during: &str) -> Result<(), String> {
        if self.worst_gap.len() <= bound {
            Ok(())
        } else {
            Err(format!(
                "during {during} the stream stalled for {:?} (bound {bound:?}): {self}",
                self.worst_gap.len()
            ))
        }
    }

    /// Records delivered at or after `from` and before `to` (times since the stream started).
    pub fn delivered_between(&self, from: Duration, to: Duration) -> u64 {
        self.arrivals
            .iter()
            .filter(|a| **a >= from && **a < to)
            .count() as u64
    }

    /// The time of the first mark named `label`.
    pub fn mark(&self, label: &str) -> Option<Duration> {
        self.marks.iter().find(|(l, _)| l == label).map(|(_, t)| *t)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} records delivered; worst stall of the path {:?} (from t={:.3}s to t={:.3}s); worst gap between deliveries {:?} (from t={:.3}s); worst latency {:?}; marks:",
            self.delivered,
            self.sent,
            self.worst_gap.len(),
            self.worst_gap.from.as_secs_f64(),
            self.worst_gap.to.as_secs_f64(),
            self.worst_delivery_gap.len(),
            self.worst_delivery_gap.from.as_secs_f64(),
            self.worst_latency,
        )?;
        for (label, t) in &self.marks {
            write!(f, " {label}@{:.3}s", t.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A running paced stream; [`PacedStream::finish`] ends it and returns the [`Report`].
pub struct PacedStream {
    start: Instant,
    stop: Arc<AtomicBool>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    marks: Mutex<Vec<(String, Duration)>>,
    sender: JoinHandle<Result<u64, String>>,
    receiver: JoinHandle<Result<(), String>>,
}

/// Runs `f` on a new thread, inside network namespace `netns` (a name under /run/netns) when
/// given, else in the caller's.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> JoinHandle<Result<T, String>> {
    let path = netns.map(|n| format!("/run/netns/{n}"));
    std::thread::spawn(move || {
        if let Some(path) = path {
            use std::os::fd::AsFd;
            let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
        }
        f()
    })
}

impl PacedStream {
    /// Listens on `server_ip:port` inside `server_netns`, connects from `client_netns` and sends
    /// one record every `interval` until [`PacedStream::finish`].
    pub fn start(
        server_netns: Option<&str>,
        client_netns: Option<&str>,
        server_ip: IpAddr,
        port: u16,
        interval: Duration,
    ) -> Result<PacedStream, String> {
        let addr = SocketAddr::new(server_ip, port);
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = deliveries.clone();
        let receiver = spawn_in_netns(server_netns, move || {
            let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
            let _ = ready_tx.send(());
            let mut c = accept_within(&l, Duration::from_secs(15))?;
            c.set_read_timeout(Some(READ_TIMEOUT))
                .map_err(|e| e.to_string())?;
            receive(&mut c, start, &sink)
        });
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            return Err(match receiver.join() {
                Ok(Err(e)) => format!("paced stream receiver: {e}"),
                _ => "paced stream receiver did not start".into(),
            });
        }
        let stop2 = stop.clone();
        let sender = spawn_in_netns(client_netns, move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(READ_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut seq = 0u64;
            let mut next = Instant::now();
            while !stop2.load(Ordering::SeqCst) {
                s.write_all(&encode(seq, start.elapsed()))
                    .map_err(|e| format!("write record {seq}: {e}"))?;
                seq += 1;
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    // Blocked behind a stalled path: keep the pace from now on, no burst.
                    next = now;
                }
            }
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown after {seq} records: {e}"))?;
            Ok(seq)
        });
        Ok(PacedStream {
            start,
            stop,
            deliveries,
            marks: Mutex::new(Vec::new()),
            sender,
            receiver,
        })
    }

    /// Records delivered so far.
    pub fn delivered(&self) -> u64 {
        self.deliveries.lock().map(|d| d.len() as u64).unwrap_or(0)
    }

    /// Notes an event (shown in the report next to the worst gap).
    pub fn mark(&self, label: &str) {
        if let Ok(mut m) = self.marks.lock() {
            m.push((label.to_string(), self.start.elapsed()));
        }
    }

    /// Waits until `n` more records than now have been delivered; Err after `timeout`.
    pub fn flowing_blocking(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let base = self.delivered();
        let deadline = Instant::now() + timeout;
        while self.delivered() < base + n {
            if Instant::now() > deadline {
                return Err(format!(
                    "the stream delivered {} records in {timeout:?}, want {n}",
                    self.delivered() - base
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// [`PacedStream::flowing_blocking`] for async tests.
    pub async fn flowing(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let base = self.delivered();
        let deadline = Instant::now() + timeout;
        while self.delivered() < base + n {
            if Instant::now() > deadline {
                return Err(format!(
                    "the stream delivered {} records in {timeout:?}, want {n}",
                    self.delivered() - base
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops sending, waits for the receiver to read everything and returns the report; Err if
    /// either side failed or a record was lost.
    pub fn finish(self) -> Result<Report, String> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self
            .sender
            .join()
            .map_err(|_| "paced stream sender panicked".to_string())?
            .map_err(|e| format!("paced stream sender: {e}"))?;
        self.receiver
            .join()
            .map_err(|_| "paced stream receiver panicked".to_string())?
            .map_err(|e| format!("paced stream receiver: {e}"))?;
        let deliveries = self
            .deliveries
            .lock()
            .map_err(|_| "deliveries lock poisoned".to_string())?
            .clone();
        let marks = self
            .marks
            .lock()
            .map_err(|_| "marks lock poisoned".to_string())?
            .clone();
        analyse(&deliveries, sent, marks)
    }
}

/// Drops TCP segments to and from `port` inside network namespace `netns` (an nft table of its
/// own) until dropped: the harness's way to break a path on purpose (negative controls).
pub struct PathBlock {
    netns: String,
    table: String,
}

impl PathBlock {
    pub fn tcp_port(netns: &str, port: u16) -> Result<PathBlock, String> {
        let table = crate::unique_name("hntblock").replace('-', "_");
        let block = PathBlock {
            netns: netns.to_string(),
            table: table.clone(),
        };
        let nft = |cmd: String| crate::try_sh(&["ip", "netns", "exec", netns, "nft", &cmd]);
        nft(format!("add table inet {table}"))?;
        nft(format!(
            "add chain inet {table} in {{ type filter hook input priority -300 ; }}"
        ))?;
        nft(format!(
            "add chain inet {table} out {{ type filter hook output priority -300 ; }}"
        ))?;
        nft(format!("add rule inet {table} in tcp dport {port} drop"))?;
        nft(format!("add rule inet {table} in tcp sport {port} drop"))?;
        nft(format!("add rule inet {table} out tcp dport {port} drop"))?;
        nft(format!("add rule inet {table} out tcp sport {port} drop"))?;
        Ok(block)
    }
}

impl Drop for PathBlock {
    fn drop(&mut self) {
        let _ = crate::try_sh(&[
            "ip",
            "netns",
            "exec",
            &self.netns,
            "nft",
            "delete",
            "table",
            "inet",
            &self.table,
        ]);
    }
}

fn accept_within(l: &TcpListener, timeout: Duration) -> Result<TcpStream, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(format!("no connection within {timeout:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

fn receive(c: &mut TcpStream, start: Instant, sink: &Mutex<Vec<Delivery>>) -> Result<(), String> {
    let mut rec = [0u8; RECORD];
    let mut have = 0;
    loop {
        match c.read(&mut rec[have..]) {
            Ok(0) if have == 0 => return Ok(()),
            Ok(0) => return Err(format!("connection ended inside a record ({have} bytes)")),
            Ok(n) => {
                have += n;
                if have == RECORD {
                    have = 0;
                    let (seq, sent_at) = decode(&rec);
                    let at = start.elapsed();
                    sink.lock()
                        .map_err(|_| "deliveries lock poisoned".to_string())?
                        .push(Delivery { seq, sent_at, at });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let n = sink.lock().map(|d| d.len()).unwrap_or(0);
                return Err(format!(
                    "read after {n} records (nothing for {READ_TIMEOUT:?} means a dead path): {e}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(times: &[u64]) -> Vec<Delivery> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Delivery {
                seq: i as u64,
                sent_at: ms(i as u64 * 10),
                at: ms(*t),
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        assert_eq!(decode(&encode(7, ms(1234))), (7, ms(1234)));
        assert_eq!(decode(&encode(u64::MAX, ms(0))), (u64::MAX, ms(0)));
    }

    #[test]
    fn the_worst_gap_and_latency_are_measured() {
        let r = analyse(&at(&[5, 15, 25, 2025, 2030]), 5, vec![]).unwrap();
        // Record 3 was sent at 30 ms and arrived at 2025 ms.
        assert_eq!(
            r.worst_gap,
            Gap {
                from: ms(30),
                to: ms(2025)
            }
        );
        assert_eq!(
            r.worst_delivery_gap,
            Gap {
                from: ms(25),
                to: ms(2025)
            }
        );
        assert_eq!(r.worst_latency, ms(2025 - 30));
        assert!(r.gap_within(ms(1000), "x").is_err());
        assert!(r.gap_within(ms(2000), "x").is_ok());
        assert_eq!(r.delivered_between(ms(10), ms(2026)), 3);
    }

    #[test]
    fn a_pause_of_the_sender_is_not_a_stall_of_the_path() {
        // The sender sent nothing from 20 ms to 1,520 ms (its process had no CPU); every record
        // arrived 1 ms after it was sent.
        let d: Vec<Delivery> = [0u64, 10, 20, 1520, 1530]
            .iter()
            .enumerate()
            .map(|(i, t)| Delivery {
                seq: i as u64,
                sent_at: ms(*t),
                at: ms(t + 1),
            })
            .collect();
        let r = analyse(&d, 5, vec![]).unwrap();
        assert_eq!(r.worst_gap.len(), ms(1));
        assert_eq!(r.worst_delivery_gap.len(), ms(1500));
        assert!(r.gap_within(ms(100), "x").is_ok(), "{r}");
        // The path holding record 3 from its sending (1,520 ms) until 3,000 ms is a stall.
        let mut held = d.clone();
        held[3].at = ms(3000);
        held[4].at = ms(3001);
        let r = analyse(&held, 5, vec![]).unwrap();
        assert_eq!(
            r.worst_gap,
            Gap {
                from: ms(1520),
                to: ms(3000)
            }
        );
        assert!(r.gap_within(ms(1000), "x").is_err());
    }

    #[test]
    fn an_even_stream_passes_the_bound() {
        let times: Vec<u64> = (0..100).map(|i| i * 10).collect();
        let r = analyse(&at(&times), 100, vec![("e".into(), ms(500))]).unwrap();
        // Each record arrives as it is sent: no stall, 10 ms between deliveries.
        assert_eq!(r.worst_gap.len(), ms(0));
        assert_eq!(r.worst_delivery_gap.len(), ms(10));
        assert!(r.gap_within(ms(50), "x").is_ok());
        assert_eq!(r.mark("e"), Some(ms(500)));
        assert!(r.to_string().contains("e@0.500s"), "{r}");
    }

    #[test]
    fn lost_duplicated_or_reordered_records_are_errors() {
        let mut d = at(&[0, 10, 20]);
        assert!(
            analyse(&d, 4, vec![])
                .unwrap_err()
                .contains("4 records sent, 3")
        );
        d[2].seq = 1;
        assert!(analyse(&d, 3, vec![]).unwrap_err().contains("record 2"));
        d[2].seq = 3;
        assert!(analyse(&d, 3, vec![]).is_err());
    }

    /// Over loopback in the test process's namespace (no root needed): a clean stream has no gap
    /// near a second.
    #[test]
    fn a_loopback_stream_flows_without_gaps() {
        let port = free_port();
        let s = PacedStream::start(None, None, "127.0.0.1".parse().unwrap(), port, ms(5)).unwrap();
        s.flowing_blocking(40, Duration::from_secs(10)).unwrap();
        s.mark("middle");
        s.flowing_blocking(20, Duration::from_secs(10)).unwrap();
        let r = s.finish().unwrap();
        assert!(r.delivered >= 60, "{r}");
        r.gap_within(Duration::from_millis(500), "a clean loopback stream")
            .unwrap();
        assert!(r.mark("middle").is_some());
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Negative control: the path is blocked for 2 s by an nft drop rule inside a namespace; the
    /// report must show the stall (TCP delivers every record afterwards, so counting bytes would
    /// not).
    #[test]
    fn a_blocked_path_shows_as_a_gap() {
        if !crate::may_run("a_blocked_path_shows_as_a_gap", &["nft"]) {
            return;
        }
        let ns = crate::Netns::new("paced");
        let s = PacedStream::start(
            Some(&ns.name),
            Some(&ns.name),
            "127.0.0.1".parse().unwrap(),
            7400,
            ms(10),
        )
        .unwrap();
        s.flowing_blocking(20, Duration::from_secs(10)).unwrap();
        let block = PathBlock::tcp_port(&ns.name, 7400).unwrap();
        s.mark("blocked");
        std::thread::sleep(Duration::from_secs(2));
        drop(block);
        s.mark("unblocked");
        s.flowing_blocking(20, Duration::from_secs(20)).unwrap();
        let r = s.finish().unwrap();
        assert!(
            r.worst_gap.len() >= Duration::from_millis(1500),
            "a 2 s block must show as a gap: {r}"
        );
        let e = r
            .gap_within(Duration::from_secs(1), "the block")
            .unwrap_err();
        assert!(e.contains("stalled"), "{e}");
        assert_eq!(r.delivered, r.sent, "TCP still delivers every record: {r}");
        eprintln!("blocked 2 s: {r}");
    }
}
