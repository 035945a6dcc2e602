//! Next hop via `bpf_fib_lookup`, then XDP_TX or XDP_REDIRECT.
//!
//! A successful lookup is cached per (destination, ingress interface) for
//! `Config::nexthop_ttl_ns`: the lookup is half the cost of a forwarded
//! packet, and a route or neighbour change still applies within the TTL.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{Config, NextHop, NextHopKey, Reason};

use crate::{
    maps::{DEVMAP, NEXTHOPS},
    parse::{Eth, Ipv4},
    stats::count,
};

const AF_INET: u8 = 2;

/// Zeroes the lookup parameters in place, as eight word stores: `mem::zeroed`
/// or a moved value would become a byte-by-byte memset call in BPF.
#[inline(always)]
fn zero(p: *mut bpf_fib_lookup) {
    const WORDS: usize = core::mem::size_of::<bpf_fib_lookup>() / 8;
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == WORDS * 8);
    let w = p as *mut u64;
    for i in 0..WORDS {
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

/// Routes the already rewritten packet with headers `eth` and `ip`, of
/// protocol `proto` and now with `ports`: sets the MACs of the next hop and
/// returns the XDP action. An unresolved neighbour goes to the kernel,
/// which forwards the packet and resolves it for the next one.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    (eth, ip, proto): (Eth, Ipv4, u8),
    ports: [u16; 2],
    cfg: &Config,
    now: u64,
) -> u32 {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let key = NextHopKey {
        dst_addr: ip.dst(),
        ingress,
    };
    let tot_len = ip.tot_len();
    if cfg.nexthop_ttl_ns != 0 {
        if let Some(nh) = unsafe { NEXTHOPS.get(&key) } {
            if now < nh.expires && tot_len <= nh.mtu {
                eth.set_macs(nh.smac, nh.dmac);
                return transmit(nh.ifindex, ingress);
            }
        }
    }

    let mut params = core::mem::MaybeUninit::<bpf_fib_lookup>::uninit();
    let f = params.as_mut_ptr();
    zero(f);
    let f = unsafe { &mut *f };
    f.family = AF_INET;
    f.l4_protocol = proto;
    f.sport = ports[0];
    f.dport = ports[1];
    f.__bindgen_anon_1.tot_len = tot_len;
    f.ifindex = ingress;
    f.__bindgen_anon_2.tos = ip.tos();
    f.__bindgen_anon_3.ipv4_src = ip.src();
    f.__bindgen_anon_4.ipv4_dst = ip.dst();
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            f,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        eth.set_macs(f.smac, f.dmac);
        if cfg.nexthop_ttl_ns != 0 {
            // On success the kernel reports the egress MTU here.
            let mtu = unsafe { f.__bindgen_anon_1.mtu_result };
            let nh = NextHop {
                ifindex: f.ifindex,
                mtu: if mtu == 0 { tot_len } else { mtu },
                smac: f.smac,
                dmac: f.dmac,
                expires: now.wrapping_add(cfg.nexthop_ttl_ns),
            };
            let _ = NEXTHOPS.insert(&key, &nh, 0);
        }
        return transmit(f.ifindex, ingress);
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        count(Reason::PassNoNeigh);
    } else {
        count(Reason::PassFibFailed);
    }
    xdp_action::XDP_PASS
}

/// XDP_TX back out of the ingress interface, else XDP_REDIRECT.
#[inline(always)]
fn transmit(ifindex: u32, ingress: u32) -> u32 {
    if ifindex == ingress {
        count(Reason::TxForward);
        return xdp_action::XDP_TX;
    }
    match DEVMAP.redirect(ifindex, xdp_action::XDP_PASS as u64) {
        Ok(a) => {
            count(Reason::RedirectForward);
            a
        }
        Err(a) => {
            count(Reason::PassNoDevmap);
            a
        }
    }
}
