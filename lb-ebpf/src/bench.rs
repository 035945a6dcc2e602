//! Test and benchmark programs, never loaded by the agent.
//!
//! `test_run` with `repeat` reuses one buffer, so a rewriting program would see
//! its own output from the second repeat on. `restore_and_call` writes the
//! saved packet back before every run and tail-calls the program under test;
//! `restore_only` does the same work without the call, so its time can be
//! subtracted. `baseline` is the bare forwarder the ratios are taken against.
//! `insert_one` and `insert_two` are the kernel's floor for a new flow: the
//! baseline plus one or two connection-table inserts and nothing else.
//! `tx` and `forward` are the packet generator and the bare forwarder of the
//! lab's packets-per-second benchmark.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: no copies in BPF.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    bindings::{xdp_action, BPF_ANY},
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use lb_common::{Conn, FlowKey};

/// The packet to restore, its length, and whether to vary the source per run.
#[repr(C)]
pub struct Saved {
    pub len: u32,
    /// Non-zero: write a new source port and address low byte each run, so every
    /// run is a new flow.
    pub vary: u32,
    pub data: [u8; 128],
}

#[map]
static SAVED: Array<Saved> = Array::with_max_entries(1, 0);
#[map]
static RUNS: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[inline(always)]
fn restore(ctx: &XdpContext) -> bool {
    let Some(s) = SAVED.get_ptr_mut(0) else {
        return false;
    };
    let len = unsafe { (*s).len };
    if len == 0 || len > 128 {
        return false;
    }
    let rc = unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, (*s).data.as_mut_ptr().cast(), len) };
    if rc != 0 {
        return false;
    }
    if unsafe { (*s).vary } != 0 {
        let Some(n) = RUNS.get_ptr_mut(0) else {
            return false;
        };
        let run = unsafe {
            *n = (*n).wrapping_add(1);
            *n
        };
        // Source port (offset 34) and the last byte of the source address (29)
        // of an untagged IPv4 packet without options.
        let start = ctx.data();
        if start + 36 > ctx.data_end() {
            return false;
        }
        unsafe {
            *((start + 34) as *mut u16) = (run as u16).to_be();
            *((start + 29) as *mut u8) = (run >> 16) as u8;
        }
    }
    true
}

#[xdp]
pub fn restore_and_call(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    unsafe {
        JUMP.tail_call(&ctx, 0);
    }
    xdp_action::XDP_ABORTED
}

#[xdp]
pub fn restore_only(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

/// Swaps the Ethernet addresses of the frame at `start`.
///
/// # Safety
/// `start` points at a frame of at least 12 bytes.
#[inline(always)]
unsafe fn swap_macs(start: usize) {
    let eth = start as *mut [u8; 6];
    let dst = *eth;
    *eth = *eth.add(1);
    *eth.add(1) = dst;
}

/// The floor programs' tables: the connection table's key, value, map type
/// and (set at load) size.
#[map]
static FLOOR_A: LruHashMap<FlowKey, Conn> = LruHashMap::with_max_entries(1 << 21, 0);
#[map]
static FLOOR_B: LruHashMap<FlowKey, Conn> = LruHashMap::with_max_entries(1 << 21, 0);

/// The baseline plus `inserts` (1 or 2) inserts of the packet's 5-tuple,
/// as a new flow must write: what the kernel's tables cost, with no
/// balancing work. One is what a DSR balancer writes per new flow, two what
/// FULLNAT must (the connection and the reverse NAT entry).
#[inline(always)]
fn insert_floor(ctx: &XdpContext, inserts: u32) -> u32 {
    let start = ctx.data();
    if start + 38 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    unsafe {
        if *((start + 12) as *const u16) != 0x0800u16.to_be()
            || *((start + 14) as *const u8) != 0x45
        {
            return xdp_action::XDP_PASS;
        }
        let ip = |off: usize| core::ptr::read_unaligned((start + off) as *const u32);
        let port = |off: usize| core::ptr::read_unaligned((start + off) as *const u16);
        let key = FlowKey::new(
            ip(26),
            ip(30),
            port(34),
            port(36),
            *((start + 23) as *const u8),
        );
        let conn = Conn {
            last_seen: bpf_ktime_get_ns(),
            ..Default::default()
        };
        if FLOOR_A.insert(&key, &conn, BPF_ANY as u64).is_err() {
            return xdp_action::XDP_ABORTED;
        }
        if inserts > 1 {
            let rkey = FlowKey::new(
                key.dst_addr,
                key.src_addr,
                key.dst_port,
                key.src_port,
                key.proto,
            );
            if FLOOR_B.insert(&rkey, &conn, BPF_ANY as u64).is_err() {
                return xdp_action::XDP_ABORTED;
            }
        }
        swap_macs(start);
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn insert_one(ctx: XdpContext) -> u32 {
    insert_floor(&ctx, 1)
}

#[xdp]
pub fn insert_two(ctx: XdpContext) -> u32 {
    insert_floor(&ctx, 2)
}

/// Passes everything: test hosts attach it to their veth ends, because frames
/// sent with XDP_TX or XDP_REDIRECT into a veth arrive only if the peer runs
/// an XDP program.
#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parse Ethernet and IPv4, swap the MACs, send it back.
#[xdp]
pub fn baseline(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    unsafe {
        if *((start + 12) as *const u16) != 0x0800u16.to_be()
            || *((start + 14) as *const u8) >> 4 != 4
        {
            return xdp_action::XDP_PASS;
        }
        swap_macs(start);
    }
    xdp_action::XDP_TX
}

/// Sends every frame back out of its interface unchanged: run with
/// `test_run` live frames, a line-rate packet generator.
#[xdp]
pub fn tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// The next hops of `forward`: IPv4 destination (wire order) → MAC in the
/// first six bytes.
#[map]
static NEXT_HOPS: HashMap<u32, [u8; 8]> = HashMap::with_max_entries(16, 0);

/// The bare forwarder of a live path, the machine's limit: IPv4 frames to a
/// destination in `NEXT_HOPS` go to its MAC, from this interface's (their
/// old destination), out the same interface. Everything else passes.
#[xdp]
pub fn forward(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    unsafe {
        if *((start + 12) as *const u16) != 0x0800u16.to_be() {
            return xdp_action::XDP_PASS;
        }
        let dst = core::ptr::read_unaligned((start + 30) as *const u32);
        let Some(hop) = NEXT_HOPS.get(dst) else {
            return xdp_action::XDP_PASS;
        };
        let eth = start as *mut [u8; 6];
        *eth.add(1) = *eth;
        *eth = [hop[0], hop[1], hop[2], hop[3], hop[4], hop[5]];
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
