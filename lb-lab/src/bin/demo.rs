//! `cargo xtask demo`: two agents as a VRRP pair in front of three nginx +
//! dnsmasq backends, with live client traffic and a scripted scenario.

use nix::sys::signal::Signal;
use std::{
    io::{IsTerminal, Write},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lb_lab::{
    lab::{self, backend_addr, lb_addr, Lab, Options, BACKENDS, CLIENT, LBS, VIP},
    traffic::{Load, Rates, Snapshot},
};

const PREFIX: &str = "xlb-demo";

const USAGE: &str = "\
usage: xlb-demo [--keep] [--clean]
  --keep   leave the lab running at the end and print how to reach it
  --clean  remove a kept lab (processes, namespaces, pins) and exit";

/// One step of the scenario.
struct Step {
    title: &'static str,
    look: &'static str,
    secs: u64,
}

const STEPS: [Step; 4] = [
    Step {
        title: "steady traffic",
        look: "HTTP on new connections, 6 keep-alive streams and DNS over UDP go to the VIP.\n  \
               Look at: the shares follow the weights 2:1:1 for HTTP and 1:1:1 for DNS; no errors.",
        secs: 10,
    },
    Step {
        title: "kill backend b2 (nginx and dnsmasq get SIGKILL)",
        look: "Look at: b2 turns DOWN within about 2 s (delay_loop 1, retry 1); its share moves to b1\n  \
               and b3; the streams on b1 and b3 keep their backend (\"broken\" counts only b2's).",
        secs: 10,
    },
    Step {
        title: "stop the master (SIGTERM: it sends VRRP priority 0)",
        look: "Look at: the backup becomes MASTER within a second and takes the VIP; the client's\n  \
               error count stays near zero, and the streams survive: both nodes hash a flow to\n  \
               the same backend and SNAT port, and the few flows that got another port were\n  \
               synced to the backup beforehand (\"synced\": sent by one node, installed by the other).",
        secs: 10,
    },
    Step {
        title: "restore everything (b2's servers and the stopped agent start again)",
        look: "Look at: b2 comes back UP and takes its share again; the restarted node stays\n  \
               BACKUP (preempt: false), so the VIP does not move twice.",
        secs: 12,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().any(|a| a == "--keep");
    if args.iter().any(|a| a == "--help" || a == "-h")
        || args.iter().any(|a| a != "--keep" && a != "--clean")
    {
        println!("{USAGE}");
        return;
    }
    let result = if args.iter().any(|a| a == "--clean") {
        lab::clean(PREFIX).map(|()| println!("demo: removed the lab"))
    } else {
        run(keep)
    };
    if let Err(e) = result {
        eprintln!("demo: {e:#}");
        std::process::exit(1);
    }
}

fn run(keep: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: the lab makes network namespaces and loads XDP");
    }
    lab::check_tools()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    println!("demo: building the lab (namespaces {PREFIX}-*) ...");
    let lab = Lab::build(Options {
        prefix: PREFIX.into(),
        xlb: lab::find_xlb()?,
        config: lab::config_file("demo.yaml"),
        native_pass: false,
    })?;
    println!("demo: starting the agents on lb1 and lb2 with configs/demo.yaml ...");
    for i in 0..LBS {
        lab.start_agent(i)?;
    }
    let master = lab.wait_master(Duration::from_secs(10))?;
    println!("demo: lb{} is MASTER; starting the client", master + 1);
    let load = Load::start(
        &lab.client.name,
        VIP,
        Rates {
            http: 40,
            dns: 20,
            streams: 6,
        },
    );
    let mut view = View::new(load.stats.snapshot());
    let started = Instant::now();
    let mut stopped_agent = None;
    'steps: for (n, step) in STEPS.iter().enumerate() {
        match n {
            1 => lab.kill_backend(1),
            2 => {
                let m = (0..LBS).find(|&i| lab.vrrp_state(i) == "MASTER");
                if let Some(m) = m {
                    lab.stop_agent(m, Signal::SIGTERM);
                    stopped_agent = Some(m);
                }
            }
            3 => {
                lab.start_backend(1)?;
                if let Some(m) = stopped_agent {
                    lab.start_agent(m)?;
                }
            }
            _ => {}
        }
        let until = Instant::now() + Duration::from_secs(step.secs);
        while Instant::now() < until {
            let tick = Instant::now();
            while tick.elapsed() < Duration::from_secs(1) {
                if stop.load(Ordering::Relaxed) {
                    println!("\ndemo: interrupted; removing the lab");
                    break 'steps;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            view.show(&lab, &load, started, n, step);
        }
    }
    let total = load.stop();
    summary(&total);
    if keep && !stop.load(Ordering::Relaxed) {
        lab.keep();
        println!(
            "\nThe lab is still running. Try:\n  \
             ip netns exec {PREFIX}-client curl -s http://{VIP}/\n  \
             ip netns exec {PREFIX}-client dig +short @{VIP} whoami.demo TXT\n  \
             ip netns exec {PREFIX}-lb1 {} status --socket {}\n  \
             ls {}   (agent and server logs)\n\
             Remove it with: cargo xtask demo --clean",
            lab.opts.xlb.display(),
            lab.socket(0).display(),
            lab.dir.display()
        );
    } else {
        println!("demo: removing the lab");
    }
    Ok(())
}

fn summary(t: &Snapshot) {
    let http: u64 = t.http.iter().sum();
    let dns: u64 = t.dns.iter().sum();
    println!(
        "\ndemo: done. HTTP {http} answered, {} errors; DNS {dns} answered, {} errors; \
         keep-alive requests {}, streams broken {}.",
        t.http_errors, t.dns_errors, t.stream_requests, t.stream_breaks
    );
}

/// The live table.
struct View {
    last: Snapshot,
    last_at: Instant,
    /// Data-path new connections per node and backend, as last read.
    lb_conns: [[Option<u64>; BACKENDS]; LBS],
    tty: bool,
}

impl View {
    fn new(first: Snapshot) -> View {
        View {
            last: first,
            last_at: Instant::now(),
            lb_conns: [[None; BACKENDS]; LBS],
            tty: std::io::stdout().is_terminal(),
        }
    }

    fn show(&mut self, lab: &Lab, load: &Load, started: Instant, n: usize, step: &Step) {
        let now = load.stats.snapshot();
        let secs = self.last_at.elapsed().as_secs_f64().max(0.001);
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
        let status: Vec<Option<serde_json::Value>> = (0..LBS).map(|i| lab.status(i).ok()).collect();
        let master = (0..LBS).find(|&i| {
            status[i]
                .as_ref()
                .is_some_and(|s| s["vrrp"][0]["state"] == "MASTER")
        });
        let mut o = String::new();
        if self.tty {
            o.push_str("\x1b[2J\x1b[H");
        }
        o += &format!(
            "xlb demo · {:>3} s · step {}/{}: {}\n  {}\n\n",
            started.elapsed().as_secs(),
            n + 1,
            STEPS.len(),
            step.title,
            step.look
        );
        o += "node              vrrp      priority  web                dns                synced sent/installed\n";
        for (i, s) in status.iter().enumerate() {
            let (state, prio, web, dns, synced) = match s {
                Some(s) => (
                    s["vrrp"][0]["state"].as_str().unwrap_or("-").to_string(),
                    s["vrrp"][0]["priority"].to_string(),
                    serving(s, "web"),
                    serving(s, "dns"),
                    format!("{}/{}", s["sync"]["sent"], s["sync"]["installed"]),
                ),
                None => (
                    "stopped".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
            };
            o += &format!(
                "lb{} {:<13} {:<9} {:<9} {:<18} {:<18} {}\n",
                i + 1,
                lb_addr(i),
                state,
                prio,
                web,
                dns,
                synced
            );
        }
        o += "\nbackend            weight  health web/dns   HTTP/s  share   DNS/s  share   streams  LB new conns/s\n";
        let http_total: u64 = (0..BACKENDS)
            .map(|b| rate(now.http[b], self.last.http[b]))
            .sum();
        let dns_total: u64 = (0..BACKENDS)
            .map(|b| rate(now.dns[b], self.last.dns[b]))
            .sum();
        for b in 0..BACKENDS {
            let addr = backend_addr(b);
            let info = master.and_then(|m| status[m].as_ref());
            let (weight, web_h, dns_h) = match info {
                Some(s) => {
                    let (w, h) = weight_health(s, "web", addr);
                    (w, h, weight_health(s, "dns", addr).1)
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            let mut conns = 0;
            for (i, s) in status.iter().enumerate() {
                let Some(s) = s else { continue };
                let total = new_conns(s, addr);
                let prev = self.lb_conns[i][b].replace(total).unwrap_or(total);
                conns += rate(total, prev);
            }
            let h = rate(now.http[b], self.last.http[b]);
            let d = rate(now.dns[b], self.last.dns[b]);
            o += &format!(
                "b{} {:<15} {:<7} {:<16} {:>6}  {:>4}%   {:>5}  {:>4}%   {:>7}  {:>14}\n",
                b + 1,
                addr,
                weight,
                format!("{web_h} / {dns_h}"),
                h,
                pct(h, http_total),
                d,
                pct(d, dns_total),
                now.streams_open[b],
                conns
            );
        }
        o += &format!(
            "\nclient {CLIENT}: HTTP {}/s, errors {} · DNS {}/s, errors {} · keep-alive requests {}, streams broken {}\n",
            http_total,
            now.http_errors,
            dns_total,
            now.dns_errors,
            now.stream_requests,
            now.stream_breaks
        );
        let last = load.stats.last_error.lock().unwrap().clone();
        if !last.is_empty() {
            o += &format!("last client error: {last}\n");
        }
        if !self.tty {
            o.push_str("----\n");
        }
        print!("{o}");
        let _ = std::io::stdout().flush();
        self.last = now;
        self.last_at = Instant::now();
    }
}

fn pct(a: u64, total: u64) -> u64 {
    (a * 100).checked_div(total).unwrap_or(0)
}

fn serving(s: &serde_json::Value, name: &str) -> String {
    match lab::service(s, name) {
        Some(v) if v["serving"] == true => format!("serving ({} up)", v["healthy"]),
        Some(_) => "standby".into(),
        None => "-".into(),
    }
}

/// Weight and health of the backend at `addr` of service `name`.
fn weight_health(s: &serde_json::Value, name: &str, addr: Ipv4Addr) -> (String, String) {
    match lab::backend(s, name, addr) {
        Some(b) => (
            b["weight"].to_string(),
            b["health"].as_str().unwrap_or("-").to_string(),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// New connections the node's data path sent to the backend at `addr`,
/// over all its services.
fn new_conns(s: &serde_json::Value, addr: Ipv4Addr) -> u64 {
    ["web", "dns"]
        .iter()
        .filter_map(|name| lab::backend(s, name, addr)?["new_conns"].as_u64())
        .sum()
}
