//! The compiled XDP program, run in the kernel with BPF_PROG_TEST_RUN inside a
//! network namespace that has real routes and neighbours, so `bpf_fib_lookup`
//! answers as it would on a live node. Outputs are checked with etherparse.
//!
//! Needs root. One namespace pair is shared by every case; each case loads
//! its own copy of the program, so their maps do not interfere.

#[path = "../support/mod.rs"]
mod support;

use std::{collections::HashSet, net::Ipv4Addr};

use lb_common::{
    hash::flow_hash, snat_candidate, FlowKey, Reason, SyncEntry, CFG_SYNC, CT_FIN, PROTO_TCP,
    SVC_ENABLED, SVC_SRC_HASH,
};
use lb_user::{
    dataplane::{Dataplane, SyncedFlow},
    maglev,
    plan::BackendSpec,
    sys::{addr_of, be_addr},
};
use libtest_mimic::{Arguments, Failed, Trial};
use support::{
    dplab::{self, *},
    packet::*,
};

fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg().into())
    }
}

macro_rules! ensure_eq {
    ($a:expr, $b:expr) => { ensure_eq!($a, $b, "") };
    ($a:expr, $b:expr, $($t:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{} != {}: {:?} vs {:?} {}", stringify!($a), stringify!($b), a, b,
                format!($($t)+)).into());
        }
    }};
}

mod flood;
mod fuzz;
mod icmp;
mod policies;
mod sync;

use flood::*;
use fuzz::*;
use icmp::*;
use policies::*;
use sync::*;

// ---- the cases ----

fn syn_is_rewritten_and_redirected() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let pkt = tcp(from_client(40000, 80), SYN, b"hello");
    let (act, out) = run(&mut dp, &pkt);
    ensure_eq!(act, XDP_REDIRECT, "{:?}", dp.reasons()?);
    let s = parse_valid(&out);
    let be = BACKENDS
        .iter()
        .find(|b| b.0 == s.dst)
        .ok_or("not a backend")?;
    ensure_eq!(s.dmac, be.1);
    ensure_eq!(s.smac, lab.b0_mac);
    ensure_eq!(s.src, SNAT);
    ensure_eq!(s.dport, BACKEND_PORT);
    check(s.sport >= 1024, || format!("SNAT port {}", s.sport))?;
    let key = flow(CLIENT, 40000, 80, PROTO_TCP);
    let conn = dp.conn(&key)?.ok_or("no conn entry")?;
    ensure_eq!(addr_of(conn.backend_addr), s.dst);
    ensure_eq!(u16::from_be(conn.snat_port), s.sport);
    ensure_eq!(dp.reason(Reason::RedirectForward)?, 1);
    let t = dp.service_traffic(0)?;
    ensure_eq!((t.packets, t.new_conns), (1, 1));
    Ok(())
}

fn same_link_backend_uses_xdp_tx() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let mut svc = web();
    svc.backends = vec![BackendSpec {
        id: 9,
        addr: SAME_LINK.0,
        port: 8080,
        weight: 1,
    }];
    svc.snat_addrs = vec![Ipv4Addr::new(10, 99, 0, 1)];
    dp.apply_service(&svc)?;
    let (act, out) = run(&mut dp, &tcp(from_client(40001, 80), SYN, b""));
    ensure_eq!(act, XDP_TX);
    let s = parse_valid(&out);
    ensure_eq!(
        (s.dst, s.dmac, s.smac),
        (SAME_LINK.0, SAME_LINK.1, lab.c0_mac)
    );
    ensure_eq!(dp.reason(Reason::TxForward)?, 1);
    Ok(())
}

fn flow(src: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey::new(
        be_addr(src),
        be_addr(VIP),
        sport.to_be(),
        dport.to_be(),
        proto,
    )
}

/// A web backend `be`'s packet to SNAT port `port`, on the backend link.
fn from_backend(be: Ipv4Addr, port: u16) -> Ends {
    Ends {
        smac: backend_mac(be),
        dmac: lab().b0_mac,
        src: be,
        dst: SNAT,
        sport: BACKEND_PORT,
        dport: port,
    }
}

/// A web reply as the LB restored it to client port `sport`.
fn restored_to(sport: u16) -> Ends {
    Ends {
        smac: lab().c0_mac,
        dmac: CLIENT_MAC,
        src: VIP,
        dst: CLIENT,
        sport: 80,
        dport: sport,
    }
}

/// The backend's answer within the TCP flow that reached backend `be` from
/// SNAT port `port` (confirms a half-open flow).
fn answer(dp: &mut Dataplane, be: Ipv4Addr, port: u16) -> Result<(), Failed> {
    let (act, _) = run_on(dp, &tcp(from_backend(be, port), ACK, b""), lab().b0)?;
    ensure_eq!(act, XDP_REDIRECT, "the answer: {:?}", dp.reasons()?);
    Ok(())
}

/// A whole TCP handshake from client port `sport` to the web service: SYN,
/// the backend's answer, the client's ACK. Returns (backend, SNAT port).
fn handshake(dp: &mut Dataplane, sport: u16) -> Result<(Ipv4Addr, u16), Failed> {
    let (act, out) = run(dp, &tcp(from_client(sport, 80), SYN, b""));
    ensure_eq!(act, XDP_REDIRECT, "SYN from {sport}: {:?}", dp.reasons()?);
    let s = parse_valid(&out);
    answer(dp, s.dst, s.sport)?;
    let (act, out) = run(dp, &tcp(from_client(sport, 80), ACK, b""));
    ensure_eq!(act, XDP_REDIRECT);
    ensure_eq!(parse_valid(&out).sport, s.sport);
    Ok((s.dst, s.sport))
}

fn backend_matches_maglev_prediction() -> Result<(), Failed> {
    let mut dp = dp();
    let table = maglev::build(SEED, M, &web().backends);
    ensure_eq!(
        table,
        dp.live_table(0)?,
        "kernel table differs from userspace build"
    );
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..10_000 {
        let src = Ipv4Addr::from(0x0a63_0000u32 | rng.below(0xffff) as u32);
        let sport = 1024 + rng.below(60000) as u16;
        let mut e = from_client(sport, 80);
        e.src = src;
        let (act, out) = run(&mut dp, &tcp(e, SYN, b""));
        ensure_eq!(act, XDP_REDIRECT, "flow {i}");
        let h = flow_hash(
            SEED,
            be_addr(src),
            be_addr(VIP),
            sport.to_be(),
            80u16.to_be(),
            PROTO_TCP,
        );
        let want = BACKENDS[table[(h % M) as usize] as usize].0;
        ensure_eq!(parse_valid(&out).dst, want, "flow {i} {src}:{sport}");
    }
    Ok(())
}

fn source_hash_keeps_a_client_on_one_backend() -> Result<(), Failed> {
    let mut dp = dp();
    let mut svc = web();
    svc.flags |= SVC_SRC_HASH;
    dp.apply_service(&svc)?;
    let mut per_client = std::collections::HashMap::new();
    for c in 0..50u8 {
        for p in 0..20u16 {
            let mut e = from_client(30000 + p, 80);
            e.src = Ipv4Addr::new(10, 99, 7, c);
            let (_, out) = run(&mut dp, &tcp(e, SYN, b""));
            per_client
                .entry(c)
                .or_insert_with(HashSet::new)
                .insert(parse_valid(&out).dst);
        }
    }
    check(per_client.values().all(|s| s.len() == 1), || {
        "a client saw two backends".into()
    })?;
    let used: HashSet<_> = per_client.values().flatten().collect();
    ensure_eq!(used.len(), 3, "all backends used by some client");
    Ok(())
}

fn reply_restores_vip_and_client() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let (_, out) = run(&mut dp, &tcp(from_client(40002, 80), SYN, b""));
    let fwd = parse_valid(&out);
    let reply = Ends {
        smac: backend_mac(fwd.dst),
        dmac: lab.b0_mac,
        src: fwd.dst,
        dst: fwd.src,
        sport: fwd.dport,
        dport: fwd.sport,
    };
    let (act, out) = run_on(&mut dp, &tcp(reply, ACK, b"world"), lab.b0)?;
    ensure_eq!(act, XDP_REDIRECT);
    let s = parse_valid(&out);
    ensure_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 80, CLIENT, 40002));
    ensure_eq!((s.smac, s.dmac), (lab.c0_mac, CLIENT_MAC));
    ensure_eq!(dp.service_traffic(0)?.packets, 2);
    Ok(())
}

fn established_flow_survives_backend_removal() -> Result<(), Failed> {
    let mut dp = dp();
    let (_, out) = run(&mut dp, &tcp(from_client(40003, 80), SYN, b""));
    let first = parse_valid(&out);
    let mut svc = web();
    svc.backends.retain(|b| b.addr != first.dst);
    dp.apply_service(&svc)?;
    let (act, out) = run(&mut dp, &tcp(from_client(40003, 80), ACK, b"more"));
    ensure_eq!(act, XDP_REDIRECT);
    let again = parse_valid(&out);
    ensure_eq!(
        (again.dst, again.sport),
        (first.dst, first.sport),
        "flow moved"
    );
    for p in 0..1000 {
        let (_, out) = run(&mut dp, &tcp(from_client(20000 + p, 80), SYN, b""));
        check(parse_valid(&out).dst != first.dst, || {
            format!("new flow {p} went to the removed backend")
        })?;
    }
    Ok(())
}

fn snat_ports_unique_across_10k_flows() -> Result<(), Failed> {
    let mut dp = dp();
    let mut svc = web();
    svc.backends.truncate(1);
    svc.snat_addrs = vec![SNAT, SNAT2];
    dp.set_addr(SNAT2, lb_common::ADDR_SNAT)?;
    dp.apply_service(&svc)?;
    let mut seen = HashSet::new();
    for i in 0..10_000u32 {
        let mut e = from_client(1024 + (i % 50_000) as u16, 80);
        e.src = Ipv4Addr::from(0x0a62_0000 + i / 16);
        let (act, out) = run(&mut dp, &tcp(e, SYN, b""));
        ensure_eq!(act, XDP_REDIRECT, "flow {i}");
        let s = parse_valid(&out);
        check(seen.insert((s.src, s.sport)), || {
            format!("flow {i}: {}:{} reused", s.src, s.sport)
        })?;
    }
    ensure_eq!(dp.reason(Reason::DropSnatExhausted)?, 0);
    check(seen.iter().any(|s| s.0 == SNAT2), || {
        "second SNAT address never used".into()
    })?;
    Ok(())
}

fn exhausted_snat_pool_is_counted() -> Result<(), Failed> {
    let mut dp = dp();
    let mut svc = web();
    svc.backends.truncate(1);
    svc.snat_ports = (2000, 2009);
    dp.apply_service(&svc)?;
    let mut ok = 0;
    for p in 0..15 {
        // Confirmed flows: a SYN never takes their ports.
        match run(&mut dp, &tcp(from_client(50000 + p, 80), SYN, b"")) {
            (XDP_REDIRECT, out) => {
                ok += 1;
                let s = parse_valid(&out);
                answer(&mut dp, s.dst, s.sport)?;
            }
            (XDP_DROP, _) => {}
            (a, _) => return Err(format!("action {a}").into()),
        }
    }
    ensure_eq!(ok, 10);
    ensure_eq!(dp.reason(Reason::DropSnatExhausted)?, 5);
    ensure_eq!(dp.reason(Reason::EvictHalfOpen)?, 0);
    Ok(())
}

/// A DNS query from client port `sport`, with a UDP checksum of 0 (none)
/// if `zero`.
fn query(sport: u16, zero: bool) -> Vec<u8> {
    let mut q = udp(from_client(sport, 53), b"\x12\x34query");
    if zero {
        zero_udp_checksum(&mut q);
    }
    q
}

fn udp_forward_and_reply() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    for zero in [false, true] {
        let sport = if zero { 5353 } else { 5354 };
        let q = query(sport, zero);
        let (act, out) = run(&mut dp, &q);
        ensure_eq!(act, XDP_REDIRECT);
        let s = parse_valid(&out);
        ensure_eq!((s.src, s.dport), (SNAT, 53));
        ensure_eq!(
            s.udp_check == Some(0),
            zero,
            "checksum 0 must stay 0, others must not become 0"
        );
        let mut r = udp(
            Ends {
                smac: backend_mac(s.dst),
                dmac: lab.b0_mac,
                src: s.dst,
                dst: s.src,
                sport: 53,
                dport: s.sport,
            },
            b"\x12\x34answer",
        );
        if zero {
            zero_udp_checksum(&mut r);
        }
        let (act, out) = run_on(&mut dp, &r, lab.b0)?;
        ensure_eq!(act, XDP_REDIRECT);
        let back = parse_valid(&out);
        ensure_eq!(
            (back.src, back.sport, back.dst, back.dport),
            (VIP, 53, CLIENT, sport)
        );
        ensure_eq!(back.udp_check == Some(0), zero);
    }
    Ok(())
}

fn udp_flow_expires_after_idle_timeout() -> Result<(), Failed> {
    let mut dp = dp();
    let mut cfg = dp.config();
    cfg.udp_timeout_ns = 2_000_000;
    dp.set_config(cfg)?;
    run(&mut dp, &udp(from_client(6000, 53), b"a"));
    run(&mut dp, &udp(from_client(6000, 53), b"b"));
    ensure_eq!(dp.service_traffic(1)?.new_conns, 1);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let (act, _) = run(&mut dp, &udp(from_client(6000, 53), b"c"));
    ensure_eq!(act, XDP_REDIRECT);
    ensure_eq!(
        dp.service_traffic(1)?.new_conns,
        2,
        "idle flow should start afresh"
    );
    Ok(())
}

fn tcp_rst_ends_and_fin_shortens() -> Result<(), Failed> {
    let mut dp = dp();
    let key = flow(CLIENT, 40010, 80, PROTO_TCP);
    let (_, out) = run(&mut dp, &tcp(from_client(40010, 80), SYN, b""));
    let s = parse_valid(&out);
    let (act, _) = run(&mut dp, &tcp(from_client(40010, 80), FIN, b""));
    ensure_eq!(act, XDP_REDIRECT);
    ensure_eq!(dp.conn(&key)?.map(|c| c.flags & CT_FIN), Some(CT_FIN));
    let (act, _) = run(&mut dp, &tcp(from_client(40010, 80), RST, b""));
    ensure_eq!(act, XDP_REDIRECT, "the RST itself is forwarded");
    ensure_eq!(dp.conn(&key)?, None);
    let rkey = FlowKey::new(
        be_addr(s.dst),
        be_addr(s.src),
        s.dport.to_be(),
        s.sport.to_be(),
        PROTO_TCP,
    );
    ensure_eq!(dp.nat(&rkey)?, None);
    let (act, _) = run(&mut dp, &tcp(from_client(40011, 80), RST, b""));
    ensure_eq!(act, XDP_DROP, "RST without state creates nothing");
    ensure_eq!(dp.reason(Reason::DropRstNoConn)?, 1);
    Ok(())
}

/// `on_down: reset`: a backend's connections are purged, so its flows start
/// afresh; other backends' connections stay.
fn purging_a_backend_removes_only_its_connections() -> Result<(), Failed> {
    let mut dp = dp();
    let mut by_backend: std::collections::HashMap<Ipv4Addr, Vec<u16>> = Default::default();
    for p in 0..60u16 {
        let (_, out) = run(&mut dp, &tcp(from_client(43000 + p, 80), SYN, b""));
        by_backend
            .entry(parse_valid(&out).dst)
            .or_default()
            .push(43000 + p);
    }
    let victim = BACKENDS[0].0;
    let n = dp.purge_backend(0)?;
    ensure_eq!(n, by_backend[&victim].len());
    for (be, ports) in &by_backend {
        for &p in ports {
            let present = dp.conn(&flow(CLIENT, p, 80, PROTO_TCP))?.is_some();
            ensure_eq!(present, *be != victim, "flow {p} to {be}");
        }
    }
    Ok(())
}

fn vlan_tagged_flow_keeps_its_tag() -> Result<(), Failed> {
    let mut dp = dp();
    let p = vlan_tag(&tcp(from_client(40020, 80), SYN, b"x"), 42);
    let (act, out) = run(&mut dp, &p);
    ensure_eq!(act, XDP_REDIRECT);
    let s = parse_valid(&out);
    ensure_eq!((s.vlan, s.src), (Some(42), SNAT));
    Ok(())
}

fn unknown_neighbour_goes_to_the_kernel() -> Result<(), Failed> {
    let mut dp = dp();
    let mut svc = web();
    svc.backends = vec![BackendSpec {
        id: 7,
        addr: NO_NEIGH,
        port: 8080,
        weight: 1,
    }];
    dp.apply_service(&svc)?;
    let (act, out) = run(&mut dp, &tcp(from_client(40030, 80), SYN, b""));
    ensure_eq!(act, XDP_PASS);
    ensure_eq!(
        parse_valid(&out).dst,
        NO_NEIGH,
        "passed rewritten, for the kernel to forward"
    );
    ensure_eq!(dp.reason(Reason::PassNoNeigh)?, 1);
    Ok(())
}

/// A cached next hop is reused within its TTL, then looked up again.
fn nexthop_cache_follows_a_neighbour_change() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let be = Ipv4Addr::new(10, 99, 1, 77);
    let neigh = |mac: &str| {
        let mac = netlab::parse_mac(mac).unwrap();
        lab.lb.neigh_replace(be, mac, "b0").unwrap()
    };
    neigh("02:00:00:00:07:01");
    let mut svc = web();
    svc.backends = vec![BackendSpec {
        id: 5,
        addr: be,
        port: 8080,
        weight: 1,
    }];
    dp.apply_service(&svc)?;
    let mut cfg = dp.config();
    cfg.nexthop_ttl_ns = 300_000_000;
    dp.set_config(cfg)?;
    let mac = |dp: &mut Dataplane| -> Result<[u8; 6], Failed> {
        let (act, out) = run(dp, &tcp(from_client(40040, 80), SYN, b""));
        ensure_eq!(act, XDP_REDIRECT);
        Ok(parse_valid(&out).dmac)
    };
    ensure_eq!(mac(&mut dp)?, [2, 0, 0, 0, 7, 1]);
    neigh("02:00:00:00:07:02");
    ensure_eq!(mac(&mut dp)?, [2, 0, 0, 0, 7, 1], "cached within the TTL");
    std::thread::sleep(std::time::Duration::from_millis(350));
    ensure_eq!(
        mac(&mut dp)?,
        [2, 0, 0, 0, 7, 2],
        "looked up again after the TTL"
    );
    cfg.nexthop_ttl_ns = 0;
    dp.set_config(cfg)?;
    neigh("02:00:00:00:07:03");
    ensure_eq!(
        mac(&mut dp)?,
        [2, 0, 0, 0, 7, 3],
        "TTL 0 looks up every packet"
    );
    lab.lb
        .neigh_del("10.99.1.77".parse().unwrap(), "b0")
        .unwrap();
    Ok(())
}

/// Trials named after their functions.
macro_rules! trials {
    ($($f:ident),* $(,)?) => { vec![$(Trial::test(stringify!($f), $f)),*] };
}

fn main() {
    let args = Arguments::from_args();
    // The lab must exist before the harness spawns its threads: they inherit
    // the namespace of the main thread.
    dplab::init();
    let trials = trials![
        syn_is_rewritten_and_redirected,
        same_link_backend_uses_xdp_tx,
        backend_matches_maglev_prediction,
        source_hash_keeps_a_client_on_one_backend,
        reply_restores_vip_and_client,
        established_flow_survives_backend_removal,
        snat_ports_unique_across_10k_flows,
        exhausted_snat_pool_is_counted,
        floods_leave_live_flows_alone,
        half_open_flows_expire_after_the_syn_timeout,
        a_takeover_opens_midflow_segments_half_open,
        icmp_errors_reach_the_flows_other_end,
        short_quotes_and_udp_errors_are_translated,
        other_icmp_goes_to_the_kernel,
        tiny_path_mtus_stay_away_from_the_backends,
        flows_off_their_first_snat_port_are_reported_for_sync,
        an_installed_peer_flow_is_forwarded_and_restored,
        a_datagrams_flows_apply_in_order,
        a_midflow_takeover_reclaims_a_port_idle_since_before_it,
        udp_forward_and_reply,
        udp_flow_expires_after_idle_timeout,
        tcp_rst_ends_and_fin_shortens,
        vlan_tagged_flow_keeps_its_tag,
        purging_a_backend_removes_only_its_connections,
        unknown_neighbour_goes_to_the_kernel,
        policies_and_misses_are_counted,
        nexthop_cache_follows_a_neighbour_change,
        non_vip_traffic_passes_byte_identical,
        truncations_are_never_forwarded,
        random_input_is_never_forwarded_unless_well_formed,
        mutated_frames_of_live_flows_are_forwarded_valid_or_refused,
        maglev_is_the_same_in_two_processes,
        pinned_maps_are_checked_when_adopted,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    dplab::teardown();
    conclusion.exit();
}
