//! ICMP errors about forwarded flows, byte for byte: the outer and the
//! quoted headers translated like the flow's own packets, every checksum
//! right (built independently with etherparse).

use std::net::Ipv4Addr;

use etherparse::{
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    IcmpEchoHeader, Icmpv4Type, PacketBuilder,
};
use lb_common::Reason;

use super::*;

/// A router between the LB and the clients, and one towards the backends.
const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
const ROUTER_B: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 254);
const FRAG_NEEDED: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });

/// An Ethernet/IPv4 ICMP message from `src` to `dst` quoting the first
/// `quote` bytes of the IPv4 packet in `frame` (an Ethernet frame).
pub fn icmp_frame(
    (smac, dmac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    kind: Icmpv4Type,
    frame: &[u8],
    quote: usize,
) -> Vec<u8> {
    let ip = &frame[14..];
    let quoted = &ip[..quote.min(ip.len())];
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(kind);
    let mut out = Vec::with_capacity(b.size(quoted.len()));
    b.write(&mut out, quoted).unwrap();
    out
}

/// Runs `pkt` and expects it forwarded, byte for byte equal to `want`.
fn forwards(dp: &mut Dataplane, pkt: &[u8], ifindex: u32, want: &[u8]) -> Result<(), Failed> {
    let (act, out) = run_on(dp, pkt, ifindex)?;
    ensure_eq!(act, XDP_REDIRECT, "{:?}", dp.reasons()?);
    check(out == want, || {
        format!("output differs:\n got  {out:02x?}\n want {want:02x?}")
    })
}

/// A client's packet as the LB sent it to backend `be` from `snat_port`.
fn sent_to(be: Ipv4Addr, snat_port: u16) -> Ends {
    Ends {
        smac: lab().b0_mac,
        dmac: backend_mac(be),
        src: SNAT,
        dst: be,
        sport: snat_port,
        dport: BACKEND_PORT,
    }
}

/// Fragmentation needed from a router on the client's side, about a reply
/// we restored (VIP → client), goes to the backend as if about its own
/// packet (backend → SNAT); from the backends' side, about a client's
/// packet (SNAT → backend), it goes to the client as if about its own
/// (client → VIP). Both quote a whole TCP header, checksum included.
pub fn icmp_errors_reach_the_flows_other_end() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let (be, snat_port) = handshake(&mut dp, 40100)?;
    let be_mac = backend_mac(be);
    let data = vec![0x5a; 1360];
    let restored = restored_to(40100);
    let sent = from_backend(be, snat_port);
    for quote in [48, 576] {
        let pkt = icmp_frame(
            ([2, 0, 0, 0, 0, 0xfe], lab.c0_mac),
            (ROUTER_C, VIP),
            FRAG_NEEDED,
            &tcp(restored, ACK, &data),
            quote,
        );
        let want = icmp_frame(
            (lab.b0_mac, be_mac),
            (SNAT, be),
            FRAG_NEEDED,
            &tcp(sent, ACK, &data),
            quote,
        );
        forwards(&mut dp, &pkt, lab.c0, &want)?;
    }

    let to_backend = sent_to(be, snat_port);
    let from_client = from_client(40100, 80);
    let pkt = icmp_frame(
        ([2, 0, 0, 0, 1, 0xfe], lab.b0_mac),
        (ROUTER_B, SNAT),
        FRAG_NEEDED,
        &tcp(to_backend, ACK, &data),
        576,
    );
    let want = icmp_frame(
        (lab.c0_mac, CLIENT_MAC),
        (VIP, CLIENT),
        FRAG_NEEDED,
        &tcp(from_client, ACK, &data),
        576,
    );
    forwards(&mut dp, &pkt, lab.b0, &want)?;
    Ok(())
}

/// A quote of only 8 bytes of TCP (RFC 792's minimum: no checksum) and a
/// UDP port unreachable from the backend itself, with and without a UDP
/// checksum, are translated too.
pub fn short_quotes_and_udp_errors_are_translated() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let (be, snat_port) = handshake(&mut dp, 40101)?;
    let ttl = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);
    let to_backend = sent_to(be, snat_port);
    let pkt = icmp_frame(
        ([2, 0, 0, 0, 1, 0xfe], lab.b0_mac),
        (ROUTER_B, SNAT),
        ttl.clone(),
        &tcp(to_backend, ACK, b"data"),
        28,
    );
    let want = icmp_frame(
        (lab.c0_mac, CLIENT_MAC),
        (VIP, CLIENT),
        ttl,
        &tcp(from_client(40101, 80), ACK, b"data"),
        28,
    );
    forwards(&mut dp, &pkt, lab.b0, &want)?;

    for zero in [false, true] {
        let q = query(if zero { 5400 } else { 5401 }, zero);
        let (act, out) = run(&mut dp, &q);
        ensure_eq!(act, XDP_REDIRECT);
        let s = parse_valid(&out);
        let port = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
        // The datagram as the backend got it.
        let pkt = icmp_frame(
            (backend_mac(s.dst), lab.b0_mac),
            (s.dst, SNAT),
            port.clone(),
            &out,
            576,
        );
        let want = icmp_frame((lab.c0_mac, CLIENT_MAC), (VIP, CLIENT), port, &q, 576);
        forwards(&mut dp, &pkt, lab.b0, &want)?;
    }
    ensure_eq!(dp.reason(Reason::PassIcmpNoFlow)?, 0);
    Ok(())
}

/// Errors that quote no live flow, or a packet we did not send to the
/// error's destination, and echo requests go to the kernel untouched.
pub fn other_icmp_goes_to_the_kernel() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let (be, snat_port) = handshake(&mut dp, 40102)?;
    let unknown = Ends {
        sport: 80,
        dport: 40999,
        ..from_client(0, 0)
    };
    let unknown = Ends {
        src: VIP,
        dst: CLIENT,
        ..unknown
    };
    // Quotes the flow but not as sent from the error's destination.
    let twisted = Ends {
        smac: lab.b0_mac,
        dmac: CLIENT_MAC,
        src: be,
        dst: CLIENT,
        sport: snat_port,
        dport: 40102,
    };
    let echo = Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 1 });
    let cases = [
        (FRAG_NEEDED, tcp(unknown, ACK, b""), Reason::PassIcmpNoFlow),
        (FRAG_NEEDED, tcp(twisted, ACK, b""), Reason::PassIcmpNoFlow),
        (echo, tcp(unknown, ACK, b""), Reason::PassOtherProto),
    ];
    for (kind, quoted, reason) in cases {
        let pkt = icmp_frame(
            ([2, 0, 0, 0, 0, 0xfe], lab.c0_mac),
            (ROUTER_C, VIP),
            kind,
            &quoted,
            576,
        );
        let before = dp.reason(reason)?;
        let (act, out) = run(&mut dp, &pkt);
        ensure_eq!(act, XDP_PASS);
        ensure_eq!(out, pkt);
        ensure_eq!(dp.reason(reason)?, before + 1, "{reason:?}");
    }
    Ok(())
}

/// A client's "fragmentation needed" announcing an MTU under 1280 is not
/// sent on to the backend, which would apply it to every client behind the
/// shared SNAT address; 1280 itself is.
pub fn tiny_path_mtus_stay_away_from_the_backends() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    handshake(&mut dp, 40103)?;
    let restored = restored_to(40103);
    for (mtu, act) in [(552, XDP_DROP), (1279, XDP_DROP), (1280, XDP_REDIRECT)] {
        let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        });
        let pkt = icmp_frame(
            ([2, 0, 0, 0, 0, 0xfe], lab.c0_mac),
            (ROUTER_C, VIP),
            kind,
            &tcp(restored, ACK, &[0; 1300]),
            576,
        );
        ensure_eq!(run(&mut dp, &pkt).0, act, "MTU {mtu}");
    }
    ensure_eq!(dp.reason(Reason::DropIcmpSmallMtu)?, 2);
    Ok(())
}
