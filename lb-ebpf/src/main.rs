//! XDP layer-4 load balancer: FULLNAT for TCP and UDP over IPv4.
//!
//! Per packet: one lookup decides whether the destination is ours at all;
//! everything else passes untouched. Packets to a VIP hit the connection table
//! or pick a backend by Maglev; replies to an SNAT address hit the NAT table.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: no copies in BPF.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conntrack;
mod csum;
mod fib;
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
    hash::flow_hash, Config, Conn, FlowKey, Reason, ServiceKey, ADDR_SNAT, ADDR_VIP, CT_FIN,
    PROTO_TCP, PROTO_UDP, SVC_ENABLED,
};

use crate::{
    conntrack::{expired, stale},
    csum::{rewrite, Endpoints},
    maps::{ADDRS, CONFIG, CONNS, NATS, SERVICES},
    nat::AllocError,
    parse::*,
    stats::{count, traffic},
};

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    process(&ctx)
}

#[inline(always)]
fn pass(reason: Reason) -> u32 {
    count(reason);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(reason: Reason) -> u32 {
    count(reason);
    xdp_action::XDP_DROP
}

/// The parsed L4 view of a packet for us.
struct L4 {
    ports: *mut [u16; 2],
    check: *mut u16,
    tcp_flags: u8,
}

/// Rewrites the packet to `to` and sends it to its next hop.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    l4: &L4,
    to: Endpoints,
    cfg: &Config,
    now: u64,
) -> u32 {
    rewrite(ip, l4.ports, l4.check, to);
    fib::forward(ctx, eth, ip, [to.src_port, to.dst_port], cfg, now)
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(Reason::PassNotOurs);
    };
    let mut l3 = ETH_HLEN;
    let mut proto = unsafe { (*eth).proto };
    if proto == ETH_P_8021Q {
        let Some(inner) = ptr_at::<[u16; 2]>(ctx, ETH_HLEN) else {
            return pass(Reason::PassNotOurs);
        };
        proto = unsafe { (*inner)[1] };
        l3 = ETH_HLEN + 4;
    }
    if proto != ETH_P_IP {
        return pass(Reason::PassNotOurs);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return pass(Reason::PassNotOurs);
    };
    let dst = unsafe { (*ip).dst };
    let Some(&kind) = (unsafe { ADDRS.get(&dst) }) else {
        return pass(Reason::PassNotOurs);
    };

    // From here on the packet is addressed to us: apply the policies.
    let (vihl, frag, tot_len, ip_proto) =
        unsafe { ((*ip).vihl, (*ip).frag_off, (*ip).tot_len, (*ip).proto) };
    if vihl >> 4 != 4 || vihl & 0xf < 5 {
        return drop(Reason::DropMalformed);
    }
    if vihl != 0x45 {
        return drop(Reason::DropIpOptions);
    }
    if frag & IP_MF_OFFSET != 0 {
        return drop(Reason::DropFragment);
    }
    let tot_len = u16::from_be(tot_len) as usize;
    if tot_len < 20 || ctx.data() + l3 + tot_len > ctx.data_end() {
        return drop(Reason::DropMalformed);
    }
    let l4_off = l3 + 20;
    let l4 = match ip_proto {
        PROTO_TCP => {
            let Some(tcp) = ptr_at::<TcpHdr>(ctx, l4_off) else {
                return drop(Reason::DropMalformed);
            };
            if unsafe { (*tcp).doff } >> 4 < 5 || tot_len < 40 {
                return drop(Reason::DropMalformed);
            }
            L4 {
                ports: tcp as *mut [u16; 2],
                check: unsafe { core::ptr::addr_of_mut!((*tcp).check) },
                tcp_flags: unsafe { (*tcp).flags },
            }
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, l4_off) else {
                return drop(Reason::DropMalformed);
            };
            if tot_len < 28 {
                return drop(Reason::DropMalformed);
            }
            L4 {
                ports: udp as *mut [u16; 2],
                check: unsafe { core::ptr::addr_of_mut!((*udp).check) },
                tcp_flags: 0,
            }
        }
        _ => return pass(Reason::PassOtherProto),
    };
    let Some(cfg) = CONFIG.get(0) else {
        return pass(Reason::PassNotOurs);
    };
    let key = unsafe {
        FlowKey::new(
            (*ip).src,
            (*ip).dst,
            (*l4.ports)[0],
            (*l4.ports)[1],
            ip_proto,
        )
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let bytes = (ctx.data_end() - ctx.data()) as u64;

    // 1. An established flow from a client.
    let mut stale_conn = None;
    if kind & ADDR_VIP != 0 {
        if let Some(c) = CONNS.get_ptr_mut(&key) {
            let conn = unsafe { &mut *c };
            let reopened =
                l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && conn.flags & CT_FIN != 0;
            if !reopened && !expired(cfg, ip_proto, conn.flags, conn.last_seen, now) {
                let to = Endpoints::to_backend(conn);
                if l4.tcp_flags & TCP_RST != 0 {
                    sync::report(cfg, &key, conn, CT_FIN);
                    // Its port may have been taken over (see nat::setup).
                    nat::release(conn, &key);
                    let _ = CONNS.remove(&key);
                } else {
                    if l4.tcp_flags & TCP_FIN != 0 && conn.flags & CT_FIN == 0 {
                        sync::report(cfg, &key, conn, CT_FIN);
                        conn.flags |= CT_FIN;
                        conn.last_seen = now;
                    } else if stale(conn.last_seen, now) {
                        if sync::due(cfg, ip_proto, conn.flags, conn.last_seen, now) {
                            // A closing flow stays closing on the peer.
                            sync::report(cfg, &key, conn, conn.flags & CT_FIN);
                        }
                        conn.last_seen = now;
                    }
                }
                traffic(conn.service_id, conn.backend_id, bytes, false);
                return send(ctx, eth, ip, &l4, to, cfg, now);
            }
            stale_conn = Some(c);
        }
    }

    // 2. A reply from a backend to an SNAT address.
    if kind & ADDR_SNAT != 0 {
        if let Some(n) = NATS.get_ptr_mut(&key) {
            let nat = unsafe { &mut *n };
            if !expired(cfg, ip_proto, nat.flags, nat.last_seen, now) {
                let to = Endpoints {
                    src_addr: nat.vip_addr,
                    dst_addr: nat.client_addr,
                    src_port: nat.vip_port,
                    dst_port: nat.client_port,
                };
                if l4.tcp_flags & TCP_RST != 0 {
                    // The client's FIN reports a close (path 1); a backend's
                    // RST ends the flow before the client says anything.
                    let fwd = nat.client_key(ip_proto);
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
                    let _ = NATS.remove(&key);
                } else if l4.tcp_flags & TCP_FIN != 0 && nat.flags & CT_FIN == 0 {
                    nat.flags |= CT_FIN;
                    nat.last_seen = now;
                } else if stale(nat.last_seen, now) {
                    nat.last_seen = now;
                }
                traffic(nat.service_id, nat.backend_id, bytes, false);
                return send(ctx, eth, ip, &l4, to, cfg, now);
            }
        }
        if kind & ADDR_VIP == 0 {
            return pass(Reason::PassNoNat);
        }
    }

    // 3. A new flow to a virtual server.
    let skey = ServiceKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto: ip_proto,
        _pad: 0,
    };
    let Some(svc) = (unsafe { SERVICES.get(&skey) }) else {
        return pass(Reason::PassNoService);
    };
    if svc.flags & SVC_ENABLED == 0 {
        return pass(Reason::PassDisabled);
    }
    if l4.tcp_flags & TCP_RST != 0 {
        return drop(Reason::DropRstNoConn);
    }
    let hash = flow_hash(
        cfg.hash_seed,
        key.src_addr,
        key.dst_addr,
        key.src_port,
        key.dst_port,
        ip_proto,
    );
    let Some((backend_id, be)) = maglev::pick(cfg, svc, hash, key.src_addr) else {
        return drop(Reason::DropNoBackend);
    };
    if let Some(c) = stale_conn {
        // The client reused a timed-out or closed 5-tuple. If it maps to the
        // same backend and still owns its SNAT port, revive both entries in
        // place: no map update, and the backend sees the same 4-tuple.
        let conn = unsafe { &mut *c };
        if nat::revive(cfg, conn, &key, backend_id, &be, svc.id, now) {
            // The peer was told this flow closed.
            sync::report(cfg, &key, conn, 0);
            traffic(svc.id, backend_id, bytes, true);
            let to = Endpoints::to_backend(conn);
            return send(ctx, eth, ip, &l4, to, cfg, now);
        }
        nat::release(conn, &key);
    }
    let midflow = ip_proto == PROTO_TCP && l4.tcp_flags & TCP_SYN == 0;
    let conn = match nat::setup(cfg, svc, &key, hash, backend_id, &be, now, midflow) {
        Ok(c) => c,
        Err(AllocError::Exhausted) => return drop(Reason::DropSnatExhausted),
        Err(AllocError::TableFull) => return drop(Reason::DropConnTableFull),
    };
    traffic(svc.id, backend_id, bytes, true);
    let to = Endpoints::to_backend(&conn);
    send(ctx, eth, ip, &l4, to, cfg, now)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
