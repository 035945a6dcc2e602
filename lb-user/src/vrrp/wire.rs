//! VRRP advertisements on the wire (RFC 3768 v2, RFC 5798 v3, IPv4), and the
//! IPv4 header around them.
//!
//! [`Packet`] is a typed view over bytes: its accessors never read past the
//! buffer once [`Packet::new_checked`] has accepted it. [`Advert`] is the
//! parsed, validated form, and emits exactly what keepalived emits for the
//! same settings.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// The VRRP multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Adverts are sent, and must arrive, with this TTL.
pub const TTL: u8 = 255;
/// Network-control precedence, as keepalived sends.
pub const TOS: u8 = 0xc0;
/// VRRP packet type: the only one defined.
const TYPE_ADVERT: u8 = 1;
/// v2 simple-password authentication.
const AUTH_PASS: u8 = 1;
/// Length of the v2 authentication data.
pub const AUTH_LEN: usize = 8;
const HEADER_LEN: usize = 8;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header or its address list says.
    Truncated,
    /// Not version 2 or 3.
    Version(u8),
    /// Not an advertisement.
    Type(u8),
    /// An authentication type other than none or PASS.
    AuthType(u8),
    /// The checksum does not match, with or without the pseudo-header.
    Checksum,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated"),
            Error::Version(v) => write!(f, "version {v}"),
            Error::Type(t) => write!(f, "type {t} is not an advertisement"),
            Error::AuthType(t) => write!(f, "authentication type {t}"),
            Error::Checksum => f.write_str("bad checksum"),
        }
    }
}

/// A view over the bytes of a VRRP packet (without the IP header).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking: accessors may panic on short input.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps after checking the header and the address list fit.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + 4 * p.count() as usize {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// 2 or 3 for a valid packet.
    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }
    /// 1 for an advertisement.
    pub fn kind(&self) -> u8 {
        self.b()[0] & 0x0f
    }
    pub fn vrid(&self) -> u8 {
        self.b()[1]
    }
    pub fn priority(&self) -> u8 {
        self.b()[2]
    }
    /// Number of IPv4 addresses listed.
    pub fn count(&self) -> u8 {
        self.b()[3]
    }
    /// v2 only.
    pub fn auth_type(&self) -> u8 {
        self.b()[4]
    }
    /// v2 only: whole seconds.
    pub fn adver_int_v2(&self) -> u8 {
        self.b()[5]
    }
    /// v3 only: centiseconds, 12 bits.
    pub fn max_adver_int(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]]) & 0x0fff
    }
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }
    /// The `i`th listed address; `i < count()`.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let o = HEADER_LEN + 4 * i;
        let b = &self.b()[o..o + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// v2: the bytes after the address list, if any (the password).
    pub fn auth_data(&self) -> &[u8] {
        let o = HEADER_LEN + 4 * self.count() as usize;
        let b = self.b();
        &b[o.min(b.len())..(o + AUTH_LEN).min(b.len())]
    }
    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        self.m()[0] = version << 4 | (kind & 0x0f);
    }
    pub fn set_vrid(&mut self, v: u8) {
        self.m()[1] = v;
    }
    pub fn set_priority(&mut self, v: u8) {
        self.m()[2] = v;
    }
    pub fn set_count(&mut self, v: u8) {
        self.m()[3] = v;
    }
    /// v2: auth type and whole seconds; v3: reserved bits and centiseconds.
    pub fn set_word1(&mut self, v: u16) {
        self.m()[4..6].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.m()[6..8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_address(&mut self, i: usize, a: Ipv4Addr) {
        let o = HEADER_LEN + 4 * i;
        self.m()[o..o + 4].copy_from_slice(&a.octets());
    }
}

/// Authentication of a v2 advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// The password, NUL-padded to 8 bytes.
    Pass([u8; AUTH_LEN]),
}

impl Auth {
    /// PASS with `password` (at most 8 bytes; longer is cut, as keepalived does).
    pub fn pass(password: &str) -> Auth {
        let mut p = [0u8; AUTH_LEN];
        let b = password.as_bytes();
        let n = b.len().min(AUTH_LEN);
        p[..n].copy_from_slice(&b[..n]);
        Auth::Pass(p)
    }
}

/// Which checksum form a v3 packet used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumForm {
    /// Over the VRRP packet only (v2, and RFC 9568's tolerated v3 form).
    Plain,
    /// Over the IPv4 pseudo-header and the packet (RFC 5798).
    PseudoHeader,
}

/// A parsed advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// The advertisement interval in centiseconds (v2: seconds × 100).
    pub interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
    /// Always `None` for v3.
    pub auth: Auth,
}

impl Advert {
    /// Parses and validates the checksum; `src` and `dst` are the IPv4
    /// addresses it came with (for the v3 pseudo-header).
    pub fn parse<T: AsRef<[u8]>>(
        p: &Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(Advert, ChecksumForm), Error> {
        if p.kind() != TYPE_ADVERT {
            return Err(Error::Type(p.kind()));
        }
        let n = p.count() as usize;
        let addresses = (0..n).map(|i| p.address(i)).collect();
        let bytes = p.as_bytes();
        match p.version() {
            2 => {
                // The checksum covers the packet as sent, password included.
                let used = &bytes[..bytes.len().min(HEADER_LEN + 4 * n + AUTH_LEN)];
                if checksum(&[used]) != 0 {
                    return Err(Error::Checksum);
                }
                let auth = match p.auth_type() {
                    0 => Auth::None,
                    AUTH_PASS => {
                        let d = p.auth_data();
                        if d.len() < AUTH_LEN {
                            return Err(Error::Truncated);
                        }
                        let mut a = [0u8; AUTH_LEN];
                        a.copy_from_slice(d);
                        Auth::Pass(a)
                    }
                    t => return Err(Error::AuthType(t)),
                };
                let advert = Advert {
                    version: 2,
                    vrid: p.vrid(),
                    priority: p.priority(),
                    interval_cs: p.adver_int_v2() as u16 * 100,
                    addresses,
                    auth,
                };
                Ok((advert, ChecksumForm::Plain))
            }
            3 => {
                // Only the advertised bytes count: anything after the list
                // is padding the checksum does not cover.
                let used = &bytes[..HEADER_LEN + 4 * n];
                let form = if checksum(&[&pseudo_header(src, dst, used.len()), used]) == 0 {
                    ChecksumForm::PseudoHeader
                } else if checksum(&[used]) == 0 {
                    ChecksumForm::Plain
                } else {
                    return Err(Error::Checksum);
                };
                let advert = Advert {
                    version: 3,
                    vrid: p.vrid(),
                    priority: p.priority(),
                    interval_cs: p.max_adver_int(),
                    addresses,
                    auth: Auth::None,
                };
                Ok((advert, form))
            }
            v => Err(Error::Version(v)),
        }
    }

    /// Bytes [`Advert::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let v2_auth = if self.version == 2 { AUTH_LEN } else { 0 };
        HEADER_LEN + 4 * self.addresses.len() + v2_auth
    }

    /// Writes the packet into `buf` (at least [`Advert::buffer_len`] bytes)
    /// with the checksum keepalived computes: v3 over the pseudo-header.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> usize {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf.fill(0);
        let mut p = Packet::new_unchecked(&mut *buf);
        p.set_version_kind(self.version, TYPE_ADVERT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_count(self.addresses.len() as u8);
        for (i, a) in self.addresses.iter().enumerate() {
            p.set_address(i, *a);
        }
        let sum = if self.version == 2 {
            let secs = (self.interval_cs / 100).min(255);
            let auth_type = match self.auth {
                Auth::None => 0,
                Auth::Pass(_) => AUTH_PASS,
            };
            p.set_word1((auth_type as u16) << 8 | secs);
            if let Auth::Pass(pw) = self.auth {
                buf[len - AUTH_LEN..].copy_from_slice(&pw);
            }
            checksum(&[buf])
        } else {
            Packet::new_unchecked(&mut *buf).set_word1(self.interval_cs & 0x0fff);
            checksum(&[&pseudo_header(src, dst, len), buf])
        };
        Packet::new_unchecked(&mut *buf).set_checksum(sum);
        len
    }
}

/// The IPv4 pseudo-header of a VRRP packet of `len` bytes.
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&src.octets());
    h[4..8].copy_from_slice(&dst.octets());
    h[9] = PROTO_VRRP;
    h[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    h
}

/// The Internet checksum over the concatenation of `parts` (each of even
/// length but the last). Over data that holds a correct checksum it is 0.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        if let [last] = chunks.remainder() {
            sum += (*last as u32) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an IPv4 header a VRRP receiver checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    /// Offset of the payload.
    pub header_len: usize,
    /// Payload bytes the header claims, bounded by what arrived.
    pub payload_len: usize,
}

/// Reads the IPv4 header at the start of `b`, as a raw socket delivers it.
pub fn parse_ipv4(b: &[u8]) -> Result<Ipv4Info, Error> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return Err(Error::Truncated);
    }
    let header_len = (b[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([b[2], b[3]]) as usize;
    if header_len < 20 || b.len() < header_len || total < header_len {
        return Err(Error::Truncated);
    }
    Ok(Ipv4Info {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        ttl: b[8],
        protocol: b[9],
        header_len,
        payload_len: total.min(b.len()) - header_len,
    })
}

/// Writes the 20-byte IPv4 header keepalived puts on an advert: TOS 0xc0,
/// TTL 255, no fragmentation flags. The kernel fills in the checksum.
pub fn emit_ipv4(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, id: u16, payload: usize) {
    let h = &mut buf[..20];
    h.fill(0);
    h[0] = 0x45;
    h[1] = TOS;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = TTL;
    h[9] = PROTO_VRRP;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&[h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);

    #[test]
    fn v3_round_trip_and_both_checksum_forms() {
        let a = Advert {
            version: 3,
            vrid: 7,
            priority: 200,
            interval_cs: 10,
            addresses: vec![VIP, SRC],
            auth: Auth::None,
        };
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf, SRC, GROUP);
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(
            Advert::parse(&p, SRC, GROUP).unwrap(),
            (a.clone(), ChecksumForm::PseudoHeader)
        );
        // The same packet from another source fails the pseudo-header sum.
        assert_eq!(
            Advert::parse(&p, VIP, GROUP),
            Err(Error::Checksum),
            "the pseudo-header binds the source"
        );
        // RFC 9568's tolerated form: checksum over the packet alone.
        let mut plain = buf[..n].to_vec();
        plain[6..8].fill(0);
        let s = checksum(&[&plain]);
        plain[6..8].copy_from_slice(&s.to_be_bytes());
        let p = Packet::new_checked(&plain[..]).unwrap();
        assert_eq!(
            Advert::parse(&p, SRC, GROUP).unwrap(),
            (a, ChecksumForm::Plain)
        );
    }

    #[test]
    fn short_and_hostile_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(5798);
        let mut buf = [0u8; 96];
        for round in 0..200_000 {
            let len = rng.usize(0..buf.len());
            rng.fill(&mut buf[..len]);
            if round % 2 == 0 && len > 0 {
                // Plausible headers reach deeper code.
                buf[0] = if rng.bool() { 0x21 } else { 0x31 };
            }
            let _ = parse_ipv4(&buf[..len]);
            if let Ok(p) = Packet::new_checked(&buf[..len]) {
                let _ = p.auth_data();
                let _ = Advert::parse(&p, SRC, GROUP);
            }
        }
    }

    #[test]
    fn count_beyond_the_buffer_is_truncated() {
        let b = [0x21, 1, 100, 3, 0, 1, 0, 0, 10, 0, 0, 1];
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
    }
}
