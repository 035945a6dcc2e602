//! ICMP errors about forwarded flows: a destination-unreachable (with
//! fragmentation needed, for path MTU discovery) or time-exceeded message
//! about a packet we sent goes to the flow's other end, translated like the
//! flow's own packets in that direction, outer and quoted headers alike.
//! A client that gets an error whose quote it cannot match to a socket
//! drops it, and path MTU discovery then black-holes large transfers.

use aya_ebpf::programs::XdpContext;
use lb_common::{Config, Reason, ADDR_SNAT, ADDR_VIP};

use crate::{
    conntrack::expired,
    fullnat,
    maps::{CONNS, NATS},
    parse::Frame,
};

/// The smallest next-hop MTU an error sent on to a backend may announce:
/// IPv6's minimum, which real paths meet.
const MIN_PATH_MTU: u16 = 1280;

/// Forwards the ICMP error in `frame` to the other end of the flow it
/// quotes: an error to a VIP quotes a reply we restored to a client, so it
/// goes to the backend; an error to an SNAT address quotes a client's
/// packet we sent to a backend, so it goes to the client.
#[inline(always)]
pub fn process(
    ctx: &XdpContext,
    frame: Frame,
    kind: u32,
    cfg: &Config,
    now: u64,
) -> Result<u32, Reason> {
    let e = frame.icmp_error(ctx)?;
    let quoted = e.quoted();
    // Errors go to the source of the packet they quote.
    if quoted.src_addr != e.ip.dst() {
        return Err(Reason::PassIcmpNoFlow);
    }
    // The quoted packet's flow, seen from the side that sent it to us.
    let key = quoted.reversed();
    if kind & ADDR_VIP != 0 {
        if let Some(conn) = unsafe { CONNS.get(&key) } {
            if !expired(cfg, key.proto, conn.flags, conn.last_seen, now) {
                // The backend keeps one path MTU per destination, and every
                // client shares the SNAT address: one client's tiny MTU
                // would shrink every flow's packets.
                if e.frag_mtu != 0 && e.frag_mtu < MIN_PATH_MTU {
                    return Err(Reason::DropIcmpSmallMtu);
                }
                let to = fullnat::to_backend(conn);
                return Ok(fullnat::send_error(ctx, &e, to, cfg, now));
            }
        }
    }
    if kind & ADDR_SNAT != 0 {
        if let Some(nat) = unsafe { NATS.get(&key) } {
            if !expired(cfg, key.proto, nat.flags, nat.last_seen, now) {
                let to = fullnat::to_client(nat);
                return Ok(fullnat::send_error(ctx, &e, to, cfg, now));
            }
        }
    }
    Err(Reason::PassIcmpNoFlow)
}
