//! The RFC 4271 session state machine (section 8) as a pure function of events and time.
//!
//! [`Session::handle`] takes an [`Event`] and the current instant and returns [`Action`]s for the
//! driver to carry out (open a connection, send a message, close). Timers are deadlines compared
//! against the instant passed in, so tests drive it with a fake clock and the driver sleeps until
//! [`Session::next_deadline`].
//!
//! Design choices (and limits):
//! - One machine per connection. The peer's driver keeps a primary machine (connects out unless
//!   `passive`) and, while a connection collision is possible, a second one for an inbound
//!   connection ([`Session::accepting`]); [`collision`] decides which survives (RFC 4271
//!   section 6.8), and the loser gets Cease / Connection Collision Resolution.
//! - An inbound connection is [`Event::TcpConnectionConfirmed`] (RFC 4271 event 17): in
//!   `Connect` or `Active` (and, unlike RFC 4271, in the hold-down `Idle` of a started machine)
//!   the machine sends its OPEN and goes to `OpenSent`; otherwise it is not adopted (the
//!   driver refuses it, or runs it on a second machine).
//! - Connect retry uses exponential backoff from `retry_initial` up to `retry_max`, reset when a
//!   session reaches Established. After an error the machine waits in `Idle` (RFC 4271's
//!   automatic start with IdleHoldTimer); after a failed TCP connect it waits in `Active`.
//! - Hold time: the smaller of ours and the peer's; 0 means no hold and no keepalive timer.
//!   Keepalives every hold/3 seconds. While waiting for the peer's OPEN the hold timer is
//!   `open_hold_time` (RFC 4271 suggests 4 minutes).
//! - Graceful restart (RFC 4724): advertised when configured, with the R bit on the first
//!   session of this machine (we may have just restarted) and the F bit for both families (the
//!   kernel keeps forwarding while the speaker restarts). We never retain learned routes, so the
//!   helper side needs nothing.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::{
    AfiSafi, Capability, Codec, DecodeError, Family, GracefulRestart, GracefulRestartFamily,
    Message, Notification, Open, Update, notif,
};

/// RFC 4271 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the state machine needs to know about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Our proposed hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    /// Hold time while waiting for the peer's OPEN.
    pub open_hold_time: Duration,
    /// How long one TCP connect attempt may take.
    pub connect_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Restart time to advertise in the graceful restart capability; `None`: no capability.
    pub graceful_restart_time: Option<u16>,
    /// Never connect out; only wait in `Active` for the peer's connection.
    pub passive: bool,
}

impl SessionConfig {
    /// Defaults: hold time 90 s, connect timeout 5 s, retry backoff 1 s doubling up to 30 s.
    pub fn new(local_asn: u32, router_id: Ipv4Addr, peer_asn: u32) -> Self {
        SessionConfig {
            local_asn,
            router_id,
            peer_asn,
            hold_time: 90,
            open_hold_time: Duration::from_secs(240),
            connect_timeout: Duration::from_secs(5),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            graceful_restart_time: None,
            passive: false,
        }
    }
}

/// What the session agreed on in the OPEN exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Negotiated hold time in seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub codec: Codec,
    /// Families both sides support (IPv4 unicast only when the peer sends no multiprotocol
    /// capability).
    pub families: Vec<Family>,
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

impl Negotiated {
    pub fn supports(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start (or keep) trying to establish the session.
    Start,
    /// Stop the session; when connected, a Cease NOTIFICATION with this subcode is sent.
    Stop { cease_subcode: u8 },
    /// Our outbound connection is up (RFC 4271 event 16/17 for the connection we initiated).
    TcpConnected,
    /// An inbound connection from the peer was accepted for this machine (RFC 4271 event 17).
    TcpConnectionConfirmed,
    /// The connect attempt failed.
    TcpConnectFailed,
    /// The connection closed or failed after being up.
    TcpClosed,
    /// A complete message arrived.
    Message(Message),
    /// Malformed input arrived.
    DecodeError(DecodeError),
    /// Time passed; expired timers fire.
    Tick,
}

/// Outputs the driver carries out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a new outbound connection (any previous attempt has been closed).
    Connect,
    Send(Message),
    /// Close the connection after writing what was sent before.
    CloseConnection,
    /// The session reached Established: send the Adj-RIB-Out, then End-of-RIB.
    Established(Negotiated),
    /// The session left Established.
    SessionDown {
        reason: String,
    },
    /// The peer sent an UPDATE in Established (parsed; learned routes are never installed).
    UpdateReceived(Update),
}

/// One BGP session's state machine.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    state: State,
    stopped: bool,
    /// When to (re)try connecting (Idle/Active), or when the attempt times out (Connect).
    retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    backoff: Duration,
    negotiated: Option<Negotiated>,
    established_once: bool,
    last_error: Option<String>,
}

impl Session {
    /// A session in Idle; nothing happens until [`Event::Start`].
    pub fn new(config: SessionConfig) -> Self {
        let backoff = config.retry_initial;
        Session {
            config,
            state: State::Idle,
            stopped: true,
            retry_at: None,
            hold_at: None,
            keepalive_at: None,
            backoff,
            negotiated: None,
            established_once: false,
            last_error: None,
        }
    }

    /// A second machine for an inbound connection that arrived while this one is busy
    /// (connecting out, or in the OPEN exchange): same configuration, never connects out by
    /// itself while waiting, and the same graceful-restart R bit as this machine would send.
    /// Feed it [`Event::TcpConnectionConfirmed`].
    pub fn accepting(&self) -> Session {
        let mut s = Session::new(self.config.clone());
        s.stopped = false;
        s.state = State::Active;
        s.established_once = self.established_once;
        s
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Stopped (never started, or [`Event::Stop`]): refuses connections, never connects.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// What the current session negotiated (Some in OpenConfirm and Established).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The last reason the session failed or went down.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The earliest instant at which [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The OPEN this session sends.
    pub fn local_open(&self) -> Open {
        let c = &self.config;
        let mut caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAs(c.local_asn),
        ];
        if let Some(restart_time) = c.graceful_restart_time {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: !self.established_once,
                notification: false,
                restart_time: restart_time.min(0x0fff),
                families: Family::ALL
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        afi_safi: f.afi_safi(),
                        forwarding_preserved: true,
                    })
                    .collect(),
            }));
        }
        Open::new(c.local_asn, c.hold_time, c.router_id, caps)
    }

    /// Feeds one event; returns the actions to carry out in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                self.stopped = false;
                if self.state == State::Idle {
                    if self.config.passive {
                        self.state = State::Active;
                        self.retry_at = None;
                    } else {
                        self.connect(now, &mut out);
                    }
                }
            }
            Event::Stop { cease_subcode } => {
                self.stopped = true;
                if self.is_connected() {
                    out.push(Action::Send(Message::Notification(Notification::cease(
                        cease_subcode,
                    ))));
                }
                if self.state != State::Idle {
                    self.reset("stopped", &mut out);
                }
                self.retry_at = None;
            }
            Event::TcpConnected => match self.state {
                State::Connect | State::Active => {
                    out.push(Action::Send(Message::Open(self.local_open())));
                    self.state = State::OpenSent;
                    self.retry_at = None;
                    self.hold_at = Some(now + self.config.open_hold_time);
                }
                // A connection we no longer want (stopped, or one already up).
                _ => out.push(Action::CloseConnection),
            },
            // RFC 4271 8.2.2: Connect and Active adopt the peer's connection. (The driver does
            // not feed it in Connect, see [`collision`]: it runs a second machine instead, so a
            // simultaneous open does not abort both attempts.) Unlike RFC 4271, Idle during the
            // hold-down after an error accepts it too: a ToR that connects actively would
            // otherwise meet a closed connection and wait its own (long) retry time.
            Event::TcpConnectionConfirmed => {
                if matches!(self.state, State::Idle | State::Connect | State::Active)
                    && !self.stopped
                {
                    out.push(Action::Send(Message::Open(self.local_open())));
                    self.state = State::OpenSent;
                    self.retry_at = None;
                    self.hold_at = Some(now + self.config.open_hold_time);
                }
            }
            Event::TcpConnectFailed => {
                if self.state == State::Connect {
                    self.last_error = Some("TCP connect failed".into());
                    self.state = State::Active;
                    self.schedule_retry(now);
                }
            }
            Event::TcpClosed => match self.state {
                State::Idle | State::Active => {}
                State::Connect | State::OpenSent => {
                    self.fail_to(State::Active, "connection closed", now, &mut out)
                }
                State::OpenConfirm | State::Established => {
                    self.fail_to(State::Idle, "connection closed", now, &mut out)
                }
            },
            Event::Message(msg) => self.on_message(msg, now, &mut out),
            Event::DecodeError(err) => {
                if self.is_connected() {
                    out.push(Action::Send(Message::Notification(err.notification())));
                    let reason = format!("malformed message from peer: {err}");
                    self.fail_to(State::Idle, &reason, now, &mut out);
                }
            }
            Event::Tick => self.on_tick(now, &mut out),
        }
        out
    }

    fn is_connected(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    fn connect(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.state = State::Connect;
        self.retry_at = Some(now + self.config.connect_timeout);
        out.push(Action::Connect);
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.retry_at = if self.stopped {
            None
        } else {
            Some(now + self.backoff)
        };
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
    }

    /// Drops the connection and timers; reports SessionDown when leaving Established.
    fn reset(&mut self, reason: &str, out: &mut Vec<Action>) {
        if self.state != State::Idle && self.state != State::Active {
            out.push(Action::CloseConnection);
        }
        if self.state == State::Established {
            out.push(Action::SessionDown {
                reason: reason.to_string(),
            });
        }
        self.state = State::Idle;
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
    }

    fn fail_to(&mut self, next: State, reason: &str, now: Instant, out: &mut Vec<Action>) {
        self.last_error = Some(reason.to_string());
        self.reset(reason, out);
        self.state = next;
        self.schedule_retry(now);
    }

    fn send_error(&mut self, n: Notification, now: Instant, out: &mut Vec<Action>) {
        let reason = format!("sent NOTIFICATION {n}");
        out.push(Action::Send(Message::Notification(n)));
        self.fail_to(State::Idle, &reason, now, out);
    }

    fn restart_hold(&mut self, now: Instant) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            self.hold_at = Some(now + Duration::from_secs(u64::from(n.hold_time)));
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.hold_at.is_some_and(|t| t <= now) {
            self.send_error(
                Notification::new(notif::HOLD_TIMER_EXPIRED, 0, Vec::new()),
                now,
                out,
            );
            return;
        }
        if let Some(t) = self.keepalive_at
            && t <= now
        {
            out.push(Action::Send(Message::Keepalive));
            let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
            self.keepalive_at = Some(now + keepalive_interval(hold));
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            match self.state {
                State::Idle | State::Active if !self.stopped && self.config.passive => {
                    // Passive: the hold-down is over; wait for the peer to connect.
                    self.state = State::Active;
                    self.retry_at = None;
                }
                State::Idle | State::Active if !self.stopped => self.connect(now, out),
                State::Connect => {
                    // The attempt took too long: abandon it and back off.
                    out.push(Action::CloseConnection);
                    self.last_error = Some("TCP connect timed out".into());
                    self.state = State::Active;
                    self.schedule_retry(now);
                }
                _ => self.retry_at = None,
            }
        }
    }

    fn on_message(&mut self, msg: Message, now: Instant, out: &mut Vec<Action>) {
        if !self.is_connected() {
            return;
        }
        if let Message::Notification(n) = &msg {
            let reason = format!("peer sent NOTIFICATION {n}");
            self.fail_to(State::Idle, &reason, now, out);
            return;
        }
        match (self.state, msg) {
            (State::OpenSent, Message::Open(open)) => match self.check_open(&open) {
                Ok(negotiated) => {
                    out.push(Action::Send(Message::Keepalive));
                    self.hold_at = None;
                    self.keepalive_at = None;
                    if negotiated.hold_time > 0 {
                        self.keepalive_at = Some(now + keepalive_interval(negotiated.hold_time));
                    }
                    self.negotiated = Some(negotiated);
                    self.restart_hold(now);
                    self.state = State::OpenConfirm;
                }
                Err(err) => self.send_error(err.notification(), now, out),
            },
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.established_once = true;
                self.backoff = self.config.retry_initial;
                self.last_error = None;
                self.restart_hold(now);
                if let Some(n) = &self.negotiated {
                    out.push(Action::Established(n.clone()));
                }
            }
            (State::Established, Message::Keepalive | Message::RouteRefresh(_)) => {
                self.restart_hold(now);
            }
            (State::Established, Message::Update(update)) => {
                self.restart_hold(now);
                out.push(Action::UpdateReceived(update));
            }
            (state, _) => {
                let subcode = match state {
                    State::OpenSent => notif::FSM_UNEXPECTED_IN_OPENSENT,
                    State::OpenConfirm => notif::FSM_UNEXPECTED_IN_OPENCONFIRM,
                    _ => notif::FSM_UNEXPECTED_IN_ESTABLISHED,
                };
                self.send_error(
                    Notification::new(notif::FSM_ERROR, subcode, Vec::new()),
                    now,
                    out,
                );
            }
        }
    }

    /// Checks the peer's OPEN against the configuration and negotiates.
    fn check_open(&self, open: &Open) -> Result<Negotiated, DecodeError> {
        let c = &self.config;
        let peer_asn = open.asn();
        if peer_asn != c.peer_asn {
            return Err(DecodeError::BadPeerAs { asn: peer_asn });
        }
        // Identifiers must differ inside one AS (RFC 6286 section 2.1).
        if peer_asn == c.local_asn && open.bgp_id == c.router_id {
            return Err(DecodeError::BadBgpIdentifier { id: open.bgp_id });
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime {
                hold_time: open.hold_time,
            });
        }
        let peer_families = open.families();
        let families = Family::ALL
            .into_iter()
            .filter(|f| peer_families.contains(&f.afi_safi()))
            .collect();
        Ok(Negotiated {
            hold_time: c.hold_time.min(open.hold_time),
            codec: Codec {
                four_octet_as: open.four_octet_as(),
            },
            families,
            peer_asn,
            peer_id: open.bgp_id,
            peer_graceful_restart: open.graceful_restart().cloned(),
        })
    }
}

fn keepalive_interval(hold_time: u16) -> Duration {
    Duration::from_secs(u64::from((hold_time / 3).max(1)))
}

pub mod collision;
pub mod driver;

#[cfg(test)]
mod tests;
