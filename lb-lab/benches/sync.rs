//! `cargo xtask bench sync`: what the backup's agent spends to take in the
//! master's connection sync (`lvs_sync_daemon`), on the demo's lab.
//!
//! Both agents run the demo config. From the client, sync datagrams of 48
//! new flows each go to the sync group at a fixed rate for a few seconds,
//! each flow a valid one for the backup to install (a configured service,
//! backend and SNAT pool). The backup's agent CPU (user + system, from
//! `/proc/PID/stat`) over the run, divided by the flows it installed, is
//! the cost of one record; installed / offered shows how much it keeps up
//! with.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lb_lab::lab::{self, backend_addr, Lab, LBS, VIP};
use lb_user::sync::wire::{self, Entry, MAX_ENTRIES};

/// Offered records per second, one run each.
const RATES: [u32; 4] = [5_000, 20_000, 50_000, 100_000];
const SECS: u64 = 5;

/// Flow `i`: a distinct client, a valid backend and SNAT port of `web`.
fn flow(i: u32) -> Entry {
    Entry {
        client: Ipv4Addr::from(0x0a62_0000 | (i >> 16)),
        client_port: i as u16,
        vip: VIP,
        vip_port: 80,
        backend: backend_addr(i as usize % 3),
        backend_port: 80,
        snat: VIP,
        snat_port: 20_000 + (i % 40_000) as u16,
        proto: lb_common::PROTO_TCP,
        closed: false,
    }
}

struct Run {
    offered: u64,
    installed: u64,
    cpu_ms: f64,
}

/// Offers `rate` records/s for SECS seconds, starting at flow `first`.
fn run(lab: &Lab, backup: usize, pid: u32, rate: u32, first: u32) -> Result<Run> {
    let installed = || -> Result<u64> {
        Ok(lab.status(backup)?["sync"]["installed"]
            .as_u64()
            .unwrap_or(0))
    };
    let before = installed()?;
    let cpu_before = netlab::proc::cpu_ms(pid);
    let datagrams = rate as u64 * SECS / MAX_ENTRIES as u64;
    let interval = Duration::from_secs_f64(MAX_ENTRIES as f64 / rate as f64);
    lab.client.within(|| -> Result<()> {
        let s = std::net::UdpSocket::bind((lab::CLIENT, 0))?;
        s.set_multicast_ttl_v4(1)?;
        let to = (Ipv4Addr::new(224, 0, 0, 81), 8848);
        let start = Instant::now();
        let mut buf = Vec::new();
        for d in 0..datagrams {
            let base = first + (d * MAX_ENTRIES as u64) as u32;
            let entries: Vec<Entry> = (0..MAX_ENTRIES as u32).map(|k| flow(base + k)).collect();
            buf.clear();
            wire::emit(0, &entries, &mut buf);
            s.send_to(&buf, to)?;
            let due = interval * (d as u32 + 1);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    })??;
    // Let the backup drain its socket.
    std::thread::sleep(Duration::from_secs(1));
    Ok(Run {
        offered: datagrams * MAX_ENTRIES as u64,
        installed: installed()? - before,
        cpu_ms: netlab::proc::cpu_ms(pid) - cpu_before,
    })
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    lab::check_tools()?;
    let lab = Lab::for_bench("sync", false)?;
    std::fs::write(
        &lab.opts.config,
        std::fs::read_to_string(lab::config_file("demo.yaml"))?,
    )?;
    for i in 0..LBS {
        lab.start_agent(i)?;
    }
    let master = lab.wait_master(Duration::from_secs(10))?;
    let backup = 1 - master;
    let pid = lab
        .pid(&format!("lb{}", backup + 1))
        .context("no backup agent")?;
    // The checks' own CPU is measured too: let the first round settle.
    std::thread::sleep(Duration::from_secs(3));
    let idle = {
        let c = netlab::proc::cpu_ms(pid);
        std::thread::sleep(Duration::from_secs(SECS));
        (netlab::proc::cpu_ms(pid) - c) / SECS as f64
    };
    println!(
        "\nThe backup agent taking in the sync: {SECS} s per rate, {MAX_ENTRIES} new flows per datagram; \
         idle (checks, VRRP) {:.1} ms of CPU per second.\n",
        idle
    );
    println!("| offered records/s | installed/s | installed / offered | agent CPU, % of a core | CPU per record, over idle |");
    println!("|---:|---:|---:|---:|---:|");
    let mut first = 0u32;
    for rate in RATES {
        let r = run(&lab, backup, pid, rate, first)?;
        first = first.wrapping_add(r.offered as u32);
        let wall = SECS as f64 + 1.0;
        let busy = r.cpu_ms / wall;
        let per = (r.cpu_ms - idle * wall) / r.installed.max(1) as f64 * 1000.0;
        println!(
            "| {:.0} | {:.0} | {:.2} | {:.1} % | {per:.1} µs |",
            r.offered as f64 / SECS as f64,
            r.installed as f64 / SECS as f64,
            r.installed as f64 / r.offered as f64,
            busy / 10.0,
        );
    }
    Ok(())
}
