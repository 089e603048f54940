//! What runs the controllers: the replica, leadership terms and the Lease election, caches, the
//! per-term context and in-memory IPAM engine, configuration, the live pod defaults, the client
//! rate limit and metrics.

pub mod caches;
pub mod config;
pub mod context;
pub mod engine;
pub mod leader;
pub mod live_defaults;
pub mod metrics;
pub mod ratelimit;
pub mod replica;
pub mod run;
