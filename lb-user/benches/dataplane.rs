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
    Ebpf, EbpfLoader, Pod,
};
use lb_user::{
    dataplane::{Dataplane, BENCH_OBJECT},
    plan::{BackendSpec, ServiceSpec},
};
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
    rounds: u32,
    /// The packet and ingress interface the baseline runs on.
    base: (Vec<u8>, u32),
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

    /// Points the wrapper's tail call at `fd`.
    fn jump_to(&mut self, fd: &aya::programs::ProgramFd) {
        let fd = fd.try_clone().unwrap();
        let mut jump: ProgramArray<&mut MapData> =
            ProgramArray::try_from(self.obj.map_mut("JUMP").unwrap()).unwrap();
        jump.set(0, &fd, 0).unwrap();
    }

    /// `rounds` rounds of baseline, wrapper, and wrapper + the program in
    /// the jump slot, back to back: the ratio of each round cancels the
    /// machine's drift. Returns the program's ns and ratio per round, and
    /// the baselines.
    fn rounds(
        &mut self,
        path: &str,
        pkt: &[u8],
        ifindex: u32,
        mode: Mode,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        self.save(pkt, mode == Mode::Distinct);
        let (_, single_act, single_out) = time_prog(self.prog("restore_and_call"), pkt, ifindex, 1);
        let (mut ns, mut ratios, mut bases) = (Vec::new(), Vec::new(), Vec::new());
        let (base_pkt, base_ifindex) = self.base.clone();
        for _ in 0..self.rounds {
            let (base, act, _) = self.once("baseline", &base_pkt, base_ifindex);
            assert_eq!(act, XDP_TX);
            let (wrapper, act, _) = self.once("restore_only", pkt, ifindex);
            assert_eq!(act, XDP_TX);
            let (total, act, out) = self.once("restore_and_call", pkt, ifindex);
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
            bases.push(base);
            ns.push(cost);
            ratios.push(cost / base);
        }
        (ns, ratios, bases)
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
    let ctx = netlab::xdp::test_ctx(pkt.len(), ifindex);
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
    let conn_max: u32 = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 21);
    let lab = init();
    let result = std::panic::catch_unwind(|| run(lab, repeat, rounds, conn_max));
    teardown();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(lab: &Lab, repeat: u32, rounds: u32, conn_max: u32) {
    // More backends and all SNAT addresses, so a million new flows do not
    // crowd the SNAT pool: the point is the cost of a new flow, not of probing.
    let extra: Vec<(Ipv4Addr, [u8; 6])> = (0..13u8)
        .map(|i| (Ipv4Addr::new(10, 99, 1, 20 + i), [2, 0, 0, 0, 1, 20 + i]))
        .collect();
    for (ip, mac) in &extra {
        lab.lb.neigh_replace(*ip, *mac, "b0").unwrap();
    }
    let mut dp = Dataplane::load(
        lb_user::plan::Limits {
            max_services: 4,
            max_backends: 64,
            conn_max,
            maglev_size: M,
        },
        lb_user::plan::default_config(SEED, M),
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
    // A SYN flood's target: one backend behind 1,024 SNAT ports, all held
    // by half-open flows, so every new SYN probes them all and evicts one.
    let flooded = ServiceSpec {
        id: 2,
        port: 81,
        snat_addrs: vec![SNAT],
        snat_ports: (10_000, 11_023),
        backends: web.backends[..1].to_vec(),
        ..web.clone()
    };
    dp.apply_service(&flooded).unwrap();
    for i in 0..2048u32 {
        let e = Ends {
            src: Ipv4Addr::from(0x6440_0000 + i),
            ..from_client(1024, 81)
        };
        let (_, act, _) = time_prog(dp.program(), &tcp(e, SYN, b""), lab.c0, 1);
        assert_eq!(act, XDP_REDIRECT);
    }
    assert!(dp.reason(lb_common::Reason::EvictHalfOpen).unwrap() > 0);

    // The floor programs' tables are as large as the connection table.
    let obj = EbpfLoader::new()
        .map_max_entries("FLOOR_A", conn_max)
        .map_max_entries("FLOOR_B", conn_max)
        .load(BENCH_OBJECT)
        .unwrap();
    let mut b = Bench {
        obj,
        repeat,
        rounds,
        base: (Vec::new(), 0),
    };
    for name in [
        "baseline",
        "restore_only",
        "restore_and_call",
        "insert_one",
        "insert_two",
    ] {
        b.prog(name).load().unwrap();
    }
    b.jump_to(dp.program().fd().unwrap());

    let syn = tcp(from_client(40000, 80), SYN, b"");
    let flood_syn = tcp(from_client(40000, 81), SYN, b"");
    let ack = tcp(from_client(40000, 80), ACK, b"");
    b.base = (ack.clone(), lab.c0);
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
    let wrapped: [Case; 8] = [
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
        Case(
            "SYN flood: new TCP flow, distinct 5-tuple, its SNAT pool held by half-open flows (one evicted)",
            &flood_syn,
            lab.c0,
            Mode::Distinct,
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
                tcp_syn_timeout_ns: 0,
                udp_timeout_ns: 0,
                ..config
            })
            .unwrap();
        }
        let (ns, ratios, bases) = b.rounds(path, pkt, ifindex, mode);
        base_samples.extend(bases);
        dp.set_config(config).unwrap();
        rows.push(Row {
            path,
            ns: netlab::median(&ns),
            ratio: netlab::median(&ratios),
            target,
            katran,
        });
    }
    // The kernel's floor for a brand-new flow: the baseline plus the inserts
    // alone, on distinct 5-tuples into tables of the same size, filled the
    // same way. Not the load balancer: what any XDP balancer with an LRU
    // connection table pays on this machine.
    // The same-5-tuple row is an update in place of one hot entry, the way a
    // repeated SYN is timed (Katran's "SYN that writes" figure).
    let floors = [
        (
            "floor: baseline + 1 LRU insert, same 5-tuple (an update in place)",
            "insert_one",
            Mode::Same,
        ),
        (
            "floor: baseline + 1 LRU insert, distinct 5-tuple (a DSR balancer's write)",
            "insert_one",
            Mode::Distinct,
        ),
        (
            "floor: baseline + 2 LRU inserts, distinct 5-tuple (FULLNAT's two writes)",
            "insert_two",
            Mode::Distinct,
        ),
    ];
    let mut floor_rows = Vec::new();
    for (path, name, mode) in floors {
        if !path.contains(only.as_str()) && !only.contains("distinct") {
            continue;
        }
        let fd = b.prog(name).fd().unwrap().try_clone().unwrap();
        b.jump_to(&fd);
        let (ns, ratios, bases) = b.rounds(path, &syn, lab.c0, mode);
        base_samples.extend(bases);
        floor_rows.push(Row {
            path,
            ns: netlab::median(&ns),
            ratio: netlab::median(&ratios),
            target: 0.0,
            katran: "-",
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
        ns: netlab::median(&ns),
        ratio: netlab::median(&ratios),
        target: 3.7,
        katran: "~26 ns (3.7x)",
    });
    let base = netlab::median(&base_samples);

    let exhausted = dp.reason(lb_common::Reason::DropSnatExhausted).unwrap();
    println!(
        "repeat {repeat} x {rounds} rounds, medians; ratios are per round, against the baseline run just before; CPU: {}",
        netlab::proc::cpu_model()
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
    for r in &floor_rows {
        println!("| {} | {:.1} | {:.1} | - | - |", r.path, r.ns, r.ratio);
        json.push(format!(
            "{{\"path\":\"{}\",\"ns\":{:.2},\"ratio\":{:.2}}}",
            r.path, r.ns, r.ratio
        ));
    }
    println!();
    // A brand-new flow against the floor of the writes it must do.
    let distinct = rows
        .iter()
        .find(|r| r.path.starts_with("new TCP flow, distinct"));
    if let (Some(d), Some(two)) = (distinct, floor_rows.get(2)) {
        println!(
            "New TCP flow on a distinct 5-tuple: {:.2}x the two-insert floor ({:.0} ns over it).",
            d.ns / two.ns,
            d.ns - two.ns
        );
    }
    println!("SNAT exhaustion drops during the run: {exhausted}");
    println!("JSON: [{}]", json.join(","));
}
