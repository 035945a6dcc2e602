//! Rewrites a packet's addresses and ports, patching the IPv4 and L4
//! checksums incrementally.

use lb_common::{csum::CsumDiff, PROTO_UDP};

use crate::parse::{IcmpError, Packet};

/// The endpoints of a packet after a rewrite (network byte order).
#[derive(Clone, Copy)]
pub struct Endpoints {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Rewrites addresses and ports to `to` and patches both checksums; a UDP
/// checksum of 0 (none) stays 0.
#[inline(always)]
pub fn rewrite(p: &Packet, to: Endpoints) {
    let (ip, l4) = (p.ip, p.l4);
    let addrs = CsumDiff::new()
        .u32(ip.src(), to.src_addr)
        .u32(ip.dst(), to.dst_addr);
    ip.set_check(addrs.apply(ip.check()));
    let old = l4.check();
    if !(p.proto == PROTO_UDP && old == 0) {
        let [sport, dport] = l4.ports();
        let mut new = addrs
            .u16(sport, to.src_port)
            .u16(dport, to.dst_port)
            .apply(old);
        if p.proto == PROTO_UDP && new == 0 {
            new = 0xffff;
        }
        l4.set_check(new);
    }
    ip.set_addrs(to.src_addr, to.dst_addr);
    l4.set_ports([to.src_port, to.dst_port]);
}

/// Rewrites an ICMP error about the flow `to` describes (its forward
/// direction's new endpoints): the outer header goes from `to`'s source to
/// its destination, and the quoted packet becomes the one that direction's
/// peer sent, from `to`'s destination to its source. Patches the outer
/// IPv4 checksum, the quoted IPv4 and transport checksums, and the ICMP
/// checksum, which covers the quote.
#[inline(always)]
pub fn rewrite_error(e: &IcmpError, to: Endpoints) {
    let (ip, inner, l4) = (e.ip, e.inner, e.inner_l4);
    let outer = CsumDiff::new()
        .u32(ip.src(), to.src_addr)
        .u32(ip.dst(), to.dst_addr);
    ip.set_check(outer.apply(ip.check()));
    ip.set_addrs(to.src_addr, to.dst_addr);

    let addrs = CsumDiff::new()
        .u32(inner.src(), to.dst_addr)
        .u32(inner.dst(), to.src_addr);
    let old_ip = inner.check();
    let new_ip = addrs.apply(old_ip);
    let [sport, dport] = l4.ports();
    let ports = addrs.u16(sport, to.dst_port).u16(dport, to.src_port);
    let mut icmp = ports.u16(old_ip, new_ip);
    if e.inner_check {
        let old = l4.check();
        if !(e.inner_proto == PROTO_UDP && old == 0) {
            let mut new = ports.apply(old);
            if e.inner_proto == PROTO_UDP && new == 0 {
                new = 0xffff;
            }
            l4.set_check(new);
            icmp = icmp.u16(old, new);
        }
    }
    inner.set_check(new_ip);
    inner.set_addrs(to.dst_addr, to.src_addr);
    l4.set_ports([to.dst_port, to.src_port]);
    e.set_check(icmp.apply(e.check()));
}
