//! contera-agent: makes the recorder's key, enrolls it with a registration code, then
//! keeps it reporting to the provisioning server.
//!
//! `lifecycle` decides (pure, no I/O); `daemon` is the shell that carries its decisions
//! out; `process` is where the shell meets signals and the environment.

pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod enroll;
pub mod failure;
pub mod hardware;
pub mod heartbeat;
pub mod identity;
pub mod lifecycle;
pub mod logging;
pub mod process;
pub mod retry;
pub mod state;
pub mod zero_touch;
