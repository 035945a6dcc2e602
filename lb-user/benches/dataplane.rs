//! `cargo xtask bench dataplane`: ns per packet of every data-path path,
//! measured in the kernel with BPF_PROG_TEST_RUN, side by side with a bare
//! forwarder (parse Ethernet/IPv4, swap MACs, XDP_TX) in the same run.
//!
//! `repeat` reuses one buffer, so rewriting paths run behind a wrapper that
//! restores the packet and tail-calls the program; the wrapper alone is timed
//! too and subtracted. Every timed run checks that its last repeat returned
//! the same action and bytes as a single run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;

use aya::{
    maps::{Array, MapData, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, Pod,
};
use lb_user::dataplane::{BackendSpec, Dataplane, BENCH_OBJECT};
use support::{dplab::*, packet::*};

/// Mirrors `Saved` in `lb-ebpf/src/bench.rs`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Saved {
    len: u32,
    vary: u32,
    data: [u8; 128],
}
unsafe impl Pod for Saved {}

struct Bench {
    obj: Ebpf,
    repeat: u32,
}

impl Bench {
    fn prog(&mut self, name: &str) -> &mut Xdp {
        self.obj.program_mut(name).unwrap().try_into().unwrap()
    }

    /// One timed run of `prog` with `repeat` repeats.
    fn once(&mut self, prog: &str, pkt: &[u8], ifindex: u32) -> (f64, u32, Vec<u8>) {
        let repeat = self.repeat;
        time_prog(self.prog(prog), pkt, ifindex, repeat)
    }

    fn save(&mut self, pkt: &[u8], vary: bool) {
        let mut s = Saved {
            len: pkt.len() as u32,
            vary: vary as u32,
            data: [0; 128],
        };
        s.data[..pkt.len()].copy_from_slice(pkt);
        let mut m: Array<&mut MapData, Saved> =
            Array::try_from(self.obj.map_mut("SAVED").unwrap()).unwrap();
        m.set(0, s, 0).unwrap();
    }
}

fn time_prog(prog: &Xdp, pkt: &[u8], ifindex: u32, repeat: u32) -> (f64, u32, Vec<u8>) {
    let mut out = vec![0u8; pkt.len() + 256];
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::new()
        })
        .expect("test_run");
    out.truncate(r.data_size_out as usize);
    (r.duration.as_nanos() as f64, r.return_value, out)
}

/// How the wrapper feeds the program.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The same packet every run.
    Same,
    /// The same packet, with every entry timed out: the new-flow path
    /// rewrites the same connection and NAT entries each run.
    Rewrite,
    /// A new source port and address every run: a new flow each time, with
    /// LRU eviction once the table is full.
    Distinct,
}

/// A wrapped path: name, packet, ingress ifindex, mode, target ratio, and
/// Katran's figure on this machine.
struct Case<'a>(&'static str, &'a [u8], u32, Mode, f64, &'static str);

struct Row {
    path: &'static str,
    ns: f64,
    /// Median of the per-round ratios to the baseline.
    ratio: f64,
    target: f64,
    katran: &'static str,
}

fn main() {
    let repeat: u32 = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: u32 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let lab = init();
    let result = std::panic::catch_unwind(|| run(lab, repeat, rounds));
    teardown();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(lab: &Lab, repeat: u32, rounds: u32) {
    // More backends and all SNAT addresses, so a million new flows do not
    // crowd the SNAT pool: the point is the cost of a new flow, not of probing.
    let extra: Vec<(Ipv4Addr, [u8; 6])> = (0..13u8)
        .map(|i| (Ipv4Addr::new(10, 99, 1, 20 + i), [2, 0, 0, 0, 1, 20 + i]))
        .collect();
    for (ip, mac) in &extra {
        lab.lb.neigh(*ip, *mac, "b0");
    }
    let mut dp = Dataplane::load(
        lb_user::dataplane::Limits {
            max_services: 4,
            max_backends: 64,
            conn_max: std::env::var("BENCH_CONNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 21),
            maglev_size: M,
        },
        lb_user::dataplane::default_config(SEED, M),
    )
    .unwrap();
    let snat: Vec<Ipv4Addr> = (1..=8).map(|i| Ipv4Addr::new(10, 99, 1, i)).collect();
    dp.set_addr(VIP, lb_common::ADDR_VIP).unwrap();
    for a in &snat {
        dp.set_addr(*a, lb_common::ADDR_SNAT).unwrap();
    }
    dp.add_egress(lab.c0).unwrap();
    dp.add_egress(lab.b0).unwrap();
    let mut web = web();
    let mut dns = dns();
    for (i, (ip, _)) in extra.iter().enumerate() {
        web.backends.push(BackendSpec {
            id: 20 + i as u32,
            addr: *ip,
            port: BACKEND_PORT,
            weight: 1,
        });
        dns.backends.push(BackendSpec {
            id: 40 + i as u32,
            addr: *ip,
            port: 53,
            weight: 1,
        });
    }
    web.snat_addrs = snat.clone();
    dns.snat_addrs = snat;
    dp.apply_service(&web).unwrap();
    dp.apply_service(&dns).unwrap();

    let mut b = Bench {
        obj: Ebpf::load(BENCH_OBJECT).unwrap(),
        repeat,
    };
    for name in ["baseline", "restore_only", "restore_and_call"] {
        b.prog(name).load().unwrap();
    }
    {
        let fd = dp.program().fd().unwrap().try_clone().unwrap();
        let mut jump: ProgramArray<&mut MapData> =
            ProgramArray::try_from(b.obj.map_mut("JUMP").unwrap()).unwrap();
        jump.set(0, &fd, 0).unwrap();
    }

    let syn = tcp(from_client(40000, 80), SYN, b"");
    let ack = tcp(from_client(40000, 80), ACK, b"");
    let udp_q = udp(from_client(40000, 53), b"0123456789abcdef");
    let other = tcp(
        Ends {
            dst: Ipv4Addr::new(10, 99, 0, 1),
            ..from_client(40000, 22)
        },
        ACK,
        b"",
    );

    // Baseline.
    let mut base_samples = Vec::new();

    // Establish the flows the established and reply paths use.
    let one = |dp: &mut Dataplane, p: &[u8], ifindex: u32| time_prog(dp.program(), p, ifindex, 1);
    let (_, act, fwd) = one(&mut dp, &syn, lab.c0);
    assert_eq!(act, XDP_REDIRECT);
    let f = parse_valid(&fwd);
    let reply = tcp(
        Ends {
            smac: [2, 0, 0, 0, 1, 99],
            dmac: lab.b0_mac,
            src: f.dst,
            dst: f.src,
            sport: f.dport,
            dport: f.sport,
        },
        ACK,
        b"",
    );
    let (_, act, _) = one(&mut dp, &udp_q, lab.c0);
    assert_eq!(act, XDP_REDIRECT);

    let mut rows = Vec::new();
    let wrapped: [Case; 7] = [
        Case(
            "established TCP flow",
            &ack,
            lab.c0,
            Mode::Same,
            10.0,
            "~72 ns (10x)",
        ),
        Case("reply (reverse NAT)", &reply, lab.b0, Mode::Same, 10.0, "-"),
        Case(
            "established UDP flow",
            &udp_q,
            lab.c0,
            Mode::Same,
            10.0,
            "-",
        ),
        Case(
            "new TCP flow on an expired 5-tuple, revived in place (SYN)",
            &syn,
            lab.c0,
            Mode::Rewrite,
            24.0,
            "~84 ns (12x) without a write",
        ),
        Case(
            "new UDP flow on an expired 5-tuple, revived in place",
            &udp_q,
            lab.c0,
            Mode::Rewrite,
            24.0,
            "-",
        ),
        // Last: these fill the tables, after which every insert evicts.
        Case(
            "new TCP flow, distinct 5-tuple, both entries inserted (SYN)",
            &syn,
            lab.c0,
            Mode::Distinct,
            24.0,
            "~168 ns (24x) for one write",
        ),
        Case(
            "new UDP flow, distinct 5-tuple, both entries inserted",
            &udp_q,
            lab.c0,
            Mode::Distinct,
            24.0,
            "-",
        ),
    ];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let config = dp.config();
    for Case(path, pkt, ifindex, mode, target, katran) in wrapped {
        if !path.contains(only.as_str()) {
            continue;
        }
        if mode == Mode::Rewrite {
            // Every entry is expired on arrival: each run takes the new-flow
            // path (service, Maglev, SNAT ownership check) and revives the entries.
            dp.set_config(lb_common::Config {
                tcp_timeout_ns: 0,
                udp_timeout_ns: 0,
                ..config
            })
            .unwrap();
        }
        b.save(pkt, mode == Mode::Distinct);
        let (_, single_act, single_out) = time_prog(b.prog("restore_and_call"), pkt, ifindex, 1);
        // Baseline, wrapper and wrapper + program back to back in every
        // round: the ratio of each round cancels the machine's drift.
        let (mut ns, mut ratios) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (base, act, _) = b.once("baseline", &ack, lab.c0);
            assert_eq!(act, XDP_TX);
            let (wrapper, act, _) = b.once("restore_only", pkt, ifindex);
            assert_eq!(act, XDP_TX);
            let (total, act, out) = b.once("restore_and_call", pkt, ifindex);
            assert_eq!(
                act, single_act,
                "{path}: last repeat differs from a single run"
            );
            assert!(act == XDP_REDIRECT || act == XDP_TX, "{path}: action {act}");
            if mode != Mode::Distinct {
                assert_eq!(out, single_out, "{path}: output of the last repeat differs");
            }
            if std::env::var("BENCH_VERBOSE").is_ok() {
                eprintln!(
                    "{path}: baseline {base} ns, wrapper+program {total} ns, wrapper {wrapper} ns"
                );
            }
            let cost = (total - wrapper).max(0.0);
            base_samples.push(base);
            ns.push(cost);
            ratios.push(cost / base);
        }
        dp.set_config(config).unwrap();
        rows.push(Row {
            path,
            ns: median(ns),
            ratio: median(ratios),
            target,
            katran,
        });
    }
    // The pass path does not rewrite, so it runs directly.
    let (_, act, single) = one(&mut dp, &other, lab.c0);
    assert_eq!((act, &single), (XDP_PASS, &other));
    let (mut ns, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (base, _, _) = b.once("baseline", &ack, lab.c0);
        let (cost, act, out) = time_prog(dp.program(), &other, lab.c0, repeat);
        assert_eq!((act, &out), (XDP_PASS, &other));
        base_samples.push(base);
        ns.push(cost);
        ratios.push(cost / base);
    }
    rows.push(Row {
        path: "non-VIP pass",
        ns: median(ns),
        ratio: median(ratios),
        target: 3.7,
        katran: "~26 ns (3.7x)",
    });
    let base = median(base_samples);

    let exhausted = dp.reason(lb_common::Reason::DropSnatExhausted).unwrap();
    println!(
        "repeat {repeat} x {rounds} rounds, medians; ratios are per round, against the baseline run just before; CPU: {}",
        cpu_model()
    );
    println!();
    println!("| path | ns/packet | × baseline | target | Katran here |");
    println!("|---|---:|---:|---:|---|");
    println!("| bare baseline (parse, swap MACs, XDP_TX) | {base:.1} | 1.0 | - | ~7 ns |");
    let mut json = vec![format!("{{\"path\":\"baseline\",\"ns\":{base:.2}}}")];
    for r in &rows {
        let ratio = r.ratio;
        let verdict = if ratio <= r.target { "ok" } else { "OVER" };
        println!(
            "| {} | {:.1} | {:.1} | ≤ {}× {} | {} |",
            r.path, r.ns, ratio, r.target, verdict, r.katran
        );
        json.push(format!(
            "{{\"path\":\"{}\",\"ns\":{:.2},\"ratio\":{:.2}}}",
            r.path, r.ns, ratio
        ));
    }
    println!();
    println!("SNAT exhaustion drops during the run: {exhausted}");
    println!("JSON: [{}]", json.join(","));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
