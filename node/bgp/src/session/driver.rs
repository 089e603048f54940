//! The tokio driver of one peer: owns the TCP connection, feeds the [`Session`] state machine
//! with bytes, connection events and timer ticks, carries out its actions, and keeps the peer's
//! Adj-RIB-Out in line with the desired route set.
//!
//! After Established it sends the whole Adj-RIB-Out and an End-of-RIB per negotiated family,
//! then incremental UPDATEs whenever the desired set changes. Learned routes are parsed (the
//! decoder validates them) and dropped. The connection is created on the task's runtime thread,
//! so it lives in that thread's network namespace.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use super::{Action, Event, Negotiated, Session, SessionConfig, State};
use crate::prefix::Prefix;
use crate::rib::{self, AdjRibOut, Announcement, NextHops, UpdateContext};
use crate::tcp;
use crate::wire::{Codec, Family, Message, Update, decode_message};

/// How long one message write may block before the connection counts as dead.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything one peer task needs.
#[derive(Debug, Clone)]
pub struct PeerTaskConfig {
    pub session: SessionConfig,
    pub peer: SocketAddr,
    pub local_address: Option<IpAddr>,
    pub password: Option<String>,
    pub next_hops: NextHops,
}

/// Live status of one peer, shared with the speaker handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: State,
    pub established_since: Option<SystemTime>,
    /// Times the session left Established.
    pub flaps: u64,
    /// The Adj-RIB-Out of the current session (empty when not Established).
    pub announced: AdjRibOut,
    /// Families the current session negotiated.
    pub families: Vec<Family>,
    pub updates_received: u64,
    pub last_error: Option<String>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        PeerStatus {
            state: State::Idle,
            established_since: None,
            flaps: 0,
            announced: AdjRibOut::new(),
            families: Vec::new(),
            updates_received: 0,
            last_error: None,
        }
    }
}

/// Shared status plus a generation counter that ticks on every change, so callers can await
/// "something changed" instead of polling.
#[derive(Debug, Clone)]
pub struct StatusCell {
    status: Arc<Mutex<PeerStatus>>,
    changed: watch::Sender<u64>,
}

impl StatusCell {
    pub fn new(status: PeerStatus, changed: watch::Sender<u64>) -> Self {
        StatusCell {
            status: Arc::new(Mutex::new(status)),
            changed,
        }
    }

    pub fn get(&self) -> PeerStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Runs one peer until `stop` fires (then a Cease NOTIFICATION with the given subcode goes out
/// when a session is up) or the task is aborted (the connection just closes: what a graceful
/// restart helper sees when a speaker restarts).
pub async fn run_peer(
    cfg: PeerTaskConfig,
    mut desired: watch::Receiver<Arc<BTreeSet<Announcement>>>,
    status: StatusCell,
    mut stop: oneshot::Receiver<u8>,
) {
    let mut driver = Driver {
        session: Session::new(cfg.session.clone()),
        cfg,
        conn: None,
        connecting: None,
        rib_out: AdjRibOut::new(),
        status,
    };
    let mut events = VecDeque::from([Event::Start]);
    let mut stopping = false;
    loop {
        while let Some(event) = events.pop_front() {
            let actions = driver.session.handle(event, Instant::now());
            for action in actions {
                driver.act(action, &desired, &mut events).await;
            }
        }
        driver.publish_state();
        if stopping {
            break;
        }
        let deadline = driver.session.next_deadline();
        let established = driver.session.state() == State::Established;
        tokio::select! {
            subcode = &mut stop => match subcode {
                Ok(cease_subcode) => {
                    events.push_back(Event::Stop { cease_subcode });
                    stopping = true;
                }
                // The handle went away without a stop: leave like a crash would (no
                // NOTIFICATION), which keeps our routes at a graceful restart helper.
                Err(_) => break,
            },
            result = async {
                match driver.connecting.as_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            } => {
                driver.connecting = None;
                match result {
                    Ok(Ok(stream)) => {
                        driver.conn = Some(Connection { stream, buf: Vec::new() });
                        events.push_back(Event::TcpConnected);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %driver.cfg.peer, error = %e, "BGP connect failed");
                        events.push_back(Event::TcpConnectFailed);
                    }
                    Err(e) => {
                        tracing::warn!(peer = %driver.cfg.peer, error = %e, "BGP connect task failed");
                        events.push_back(Event::TcpConnectFailed);
                    }
                }
            }
            read = async {
                match driver.conn.as_mut() {
                    Some(conn) => {
                        let mut chunk = [0u8; 8192];
                        conn.stream.read(&mut chunk).await.map(|n| (chunk, n))
                    }
                    None => std::future::pending().await,
                }
            } => match read {
                Ok((_, 0)) | Err(_) => events.push_back(Event::TcpClosed),
                Ok((chunk, n)) => driver.on_bytes(&chunk[..n.min(chunk.len())], &mut events),
            },
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => events.push_back(Event::Tick),
            changed = desired.changed(), if established => {
                if changed.is_ok() {
                    driver.sync_routes(&desired, &mut events).await;
                }
            }
        }
    }
    if let Some(handle) = driver.connecting.take() {
        handle.abort();
    }
    driver.publish_state();
}

struct Driver {
    cfg: PeerTaskConfig,
    session: Session,
    conn: Option<Connection>,
    connecting: Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
    rib_out: AdjRibOut,
    status: StatusCell,
}

impl Driver {
    fn codec(&self) -> Codec {
        self.session
            .negotiated()
            .map(|n| n.codec)
            .unwrap_or_default()
    }

    fn on_bytes(&mut self, bytes: &[u8], events: &mut VecDeque<Event>) {
        let codec = self.codec();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.buf.extend_from_slice(bytes);
        loop {
            match decode_message(&conn.buf, codec) {
                Ok(Some((msg, used))) => {
                    conn.buf.drain(..used.min(conn.buf.len()));
                    events.push_back(Event::Message(msg));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %self.cfg.peer, error = %e, "malformed BGP message");
                    conn.buf.clear();
                    events.push_back(Event::DecodeError(e));
                    break;
                }
            }
        }
    }

    async fn act(
        &mut self,
        action: Action,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        events: &mut VecDeque<Event>,
    ) {
        match action {
            Action::Connect => {
                self.conn = None;
                if let Some(old) = self.connecting.take() {
                    old.abort();
                }
                let (peer, local, password) = (
                    self.cfg.peer,
                    self.cfg.local_address,
                    self.cfg.password.as_deref(),
                );
                // The socket is created here, on this task's thread, so it belongs to that
                // thread's network namespace; only the handshake runs in its own task.
                match tcp::prepare(peer, local, password) {
                    Ok(socket) => {
                        self.connecting = Some(tokio::spawn(tcp::connect_prepared(socket, peer)));
                        tracing::debug!(peer = %peer, "BGP connecting");
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "BGP socket setup failed");
                        events.push_back(Event::TcpConnectFailed);
                    }
                }
            }
            Action::Send(msg) => {
                if let Message::Notification(n) = &msg {
                    tracing::info!(peer = %self.cfg.peer, notification = %n, "sending BGP NOTIFICATION");
                }
                if let Err(e) = self.send(&msg).await {
                    tracing::debug!(peer = %self.cfg.peer, error = %e, "BGP write failed");
                    events.push_back(Event::TcpClosed);
                }
            }
            Action::CloseConnection => {
                if let Some(mut conn) = self.conn.take() {
                    // Best effort: flush and send FIN; the peer may already be gone.
                    let _ = conn.stream.shutdown().await;
                }
                if let Some(handle) = self.connecting.take() {
                    handle.abort();
                }
            }
            Action::Established(negotiated) => {
                tracing::info!(
                    peer = %self.cfg.peer,
                    peer_asn = negotiated.peer_asn,
                    hold_time = negotiated.hold_time,
                    families = ?negotiated.families,
                    "BGP session established"
                );
                self.rib_out.clear();
                self.status.update(|s| {
                    s.established_since = Some(SystemTime::now());
                    s.families = negotiated.families.clone();
                    s.last_error = None;
                });
                let target = self.target(desired, &negotiated);
                let diff = rib::diff(&self.rib_out, &target);
                let mut ok = self
                    .send_updates(rib::updates(&diff, &self.update_context()))
                    .await;
                for family in &negotiated.families {
                    ok = ok
                        && self
                            .send(&Message::Update(Update::end_of_rib(*family)))
                            .await
                            .is_ok();
                }
                if ok {
                    self.commit(target);
                } else {
                    events.push_back(Event::TcpClosed);
                }
            }
            Action::SessionDown { reason } => {
                tracing::warn!(peer = %self.cfg.peer, reason = %reason, "BGP session down");
                self.rib_out.clear();
                self.status.update(|s| {
                    s.flaps += 1;
                    s.established_since = None;
                    s.announced.clear();
                    s.families.clear();
                });
            }
            Action::UpdateReceived(update) => {
                // Learned routes are never installed; count them for visibility.
                tracing::trace!(peer = %self.cfg.peer, ?update, "BGP UPDATE received and dropped");
                self.status.update(|s| s.updates_received += 1);
            }
        }
    }

    fn update_context(&self) -> UpdateContext {
        UpdateContext {
            local_asn: self.cfg.session.local_asn,
            ibgp: self.cfg.session.local_asn == self.cfg.session.peer_asn,
            next_hops: self.cfg.next_hops,
        }
    }

    fn target(
        &self,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        negotiated: &Negotiated,
    ) -> AdjRibOut {
        let desired = Arc::clone(&desired.borrow());
        rib::target(&desired, &negotiated.families, &self.cfg.next_hops)
    }

    async fn sync_routes(
        &mut self,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        events: &mut VecDeque<Event>,
    ) {
        let Some(negotiated) = self.session.negotiated().cloned() else {
            return;
        };
        let target = self.target(desired, &negotiated);
        let diff = rib::diff(&self.rib_out, &target);
        if diff.is_empty() {
            return;
        }
        tracing::debug!(
            peer = %self.cfg.peer,
            announce = diff.announce.len(),
            withdraw = diff.withdraw.len(),
            "BGP sending route changes"
        );
        if self
            .send_updates(rib::updates(&diff, &self.update_context()))
            .await
        {
            self.commit(target);
        } else {
            events.push_back(Event::TcpClosed);
        }
    }

    fn commit(&mut self, target: AdjRibOut) {
        self.rib_out = target.clone();
        self.status.update(|s| s.announced = target);
    }

    async fn send_updates(&mut self, updates: Vec<Update>) -> bool {
        for u in updates {
            if self.send(&Message::Update(u)).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn send(&mut self, msg: &Message) -> io::Result<()> {
        let bytes = msg
            .encode(self.codec())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no BGP connection",
            ));
        };
        // A peer that stops reading must not wedge this task (timers, stop requests).
        match tokio::time::timeout(WRITE_TIMEOUT, conn.stream.write_all(&bytes)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer did not accept data within the write timeout",
            )),
        }
    }

    fn publish_state(&self) {
        let state = self.session.state();
        let last_error = self.session.last_error().map(str::to_string);
        let current = self.status.get();
        if current.state != state || (last_error.is_some() && current.last_error != last_error) {
            self.status.update(|s| {
                s.state = state;
                if last_error.is_some() {
                    s.last_error = last_error;
                }
            });
        }
    }
}

/// Whether `prefix` is in a peer's Adj-RIB-Out, or cannot be (the session did not negotiate its
/// family), for readiness checks.
pub fn carried_or_not_applicable(status: &PeerStatus, prefix: &Prefix) -> bool {
    status.state == State::Established
        && (status.announced.contains_key(prefix)
            || !status.families.contains(&rib::family_of(prefix)))
}
