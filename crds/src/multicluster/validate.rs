//! Admission rules of the multi-cluster kinds (upstream `pkg/webhook/validating/remotecluster.go`,
//! `remotesubnet.go`, and the multi-cluster parts of `network.go` and `subnet.go`), as pure
//! functions over the object and plain lists of existing ones. Ranges are compared as intervals
//! ([`ParsedRange::intersects`]), not by enumerating addresses as upstream does. Every error names
//! the field and the value. Differences from upstream: docs/multicluster.md.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use hybridnet_rules::shown;

use super::credentials::{CERT_MARKER, KEY_MARKER, is_pem};
use super::{RemoteCluster, RemoteClusterSpec, RemoteSubnet, RemoteVtepSpec};
use crate::error::{FieldError, FieldErrors};
use crate::mac::MacAddr;
use crate::names;
use crate::range::{ParsedRange, parse_range_shape};
use crate::v1::{Network, NetworkType, Subnet};

/// Longest `spec.apiEndpoint` accepted (a URL of scheme, host and port needs far less).
pub const MAX_ENDPOINT_LEN: usize = 512;

fn name_of<K: kube::Resource>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or("")
}

/// The host of an API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointHost {
    /// A DNS name, lower-cased.
    Name(String),
    Ip(IpAddr),
}

/// A parsed `spec.apiEndpoint`: `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiEndpoint {
    pub host: EndpointHost,
    pub port: u16,
}

impl fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            EndpointHost::Name(n) => write!(f, "https://{n}:{}", self.port),
            EndpointHost::Ip(IpAddr::V4(ip)) => write!(f, "https://{ip}:{}", self.port),
            EndpointHost::Ip(IpAddr::V6(ip)) => write!(f, "https://[{ip}]:{}", self.port),
        }
    }
}

fn dns_name(host: &str) -> bool {
    // Upstream's pattern allows `\w` (letters, digits, `_`) and `-` in each dot-separated part.
    host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses an API endpoint. Upstream accepts `^(https?://)[\w-]+(\.[\w-]+)+:\d{1,5}$`; here the
/// scheme must be `https` (a client certificate or token must not travel in clear text), the host
/// may also be a single label (`localhost`, a Service name) or a bracketed IPv6 address, and the
/// port must be 1..65535. No user, path, query or fragment, as upstream.
pub fn parse_api_endpoint(s: &str) -> Result<ApiEndpoint, String> {
    if s.is_empty() {
        return Err("must not be empty: the remote API server, e.g. https://10.0.0.1:6443".into());
    }
    if s.len() > MAX_ENDPOINT_LEN {
        return Err(format!(
            "{} is {} bytes long, more than {MAX_ENDPOINT_LEN}",
            shown(s),
            s.len()
        ));
    }
    let rest = if let Some(r) = s.strip_prefix("https://") {
        r
    } else if s.starts_with("http://") {
        return Err(format!(
            "{}: plain http would send the credentials unencrypted; use https",
            shown(s)
        ));
    } else {
        return Err(format!(
            "{} is not an https:// URL (format: https://host:port)",
            shown(s)
        ));
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (v6, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{}: unclosed [ in the IPv6 host", shown(s)))?;
        let ip: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("{}: {} is not an IPv6 address", shown(s), shown(v6)))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{} has no port (format: https://[address]:port)", shown(s)))?;
        (EndpointHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{} has no port (format: https://host:port)", shown(s)))?;
        let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            EndpointHost::Ip(IpAddr::V4(ip))
        } else if dns_name(host) {
            EndpointHost::Name(host.to_ascii_lowercase())
        } else {
            return Err(format!(
                "{}: host {} is not a DNS name or an IP address (no user, path or query either)",
                shown(s),
                shown(host)
            ));
        };
        (host, port)
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{}: port {} is not a number (format: https://host:port, no path)",
            shown(s),
            shown(port)
        ));
    }
    let port: u32 = port
        .parse()
        .map_err(|_| format!("{}: bad port", shown(s)))?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{}: port {port} is outside 1..65535", shown(s)))?;
    Ok(ApiEndpoint { host, port })
}

/// Rules that need only the RemoteCluster itself: the endpoint, the credentials (inline as
/// upstream, all three of `caData`, `certData`, `keyData`, or `credentialsSecretRef`, not both)
/// and the timeout.
pub fn remote_cluster_spec(spec: &RemoteClusterSpec) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    if let Err(e) = parse_api_endpoint(&spec.api_endpoint) {
        errs.push(FieldError::new("spec.apiEndpoint", e));
    }
    let inline = [
        ("spec.caData", &spec.ca_data, CERT_MARKER),
        ("spec.certData", &spec.cert_data, CERT_MARKER),
        ("spec.keyData", &spec.key_data, KEY_MARKER),
    ];
    let given: Vec<&str> = inline
        .iter()
        .filter(|(_, v, _)| v.as_ref().is_some_and(|b| !b.0.is_empty()))
        .map(|(f, _, _)| *f)
        .collect();
    match &spec.credentials_secret_ref {
        Some(r) => {
            if !given.is_empty() {
                errs.push(FieldError::new(
                    "spec.credentialsSecretRef",
                    format!(
                        "credentials come either from the Secret or from {given:?}, not both; remove one"
                    ),
                ));
            }
            if let Err(e) = names::dns_label(&r.namespace) {
                errs.push(FieldError::new("spec.credentialsSecretRef.namespace", e));
            }
            if let Err(e) = names::dns_subdomain(&r.name) {
                errs.push(FieldError::new("spec.credentialsSecretRef.name", e));
            }
        }
        None => {
            for (field, value, marker) in inline {
                match value {
                    Some(b) if !b.0.is_empty() => {
                        if !is_pem(&b.0, marker) {
                            errs.push(FieldError::new(
                                field,
                                format!("is not PEM data (no {marker:?} line)"),
                            ));
                        }
                    }
                    _ => errs.push(FieldError::new(
                        field,
                        "must not be empty: give caData, certData and keyData, or credentialsSecretRef",
                    )),
                }
            }
        }
    }
    if let Some(t) = spec.timeout
        && t < 0
    {
        errs.push(FieldError::new(
            "spec.timeout",
            format!("{t} is negative (seconds; 0 means no limit)"),
        ));
    }
    errs.into_result()
}

/// RemoteCluster CREATE: the spec rules; the name is a DNS-1123 label (it prefixes the mirrors'
/// names `<cluster>.<subnet>`, which upstream splits at the first dot); no other RemoteCluster
/// has the same endpoint (one RemoteCluster per remote cluster; the remote cluster's UID is
/// compared once connected, [`claim_uuid`]).
pub fn remote_cluster_create(
    rc: &RemoteCluster,
    existing: &[RemoteCluster],
) -> Result<(), FieldErrors> {
    let mut errs = match remote_cluster_spec(&rc.spec) {
        Ok(()) => FieldErrors::default(),
        Err(e) => e,
    };
    if let Err(e) = names::dns_label(name_of(rc)) {
        errs.push(FieldError::new(
            "metadata.name",
            format!("{e}: it prefixes the names of the cluster's mirrors, <cluster>.<subnet>"),
        ));
    }
    same_endpoint(rc, existing, &mut errs);
    same_uuid(rc, existing, &mut errs);
    errs.into_result()
}

/// RemoteCluster UPDATE: the spec rules when the spec changed (an object written before a rule
/// existed can still lose its finalizer or be relabelled), and no duplicate endpoint or UID.
pub fn remote_cluster_update(
    old: &RemoteCluster,
    new: &RemoteCluster,
    existing: &[RemoteCluster],
) -> Result<(), FieldErrors> {
    if new.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut errs = FieldErrors::default();
    if old.spec != new.spec {
        if let Err(e) = remote_cluster_spec(&new.spec) {
            errs.0.extend(e.0);
        }
        if old.spec.api_endpoint != new.spec.api_endpoint {
            same_endpoint(new, existing, &mut errs);
        }
    }
    same_uuid(new, existing, &mut errs);
    errs.into_result()
}

fn same_endpoint(rc: &RemoteCluster, existing: &[RemoteCluster], errs: &mut FieldErrors) {
    let Ok(mine) = parse_api_endpoint(&rc.spec.api_endpoint) else {
        return;
    };
    let me = name_of(rc);
    if let Some(other) = existing.iter().find(|o| {
        name_of(*o) != me && parse_api_endpoint(&o.spec.api_endpoint).is_ok_and(|e| e == mine)
    }) {
        errs.push(FieldError::new(
            "spec.apiEndpoint",
            format!(
                "{mine} is already the endpoint of RemoteCluster {:?}: one RemoteCluster per remote cluster",
                name_of(other)
            ),
        ));
    }
}

fn same_uuid(rc: &RemoteCluster, existing: &[RemoteCluster], errs: &mut FieldErrors) {
    let (Some(uuid), me) = (rc.remote_uuid(), name_of(rc)) else {
        return;
    };
    if let Some(other) = existing
        .iter()
        .find(|o| name_of(*o) != me && o.remote_uuid() == Some(uuid))
    {
        errs.push(FieldError::new(
            "status.uuid",
            format!(
                "cluster {uuid} is already connected as RemoteCluster {:?}: one RemoteCluster per remote cluster",
                name_of(other)
            ),
        ));
    }
}

/// Why a RemoteCluster may not take a remote cluster's identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UuidClaimError {
    #[error("the endpoint leads to this cluster itself (kube-system UID {0})")]
    Ourselves(String),
    #[error("cluster {uuid} is already connected as RemoteCluster {other:?}")]
    Taken { uuid: String, other: String },
    #[error("the remote cluster has no kube-system UID")]
    Empty,
}

/// Whether RemoteCluster `name` may record `remote_uuid` (the UID of the remote cluster's
/// `kube-system` Namespace) in its status: not our own UID (a RemoteCluster pointing at
/// ourselves), not one another RemoteCluster already recorded (upstream's UUID mutex,
/// pkg/controllers/multicluster/uuid_mutex.go, where the local UID is locked as well).
pub fn claim_uuid(
    name: &str,
    remote_uuid: &str,
    local_uuid: &str,
    existing: &[RemoteCluster],
) -> Result<(), UuidClaimError> {
    if remote_uuid.is_empty() {
        return Err(UuidClaimError::Empty);
    }
    if remote_uuid == local_uuid {
        return Err(UuidClaimError::Ourselves(remote_uuid.to_string()));
    }
    if let Some(other) = existing
        .iter()
        .find(|o| name_of(*o) != name && o.remote_uuid() == Some(remote_uuid))
    {
        return Err(UuidClaimError::Taken {
            uuid: remote_uuid.to_string(),
            other: name_of(other).to_string(),
        });
    }
    Ok(())
}

fn cluster_of(rs: &RemoteSubnet) -> &str {
    rs.spec.cluster_name.as_deref().unwrap_or("")
}

/// RemoteSubnet CREATE (upstream `remotesubnet.go`): the range is well-formed (as a Subnet's,
/// without the capacity limit: another cluster allocates from it) and shares no address with a
/// local Subnet or another RemoteSubnet. UPDATE runs the same when the range changed (upstream
/// allows any update).
pub fn remote_subnet_create(
    rs: &RemoteSubnet,
    subnets: &[Subnet],
    remote_subnets: &[RemoteSubnet],
) -> Result<(), FieldErrors> {
    let parsed = parse_range_shape(&rs.spec.range, "spec.range")?;
    let me = name_of(rs);
    for s in subnets {
        if let Ok(p) = parse_range_shape(&s.spec.range, "spec.range")
            && parsed.intersects(&p)
        {
            return Err(FieldError::new(
                "spec.range",
                format!(
                    "{} overlaps local subnet {:?} ({})",
                    span(&parsed),
                    name_of(s),
                    span(&p)
                ),
            )
            .into());
        }
    }
    for o in remote_subnets.iter().filter(|o| name_of(*o) != me) {
        if let Ok(p) = parse_range_shape(&o.spec.range, "spec.range")
            && parsed.intersects(&p)
        {
            return Err(FieldError::new(
                "spec.range",
                format!(
                    "{} overlaps remote subnet {:?} of cluster {:?} ({})",
                    span(&parsed),
                    name_of(o),
                    cluster_of(o),
                    span(&p)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// RemoteSubnet UPDATE: [`remote_subnet_create`] when the range changed.
pub fn remote_subnet_update(
    old: &RemoteSubnet,
    new: &RemoteSubnet,
    subnets: &[Subnet],
    remote_subnets: &[RemoteSubnet],
) -> Result<(), FieldErrors> {
    if old.spec.range == new.spec.range || new.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    remote_subnet_create(new, subnets, remote_subnets)
}

fn span(p: &ParsedRange) -> String {
    format!("{} {}..{}", p.cidr, p.ip(p.start), p.ip(p.end))
}

/// Subnet CREATE with remote subnets present (upstream `subnet.go`, MultiCluster): the new
/// Subnet's range shares no address with a RemoteSubnet.
pub fn subnet_against_remote(
    parsed: &ParsedRange,
    remote_subnets: &[RemoteSubnet],
) -> Result<(), FieldError> {
    for o in remote_subnets {
        if let Ok(p) = parse_range_shape(&o.spec.range, "spec.range")
            && parsed.intersects(&p)
        {
            return Err(FieldError::new(
                "spec.range",
                format!(
                    "{} overlaps remote subnet {:?} of cluster {:?} ({})",
                    span(parsed),
                    name_of(o),
                    cluster_of(o),
                    span(&p)
                ),
            ));
        }
    }
    Ok(())
}

/// Network DELETE with RemoteClusters present (upstream `network.go`): the overlay network
/// carries the traffic to every remote cluster, so it stays while any RemoteCluster exists.
pub fn network_delete_remote(
    net: &Network,
    remote_clusters: &[RemoteCluster],
) -> Result<(), FieldError> {
    if net.spec.effective_type() != NetworkType::Overlay || remote_clusters.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = remote_clusters.iter().map(name_of).collect();
    names.sort_unstable();
    Err(FieldError::new(
        "metadata.name",
        format!(
            "overlay network {:?} still connects {} remote cluster(s) {names:?}; delete the RemoteClusters first",
            name_of(net),
            names.len()
        ),
    ))
}

/// The addresses of a RemoteVtep, parsed: what a node programs for it (FDB entry `mac dst ip`,
/// neighbour entries of `local_ips` and `endpoint_ips` to `mac`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteVtepAddrs {
    pub ip: IpAddr,
    pub mac: MacAddr,
    /// `spec.localIPs`; upstream (`pkg/daemon/controller/node_ip_cache.go`) uses the VTEP address
    /// when the list is empty, and so does this.
    pub local_ips: Vec<IpAddr>,
    pub endpoint_ips: Vec<IpAddr>,
}

/// A RemoteVtep's addresses (upstream parses them in the node agent, `pkg/daemon/controller/
/// node.go`, and gives up the whole reconcile on one bad object; here only the object is left
/// out). Every field is checked and every error reported: `spec.ip` an address that can be a
/// VTEP (not unspecified, loopback or multicast), `spec.mac` a unicast, non-zero MAC in
/// [`MacAddr::parse`]'s forms, each `spec.localIPs[i]` and `spec.endpointIPList[i]` a bare
/// address (the mirrors write bare addresses, `mirror::desired_remote_vteps`).
pub fn remote_vtep(spec: &RemoteVtepSpec) -> Result<RemoteVtepAddrs, FieldErrors> {
    let mut errs = FieldErrors::default();
    let ip = match spec.ip.as_deref().filter(|s| !s.is_empty()) {
        None => {
            errs.push(FieldError::new("spec.ip", "missing"));
            None
        }
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() => {
                errs.push(FieldError::new(
                    "spec.ip",
                    format!("{ip} cannot be a VTEP address (unspecified, loopback or multicast)"),
                ));
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                errs.push(FieldError::new(
                    "spec.ip",
                    format!("{} is not an IP address", shown(s)),
                ));
                None
            }
        },
    };
    let mac = match spec.mac.as_deref().filter(|s| !s.is_empty()) {
        None => {
            errs.push(FieldError::new("spec.mac", "missing"));
            None
        }
        Some(s) => match MacAddr::parse(s) {
            Ok(m) if !m.is_unicast() || m.is_zero() => {
                errs.push(FieldError::new(
                    "spec.mac",
                    format!("{m} cannot be a VTEP MAC (multicast, broadcast or all-zero)"),
                ));
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                errs.push(FieldError::new("spec.mac", e));
                None
            }
        },
    };
    let mut list = |field: &str, items: Option<&Vec<String>>| -> Vec<IpAddr> {
        let mut out = Vec::new();
        for (i, s) in items.into_iter().flatten().enumerate() {
            match s.parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(_) => errs.push(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("{} is not an IP address", shown(s)),
                )),
            }
        }
        out
    };
    let local_ips = list("spec.localIPs", spec.local_ips.as_ref());
    let endpoint_ips = list("spec.endpointIPList", spec.endpoint_ip_list.as_ref());
    match (ip, mac) {
        (Some(ip), Some(mac)) if errs.is_empty() => Ok(RemoteVtepAddrs {
            ip,
            mac,
            local_ips: if local_ips.is_empty() {
                vec![ip]
            } else {
                local_ips
            },
            endpoint_ips,
        }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicluster::{RemoteClusterStatus, RemoteSubnetSpec, SecretRef};
    use crate::v1::{AddressRange, IpVersion, NetworkSpec, SubnetSpec};
    use k8s_openapi::ByteString;
    use proptest::prelude::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";

    fn rc(name: &str, endpoint: &str) -> RemoteCluster {
        let mut rc = RemoteCluster::new(
            name,
            RemoteClusterSpec {
                api_endpoint: endpoint.into(),
                ca_data: Some(ByteString(CA.into())),
                cert_data: Some(ByteString(CA.into())),
                key_data: Some(ByteString(KEY.into())),
                ..Default::default()
            },
        );
        rc.status = None;
        rc
    }

    fn with_uuid(mut rc: RemoteCluster, uuid: &str) -> RemoteCluster {
        rc.status = Some(RemoteClusterStatus {
            uuid: Some(uuid.into()),
            ..Default::default()
        });
        rc
    }

    fn range(cidr: &str, start: Option<&str>, end: Option<&str>) -> AddressRange {
        AddressRange {
            version: if cidr.contains(':') {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
            cidr: cidr.into(),
            start: start.map(Into::into),
            end: end.map(Into::into),
            ..Default::default()
        }
    }

    fn rsub(name: &str, r: AddressRange) -> RemoteSubnet {
        RemoteSubnet::new(
            name,
            RemoteSubnetSpec {
                range: r,
                network_type: Some(NetworkType::Overlay),
                cluster_name: Some(name.split('.').next().unwrap_or("").into()),
            },
        )
    }

    fn subnet(name: &str, r: AddressRange) -> Subnet {
        Subnet::new(
            name,
            SubnetSpec {
                network: "net".into(),
                range: r,
                ..Default::default()
            },
        )
    }

    #[test]
    fn endpoints_upstream_accepts_are_accepted() {
        for ok in [
            "https://10.0.0.1:6443",
            "https://api.example.com:443",
            "https://api-1.k8s_prod.example:65535",
            "https://localhost:6443",
            "https://[fd00::1]:6443",
            "https://API.Example.COM:6443",
        ] {
            parse_api_endpoint(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            parse_api_endpoint("https://API.Example.com:6443")
                .unwrap()
                .to_string(),
            "https://api.example.com:6443"
        );
        assert_eq!(
            parse_api_endpoint("https://[fd00:0::1]:6443")
                .unwrap()
                .to_string(),
            "https://[fd00::1]:6443"
        );
    }

    #[test]
    fn malformed_and_hostile_endpoints_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "must not be empty"),
            ("10.0.0.1:6443", "not an https:// URL"),
            ("http://10.0.0.1:6443", "unencrypted"),
            ("HTTPS://10.0.0.1:6443", "not an https:// URL"),
            ("https://10.0.0.1", "has no port"),
            ("https://10.0.0.1:", "is not a number"),
            ("https://10.0.0.1:0", "outside 1..65535"),
            ("https://10.0.0.1:65536", "outside 1..65535"),
            ("https://10.0.0.1:123456", "is not a number"),
            ("https://10.0.0.1:6443/", "is not a number"),
            ("https://10.0.0.1:6443/api", "is not a number"),
            ("https://10.0.0.1:6443?x=1", "is not a number"),
            ("https://user@host.example:6443", "not a DNS name"),
            ("https://host..example:6443", "not a DNS name"),
            ("https://.example:6443", "not a DNS name"),
            ("https://ho st:6443", "not a DNS name"),
            ("https://[fd00::1:6443", "unclosed"),
            ("https://[fd00::zz]:6443", "not an IPv6 address"),
            ("https://[fd00::1]6443", "has no port"),
            ("https://fd00::1:6443", "not a DNS name"),
            ("https://h\u{0}st:6443", "not a DNS name"),
            ("https://:6443", "not a DNS name"),
        ] {
            let e = parse_api_endpoint(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let huge = format!("https://{}:6443", "a".repeat(100_000));
        let e = parse_api_endpoint(&huge).unwrap_err();
        assert!(
            e.len() < 200,
            "the message quotes a bounded part: {}",
            e.len()
        );
        let long_label = format!("https://{}.example:6443", "a".repeat(64));
        assert!(parse_api_endpoint(&long_label).is_err());
    }

    proptest! {
        #[test]
        fn endpoint_parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(e) = parse_api_endpoint(&s) {
                prop_assert_eq!(parse_api_endpoint(&e.to_string()), Ok(e));
            }
        }

        #[test]
        fn built_endpoints_parse(a in 1u8..=254, b: u8, port in 1u16..) {
            let s = format!("https://10.{a}.{b}.1:{port}");
            let e = parse_api_endpoint(&s).unwrap();
            prop_assert_eq!(e.port, port);
            prop_assert_eq!(e.to_string(), s);
        }
    }

    fn small_range() -> impl Strategy<Value = AddressRange> {
        // Ranges inside 10.0.0.0/26 (addresses 1..=62), with a few excluded addresses.
        (
            1u8..=62,
            1u8..=62,
            proptest::collection::vec(1u8..=62, 0..6),
        )
            .prop_map(|(a, b, ex)| {
                let (s, e) = (a.min(b), a.max(b));
                AddressRange {
                    version: IpVersion::V4,
                    cidr: "10.0.0.0/26".into(),
                    start: Some(format!("10.0.0.{s}")),
                    end: Some(format!("10.0.0.{e}")),
                    exclude_ips: Some(ex.iter().map(|x| format!("10.0.0.{x}")).collect()),
                    ..Default::default()
                }
            })
    }

    /// Upstream's `Intersect` enumerates every address; ours works on intervals. Same answer.
    fn enumerated(r: &AddressRange) -> std::collections::BTreeSet<String> {
        let p = parse_range_shape(r, "spec.range").unwrap();
        (p.start..=p.end)
            .filter(|n| !p.excluded.contains(n))
            .map(|n| p.ip(n).to_string())
            .collect()
    }

    proptest! {
        #[test]
        fn intersects_equals_upstreams_enumeration(a in small_range(), b in small_range()) {
            let (pa, pb) = (
                parse_range_shape(&a, "spec.range").unwrap(),
                parse_range_shape(&b, "spec.range").unwrap(),
            );
            let by_enumeration = !enumerated(&a).is_disjoint(&enumerated(&b));
            prop_assert_eq!(pa.intersects(&pb), by_enumeration);
            prop_assert_eq!(pb.intersects(&pa), by_enumeration);
        }
    }

    #[test]
    fn huge_ranges_intersect_without_enumeration() {
        let a = parse_range_shape(&range("fd00::/8", None, None), "spec.range").unwrap();
        let b = parse_range_shape(&range("fd12::/16", None, None), "spec.range").unwrap();
        assert!(a.intersects(&b));
        let c = parse_range_shape(&range("fe00::/8", None, None), "spec.range").unwrap();
        assert!(!a.intersects(&c));
    }

    #[test]
    fn upstream_shaped_remote_cluster_is_valid() {
        remote_cluster_create(&rc("cluster-b", "https://10.0.0.2:6443"), &[]).unwrap();
    }

    #[test]
    fn credentials_are_inline_or_a_secret_never_half() {
        let mut c = rc("b", "https://10.0.0.2:6443");
        c.spec.key_data = None;
        let e = remote_cluster_spec(&c.spec).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].field, "spec.keyData");

        c.spec.ca_data = Some(ByteString(Vec::new()));
        let e = remote_cluster_spec(&c.spec).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.caData", "spec.keyData"]);

        c.spec.ca_data = Some(ByteString(b"not pem".to_vec()));
        c.spec.key_data = Some(ByteString(vec![0xff, 0xfe]));
        let e = remote_cluster_spec(&c.spec).unwrap_err().to_string();
        assert!(e.contains("spec.caData: is not PEM data"), "{e}");
        assert!(e.contains("spec.keyData: is not PEM data"), "{e}");

        let mut s = rc("b", "https://10.0.0.2:6443");
        s.spec.ca_data = None;
        s.spec.cert_data = None;
        s.spec.key_data = None;
        s.spec.credentials_secret_ref = Some(SecretRef {
            namespace: "hybridnet-system".into(),
            name: "cluster-b".into(),
        });
        remote_cluster_spec(&s.spec).unwrap();

        s.spec.ca_data = Some(ByteString(CA.into()));
        let e = remote_cluster_spec(&s.spec).unwrap_err().to_string();
        assert!(
            e.contains("spec.credentialsSecretRef: credentials come either"),
            "{e}"
        );

        s.spec.ca_data = None;
        s.spec.credentials_secret_ref = Some(SecretRef {
            namespace: "Bad_NS".into(),
            name: "a/b".into(),
        });
        let e = remote_cluster_spec(&s.spec).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.credentialsSecretRef.namespace",
                "spec.credentialsSecretRef.name"
            ]
        );
    }

    #[test]
    fn negative_timeout_is_refused() {
        let mut c = rc("b", "https://10.0.0.2:6443");
        c.spec.timeout = Some(-1);
        let e = remote_cluster_spec(&c.spec).unwrap_err();
        assert_eq!(e.0[0].field, "spec.timeout");
        c.spec.timeout = Some(0);
        remote_cluster_spec(&c.spec).unwrap();
    }

    #[test]
    fn one_remote_cluster_per_endpoint_and_per_uid() {
        let a = with_uuid(rc("a", "https://api.b.example:6443"), "uid-b");
        let dup = rc("a2", "https://API.b.example:6443");
        let e = remote_cluster_create(&dup, std::slice::from_ref(&a)).unwrap_err();
        assert_eq!(e.0[0].field, "spec.apiEndpoint");
        assert!(e.0[0].message.contains("RemoteCluster \"a\""), "{e}");
        // The same object listed among the existing ones is not a duplicate of itself.
        remote_cluster_create(&a, std::slice::from_ref(&a)).unwrap();

        let other_endpoint = with_uuid(rc("a3", "https://10.9.9.9:6443"), "uid-b");
        let e = remote_cluster_update(
            &rc("a3", "https://10.9.9.9:6443"),
            &other_endpoint,
            std::slice::from_ref(&a),
        )
        .unwrap_err();
        assert_eq!(e.0[0].field, "status.uuid");
    }

    #[test]
    fn cluster_names_with_dots_are_refused_on_create_only() {
        let c = rc("b.prod", "https://10.0.0.2:6443");
        let e = remote_cluster_create(&c, &[]).unwrap_err();
        assert_eq!(e.0[0].field, "metadata.name");
        // An existing object (written before the rule) can still be updated without spec change,
        // e.g. to remove a finalizer.
        let mut newer = c.clone();
        newer.metadata.finalizers = Some(vec![]);
        remote_cluster_update(&c, &newer, &[]).unwrap();
    }

    #[test]
    fn update_checks_the_spec_only_when_it_changed_and_never_blocks_deletion() {
        let mut old = rc("b", "https://10.0.0.2:6443");
        old.spec.key_data = None; // invalid, written before our webhook ran
        let mut same = old.clone();
        same.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        remote_cluster_update(&old, &same, &[]).unwrap();
        let mut changed = old.clone();
        changed.spec.timeout = Some(5);
        assert!(remote_cluster_update(&old, &changed, &[]).is_err());
        changed.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        remote_cluster_update(&old, &changed, &[]).unwrap();
    }

    #[test]
    fn uuid_claims() {
        let a = with_uuid(rc("a", "https://10.0.0.2:6443"), "uid-b");
        assert_eq!(
            claim_uuid("x", "uid-local", "uid-local", &[]),
            Err(UuidClaimError::Ourselves("uid-local".into()))
        );
        assert_eq!(
            claim_uuid("x", "uid-b", "uid-local", std::slice::from_ref(&a)),
            Err(UuidClaimError::Taken {
                uuid: "uid-b".into(),
                other: "a".into()
            })
        );
        claim_uuid("a", "uid-b", "uid-local", std::slice::from_ref(&a)).unwrap();
        claim_uuid("x", "uid-c", "uid-local", std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            claim_uuid("x", "", "uid-local", &[]),
            Err(UuidClaimError::Empty)
        );
        // An empty recorded uuid (upstream writes "" when offline) claims nothing.
        let offline = with_uuid(rc("o", "https://10.0.0.3:6443"), "");
        claim_uuid("x", "uid-c", "uid-local", &[offline]).unwrap();
    }

    #[test]
    fn remote_subnets_may_not_overlap_local_or_other_remote_subnets() {
        let local = [subnet("local", range("10.0.0.0/24", None, None))];
        let others = [rsub("c.s1", range("10.1.0.0/24", None, None))];
        remote_subnet_create(
            &rsub("b.s", range("10.2.0.0/24", None, None)),
            &local,
            &others,
        )
        .unwrap();
        let e = remote_subnet_create(
            &rsub("b.s", range("10.0.0.0/16", None, None)),
            &local,
            &others,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("spec.range: 10.0.0.0/16 ") && e.contains("local subnet \"local\""),
            "{e}"
        );
        let e = remote_subnet_create(
            &rsub("b.s", range("10.1.0.128/25", None, None)),
            &local,
            &others,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("remote subnet \"c.s1\" of cluster \"c\""), "{e}");
        // Itself (the operator updating its mirror) is no conflict.
        remote_subnet_create(&others[0], &local, &others).unwrap();
        // Disjoint start..end spans in one CIDR do not intersect (upstream compares addresses).
        let split = [subnet(
            "lo",
            range("10.5.0.0/24", Some("10.5.0.1"), Some("10.5.0.99")),
        )];
        remote_subnet_create(
            &rsub(
                "b.hi",
                range("10.5.0.0/24", Some("10.5.0.100"), Some("10.5.0.200")),
            ),
            &split,
            &[],
        )
        .unwrap();
        // Families never intersect.
        remote_subnet_create(
            &rsub("b.v6", range("fd00::/64", None, None)),
            &local,
            &others,
        )
        .unwrap();
    }

    #[test]
    fn malformed_remote_subnet_ranges_are_refused_naming_the_field() {
        for (cidr, field) in [
            ("10.0.0.1/24", "spec.range.cidr"),
            ("not-a-cidr", "spec.range.cidr"),
            ("10.0.0.0/32", "spec.range.cidr"),
        ] {
            let e =
                remote_subnet_create(&rsub("b.s", range(cidr, None, None)), &[], &[]).unwrap_err();
            assert_eq!(e.0[0].field, field, "{cidr}: {e}");
        }
        let mut r = range("10.0.0.0/24", Some("10.0.0.200"), Some("10.0.0.100"));
        let e = remote_subnet_create(&rsub("b.s", r.clone()), &[], &[]).unwrap_err();
        assert_eq!(e.0[0].field, "spec.range.start");
        r.start = Some("10.0.1.1".into());
        assert!(remote_subnet_create(&rsub("b.s", r), &[], &[]).is_err());
        // A large remote range is fine: nothing here allocates from it.
        remote_subnet_create(&rsub("b.big", range("10.128.0.0/9", None, None)), &[], &[]).unwrap();
    }

    #[test]
    fn remote_subnet_update_checks_only_a_changed_range() {
        let local = [subnet("local", range("10.0.0.0/24", None, None))];
        let old = rsub("b.s", range("10.0.0.0/24", None, None)); // overlapping, pre-existing
        let mut relabelled = old.clone();
        relabelled.metadata.labels = Some(Default::default());
        remote_subnet_update(&old, &relabelled, &local, &[]).unwrap();
        let mut moved = old.clone();
        moved.spec.range = range("10.0.0.0/23", None, None);
        assert!(remote_subnet_update(&old, &moved, &local, &[]).is_err());
    }

    #[test]
    fn local_subnet_against_remote_subnets() {
        let remote = [rsub(
            "b.s",
            range("10.7.0.0/24", Some("10.7.0.10"), Some("10.7.0.20")),
        )];
        let p = parse_range_shape(&range("10.7.0.0/24", Some("10.7.0.21"), None), "spec.range")
            .unwrap();
        subnet_against_remote(&p, &remote).unwrap();
        let p = parse_range_shape(&range("10.7.0.0/24", Some("10.7.0.20"), None), "spec.range")
            .unwrap();
        let e = subnet_against_remote(&p, &remote).unwrap_err();
        assert_eq!(e.field, "spec.range");
        assert!(
            e.message.contains("remote subnet \"b.s\" of cluster \"b\""),
            "{e}"
        );
    }

    #[test]
    fn overlay_network_stays_while_remote_clusters_exist() {
        let overlay = Network::new(
            "init",
            NetworkSpec {
                network_type: Some(NetworkType::Overlay),
                net_id: Some(4),
                ..Default::default()
            },
        );
        network_delete_remote(&overlay, &[]).unwrap();
        let rcs = [
            rc("z", "https://10.0.0.2:6443"),
            rc("a", "https://10.0.0.3:6443"),
        ];
        let e = network_delete_remote(&overlay, &rcs).unwrap_err();
        assert_eq!(e.field, "metadata.name");
        assert!(
            e.message.contains("2 remote cluster(s) [\"a\", \"z\"]"),
            "{e}"
        );
        let underlay = Network::new("u", NetworkSpec::default());
        network_delete_remote(&underlay, &rcs).unwrap();
    }

    fn vtep(ip: &str, mac: &str, local: &[&str], eps: &[&str]) -> RemoteVtepSpec {
        RemoteVtepSpec {
            cluster_name: Some("b".into()),
            node_name: Some("n1".into()),
            ip: Some(ip.into()),
            mac: Some(mac.into()),
            local_ips: Some(local.iter().map(|s| s.to_string()).collect()),
            endpoint_ip_list: Some(eps.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn remote_vtep_addresses_are_parsed() {
        let a = remote_vtep(&vtep(
            "198.18.0.21",
            "02:00:00:00:00:21",
            &["198.18.0.21", "fd00::21"],
            &["198.19.8.5", "fd00:8::5"],
        ))
        .unwrap();
        assert_eq!(a.ip, "198.18.0.21".parse::<IpAddr>().unwrap());
        assert_eq!(a.mac.to_string(), "02:00:00:00:00:21");
        assert_eq!(a.local_ips.len(), 2);
        assert_eq!(a.endpoint_ips.len(), 2);
        // Upstream's node IP cache: no localIPs, the VTEP address stands for the node.
        let a = remote_vtep(&vtep("198.18.0.21", "02-00-00-00-00-21", &[], &[])).unwrap();
        assert_eq!(a.local_ips, vec![a.ip]);
        assert!(a.endpoint_ips.is_empty());
    }

    #[test]
    fn malformed_remote_vteps_name_every_bad_field() {
        for (ip, mac, local, eps, want) in [
            (
                "",
                "02:00:00:00:00:21",
                &[][..],
                &[][..],
                "spec.ip: missing",
            ),
            (
                "198.18.0.300",
                "02:00:00:00:00:21",
                &[],
                &[],
                "spec.ip: \"198.18.0.300\" is not",
            ),
            (
                "0.0.0.0",
                "02:00:00:00:00:21",
                &[],
                &[],
                "spec.ip: 0.0.0.0 cannot be a VTEP",
            ),
            (
                "ff02::1",
                "02:00:00:00:00:21",
                &[],
                &[],
                "spec.ip: ff02::1 cannot be a VTEP",
            ),
            (
                "127.0.0.1",
                "02:00:00:00:00:21",
                &[],
                &[],
                "spec.ip: 127.0.0.1 cannot",
            ),
            ("198.18.0.21", "", &[], &[], "spec.mac: missing"),
            (
                "198.18.0.21",
                "02:00:00:00:00",
                &[],
                &[],
                "spec.mac: \"02:00:00:00:00\" is not a MAC",
            ),
            (
                "198.18.0.21",
                "zz:00:00:00:00:21",
                &[],
                &[],
                "spec.mac: \"zz:00",
            ),
            (
                "198.18.0.21",
                "00:00:00:00:00:00",
                &[],
                &[],
                "spec.mac: 00:00:00:00:00:00 cannot",
            ),
            (
                "198.18.0.21",
                "ff:ff:ff:ff:ff:ff",
                &[],
                &[],
                "spec.mac: ff:ff:ff:ff:ff:ff cannot",
            ),
            (
                "198.18.0.21",
                "01:00:5e:00:00:01",
                &[],
                &[],
                "spec.mac: 01:00:5e:00:00:01 cannot",
            ),
            (
                "198.18.0.21",
                "02:00:00:00:00:21",
                &["x"],
                &[],
                "spec.localIPs[0]: \"x\" is not",
            ),
            (
                "198.18.0.21",
                "02:00:00:00:00:21",
                &[],
                &["198.19.8.5", "198.19.8.6/24"],
                "spec.endpointIPList[1]: \"198.19.8.6/24\" is not",
            ),
        ] {
            let e = remote_vtep(&vtep(ip, mac, local, eps)).unwrap_err();
            assert!(e.to_string().contains(want), "{ip} {mac}: {e}");
        }
        // Every bad field at once.
        let e = remote_vtep(&vtep("x", "y", &["z"], &["w"])).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ip",
                "spec.mac",
                "spec.localIPs[0]",
                "spec.endpointIPList[0]"
            ]
        );
        // A hostile value is shown quoted and escaped, not verbatim.
        let e = remote_vtep(&vtep("1.2.3.4\n5", "02:00:00:00:00:21", &[], &[])).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
