//! `cargo xtask bench health`: the agent checking 1,000 real servers every
//! second (HTTP GET), on this 2-core machine. Reports the agent's CPU over a
//! measured window, its RSS, and check latency percentiles, and the CPU of
//! HAProxy doing the same checks on the same lab.
//!
//! The real servers are 1,000 addresses on one backend namespace, answered by
//! one HTTP server in this process (tokio, multi-threaded).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::netns::*;

const SERVERS: usize = 1000;
const WINDOW: Duration = Duration::from_secs(20);

fn addr(i: usize) -> String {
    format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn config(pin: &str) -> String {
    let mut s = format!(
        "global:\n  interface: lbc\n  xdp_mode: native\n  pin_path: {pin}\n  max_services: 4\n  max_backends: 2048\n  conntrack: {{max_entries: 65536}}\nvirtual_servers:\n  - name: web\n    vip: 10.95.0.100\n    port: 80\n    delay_loop: 1\n    snat: {{addresses: [10.95.0.1]}}\n    real_servers:\n"
    );
    for i in 0..SERVERS {
        s += &format!(
            "      - {{address: {}, port: 8080, http_get: {{path: /health, connect_timeout: 2, warmup: 1}}}}\n",
            addr(i)
        );
    }
    s
}

/// CPU of `pid` over WINDOW as (user %, system %) of one core, and the
/// checks per second the servers answered meanwhile.
fn measure(pid: u32, answered: &std::sync::atomic::AtomicU64) -> (f64, f64, f64) {
    use std::sync::atomic::Ordering::Relaxed;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, c0, n0) = (
        Instant::now(),
        netlab::proc::cpu_ticks(pid),
        answered.load(Relaxed),
    );
    std::thread::sleep(WINDOW);
    let (elapsed, c1, n1) = (
        t0.elapsed(),
        netlab::proc::cpu_ticks(pid),
        answered.load(Relaxed),
    );
    let secs = elapsed.as_secs_f64();
    let pct = |ticks: u64| ticks as f64 / hz / secs * 100.0;
    (pct(c1.0 - c0.0), pct(c1.1 - c0.1), (n1 - n0) as f64 / secs)
}

/// HAProxy checking the same servers the same way; its CPU as [`measure`]
/// gives it, or None when HAProxy is not installed.
fn haproxy(
    lb: &Netns,
    dir: &std::path::Path,
    answered: &std::sync::atomic::AtomicU64,
) -> Option<(f64, f64, f64)> {
    let mut cfg = String::from(
        "global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
         timeout server 30s\n  timeout check 2s\nfrontend web\n  bind 10.95.0.1:18080\n  default_backend pool\n\
         backend pool\n  option httpchk GET /health\n  default-server inter 1s fall 1 rise 1 check\n",
    );
    for i in 0..SERVERS {
        cfg += &format!("  server s{i} {}:8080\n", addr(i));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap());
    let mut child = lb.spawn(&mut cmd).ok()?;
    // Its first round of checks is spread over one interval; let it settle.
    std::thread::sleep(Duration::from_secs(5));
    let out = measure(child.id(), answered);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    Some(out)
}

fn status_json(sock: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["status", "--json", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn main() {
    reap_stale();
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("xlbt-{pid}-health"));
    std::fs::create_dir_all(&dir).unwrap();
    let pin = format!("/sys/fs/bpf/xlbt-{pid}-health");
    let lb = netns("hlb");
    let be = netns("hbe");
    lb.veth("lbc", &be, "eth0").unwrap();
    lb.add_addr("lbc", "10.95.0.1/24").unwrap();
    be.add_addr("eth0", "10.95.0.2/24").unwrap();
    lb.route_via("10.96.0.0/16", "10.95.0.2").unwrap();
    let addrs: Vec<String> = (0..SERVERS).map(|i| format!("{}/32", addr(i))).collect();
    be.add_addrs("eth0", &addrs).unwrap();

    // The HTTP server for all 1,000 addresses.
    be.enter().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("0.0.0.0:8080"))
        .unwrap();
    // Checks answered, so both checkers are seen to do the same work.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = answered.clone();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });

    let cfg = dir.join("xlb.yaml");
    std::fs::write(&cfg, config(&pin)).unwrap();
    let sock = dir.join("xlb.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xlb"));
    cmd.args(["run", "-c"])
        .arg(&cfg)
        .arg("--pid-file")
        .arg(dir.join("xlb.pid"))
        .arg("--socket")
        .arg(&sock)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap());
    let mut agent: Child = lb.spawn(&mut cmd).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Settle: every server checked a few times.
        let start = Instant::now();
        loop {
            let s = status_json(&sock);
            if s["checks"]["samples"].as_u64().unwrap_or(0) >= 3 * SERVERS as u64 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "checks did not start: {}",
                s["checks"]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let (user, sys, rate) = measure(agent.id(), &answered);
        let cpu = user + sys;
        let rss = netlab::proc::rss_kib(agent.id()).map_or(0, |m| m.0) as f64 / 1024.0;
        let s = status_json(&sock);
        let c = &s["checks"];
        let up = s["services"][0]["healthy"].as_u64().unwrap_or(0);
        // The same checks from HAProxy, a mature checker, on the same lab:
        // what the kernel's TCP work costs any checker here.
        unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
        let _ = agent.wait();
        let peer = haproxy(&lb, &dir, &answered);
        println!("xlb agent, {SERVERS} real servers, http_get every 1 s ({WINDOW:?} window)");
        println!();
        println!("| measure | value | target |");
        println!("|---|---:|---|");
        println!("| agent CPU, user + system | {cpu:.1} % of one core ({user:.1} % user, {sys:.1} % system) at {rate:.0} checks/s | < 5 % |");
        if let Some((hu, hs, hr)) = peer {
            println!("| HAProxy 2.6, same checks (`option httpchk`, `inter 1s`) | {:.1} % of one core ({hu:.1} % user, {hs:.1} % system) at {hr:.0} checks/s | - |", hu + hs);
            println!(
                "| xlb / HAProxy, CPU per check | {:.2} | - |",
                (cpu / rate.max(1.0)) / ((hu + hs) / hr.max(1.0))
            );
        }
        println!("| agent RSS | {rss:.1} MiB | < 64 MiB |");
        println!(
            "| check latency p50 / p90 / p99 / max (last {} checks) | {:.2} / {:.2} / {:.2} / {:.2} ms | - |",
            c["samples"], c["p50_ms"].as_f64().unwrap_or(0.0), c["p90_ms"].as_f64().unwrap_or(0.0),
            c["p99_ms"].as_f64().unwrap_or(0.0), c["max_ms"].as_f64().unwrap_or(0.0)
        );
        println!("| servers up | {up} of {SERVERS} | all |");
    }));
    // Still running only if the measurement failed before stopping it.
    if matches!(agent.try_wait(), Ok(None)) {
        unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
        let _ = agent.wait();
    }
    rt.shutdown_background();
    if let Ok(entries) = std::fs::read_dir(&pin) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&pin);
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop((lb, be));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
