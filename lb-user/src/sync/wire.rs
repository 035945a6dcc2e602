//! Connection-sync messages on the wire: one UDP datagram carries a header
//! and up to [`MAX_ENTRIES`] flows.
//!
//! ```text
//! header  0 version  1 sync id  2-3 count  4-7 zero
//! entry   0-3 client  4-7 VIP  8-11 backend  12-15 SNAT address
//!         16-17 client port  18-19 VIP port  20-21 backend port
//!         22-23 SNAT port  24 protocol  25 flags (bit 0: closed)  26-27 zero
//! ```
//!
//! All fields are in network byte order. [`Message::new_checked`] accepts a
//! buffer only when the count fits it, so no accessor reads past the end.

use std::net::Ipv4Addr;

use lb_common::{Conn, FlowKey, SyncEntry, CT_FIN, CT_SYNCED};

use crate::sys::{addr_of as addr, be_addr as raw};

/// The only version.
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 28;
/// Entries per datagram: the message stays under a 1,500-byte MTU.
pub const MAX_ENTRIES: usize = 48;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header or its count says.
    Truncated,
    /// Not [`VERSION`].
    Version(u8),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated"),
            Error::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// One synced flow, with ports in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub vip: Ipv4Addr,
    pub vip_port: u16,
    pub backend: Ipv4Addr,
    pub backend_port: u16,
    pub snat: Ipv4Addr,
    pub snat_port: u16,
    pub proto: u8,
    /// The flow closed (FIN or RST) on the sender.
    pub closed: bool,
}

impl Entry {
    /// The flow the data path reported.
    pub fn from_ring(e: &SyncEntry) -> Entry {
        Entry {
            client: addr(e.key.src_addr),
            client_port: u16::from_be(e.key.src_port),
            vip: addr(e.key.dst_addr),
            vip_port: u16::from_be(e.key.dst_port),
            backend: addr(e.conn.backend_addr),
            backend_port: u16::from_be(e.conn.backend_port),
            snat: addr(e.conn.snat_addr),
            snat_port: u16::from_be(e.conn.snat_port),
            proto: e.key.proto,
            closed: e.conn.flags & CT_FIN != 0,
        }
    }

    /// The `CONNS` key: client → VIP.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(
            raw(self.client),
            raw(self.vip),
            self.client_port.to_be(),
            self.vip_port.to_be(),
            self.proto,
        )
    }

    /// The `CONNS` value, with the receiver's ids and time. It is marked
    /// synced: should this node serve the flow and see it close, it tells
    /// the peer.
    pub fn conn(&self, backend_id: u32, service_id: u32, now: u64) -> Conn {
        Conn {
            backend_addr: raw(self.backend),
            snat_addr: raw(self.snat),
            backend_port: self.backend_port.to_be(),
            snat_port: self.snat_port.to_be(),
            backend_id,
            service_id,
            flags: CT_SYNCED,
            last_seen: now,
        }
    }

    fn emit(&self, b: &mut [u8; ENTRY_LEN]) {
        b[0..4].copy_from_slice(&self.client.octets());
        b[4..8].copy_from_slice(&self.vip.octets());
        b[8..12].copy_from_slice(&self.backend.octets());
        b[12..16].copy_from_slice(&self.snat.octets());
        for (i, p) in [
            self.client_port,
            self.vip_port,
            self.backend_port,
            self.snat_port,
        ]
        .into_iter()
        .enumerate()
        {
            b[16 + 2 * i..18 + 2 * i].copy_from_slice(&p.to_be_bytes());
        }
        b[24] = self.proto;
        b[25] = self.closed as u8;
        b[26..].fill(0);
    }

    fn parse(b: &[u8; ENTRY_LEN]) -> Entry {
        let a = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let p = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Entry {
            client: a(0),
            vip: a(4),
            backend: a(8),
            snat: a(12),
            client_port: p(16),
            vip_port: p(18),
            backend_port: p(20),
            snat_port: p(22),
            proto: b[24],
            closed: b[25] & 1 != 0,
        }
    }
}

/// A view over one received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    b: &'a [u8],
}

impl<'a> Message<'a> {
    /// Checks the version and that every counted entry is present; bytes
    /// after the last entry are ignored, as padding.
    pub fn new_checked(b: &'a [u8]) -> Result<Message<'a>, Error> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] != VERSION {
            return Err(Error::Version(b[0]));
        }
        let m = Message { b };
        if b.len() < HEADER_LEN + m.count() * ENTRY_LEN {
            return Err(Error::Truncated);
        }
        Ok(m)
    }

    /// The sender's sync id.
    pub fn sync_id(&self) -> u8 {
        self.b[1]
    }

    /// Number of entries.
    pub fn count(&self) -> usize {
        u16::from_be_bytes([self.b[2], self.b[3]]) as usize
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + 'a {
        let n = self.count();
        self.b[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .take(n)
            .filter_map(|c| c.try_into().ok().map(Entry::parse))
    }
}

/// Writes a message with `entries` (at most [`MAX_ENTRIES`] are taken) into
/// `out`, replacing its contents; returns how many entries went in.
pub fn emit(sync_id: u8, entries: &[Entry], out: &mut Vec<u8>) -> usize {
    let n = entries.len().min(MAX_ENTRIES);
    out.clear();
    out.extend_from_slice(&[VERSION, sync_id]);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for e in &entries[..n] {
        let mut b = [0u8; ENTRY_LEN];
        e.emit(&mut b);
        out.extend_from_slice(&b);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> Entry {
        Entry {
            client: Ipv4Addr::new(192, 0, 2, i),
            client_port: 40000 + i as u16,
            vip: Ipv4Addr::new(10, 0, 0, 50),
            vip_port: 80,
            backend: Ipv4Addr::new(10, 0, 1, 3),
            backend_port: 8080,
            snat: Ipv4Addr::new(10, 0, 0, 50),
            snat_port: 20000 + i as u16,
            proto: lb_common::PROTO_TCP,
            closed: i.is_multiple_of(2),
        }
    }

    #[test]
    fn round_trip_and_byte_layout() {
        let sent: Vec<Entry> = (1..=3).map(entry).collect();
        let mut buf = Vec::new();
        assert_eq!(emit(7, &sent, &mut buf), 3);
        assert_eq!(buf.len(), HEADER_LEN + 3 * ENTRY_LEN);
        assert_eq!(&buf[..8], &[1, 7, 0, 3, 0, 0, 0, 0]);
        // First entry: client 192.0.2.1:40001, SNAT port 20001 = 0x4e21.
        assert_eq!(&buf[8..12], &[192, 0, 2, 1]);
        assert_eq!(&buf[24..26], &40001u16.to_be_bytes());
        assert_eq!(&buf[30..32], &[0x4e, 0x21]);
        assert_eq!(buf[32], 6);
        assert_eq!(buf[33], 0);
        assert_eq!(buf[33 + ENTRY_LEN], 1, "the second entry is closed");
        let m = Message::new_checked(&buf).unwrap();
        assert_eq!(m.sync_id(), 7);
        assert_eq!(m.entries().collect::<Vec<_>>(), sent);
    }

    #[test]
    fn a_message_holds_at_most_max_entries() {
        let many: Vec<Entry> = (0..100).map(entry).collect();
        let mut buf = Vec::new();
        assert_eq!(emit(0, &many, &mut buf), MAX_ENTRIES);
        assert!(
            buf.len() <= 1472,
            "{} bytes do not fit one frame",
            buf.len()
        );
        assert_eq!(Message::new_checked(&buf).unwrap().entries().count(), 48);
    }

    #[test]
    fn ring_records_convert_both_ways() {
        let e = entry(9);
        let mut ring = SyncEntry {
            key: e.key(),
            conn: e.conn(3, 4, 5),
        };
        assert_eq!(Entry::from_ring(&ring), Entry { closed: false, ..e });
        ring.conn.flags = CT_FIN;
        assert_eq!(Entry::from_ring(&ring), Entry { closed: true, ..e });
        assert_eq!(ring.key.src_port, 40009u16.to_be());
        assert_eq!(ring.conn.snat_port, 20009u16.to_be());
    }

    #[test]
    fn short_or_foreign_input_is_refused_without_panic() {
        let mut buf = Vec::new();
        emit(1, &[entry(1), entry(2)], &mut buf);
        for len in 0..buf.len() {
            assert_eq!(
                Message::new_checked(&buf[..len]).err(),
                Some(Error::Truncated),
                "{len} bytes"
            );
        }
        let mut v2 = buf.clone();
        v2[0] = 2;
        assert_eq!(Message::new_checked(&v2).err(), Some(Error::Version(2)));
        // A count beyond the datagram, and random bytes, never panic.
        let mut big = buf.clone();
        big[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Message::new_checked(&big).err(), Some(Error::Truncated));
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            if let Ok(m) = Message::new_checked(&junk) {
                assert!(m.entries().count() <= m.count());
            }
        }
    }
}
