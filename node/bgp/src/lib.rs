//! A small BGP-4 speaker for the hybridnet node agent.
pub mod prefix;
pub mod wire;
