//! XDP layer-4 load balancer: FULLNAT for TCP and UDP over IPv4.
//!
//! Per packet: one lookup decides whether the destination is ours at all;
//! everything else passes untouched. Packets to a VIP hit the connection table
//! or pick a backend by Maglev; replies to an SNAT address hit the NAT table;
//! ICMP errors about either go to the flow's other end.
//! Each step returns the XDP action, or the [`Reason`] the packet is passed
//! or dropped for.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: no copies in BPF.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conntrack;
mod csum;
mod fib;
mod fullnat;
mod icmp;
mod maglev;
mod maps;
mod nat;
mod parse;
mod stats;
mod sync;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use lb_common::{
    hash::flow_hash, Config, Conn, FlowKey, Nat, Reason, Service, ServiceKey, ADDR_SNAT, ADDR_VIP,
    CT_FIN, CT_HALF, CT_SYN_SENT, PROTO_TCP, SVC_ENABLED,
};

use crate::{
    conntrack::{expired, stale},
    maps::{ADDRS, CONFIG, CONNS, NATS, SERVICES},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::{count, traffic},
};

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    match process(&ctx) {
        Ok(action) => action,
        Err(reason) => verdict(reason),
    }
}

/// Counts `reason` and returns what it means: drop or pass to the kernel.
#[inline(always)]
fn verdict(reason: Reason) -> u32 {
    count(reason);
    if reason.drops() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// A packet for us and what every step needs besides its 5-tuple. The
/// 5-tuple is kept apart: map lookups take its address, and a struct whose
/// address escapes stays in memory instead of in registers.
struct Flow<'a> {
    ctx: &'a XdpContext,
    p: Packet,
    cfg: &'a Config,
    now: u64,
    /// The frame's length, for the traffic counters.
    bytes: u64,
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Result<u32, Reason> {
    let frame = parse::frame(ctx)?;
    let kind = *unsafe { ADDRS.get(&frame.ip.dst()) }.ok_or(Reason::PassNotOurs)?;
    let cfg = CONFIG.get(0).ok_or(Reason::PassNoConfig)?;
    // From here on the packet is addressed to us: apply the policies.
    let p = match frame.transport(ctx) {
        Ok(p) => p,
        Err(Reason::PassOtherProto) => {
            return icmp::process(ctx, frame, kind, cfg, unsafe { bpf_ktime_get_ns() });
        }
        Err(r) => return Err(r),
    };
    let key = p.key();
    let f = Flow {
        ctx,
        p,
        cfg,
        now: unsafe { bpf_ktime_get_ns() },
        bytes: (ctx.data_end() - ctx.data()) as u64,
    };

    // 1. An established flow from a client.
    let mut dead = None;
    if kind & ADDR_VIP != 0 {
        if let Some(c) = CONNS.get_ptr_mut(&key) {
            let conn = unsafe { &mut *c };
            let reopened =
                f.p.l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && conn.flags & CT_FIN != 0;
            if !reopened && !expired(cfg, f.p.proto, conn.flags, conn.last_seen, f.now) {
                return Ok(established(&f, &key, conn));
            }
            dead = Some(conn);
        }
    }

    // 2. A reply from a backend to an SNAT address.
    if kind & ADDR_SNAT != 0 {
        if let Some(n) = NATS.get_ptr_mut(&key) {
            let nat = unsafe { &mut *n };
            if !expired(cfg, f.p.proto, nat.flags, nat.last_seen, f.now) {
                return Ok(reply(&f, &key, nat));
            }
        }
        if kind & ADDR_VIP == 0 {
            return Err(Reason::PassNoNat);
        }
    }

    // 3. A new flow to a virtual server.
    new_flow(&f, &key, dead)
}

/// A client's packet of a live flow: follows its entry, which a RST ends
/// and a FIN shortens.
#[inline(always)]
fn established(f: &Flow, key: &FlowKey, conn: &mut Conn) -> u32 {
    let (cfg, flags, now) = (f.cfg, f.p.l4.tcp_flags, f.now);
    // Read before a RST removes the entry: another CPU may reuse it.
    let to = fullnat::to_backend(conn);
    let (service_id, backend_id) = (conn.service_id, conn.backend_id);
    if flags & TCP_RST != 0 {
        sync::report(cfg, key, conn, CT_FIN);
        // Its port may have been taken over (see nat::setup).
        nat::release(conn, key);
        let _ = CONNS.remove(key);
    } else if conn.flags & CT_SYN_SENT != 0 && flags & (TCP_SYN | TCP_ACK) == TCP_ACK {
        // The client acknowledged the handshake: its flow may live the full
        // timeout, and stays half-open until the backend answers.
        nat::acked(key, conn, now);
        conn.flags |= (flags & TCP_FIN != 0) as u32 * CT_FIN;
    } else if flags & TCP_FIN != 0 && conn.flags & CT_FIN == 0 {
        sync::report(cfg, key, conn, CT_FIN);
        conn.flags |= CT_FIN;
        conn.last_seen = now;
    } else if stale(conn.last_seen, now) {
        if sync::due(cfg, f.p.proto, conn.flags, conn.last_seen, now) {
            // A closing flow stays closing on the peer.
            sync::report(cfg, key, conn, conn.flags & CT_FIN);
        }
        conn.last_seen = now;
    }
    traffic(service_id, backend_id, f.bytes, false);
    fullnat::send(f.ctx, &f.p, to, cfg, now)
}

/// Whether a TCP segment with `flags` may open a flow of `svc`: a SYN, or
/// any segment while this node has held the service for less than an idle
/// timeout since taking it over (a flow its peer carried, which the sync
/// may not have told it of: Maglev and the flow hash derive its backend and
/// port).
#[inline(always)]
fn opens(cfg: &Config, svc: &Service, flags: u8, now: u64) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_FIN) == TCP_SYN
        || (svc.since_ns != 0 && now.wrapping_sub(svc.since_ns) <= cfg.tcp_timeout_ns)
}

/// A backend's reply: restored to the client its NAT entry names.
#[inline(always)]
fn reply(f: &Flow, key: &FlowKey, nat: &mut Nat) -> u32 {
    let (cfg, flags, now) = (f.cfg, f.p.l4.tcp_flags, f.now);
    // Read before a RST removes the entry: another CPU may reuse it.
    let to = fullnat::to_client(nat);
    let (service_id, backend_id) = (nat.service_id, nat.backend_id);
    if flags & TCP_RST != 0 {
        // The client's FIN reports a close (step 1); a backend's RST ends
        // the flow before the client says anything.
        let fwd = nat.client_key(f.p.proto);
        let conn = Conn {
            backend_addr: key.src_addr,
            snat_addr: key.dst_addr,
            backend_port: key.src_port,
            snat_port: key.dst_port,
            flags: nat.flags,
            ..Default::default()
        };
        sync::report(cfg, &fwd, &conn, CT_FIN);
        let _ = CONNS.remove(&fwd);
        let _ = NATS.remove(key);
    } else if nat.flags & CT_HALF != 0 && flags & TCP_SYN == 0 {
        // The backend answered within the flow: it is real.
        nat.flags |= (flags & TCP_FIN != 0) as u32 * CT_FIN;
        nat::confirm_reply(cfg, key, nat, now);
    } else if flags & TCP_FIN != 0 && nat.flags & CT_FIN == 0 {
        nat.flags |= CT_FIN;
        nat.last_seen = now;
    } else if stale(nat.last_seen, now) {
        nat.last_seen = now;
    }
    traffic(service_id, backend_id, f.bytes, false);
    fullnat::send(f.ctx, &f.p, to, cfg, now)
}

/// The first packet of a flow (or of a timed-out 5-tuple's new life, whose
/// `dead` entry may be revived): the service's Maglev table picks the
/// backend and the flow claims an SNAT port.
#[inline(always)]
fn new_flow(f: &Flow, key: &FlowKey, dead: Option<&mut Conn>) -> Result<u32, Reason> {
    let (cfg, flags, now) = (f.cfg, f.p.l4.tcp_flags, f.now);
    let skey = ServiceKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto: f.p.proto,
        _pad: 0,
    };
    let svc = unsafe { SERVICES.get(&skey) }.ok_or(Reason::PassNoService)?;
    if svc.flags & SVC_ENABLED == 0 {
        return Err(Reason::PassDisabled);
    }
    if flags & TCP_RST != 0 {
        return Err(Reason::DropRstNoConn);
    }
    let tcp = f.p.proto == PROTO_TCP;
    if tcp && !opens(cfg, svc, flags, now) {
        return Err(Reason::DropNotSyn);
    }
    // Every TCP flow starts half-open, until its backend answers; a SYN's
    // lives the short timeout until its client's ACK.
    let midflow = tcp && flags & TCP_SYN == 0;
    let half = if !tcp {
        0
    } else if midflow {
        CT_HALF
    } else {
        CT_HALF | CT_SYN_SENT
    };
    let hash = flow_hash(
        cfg.hash_seed,
        key.src_addr,
        key.dst_addr,
        key.src_port,
        key.dst_port,
        f.p.proto,
    );
    let (backend_id, be) =
        maglev::pick(cfg, svc, hash, key.src_addr).ok_or(Reason::DropNoBackend)?;
    if let Some(conn) = dead {
        // The client reused a timed-out or closed 5-tuple. If it maps to the
        // same backend and still owns its SNAT port, revive both entries in
        // place: no map update, and the backend sees the same 4-tuple.
        if nat::revive(cfg, conn, key, (backend_id, &be), svc.id, now, half) {
            // The peer was told this flow closed.
            sync::report(cfg, key, conn, 0);
            traffic(svc.id, backend_id, f.bytes, true);
            let to = fullnat::to_backend(conn);
            return Ok(fullnat::send(f.ctx, &f.p, to, cfg, now));
        }
        nat::release(conn, key);
    }
    let conn = nat::setup(cfg, svc, key, hash, backend_id, &be, now, half, midflow)?;
    traffic(svc.id, backend_id, f.bytes, true);
    let to = fullnat::to_backend(&conn);
    Ok(fullnat::send(f.ctx, &f.p, to, cfg, now))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
