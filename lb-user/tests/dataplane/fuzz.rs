//! Mutation fuzzing of the forward path: frames of live flows, in both
//! directions, each with one header field changed (and the checksums that
//! cover it made right again, as a sender would), run through the data
//! path. Whatever it forwards must parse with valid checksums; every class
//! of mutation must end under the reason expected of it; and enough frames
//! must be forwarded that the test cannot pass by dropping everything.

use std::{collections::BTreeMap, net::Ipv4Addr};

use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type};
use lb_common::{Reason, PROTO_TCP, PROTO_UDP};

use super::*;

const FRAMES: usize = 100_000;
const FLOWS: u16 = 32;
const TCP_BASE: u16 = 44_000;
const UDP_BASE: u16 = 45_000;
const L3: usize = 14;

/// One kind of change to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Control,
    Ihl,
    TotalLength,
    Fragment,
    TcpDataOffset,
    UdpLength,
    DoubleTag,
    Ttl,
    TruncatedTcpOptions,
    TcpFlags,
    IcmpLiveFlow,
    IcmpUnknownFlow,
}

const CLASSES: [Class; 12] = [
    Class::Control,
    Class::Ihl,
    Class::TotalLength,
    Class::Fragment,
    Class::TcpDataOffset,
    Class::UdpLength,
    Class::DoubleTag,
    Class::Ttl,
    Class::TruncatedTcpOptions,
    Class::TcpFlags,
    Class::IcmpLiveFlow,
    Class::IcmpUnknownFlow,
];

/// What became of a frame: forwarded, or the one reason it ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Forwarded,
    Ended(Reason),
}

/// A live flow's ends: the backend and SNAT port it got.
#[derive(Clone, Copy)]
struct Live {
    sport: u16,
    proto: u8,
    be: Ipv4Addr,
    port: u16,
}

/// The one's-complement sum of `b` as big-endian words.
fn sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

/// The checksum of a sum of words.
fn fold(s: u32) -> u16 {
    !lb_common::csum::fold(s.into())
}

/// Recomputes the IPv4 header checksum of the header at `l3`.
fn fix_ip(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0xf) * 4;
    if ihl < 20 || l3 + ihl > f.len() {
        return;
    }
    f[l3 + 10..l3 + 12].fill(0);
    let c = fold(sum(&f[l3..l3 + ihl]));
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP or UDP checksum over the segment the headers
/// describe (UDP: its own length), where it fits the frame.
fn fix_l4(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0xf) * 4;
    let tot = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    let proto = f[l3 + 9];
    let l4 = l3 + ihl;
    let mut end = (l3 + tot).min(f.len());
    if ihl < 20 || l4 + 8 > end {
        return;
    }
    let at = match proto {
        PROTO_TCP if l4 + 18 <= end => 16,
        PROTO_UDP => {
            end = end.min(l4 + usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]])));
            6
        }
        _ => return,
    };
    if l4 + at + 2 > end {
        return;
    }
    f[l4 + at..l4 + at + 2].fill(0);
    let len = (end - l4) as u32;
    let pseudo = sum(&f[l3 + 12..l3 + 20]) + u32::from(proto) + len;
    let mut c = fold(pseudo + sum(&f[l4..end]));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A length field's new value: any, or (half the time) one near the
/// `actual` length, where shorter-but-valid values lie.
fn near(rng: &mut Rng, actual: usize) -> u16 {
    if rng.below(2) == 0 {
        rng.below(1 << 16) as u16
    } else {
        rng.below(actual as u64 + 8) as u16
    }
}

/// Applies `class` to `f` (an untagged frame of a live flow) and returns
/// the fates it may meet.
fn mutate(class: Class, f: &mut Vec<u8>, rng: &mut Rng) -> Vec<Fate> {
    use Fate::*;
    let ok_or_malformed = vec![Forwarded, Ended(Reason::DropMalformed)];
    let fates = match class {
        Class::Control | Class::TcpFlags | Class::IcmpLiveFlow => vec![Forwarded],
        Class::Ttl => {
            f[L3 + 8] = rng.below(2) as u8;
            vec![Forwarded]
        }
        Class::Ihl => {
            let v = (5 + 1 + rng.below(15) as u8) % 16;
            f[L3] = 0x40 | v;
            vec![Ended(if v < 5 {
                Reason::DropMalformed
            } else {
                Reason::DropIpOptions
            })]
        }
        Class::TotalLength => {
            let v = near(rng, f.len() - L3);
            f[L3 + 2..L3 + 4].copy_from_slice(&v.to_be_bytes());
            ok_or_malformed
        }
        Class::Fragment => {
            let v = 1 + rng.below(0x3fff) as u16;
            f[L3 + 6..L3 + 8].copy_from_slice(&v.to_be_bytes());
            vec![Ended(Reason::DropFragment)]
        }
        Class::TcpDataOffset => {
            let l4 = L3 + 20;
            f[l4 + 12] = (rng.below(16) as u8) << 4;
            ok_or_malformed
        }
        Class::UdpLength => {
            let l4 = L3 + 20;
            let v = near(rng, f.len() - l4);
            f[l4 + 4..l4 + 6].copy_from_slice(&v.to_be_bytes());
            ok_or_malformed
        }
        Class::TruncatedTcpOptions => {
            // Options announced, the datagram ends inside them.
            let l4 = L3 + 20;
            f[l4 + 12] = (6 + rng.below(10) as u8) << 4;
            let keep = 20 + 20 + 1 + rng.below(3) as usize;
            f.truncate(L3 + keep);
            f[L3 + 2..L3 + 4].copy_from_slice(&(keep as u16).to_be_bytes());
            vec![Ended(Reason::DropMalformed)]
        }
        Class::DoubleTag => {
            let outer: [u8; 2] = if rng.below(2) == 0 {
                [0x88, 0xa8]
            } else {
                [0x81, 0x00]
            };
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&outer);
            t.extend_from_slice(&[0, 10, 0x81, 0x00, 0, 20]);
            t.extend_from_slice(&f[12..]);
            *f = t;
            return vec![Ended(Reason::PassNotOurs)];
        }
        Class::IcmpUnknownFlow => vec![Ended(Reason::PassIcmpNoFlow)],
    };
    if f[L3 + 9] != lb_common::PROTO_ICMP {
        fix_l4(f, L3);
    }
    fix_ip(f, L3);
    fates
}

fn fate(before: &[(Reason, u64)], after: &[(Reason, u64)]) -> Option<Fate> {
    let moved: Vec<Reason> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, _)| b.0)
        .collect();
    match moved[..] {
        [Reason::TxForward] | [Reason::RedirectForward] => Some(Fate::Forwarded),
        [r] => Some(Fate::Ended(r)),
        _ => None,
    }
}

/// Opens `sport`'s flow (TCP: SYN, then ACK) and returns where it goes.
fn open(dp: &mut Dataplane, sport: u16, proto: u8) -> Result<Live, Failed> {
    let (be, port) = if proto == PROTO_TCP {
        handshake(dp, sport)?
    } else {
        let (act, out) = run(dp, &udp(from_client(sport, 53), b"query"));
        ensure_eq!(act, XDP_REDIRECT, "opening {sport}: {:?}", dp.reasons()?);
        let s = parse_valid(&out);
        (s.dst, s.sport)
    };
    Ok(Live {
        sport,
        proto,
        be,
        port,
    })
}

/// A frame of flow `l` as the client or the backend sends it, or an ICMP
/// error about it as a router on either side sends it: (frame, ingress).
fn frame(l: &Live, class: Class, rng: &mut Rng) -> (Vec<u8>, u32) {
    let lab = lab();
    let from_be = rng.below(2) == 0;
    let len = rng.below(64) as usize;
    let data = rng.bytes(len);
    let client = from_client(l.sport, if l.proto == PROTO_TCP { 80 } else { 53 });
    let backend = Ends {
        smac: backend_mac(l.be),
        dmac: lab.b0_mac,
        src: l.be,
        dst: SNAT,
        sport: if l.proto == PROTO_TCP {
            BACKEND_PORT
        } else {
            53
        },
        dport: l.port,
    };
    let flags = if class == Class::TcpFlags {
        Flags {
            syn: rng.below(2) == 0,
            ack: rng.below(2) == 0,
            fin: rng.below(2) == 0,
            rst: rng.below(4) == 0,
        }
    } else {
        ACK
    };
    let build = |e: Ends| {
        if l.proto == PROTO_TCP {
            tcp(e, flags, &data)
        } else {
            udp(e, &data)
        }
    };
    if matches!(class, Class::IcmpLiveFlow | Class::IcmpUnknownFlow) {
        let unknown = class == Class::IcmpUnknownFlow;
        let frag = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        });
        // About a packet we sent: a reply to the client, or to the backend.
        let (router, to, quoted, ingress, mac) = if from_be {
            let sent = Ends {
                src: SNAT,
                dst: l.be,
                sport: l.port,
                dport: backend.sport + unknown as u16,
                ..backend
            };
            (
                Ipv4Addr::new(10, 99, 1, 254),
                SNAT,
                sent,
                lab.b0,
                lab.b0_mac,
            )
        } else {
            let sent = Ends {
                src: VIP,
                dst: CLIENT,
                sport: client.dport,
                dport: l.sport.wrapping_add(FLOWS * 4 * unknown as u16),
                ..client
            };
            (Ipv4Addr::new(10, 99, 0, 254), VIP, sent, lab.c0, lab.c0_mac)
        };
        let f = icmp_frame(
            ([2, 0, 0, 0, 0, 0xfe], mac),
            (router, to),
            frag,
            &build(quoted),
            // Half of them short: 8 to 20 bytes of TCP or UDP.
            if rng.below(2) == 0 {
                28 + rng.below(13) as usize
            } else {
                28 + rng.below(548) as usize
            },
        );
        return (f, ingress);
    }
    if from_be {
        (build(backend), lab.b0)
    } else {
        (build(client), lab.c0)
    }
}

/// 10^5 mutated frames of live TCP and UDP flows, both directions.
pub fn mutated_frames_of_live_flows_are_forwarded_valid_or_refused() -> Result<(), Failed> {
    let mut dp = dp();
    let mut cfg = dp.config();
    cfg.udp_timeout_ns = 600_000_000_000;
    dp.set_config(cfg)?;
    let mut live = Vec::new();
    for i in 0..FLOWS {
        live.push(open(&mut dp, TCP_BASE + i, PROTO_TCP)?);
        live.push(open(&mut dp, UDP_BASE + i, PROTO_UDP)?);
    }
    let mut rng = Rng(0x5eed_f022);
    let mut seen: BTreeMap<(Class, String), usize> = BTreeMap::new();
    let mut forwarded = 0;
    let mut before = dp.reasons()?;
    for n in 0..FRAMES {
        let mut class = CLASSES[rng.below(CLASSES.len() as u64) as usize];
        let i = rng.below(live.len() as u64) as usize;
        let l = live[i];
        // Classes that need TCP or UDP take a flow of that kind.
        if (class == Class::UdpLength) != (l.proto == PROTO_UDP)
            && matches!(
                class,
                Class::UdpLength
                    | Class::TcpDataOffset
                    | Class::TruncatedTcpOptions
                    | Class::TcpFlags
            )
        {
            class = Class::Control;
        }
        let (mut f, ingress) = frame(&l, class, &mut rng);
        let fates = mutate(class, &mut f, &mut rng);
        let (act, out) = run_on(&mut dp, &f, ingress)?;
        let after = dp.reasons()?;
        let got = fate(&before, &after)
            .ok_or_else(|| format!("frame {n} ({class:?}) counted oddly: {after:?}"))?;
        check(fates.contains(&got), || {
            format!("frame {n} ({class:?}): {got:?}, expected one of {fates:?}: {f:02x?}")
        })?;
        match got {
            Fate::Forwarded => {
                forwarded += 1;
                check(act == XDP_REDIRECT || act == XDP_TX, || {
                    format!("frame {n}: action {act}")
                })?;
                valid_output(&out)
                    .map_err(|e| format!("frame {n} ({class:?}): {e}: {out:02x?}"))?;
            }
            Fate::Ended(r) => {
                ensure_eq!(act, if r.drops() { XDP_DROP } else { XDP_PASS });
                if !r.drops() {
                    ensure_eq!(out, f, "frame {n} ({class:?}) passed changed");
                }
            }
        }
        *seen.entry((class, format!("{got:?}"))).or_default() += 1;
        before = after;
        // A RST ends a flow, a FIN starts its end: open it again.
        let key = flow(CLIENT, l.sport, 80, PROTO_TCP);
        if l.proto == PROTO_TCP && dp.conn(&key)?.is_none_or(|c| c.flags & CT_FIN != 0) {
            live[i] = open(&mut dp, l.sport, PROTO_TCP)?;
            before = dp.reasons()?;
        }
    }
    for c in CLASSES {
        check(seen.keys().any(|(k, _)| *k == c), || {
            format!("{c:?} never ran")
        })?;
    }
    eprintln!("  {forwarded} of {FRAMES} forwarded; by class and fate: {seen:?}");
    check(forwarded * 4 >= FRAMES, || {
        format!("only {forwarded} of {FRAMES} forwarded")
    })
}

/// A forwarded frame parses, with valid IPv4 and transport checksums (and
/// ICMP's, over the message).
fn valid_output(out: &[u8]) -> Result<(), String> {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let h = PacketHeaders::from_ethernet_slice(out).map_err(|e| format!("parse: {e}"))?;
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        return Err("not IPv4".into());
    };
    if ip.header_checksum != ip.calc_header_checksum() {
        return Err("IPv4 checksum".into());
    }
    let payload = h.payload.slice();
    let ok = match &h.transport {
        Some(TransportHeader::Tcp(t)) => t.calc_checksum_ipv4(ip, payload).ok() == Some(t.checksum),
        Some(TransportHeader::Udp(u)) => {
            // Over UDP's own length, as a receiver checks it (RFC 768).
            let n = (usize::from(u.length).saturating_sub(8)).min(payload.len());
            let mut u = u.clone();
            u.length = (n + 8) as u16;
            u.checksum == 0 || u.calc_checksum_ipv4(ip, &payload[..n]).ok() == Some(u.checksum)
        }
        Some(TransportHeader::Icmpv4(i)) => {
            // The quote: a valid IPv4 header of a packet between the
            // error's two ends, from its destination.
            let q = etherparse::Ipv4HeaderSlice::from_slice(payload)
                .map_err(|e| format!("quote: {e}"))?
                .to_header();
            if q.header_checksum != q.calc_header_checksum() {
                return Err("quoted IPv4 checksum".into());
            }
            if (q.source, q.destination) != (ip.destination, ip.source) {
                return Err("quote not from the error's destination".into());
            }
            i.icmp_type.calc_checksum(payload) == i.checksum
        }
        other => return Err(format!("transport {other:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err("transport checksum".into())
    }
}
