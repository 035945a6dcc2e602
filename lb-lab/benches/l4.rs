//! `cargo xtask bench l4`: the same lab, backends and client for four
//! setups, side by side in one run:
//!
//! - direct: the client to one backend (the ceiling);
//! - hop: the client to that backend through a bare XDP forwarder on lb1,
//!   the lab's limit for any one-armed XDP balancer;
//! - xlb: our agent on lb1, native XDP;
//! - nginx: Debian's nginx `stream` on lb1 (TCP and UDP);
//! - haproxy: Debian's HAProxy `mode tcp` on lb1 (no UDP).
//!
//! For each: HTTP requests/s with keep-alive and with a new connection per
//! request (wrk), DNS queries/s (dnsperf), latency p50/p99 (wrk), and the
//! whole machine's CPU time per 1,000 requests from /proc/stat, also minus
//! the direct setup's, which is what the LB adds. Writes
//! `docs/bench/l4.{json,md,svg}`.

use nix::sys::signal::Signal;
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use lb_lab::lab::{self, backend_addr, Lab, BACKENDS, VIP};

const SECS: u32 = 5;
const ROUNDS: usize = 3;
const SETUPS: [&str; 5] = ["direct", "hop", "xlb", "nginx", "haproxy"];
const TESTS: [&str; 5] = [
    "http_keepalive",
    "http_close",
    "dns",
    "close_fixed",
    "dns_fixed",
];
/// The fixed loads at which CPU per request is compared: below every
/// setup's limit, so the machine is not saturated and the busy time is the
/// work done, not 1 / throughput.
const FIXED_CLOSE: u32 = 2000;
const FIXED_DNS: u32 = 5000;
/// Length of the sustained new-connection run.
const STAMINA_SECS: u32 = 60;
/// The UDP port of the packet-rate test; backends drop it with nftables.
const SINK_PORT: u16 = 9;
/// Frames per packet-rate run.
const FRAMES: u32 = 3_000_000;

/// One measurement.
#[derive(Debug, Clone, Default)]
struct Sample {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Whole-machine busy CPU ms per 1,000 requests.
    cpu_ms_per_1k: f64,
    errors: u64,
}

/// A point in time for [`busy_ms_since`]: wall clock and the machine's
/// idle, iowait and steal ticks.
struct CpuMark {
    at: std::time::Instant,
    not_busy: u64,
}

fn cpu_mark() -> Result<CpuMark> {
    Ok(CpuMark {
        at: std::time::Instant::now(),
        not_busy: netlab::proc::machine_not_busy_ticks()?,
    })
}

/// Busy CPU ms of the whole machine since `m`: wall time × CPUs minus idle,
/// iowait and steal. Idle time is measured exactly on a tickless kernel,
/// while the busy fields are sampled at ticks and miss short bursts.
fn busy_ms_since(m: &CpuMark) -> Result<f64> {
    let now = cpu_mark()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall = now.at.duration_since(m.at).as_secs_f64() * 1000.0 * cpus;
    let idle = (now.not_busy - m.not_busy) as f64 / netlab::proc::ticks_per_sec() * 1000.0;
    Ok((wall - idle).max(0.0))
}

/// `12.5us`, `3.1ms`, `1.2s` → ms.
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

fn wrk(lab: &Lab, target: &str, close: bool) -> Result<Sample> {
    wrk_for(lab, target, close, SECS)
}

fn wrk_for(lab: &Lab, target: &str, close: bool, secs: u32) -> Result<Sample> {
    let url = format!("http://{target}/");
    let secs = format!("{secs}s");
    let mut args = vec![
        "wrk",
        "-t1",
        "-c32",
        "-d",
        &secs,
        "--latency",
        "--timeout",
        "2s",
    ];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let before = cpu_mark()?;
    let out = lab.client.exec(&args)?;
    let cpu = busy_ms_since(&before)?;
    let mut s = Sample::default();
    let mut requests = 0.0;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", r] => s.rate = r.parse()?,
            ["50%", v] => s.p50_ms = wrk_ms(v).unwrap_or(0.0),
            ["99%", v] => s.p99_ms = wrk_ms(v).unwrap_or(0.0),
            [n, "requests", "in", ..] => requests = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                s.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    if requests == 0.0 {
        bail!("wrk {url}: no requests completed:\n{out}");
    }
    s.cpu_ms_per_1k = cpu / requests * 1000.0;
    Ok(s)
}

fn dnsperf(lab: &Lab, dir: &Path, target: &str, max_qps: Option<u32>) -> Result<Sample> {
    let data = dir.join("queries.txt");
    std::fs::write(&data, "whoami.demo TXT\n")?;
    let before = cpu_mark()?;
    let qps = max_qps.map(|q| q.to_string());
    let limit: Vec<&str> = match &qps {
        Some(q) => vec!["-Q", q],
        None => vec![],
    };
    let out = lab.client.exec(
        &[
            &["dnsperf"][..],
            &limit,
            &[
                "-s",
                target,
                "-d",
                &data.to_string_lossy(),
                "-l",
                &SECS.to_string(),
                "-c",
                "8",
                "-q",
                "64",
                "-t",
                "1",
            ],
        ]
        .concat(),
    )?;
    let cpu = busy_ms_since(&before)?;
    let mut s = Sample::default();
    let mut completed = 0.0;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Queries", "per", "second:", q] => s.rate = q.parse()?,
            ["Queries", "completed:", n, ..] => completed = n.parse()?,
            ["Queries", "lost:", n, ..] => s.errors = n.parse()?,
            // dnsperf gives no percentiles: its average goes in the p50 slot.
            ["Average", "Latency", "(s):", avg, ..] => s.p50_ms = avg.parse::<f64>()? * 1000.0,
            _ => {}
        }
    }
    if completed == 0.0 {
        bail!("dnsperf {target}: no query completed:\n{out}");
    }
    s.cpu_ms_per_1k = cpu / completed * 1000.0;
    Ok(s)
}

/// FIXED_CLOSE requests/s, each on a new connection, for SECS s, from 8
/// paced client threads.
fn fixed_close(lab: &Lab, target: &str) -> Result<Sample> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let addr = std::net::SocketAddrV4::new(target.parse()?, 80);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let threads = 8;
    let period = Duration::from_secs_f64(threads as f64 / FIXED_CLOSE as f64);
    let before = cpu_mark()?;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                lab.client.enter().unwrap();
                let end = std::time::Instant::now() + Duration::from_secs(SECS as u64);
                let mut next = std::time::Instant::now();
                while next < end {
                    match lb_lab::traffic::http_once(addr) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    next += period;
                    std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
                }
            });
        }
    });
    let cpu = busy_ms_since(&before)?;
    let done = ok.load(Ordering::Relaxed) as f64;
    if done == 0.0 {
        bail!("no request to {addr} completed");
    }
    Ok(Sample {
        rate: done / SECS as f64,
        cpu_ms_per_1k: cpu / done * 1000.0,
        errors: failed.load(Ordering::Relaxed),
        ..Sample::default()
    })
}

/// How many backends the balancers (xlb, nginx, HAProxy) spread over:
/// `L4_BACKENDS`, 1 to 3, default all three. With 1 every setup talks to b1
/// alone, as direct does, so the CPU added is the balancer's own work only.
fn lb_backends() -> usize {
    std::env::var("L4_BACKENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=BACKENDS).contains(n))
        .unwrap_or(BACKENDS)
}

fn xlb_config() -> String {
    let mode = std::env::var("L4_XDP_MODE").unwrap_or_else(|_| "native".into());
    let backends = lb_backends();
    let service = |name: &str, port: u16, proto: &str| {
        let mut s = format!(
            "  - name: {name}\n    vip: {VIP}\n    port: {port}\n    protocol: {proto}\n    \
             snat: {{addresses: [{VIP}], ports: 1024-65535}}\n    real_servers:\n"
        );
        for b in 0..backends {
            // dnsmasq answers TCP too: a cheap check for both services.
            s += &format!(
                "      - {{address: {}, port: {port}, tcp_check: {{connect_timeout: 1}}}}\n",
                backend_addr(b)
            );
        }
        s
    };
    // The packet-rate test's UDP sink: no checker, always up.
    let sink: String = (0..BACKENDS)
        .map(|b| {
            format!(
                "      - {{address: {}, port: {SINK_PORT}}}\n",
                backend_addr(b)
            )
        })
        .collect();
    format!(
        "global:\n  interface: eth0\n  xdp_mode: {mode}\nvirtual_servers:\n{}{}\
         \x20 - name: sink\n    vip: {VIP}\n    port: {SINK_PORT}\n    protocol: udp\n    \
         snat: {{addresses: [{VIP}], ports: 1024-65535}}\n    real_servers:\n{sink}",
        service("web", 80, "tcp"),
        service("dns", 53, "udp")
    )
}

fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    let ups = |port: u16| {
        (0..lb_backends())
            .map(|b| format!("server {}:{port};", backend_addr(b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes auto;\ndaemon off;\npid {d}/lbnginx.pid;\nerror_log {d}/lbnginx.err error;\n\
         events {{ worker_connections 16384; }}\n\
         stream {{\n\
         \x20 upstream web {{ {} }}\n  upstream dns {{ {} }}\n\
         \x20 server {{ listen {VIP}:80 backlog=4096; proxy_pass web; }}\n\
         \x20 server {{ listen {VIP}:53 udp; proxy_pass dns; proxy_responses 1; proxy_timeout 2s; }}\n}}\n",
        ups(80),
        ups(53)
    )
}

fn haproxy_conf() -> String {
    let servers: String = (0..lb_backends())
        .map(|b| format!("  server b{} {}:80\n", b + 1, backend_addr(b)))
        .collect();
    format!(
        "global\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         frontend web\n  bind {VIP}:80\n  default_backend web\n\
         backend web\n  balance roundrobin\n{servers}"
    )
}

/// Whether `name` is in the comma list of `var` (`L4_SETUPS`, `L4_TESTS`),
/// which narrows a run for a quick look; everything is when it is unset.
fn picked(var: &str, name: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.split(',').any(|x| x == name))
}

/// Runs `setup`'s tests on the prepared lab.
fn measure(lab: &Lab, dir: &Path, setup: &str, test: &str) -> Result<Option<Sample>> {
    let target = if setup == "direct" || setup == "hop" {
        backend_addr(0).to_string()
    } else {
        VIP.to_string()
    };
    Ok(match test {
        "http_keepalive" => Some(wrk(lab, &target, false)?),
        "http_close" => Some(wrk(lab, &target, true)?),
        "dns" if setup == "haproxy" => None,
        "dns" => Some(dnsperf(lab, dir, &target, None)?),
        "close_fixed" => Some(fixed_close(lab, &target)?),
        "dns_fixed" if setup == "haproxy" => None,
        "dns_fixed" => Some(dnsperf(lab, dir, &target, Some(FIXED_DNS))?),
        _ => unreachable!(),
    })
}

/// Starts the proxy of `setup` on lb1 (nothing for direct and xlb); the
/// lab records it, so it is stopped even if the benchmark dies.
fn start_proxy(lab: &Lab, dir: &Path, setup: &str) -> Result<Option<String>> {
    let mut cmd = match setup {
        "nginx" => {
            let conf = dir.join("lbnginx.conf");
            std::fs::write(&conf, nginx_conf(dir))?;
            let mut c = std::process::Command::new("nginx");
            c.arg("-c").arg(conf).arg("-e").arg(dir.join("lbnginx.err"));
            c
        }
        "haproxy" => {
            let conf = dir.join("haproxy.cfg");
            std::fs::write(&conf, haproxy_conf())?;
            let mut c = std::process::Command::new("haproxy");
            c.arg("-db").arg("-f").arg(conf);
            c
        }
        _ => return Ok(None),
    };
    let name = format!("proxy-{setup}");
    lab.spawn(&lab.lbs[0], &name, &mut cmd)?;
    let vip = std::net::SocketAddrV4::new(VIP, 80);
    lab::wait_tcp(&lab.client, vip, Duration::from_secs(5))
        .with_context(|| format!("{setup} does not listen:\n{}", lab.log_tail(&name, 10)))?;
    Ok(Some(name))
}

fn machine() -> String {
    let cpu = netlab::proc::cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = netlab::sh(&["uname", "-r"]).unwrap_or_default();
    let kernel = kernel.trim();
    format!("{cores} × {cpu}, kernel {kernel}")
}

/// A 60-byte UDP frame from the client to VIP:SINK_PORT (64 on the wire).
fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&lab::CLIENT.octets());
    f.extend_from_slice(&VIP.octets());
    let csum = lb_user::vrrp::wire::checksum(&[&f[ip_start..ip_start + 20]]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
    // UDP 40000 -> SINK_PORT, length 26, checksum 0 (none), 18 bytes payload.
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&SINK_PORT.to_be_bytes());
    f.extend_from_slice(&[0, 26, 0, 0]);
    f.extend_from_slice(&[0xab; 18]);
    f
}

/// Sends FRAMES frames from the client with `test_run` live frames; the
/// packets per second that reached the backends, and the send rate.
fn pps_run(lab: &Lab) -> Result<(f64, f64)> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
    let frame = udp_frame(lab.client.mac("eth0")?, lab.lbs[0].mac("eth0")?);
    let before: u64 = (0..BACKENDS)
        .map(|b| lab.backends[b].rx_packets("eth0"))
        .sum::<Result<u64>>()?;
    let sent_secs = lab.client.within(|| -> Result<f64> {
        let ifindex = lb_user::sys::ifindex("eth0")?;
        let mut obj = aya::Ebpf::load(lb_user::dataplane::BENCH_OBJECT)?;
        let prog: &mut Xdp = obj.program_mut("tx").context("tx")?.try_into()?;
        prog.load()?;
        let ctx = netlab::xdp::test_ctx(frame.len(), ifindex);
        let start = std::time::Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: FRAMES,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        })?;
        Ok(start.elapsed().as_secs_f64())
    })??;
    // Let the queues drain before counting.
    std::thread::sleep(Duration::from_millis(500));
    let after: u64 = (0..BACKENDS)
        .map(|b| lab.backends[b].rx_packets("eth0"))
        .sum::<Result<u64>>()?;
    let delivered = after.saturating_sub(before) as f64;
    Ok((delivered / sent_secs, FRAMES as f64 / sent_secs))
}

/// Attaches the bare forwarder to lb1 with `hops` (destination → MAC); it
/// is detached when the returned object is dropped.
fn attach_forward(lab: &Lab, hops: &[(std::net::Ipv4Addr, [u8; 6])]) -> Result<aya::Ebpf> {
    let mut fwd = lab.lbs[0].within(|| lab::attach_bench("forward", "eth0"))??;
    let mut map: aya::maps::HashMap<_, u32, [u8; 8]> =
        aya::maps::HashMap::try_from(fwd.map_mut("NEXT_HOPS").context("NEXT_HOPS")?)?;
    for (addr, mac) in hops {
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(mac);
        map.insert(u32::from_ne_bytes(addr.octets()), v, 0)?;
    }
    Ok(fwd)
}

/// The `hop` setup: the client reaches b1, and b1 the client, through the
/// bare forwarder on lb1 (static neighbours point at lb1's MAC). The same
/// extra path as a one-armed LB, with no LB work: the lab's limit for any
/// XDP balancer. Undone by [`Hop::drop`].
struct Hop<'a> {
    lab: &'a Lab,
    _fwd: aya::Ebpf,
}

impl<'a> Hop<'a> {
    fn start(lab: &'a Lab) -> Result<Self> {
        let lb = lab.lbs[0].mac("eth0")?;
        let fwd = attach_forward(
            lab,
            &[
                (backend_addr(0), lab.backends[0].mac("eth0")?),
                (lab::CLIENT, lab.client.mac("eth0")?),
            ],
        )?;
        let hop = Hop { lab, _fwd: fwd };
        for (ns, to) in hop.neighbours() {
            ns.neigh_replace(to, lb, "eth0")?;
        }
        Ok(hop)
    }

    /// The neighbour entries the hop overrides: (namespace, peer).
    fn neighbours(&self) -> [(&'a netlab::Netns, std::net::Ipv4Addr); 2] {
        [
            (&self.lab.client, backend_addr(0)),
            (&self.lab.backends[0], lab::CLIENT),
        ]
    }
}

impl Drop for Hop<'_> {
    fn drop(&mut self) {
        for (ns, to) in self.neighbours() {
            let _ = ns.neigh_del(to, "eth0");
        }
    }
}

/// Packets per second through the bare forwarder and through xlb.
fn pps(lab: &Lab, rounds: usize) -> Result<Vec<(String, f64, f64)>> {
    for b in &lab.backends {
        b.exec(&["nft", "add table inet sink"])?;
        b.exec(&[
            "nft",
            "add chain inet sink in { type filter hook input priority 0; }",
        ])?;
        b.exec(&[
            "nft",
            &format!("add rule inet sink in udp dport {SINK_PORT} drop"),
        ])?;
    }
    let next_hop = lab.backends[0].mac("eth0")?;
    let mut out = Vec::new();
    for round in 0..rounds {
        {
            let _fwd = attach_forward(lab, &[(VIP, next_hop)])?;
            let (got, sent) = pps_run(lab)?;
            println!(
                "round {} forward  {:>6.3} Mpps delivered, {:.3} Mpps sent",
                round + 1,
                got / 1e6,
                sent / 1e6
            );
            out.push(("forward".to_string(), got, sent));
        }
        lab.start_agent(0)?;
        std::thread::sleep(Duration::from_secs(2));
        let (got, sent) = pps_run(lab)?;
        println!(
            "round {} xlb      {:>6.3} Mpps delivered, {:.3} Mpps sent",
            round + 1,
            got / 1e6,
            sent / 1e6
        );
        out.push(("xlb".to_string(), got, sent));
        lab.stop_agent(0, Signal::SIGTERM);
    }
    Ok(out)
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    lab::check_tools()?;
    for tool in ["wrk", "dnsperf", "haproxy"] {
        netlab::sh(&["sh", "-c", &format!("command -v {tool}")])
            .with_context(|| format!("{tool} is not installed: run `cargo xtask setup`"))?;
    }
    let lab = Lab::for_bench("l4", true)?;
    let dir = lab.dir.clone();
    std::fs::write(&lab.opts.config, xlb_config())?;
    // The VIP on lb1, for ARP: XDP serves it for xlb, the proxies listen on it.
    lab.lbs[0].add_addr("eth0", &format!("{VIP}/24"))?;
    lab.lbs[0].sysctl("net.core.somaxconn", "4096")?;
    // results[setup][test] = samples
    let mut results: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); TESTS.len()]; SETUPS.len()];
    // `-- pps` runs only the packet-rate part.
    let rounds = if std::env::args().any(|a| a == "pps" || a == "stamina") {
        0
    } else {
        std::env::var("L4_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ROUNDS)
    };
    // A narrowed run prints its samples and writes no report.
    let partial = std::env::var_os("L4_SETUPS").is_some() || std::env::var_os("L4_TESTS").is_some();
    for round in 0..rounds {
        for (si, setup) in SETUPS.iter().enumerate() {
            if !picked("L4_SETUPS", setup) {
                continue;
            }
            if *setup == "xlb" {
                lab.start_agent(0)?;
                std::thread::sleep(Duration::from_secs(2));
            }
            let proxy = start_proxy(&lab, &dir, setup)?;
            let hop = if *setup == "hop" {
                Some(Hop::start(&lab)?)
            } else {
                None
            };
            // The light fixed loads first, before the saturating runs leave
            // TIME_WAIT sockets and timers behind.
            for ti in [3, 4, 0, 1, 2] {
                let test = &TESTS[ti];
                if !picked("L4_TESTS", test) {
                    continue;
                }
                let lb_proc = match *setup {
                    "xlb" => lab.pid("lb1"),
                    "direct" | "hop" => None,
                    other => lab.pid(&format!("proxy-{other}")),
                };
                let proc_before = lb_proc.map(netlab::proc::cpu_ms);
                if let Some(s) = measure(&lab, &dir, setup, test)? {
                    let proc_ms = lb_proc
                        .map(netlab::proc::cpu_ms)
                        .zip(proc_before)
                        .map(|(a, b)| a - b);
                    println!(
                        "round {} {setup:<8} {test:<15} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU {:>6.1} ms/1k  errors {}  LB process {} ms",
                        round + 1,
                        s.rate,
                        s.p50_ms,
                        s.p99_ms,
                        s.cpu_ms_per_1k,
                        s.errors,
                        proc_ms.map_or("-".into(), |m| format!("{m:.0}"))
                    );
                    results[si][ti].push(s);
                }
                // Let TIME_WAIT and conntrack settle between runs.
                std::thread::sleep(Duration::from_secs(1));
            }
            drop(hop);
            if let Some(p) = proxy {
                // SIGTERM: nginx's master stops its workers.
                lab.stop(&p, Signal::SIGTERM);
            }
            if *setup == "xlb" {
                lab.stop_agent(0, Signal::SIGTERM);
            }
        }
    }
    let only_stamina = std::env::args().any(|a| a == "stamina");
    if partial && !only_stamina {
        summary(&results);
        return Ok(());
    }
    let stamina = if rounds > 0 || only_stamina {
        stamina(&lab, &dir)?
    } else {
        Vec::new()
    };
    if only_stamina {
        return Ok(());
    }
    let rates = pps(&lab, ROUNDS)?;
    report(&results, &stamina, &rates)?;
    Ok(())
}

/// New connections as fast as they come for STAMINA_SECS, direct, through
/// xlb and through nginx: does the LB run out of source ports to the
/// backends, and does the rate hold?
fn stamina(lab: &Lab, dir: &Path) -> Result<Vec<(String, Sample)>> {
    let mut out = Vec::new();
    for setup in ["direct", "xlb", "nginx"] {
        if !picked("L4_SETUPS", setup) {
            continue;
        }
        if setup == "xlb" {
            lab.start_agent(0)?;
            std::thread::sleep(Duration::from_secs(2));
        }
        let proxy = start_proxy(lab, dir, setup)?;
        let target = if setup == "direct" {
            backend_addr(0).to_string()
        } else {
            VIP.to_string()
        };
        let s = wrk_for(lab, &target, true, STAMINA_SECS)?;
        // Why a rate does not hold: the kernel's TCP counters at both ends.
        for ns in [&lab.client, &lab.backends[0]] {
            let out = ns.exec(&["nstat", "-a"]).unwrap_or_default();
            let keys = [
                "TcpExtTCPSynRetrans",
                "TcpExtTW",
                "TcpExtTWRecycled",
                "TcpExtPAWSEstab",
                "TcpExtTCPTimeWaitOverflow",
                "TcpExtTCPChallengeACK",
                "TcpExtListenOverflows",
                "TcpExtListenDrops",
                "TcpExtTCPAbortOnData",
                "TcpAttemptFails",
                "TcpEstabResets",
                "TcpExtTCPSYNChallenge",
                "TcpExtTSECRRejected",
                "TcpExtPAWSActive",
            ];
            let picked: Vec<String> = out
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let (k, v) = (w.next()?, w.next()?);
                    (keys.contains(&k) && v != "0").then(|| format!("{k} {v}"))
                })
                .collect();
            println!("stamina {setup} {}: {}", ns.name, picked.join(", "));
            let _ = ns.exec(&["nstat", "-r"]);
        }
        if setup == "xlb" {
            // Where flows went: the data path's counted reasons.
            if let Ok(st) = lab.status(0) {
                let reasons: Vec<String> = st["reasons"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                println!("stamina xlb reasons: {}", reasons.join(", "));
            }
        }
        println!(
            "stamina {setup:<6} {STAMINA_SECS} s of new connections: {:.0}/s, {} errors",
            s.rate, s.errors
        );
        out.push((setup.to_string(), s));
        if let Some(p) = proxy {
            lab.stop(&p, Signal::SIGTERM);
        }
        if setup == "xlb" {
            lab.stop_agent(0, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(out)
}

/// A narrowed run's summary: per test, each setup's median CPU per 1,000
/// requests, what it adds over direct, and xlb's added CPU as a fraction
/// of nginx's and HAProxy's, per round (rounds are interleaved) and as the
/// ratio of the medians.
fn summary(results: &[Vec<Vec<Sample>>]) {
    let ix = |name: &str| SETUPS.iter().position(|s| *s == name).unwrap();
    println!("\nbackends behind each balancer: {}", lb_backends());
    for (ti, test) in TESTS.iter().enumerate() {
        let cpu = |setup: &str| -> Vec<f64> {
            results[ix(setup)][ti]
                .iter()
                .map(|s| s.cpu_ms_per_1k)
                .collect()
        };
        let direct = cpu("direct");
        let mut line = format!("{test}: CPU ms/1k, medians:");
        for setup in SETUPS {
            let c = cpu(setup);
            if c.is_empty() {
                continue;
            }
            let _ = write!(line, " {setup} {:.1}", median(&c));
            if !direct.is_empty() && setup != "direct" {
                let _ = write!(line, " ({:+.1})", median(&c) - median(&direct));
            }
        }
        if cpu("xlb").is_empty() && cpu("direct").is_empty() {
            continue;
        }
        println!("{line}");
        for peer in ["nginx", "haproxy"] {
            let (x, p) = (cpu("xlb"), cpu(peer));
            if direct.is_empty() || x.is_empty() || p.is_empty() {
                continue;
            }
            let rounds: Vec<String> = direct
                .iter()
                .zip(&x)
                .zip(&p)
                .map(|((d, x), p)| format!("{:.2}", (x - d) / (p - d)))
                .collect();
            let d = median(&direct);
            println!(
                "  xlb's added CPU / {peer}'s: {:.2} (medians); per round: {}",
                (median(&x) - d) / (median(&p) - d),
                rounds.join(", ")
            );
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(
    results: &[Vec<Vec<Sample>>],
    stamina: &[(String, Sample)],
    rates: &[(String, f64, f64)],
) -> Result<()> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
    std::fs::create_dir_all(&out)?;
    let med = |si: usize, ti: usize, f: fn(&Sample) -> f64| {
        median(&results[si][ti].iter().map(f).collect::<Vec<_>>())
    };
    let direct_cpu = |ti: usize| med(0, ti, |s| s.cpu_ms_per_1k);
    // JSON
    let mut json = serde_json::Map::new();
    json.insert("machine".into(), machine().into());
    json.insert("command".into(), "cargo xtask bench l4".into());
    json.insert("rounds".into(), ROUNDS.into());
    json.insert("seconds_per_run".into(), SECS.into());
    for (si, setup) in SETUPS.iter().enumerate() {
        let mut m = serde_json::Map::new();
        for (ti, test) in TESTS.iter().enumerate() {
            if results[si][ti].is_empty() {
                continue;
            }
            let samples: Vec<serde_json::Value> = results[si][ti]
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "rate": s.rate, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                        "cpu_ms_per_1k": s.cpu_ms_per_1k, "errors": s.errors,
                    })
                })
                .collect();
            m.insert((*test).into(), samples.into());
        }
        json.insert((*setup).into(), m.into());
    }
    let pps_of = |who: &str| {
        median(
            &rates
                .iter()
                .filter(|r| r.0 == who)
                .map(|r| r.1)
                .collect::<Vec<_>>(),
        )
    };
    let (fwd, ours) = (pps_of("forward"), pps_of("xlb"));
    json.insert(
        "stamina".into(),
        stamina
            .iter()
            .map(|(who, s)| serde_json::json!({"setup": who, "seconds": STAMINA_SECS, "rate": s.rate, "errors": s.errors}))
            .collect::<Vec<_>>()
            .into(),
    );
    let runs: Vec<serde_json::Value> = rates
        .iter()
        .map(|r| serde_json::json!({"setup": r.0, "delivered_pps": r.1, "sent_pps": r.2}))
        .collect();
    json.insert(
        "pps".into(),
        serde_json::json!({
            "frames_per_run": FRAMES,
            "runs": runs,
            "forward_median_pps": fwd,
            "xlb_median_pps": ours,
            "xlb_over_forward": ours / fwd.max(1.0),
        }),
    );
    std::fs::write(
        out.join("l4.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    // Markdown
    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}. Command: `cargo xtask bench l4` ({ROUNDS} rounds of {SECS} s per cell, medians; wrk -t1 -c32, dnsperf -c8 -q64).\n", machine());
    let _ = writeln!(md, "| setup | HTTP keep-alive req/s | p50 / p99 ms | new conns/s (Connection: close) | p50 / p99 ms | DNS q/s | CPU ms per 1k: keep-alive / close / DNS | added over direct |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for (si, setup) in SETUPS.iter().enumerate() {
        let cell = |ti: usize| {
            if results[si][ti].is_empty() {
                return (
                    "n/a".to_string(),
                    "n/a".to_string(),
                    "n/a".to_string(),
                    "n/a".to_string(),
                );
            }
            let cpu = med(si, ti, |s| s.cpu_ms_per_1k);
            (
                format!("{:.0}", med(si, ti, |s| s.rate)),
                format!(
                    "{:.2} / {:.2}",
                    med(si, ti, |s| s.p50_ms),
                    med(si, ti, |s| s.p99_ms)
                ),
                format!("{cpu:.1}"),
                format!("{:+.1}", cpu - direct_cpu(ti)),
            )
        };
        let (ka, ka_l, ka_c, ka_a) = cell(0);
        let (cl, cl_l, cl_c, cl_a) = cell(1);
        let (dn, _, dn_c, dn_a) = cell(2);
        let _ = writeln!(
            md,
            "| {setup} | {ka} | {ka_l} | {cl} | {cl_l} | {dn} | {ka_c} / {cl_c} / {dn_c} | {ka_a} / {cl_a} / {dn_a} |"
        );
    }
    let _ = writeln!(
        md,
        "\nCPU at a fixed load ({FIXED_CLOSE} new connections/s from 8 paced client threads, {FIXED_DNS} DNS q/s from dnsperf -Q): \
         whole-machine busy ms per 1,000 requests (wall time × CPUs − idle − iowait − steal), and what each setup adds over direct.\n"
    );
    let _ = writeln!(
        md,
        "| setup | new conns/s achieved | CPU ms per 1k | added | DNS q/s achieved | CPU ms per 1k | added |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (si, setup) in SETUPS.iter().enumerate() {
        let mut row = format!("| {setup} |");
        for ti in [3, 4] {
            if results[si][ti].is_empty() {
                row += " n/a | n/a | n/a |";
                continue;
            }
            let cpu = med(si, ti, |s| s.cpu_ms_per_1k);
            row += &format!(
                " {:.0} | {cpu:.1} | {:+.1} |",
                med(si, ti, |s| s.rate),
                cpu - direct_cpu(ti)
            );
        }
        let _ = writeln!(md, "{row}");
    }
    let ix = |name: &str| SETUPS.iter().position(|s| *s == name).unwrap();
    let (hop, xlb, nginx, haproxy) = (ix("hop"), ix("xlb"), ix("nginx"), ix("haproxy"));
    let ratio =
        |ti: usize, a: usize, b: usize| med(a, ti, |s| s.rate) / med(b, ti, |s| s.rate).max(1.0);
    let added =
        |ti: usize, si: usize| (med(si, ti, |s| s.cpu_ms_per_1k) - direct_cpu(ti)).max(0.001);
    let _ = writeln!(
        md,
        "\nThe lab's limit: `hop` is a bare XDP forwarder on lb1 (MAC rewrite and XDP_TX, no LB work) between the client and b1, \
         the same extra path a one-armed balancer adds. hop / direct: keep-alive {:.2}, close {:.2}, DNS {:.2}; \
         CPU it adds at the fixed load: new connections {:+.1}, DNS {:+.1} ms per 1k.",
        ratio(0, hop, 0),
        ratio(1, hop, 0),
        ratio(2, hop, 0),
        added(3, hop),
        added(4, hop),
    );
    let _ = writeln!(
        md,
        "\nRatios: xlb / direct: keep-alive {:.2}, close {:.2}, DNS {:.2}. xlb / hop: keep-alive {:.2}, close {:.2}, DNS {:.2}. \
         xlb / nginx: close {:.2}, DNS {:.2}. xlb / haproxy: close {:.2}. \
         CPU added per request at the fixed load, xlb / nginx: new connections {:.2}, DNS {:.2}; xlb / haproxy: new connections {:.2}.",
        ratio(0, xlb, 0),
        ratio(1, xlb, 0),
        ratio(2, xlb, 0),
        ratio(0, xlb, hop),
        ratio(1, xlb, hop),
        ratio(2, xlb, hop),
        ratio(1, xlb, nginx),
        ratio(2, xlb, nginx),
        ratio(1, xlb, haproxy),
        added(3, xlb) / added(3, nginx),
        added(4, xlb) / added(4, nginx),
        added(3, xlb) / added(3, haproxy),
    );
    for (who, st) in stamina {
        let _ = writeln!(
            md,
            "\nStamina, {who}: {STAMINA_SECS} s of new connections (wrk -c32, `Connection: close`): {:.0}/s, {} socket errors or non-2xx.",
            st.rate, st.errors
        );
    }
    let _ = writeln!(
        md,
        "\nPackets per second (64-byte UDP frames sent by `test_run` live frames from the client, counted at the backends' interfaces, median of {ROUNDS}): \
         bare XDP forwarder on lb1 {:.3} Mpps, xlb {:.3} Mpps: **{:.0} %** of the limit.",
        fwd / 1e6,
        ours / 1e6,
        ours / fwd.max(1.0) * 100.0
    );
    std::fs::write(out.join("l4.md"), &md)?;
    print!("\n{md}");
    chart(&out.join("l4.svg"), results)?;
    println!("\nwrote {}", out.display());
    Ok(())
}

fn chart(path: &Path, results: &[Vec<Vec<Sample>>]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1050, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let titles = [
        "HTTP keep-alive req/s",
        "new connections/s",
        "DNS queries/s",
    ];
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(188, 189, 34),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    ];
    for (ti, panel) in panels.iter().enumerate() {
        let vals: Vec<f64> = (0..SETUPS.len())
            .map(|si| median(&results[si][ti].iter().map(|s| s.rate).collect::<Vec<_>>()))
            .collect();
        let top = vals.iter().cloned().fold(1.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(panel)
            .caption(titles[ti], ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..SETUPS.len()).into_segmented(), 0.0..top)?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => SETUPS.get(*i).copied().unwrap_or("").to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .draw()?;
        c.draw_series(vals.iter().enumerate().map(|(si, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(si), 0.0),
                    (SegmentValue::Exact(si + 1), *v),
                ],
                colors[si].filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
    }
    root.present()?;
    Ok(())
}
