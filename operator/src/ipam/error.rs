//! Errors of IPAM operations and conflicts found by a rebuild. Every message names the object.

use std::net::IpAddr;

use hybridnet_api::v1::IpVersion;

use super::mac::MacAddr;
use super::types::PodKey;

/// Why an IPAM operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("network {network:?} is not known to the IPAM")]
    UnknownNetwork { network: String },
    #[error("subnet {subnet:?} is not known to the IPAM")]
    UnknownSubnet { subnet: String },
    #[error("subnet {subnet:?} belongs to network {actual:?}, not {network:?}")]
    SubnetNotInNetwork {
        subnet: String,
        network: String,
        actual: String,
    },
    #[error("subnet {subnet:?} is IPv{actual} but the request is for IPv{expected}")]
    WrongFamily {
        subnet: String,
        expected: IpVersion,
        actual: IpVersion,
    },
    #[error("invalid request: {field}: {reason}")]
    InvalidRequest { field: String, reason: String },
    #[error(
        "network {network:?} has no IPv{version} subnet with a free address (private subnets are only used when named)"
    )]
    NoAvailableSubnet { network: String, version: IpVersion },
    #[error("subnet {subnet:?} has no free address")]
    SubnetFull { subnet: String },
    #[error("Network {network:?}: {reason}")]
    InvalidNetwork { network: String, reason: String },
    #[error("Subnet {subnet:?}: {reason}")]
    InvalidSubnet { subnet: String, reason: String },
    #[error("Subnet {subnet:?}: {field} cannot change (was {old}, now {new})")]
    ImmutableField {
        subnet: String,
        field: &'static str,
        old: String,
        new: String,
    },
    #[error("Subnet {subnet:?}: its range {start}-{end} overlaps subnet {other:?}")]
    OverlappingSubnets {
        subnet: String,
        other: String,
        start: IpAddr,
        end: IpAddr,
    },
    #[error("{ip} is in no IPv{version} subnet of network {network:?}")]
    AddressNotInNetwork {
        ip: IpAddr,
        network: String,
        version: IpVersion,
    },
    #[error("{ip} cannot be used in subnet {subnet:?}: {reason}")]
    AddressNotInSubnet {
        ip: IpAddr,
        subnet: String,
        reason: &'static str,
    },
    #[error("{ip} in subnet {subnet:?} is not available: {reason}")]
    AddressNotAvailable {
        ip: IpAddr,
        subnet: String,
        reason: String,
    },
    #[error("{ip} in subnet {subnet:?} is not held by anyone")]
    NotHeld { ip: IpAddr, subnet: String },
    #[error("pod {pod} holds no address in network {network:?}; allocate or assign first")]
    PodHasNoAddress { network: String, pod: PodKey },
    #[error("MAC {value:?}: {reason}")]
    InvalidMac { value: String, reason: String },
    #[error("MAC {mac} is already used by pod {holder} in network {network:?}")]
    MacInUse {
        mac: MacAddr,
        network: String,
        holder: PodKey,
    },
    #[error("no free MAC found in network {network:?} after {tries} random tries")]
    MacSpaceExhausted { network: String, tries: u32 },
    #[error("IPInstance {namespace}/{name}: {reason}")]
    InvalidInstance {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// An IPInstance (namespace and name) named in a conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Something a rebuild could not take as it is. The rebuild never picks silently: every case is
/// reported, and the state it builds is the safe one (see each variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The Network was skipped.
    #[error("network skipped: {0}")]
    InvalidNetwork(IpamError),
    /// The Subnet was skipped (invalid range, overlap, ...); its IPInstances are reported as
    /// `UnknownSubnet`.
    #[error("subnet skipped: {0}")]
    InvalidSubnet(IpamError),
    /// The IPInstance could not be read; its address (if any) is not marked.
    #[error("IPInstance skipped: {0}")]
    InvalidInstance(IpamError),
    /// The IPInstance names a subnet the IPAM does not have.
    #[error("IPInstance {instance} refers to unknown subnet {subnet:?}")]
    UnknownSubnet {
        instance: InstanceRef,
        subnet: String,
    },
    /// The IPInstance's network differs from its subnet's network; not marked.
    #[error(
        "IPInstance {instance} is in network {instance_network:?} but its subnet {subnet:?} belongs to {subnet_network:?}"
    )]
    NetworkMismatch {
        instance: InstanceRef,
        subnet: String,
        instance_network: String,
        subnet_network: String,
    },
    /// The address is not usable in the subnet (outside start..end, gateway, excluded, other
    /// family); not marked.
    #[error("IPInstance {instance}: {ip} is not usable in subnet {subnet:?}: {reason}")]
    OutsideSubnet {
        instance: InstanceRef,
        ip: IpAddr,
        subnet: String,
        reason: &'static str,
    },
    /// Several IPInstances claim one address. The address stays taken (it is never handed out
    /// while the conflict lasts) and is held for `kept`, the first claimant in (namespace,
    /// name) order; `others` must be resolved by a person or the leak GC.
    #[error("{ip} in subnet {subnet:?} is claimed by {kept} and also by {others:?}")]
    DuplicateIp {
        ip: IpAddr,
        subnet: String,
        kept: InstanceRef,
        others: Vec<InstanceRef>,
    },
    /// Two pods of one network carry the same MAC; the pod whose address sorts first keeps
    /// it, the other gets no MAC recorded and is given a fresh one on its next `allocate_mac`.
    #[error("MAC {mac} is used by pod {kept} and pod {other} in network {network:?}")]
    DuplicateMac {
        mac: MacAddr,
        network: String,
        kept: PodKey,
        other: PodKey,
    },
}
