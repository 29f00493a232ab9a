//! contera-agent: makes the recorder's key, enrolls it with a registration code, then
//! keeps it reporting to the provisioning server.

pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod enroll;
pub mod hardware;
pub mod heartbeat;
pub mod identity;
pub mod logging;
pub mod retry;
pub mod state;
pub mod zero_touch;
