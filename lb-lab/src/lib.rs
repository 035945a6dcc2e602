//! The network-namespace lab behind `cargo xtask demo`, the end-to-end
//! tests and the side-by-side benchmarks: real agents, real nginx and
//! dnsmasq backends, real client traffic.

pub mod bench;
pub mod flood;
pub mod lab;
pub mod traffic;
