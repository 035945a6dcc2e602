//! `cargo xtask bench agent`: start-up and reload time and resident memory of
//! the `xlb` agent with 100 VIPs × 1,000 real servers, in a namespace.
//!
//! Reload times are what the agent itself logs: from SIGHUP to the last map
//! write (parse, validate, plan, Maglev builds, diff and apply).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::netns::*;

const VIPS: usize = 100;
const REALS: usize = 1000;

fn config(pin: &str, variant: usize, touch: usize) -> String {
    let mut s = format!(
        "global:\n  interface: lbc\n  xdp_mode: native\n  pin_path: {pin}\n  max_services: {VIPS}\n  max_backends: {}\n  conntrack: {{max_entries: 262144}}\nvirtual_servers:\n",
        VIPS * REALS
    );
    for v in 0..VIPS {
        s += &format!(
            "  - name: vs{v}\n    vip: 10.97.{}.{}\n    port: 80\n    snat: {{addresses: [10.97.255.1]}}\n    real_servers:\n",
            200 + v / 250,
            1 + v % 250
        );
        // `touch` services change their first weight with every variant.
        let w0 = if v < touch { 1 + variant % 2 } else { 1 };
        for r in 0..REALS {
            let w = if r == 0 { w0 } else { 1 };
            s += &format!(
                "      - {{address: 10.{}.{}.{}, port: 8080, weight: {w}, tcp_check: {{connect_timeout: 2}}}}\n",
                100 + v / 50,
                (v % 50) * 4 + r / 250,
                1 + r % 250
            );
        }
    }
    s
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        while self.log().matches(what).count() < count {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("agent exited {s}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < limit,
                "no {what:?} after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// A `key=` value of the last "reloaded" line; 0 when absent.
    fn last_reload(&self, key: &str) -> f64 {
        let log = self.log();
        let line = log
            .lines()
            .rfind(|l| l.contains("reloaded"))
            .expect("no reload line");
        let clean: String = strip_ansi(line);
        clean
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix(key)
                    .map(|v| v.trim_matches('"').parse().unwrap())
            })
            .unwrap_or(0.0)
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    reap_stale();
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("xlbt-{pid}-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let pin = format!("/sys/fs/bpf/xlbt-{pid}-bench");
    let lb = Netns::new("bench");
    let peer = Netns::new("benchp");
    veth(&lb, "lbc", &peer, "p0");
    lb.ip(&["addr", "add", "10.97.255.1/24", "dev", "lbc"]);

    let cfg = dir.join("xlb.yaml");
    std::fs::write(&cfg, config(&pin, 0, 0)).unwrap();
    let log = dir.join("agent.log");
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xlb"));
    cmd.args(["run", "-c"])
        .arg(&cfg)
        .arg("--pid-file")
        .arg(dir.join("xlb.pid"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = lb.spawn(&mut cmd).unwrap();
    let mut agent = Agent { child, log };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent.wait_for("serving", 1, Duration::from_secs(120));
        let startup = started.elapsed();
        let (rss_start, _) = agent.memory();
        let mut reloads = 0;
        let mut rows = Vec::new();
        for (label, touch) in [
            ("file unchanged", 0),
            ("1 service changed", 1),
            ("all 100 services changed", VIPS),
        ] {
            let (mut total, mut parse, mut apply) = (vec![], vec![], vec![]);
            for round in 0..5 {
                std::fs::write(&cfg, config(&pin, round + 1, touch)).unwrap();
                let t = Instant::now();
                unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
                reloads += 1;
                agent.wait_for("reloaded", reloads, Duration::from_secs(60));
                let logged = agent.last_reload("ms=");
                // An unchanged file logs no time: take the observed one.
                total.push(if logged > 0.0 {
                    logged
                } else {
                    t.elapsed().as_secs_f64() * 1e3
                });
                parse.push(agent.last_reload("parse_ms="));
                apply.push(agent.last_reload("apply_ms="));
            }
            let max = total.iter().cloned().fold(0.0, f64::max);
            rows.push((label, median(total), max, median(parse), median(apply)));
        }
        let (rss_end, hwm) = agent.memory();
        println!(
            "xlb agent, {VIPS} VIPs x {REALS} real servers ({} backends), Maglev M=65537",
            VIPS * REALS
        );
        println!();
        println!("| measure | value | target |");
        println!("|---|---:|---|");
        println!("| start-up to serving (process start, parse, load, attach, {VIPS} tables) | {:.0} ms | - |", startup.as_secs_f64() * 1e3);
        for (label, med, max, parse, apply) in &rows {
            println!(
                "| reload, {label}: median of 5 (max) | {med:.0} ms ({max:.0} ms); YAML parse {parse:.0} ms, map writes {apply:.0} ms | < 200 ms |"
            );
        }
        println!(
            "| RSS after start-up | {:.1} MiB | < 64 MiB |",
            rss_start as f64 / 1024.0
        );
        println!(
            "| RSS after 15 reloads | {:.1} MiB | < 64 MiB |",
            rss_end as f64 / 1024.0
        );
        println!(
            "| peak RSS (VmHWM) | {:.1} MiB | < 64 MiB |",
            hwm as f64 / 1024.0
        );
    }));
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let _ = agent.child.wait();
    if let Ok(entries) = std::fs::read_dir(&pin) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&pin);
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop((lb, peer));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
