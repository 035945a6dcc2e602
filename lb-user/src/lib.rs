//! The agent of the XDP load balancer: loads the data path and programs it.

pub mod agent;
pub mod config;
pub mod dataplane;
pub mod glob;
pub mod health;
pub mod import;
pub mod maglev;
pub mod par;
pub mod plan;
pub mod server;
pub mod status;
pub mod sync;
pub mod sys;
pub mod vrrp;
