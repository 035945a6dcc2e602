//! The parts of `cargo xtask bench l4` (`benches/l4.rs`), which compares
//! direct, a bare XDP forwarder, xlb, nginx `stream` and HAProxy on the
//! lab: the load drivers ([`drivers`]), the balancers' set-ups
//! ([`setups`]), the packet-rate harness ([`pps`]) and the reports
//! ([`report`]).

pub mod drivers;
pub mod pps;
pub mod report;
pub mod setups;

use anyhow::Result;

/// Seconds of each run.
pub const SECS: u32 = 5;
/// Rounds of every setup and test, interleaved.
pub const ROUNDS: usize = 3;
/// The setups compared, in report order.
pub const SETUPS: [&str; 5] = ["direct", "hop", "xlb", "nginx", "haproxy"];
/// The tests, in report order.
pub const TESTS: [&str; 5] = [
    "http_keepalive",
    "http_close",
    "dns",
    "close_fixed",
    "dns_fixed",
];
/// The fixed loads at which CPU per request is compared: below every
/// setup's limit, so the machine is not saturated and the busy time is the
/// work done, not 1 / throughput.
pub const FIXED_CLOSE: u32 = 2000;
/// DNS queries/s of the fixed-load test.
pub const FIXED_DNS: u32 = 5000;
/// Length of the sustained new-connection run.
pub const STAMINA_SECS: u32 = 60;
/// The UDP port of the packet-rate test; backends drop it with nftables.
pub const SINK_PORT: u16 = 9;
/// Frames per packet-rate run.
pub const FRAMES: u32 = 3_000_000;

/// One measurement.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Requests, connections or queries per second.
    pub rate: f64,
    /// Median latency (dnsperf: the average).
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Whole-machine busy CPU ms per 1,000 requests.
    pub cpu_ms_per_1k: f64,
    /// Failed requests: socket errors, non-2xx answers, lost queries.
    pub errors: u64,
}

/// A point in time for [`busy_ms_since`]: wall clock and the machine's
/// idle, iowait and steal ticks.
pub struct CpuMark {
    at: std::time::Instant,
    not_busy: u64,
}

/// Now, for [`busy_ms_since`].
pub fn cpu_mark() -> Result<CpuMark> {
    Ok(CpuMark {
        at: std::time::Instant::now(),
        not_busy: netlab::proc::machine_not_busy_ticks()?,
    })
}

/// Busy CPU ms of the whole machine since `m`: wall time × CPUs minus idle,
/// iowait and steal. Idle time is measured exactly on a tickless kernel,
/// while the busy fields are sampled at ticks and miss short bursts.
pub fn busy_ms_since(m: &CpuMark) -> Result<f64> {
    let now = cpu_mark()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall = now.at.duration_since(m.at).as_secs_f64() * 1000.0 * cpus;
    let idle = (now.not_busy - m.not_busy) as f64 / netlab::proc::ticks_per_sec() * 1000.0;
    Ok((wall - idle).max(0.0))
}

/// Whether `name` is in the comma list of `var` (`L4_SETUPS`, `L4_TESTS`),
/// which narrows a run for a quick look; everything is when it is unset.
pub fn picked(var: &str, name: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.split(',').any(|x| x == name))
}
