//! The compiled XDP program, run in the kernel with BPF_PROG_TEST_RUN inside a
//! network namespace that has real routes and neighbours, so `bpf_fib_lookup`
//! answers as it would on a live node. Outputs are checked with etherparse.
//!
//! Needs root. One namespace pair is shared by every case; each case loads
//! its own copy of the program, so their maps do not interfere.

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

/// Every record waiting in the `SYNC` ring.
fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<SyncEntry> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.extend(lb_user::sync::record(&item));
    }
    out
}

/// The first SNAT port the data path tries for the client's TCP flow from
/// `sport` to `svc` on port 80.
fn first_snat_port(svc: &lb_user::plan::ServiceSpec, sport: u16) -> u16 {
    let h = flow_hash(
        SEED,
        be_addr(CLIENT),
        be_addr(VIP),
        sport.to_be(),
        80u16.to_be(),
        PROTO_TCP,
    );
    snat_candidate(&svc.value(0), h, 0).1
}

/// With `CFG_SYNC`, a flow that did not get its first SNAT candidate (the
/// one a VRRP peer would derive) is reported on the `SYNC` ring with the
/// port it got; flows that got the first candidate are not.
fn flows_off_their_first_snat_port_are_reported_for_sync() -> Result<(), Failed> {
    let mut dp = dp();
    let mut cfg = dp.config();
    cfg.flags = CFG_SYNC;
    dp.set_config(cfg)?;
    let mut svc = web();
    svc.backends.truncate(1);
    svc.snat_ports = (2000, 2007);
    dp.apply_service(&svc)?;
    let first = |sport: u16| first_snat_port(&svc, sport);
    // Two clients whose first candidates are equal, and one other.
    let a = 50000;
    let b = (a + 1..a + 200)
        .find(|&p| first(p) == first(a))
        .ok_or("no pair")?;
    let c = (a + 1..a + 200)
        .find(|&p| first(p) != first(a))
        .ok_or("no third")?;
    let mut ring = dp.sync_ring()?;
    let mut got = Vec::new();
    for p in [a, b, c] {
        let (act, out) = run(&mut dp, &tcp(from_client(p, 80), SYN, b""));
        ensure_eq!(act, XDP_REDIRECT, "client port {p}");
        got.push(parse_valid(&out).sport);
    }
    ensure_eq!(got[0], first(a));
    check(got[1] != first(b), || {
        format!("{b} got its taken first candidate")
    })?;
    ensure_eq!(got[2], first(c));
    let records = drain(&mut ring);
    ensure_eq!(records.len(), 1, "{records:?}");
    ensure_eq!(records[0].key, flow(CLIENT, b, 80, PROTO_TCP));
    ensure_eq!(u16::from_be(records[0].conn.snat_port), got[1]);
    ensure_eq!(addr_of(records[0].conn.backend_addr), BACKENDS[0].0);
    ensure_eq!(records[0].conn.flags, 0);
    // A live synced flow is reported again when a refresh crosses a
    // multiple of sync_refresh_ns (here every refresh: at most 1 a second).
    cfg.sync_refresh_ns = 1;
    dp.set_config(cfg)?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for p in [a, b, c] {
        ensure_eq!(
            run(&mut dp, &tcp(from_client(p, 80), ACK, b"x")).0,
            XDP_REDIRECT
        );
    }
    let again = drain(&mut ring);
    ensure_eq!(
        again,
        records,
        "one refresh record for the synced flow only"
    );
    // Closing: the synced flow is reported once more, with CT_FIN, on the
    // client's FIN (the backend's FIN adds nothing); the others are not.
    for p in [a, b, c] {
        ensure_eq!(
            run(&mut dp, &tcp(from_client(p, 80), FIN, b"")).0,
            XDP_REDIRECT
        );
    }
    let lab = lab();
    let reply = Ends {
        smac: backend_mac(BACKENDS[0].0),
        dmac: lab.b0_mac,
        src: BACKENDS[0].0,
        dst: SNAT,
        sport: BACKEND_PORT,
        dport: got[1],
    };
    ensure_eq!(
        run_on(&mut dp, &tcp(reply, FIN, b""), lab.b0)?.0,
        XDP_REDIRECT
    );
    let mut closes = drain(&mut ring);
    ensure_eq!(closes.len(), 1, "{closes:?}");
    // A refresh of the closing flow says it is closing; a backend's RST
    // ends it, and says so too.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ensure_eq!(
        run(&mut dp, &tcp(from_client(b, 80), ACK, b"")).0,
        XDP_REDIRECT
    );
    ensure_eq!(
        run_on(&mut dp, &tcp(reply, RST, b""), lab.b0)?.0,
        XDP_REDIRECT
    );
    closes.extend(drain(&mut ring));
    ensure_eq!(closes.len(), 3, "{closes:?}");
    for r in &closes {
        ensure_eq!(r.key, records[0].key);
        ensure_eq!(r.conn.flags, CT_FIN);
        ensure_eq!(
            (
                r.conn.backend_addr,
                r.conn.snat_addr,
                r.conn.backend_port,
                r.conn.snat_port
            ),
            (
                records[0].conn.backend_addr,
                records[0].conn.snat_addr,
                records[0].conn.backend_port,
                records[0].conn.snat_port
            )
        );
    }
    // With CFG_SYNC_ALL every new flow is reported, on its hashed port too.
    cfg.flags = CFG_SYNC | lb_common::CFG_SYNC_ALL;
    dp.set_config(cfg)?;
    let e = (c + 1..c + 400)
        .find(|&p| first(p) != first(a) && first(p) != got[1] && first(p) != first(c))
        .ok_or("no free port left")?;
    ensure_eq!(
        run(&mut dp, &tcp(from_client(e, 80), SYN, b"")).0,
        XDP_REDIRECT
    );
    let all = ring.next().and_then(|i| lb_user::sync::record(&i));
    ensure_eq!(
        all.map(|r| (r.key, u16::from_be(r.conn.snat_port))),
        Some((flow(CLIENT, e, 80, PROTO_TCP), first(e)))
    );
    // Without CFG_SYNC nothing is reported.
    cfg.flags = 0;
    dp.set_config(cfg)?;
    let d = (b + 1..b + 400)
        .find(|&p| first(p) == first(a))
        .ok_or("no fourth")?;
    ensure_eq!(
        run(&mut dp, &tcp(from_client(d, 80), SYN, b"")).0,
        XDP_REDIRECT
    );
    check(ring.next().is_none(), || "reported without CFG_SYNC".into())?;
    Ok(())
}

/// Entries a peer sent are what the data path would have written: the
/// flow's next packet goes to the same backend and SNAT port, and the
/// backend's reply is restored to the client.
fn an_installed_peer_flow_is_forwarded_and_restored() -> Result<(), Failed> {
    let mut dp = dp();
    let svc = web();
    let key = flow(CLIENT, 41000, 80, PROTO_TCP);
    let be = svc.backends[2];
    let conn = peer_conn(&be, svc.id, 3333, lb_user::sys::monotonic_ns(), 0);
    dp.install_flow(&key, &conn)?;
    // Mid-flow: an ACK with data, as after a failover.
    let (act, out) = run(&mut dp, &tcp(from_client(41000, 80), ACK, b"more"));
    ensure_eq!(act, XDP_REDIRECT, "{:?}", dp.reasons()?);
    let s = parse_valid(&out);
    ensure_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (SNAT, 3333, be.addr, be.port)
    );
    let lab = lab();
    let reply = Ends {
        smac: backend_mac(be.addr),
        dmac: lab.b0_mac,
        src: be.addr,
        dst: SNAT,
        sport: be.port,
        dport: 3333,
    };
    let (act, out) = run_on(&mut dp, &tcp(reply, ACK, b"answer"), lab.b0)?;
    ensure_eq!(act, XDP_REDIRECT, "{:?}", dp.reasons()?);
    let r = parse_valid(&out);
    ensure_eq!((r.src, r.sport, r.dst, r.dport), (VIP, 80, CLIENT, 41000));
    // A second install of the same flow to another port frees the first.
    let mut moved = conn;
    moved.snat_port = 3334u16.to_be();
    dp.install_flow(&key, &moved)?;
    check(dp.nat(&conn.reverse_key(PROTO_TCP))?.is_none(), || {
        "the old NAT entry stayed".into()
    })?;
    check(dp.nat(&moved.reverse_key(PROTO_TCP))?.is_some(), || {
        "no NAT entry for the new port".into()
    })?;
    // The peer saw it close: both entries get the FIN timeout; a close for
    // a mapping this node does not hold changes nothing.
    let now = lb_user::sys::monotonic_ns();
    check(!dp.close_flow(&key, &conn, now)?, || {
        "closed a stale mapping".into()
    })?;
    check(dp.close_flow(&key, &moved, now)?, || "did not close".into())?;
    ensure_eq!(dp.conn(&key)?.map(|c| c.flags & CT_FIN), Some(CT_FIN));
    ensure_eq!(
        dp.nat(&moved.reverse_key(PROTO_TCP))?
            .map(|n| n.flags & CT_FIN),
        Some(CT_FIN)
    );
    Ok(())
}

/// A connection entry as a peer reports it: to `be`, from SNAT:`port`.
fn peer_conn(
    be: &BackendSpec,
    service_id: u32,
    port: u16,
    last_seen: u64,
    flags: u32,
) -> lb_common::Conn {
    lb_common::Conn {
        backend_addr: be_addr(be.addr),
        snat_addr: be_addr(SNAT),
        backend_port: be.port.to_be(),
        snat_port: port.to_be(),
        backend_id: be.id,
        service_id,
        flags,
        last_seen,
    }
}

/// A datagram's flows are written with one batch per map, yet each sees
/// the ones before it: a flow set up, moved and closed within one batch
/// ends on its last port, closed, and its first port is free; a close of a
/// mapping it no longer has changes nothing.
fn a_datagrams_flows_apply_in_order() -> Result<(), Failed> {
    let mut dp = dp();
    let svc = web();
    let be = svc.backends[1];
    let now = lb_user::sys::monotonic_ns();
    let on = |port: u16| peer_conn(&be, svc.id, port, now, 0);
    let key = flow(CLIENT, 42000, 80, PROTO_TCP);
    let other = flow(CLIENT, 42001, 80, PROTO_TCP);
    let f = |key: FlowKey, port: u16, closed: bool| SyncedFlow {
        key,
        conn: on(port),
        closed,
    };
    let applied = dp.apply_synced(
        &[
            f(key, 3400, false),
            f(other, 3402, false),
            f(key, 3401, false),
            f(key, 3400, true),
            f(key, 3401, true),
        ],
        now,
    )?;
    ensure_eq!(applied, 4, "the close of the old mapping applied");
    let rev = |port: u16| on(port).reverse_key(PROTO_TCP);
    check(dp.nat(&rev(3400))?.is_none(), || {
        "the first port stayed taken".into()
    })?;
    ensure_eq!(
        dp.nat(&rev(3401))?
            .map(|n| (n.restores(&key), n.flags & CT_FIN)),
        Some((true, CT_FIN))
    );
    ensure_eq!(
        dp.conn(&key)?
            .map(|c| (u16::from_be(c.snat_port), c.flags & CT_FIN)),
        Some((3401, CT_FIN))
    );
    ensure_eq!(
        dp.conn(&other)?
            .map(|c| (u16::from_be(c.snat_port), c.flags)),
        Some((3402, 0))
    );
    check(
        dp.nat(&rev(3402))?.is_some_and(|n| n.restores(&other)),
        || "no NAT entry for the other flow".into(),
    )?;
    Ok(())
}

/// After a takeover, a mid-flow TCP packet of a flow the peer set up takes
/// its hashed SNAT port even from an entry last seen before the takeover (a
/// flow that ended on the peer); a SYN, or an entry seen since, keeps it.
fn a_midflow_takeover_reclaims_a_port_idle_since_before_it() -> Result<(), Failed> {
    let mut dp = dp();
    let mut cfg = dp.config();
    cfg.flags = CFG_SYNC;
    dp.set_config(cfg)?;
    let now = lb_user::sys::monotonic_ns();
    let before = now - 2_000_000_000;
    let mut svc = web();
    svc.backends.truncate(1);
    svc.snat_ports = (2000, 2015);
    svc.since_ns = now;
    dp.apply_service(&svc)?;
    let first = |sport: u16| first_snat_port(&svc, sport);
    let be = svc.backends[0];
    let entry =
        |port: u16, last_seen: u64, flags: u32| peer_conn(&be, svc.id, port, last_seen, flags);
    // An older flow from `client_port` holds `port`.
    let hold = |dp: &mut Dataplane, client_port: u16, port: u16, last_seen: u64, flags: u32| {
        dp.install_flow(
            &flow(CLIENT, client_port, 80, PROTO_TCP),
            &entry(port, last_seen, flags),
        )
    };
    // Whether the holder from `client_port` still owns `port`.
    let owner = |dp: &mut Dataplane, port: u16| -> Result<u16, Failed> {
        let n = dp.nat(&entry(port, 0, 0).reverse_key(PROTO_TCP))?;
        Ok(n.map_or(0, |n| u16::from_be(n.client_port)))
    };
    // The SNAT port a packet of a new flow from `p` gets: forwarded, from
    // the pool.
    let sport = |dp: &mut Dataplane, p: u16, f| -> Result<u16, Failed> {
        let (act, out) = run(dp, &tcp(from_client(p, 80), f, b""));
        ensure_eq!(act, XDP_REDIRECT, "client port {p}");
        let port = parse_valid(&out).sport;
        check((2000..=2015).contains(&port), || format!("port {port}"))?;
        Ok(port)
    };
    let mut by_first = std::collections::BTreeMap::<u16, Vec<u16>>::new();
    for p in 40000..40400 {
        by_first.entry(first(p)).or_default().push(p);
    }
    let mut keys = by_first.keys().copied();
    let mut next_port = || keys.next().ok_or("fewer than five hashed ports");
    // Idle since before the takeover: a mid-flow packet reclaims it.
    let p = next_port()?;
    hold(&mut dp, 60000, p, before, 0)?;
    ensure_eq!(sport(&mut dp, by_first[&p][0], ACK)?, p);
    ensure_eq!(owner(&mut dp, p)?, by_first[&p][0]);
    // The holder from `holder` (last seen at `last_seen`, with `flags`)
    // keeps its port against the next hashed client's packet.
    let mut kept = |dp: &mut Dataplane,
                    holder: u16,
                    last_seen: u64,
                    flags: u32,
                    tcp_flags,
                    why: &str|
     -> Result<(), Failed> {
        let p = next_port()?;
        hold(dp, holder, p, last_seen, flags)?;
        check(sport(dp, by_first[&p][0], tcp_flags)? != p, || why.into())?;
        ensure_eq!(owner(dp, p)?, holder);
        Ok(())
    };
    // Seen since the takeover (within a refresh interval): kept.
    kept(
        &mut dp,
        60001,
        now - 500_000_000,
        0,
        ACK,
        "took a live port",
    )?;
    // A SYN is a new flow here, not a takeover: it never reclaims.
    kept(&mut dp, 60002, before, 0, SYN, "a SYN reclaimed")?;
    // A synced entry (the peer reports its close) is never reclaimed so.
    let synced = lb_common::CT_SYNCED;
    kept(&mut dp, 60003, before, synced, ACK, "took a synced port")?;
    // Without the sync, nothing says the peer gave the port away.
    cfg.flags = 0;
    dp.set_config(cfg)?;
    kept(&mut dp, 60004, before, 0, ACK, "reclaimed without sync")?;
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
        let (act, out) = run(dp, &tcp(from_client(40040, 80), ACK, b""));
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
    let a = lab.lb.exec(&argv)?;
    let b = lab.peer.exec(&argv)?;
    ensure_eq!(a, b);
    ensure_eq!(a.trim().len(), 16);
    Ok(())
}

/// Trials named after their functions.
macro_rules! trials {
    ($($f:ident),* $(,)?) => { vec![$(Trial::test(stringify!($f), $f)),*] };
}

/// A pinned data path is adopted only if its maps fit this version and
/// this config; the reason counters, whose size follows the version, start
/// afresh instead.
fn pinned_maps_are_checked_when_adopted() -> Result<(), Failed> {
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/xlbt-{}-adopt", std::process::id()));
    let limits = || lb_user::plan::Limits {
        max_services: 4,
        max_backends: 64,
        conn_max: 4096,
        maglev_size: M,
    };
    let config = lb_user::plan::default_config(SEED, M);
    let result = (|| -> Result<(), Failed> {
        drop(Dataplane::load_pinned(limits(), config, &dir)?);
        let mut bigger = limits();
        bigger.conn_max *= 2;
        let err = match Dataplane::load_pinned(bigger, config, &dir) {
            Ok(_) => return Err("a pinned table of another size was adopted".into()),
            Err(e) => format!("{e:#}"),
        };
        check(
            err.contains("pinned map CONNS") && err.contains("has 4096 entries"),
            || err.clone(),
        )?;
        // An older version counted fewer reasons.
        std::fs::remove_file(dir.join("REASONS"))?;
        let older = Reason::COUNT - 1;
        drop(
            aya::EbpfLoader::new()
                .map_max_entries("REASONS", older)
                .map_max_entries("CONNS", 16)
                .map_max_entries("NATS", 16)
                .map_max_entries("MAGLEV", 2 * M)
                .map_pin_path("REASONS", dir.join("REASONS"))
                .load(lb_user::dataplane::OBJECT)?,
        );
        let info = aya::maps::MapInfo::from_pin(dir.join("REASONS"))?;
        ensure_eq!(info.max_entries(), older);
        let dp = Dataplane::load_pinned(limits(), config, &dir)?;
        check(dp.adopted(), || "not adopted".into())?;
        ensure_eq!(dp.reasons()?.len(), Reason::ALL.len());
        let info = aya::maps::MapInfo::from_pin(dir.join("REASONS"))?;
        ensure_eq!(info.max_entries(), Reason::COUNT);
        dp.destroy()?;
        Ok(())
    })();
    if dir.exists() {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    result
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
        maglev_is_the_same_in_two_processes,
        pinned_maps_are_checked_when_adopted,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    dplab::teardown();
    conclusion.exit();
}
