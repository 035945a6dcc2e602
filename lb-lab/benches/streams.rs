//! `cargo xtask bench streams`: how many established TCP streams survive a
//! VRRP failover under connection churn, with and without the connection
//! sync (`lvs_sync_daemon`), on the demo's lab.
//!
//! Per trial: both agents run the demo config (with or without its
//! `lvs_sync_daemon`); wrk opens and closes HTTP connections through the
//! VIP the whole time, so the master holds thousands of closed flows in
//! their FIN timeout; STREAMS keep-alive connections are opened and answer
//! once; the master gets SIGTERM; once the backup is MASTER every stream
//! asks again, and counts as broken unless the same backend answers within
//! two seconds.

use nix::sys::signal::Signal;
use std::{process::Command, thread, time::Duration};

use anyhow::{bail, Context, Result};
use lb_lab::{
    lab::{self, Lab, LBS, VIP},
    traffic::Stream,
};

const STREAMS: usize = 400;
const TRIALS: usize = 2;
/// Seconds of churn before the streams open.
const WARMUP: u64 = 4;

struct Trial {
    broken: usize,
    /// Flows the master sent to the backup.
    synced: u64,
    /// Records the master lost (full ring, failed send) and the backup did
    /// not receive.
    lost: u64,
    /// New connections wrk made through the master.
    churn: u64,
}

/// What the agents sync.
#[derive(Clone, Copy)]
enum Sync {
    Off,
    /// `all_flows: false`: only flows off their hashed SNAT port.
    Unhashed,
    /// The default: every flow.
    All,
}

impl Sync {
    fn name(self) -> &'static str {
        match self {
            Sync::Off => "off",
            Sync::Unhashed => "all_flows: false",
            Sync::All => "on (all flows)",
        }
    }
}

fn config(sync: Sync) -> Result<String> {
    let demo = std::fs::read_to_string(lab::config_file("demo.yaml"))?;
    let block = "  lvs_sync_daemon:\n    interface: eth0\n    vrrp_instance: VI_DEMO\n";
    if !demo.contains(block) {
        bail!("configs/demo.yaml no longer has the lvs_sync_daemon block this bench changes");
    }
    Ok(match sync {
        Sync::Off => demo.replace(block, ""),
        Sync::Unhashed => demo.replace(block, &format!("{block}    all_flows: false\n")),
        Sync::All => demo,
    })
}

fn trial(sync: Sync, n: usize) -> Result<Trial> {
    let lab = Lab::for_bench(&format!("streams{n}"), false)?;
    std::fs::write(&lab.opts.config, config(sync)?)?;
    for i in 0..LBS {
        lab.start_agent(i)?;
    }
    let master = lab.wait_master(Duration::from_secs(10))?;
    let other = 1 - master;
    lab::wait_for("all web backends up", Duration::from_secs(10), || {
        lab.status(master).is_ok_and(|s| {
            s["services"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v["healthy"] == 3))
        })
    })?;
    let web = std::net::SocketAddrV4::new(VIP, 80);
    let secs = WARMUP + 12;
    lab.spawn(
        &lab.client,
        "wrk",
        Command::new("wrk").args([
            "-t1",
            "-c16",
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "2s",
            "-H",
            "Connection: close",
            &format!("http://{VIP}/"),
        ]),
    )?;
    thread::sleep(Duration::from_secs(WARMUP));
    let mut streams: Vec<(Stream, usize)> = lab.client.within(|| {
        (0..STREAMS)
            .filter_map(|_| {
                let mut s = Stream::open(web).ok()?;
                let b = s.request().ok()?;
                Some((s, b))
            })
            .collect()
    })?;
    if streams.len() < STREAMS * 9 / 10 {
        bail!("only {} of {STREAMS} streams opened", streams.len());
    }
    thread::sleep(Duration::from_secs(2));
    let status = lab.status(master)?;
    let n = |s: &serde_json::Value, k: &str| s["sync"][k].as_u64().unwrap_or(0);
    let synced = n(&status, "sent");
    let churn = status["services"][0]["new_conns"].as_u64().unwrap_or(0);
    let received = n(&lab.status(other)?, "received");
    let lost = n(&status, "lost") + n(&status, "send_errors") + synced.saturating_sub(received);
    lab.stop_agent(master, Signal::SIGTERM);
    lab::wait_for("the backup is MASTER", Duration::from_secs(5), || {
        lab.vrrp_state(other) == "MASTER"
    })?;
    thread::sleep(Duration::from_secs(1));
    let mut broken = 0;
    for (s, b) in &mut streams {
        s.set_timeout(Duration::from_secs(2))?;
        if s.request().ok() != Some(*b) {
            broken += 1;
        }
    }
    broken += STREAMS - streams.len();
    drop(streams);
    drop(lab);
    Ok(Trial {
        broken,
        synced,
        lost,
        churn,
    })
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    lab::check_tools()?;
    netlab::sh(&["sh", "-c", "command -v wrk"])
        .context("wrk is not installed: run `cargo xtask setup`")?;
    let mut rows = Vec::new();
    for t in 0..TRIALS {
        for sync in [Sync::Off, Sync::Unhashed, Sync::All] {
            let r = trial(sync, rows.len())?;
            let row = format!(
                "| {} | {} | {STREAMS} | {} | {} | {} | {} |",
                t + 1,
                sync.name(),
                r.broken,
                r.churn,
                r.synced,
                r.lost
            );
            eprintln!("{row}");
            rows.push(row);
        }
    }
    println!(
        "\nkeep-alive streams across a VRRP failover (SIGTERM) under Connection: close churn:\n"
    );
    println!(
        "| trial | lvs_sync_daemon | streams | broken | churn conns before | records synced | records lost |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
