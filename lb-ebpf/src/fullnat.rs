//! FULLNAT, the forwarding mode: a client's packet leaves from the
//! service's SNAT address to the backend, and the backend's reply leaves
//! from the VIP to the client, each routed to its next hop.

use aya_ebpf::programs::XdpContext;
use lb_common::{Config, Conn, Nat, PROTO_ICMP};

use crate::{
    csum::{rewrite, rewrite_error, Endpoints},
    fib,
    parse::{IcmpError, Packet},
};

/// A client's packet to the backend of `conn`, from its SNAT ip:port.
#[inline(always)]
pub fn to_backend(conn: &Conn) -> Endpoints {
    Endpoints {
        src_addr: conn.snat_addr,
        dst_addr: conn.backend_addr,
        src_port: conn.snat_port,
        dst_port: conn.backend_port,
    }
}

/// A backend's reply to the client `nat` restores, from the VIP.
#[inline(always)]
pub fn to_client(nat: &Nat) -> Endpoints {
    Endpoints {
        src_addr: nat.vip_addr,
        dst_addr: nat.client_addr,
        src_port: nat.vip_port,
        dst_port: nat.client_port,
    }
}

/// Rewrites the packet to `to` and sends it to its next hop.
#[inline(always)]
pub fn send(ctx: &XdpContext, p: &Packet, to: Endpoints, cfg: &Config, now: u64) -> u32 {
    rewrite(p, to);
    fib::forward(
        ctx,
        (p.eth, p.ip, p.proto),
        [to.src_port, to.dst_port],
        cfg,
        now,
    )
}

/// Rewrites an ICMP error about a flow whose packets in the error's
/// direction go to `to`, and sends it to its next hop.
#[inline(always)]
pub fn send_error(ctx: &XdpContext, e: &IcmpError, to: Endpoints, cfg: &Config, now: u64) -> u32 {
    rewrite_error(e, to);
    fib::forward(ctx, (e.eth, e.ip, PROTO_ICMP), [0, 0], cfg, now)
}
