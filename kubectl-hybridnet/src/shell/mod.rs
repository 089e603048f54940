//! The I/O shell of the plugin: connection, API access, printing, and the commands.

pub mod cluster_connect;
pub mod commands;
pub mod completion;
pub mod connect;
pub mod io;
pub mod migrate;
pub mod print;
pub mod trace;
pub mod uninstall;
pub mod wait;
