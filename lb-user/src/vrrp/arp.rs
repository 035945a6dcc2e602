//! Gratuitous ARP frames (Ethernet + ARP for IPv4), as a typed view over bytes.
//!
//! A new MASTER announces each virtual address with a broadcast request
//! "who-has VIP tell VIP", the form keepalived sends, so that switches and
//! neighbours move the address to its MAC at once.

use std::net::Ipv4Addr;

/// Ethernet + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 42;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
const OP_REQUEST: u16 = 1;

/// A view over an Ethernet frame carrying ARP.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps after checking the frame is long enough and is IPv4-over-Ethernet ARP.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let f = Frame { buffer };
        let b = f.buffer.as_ref();
        (b.len() >= FRAME_LEN
            && u16::from_be_bytes([b[12], b[13]]) == ETHERTYPE_ARP
            && b[14..20] == [0, 1, 8, 0, 6, 4])
        .then_some(f)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn eth_dst(&self) -> [u8; 6] {
        self.b()[0..6].try_into().unwrap_or_default()
    }
    pub fn eth_src(&self) -> [u8; 6] {
        self.b()[6..12].try_into().unwrap_or_default()
    }
    pub fn operation(&self) -> u16 {
        u16::from_be_bytes([self.b()[20], self.b()[21]])
    }
    pub fn sender_mac(&self) -> [u8; 6] {
        self.b()[22..28].try_into().unwrap_or_default()
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[28], b[29], b[30], b[31])
    }
    pub fn target_mac(&self) -> [u8; 6] {
        self.b()[32..38].try_into().unwrap_or_default()
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[38], b[39], b[40], b[41])
    }
    /// A gratuitous request announces its own address.
    pub fn is_gratuitous(&self) -> bool {
        self.operation() == OP_REQUEST && self.sender_ip() == self.target_ip()
    }
}

/// Writes a gratuitous ARP request for `ip` at `mac` into `buf`
/// (at least [`FRAME_LEN`] bytes) and returns its length.
pub fn emit_gratuitous(buf: &mut [u8], mac: [u8; 6], ip: Ipv4Addr) -> usize {
    let b = &mut buf[..FRAME_LEN];
    b[0..6].copy_from_slice(&BROADCAST);
    b[6..12].copy_from_slice(&mac);
    b[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // Hardware Ethernet, protocol IPv4, lengths 6 and 4.
    b[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    b[20..22].copy_from_slice(&OP_REQUEST.to_be_bytes());
    b[22..28].copy_from_slice(&mac);
    b[28..32].copy_from_slice(&ip.octets());
    b[32..38].copy_from_slice(&BROADCAST);
    b[38..42].copy_from_slice(&ip.octets());
    FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let mut buf = [0u8; 64];
        let n = emit_gratuitous(&mut buf, mac, ip);
        let f = Frame::new_checked(&buf[..n]).unwrap();
        assert!(f.is_gratuitous());
        assert_eq!((f.sender_mac(), f.sender_ip(), f.eth_src()), (mac, ip, mac));
        assert_eq!((f.eth_dst(), f.target_mac()), ([0xff; 6], [0xff; 6]));
        for len in 0..n {
            assert!(Frame::new_checked(&buf[..len]).is_none());
        }
    }
}
