//! What `cargo xtask bench l4` prints and writes: a narrowed run's summary,
//! and `docs/bench/l4.{json,md,svg}`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Result;

use super::{
    setups::lb_backends, Sample, FIXED_CLOSE, FIXED_DNS, FRAMES, ROUNDS, SECS, SETUPS,
    STAMINA_SECS, TESTS,
};

/// Cores, CPU model and kernel, for the report's header.
pub fn machine() -> String {
    let cpu = netlab::proc::cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = netlab::sh(&["uname", "-r"]).unwrap_or_default();
    let kernel = kernel.trim();
    format!("{cores} × {cpu}, kernel {kernel}")
}

/// A narrowed run's summary: per test, each setup's median CPU per 1,000
/// requests, what it adds over direct, and xlb's added CPU as a fraction
/// of nginx's and HAProxy's, per round (rounds are interleaved) and as the
/// ratio of the medians.
pub fn summary(results: &[Vec<Vec<Sample>>]) {
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
            let _ = write!(line, " {setup} {:.1}", netlab::median(&c));
            if !direct.is_empty() && setup != "direct" {
                let _ = write!(
                    line,
                    " ({:+.1})",
                    netlab::median(&c) - netlab::median(&direct)
                );
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
            let d = netlab::median(&direct);
            println!(
                "  xlb's added CPU / {peer}'s: {:.2} (medians); per round: {}",
                (netlab::median(&x) - d) / (netlab::median(&p) - d),
                rounds.join(", ")
            );
        }
    }
}

/// Writes `docs/bench/l4.{json,md,svg}` from a full run and prints the
/// Markdown.
pub fn report(
    results: &[Vec<Vec<Sample>>],
    stamina: &[(String, Sample)],
    rates: &[(String, f64, f64)],
) -> Result<()> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
    std::fs::create_dir_all(&out)?;
    let med = |si: usize, ti: usize, f: fn(&Sample) -> f64| {
        netlab::median(&results[si][ti].iter().map(f).collect::<Vec<_>>())
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
        netlab::median(
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

/// The request rates of every setup as bars, one panel per test.
pub fn chart(path: &Path, results: &[Vec<Vec<Sample>>]) -> Result<()> {
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
            .map(|si| netlab::median(&results[si][ti].iter().map(|s| s.rate).collect::<Vec<_>>()))
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
