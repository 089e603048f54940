//! IP arithmetic on 128-bit integers and the one prefix type, [`Cidr`]: they live in
//! `hybridnet-rules` (crds/rules/src/prefix.rs) so that the BGP speaker and the static CNI plugin
//! share them without this crate's Kubernetes dependencies.

pub use hybridnet_rules::prefix::{
    Cidr, InterfaceAddress, interface_serde, ip_to_u128, parse_ip, range_to_cidrs, u128_to_ip,
};
