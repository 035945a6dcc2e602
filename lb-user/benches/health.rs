//! `cargo xtask bench health`: the agent checking 1,000 real servers every
//! second (HTTP GET), on this 2-core machine. Reports the agent's CPU over a
//! measured window, its RSS, and check latency percentiles.
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

/// (utime, stime) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (fields[11].parse().unwrap(), fields[12].parse().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
    let lb = Netns::new("hlb");
    let be = Netns::new("hbe");
    veth(&lb, "lbc", &be, "eth0");
    lb.ip(&["addr", "add", "10.95.0.1/24", "dev", "lbc"]);
    be.ip(&["addr", "add", "10.95.0.2/24", "dev", "eth0"]);
    lb.ip(&["route", "add", "10.96.0.0/16", "via", "10.95.0.2"]);
    let batch: String = (0..SERVERS)
        .map(|i| format!("addr add {}/32 dev eth0\n", addr(i)))
        .collect();
    let batch_file = dir.join("addrs");
    std::fs::write(&batch_file, batch).unwrap();
    be.ip(&["-batch", batch_file.to_str().unwrap()]);

    // The HTTP server for all 1,000 addresses.
    be.enter();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("0.0.0.0:8080"))
        .unwrap();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
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
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (t0, c0) = (Instant::now(), cpu_ticks(agent.id()));
        std::thread::sleep(WINDOW);
        let (elapsed, c1) = (t0.elapsed(), cpu_ticks(agent.id()));
        let pct = |ticks: u64| ticks as f64 / hz / elapsed.as_secs_f64() * 100.0;
        let (user, sys) = (pct(c1.0 - c0.0), pct(c1.1 - c0.1));
        let cpu = user + sys;
        let rss = rss_kib(agent.id()) as f64 / 1024.0;
        let s = status_json(&sock);
        let c = &s["checks"];
        let up = s["services"][0]["healthy"].as_u64().unwrap_or(0);
        println!("xlb agent, {SERVERS} real servers, http_get every 1 s ({WINDOW:?} window)");
        println!();
        println!("| measure | value | target |");
        println!("|---|---:|---|");
        println!("| agent CPU, user + system | {cpu:.1} % of one core ({user:.1} % user, {sys:.1} % system) | < 5 % |");
        println!("| agent RSS | {rss:.1} MiB | < 64 MiB |");
        println!(
            "| check latency p50 / p90 / p99 / max (last {} checks) | {:.2} / {:.2} / {:.2} / {:.2} ms | - |",
            c["samples"], c["p50_ms"].as_f64().unwrap_or(0.0), c["p90_ms"].as_f64().unwrap_or(0.0),
            c["p99_ms"].as_f64().unwrap_or(0.0), c["max_ms"].as_f64().unwrap_or(0.0)
        );
        println!("| servers up | {up} of {SERVERS} | all |");
    }));
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
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
