//! The compiled XDP program, run in the kernel with BPF_PROG_TEST_RUN inside a
//! network namespace that has real routes and neighbours, so `bpf_fib_lookup`
//! answers as it would on a live node. Outputs are checked with etherparse.
//!
//! Needs root. One namespace pair is shared by every case; each case loads
//! its own copy of the program, so their maps do not interfere.

mod support;

use std::{collections::HashSet, net::Ipv4Addr, sync::OnceLock};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    hash::flow_hash, FlowKey, Reason, CT_FIN, PROTO_TCP, PROTO_UDP, SVC_ENABLED, SVC_SRC_HASH,
};
use lb_user::{
    dataplane::{addr_of, be_addr, default_config, BackendSpec, Dataplane, Limits, ServiceSpec},
    maglev,
};
use libtest_mimic::{Arguments, Failed, Trial};
use support::{netns::*, packet::*};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const SEED: u32 = 0x5eed;
const M: u32 = maglev::DEFAULT_SIZE;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 100, 1);
const SNAT: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
const SNAT2: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 2);
const BACKEND_PORT: u16 = 8080;
/// Backends behind the `b0` link, with their neighbour MACs.
const BACKENDS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(10, 99, 1, 10), [2, 0, 0, 0, 1, 10]),
    (Ipv4Addr::new(10, 99, 1, 11), [2, 0, 0, 0, 1, 11]),
    (Ipv4Addr::new(10, 99, 1, 12), [2, 0, 0, 0, 1, 12]),
];
/// A backend on the client side link: reached with XDP_TX.
const SAME_LINK: (Ipv4Addr, [u8; 6]) = (Ipv4Addr::new(10, 99, 0, 50), [2, 0, 0, 0, 0, 50]);
/// A backend whose MAC is not known yet.
const NO_NEIGH: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 99);

/// The shared topology: `lb` holds `c0` (clients) and `b0` (backends); their
/// veth peers sit in `peer` so the links are up.
struct Lab {
    lb: Netns,
    _peer: Netns,
    c0: u32,
    b0: u32,
    c0_mac: [u8; 6],
    b0_mac: [u8; 6],
    /// Keeps an XDP program on both links, which registers their receive
    /// queues: test_run needs that to accept `ingress_ifindex`.
    _holder: std::sync::Mutex<Dataplane>,
}

fn lab() -> &'static Lab {
    LAB_INIT.get().expect("lab not set up")
}

fn setup() -> Lab {
    reap_stale();
    let lb = Netns::new("dp");
    let peer = Netns::new("dpp");
    veth(&lb, "c0", &peer, "c0p");
    veth(&lb, "b0", &peer, "b0p");
    lb.ip(&["addr", "add", "10.99.0.1/24", "dev", "c0"]);
    lb.ip(&["addr", "add", "10.99.1.1/24", "dev", "b0"]);
    lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let neigh = |ip: Ipv4Addr, mac: [u8; 6], dev: &str| {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        lb.ip(&[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    };
    neigh(CLIENT, CLIENT_MAC, "c0");
    neigh(SAME_LINK.0, SAME_LINK.1, "c0");
    for (ip, mac) in BACKENDS {
        neigh(ip, mac, "b0");
    }
    lb.enter();
    let mut holder = new_dp();
    holder.attach("c0").unwrap();
    holder.attach("b0").unwrap();
    Lab {
        c0: lb.ifindex("c0"),
        b0: lb.ifindex("b0"),
        c0_mac: lb.mac("c0"),
        b0_mac: lb.mac("b0"),
        lb,
        _peer: peer,
        _holder: std::sync::Mutex::new(holder),
    }
}

fn new_dp() -> Dataplane {
    let limits = Limits {
        max_services: 4,
        max_backends: 64,
        conn_max: 65536,
        maglev_size: M,
    };
    Dataplane::load(limits, default_config(SEED, M)).expect("load")
}

fn backends() -> Vec<BackendSpec> {
    BACKENDS
        .iter()
        .enumerate()
        .map(|(i, (addr, _))| BackendSpec {
            id: i as u32,
            addr: *addr,
            port: BACKEND_PORT,
            weight: 1,
        })
        .collect()
}

fn web() -> ServiceSpec {
    ServiceSpec {
        id: 0,
        vip: VIP,
        port: 80,
        proto: PROTO_TCP,
        flags: SVC_ENABLED,
        snat_addrs: vec![SNAT],
        snat_ports: (1024, 65535),
        backends: backends(),
    }
}

fn dns() -> ServiceSpec {
    ServiceSpec {
        id: 1,
        port: 53,
        proto: PROTO_UDP,
        backends: backends()
            .into_iter()
            .map(|b| BackendSpec {
                id: b.id + 10,
                port: 53,
                ..b
            })
            .collect(),
        ..web()
    }
}

/// A program loaded in the lab with the web and DNS services.
fn dp() -> Dataplane {
    let lab = lab();
    lab.lb.enter();
    let mut dp = new_dp();
    dp.set_addr(VIP, lb_common::ADDR_VIP).unwrap();
    dp.set_addr(SNAT, lb_common::ADDR_SNAT).unwrap();
    dp.add_egress(lab.c0).unwrap();
    dp.add_egress(lab.b0).unwrap();
    dp.apply_service(&web()).unwrap();
    dp.apply_service(&dns()).unwrap();
    dp
}

/// Runs one packet as if received on `ifindex`: (action, output bytes).
fn run_on(dp: &mut Dataplane, pkt: &[u8], ifindex: u32) -> std::io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; pkt.len() + 256];
    // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    // The kernel takes data_end as the packet length.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(pkt),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..TestRunOptions::new()
    };
    match dp.program().test_run(opts) {
        Ok(r) => {
            out.truncate(r.data_size_out as usize);
            Ok((r.return_value, out))
        }
        Err(aya::programs::ProgramError::SyscallError(e)) => Err(e.io_error),
        Err(e) => panic!("test_run: {e}"),
    }
}

/// Runs a packet from the client link.
fn run(dp: &mut Dataplane, pkt: &[u8]) -> (u32, Vec<u8>) {
    run_on(dp, pkt, lab().c0).expect("test_run")
}

fn from_client(sport: u16, dport: u16) -> Ends {
    Ends {
        smac: CLIENT_MAC,
        dmac: lab().c0_mac,
        src: CLIENT,
        dst: VIP,
        sport,
        dport,
    }
}

fn backend_mac(ip: Ipv4Addr) -> [u8; 6] {
    BACKENDS
        .iter()
        .chain([&SAME_LINK])
        .find(|b| b.0 == ip)
        .unwrap()
        .1
}

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
    FlowKey {
        src_addr: be_addr(src),
        dst_addr: be_addr(VIP),
        src_port: sport.to_be(),
        dst_port: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}

fn backend_matches_maglev_prediction() -> Result<(), Failed> {
    let mut dp = dp();
    let table = maglev::build(SEED, M, &web().members());
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
        match run(&mut dp, &tcp(from_client(50000 + p, 80), SYN, b"")).0 {
            XDP_REDIRECT => ok += 1,
            XDP_DROP => {}
            a => return Err(format!("action {a}").into()),
        }
    }
    ensure_eq!(ok, 10);
    ensure_eq!(dp.reason(Reason::DropSnatExhausted)?, 5);
    Ok(())
}

fn udp_forward_and_reply() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    for zero in [false, true] {
        let sport = if zero { 5353 } else { 5354 };
        let mut q = udp(from_client(sport, 53), b"\x12\x34query");
        if zero {
            zero_udp_checksum(&mut q);
        }
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
    let rkey = FlowKey {
        src_addr: be_addr(s.dst),
        dst_addr: be_addr(s.src),
        src_port: s.dport.to_be(),
        dst_port: s.sport.to_be(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    };
    ensure_eq!(dp.nat(&rkey)?, None);
    let (act, _) = run(&mut dp, &tcp(from_client(40011, 80), RST, b""));
    ensure_eq!(act, XDP_DROP, "RST without state creates nothing");
    ensure_eq!(dp.reason(Reason::DropRstNoConn)?, 1);
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

fn policies_and_misses_are_counted() -> Result<(), Failed> {
    let mut dp = dp();
    // IPv4 options (IHL 6) to the VIP.
    let mut p = tcp(from_client(1, 80), SYN, b"");
    p.splice(34..34, [1, 1, 1, 1]);
    p[14] = 0x46;
    let len = u16::from_be_bytes([p[16], p[17]]) + 4;
    p[16..18].copy_from_slice(&len.to_be_bytes());
    ensure_eq!(run(&mut dp, &p).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropIpOptions)?, 1);
    // A fragment (MF set) to the VIP.
    let mut p = udp(from_client(2, 53), b"frag");
    p[20] = 0x20;
    ensure_eq!(run(&mut dp, &p).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropFragment)?, 1);
    // A disabled service passes, and so does an unknown port.
    let mut svc = web();
    svc.flags &= !SVC_ENABLED;
    dp.apply_service(&svc)?;
    ensure_eq!(run(&mut dp, &tcp(from_client(3, 80), SYN, b"")).0, XDP_PASS);
    ensure_eq!(dp.reason(Reason::PassDisabled)?, 1);
    ensure_eq!(run(&mut dp, &tcp(from_client(3, 81), SYN, b"")).0, XDP_PASS);
    ensure_eq!(dp.reason(Reason::PassNoService)?, 1);
    // No backend at all.
    let mut svc = web();
    svc.backends.clear();
    dp.apply_service(&svc)?;
    ensure_eq!(run(&mut dp, &tcp(from_client(4, 80), SYN, b"")).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropNoBackend)?, 1);
    Ok(())
}

fn non_vip_traffic_passes_byte_identical() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let other = Ends {
        dst: Ipv4Addr::new(10, 99, 0, 1),
        ..from_client(50000, 22)
    };
    let mut vrrp = udp(
        Ends {
            dst: Ipv4Addr::new(224, 0, 0, 18),
            ..other
        },
        &[0x21, 1, 100, 1, 0, 1, 0, 0],
    );
    vrrp[23] = 112;
    let arp = {
        let mut a = vec![0xff; 6];
        a.extend_from_slice(&CLIENT_MAC);
        a.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        a.extend_from_slice(&CLIENT_MAC);
        a.extend_from_slice(&CLIENT.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&VIP.octets());
        a
    };
    let mut icmp_to_vip = udp(from_client(0, 0), b"pingpingping");
    icmp_to_vip[23] = 1;
    let mut ipv6 = tcp(other, SYN, b"");
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ssh to the node", tcp(other, SYN, b"SSH-2.0")),
        ("udp to the node", udp(other, b"x")),
        ("vrrp", vrrp),
        ("arp", arp),
        ("icmp to the vip", icmp_to_vip),
        ("ipv6 ethertype", ipv6),
        (
            "reply with no nat entry",
            tcp(Ends { dst: SNAT, ..other }, ACK, b""),
        ),
    ];
    for (name, p) in cases {
        let (act, out) = run_on(&mut dp, &p, lab.c0)?;
        ensure_eq!(act, XDP_PASS, "{name}");
        check(out == p, || format!("{name}: bytes changed"))?;
    }
    Ok(())
}

/// Valid packets cut at every length from 0 to 128 bytes: below 14 the kernel
/// refuses the run; from 14 up nothing is forwarded.
fn truncations_are_never_forwarded() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let payload = [0x55u8; 120];
    let reply = Ends {
        smac: BACKENDS[0].1,
        dmac: lab.b0_mac,
        src: BACKENDS[0].0,
        dst: SNAT,
        sport: 8080,
        dport: 3000,
    };
    let packets = [
        tcp(from_client(41000, 80), SYN, &payload),
        udp(from_client(41001, 53), &payload),
        vlan_tag(&tcp(from_client(41002, 80), SYN, &payload), 7),
        tcp(reply, ACK, &payload),
    ];
    for p in &packets {
        // Establish the flows first, so truncated packets hit live state too.
        run(&mut dp, p);
    }
    for (i, p) in packets.iter().enumerate() {
        for len in 0..=128 {
            match run_on(&mut dp, &p[..len], lab.c0) {
                Err(e) => check(len < 14 && e.raw_os_error() == Some(libc::EINVAL), || {
                    format!("packet {i} len {len}: {e}")
                })?,
                Ok((act, _)) => {
                    check(len >= 14, || format!("packet {i} len {len} ran"))?;
                    check(act == XDP_PASS || act == XDP_DROP, || {
                        format!("packet {i} len {len}: action {act}")
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Random bytes, and random headers addressed to the VIP: the run never fails,
/// and what is forwarded was a well-formed IPv4 TCP/UDP packet to begin with.
fn random_input_is_never_forwarded_unless_well_formed() -> Result<(), Failed> {
    let mut dp = dp();
    let mut rng = Rng(0xfeed_f00d_dead_beef);
    let template = tcp(from_client(42000, 80), SYN, &[0u8; 40]);
    for i in 0..20_000 {
        let len = rng.below(160) as usize;
        let mut p = rng.bytes(len);
        if i % 2 == 1 && len >= 34 {
            // Keep Ethernet, IPv4 and the VIP; everything else random.
            p[..14].copy_from_slice(&template[..14]);
            p[30..34].copy_from_slice(&VIP.octets());
            if rng.below(2) == 0 {
                p[14] = 0x45;
                p[23] = [6u8, 17][rng.below(2) as usize];
                p[20] &= 0x80;
                let tl = (len - 14 - rng.below(4) as usize) as u16;
                p[16..18].copy_from_slice(&tl.to_be_bytes());
            }
        }
        match run_on(&mut dp, &p, lab().c0) {
            Err(e) => check(len < 14 && e.raw_os_error() == Some(libc::EINVAL), || {
                format!("input {i}: {e}")
            })?,
            Ok((act, _)) if act == XDP_TX || act == XDP_REDIRECT => {
                let h = etherparse::PacketHeaders::from_ethernet_slice(&p)
                    .map_err(|e| format!("input {i} forwarded but malformed: {e}"))?;
                let well_formed = matches!(h.net, Some(etherparse::NetHeaders::Ipv4(ref ip, _)) if ip.ihl() == 5 && !ip.is_fragmenting_payload())
                    && matches!(
                        h.transport,
                        Some(
                            etherparse::TransportHeader::Tcp(_)
                                | etherparse::TransportHeader::Udp(_)
                        )
                    );
                check(well_formed, || {
                    format!("input {i} forwarded but malformed: {p:02x?}")
                })?;
            }
            Ok((act, _)) => check(act == XDP_PASS || act == XDP_DROP, || {
                format!("input {i}: action {act}")
            })?,
        }
    }
    Ok(())
}

/// The same Maglev table from two processes in two namespaces ("nodes").
fn maglev_is_the_same_in_two_processes() -> Result<(), Failed> {
    let lab = lab();
    let args: Vec<String> = backends()
        .iter()
        .map(|b| format!("{}:{}*{}", b.addr, b.port, b.weight))
        .collect();
    let mut cmd = vec![
        env!("CARGO_BIN_EXE_xlb").to_string(),
        "maglev".into(),
        "--seed".into(),
        SEED.to_string(),
    ];
    cmd.extend(args);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let a = String::from_utf8(lab.lb.exec(&argv).stdout)?;
    let b = String::from_utf8(lab._peer.exec(&argv).stdout)?;
    ensure_eq!(a, b);
    ensure_eq!(a.trim().len(), 16);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    // The lab must exist before the harness spawns its threads: they inherit
    // the namespace of the main thread.
    LAB_INIT.get_or_init(setup);
    let cases: Vec<(&str, fn() -> Result<(), Failed>)> = vec![
        (
            "syn_is_rewritten_and_redirected",
            syn_is_rewritten_and_redirected,
        ),
        (
            "same_link_backend_uses_xdp_tx",
            same_link_backend_uses_xdp_tx,
        ),
        (
            "backend_matches_maglev_prediction",
            backend_matches_maglev_prediction,
        ),
        (
            "source_hash_keeps_a_client_on_one_backend",
            source_hash_keeps_a_client_on_one_backend,
        ),
        (
            "reply_restores_vip_and_client",
            reply_restores_vip_and_client,
        ),
        (
            "established_flow_survives_backend_removal",
            established_flow_survives_backend_removal,
        ),
        (
            "snat_ports_unique_across_10k_flows",
            snat_ports_unique_across_10k_flows,
        ),
        (
            "exhausted_snat_pool_is_counted",
            exhausted_snat_pool_is_counted,
        ),
        ("udp_forward_and_reply", udp_forward_and_reply),
        (
            "udp_flow_expires_after_idle_timeout",
            udp_flow_expires_after_idle_timeout,
        ),
        (
            "tcp_rst_ends_and_fin_shortens",
            tcp_rst_ends_and_fin_shortens,
        ),
        (
            "vlan_tagged_flow_keeps_its_tag",
            vlan_tagged_flow_keeps_its_tag,
        ),
        (
            "unknown_neighbour_goes_to_the_kernel",
            unknown_neighbour_goes_to_the_kernel,
        ),
        (
            "policies_and_misses_are_counted",
            policies_and_misses_are_counted,
        ),
        (
            "non_vip_traffic_passes_byte_identical",
            non_vip_traffic_passes_byte_identical,
        ),
        (
            "truncations_are_never_forwarded",
            truncations_are_never_forwarded,
        ),
        (
            "random_input_is_never_forwarded_unless_well_formed",
            random_input_is_never_forwarded_unless_well_formed,
        ),
        (
            "maglev_is_the_same_in_two_processes",
            maglev_is_the_same_in_two_processes,
        ),
    ];
    let trials = cases.into_iter().map(|(n, f)| Trial::test(n, f)).collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Statics are not dropped: remove the namespaces explicitly.
    if let Some(lab) = LAB_INIT.get() {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &lab.lb.name])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &lab._peer.name])
            .output();
    }
    conclusion.exit();
}

static LAB_INIT: OnceLock<Lab> = OnceLock::new();
