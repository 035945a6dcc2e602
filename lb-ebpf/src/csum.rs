//! Rewrites a packet's addresses and ports, patching the IPv4 and L4
//! checksums incrementally.

use lb_common::{csum::CsumDiff, PROTO_UDP};

use crate::parse::Packet;

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
