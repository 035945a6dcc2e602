//! Links, addresses, routes and neighbours of a namespace, over rtnetlink.
//! Each call opens a netlink socket from a thread inside the namespace (a
//! socket belongs to the namespace it was made in) and runs to completion.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoVeth, LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        neighbour::{NeighbourAttribute, NeighbourState},
        route::RouteType,
    },
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::netns::Netns;

/// `A.B.C.D/N` (or a bare address: /32).
fn cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, n) = s.split_once('/').unwrap_or((s, "32"));
    let a = a.parse().with_context(|| format!("address {s:?}"))?;
    let n: u8 = n.parse().with_context(|| format!("prefix of {s:?}"))?;
    if n > 32 {
        bail!("prefix of {s:?}: over 32");
    }
    Ok((a, n))
}

/// The link `dev`.
async fn link(h: &Handle, dev: &str) -> Result<LinkMessage> {
    h.link()
        .get()
        .match_name(dev.to_string())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("no link {dev}"))?
        .ok_or_else(|| anyhow!("no link {dev}"))
}

/// The index of `dev`.
async fn index(h: &Handle, dev: &str) -> Result<u32> {
    Ok(link(h, dev).await?.header.index)
}

/// The attributes of `dev`.
async fn attributes(h: &Handle, dev: &str) -> Result<Vec<LinkAttribute>> {
    Ok(link(h, dev).await?.attributes)
}

impl Netns {
    /// Runs `op` with a netlink handle of this namespace.
    fn netlink<T, F>(&self, op: impl FnOnce(Handle) -> F + Send) -> Result<T>
    where
        T: Send,
        F: Future<Output = Result<T>>,
    {
        self.within(|| -> Result<T> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
                tokio::spawn(conn);
                op(handle).await
            })
        })?
        .with_context(|| format!("in namespace {}", self.name))
    }

    /// Sets `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.set_link(dev, true)
    }

    /// Sets `dev` down.
    pub fn link_down(&self, dev: &str) -> Result<()> {
        self.set_link(dev, false)
    }

    /// Sets `dev`'s MTU.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let m = LinkUnspec::new_with_index(i).mtu(mtu).build();
            h.link().set(m).execute().await?;
            Ok(())
        })
        .with_context(|| format!("MTU {mtu} on {dev}"))
    }

    fn set_link(&self, dev: &str, up: bool) -> Result<()> {
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let m = LinkUnspec::new_with_index(i);
            let m = if up { m.up() } else { m.down() };
            h.link().set(m.build()).execute().await?;
            Ok(())
        })
    }

    /// Creates the veth pair `a` here and `b` in `peer` (made there, so the
    /// two may share a name), both up.
    pub fn veth(&self, a: &str, peer: &Netns, b: &str) -> Result<()> {
        let peer_ns = std::fs::File::open(format!("/run/netns/{}", peer.name))
            .with_context(|| format!("netns {}", peer.name))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&peer_ns);
        self.netlink(|h| async move {
            let far = LinkUnspec::new_with_name(b).setns_by_fd(fd).build();
            let pair = LinkVeth::new(a, b)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(far)))
                .build();
            h.link()
                .add(pair)
                .execute()
                .await
                .with_context(|| format!("adding veth {a} here, {b} in {}", peer.name))?;
            Ok(())
        })?;
        drop(peer_ns);
        self.link_up(a)?;
        peer.link_up(b)
    }

    /// Creates bridge `name`, up; `snooping` off floods multicast to every
    /// port (VRRP adverts, sync datagrams).
    pub fn bridge(&self, name: &str, snooping: bool) -> Result<()> {
        self.netlink(|h| async move {
            let mut b = LinkBridge::new(name);
            if !snooping {
                b = b.mcast_snooping(false);
            }
            h.link().add(b.up().build()).execute().await?;
            Ok(())
        })
        .with_context(|| format!("adding bridge {name}"))
    }

    /// Makes `dev` a port of bridge `bridge`, and sets it up.
    pub fn set_master(&self, dev: &str, bridge: &str) -> Result<()> {
        self.netlink(|h| async move {
            let (i, b) = (index(&h, dev).await?, index(&h, bridge).await?);
            h.link()
                .set(LinkUnspec::new_with_index(i).controller(b).up().build())
                .execute()
                .await?;
            Ok(())
        })
        .with_context(|| format!("{dev} into {bridge}"))
    }

    /// Adds `cidr` (`A.B.C.D/N`) to `dev`.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.add_addrs(dev, &[cidr])
    }

    /// Adds every one of `cidrs` (`A.B.C.D/N`) to `dev`.
    pub fn add_addrs<S: AsRef<str> + Sync>(&self, dev: &str, cidrs: &[S]) -> Result<()> {
        let addrs: Vec<(Ipv4Addr, u8)> = cidrs
            .iter()
            .map(|c| cidr(c.as_ref()))
            .collect::<Result<_>>()?;
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            for (a, n) in addrs {
                h.address()
                    .add(i, IpAddr::V4(a), n)
                    .execute()
                    .await
                    .with_context(|| format!("adding {a}/{n} to {dev}"))?;
            }
            Ok(())
        })
    }

    /// Removes `cidr` (`A.B.C.D/N`) from `dev`, if it is there.
    pub fn del_addr(&self, dev: &str, cidr_: &str) -> Result<()> {
        let (a, n) = cidr(cidr_)?;
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let mut s = h.address().get().set_link_index_filter(i).execute();
            let mut found = Vec::new();
            while let Some(m) = s.try_next().await? {
                let ours = m.header.prefix_len == n
                    && m.attributes
                        .iter()
                        .any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == a));
                if ours {
                    found.push(m);
                }
            }
            for m in found {
                h.address().del(m).execute().await?;
            }
            Ok(())
        })
        .with_context(|| format!("removing {cidr_} from {dev}"))
    }

    /// The IPv4 addresses on `dev`.
    pub fn addrs(&self, dev: &str) -> Result<Vec<Ipv4Addr>> {
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let mut out = Vec::new();
            let mut s = h.address().get().set_link_index_filter(i).execute();
            while let Some(m) = s.try_next().await? {
                for a in &m.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                        out.push(*ip);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Routes `dst` (`A.B.C.D/N`, or `default`) via `gateway`.
    pub fn route_via(&self, dst: &str, gateway: &str) -> Result<()> {
        let (a, n) = if dst == "default" {
            (Ipv4Addr::UNSPECIFIED, 0)
        } else {
            cidr(dst)?
        };
        let gateway: Ipv4Addr = gateway
            .parse()
            .with_context(|| format!("gateway {gateway:?}"))?;
        self.netlink(|h| async move {
            let r = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, n)
                .gateway(gateway)
                .build();
            h.route().add(r).execute().await?;
            Ok(())
        })
        .with_context(|| format!("route {dst} via {gateway}"))
    }

    /// A local route: every address in `prefix` is this host's, on `dev`
    /// (`ip route add local PREFIX dev DEV`).
    pub fn route_local(&self, prefix: &str, dev: &str) -> Result<()> {
        let (a, n) = cidr(prefix)?;
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let r = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, n)
                .output_interface(i)
                .kind(RouteType::Local)
                .table_id(255)
                .scope(rtnetlink::packet_route::route::RouteScope::Host)
                .build();
            h.route().add(r).execute().await?;
            Ok(())
        })
        .with_context(|| format!("local route {prefix} on {dev}"))
    }

    /// A permanent neighbour entry: `ip` has `mac` on `dev`.
    pub fn neigh_replace(&self, ip: Ipv4Addr, mac: [u8; 6], dev: &str) -> Result<()> {
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            h.neighbours()
                .add(i, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await?;
            Ok(())
        })
        .with_context(|| format!("neighbour {ip} on {dev}"))
    }

    /// Removes the neighbour entry of `ip` on `dev`, if there is one.
    pub fn neigh_del(&self, ip: Ipv4Addr, dev: &str) -> Result<()> {
        self.netlink(|h| async move {
            let i = index(&h, dev).await?;
            let mut s = h.neighbours().get().execute();
            while let Some(m) = s.try_next().await? {
                let ours = m.header.ifindex == i
                    && m.attributes.iter().any(
                        |a| matches!(a, NeighbourAttribute::Destination(d) if *d == IpAddr::V4(ip).into()),
                    );
                if ours {
                    h.neighbours().del(m).execute().await?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("removing neighbour {ip} on {dev}"))
    }

    /// The ifindex of `dev`.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        self.netlink(|h| async move { index(&h, dev).await })
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let attrs = self.netlink(|h| async move { attributes(&h, dev).await })?;
        attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) => b.as_slice().try_into().ok(),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{dev} has no MAC"))
    }

    /// Packets `dev` has received.
    pub fn rx_packets(&self, dev: &str) -> Result<u64> {
        let attrs = self.netlink(|h| async move { attributes(&h, dev).await })?;
        attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(s.rx_packets),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{dev} has no statistics"))
    }

    /// Whether an XDP program is attached to `dev`.
    pub fn xdp_attached(&self, dev: &str) -> Result<bool> {
        let attrs = self.netlink(|h| async move { attributes(&h, dev).await })?;
        Ok(attrs.iter().any(|a| match a {
            LinkAttribute::Xdp(x) => x
                .iter()
                .any(|x| matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None)),
            _ => false,
        }))
    }

    /// The names of this namespace's links.
    pub fn links(&self) -> Result<Vec<String>> {
        self.netlink(|h| async move {
            let mut out = Vec::new();
            let mut s = h.link().get().execute();
            while let Some(m) = s.try_next().await? {
                for a in m.attributes {
                    if let LinkAttribute::IfName(n) = a {
                        out.push(n);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Plugs `ns` into this namespace's bridge `bridge`: a veth pair `dev`
    /// there and `port` here, the port in the bridge, `cidrs` on `dev`, and
    /// transmit checksum offload off on `dev` (a partial checksum cannot be
    /// fixed by a rewrite on the way).
    pub fn plug(
        &self,
        bridge: &str,
        ns: &Netns,
        dev: &str,
        port: &str,
        cidrs: &[String],
    ) -> Result<()> {
        ns.veth(dev, self, port)?;
        self.set_master(port, bridge)?;
        for c in cidrs {
            ns.add_addr(dev, c)?;
        }
        ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
        Ok(())
    }
}
