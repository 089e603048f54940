//! Reading kernel state over rtnetlink into plain data, and the few raw requests rtnetlink's
//! builders do not cover (FDB append/delete with a VTEP destination).

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use hybridnet_api::ipmath::{Cidr, ip_to_u128};
use hybridnet_api::v1::IpVersion;
use rtnetlink::Handle;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::plan::{HostAddress, HostInterface, MacAddr};

/// Errors of the apply layer; each names the object it was about.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {message}")]
    Other { what: String, message: String },
}

impl KernelError {
    pub fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink {
            what: what.into(),
            source,
        }
    }

    pub fn other(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Other {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// The errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

pub const EEXIST: i32 = 17;
pub const ENOENT: i32 = 2;
pub const ESRCH: i32 = 3;

/// A link as the apply layer needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLink {
    pub iface: HostInterface,
    pub kind: Option<String>,
    /// VXLAN attributes when `kind == "vxlan"`.
    pub vxlan: Option<VxlanAttrs>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: Option<u32>,
    pub parent: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
}

fn link_of(msg: &LinkMessage) -> KernelLink {
    let mut name = String::new();
    let mut mac = None;
    let mut mtu = 0;
    let mut kind = None;
    let mut vxlan = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                mac = Some(MacAddr(m));
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut x = VxlanAttrs::default();
                            for e in v {
                                match e {
                                    InfoVxlan::Id(id) => x.vni = Some(*id),
                                    InfoVxlan::Link(l) => x.parent = Some(*l),
                                    InfoVxlan::Local(ip) => x.local = Some(IpAddr::V4(*ip)),
                                    InfoVxlan::Local6(ip) => x.local = Some(IpAddr::V6(*ip)),
                                    InfoVxlan::Port(p) => x.port = Some(*p),
                                    InfoVxlan::Learning(l) => x.learning = Some(*l),
                                    _ => {}
                                }
                            }
                            vxlan = Some(x);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    KernelLink {
        iface: HostInterface {
            name,
            index: msg.header.index,
            mac,
            mtu,
            up: msg.header.flags.contains(LinkFlags::Up),
            addresses: Vec::new(),
        },
        kind,
        vxlan,
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Dummy => "dummy".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// All links with their addresses.
pub async fn links(h: &Handle) -> Result<Vec<KernelLink>, KernelError> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("dump links", e))?;
    let mut out: Vec<KernelLink> = msgs.iter().map(link_of).collect();
    let addrs = h
        .address()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| KernelError::netlink("dump addresses", e))?;
    let mut by_index: BTreeMap<u32, Vec<HostAddress>> = BTreeMap::new();
    for m in addrs {
        let mut ip = None;
        let mut flags = AddressFlags::empty();
        for a in &m.attributes {
            match a {
                // IFA_LOCAL is the address itself on point-to-point links; prefer it.
                AddressAttribute::Local(l) => ip = Some(*l),
                AddressAttribute::Address(l) if ip.is_none() => ip = Some(*l),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        if let Some(ip) = ip {
            by_index
                .entry(m.header.index)
                .or_default()
                .push(HostAddress {
                    ip,
                    prefix: m.header.prefix_len,
                    noprefixroute: flags.contains(AddressFlags::Noprefixroute),
                });
        }
    }
    for l in &mut out {
        l.iface.addresses = by_index.remove(&l.iface.index).unwrap_or_default();
    }
    Ok(out)
}

/// A route read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    pub table: u32,
    pub dst: Cidr,
    pub kind: RouteType,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
    pub scope: RouteScope,
    pub priority: Option<u32>,
    pub msg: RouteMessage,
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// All routes of one family, every table (a non-strict dump returns all tables).
pub async fn routes(h: &Handle, family: IpVersion) -> Result<Vec<KernelRoute>, KernelError> {
    let msg = match family {
        IpVersion::V4 => rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        IpVersion::V6 => rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    };
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink(format!("dump IPv{family} routes"), e))?;
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let mut table = u32::from(m.header.table);
        let mut dst = None;
        let mut oif = None;
        let mut gateway = None;
        let mut prefsrc = None;
        let mut priority = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(d) => dst = route_addr(d),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => gateway = route_addr(g),
                RouteAttribute::PrefSource(s) => prefsrc = route_addr(s),
                RouteAttribute::Priority(p) => priority = Some(*p),
                _ => {}
            }
        }
        let network = dst.map(ip_to_u128).unwrap_or(0);
        out.push(KernelRoute {
            table,
            dst: Cidr {
                version: family,
                network,
                prefix: m.header.destination_prefix_length,
            },
            kind: m.header.kind,
            oif,
            gateway,
            prefsrc,
            scope: m.header.scope,
            priority,
            msg: m,
        });
    }
    Ok(out)
}

/// A policy rule read from the kernel.
#[derive(Clone, Debug)]
pub struct KernelRule {
    pub family: IpVersion,
    pub priority: u32,
    pub table: u32,
    pub src: Option<Cidr>,
    pub fwmark: Option<u32>,
    pub fwmask: Option<u32>,
    pub action: RuleAction,
    /// Any selector the plan never uses (iif, oif, dst, tos, ...): such a rule is not hybridnet's.
    pub other_selectors: bool,
    pub msg: RuleMessage,
}

pub async fn rules(h: &Handle, family: IpVersion) -> Result<Vec<KernelRule>, KernelError> {
    let v = match family {
        IpVersion::V4 => rtnetlink::IpVersion::V4,
        IpVersion::V6 => rtnetlink::IpVersion::V6,
    };
    let msgs: Vec<RuleMessage> = h
        .rule()
        .get(v)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink(format!("dump IPv{family} rules"), e))?;
    Ok(msgs
        .into_iter()
        .map(|m| {
            let mut r = KernelRule {
                family,
                priority: 0,
                table: u32::from(m.header.table),
                src: None,
                fwmark: None,
                fwmask: None,
                action: m.header.action,
                other_selectors: m.header.dst_len != 0 || m.header.tos != 0,
                msg: m.clone(),
            };
            for a in &m.attributes {
                match a {
                    RuleAttribute::Priority(p) => r.priority = *p,
                    RuleAttribute::Table(t) => r.table = *t,
                    RuleAttribute::Source(s) => {
                        r.src = Some(Cidr {
                            version: family,
                            network: ip_to_u128(*s),
                            prefix: m.header.src_len,
                        })
                    }
                    RuleAttribute::FwMark(x) => r.fwmark = Some(*x),
                    RuleAttribute::FwMask(x) => r.fwmask = Some(*x),
                    RuleAttribute::Iifname(_)
                    | RuleAttribute::Oifname(_)
                    | RuleAttribute::Destination(_)
                    | RuleAttribute::Goto(_) => r.other_selectors = true,
                    _ => {}
                }
            }
            r
        })
        .collect())
}

/// A neighbour or FDB entry read from the kernel.
#[derive(Clone, Debug)]
pub struct KernelNeighbour {
    pub ifindex: u32,
    pub ip: Option<IpAddr>,
    pub lladdr: Option<MacAddr>,
    pub state: NeighbourState,
    pub flags: NeighbourFlags,
}

/// The facts of a neighbour or FDB message (dump entry or notification).
pub fn parse_neighbour(m: &NeighbourMessage) -> KernelNeighbour {
    let mut ip = None;
    let mut lladdr = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            // AF_BRIDGE (FDB) messages carry the VTEP destination as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                ip = match b.len() {
                    4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                let mut x = [0u8; 6];
                x.copy_from_slice(b);
                lladdr = Some(MacAddr(x));
            }
            _ => {}
        }
    }
    KernelNeighbour {
        ifindex: m.header.ifindex,
        ip,
        lladdr,
        state: m.header.state,
        flags: m.header.flags,
    }
}

/// Neighbour entries (`proxy` selects the proxy table) of both IP families.
pub async fn neighbours(h: &Handle, proxy: bool) -> Result<Vec<KernelNeighbour>, KernelError> {
    let mut out = Vec::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = h.neighbours().get().set_address_family(fam);
        if proxy {
            req = req.proxies();
        }
        let msgs: Vec<NeighbourMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(|e| KernelError::netlink("dump neighbours", e))?;
        out.extend(msgs.iter().map(parse_neighbour));
    }
    if proxy {
        out.retain(|n| n.flags.contains(NeighbourFlags::Proxy));
    } else {
        out.retain(|n| !n.flags.contains(NeighbourFlags::Proxy));
    }
    Ok(out)
}

/// Bridge FDB entries of one device (VXLAN: `lladdr` + `ip` = VTEP destination).
pub async fn fdb(h: &Handle, ifindex: u32) -> Result<Vec<KernelNeighbour>, KernelError> {
    let msgs: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("dump FDB", e))?;
    Ok(msgs
        .iter()
        .map(parse_neighbour)
        .filter(|n| n.ifindex == ifindex)
        .collect())
}

async fn request_ack(
    h: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    let mut h = h.clone();
    let mut resp = h.request(req)?;
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

fn fdb_message(ifindex: u32, mac: MacAddr, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    m
}

/// `bridge fdb append <mac> dev <vx> dst <ip> self permanent` (append: one MAC may have several
/// destinations, e.g. the broadcast MAC replicated to every VTEP).
pub async fn fdb_append(
    h: &Handle,
    ifindex: u32,
    mac: MacAddr,
    dst: IpAddr,
) -> Result<(), rtnetlink::Error> {
    request_ack(
        h,
        RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, mac, dst)),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
    )
    .await
}

/// `bridge fdb del <mac> dev <vx> dst <ip> self`.
pub async fn fdb_del(
    h: &Handle,
    ifindex: u32,
    mac: MacAddr,
    dst: IpAddr,
) -> Result<(), rtnetlink::Error> {
    request_ack(
        h,
        RouteNetlinkMessage::DelNeighbour(fdb_message(ifindex, mac, dst)),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .await
}

/// `ip neigh replace <ip> lladdr <mac> dev <ifindex> nud permanent`.
pub fn neighbour_replace_message(ifindex: u32, ip: IpAddr, mac: MacAddr) -> NeighbourMessage {
    let mut m = neighbour_key_message(ifindex, ip);
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m
}

/// The message that names neighbour entry `ip` on `ifindex` (`ip neigh del <ip> dev <ifindex>`).
pub fn neighbour_key_message(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = ifindex;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m
}

/// One request of a batch: the message and its netlink flags (`NLM_F_REQUEST | NLM_F_ACK` are
/// always added).
pub struct BatchRequest {
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
}

impl BatchRequest {
    pub fn neighbour_replace(ifindex: u32, ip: IpAddr, mac: MacAddr) -> Self {
        Self {
            msg: RouteNetlinkMessage::NewNeighbour(neighbour_replace_message(ifindex, ip, mac)),
            flags: NLM_F_CREATE | NLM_F_REPLACE,
        }
    }

    pub fn neighbour_del(ifindex: u32, ip: IpAddr) -> Self {
        Self {
            msg: RouteNetlinkMessage::DelNeighbour(neighbour_key_message(ifindex, ip)),
            flags: 0,
        }
    }

    pub fn fdb_append(ifindex: u32, mac: MacAddr, dst: IpAddr) -> Self {
        Self {
            msg: RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, mac, dst)),
            flags: NLM_F_CREATE | NLM_F_APPEND,
        }
    }

    pub fn fdb_del(ifindex: u32, mac: MacAddr, dst: IpAddr) -> Self {
        Self {
            msg: RouteNetlinkMessage::DelNeighbour(fdb_message(ifindex, mac, dst)),
            flags: 0,
        }
    }
}

/// Requests per datagram. Every request is acknowledged; the kernel queues the acknowledgements
/// of one datagram before they are read, so a datagram must stay well inside the socket's
/// receive buffer (an acknowledgement costs about 1 KiB of it; the default buffer is 208 KiB).
const BATCH: usize = 128;

/// A second rtnetlink connection that sends requests in batches: up to [`BATCH`] requests in one
/// datagram, then their acknowledgements, instead of one round trip per request. Opened in the
/// network namespace of the calling thread.
pub struct Batcher {
    handle: rtnetlink::proto::ConnectionHandle<RouteNetlinkMessage>,
}

impl Batcher {
    /// Opens the connection and spawns its task on the current tokio runtime.
    pub fn open() -> Result<Self, KernelError> {
        let (mut conn, handle, _unsolicited) = rtnetlink::proto::new_connection::<
            RouteNetlinkMessage,
        >(rtnetlink::sys::protocols::NETLINK_ROUTE)
        .map_err(|e| {
            KernelError::other("open a netlink socket for batched requests", e.to_string())
        })?;
        // Acknowledgements are what tell which request of a batch succeeded.
        conn.set_forward_ack(true);
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Runs `reqs`; one result per request, in order. A request whose acknowledgement never came
    /// (the connection failed) is an error.
    pub async fn run(&self, reqs: Vec<BatchRequest>) -> Vec<Result<(), rtnetlink::Error>> {
        use futures::StreamExt;
        let mut out = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let chunk: Vec<NetlinkMessage<RouteNetlinkMessage>> = reqs
                .by_ref()
                .take(BATCH)
                .map(|r| {
                    let mut m = NetlinkMessage::from(r.msg);
                    m.header.flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
                    m
                })
                .collect();
            let n = chunk.len();
            let mut acks: Vec<(u32, Result<(), rtnetlink::Error>)> = Vec::with_capacity(n);
            match self
                .handle
                .request_batch(chunk, rtnetlink::sys::SocketAddr::new(0, 0))
            {
                Ok(mut resp) => {
                    while let Some(m) = resp.next().await {
                        if let NetlinkPayload::Error(e) = m.payload {
                            let seq = m.header.sequence_number;
                            acks.push((
                                seq,
                                match e.code {
                                    None => Ok(()),
                                    Some(_) => Err(rtnetlink::Error::NetlinkError(e)),
                                },
                            ));
                        }
                    }
                }
                Err(_) => acks.clear(),
            }
            if acks.len() == n {
                // Sequence numbers of one batch are consecutive: order the answers by them.
                acks.sort_by_key(|(seq, _)| *seq);
                out.extend(acks.into_iter().map(|(_, r)| r));
            } else {
                // Not every request was answered: none of them counts as applied (the caller's
                // next diff retries them; replace and delete are idempotent).
                out.extend((0..n).map(|_| Err(rtnetlink::Error::RequestFailed)));
            }
        }
        out
    }
}
