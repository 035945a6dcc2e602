//! Header parsing into typed views. Every pointer into the packet is made
//! here, after a bounds check against `data_end`, and every read or write
//! through one is an accessor of these views: the rest of the program never
//! touches packet memory directly.
//!
//! Parsing stops as early as it can decide: [`frame`] reads only what the
//! "is it ours?" lookup needs, and [`Frame::transport`] applies the policies
//! and reads the transport header of a packet that is ours.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, Reason, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// EtherType IPv4, as read from the wire in native order.
const ETH_P_IP: u16 = 0x0800u16.to_be();
/// EtherType 802.1Q, as read from the wire in native order.
const ETH_P_8021Q: u16 = 0x8100u16.to_be();
/// IPv4 "more fragments" flag and offset mask, network order.
const IP_MF_OFFSET: u16 = 0x3fffu16.to_be();
/// An IPv4 header without options.
const IPV4_HLEN: usize = 20;
/// Version 4, header length 5 words: the only IPv4 header forwarded.
const IPV4_PLAIN: u8 = 0x45;

/// ICMP types whose message quotes a packet of a flow.
const ICMP_DEST_UNREACH: u8 = 3;
/// See [`ICMP_DEST_UNREACH`].
const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable's code "fragmentation needed and DF set".
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP header, then the quoted IPv4 header, then at least 8 bytes of it.
const ICMP_HLEN: usize = 8;
/// Offset of the TCP checksum in its header: quoted only past 8 bytes.
const TCP_CHECK_OFF: usize = 16;

/// TCP flag bits, as in the header's flags byte.
pub const TCP_FIN: u8 = 0x01;
/// See [`TCP_FIN`].
pub const TCP_SYN: u8 = 0x02;
/// See [`TCP_FIN`].
pub const TCP_RST: u8 = 0x04;
/// See [`TCP_FIN`].
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
}

#[repr(C)]
struct Ipv4Hdr {
    vihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

/// The first 20 bytes of a TCP header.
#[repr(C)]
struct TcpHdr {
    ports: [u16; 2],
    seq: u32,
    ack: u32,
    /// Data offset (high nibble) and reserved bits.
    doff: u8,
    flags: u8,
    window: u16,
    check: u16,
    urg: u16,
}

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: u16,
    rest: u32,
}

#[repr(C)]
struct UdpHdr {
    ports: [u16; 2],
    len: u16,
    check: u16,
}

/// A pointer to a `T` at `off` bytes into the packet, if it fits.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The Ethernet header.
#[derive(Clone, Copy)]
pub struct Eth(*mut EthHdr);

impl Eth {
    /// Addresses the frame from `src` to `dst`.
    #[inline(always)]
    pub fn set_macs(self, src: [u8; 6], dst: [u8; 6]) {
        unsafe {
            (*self.0).dst = dst;
            (*self.0).src = src;
        }
    }
}

/// An IPv4 header (checked to have no options once [`Frame::transport`]
/// accepted it). Addresses are in wire order.
#[derive(Clone, Copy)]
pub struct Ipv4(*mut Ipv4Hdr);

impl Ipv4 {
    /// Source address.
    #[inline(always)]
    pub fn src(self) -> u32 {
        unsafe { (*self.0).src }
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst(self) -> u32 {
        unsafe { (*self.0).dst }
    }

    /// Type of service.
    #[inline(always)]
    pub fn tos(self) -> u8 {
        unsafe { (*self.0).tos }
    }

    /// Total length, host order.
    #[inline(always)]
    pub fn tot_len(self) -> u16 {
        u16::from_be(unsafe { (*self.0).tot_len })
    }

    /// Header checksum, as on the wire.
    #[inline(always)]
    pub fn check(self) -> u16 {
        unsafe { (*self.0).check }
    }

    /// Writes the header checksum.
    #[inline(always)]
    pub fn set_check(self, check: u16) {
        unsafe { (*self.0).check = check }
    }

    /// Writes the addresses; the checksum is the caller's to patch.
    #[inline(always)]
    pub fn set_addrs(self, src: u32, dst: u32) {
        unsafe {
            (*self.0).src = src;
            (*self.0).dst = dst;
        }
    }
}

/// The ports and checksum of a TCP or UDP header, and TCP's flags (0 for
/// UDP). Ports are in wire order.
#[derive(Clone, Copy)]
pub struct L4 {
    ports: *mut [u16; 2],
    check: *mut u16,
    /// TCP's flags byte; 0 for UDP.
    pub tcp_flags: u8,
}

impl L4 {
    /// Source and destination port.
    #[inline(always)]
    pub fn ports(self) -> [u16; 2] {
        unsafe { *self.ports }
    }

    /// Writes source and destination port.
    #[inline(always)]
    pub fn set_ports(self, ports: [u16; 2]) {
        unsafe { *self.ports = ports }
    }

    /// The L4 checksum, as on the wire (UDP: 0 is none).
    #[inline(always)]
    pub fn check(self) -> u16 {
        unsafe { *self.check }
    }

    /// Writes the L4 checksum.
    #[inline(always)]
    pub fn set_check(self, check: u16) {
        unsafe { *self.check = check }
    }
}

/// Ethernet (with at most one 802.1Q tag) and the fixed part of an IPv4
/// header: enough to ask whether the destination is ours.
#[derive(Clone, Copy)]
pub struct Frame {
    /// The Ethernet header.
    pub eth: Eth,
    /// The IPv4 header.
    pub ip: Ipv4,
    /// Offset of the IPv4 header.
    l3: usize,
}

/// A TCP or UDP packet addressed to one of our addresses, past the IPv4
/// policies.
pub struct Packet {
    /// The Ethernet header.
    pub eth: Eth,
    /// The IPv4 header.
    pub ip: Ipv4,
    /// The TCP or UDP header.
    pub l4: L4,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
}

/// An ICMP destination-unreachable or time-exceeded message addressed to
/// us, and the packet it quotes: an IPv4 header without options and the
/// first 8 bytes of TCP or UDP (the TCP checksum when quoted).
pub struct IcmpError {
    /// The Ethernet header.
    pub eth: Eth,
    /// The outer IPv4 header.
    pub ip: Ipv4,
    check: *mut u16,
    /// The quoted IPv4 header.
    pub inner: Ipv4,
    /// The quoted ports and transport checksum.
    pub inner_l4: L4,
    /// Whether the quote reaches the transport checksum.
    pub inner_check: bool,
    /// The quoted packet's protocol: `PROTO_TCP` or `PROTO_UDP`.
    pub inner_proto: u8,
    /// For "fragmentation needed", the next hop's MTU (host order); else 0.
    pub frag_mtu: u16,
}

impl IcmpError {
    /// The quoted packet's 5-tuple: a packet we sent.
    #[inline(always)]
    pub fn quoted(&self) -> FlowKey {
        let [sport, dport] = self.inner_l4.ports();
        FlowKey::new(
            self.inner.src(),
            self.inner.dst(),
            sport,
            dport,
            self.inner_proto,
        )
    }

    /// The ICMP checksum, as on the wire.
    #[inline(always)]
    pub fn check(&self) -> u16 {
        unsafe { *self.check }
    }

    /// Writes the ICMP checksum.
    #[inline(always)]
    pub fn set_check(&self, check: u16) {
        unsafe { *self.check = check }
    }
}

/// The frame's Ethernet and IPv4 headers; anything else (ARP, IPv6, a
/// frame too short for them) is not ours.
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Result<Frame, Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Reason::PassNotOurs)?;
    let mut l3 = ETH_HLEN;
    let mut proto = unsafe { (*eth).proto };
    if proto == ETH_P_8021Q {
        let tag = ptr_at::<[u16; 2]>(ctx, ETH_HLEN).ok_or(Reason::PassNotOurs)?;
        proto = unsafe { (*tag)[1] };
        l3 = ETH_HLEN + VLAN_HLEN;
    }
    if proto != ETH_P_IP {
        return Err(Reason::PassNotOurs);
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, l3).ok_or(Reason::PassNotOurs)?;
    Ok(Frame {
        eth: Eth(eth),
        ip: Ipv4(ip),
        l3,
    })
}

impl Frame {
    /// The IPv4 policies for traffic to us: no options, no fragments.
    /// Returns the total length, which the caller checks against the frame
    /// after its own bounds checks (see [`Frame::transport`]).
    #[inline(always)]
    fn policies(&self) -> Result<usize, Reason> {
        let ip = self.ip.0;
        let (vihl, frag, tot_len) = unsafe { ((*ip).vihl, (*ip).frag_off, (*ip).tot_len) };
        if vihl >> 4 != 4 || vihl & 0xf < 5 {
            return Err(Reason::DropMalformed);
        }
        if vihl != IPV4_PLAIN {
            return Err(Reason::DropIpOptions);
        }
        if frag & IP_MF_OFFSET != 0 {
            return Err(Reason::DropFragment);
        }
        Ok(u16::from_be(tot_len) as usize)
    }

    /// The packet, if its IPv4 header passes the policies for traffic to
    /// us and it carries a whole TCP or UDP header. Other protocols give
    /// `PassOtherProto` (ICMP: see [`Frame::icmp_error`]).
    #[inline(always)]
    pub fn transport(self, ctx: &XdpContext) -> Result<Packet, Reason> {
        let tot_len = self.policies()?;
        let proto = unsafe { (*self.ip.0).proto };
        // The whole datagram must be in the frame. Checked after the
        // transport header's own bounds: LLVM would drop those as implied
        // by this check, and the verifier cannot follow that.
        let fits = || tot_len >= IPV4_HLEN && ctx.data() + self.l3 + tot_len <= ctx.data_end();
        let l4_off = self.l3 + IPV4_HLEN;
        let l4 = match proto {
            PROTO_TCP => {
                let tcp = ptr_at::<TcpHdr>(ctx, l4_off).ok_or(Reason::DropMalformed)?;
                // The header with its options must be in the datagram.
                let doff = (unsafe { (*tcp).doff } >> 4) as usize;
                if !fits() || doff < 5 || tot_len < IPV4_HLEN + doff * 4 {
                    return Err(Reason::DropMalformed);
                }
                L4 {
                    ports: unsafe { core::ptr::addr_of_mut!((*tcp).ports) },
                    check: unsafe { core::ptr::addr_of_mut!((*tcp).check) },
                    tcp_flags: unsafe { (*tcp).flags },
                }
            }
            PROTO_UDP => {
                let udp = ptr_at::<UdpHdr>(ctx, l4_off).ok_or(Reason::DropMalformed)?;
                // UDP's own length: at least its header, at most the datagram
                // (shorter leaves trailing bytes, as a receiver allows).
                let len = u16::from_be(unsafe { (*udp).len }) as usize;
                if !fits() || len < 8 || IPV4_HLEN + len > tot_len {
                    return Err(Reason::DropMalformed);
                }
                L4 {
                    ports: unsafe { core::ptr::addr_of_mut!((*udp).ports) },
                    check: unsafe { core::ptr::addr_of_mut!((*udp).check) },
                    tcp_flags: 0,
                }
            }
            _ if !fits() => return Err(Reason::DropMalformed),
            _ => return Err(Reason::PassOtherProto),
        };
        Ok(Packet {
            eth: self.eth,
            ip: self.ip,
            l4,
            proto,
        })
    }

    /// The ICMP error this frame carries, past the same policies. Other
    /// ICMP messages (echo requests) give `PassOtherProto`; a quote that is
    /// not a plain IPv4 header with 8 bytes of TCP or UDP gives
    /// `PassIcmpNoFlow`.
    #[inline(always)]
    pub fn icmp_error(self, ctx: &XdpContext) -> Result<IcmpError, Reason> {
        let tot_len = self.policies()?;
        if unsafe { (*self.ip.0).proto } != PROTO_ICMP {
            return Err(Reason::PassOtherProto);
        }
        let off = self.l3 + IPV4_HLEN;
        let icmp = ptr_at::<IcmpHdr>(ctx, off).ok_or(Reason::DropMalformed)?;
        let (kind, code, rest) = unsafe { ((*icmp).kind, (*icmp).code, (*icmp).rest) };
        if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
            return Err(Reason::PassOtherProto);
        }
        // The MTU is the low half of the rest of the header (RFC 1191).
        let frag_mtu = if kind == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED {
            u32::from_be(rest) as u16
        } else {
            0
        };
        let inner = ptr_at::<Ipv4Hdr>(ctx, off + ICMP_HLEN).ok_or(Reason::PassIcmpNoFlow)?;
        let l4_off = off + ICMP_HLEN + IPV4_HLEN;
        // Ports, then UDP's length and checksum or TCP's sequence number.
        let l4 = ptr_at::<UdpHdr>(ctx, l4_off).ok_or(Reason::PassIcmpNoFlow)?;
        let end = self.l3 + tot_len;
        // Only when the datagram quotes it (not in a frame's padding).
        let tcp_check = if l4_off + TCP_CHECK_OFF + 2 <= end {
            ptr_at::<u16>(ctx, l4_off + TCP_CHECK_OFF)
        } else {
            None
        };
        // Bounds above, the frame's length after (see `transport`).
        if tot_len < IPV4_HLEN + ICMP_HLEN || ctx.data() + end > ctx.data_end() {
            return Err(Reason::DropMalformed);
        }
        let (vihl, proto) = unsafe { ((*inner).vihl, (*inner).proto) };
        if vihl != IPV4_PLAIN || l4_off + 8 > end {
            return Err(Reason::PassIcmpNoFlow);
        }
        let (check, inner_check) = match proto {
            PROTO_UDP => (unsafe { core::ptr::addr_of_mut!((*l4).check) }, true),
            PROTO_TCP => match tcp_check {
                Some(c) => (c, true),
                // Not quoted: never written.
                None => (core::ptr::null_mut(), false),
            },
            _ => return Err(Reason::PassIcmpNoFlow),
        };
        Ok(IcmpError {
            eth: self.eth,
            ip: self.ip,
            check: unsafe { core::ptr::addr_of_mut!((*icmp).check) },
            inner: Ipv4(inner),
            inner_l4: L4 {
                ports: unsafe { core::ptr::addr_of_mut!((*l4).ports) },
                check,
                tcp_flags: 0,
            },
            inner_check,
            inner_proto: proto,
            frag_mtu,
        })
    }
}

impl Packet {
    /// The packet's 5-tuple as it arrived.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        let [sport, dport] = self.l4.ports();
        FlowKey::new(self.ip.src(), self.ip.dst(), sport, dport, self.proto)
    }
}
