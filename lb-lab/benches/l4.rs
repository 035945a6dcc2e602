//! `cargo xtask bench l4`: the same lab, backends and client for five
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

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use lb_lab::{
    bench::{
        drivers::{dnsperf, fixed_close, wrk, wrk_for},
        picked,
        pps::{pps, Hop},
        report::{report, summary},
        setups::{start_proxy, xlb_config},
        Sample, FIXED_DNS, ROUNDS, SETUPS, STAMINA_SECS, TESTS,
    },
    lab::{self, backend_addr, Lab, VIP},
};
use nix::sys::signal::Signal;

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
