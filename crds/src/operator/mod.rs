//! `operator.hybridnet.io/v1alpha1`: the operator's own API.

mod cluster;
pub mod hostdir;
pub mod podmatch;
pub mod values;

pub use cluster::*;
