//! Test packets, built and checked with etherparse, independently of the
//! data path's own parsing.

use std::net::Ipv4Addr;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

/// TCP flags for [`tcp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// Ethernet + IPv4 endpoints of a test packet.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// An Ethernet/IPv4/TCP packet with `payload`.
pub fn tcp(e: Ends, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(e.smac, e.dmac)
        .ipv4(e.src.octets(), e.dst.octets(), 64)
        .tcp(e.sport, e.dport, 1000, 64240);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(1);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// An Ethernet/IPv4/UDP packet with `payload`.
pub fn udp(e: Ends, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(e.smac, e.dmac)
        .ipv4(e.src.octets(), e.dst.octets(), 64)
        .udp(e.sport, e.dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// Sets the UDP checksum of an untagged packet to 0 ("none").
pub fn zero_udp_checksum(p: &mut [u8]) {
    p[40] = 0;
    p[41] = 0;
}

/// Inserts an 802.1Q tag with `vid` after the MACs.
pub fn vlan_tag(p: &[u8], vid: u16) -> Vec<u8> {
    let mut v = p[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&p[12..]);
    v
}

/// What a test checks of a packet, parsed by etherparse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// The UDP checksum field (0 means none); `None` for TCP.
    pub udp_check: Option<u16>,
}

/// Parses `p` and asserts that its IPv4 and L4 checksums are valid.
pub fn parse_valid(p: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(p).expect("output parses");
    let eth = match h.link {
        Some(etherparse::LinkHeader::Ethernet2(e)) => e,
        other => panic!("no Ethernet: {other:?}"),
    };
    let vlan = match h.vlan {
        Some(etherparse::VlanHeader::Single(v)) => Some(v.vlan_id.value()),
        None => None,
        other => panic!("unexpected vlan {other:?}"),
    };
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    let payload = h.payload.slice();
    let (sport, dport, udp_check) = match h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(&ip, payload).unwrap(),
                "TCP checksum"
            );
            (t.source_port, t.destination_port, None)
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(&ip, payload).unwrap(),
                    "UDP checksum"
                );
            }
            (u.source_port, u.destination_port, Some(u.checksum))
        }
        other => panic!("not TCP/UDP: {other:?}"),
    };
    Seen {
        smac: eth.source,
        dmac: eth.destination,
        vlan,
        src: Ipv4Addr::from(ip.source),
        dst: Ipv4Addr::from(ip.destination),
        sport,
        dport,
        udp_check,
    }
}

/// A small xorshift generator: reproducible tests without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
