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
use tokio::sync::{mpsc, oneshot, watch};

use super::collision::{Direction, Identity, Resolution, Side, resolve};
use super::{Action, Event, Negotiated, Session, SessionConfig, State};
use crate::Prefix;
use crate::rib::{self, AdjRibOut, Announcement, NextHops, UpdateContext};
use crate::tcp;
use crate::wire::{Codec, Family, Message, Notification, Update, decode_message, notif};

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
    /// When the session entered `state` (wall clock, for status reports).
    pub state_since: SystemTime,
    pub established_since: Option<SystemTime>,
    /// Times the session left Established.
    pub flaps: u64,
    /// The Adj-RIB-Out of the current session (empty when not Established).
    pub announced: AdjRibOut,
    /// Families the current session negotiated.
    pub families: Vec<Family>,
    pub updates_received: u64,
    pub last_error: Option<String>,
    /// Connections closed by connection collision resolution (RFC 4271 6.8), by us or by the
    /// peer (its Cease / Connection Collision Resolution).
    pub collisions: u64,
    /// Who initiated the connection of the Established session.
    pub connection: Option<Direction>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        PeerStatus {
            state: State::Idle,
            state_since: SystemTime::now(),
            established_since: None,
            flaps: 0,
            announced: AdjRibOut::new(),
            families: Vec::new(),
            updates_received: 0,
            last_error: None,
            collisions: 0,
            connection: None,
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
    direction: Direction,
}

impl Connection {
    fn new(stream: TcpStream, direction: Direction) -> Self {
        Connection {
            stream,
            buf: Vec::new(),
            direction,
        }
    }
}

/// One state machine and the connection it owns.
struct Link {
    session: Session,
    conn: Option<Connection>,
}

impl Link {
    fn side(&self) -> Side {
        Side {
            state: self.session.state(),
            direction: self.conn.as_ref().map(|c| c.direction),
            peer: self.session.negotiated().map(|n| Identity {
                id: n.peer_id,
                asn: n.peer_asn,
            }),
        }
    }

    fn codec(&self) -> Codec {
        self.session
            .negotiated()
            .map(|n| n.codec)
            .unwrap_or_default()
    }
}

/// Which of a peer's two machines an event is for (see [`super::collision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Primary,
    Secondary,
}

type Events = VecDeque<(Slot, Event)>;

/// Runs one peer until `stop` fires (then a Cease NOTIFICATION with the given subcode goes out
/// when a session is up) or the task is aborted (the connection just closes: what a graceful
/// restart helper sees when a speaker restarts). `inbound` delivers connections the speaker's
/// listener accepted from this peer's address.
pub async fn run_peer(
    cfg: PeerTaskConfig,
    mut desired: watch::Receiver<Arc<BTreeSet<Announcement>>>,
    status: StatusCell,
    mut stop: oneshot::Receiver<u8>,
    mut inbound: mpsc::Receiver<TcpStream>,
) {
    let mut driver = Driver {
        primary: Link {
            session: Session::new(cfg.session.clone()),
            conn: None,
        },
        cfg,
        secondary: None,
        connecting: None,
        pending_established: None,
        rib_out: AdjRibOut::new(),
        status,
    };
    let mut events: Events = VecDeque::from([(Slot::Primary, Event::Start)]);
    let mut stopping = false;
    let mut inbound_open = true;
    loop {
        driver.process(&mut events, &desired).await;
        driver.publish_state();
        if stopping {
            break;
        }
        let deadline = [
            driver.primary.session.next_deadline(),
            driver
                .secondary
                .as_ref()
                .and_then(|l| l.session.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        let established = driver.primary.session.state() == State::Established;
        tokio::select! {
            subcode = &mut stop => match subcode {
                Ok(cease_subcode) => {
                    if let Some(secondary) = driver.secondary.take() {
                        close_with_cease(secondary, cease_subcode).await;
                    }
                    events.push_back((Slot::Primary, Event::Stop { cease_subcode }));
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
                    // Only the attempt of the current Connect state counts.
                    Ok(Ok(stream)) if driver.primary.session.state() == State::Connect => {
                        driver.primary.conn = Some(Connection::new(stream, Direction::Outbound));
                        events.push_back((Slot::Primary, Event::TcpConnected));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %driver.cfg.peer, error = %e, "BGP connect failed");
                        events.push_back((Slot::Primary, Event::TcpConnectFailed));
                    }
                    Err(e) => {
                        tracing::warn!(peer = %driver.cfg.peer, error = %e, "BGP connect task failed");
                        events.push_back((Slot::Primary, Event::TcpConnectFailed));
                    }
                }
            }
            read = read_some(driver.primary.conn.as_mut()) => match read {
                Ok((_, 0)) | Err(_) => events.push_back((Slot::Primary, Event::TcpClosed)),
                Ok((chunk, n)) => driver.on_bytes(Slot::Primary, &chunk[..n.min(chunk.len())], &mut events),
            },
            read = read_some(driver.secondary.as_mut().and_then(|l| l.conn.as_mut())) => match read {
                Ok((_, 0)) | Err(_) => events.push_back((Slot::Secondary, Event::TcpClosed)),
                Ok((chunk, n)) => driver.on_bytes(Slot::Secondary, &chunk[..n.min(chunk.len())], &mut events),
            },
            accepted = inbound.recv(), if inbound_open => match accepted {
                Some(stream) => driver.on_inbound(stream, &desired, &mut events).await,
                None => inbound_open = false,
            },
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                events.push_back((Slot::Primary, Event::Tick));
                if driver.secondary.is_some() {
                    events.push_back((Slot::Secondary, Event::Tick));
                }
            }
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

/// Reads what is there on a connection; pending forever without one.
async fn read_some(conn: Option<&mut Connection>) -> io::Result<([u8; 8192], usize)> {
    match conn {
        Some(conn) => {
            let mut chunk = [0u8; 8192];
            conn.stream.read(&mut chunk).await.map(|n| (chunk, n))
        }
        None => std::future::pending().await,
    }
}

/// Sends Cease with `subcode` on a link's connection (if any) and closes it.
async fn close_with_cease(link: Link, subcode: u8) {
    let codec = link.codec();
    if let Some(mut conn) = link.conn {
        let _ = write_message(
            &mut conn.stream,
            &Message::Notification(Notification::cease(subcode)),
            codec,
        )
        .await;
        let _ = conn.stream.shutdown().await;
    }
}

async fn write_message(stream: &mut TcpStream, msg: &Message, codec: Codec) -> io::Result<()> {
    let bytes = msg
        .encode(codec)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // A peer that stops reading must not wedge this task (timers, stop requests).
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer did not accept data within the write timeout",
        )),
    }
}

struct Driver {
    cfg: PeerTaskConfig,
    /// The machine status and routes follow.
    primary: Link,
    /// An inbound connection racing the primary (connection collision).
    secondary: Option<Link>,
    /// The primary's outbound connect in flight.
    connecting: Option<tokio::task::JoinHandle<io::Result<TcpStream>>>,
    /// The secondary reached Established; carried out once it is promoted.
    pending_established: Option<Negotiated>,
    rib_out: AdjRibOut,
    status: StatusCell,
}

impl Driver {
    fn link(&mut self, slot: Slot) -> Option<&mut Link> {
        match slot {
            Slot::Primary => Some(&mut self.primary),
            Slot::Secondary => self.secondary.as_mut(),
        }
    }

    /// Feeds queued events to their machines and carries out the actions, then settles a
    /// connection collision, until nothing is left to do.
    async fn process(
        &mut self,
        events: &mut Events,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
    ) {
        loop {
            while let Some((slot, event)) = events.pop_front() {
                let now = Instant::now();
                if let Event::Message(Message::Notification(n)) = &event
                    && (n.code, n.subcode) == (notif::CEASE, notif::CEASE_CONNECTION_COLLISION)
                {
                    // The peer resolved a collision first (it saw both connections earlier).
                    tracing::info!(peer = %self.cfg.peer, slot = ?slot, "BGP peer closed a connection by collision resolution");
                    self.status.update(|s| s.collisions += 1);
                }
                let Some(link) = self.link(slot) else {
                    continue;
                };
                let actions = link.session.handle(event, now);
                for action in actions {
                    self.act(slot, action, desired, events).await;
                }
            }
            if !self.settle_collision(desired, events).await {
                break;
            }
        }
    }

    /// Applies [`resolve`] once; returns whether anything changed.
    async fn settle_collision(
        &mut self,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        events: &mut Events,
    ) -> bool {
        let local = Identity {
            id: self.cfg.session.router_id,
            asn: self.cfg.session.local_asn,
        };
        let primary = self.primary.side();
        let secondary = self.secondary.as_ref().map(Link::side);
        let resolution = resolve(local, primary, self.connecting.is_some(), secondary);
        let peer = self.cfg.peer;
        match resolution {
            Resolution::Keep => return false,
            Resolution::DropSecondary => {
                self.secondary = None;
                self.pending_established = None;
                return true;
            }
            Resolution::PromoteSecondary => {
                tracing::debug!(peer = %peer, "BGP: the peer's connection replaces our failed attempt");
            }
            Resolution::CloseSecondary => {
                tracing::info!(peer = %peer, kept = ?primary.direction.map(Direction::as_str),
                    primary_state = %primary.state, "BGP connection collision: closing the newer connection");
                self.status.update(|s| s.collisions += 1);
                self.pending_established = None;
                if let Some(secondary) = self.secondary.take() {
                    close_with_cease(secondary, notif::CEASE_CONNECTION_COLLISION).await;
                }
                return true;
            }
            Resolution::ClosePrimary => {
                tracing::info!(peer = %peer, kept = ?secondary.and_then(|s| s.direction).map(Direction::as_str),
                    closed_state = %primary.state, "BGP connection collision: closing the older connection");
                self.status.update(|s| s.collisions += 1);
            }
        }
        // Promote the secondary (ClosePrimary, PromoteSecondary).
        let Some(secondary) = self.secondary.take() else {
            return false;
        };
        if let Some(handle) = self.connecting.take() {
            handle.abort();
        }
        let old = std::mem::replace(&mut self.primary, secondary);
        close_with_cease(old, notif::CEASE_CONNECTION_COLLISION).await;
        if let Some(negotiated) = self.pending_established.take() {
            self.act(
                Slot::Primary,
                Action::Established(negotiated),
                desired,
                events,
            )
            .await;
        }
        true
    }

    /// A connection the listener accepted from this peer.
    async fn on_inbound(
        &mut self,
        stream: TcpStream,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        events: &mut Events,
    ) {
        let _ = stream.set_nodelay(true);
        let peer = self.cfg.peer;
        let conn = Connection::new(stream, Direction::Inbound);
        match self.primary.session.state() {
            // Nothing of ours in flight: the peer's connection is the session's.
            State::Idle | State::Active
                if self.connecting.is_none() && !self.primary.session.is_stopped() =>
            {
                tracing::debug!(peer = %peer, "BGP inbound connection accepted");
                self.primary.conn = Some(conn);
                events.push_back((Slot::Primary, Event::TcpConnectionConfirmed));
            }
            // Our attempt or OPEN exchange is under way: run both until one can be chosen. A
            // newer inbound connection replaces an older one still racing.
            State::Connect | State::Active | State::OpenSent | State::OpenConfirm => {
                tracing::debug!(peer = %peer, primary_state = %self.primary.session.state(),
                    "BGP inbound connection while our own is under way: possible collision");
                if let Some(old) = self.secondary.take() {
                    self.status.update(|s| s.collisions += 1);
                    close_with_cease(old, notif::CEASE_CONNECTION_COLLISION).await;
                }
                self.pending_established = None;
                self.secondary = Some(Link {
                    session: self.primary.session.accepting(),
                    conn: Some(conn),
                });
                events.push_back((Slot::Secondary, Event::TcpConnectionConfirmed));
            }
            // RFC 4724 4.2: a peer that advertised graceful restart and connects again while
            // its old session still looks Established has restarted; the old session is over
            // (as if its TCP connection had reset) and the new connection replaces it.
            State::Established
                if self
                    .primary
                    .session
                    .negotiated()
                    .is_some_and(|n| n.peer_graceful_restart.is_some()) =>
            {
                tracing::info!(peer = %peer, "BGP peer connected again while its session was up: it restarted (graceful restart); replacing the old session");
                if let Some(mut old) = self.primary.conn.take() {
                    let _ = old.stream.shutdown().await;
                }
                let actions = self
                    .primary
                    .session
                    .handle(Event::TcpClosed, Instant::now());
                for action in actions {
                    self.act(Slot::Primary, action, desired, events).await;
                }
                self.primary.conn = Some(conn);
                events.push_back((Slot::Primary, Event::TcpConnectionConfirmed));
            }
            // RFC 4271 6.8: a collision with an Established session closes the new connection.
            State::Established => {
                tracing::info!(peer = %peer, "BGP connection collision with the established session: closing the new connection");
                self.status.update(|s| s.collisions += 1);
                close_with_cease(
                    Link {
                        session: self.primary.session.accepting(),
                        conn: Some(conn),
                    },
                    notif::CEASE_CONNECTION_COLLISION,
                )
                .await;
            }
            State::Idle => {
                tracing::debug!(peer = %peer, "BGP inbound connection refused: session stopped");
            }
        }
    }

    fn on_bytes(&mut self, slot: Slot, bytes: &[u8], events: &mut Events) {
        let peer = self.cfg.peer;
        let Some(link) = self.link(slot) else {
            return;
        };
        let codec = link.codec();
        let Some(conn) = link.conn.as_mut() else {
            return;
        };
        conn.buf.extend_from_slice(bytes);
        loop {
            match decode_message(&conn.buf, codec) {
                Ok(Some((msg, used))) => {
                    conn.buf.drain(..used.min(conn.buf.len()));
                    events.push_back((slot, Event::Message(msg)));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "malformed BGP message");
                    conn.buf.clear();
                    events.push_back((slot, Event::DecodeError(e)));
                    break;
                }
            }
        }
    }

    async fn act(
        &mut self,
        slot: Slot,
        action: Action,
        desired: &watch::Receiver<Arc<BTreeSet<Announcement>>>,
        events: &mut Events,
    ) {
        match action {
            // Only the primary connects out (a secondary that failed is dropped before its
            // retry timer could fire).
            Action::Connect if slot == Slot::Primary => {
                self.primary.conn = None;
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
                        events.push_back((Slot::Primary, Event::TcpConnectFailed));
                    }
                }
            }
            Action::Connect => {}
            Action::Send(msg) => {
                if let Message::Notification(n) = &msg {
                    tracing::info!(peer = %self.cfg.peer, notification = %n, "sending BGP NOTIFICATION");
                }
                if let Err(e) = self.send_on(slot, &msg).await {
                    tracing::debug!(peer = %self.cfg.peer, error = %e, "BGP write failed");
                    events.push_back((slot, Event::TcpClosed));
                }
            }
            Action::CloseConnection => {
                if let Some(link) = self.link(slot)
                    && let Some(mut conn) = link.conn.take()
                {
                    // Best effort: flush and send FIN; the peer may already be gone.
                    let _ = conn.stream.shutdown().await;
                }
                if slot == Slot::Primary
                    && let Some(handle) = self.connecting.take()
                {
                    handle.abort();
                }
            }
            // The secondary's session only counts once it is promoted (settle_collision).
            Action::Established(negotiated) if slot == Slot::Secondary => {
                self.pending_established = Some(negotiated);
            }
            Action::Established(negotiated) => {
                let direction = self.primary.conn.as_ref().map(|c| c.direction);
                tracing::info!(
                    peer = %self.cfg.peer,
                    peer_asn = negotiated.peer_asn,
                    hold_time = negotiated.hold_time,
                    families = ?negotiated.families,
                    connection = ?direction.map(Direction::as_str),
                    "BGP session established"
                );
                self.rib_out.clear();
                self.status.update(|s| {
                    s.established_since = Some(SystemTime::now());
                    s.families = negotiated.families.clone();
                    s.connection = direction;
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
                    events.push_back((Slot::Primary, Event::TcpClosed));
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
                    s.connection = None;
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
        events: &mut Events,
    ) {
        let Some(negotiated) = self.primary.session.negotiated().cloned() else {
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
            events.push_back((Slot::Primary, Event::TcpClosed));
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

    /// Sends on the primary connection.
    async fn send(&mut self, msg: &Message) -> io::Result<()> {
        self.send_on(Slot::Primary, msg).await
    }

    async fn send_on(&mut self, slot: Slot, msg: &Message) -> io::Result<()> {
        let Some(link) = self.link(slot) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no BGP connection",
            ));
        };
        let codec = link.codec();
        let Some(conn) = link.conn.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no BGP connection",
            ));
        };
        write_message(&mut conn.stream, msg, codec).await
    }

    fn publish_state(&self) {
        let state = self.primary.session.state();
        let last_error = self.primary.session.last_error().map(str::to_string);
        let current = self.status.get();
        if current.state != state || (last_error.is_some() && current.last_error != last_error) {
            self.status.update(|s| {
                if s.state != state {
                    s.state_since = SystemTime::now();
                }
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
