//! Spoofed floods against a small SNAT pool: what they may take and what
//! they must leave alone.

use std::{collections::HashMap, net::Ipv4Addr};

use lb_common::{Reason, CT_HALF};

use super::*;

/// A spoofed source: one of 10^5 distinct addresses outside the lab.
fn spoofed(i: u32, dport: u16) -> Ends {
    Ends {
        src: Ipv4Addr::from(0x6440_0000 + i),
        sport: 1024 + (i % 50_000) as u16,
        ..from_client(0, dport)
    }
}

/// Where a forwarded packet went: (backend, SNAT port).
fn went(out: &[u8]) -> (Ipv4Addr, u16) {
    let s = parse_valid(out);
    (s.dst, s.sport)
}

/// A SYN flood and an ACK flood from 10^5 sources each, against a
/// 1,024-port pool that 100 live flows share: the SYNs take only the ports
/// of half-open flows, the ACKs create nothing, every live flow keeps its
/// backend and port, and a client's SYN during the flood gets a port.
pub fn floods_leave_live_flows_alone() -> Result<(), Failed> {
    const FLOOD: u32 = 100_000;
    let mut dp = dp();
    let mut svc = web();
    svc.snat_ports = (10_000, 11_023);
    dp.apply_service(&svc)?;
    let mut live = HashMap::new();
    for sport in 30_000..30_100 {
        live.insert(sport, handshake(&mut dp, sport)?);
    }
    let before = dp.flow_counts();
    ensure_eq!((before.conns, before.half_open), (100, 0));

    for i in 0..FLOOD {
        let (act, _) = run(&mut dp, &tcp(spoofed(i, 80), SYN, b""));
        ensure_eq!(act, XDP_REDIRECT, "SYN {i}: {:?}", dp.reasons()?);
        if i == FLOOD / 2 {
            live.insert(31_000, handshake(&mut dp, 31_000)?);
        }
    }
    let syn = dp.flow_counts();
    // Three backends, 1,024 ports each: the half-open flows hold the rest.
    check(
        syn.half_open <= 3 * 1024 && syn.conns == syn.half_open + 101 && syn.nats == syn.conns,
        || format!("after the SYN flood: {syn:?}"),
    )?;
    check(dp.reason(Reason::EvictHalfOpen)? > 0, || {
        "nothing evicted".into()
    })?;
    ensure_eq!(dp.reason(Reason::DropSnatExhausted)?, 0);

    for i in 0..FLOOD {
        let (act, _) = run(&mut dp, &tcp(spoofed(FLOOD + i, 80), ACK, b"x"));
        ensure_eq!(act, XDP_DROP, "ACK {i}");
    }
    ensure_eq!(dp.reason(Reason::DropNotSyn)?, FLOOD as u64);
    ensure_eq!(dp.flow_counts(), syn, "the ACK flood created entries");

    // A spoofer completing its own handshakes blindly: the client's ACK
    // alone does not confirm a flow, so these stay half-open and yield.
    for i in 0..FLOOD / 10 {
        let e = spoofed(2 * FLOOD + i, 80);
        ensure_eq!(run(&mut dp, &tcp(e, SYN, b"")).0, XDP_REDIRECT);
        ensure_eq!(run(&mut dp, &tcp(e, ACK, b"")).0, XDP_REDIRECT);
    }
    let pairs = dp.flow_counts();
    check(
        pairs.conns == pairs.half_open + 101 && pairs.nats == pairs.conns,
        || format!("after SYN+ACK pairs: {pairs:?}"),
    )?;

    for (&sport, &to) in &live {
        let (act, out) = run(&mut dp, &tcp(from_client(sport, 80), ACK, b"more"));
        ensure_eq!((act, went(&out)), (XDP_REDIRECT, to), "live flow {sport}");
        let key = flow(CLIENT, sport, 80, lb_common::PROTO_TCP);
        let c = dp.conn(&key)?.ok_or("no entry")?;
        ensure_eq!(c.flags & CT_HALF, 0);
        let nat = dp.nat(&c.reverse_key(key.proto))?.ok_or("no NAT entry")?;
        check(nat.restores(&key) && nat.flags & CT_HALF == 0, || {
            format!("NAT entry of {sport}: {nat:?}")
        })?;
    }
    Ok(())
}

/// A half-open flow lives `tcp_syn_timeout`, then a segment other than a
/// SYN finds nothing; a completed one lives the full timeout.
pub fn half_open_flows_expire_after_the_syn_timeout() -> Result<(), Failed> {
    let mut dp = dp();
    let mut cfg = dp.config();
    cfg.tcp_syn_timeout_ns = 200_000_000;
    dp.set_config(cfg)?;
    for sport in [42_000, 42_001] {
        ensure_eq!(
            run(&mut dp, &tcp(from_client(sport, 80), SYN, b"")).0,
            XDP_REDIRECT
        );
    }
    ensure_eq!(
        run(&mut dp, &tcp(from_client(42_001, 80), ACK, b"")).0,
        XDP_REDIRECT
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    ensure_eq!(
        run(&mut dp, &tcp(from_client(42_000, 80), ACK, b"")).0,
        XDP_DROP,
        "the half-open flow outlived its timeout"
    );
    ensure_eq!(dp.reason(Reason::DropNotSyn)?, 1);
    ensure_eq!(
        run(&mut dp, &tcp(from_client(42_001, 80), ACK, b"x")).0,
        XDP_REDIRECT
    );
    Ok(())
}

/// Within an idle timeout of a takeover, a segment other than a SYN opens
/// a flow (the peer's, derived by Maglev and the flow hash); it stays
/// half-open, whatever its client sends, until the backend answers. Later
/// the same segment is dropped.
pub fn a_takeover_opens_midflow_segments_half_open() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let mut svc = web();
    let now = lb_user::sys::monotonic_ns();
    svc.since_ns = now;
    dp.apply_service(&svc)?;
    let (act, out) = run(&mut dp, &tcp(from_client(43_000, 80), ACK, b"data"));
    ensure_eq!(act, XDP_REDIRECT, "{:?}", dp.reasons()?);
    let (be, port) = went(&out);
    let key = flow(CLIENT, 43_000, 80, lb_common::PROTO_TCP);
    let flags = |dp: &Dataplane| dp.conn(&key).map(|c| c.map(|c| c.flags & CT_HALF));
    ensure_eq!(
        run(&mut dp, &tcp(from_client(43_000, 80), ACK, b"")).0,
        XDP_REDIRECT
    );
    ensure_eq!(flags(&dp)?, Some(CT_HALF), "the client confirmed it");
    let reply = from_backend(be, port);
    ensure_eq!(
        run_on(&mut dp, &tcp(reply, ACK, b"answer"), lab.b0)?.0,
        XDP_REDIRECT
    );
    ensure_eq!(
        flags(&dp)?,
        Some(0),
        "the backend's answer did not confirm it"
    );
    let nat = dp.nat(&lb_common::FlowKey::new(
        lb_user::sys::be_addr(be),
        lb_user::sys::be_addr(SNAT),
        BACKEND_PORT.to_be(),
        port.to_be(),
        lb_common::PROTO_TCP,
    ))?;
    ensure_eq!(nat.map(|n| n.flags & CT_HALF), Some(0));

    // A takeover longer ago than the idle timeout.
    svc.since_ns = now - dp.config().tcp_timeout_ns - 1_000_000_000;
    dp.apply_service(&svc)?;
    ensure_eq!(
        run(&mut dp, &tcp(from_client(43_001, 80), ACK, b"data")).0,
        XDP_DROP
    );
    ensure_eq!(dp.reason(Reason::DropNotSyn)?, 1);
    Ok(())
}
