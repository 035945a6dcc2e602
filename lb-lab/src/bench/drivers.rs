//! The load generators: wrk, dnsperf and a paced new-connection client,
//! each run from the lab's client and read back as a [`Sample`].

use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{busy_ms_since, cpu_mark, Sample, FIXED_CLOSE, SECS};
use crate::lab::Lab;

/// `12.5us`, `3.1ms`, `1.2s` → ms.
pub fn wrk_ms(s: &str) -> Option<f64> {
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

/// wrk for SECS s from the client to `http://target/`, keep-alive or
/// `Connection: close`.
pub fn wrk(lab: &Lab, target: &str, close: bool) -> Result<Sample> {
    wrk_for(lab, target, close, SECS)
}

/// [`wrk`] for `secs` s: rate, latency, errors and CPU per 1,000.
pub fn wrk_for(lab: &Lab, target: &str, close: bool, secs: u32) -> Result<Sample> {
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

/// dnsperf for SECS s from the client to `target`:53, at most `max_qps`
/// queries/s if given.
pub fn dnsperf(lab: &Lab, dir: &Path, target: &str, max_qps: Option<u32>) -> Result<Sample> {
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
pub fn fixed_close(lab: &Lab, target: &str) -> Result<Sample> {
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
                    match crate::traffic::http_once(addr) {
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
