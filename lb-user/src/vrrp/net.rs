//! The VRRP instances' view of the network: a raw IP socket per interface
//! for adverts, a packet socket for gratuitous ARPs, and netlink for links
//! and addresses.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
    link::{LinkAttribute, LinkFlags},
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{arp, wire};

/// A raw socket speaking VRRP on one interface. Adverts carry our own
/// IPv4 header (TOS, TTL and no DF, as keepalived sends them).
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens the socket, bound to `ifname`, and joins 224.0.0.18 there.
    pub fn open(ifname: &str, ifindex: u32) -> Result<VrrpSocket> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(wire::PROTO_VRRP as i32)),
        )
        .context("raw VRRP socket (needs CAP_NET_RAW)")?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(ifname.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {ifname}"))?;
        s.join_multicast_v4_n(&wire::GROUP, &InterfaceIndexOrAddress::Index(ifindex))
            .with_context(|| format!("joining {} on {ifname}", wire::GROUP))?;
        s.set_multicast_loop_v4(false)?;
        s.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor, which stays open and the
        // same for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(VrrpSocket { fd })
    }

    /// Receives one IP datagram, header included.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: recv only writes initialised bytes into the buffer,
            // which is viewed as MaybeUninit for the call.
            let uninit = unsafe {
                std::slice::from_raw_parts_mut(
                    buf.as_mut_ptr() as *mut std::mem::MaybeUninit<u8>,
                    buf.len(),
                )
            };
            match guard.try_io(|s| s.get_ref().recv(uninit)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a datagram that starts with its IPv4 header.
    pub fn send(&self, datagram: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let to = std::net::SocketAddrV4::new(dst, 0);
        self.fd.get_ref().send_to(datagram, &to.into()).map(|_| ())
    }
}

/// Sends gratuitous ARPs.
pub struct ArpSender(crate::sys::PacketSender);

impl ArpSender {
    /// Opens the packet socket (needs CAP_NET_RAW).
    pub fn open() -> Result<ArpSender> {
        let s = crate::sys::PacketSender::open().context("packet socket for gratuitous ARP")?;
        Ok(ArpSender(s))
    }

    /// Broadcasts a gratuitous ARP for `ip` from `mac` on `ifindex`.
    pub fn announce(&self, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
        let mut frame = [0u8; arp::FRAME_LEN];
        let n = arp::emit_gratuitous(&mut frame, mac, ip);
        self.0
            .send(ifindex, [0xff; 6], arp::ETHERTYPE_ARP, &frame[..n])
    }
}

/// Links and addresses through rtnetlink.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// What VRRP needs to know about an interface.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up and running (carrier present).
    pub up: bool,
}

impl Netlink {
    /// Opens a connection served by a task on the current runtime.
    pub fn open() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Index and MAC address of `name`.
    pub async fn link(&self, name: &str) -> Result<Link> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = links
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("no interface {name}"))?;
        let mut mac = [0u8; 6];
        for a in &msg.attributes {
            if let LinkAttribute::Address(b) = a {
                if b.len() == 6 {
                    mac.copy_from_slice(b);
                }
            }
        }
        let flags = msg.header.flags;
        Ok(Link {
            index: msg.header.index,
            mac,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        })
    }

    /// The IPv4 addresses on a link as (address, prefix, primary).
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8, bool)>> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.try_next().await? {
            let secondary = m.header.flags.contains(AddressHeaderFlags::Secondary)
                || m.attributes.iter().any(
                    |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Secondary)),
                );
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) = a
                {
                    if !out.iter().any(|(x, _, _)| x == ip) {
                        out.push((*ip, m.header.prefix_len, !secondary));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds `ip/prefix` to a link; already present is fine.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {ip}/{prefix}")),
        }
    }

    /// Removes `ip` from a link; absent is fine. Returns whether it was there.
    pub async fn del_address(&self, index: u32, ip: Ipv4Addr) -> Result<bool> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        let mut found = false;
        while let Some(m) = s.try_next().await? {
            match self.handle.address().del(m).execute().await {
                Ok(()) => found = true,
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(e) => return Err(e).with_context(|| format!("removing {ip}")),
            }
        }
        Ok(found)
    }
}
