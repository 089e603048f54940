//! The controllers: each reconciles one kind of object against the API and the in-memory IPAM.

pub mod ipinstance;
pub mod leak;
pub mod node;
pub mod nodeinfo;
pub mod pod;
pub mod remote_watch;
pub mod remotecluster;
pub mod status;
