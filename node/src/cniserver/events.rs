//! Which CNI ADD failures a user must see on the pod, and as what Event (docs/operations.md,
//! "Events on pods"): a pure mapping from the failed stage and its CNI error to the Event's
//! reason and message. The agent publishes it (`crate::agent::cni`), deduplicated by the event
//! recorder (one Event per pod and reason, its `series.count` raised on each repeat).

use hybridnet_cni::CniError;

use super::vlancheck::VlanCheckError;

/// The stage of an ADD that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddFailure {
    /// No usable IPInstance for the pod on this node (IPAM did not allocate, or allocated
    /// something the agent cannot wire).
    NoAddress,
    /// Creating the veth, addresses or routes failed.
    InterfaceSetup,
    /// The VLAN gateway did not answer ARP/NDP for the pod's address.
    VlanGatewayUnreachable,
    /// Another MAC answers for the pod's address on the VLAN.
    VlanAddressInUse,
    /// The VLAN check itself could not run.
    VlanCheckFailed,
    /// The node cannot ping the wired pod.
    PodUnreachableFromNode,
    /// The pod's address was not announced to every required BGP peer in time.
    BgpNotAnnounced,
}

impl AddFailure {
    /// The stage of a failed VLAN check.
    pub fn of_vlan_check(e: &VlanCheckError) -> AddFailure {
        match e {
            VlanCheckError::GatewaySilent { .. } => AddFailure::VlanGatewayUnreachable,
            VlanCheckError::Duplicate { .. } => AddFailure::VlanAddressInUse,
            VlanCheckError::Setup { .. } => AddFailure::VlanCheckFailed,
        }
    }

    /// The Event reason (CamelCase, as Kubernetes' own reasons).
    pub fn reason(self) -> &'static str {
        match self {
            AddFailure::NoAddress => "NoIPAddress",
            AddFailure::InterfaceSetup => "InterfaceSetupFailed",
            AddFailure::VlanGatewayUnreachable => "VLANGatewayUnreachable",
            AddFailure::VlanAddressInUse => "IPAddressInUse",
            AddFailure::VlanCheckFailed => "VLANCheckFailed",
            AddFailure::PodUnreachableFromNode => "PodUnreachableFromNode",
            AddFailure::BgpNotAnnounced => "BGPNotAnnounced",
        }
    }
}

/// Every stage, for tests and docs.
pub const ALL_FAILURES: [AddFailure; 7] = [
    AddFailure::NoAddress,
    AddFailure::InterfaceSetup,
    AddFailure::VlanGatewayUnreachable,
    AddFailure::VlanAddressInUse,
    AddFailure::VlanCheckFailed,
    AddFailure::PodUnreachableFromNode,
    AddFailure::BgpNotAnnounced,
];

/// Longest Event note the API server accepts (events.k8s.io/v1 `note`: 1 kB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// The `action` of every pod network Event.
pub const ACTION: &str = "SetUpPodNetwork";

/// A Warning Event on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub reason: &'static str,
    pub note: String,
}

/// The Event for a failed ADD: the stage's reason and the CNI error's message (what the runtime
/// also shows), control characters replaced by spaces, cut on a character boundary to fit.
pub fn pod_event(failure: AddFailure, error: &CniError) -> PodEvent {
    let text = format!("CNI ADD failed (code {}): {}", error.code, error.msg);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    PodEvent {
        reason: failure.reason(),
        note: truncate(&clean, MAX_NOTE_BYTES),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker = "...";
    let mut end = max - marker.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_cni::ErrorCode;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn each_stage_has_its_own_reason() {
        let reasons: HashSet<&str> = ALL_FAILURES.iter().map(|f| f.reason()).collect();
        assert_eq!(reasons.len(), ALL_FAILURES.len());
        for r in reasons {
            assert!(
                r.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && r.chars().all(|c| c.is_ascii_alphanumeric())
                    && r.len() <= 128,
                "{r}"
            );
        }
    }

    #[test]
    fn vlan_check_errors_map_to_their_stage() {
        let ip: std::net::IpAddr = "198.18.0.10".parse().unwrap();
        let silent = VlanCheckError::GatewaySilent {
            gateway: "198.18.0.1".parse().unwrap(),
            pod_ip: ip,
            iface: "eth0.10".into(),
            proto: "ARP",
            timeout: Duration::from_secs(3),
        };
        let dup = VlanCheckError::Duplicate {
            pod_ip: ip,
            mac: "02:00:00:00:00:01".into(),
            iface: "eth0.10".into(),
        };
        let setup = VlanCheckError::Setup {
            pod_ip: ip,
            iface: "eth0.10".into(),
            what: "socket".into(),
        };
        assert_eq!(
            AddFailure::of_vlan_check(&silent).reason(),
            "VLANGatewayUnreachable"
        );
        assert_eq!(AddFailure::of_vlan_check(&dup).reason(), "IPAddressInUse");
        assert_eq!(
            AddFailure::of_vlan_check(&setup).reason(),
            "VLANCheckFailed"
        );
        // The note carries the check's own words (gateway, address, interface).
        let e = pod_event(
            AddFailure::of_vlan_check(&silent),
            &silent.to_cni(&"default/p"),
        );
        assert!(
            e.note.contains("198.18.0.1") && e.note.contains("eth0.10"),
            "{}",
            e.note
        );
        assert!(e.note.starts_with("CNI ADD failed (code 11)"), "{}", e.note);
    }

    #[test]
    fn hostile_messages_are_cleaned_and_bounded() {
        for msg in [
            String::new(),
            "line\nbreak\r\tand \u{1b}[31mescape".to_string(),
            "é".repeat(2000),
            "x".repeat(100_000),
            format!("{}\u{1F600}", "a".repeat(MAX_NOTE_BYTES - 30)),
        ] {
            let err = CniError::new(ErrorCode::InterfaceSetup, msg.clone());
            let e = pod_event(AddFailure::InterfaceSetup, &err);
            assert!(e.note.len() <= MAX_NOTE_BYTES, "{}", e.note.len());
            assert!(!e.note.chars().any(char::is_control), "{:?}", e.note);
            assert_eq!(e.reason, "InterfaceSetupFailed");
            if msg.len() < 900 {
                assert!(!e.note.ends_with("..."), "{:?}", e.note);
            } else {
                assert!(e.note.ends_with("..."), "{}", e.note.len());
            }
        }
    }
}
