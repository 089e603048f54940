//! A RemoteCluster's status from what the operator found, as plain data: the checks upstream runs
//! (pkg/controllers/multicluster/clusterchecker/: `HealthProbe`, `BidirectionalConnection`,
//! `OverlayNetIDMatch`, `SubnetNonCross`) and the state they give
//! (pkg/controllers/multicluster/remoteclusterstatus_checker.go: all pass = `Ready`, one fails =
//! `NotReady`, no connection = `Offline`). The operator gathers the inputs (reads of both API
//! servers) and writes the result; nothing here does I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::validate::UuidClaimError;
use super::{ClusterState, RemoteCluster, RemoteClusterStatus, RemoteSubnet};
use crate::constants::label;
use crate::range::parse_range_shape;
use crate::v1::{Network, NetworkType, Subnet};

/// Condition types of a RemoteCluster.
pub mod condition {
    /// Ours (upstream: `DaemonRegistered` and `CheckerExecuted`): a client to the remote API
    /// server exists and the remote cluster's identity was read and accepted.
    pub const CONNECTED: &str = "Connected";
    /// The remote API server's `/healthz` answers `ok` (upstream `HealthzCheckName`).
    pub const HEALTH_PROBE: &str = "HealthProbe";
    /// The remote cluster has a RemoteCluster whose `status.uuid` is ours (upstream
    /// `BidirectionCheckName`).
    pub const BIDIRECTIONAL_CONNECTION: &str = "BidirectionalConnection";
    /// Both overlay networks have the same netID (VNI) (upstream `OverlayNetIDCheckName`).
    pub const OVERLAY_NET_ID_MATCH: &str = "OverlayNetIDMatch";
    /// No remote Subnet shares an address with a local Subnet or another cluster's RemoteSubnet
    /// (upstream `SubnetCheckName`).
    pub const SUBNET_NON_CROSS: &str = "SubnetNonCross";

    /// The check conditions, in the order they are written.
    pub const CHECKS: [&str; 4] = [
        HEALTH_PROBE,
        BIDIRECTIONAL_CONNECTION,
        OVERLAY_NET_ID_MATCH,
        SUBNET_NON_CROSS,
    ];
}

/// Results of the four checks against a connected remote cluster: `Err` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checks {
    pub health: Result<(), String>,
    pub bidirectional: Result<(), String>,
    pub overlay_net_id: Result<(), String>,
    pub subnet_non_cross: Result<(), String>,
}

impl Checks {
    fn by_type(&self) -> [(&'static str, &Result<(), String>); 4] {
        [
            (condition::HEALTH_PROBE, &self.health),
            (condition::BIDIRECTIONAL_CONNECTION, &self.bidirectional),
            (condition::OVERLAY_NET_ID_MATCH, &self.overlay_net_id),
            (condition::SUBNET_NON_CROSS, &self.subnet_non_cross),
        ]
    }

    pub fn all_pass(&self) -> bool {
        self.by_type().iter().all(|(_, r)| r.is_ok())
    }
}

/// What the operator found when it tried the remote cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The spec gives no client: a bad endpoint, a missing Secret or key, unreadable PEM.
    Invalid(String),
    /// A client exists but reading the remote identity failed: unreachable, TLS (wrong CA),
    /// unauthorized.
    Unreachable(String),
    /// The remote identity is refused: it is this cluster, or another RemoteCluster has it.
    Refused { uuid: String, why: UuidClaimError },
    /// Connected to cluster `uuid`; the checks ran.
    Connected { uuid: String, checks: Checks },
}

/// Upstream's reasons for the check conditions.
const CHECK_PASS: &str = "CheckPass";
const CHECK_FAIL: &str = "CheckFail";

/// Longest condition message written (the schema allows 32,768 bytes; a remote error can be a
/// whole HTML page).
pub const MAX_MESSAGE: usize = 1024;

fn bounded(mut m: String) -> String {
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

fn condition(
    prev: Option<&RemoteClusterStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    // lastTransitionTime changes only when the status does (upstream rewrites it on every
    // check; here an unchanged condition is an unchanged status and no write).
    let last = prev
        .and_then(|p| p.conditions.iter().flatten().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: bounded(message),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The status of RemoteCluster `rc` after the operator tried it (`now` stamps changed
/// conditions). `status.uuid` is the connected cluster's; an invalid spec or a refused identity
/// clears it (as upstream's `{"uuid":""}`), an unreachable cluster keeps the last one (a restart
/// does not change a cluster's identity). Conditions of types not ours (written by upstream's
/// manager before a migration) are dropped.
pub fn remote_cluster_status(
    rc: &RemoteCluster,
    conn: &Connection,
    now: &Time,
) -> RemoteClusterStatus {
    let prev = rc.status.as_ref();
    let generation = rc.metadata.generation;
    let cond = |t: &str, s: &str, r: &str, m: String| condition(prev, t, s, r, m, generation, now);
    let mut conditions = Vec::with_capacity(5);
    type Offline = (&'static str, String, Option<String>);
    let offline = |reason: &'static str,
                   message: String,
                   uuid: Option<String>|
     -> Result<(Option<String>, ClusterState), Offline> {
        Err((reason, message, uuid))
    };
    let outcome = match conn {
        Connection::Connected { uuid, checks } => {
            conditions.push(cond(
                condition::CONNECTED,
                "True",
                "Connected",
                String::new(),
            ));
            for (t, r) in checks.by_type() {
                conditions.push(match r {
                    Ok(()) => cond(t, "True", CHECK_PASS, String::new()),
                    Err(e) => cond(t, "False", CHECK_FAIL, e.clone()),
                });
            }
            let state = if checks.all_pass() {
                ClusterState::Ready
            } else {
                ClusterState::NotReady
            };
            Ok((Some(uuid.clone()), state))
        }
        Connection::Invalid(m) => offline("InvalidConfig", m.clone(), Some(String::new())),
        Connection::Unreachable(m) => {
            offline("Unreachable", m.clone(), prev.and_then(|p| p.uuid.clone()))
        }
        Connection::Refused { uuid, why } => offline(
            match why {
                UuidClaimError::Ourselves(_) => "PointsAtSelf",
                UuidClaimError::Taken { .. } => "DuplicateCluster",
                UuidClaimError::Empty => "NoIdentity",
            },
            format!("{why} (remote kube-system UID {uuid:?})"),
            Some(String::new()),
        ),
    };
    let (uuid, state) = match outcome {
        Ok(connected) => connected,
        Err((reason, message, uuid)) => {
            conditions.push(cond(condition::CONNECTED, "False", reason, message));
            for t in condition::CHECKS {
                conditions.push(cond(
                    t,
                    "Unknown",
                    "NotConnected",
                    "not checked: no connection to the remote cluster".into(),
                ));
            }
            (uuid, ClusterState::Offline)
        }
    };
    RemoteClusterStatus {
        uuid,
        state: Some(state.as_str().to_string()),
        conditions: Some(conditions),
    }
}

/// `HealthProbe`: the body of the remote `/healthz` is `ok` (case-insensitive, as upstream), or
/// the request's error.
pub fn check_health(body: Result<&str, String>) -> Result<(), String> {
    match body {
        Ok(b) if b.trim().eq_ignore_ascii_case("ok") => Ok(()),
        Ok(b) => Err(format!(
            "/healthz answered {} instead of ok",
            hybridnet_rules::shown(b)
        )),
        Err(e) => Err(format!("/healthz: {e}")),
    }
}

/// `BidirectionalConnection`: one of the remote cluster's RemoteClusters has our UID.
pub fn check_bidirectional(local_uuid: &str, remote_side: &[RemoteCluster]) -> Result<(), String> {
    if remote_side
        .iter()
        .any(|r| r.remote_uuid() == Some(local_uuid))
    {
        Ok(())
    } else {
        Err(format!(
            "the remote cluster has no RemoteCluster connected to this one (kube-system UID {local_uuid}); create it there too"
        ))
    }
}

fn overlay_net_id(networks: &[Network]) -> Result<i32, String> {
    let overlay = networks
        .iter()
        .find(|n| n.spec.effective_type() == NetworkType::Overlay)
        .ok_or("it has no overlay network")?;
    overlay.spec.net_id.ok_or_else(|| {
        format!(
            "its overlay network {:?} has no netID",
            overlay.metadata.name.as_deref().unwrap_or("")
        )
    })
}

/// `OverlayNetIDMatch`: both clusters have an overlay network, with the same netID (VNI).
pub fn check_overlay_net_id(local: &[Network], remote: &[Network]) -> Result<(), String> {
    let l = overlay_net_id(local).map_err(|e| format!("local cluster: {e}"))?;
    let r = overlay_net_id(remote).map_err(|e| format!("remote cluster: {e}"))?;
    if l == r {
        Ok(())
    } else {
        Err(format!(
            "overlay netID (VNI) {l} here, {r} in the remote cluster: they must match"
        ))
    }
}

/// `SubnetNonCross`: no Subnet of the remote cluster `cluster` shares an address with a local
/// Subnet, or with a RemoteSubnet of another cluster (this cluster's own mirror of the same
/// Subnet is no conflict). Ranges that do not parse are skipped (they are refused where they are
/// written).
pub fn check_subnet_non_cross(
    cluster: &str,
    remote_subnets: &[Subnet],
    local_subnets: &[Subnet],
    local_remote_subnets: &[RemoteSubnet],
) -> Result<(), String> {
    let name = |m: &kube::api::ObjectMeta| m.name.clone().unwrap_or_default();
    for rs in remote_subnets {
        let Ok(r) = parse_range_shape(&rs.spec.range, "spec.range") else {
            continue;
        };
        for ls in local_subnets {
            if parse_range_shape(&ls.spec.range, "spec.range").is_ok_and(|l| r.intersects(&l)) {
                return Err(format!(
                    "remote subnet {:?} ({}) overlaps local subnet {:?} ({})",
                    name(&rs.metadata),
                    rs.spec.range.cidr,
                    name(&ls.metadata),
                    ls.spec.range.cidr
                ));
            }
        }
        for m in local_remote_subnets {
            let labels = m.metadata.labels.as_ref();
            let of = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
            let own_mirror = of(label::CLUSTER) == Some(cluster)
                && of(label::SUBNET) == rs.metadata.name.as_deref();
            if !own_mirror
                && parse_range_shape(&m.spec.range, "spec.range").is_ok_and(|p| r.intersects(&p))
            {
                return Err(format!(
                    "remote subnet {:?} ({}) overlaps RemoteSubnet {:?} ({}) of cluster {:?}",
                    name(&rs.metadata),
                    rs.spec.range.cidr,
                    name(&m.metadata),
                    m.spec.range.cidr,
                    m.spec.cluster_name.as_deref().unwrap_or("")
                ));
            }
        }
    }
    Ok(())
}

/// A RemoteCluster's state as written (absent or unknown text is `Unknown`).
pub fn state_of(rc: &RemoteCluster) -> ClusterState {
    rc.status
        .as_ref()
        .and_then(|s| s.state.as_deref())
        .map_or(ClusterState::Unknown, ClusterState::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multicluster::{RemoteClusterSpec, RemoteSubnetSpec};
    use crate::v1::{AddressRange, IpVersion, NetworkSpec, SubnetSpec};
    use std::collections::BTreeMap;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn rc(generation: i64) -> RemoteCluster {
        let mut rc = RemoteCluster::new(
            "b",
            RemoteClusterSpec {
                api_endpoint: "https://10.0.0.2:6443".into(),
                ..Default::default()
            },
        );
        rc.metadata.generation = Some(generation);
        rc
    }

    fn pass() -> Checks {
        Checks {
            health: Ok(()),
            bidirectional: Ok(()),
            overlay_net_id: Ok(()),
            subnet_non_cross: Ok(()),
        }
    }

    fn cond<'a>(s: &'a RemoteClusterStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no condition {t}"))
    }

    #[test]
    fn all_checks_pass_is_ready_one_failure_is_not_ready() {
        let c = rc(3);
        let ready = remote_cluster_status(
            &c,
            &Connection::Connected {
                uuid: "u-b".into(),
                checks: pass(),
            },
            &t(100),
        );
        assert_eq!(ready.state.as_deref(), Some("Ready"));
        assert_eq!(ready.uuid.as_deref(), Some("u-b"));
        let conds = ready.conditions.as_ref().unwrap();
        assert_eq!(conds.len(), 5);
        for c in conds {
            assert_eq!(
                (c.status.as_str(), c.observed_generation),
                ("True", Some(3))
            );
        }
        for failing in 0..4 {
            let mut checks = pass();
            let slot = match failing {
                0 => &mut checks.health,
                1 => &mut checks.bidirectional,
                2 => &mut checks.overlay_net_id,
                _ => &mut checks.subnet_non_cross,
            };
            *slot = Err("boom".into());
            let s = remote_cluster_status(
                &c,
                &Connection::Connected {
                    uuid: "u-b".into(),
                    checks,
                },
                &t(100),
            );
            assert_eq!(s.state.as_deref(), Some("NotReady"), "check {failing}");
            let f = cond(&s, condition::CHECKS[failing]);
            assert_eq!(
                (f.status.as_str(), f.reason.as_str(), f.message.as_str()),
                ("False", "CheckFail", "boom")
            );
        }
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_changes() {
        let mut c = rc(1);
        let conn = Connection::Connected {
            uuid: "u-b".into(),
            checks: pass(),
        };
        c.status = Some(remote_cluster_status(&c, &conn, &t(100)));
        let again = remote_cluster_status(&c, &conn, &t(200));
        assert_eq!(
            Some(&again),
            c.status.as_ref(),
            "nothing changed, nothing to write"
        );
        let mut failing = pass();
        failing.health = Err("down".into());
        let changed = remote_cluster_status(
            &c,
            &Connection::Connected {
                uuid: "u-b".into(),
                checks: failing,
            },
            &t(300),
        );
        assert_eq!(
            cond(&changed, condition::HEALTH_PROBE).last_transition_time,
            t(300)
        );
        assert_eq!(
            cond(&changed, condition::SUBNET_NON_CROSS).last_transition_time,
            t(100)
        );
        // A new generation is observed on every condition.
        c.metadata.generation = Some(2);
        let next = remote_cluster_status(&c, &conn, &t(400));
        assert!(
            next.conditions
                .iter()
                .flatten()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn no_connection_is_offline_with_the_reason_and_unknown_checks() {
        let mut c = rc(1);
        c.status = Some(RemoteClusterStatus {
            uuid: Some("u-b".into()),
            state: Some("Ready".into()),
            conditions: None,
        });
        let unreachable = remote_cluster_status(
            &c,
            &Connection::Unreachable("connect: connection refused".into()),
            &t(5),
        );
        assert_eq!(unreachable.state.as_deref(), Some("Offline"));
        assert_eq!(unreachable.uuid.as_deref(), Some("u-b"), "identity kept");
        let conn = cond(&unreachable, condition::CONNECTED);
        assert_eq!(
            (conn.status.as_str(), conn.reason.as_str()),
            ("False", "Unreachable")
        );
        assert!(conn.message.contains("connection refused"));
        for t in condition::CHECKS {
            assert_eq!(cond(&unreachable, t).status, "Unknown");
        }

        let long = remote_cluster_status(&c, &Connection::Unreachable("é".repeat(5000)), &t(5));
        let m = &cond(&long, condition::CONNECTED).message;
        assert!(
            m.len() <= MAX_MESSAGE + 3 && m.ends_with('…'),
            "{}",
            m.len()
        );

        let invalid = remote_cluster_status(&c, &Connection::Invalid("bad CA".into()), &t(5));
        assert_eq!(invalid.uuid.as_deref(), Some(""), "upstream clears it");
        assert_eq!(cond(&invalid, condition::CONNECTED).reason, "InvalidConfig");

        let me = remote_cluster_status(
            &c,
            &Connection::Refused {
                uuid: "u-local".into(),
                why: UuidClaimError::Ourselves("u-local".into()),
            },
            &t(5),
        );
        assert_eq!(me.state.as_deref(), Some("Offline"));
        let conn = cond(&me, condition::CONNECTED);
        assert_eq!(conn.reason, "PointsAtSelf");
        assert!(
            conn.message.contains("this cluster itself"),
            "{}",
            conn.message
        );
        let dup = remote_cluster_status(
            &c,
            &Connection::Refused {
                uuid: "u-b".into(),
                why: UuidClaimError::Taken {
                    uuid: "u-b".into(),
                    other: "a".into(),
                },
            },
            &t(5),
        );
        assert_eq!(cond(&dup, condition::CONNECTED).reason, "DuplicateCluster");
        assert_eq!(
            state_of(&RemoteCluster {
                status: Some(dup),
                ..c.clone()
            }),
            ClusterState::Offline
        );
        assert_eq!(state_of(&rc(1)), ClusterState::Unknown);
    }

    #[test]
    fn health_bodies() {
        check_health(Ok("ok")).unwrap();
        check_health(Ok("OK\n")).unwrap();
        assert!(
            check_health(Ok("[-]etcd failed"))
                .unwrap_err()
                .contains("etcd")
        );
        assert!(
            check_health(Err("tls: unknown authority".into()))
                .unwrap_err()
                .contains("tls")
        );
        let huge = "x".repeat(1 << 20);
        assert!(check_health(Ok(&huge)).unwrap_err().len() < 200);
    }

    #[test]
    fn bidirectional_needs_a_remote_cluster_pointing_back() {
        let mut back = rc(1);
        back.status = Some(RemoteClusterStatus {
            uuid: Some("u-local".into()),
            ..Default::default()
        });
        check_bidirectional("u-local", std::slice::from_ref(&back)).unwrap();
        assert!(check_bidirectional("u-local", &[rc(1)]).is_err());
        assert!(check_bidirectional("u-other", &[back]).is_err());
    }

    fn overlay(id: Option<i32>) -> Network {
        Network::new(
            "init",
            NetworkSpec {
                network_type: Some(NetworkType::Overlay),
                net_id: id,
                ..Default::default()
            },
        )
    }

    #[test]
    fn overlay_net_ids_must_match() {
        check_overlay_net_id(&[overlay(Some(4))], &[overlay(Some(4))]).unwrap();
        let e = check_overlay_net_id(&[overlay(Some(4))], &[overlay(Some(5))]).unwrap_err();
        assert!(e.contains("4 here, 5 in the remote"), "{e}");
        let e = check_overlay_net_id(&[], &[overlay(Some(4))]).unwrap_err();
        assert!(
            e.starts_with("local cluster: it has no overlay network"),
            "{e}"
        );
        let e = check_overlay_net_id(&[overlay(Some(4))], &[overlay(None)]).unwrap_err();
        assert!(e.starts_with("remote cluster:"), "{e}");
        let underlay = Network::new(
            "u",
            NetworkSpec {
                net_id: Some(4),
                ..Default::default()
            },
        );
        assert!(check_overlay_net_id(&[underlay], &[overlay(Some(4))]).is_err());
    }

    fn subnet(name: &str, cidr: &str) -> Subnet {
        Subnet::new(
            name,
            SubnetSpec {
                network: "init".into(),
                range: AddressRange {
                    version: IpVersion::V4,
                    cidr: cidr.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    fn mirror(cluster: &str, subnet: &str, cidr: &str) -> RemoteSubnet {
        let mut m = RemoteSubnet::new(
            &format!("{cluster}.{subnet}"),
            RemoteSubnetSpec {
                range: AddressRange {
                    version: IpVersion::V4,
                    cidr: cidr.into(),
                    ..Default::default()
                },
                network_type: None,
                cluster_name: Some(cluster.into()),
            },
        );
        m.metadata.labels = Some(BTreeMap::from([
            (label::CLUSTER.to_string(), cluster.to_string()),
            (label::SUBNET.to_string(), subnet.to_string()),
        ]));
        m
    }

    #[test]
    fn subnets_must_not_cross_local_or_other_clusters_ranges() {
        let remote = [subnet("s1", "10.1.0.0/24")];
        let local = [subnet("init", "10.0.0.0/24")];
        check_subnet_non_cross("b", &remote, &local, &[]).unwrap();
        // Our own mirror of the same subnet is no conflict.
        check_subnet_non_cross("b", &remote, &local, &[mirror("b", "s1", "10.1.0.0/24")]).unwrap();
        let e = check_subnet_non_cross("b", &remote, &local, &[mirror("c", "x", "10.1.0.128/25")])
            .unwrap_err();
        assert!(
            e.contains("RemoteSubnet \"c.x\"") && e.contains("cluster \"c\""),
            "{e}"
        );
        // A mirror of another subnet of the same cluster that overlaps is a conflict too.
        assert!(
            check_subnet_non_cross("b", &remote, &local, &[mirror("b", "old", "10.1.0.0/16")])
                .is_err()
        );
        let e =
            check_subnet_non_cross("b", &[subnet("s2", "10.0.0.0/16")], &local, &[]).unwrap_err();
        assert!(e.contains("local subnet \"init\""), "{e}");
        // Malformed ranges are skipped, not a panic.
        check_subnet_non_cross("b", &[subnet("bad", "10.0.0.1/24")], &local, &[]).unwrap();
    }
}
