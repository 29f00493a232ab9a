//! contera-provisioning: maps registration codes to accounts, issues recorder certificates
//! from its own device CA, and tracks which recorders are online.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod client_auth;
pub mod config;
pub mod connection;
pub mod console;
pub mod descriptors;
pub mod facts;
pub mod files;
pub mod limits;
pub mod mail;
pub mod mdns;
pub mod metrics;
pub mod passwords;
pub mod peer_cert;
pub mod permissions;
pub mod recorders;
pub mod scope;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod terminal;
pub mod users;
