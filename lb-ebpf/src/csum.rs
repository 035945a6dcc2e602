//! Applies address and port rewrites to the IPv4 and L4 checksums in place.

use lb_common::{csum::CsumDiff, PROTO_UDP};

use crate::parse::Ipv4Hdr;

/// The endpoints of a packet after rewrite (network byte order).
#[derive(Clone, Copy)]
pub struct Endpoints {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Endpoints {
    /// Towards the backend of `conn`, from its SNAT address.
    #[inline(always)]
    pub fn to_backend(conn: &lb_common::Conn) -> Self {
        Endpoints {
            src_addr: conn.snat_addr,
            dst_addr: conn.backend_addr,
            src_port: conn.snat_port,
            dst_port: conn.backend_port,
        }
    }
}

/// Rewrites addresses and ports and patches both checksums incrementally.
/// `ports` points at the L4 source/destination port pair and `l4_check` at the
/// L4 checksum; a UDP checksum of 0 (none) stays 0.
#[inline(always)]
pub fn rewrite(ip: *mut Ipv4Hdr, ports: *mut [u16; 2], l4_check: *mut u16, to: Endpoints) {
    unsafe {
        let addrs = CsumDiff::new()
            .u32((*ip).src, to.src_addr)
            .u32((*ip).dst, to.dst_addr);
        (*ip).check = addrs.apply((*ip).check);
        let old = *l4_check;
        if !((*ip).proto == PROTO_UDP && old == 0) {
            let mut new = addrs
                .u16((*ports)[0], to.src_port)
                .u16((*ports)[1], to.dst_port)
                .apply(old);
            if (*ip).proto == PROTO_UDP && new == 0 {
                new = 0xffff;
            }
            *l4_check = new;
        }
        (*ip).src = to.src_addr;
        (*ip).dst = to.dst_addr;
        (*ports)[0] = to.src_port;
        (*ports)[1] = to.dst_port;
    }
}
