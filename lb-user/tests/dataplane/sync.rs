//! The connection sync's side of the data path: the SYNC ring's reports,
//! flows installed from a peer, and the takeover rule.

use super::*;

pub fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<SyncEntry> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.extend(lb_user::sync::record(&item));
    }
    out
}

/// The first SNAT port the data path tries for the client's TCP flow from
/// `sport` to `svc` on port 80.
pub fn first_snat_port(svc: &lb_user::plan::ServiceSpec, sport: u16) -> u16 {
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
pub fn flows_off_their_first_snat_port_are_reported_for_sync() -> Result<(), Failed> {
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
    // Half-open flows are not reported, even once their client has
    // ACKed; the backend's answer reports the one off its first candidate.
    for p in [a, b, c] {
        ensure_eq!(
            run(&mut dp, &tcp(from_client(p, 80), ACK, b"")).0,
            XDP_REDIRECT
        );
    }
    let half = drain(&mut ring);
    ensure_eq!(half.len(), 0, "{half:?}");
    for (i, p) in [a, b, c].into_iter().enumerate() {
        let be = addr_of(
            dp.conn(&flow(CLIENT, p, 80, PROTO_TCP))?
                .ok_or("no entry")?
                .backend_addr,
        );
        answer(&mut dp, be, got[i])?;
    }
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
    // With CFG_SYNC_ALL every new flow is reported, on its hashed port
    // too, once its handshake completes.
    cfg.flags = CFG_SYNC | lb_common::CFG_SYNC_ALL;
    dp.set_config(cfg)?;
    let e = (c + 1..c + 400)
        .find(|&p| first(p) != first(a) && first(p) != got[1] && first(p) != first(c))
        .ok_or("no free port left")?;
    handshake(&mut dp, e)?;
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
pub fn an_installed_peer_flow_is_forwarded_and_restored() -> Result<(), Failed> {
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
pub fn peer_conn(
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
pub fn a_datagrams_flows_apply_in_order() -> Result<(), Failed> {
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
pub fn a_midflow_takeover_reclaims_a_port_idle_since_before_it() -> Result<(), Failed> {
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
