//! `cargo xtask bench agent`: start-up and reload time and resident memory of
//! the `xlb` agent with 100 VIPs × 1,000 real servers, in a namespace, with
//! the pool in one file and then as one file per virtual server (`include`).
//!
//! Reload times are what the agent itself logs: from SIGHUP to the last map
//! write (parse, validate, plan, Maglev builds, diff and apply).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::netns::*;

const VIPS: usize = 100;
const REALS: usize = 1000;
/// Long enough for the first check of every server and the agent's 10 s
/// heap trim.
const SETTLE: Duration = Duration::from_secs(12);

fn global(pin: &str) -> String {
    format!(
        "global:\n  interface: lbc\n  xdp_mode: native\n  pin_path: {pin}\n  max_services: {VIPS}\n  max_backends: {}\n  conntrack: {{max_entries: 262144}}\n",
        VIPS * REALS
    )
}

/// Virtual server `v` as a `virtual_servers` item; the first `touch`
/// services change their first weight with every variant. Checked once an
/// hour: the reload figures are not to share the cores with 1,700 checks a
/// second (`bench health` measures what checking costs).
fn service(v: usize, variant: usize, touch: usize) -> String {
    let mut s = format!(
        "  - name: vs{v}\n    vip: 10.97.{}.{}\n    port: 80\n    delay_loop: 3600\n    snat: {{addresses: [10.97.255.1]}}\n    real_servers:\n",
        200 + v / 250,
        1 + v % 250
    );
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
    s
}

/// The whole pool in one file.
fn config(pin: &str, variant: usize, touch: usize) -> String {
    let mut s = global(pin) + "virtual_servers:\n";
    for v in 0..VIPS {
        s += &service(v, variant, touch);
    }
    s
}

/// The pool as one file per virtual server under `conf.d`, included by
/// `main`; only files whose text changes are rewritten.
fn write_split(main: &Path, pin: &str, variant: usize, touch: usize) {
    let dir = main.parent().unwrap().join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(main, global(pin) + "include: [conf.d/*.yaml]\n").unwrap();
    for v in 0..VIPS {
        let path = dir.join(format!("vs{v:03}.yaml"));
        let text = format!("virtual_servers:\n{}", service(v, variant, touch));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).unwrap();
        }
    }
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
        netlab::proc::rss_kib(self.child.id()).unwrap()
    }

    /// Starts a new peak (VmHWM) from the current RSS.
    fn reset_peak(&self) {
        netlab::proc::reset_peak(self.child.id()).unwrap();
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

fn main() {
    reap_stale();
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("xlbt-{pid}-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let pin = format!("/sys/fs/bpf/xlbt-{pid}-bench");
    let lb = netns("bench");
    let peer = netns("benchp");
    lb.veth("lbc", &peer, "p0").unwrap();
    lb.add_addr("lbc", "10.97.255.1/24").unwrap();
    // Every real server answers its tcp_check: the peer owns the whole
    // 10.100.0.0/14 (a local route) and one listener accepts for all of
    // them. A healthy pool, as in production; a pool whose checks all fail
    // would measure a storm of health changes instead of reloads.
    peer.add_addr("p0", "10.97.255.2/24").unwrap();
    peer.route_local("10.100.0.0/14", "lo").unwrap();
    lb.route_via("10.100.0.0/14", "10.97.255.2").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let peer_name = peer.name.clone();
    std::thread::spawn(move || {
        netlab::enter(&peer_name).unwrap();
        let l = std::net::TcpListener::bind("0.0.0.0:8080").unwrap();
        // One listener stands in for 100,000 hosts: the agent's first round
        // sends it thousands of connects at once, more than the default
        // backlog of 128 holds.
        netlab::proc::sysctl_set("net.core.somaxconn", "65535").unwrap();
        // SAFETY: listen on our own socket only changes its backlog.
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 65535) };
        tx.send(()).unwrap();
        // Accept and close; ends with the process.
        for c in l.incoming() {
            drop(c);
        }
    });
    rx.recv().unwrap();

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
        // Every server checked once, and the agent's periodic trim done.
        std::thread::sleep(SETTLE);
        let (rss_start, hwm_start) = agent.memory();
        let mut peaks = Vec::new();
        let mut reloads = 0;
        let mut rows = Vec::new();
        let cases = [
            ("file unchanged", 0),
            ("1 service changed", 1),
            ("all 100 services changed", VIPS),
        ];
        for split in [false, true] {
            agent.reset_peak();
            if split {
                // Same pool, now one file per virtual server: nothing to apply.
                write_split(&cfg, &pin, 0, 0);
                unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
                reloads += 1;
                agent.wait_for("reloaded", reloads, Duration::from_secs(60));
            }
            for (label, touch) in cases {
                let (mut total, mut parse, mut apply) = (vec![], vec![], vec![]);
                for round in 0..5 {
                    if split {
                        write_split(&cfg, &pin, round + 1, touch);
                    } else {
                        std::fs::write(&cfg, config(&pin, round + 1, touch)).unwrap();
                    }
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
                let layout = if split {
                    "one file per virtual server (`include`)"
                } else {
                    "one file"
                };
                rows.push((
                    format!("{layout}, {label}"),
                    netlab::median(&total),
                    max,
                    netlab::median(&parse),
                    netlab::median(&apply),
                ));
            }
            peaks.push(agent.memory().1);
        }
        std::thread::sleep(SETTLE);
        let (rss_end, _) = agent.memory();
        // The floor of a reload that changes everything: the YAML parser
        // alone (the agent's, serde_yaml over libyaml) reading the one-file
        // pool into nothing, in this process, on the same machine.
        let text = config(&pin, 0, 0);
        let floor = netlab::median(
            &(0..5)
                .map(|_| {
                    let t = Instant::now();
                    let _: serde::de::IgnoredAny = serde_yaml::from_str(&text).unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect::<Vec<_>>(),
        );
        let down = agent.log().matches("real server down").count();
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
        let mib = |k: u64| k as f64 / 1024.0;
        println!(
            "| RSS {}s after start-up, every server checked | {:.1} MiB | < 64 MiB |",
            SETTLE.as_secs(),
            mib(rss_start)
        );
        println!(
            "| RSS {}s after the last of {reloads} reloads | {:.1} MiB | < 64 MiB |",
            SETTLE.as_secs(),
            mib(rss_end)
        );
        println!(
            "| peak RSS: start-up (first parse, first checks) / one-file reloads / `include` reloads | {:.1} / {:.1} / {:.1} MiB | - |",
            mib(hwm_start),
            mib(peaks[0]),
            mib(peaks[1])
        );
        println!("| real servers marked down during the run | {down} | 0 |");
        println!(
            "| YAML alone: the one-file pool ({:.1} MB) parsed into nothing (`serde::de::IgnoredAny`), median of 5 | {floor:.0} ms | - |",
            text.len() as f64 / 1e6
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
