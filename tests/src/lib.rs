//! Shared fixtures of pylock's integration tests: real servers (see [`server`]) and small
//! helpers to watch a test's traces.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod docker;
pub mod outage;
pub mod server;
pub mod traces;

pub use cluster::TestCluster;
pub use server::{Kind, Needs, Provider, TestServer};
