//! What the data path is given: the limits fixed at load time, the global
//! settings, and each virtual server with its backends, as plain values.

use std::{fmt, net::Ipv4Addr};

use lb_common::{Service, ServiceKey, MAX_SNAT_ADDRS};

use crate::{config::VirtualServer, maglev, sys::be_addr};

/// Sizes fixed when the program is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most services (each owns two Maglev tables).
    pub max_services: u32,
    /// Most backends across all services.
    pub max_backends: u32,
    /// Entries of each of the connection and NAT tables.
    pub conn_max: u32,
    /// Maglev table size M (prime).
    pub maglev_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: 64,
            max_backends: 4096,
            conn_max: 1 << 20,
            maglev_size: maglev::DEFAULT_SIZE,
        }
    }
}

/// Seconds → nanoseconds for [`lb_common::Config`].
pub const fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

/// Default global settings: LVS-like timeouts, UDP idle 30 s.
pub fn default_config(hash_seed: u32, maglev_size: u32) -> lb_common::Config {
    lb_common::Config {
        hash_seed,
        maglev_size,
        tcp_timeout_ns: secs(900),
        tcp_fin_timeout_ns: secs(10),
        udp_timeout_ns: secs(30),
        nexthop_ttl_ns: secs(1),
        flags: 0,
        _pad: 0,
        sync_refresh_ns: 0,
        tcp_syn_timeout_ns: secs(60),
    }
}

/// One real server of a service as the data path needs it: its id, where
/// it is, and its weight in the Maglev table.
pub type BackendSpec = maglev::Member;

/// `tcp` or `udp`, for an IP protocol number.
pub fn proto_name(proto: u8) -> &'static str {
    if proto == lb_common::PROTO_TCP {
        "tcp"
    } else {
        "udp"
    }
}

/// A virtual server's identity across reloads: VIP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAddr {
    /// The virtual address.
    pub vip: Ipv4Addr,
    /// The service's port.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
}

impl ServiceAddr {
    /// The identity of virtual server `v`.
    pub fn of(v: &VirtualServer) -> ServiceAddr {
        ServiceAddr {
            vip: v.vip,
            port: v.port,
            proto: v.protocol.number(),
        }
    }
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, proto_name(self.proto))
    }
}

/// A backend's identity across reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The service it belongs to.
    pub service: ServiceAddr,
    /// The backend's address.
    pub addr: Ipv4Addr,
    /// The backend's port.
    pub port: u16,
    /// The service's sorry server (which may also be a real server of it).
    pub sorry: bool,
}

/// Everything the data path needs for one virtual server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub id: u32,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    /// `SVC_*` bits.
    pub flags: u32,
    pub snat_addrs: Vec<Ipv4Addr>,
    pub snat_ports: (u16, u16),
    pub backends: Vec<BackendSpec>,
    /// Monotonic ns when this node took the service over; 0 if it has no
    /// VRRP instance or does not serve it.
    pub since_ns: u64,
}

impl ServiceSpec {
    /// The service's identity.
    pub fn addr(&self) -> ServiceAddr {
        ServiceAddr {
            vip: self.vip,
            port: self.port,
            proto: self.proto,
        }
    }

    /// The map key of this service.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: be_addr(self.vip),
            port: self.port.to_be(),
            proto: self.proto,
            _pad: 0,
        }
    }

    /// The map value of this service, with live table `table`.
    pub fn value(&self, table: u32) -> Service {
        let mut snat = [0u32; MAX_SNAT_ADDRS];
        for (s, a) in snat.iter_mut().zip(&self.snat_addrs) {
            *s = be_addr(*a);
        }
        Service {
            id: self.id,
            flags: self.flags,
            table,
            snat_count: self.snat_addrs.len().min(MAX_SNAT_ADDRS) as u32,
            snat_addrs: snat,
            port_min: self.snat_ports.0,
            port_max: self.snat_ports.1,
            _pad: 0,
            since_ns: self.since_ns,
        }
    }

    /// Whether `addr:port` is in this service's SNAT pool.
    pub fn in_snat_pool(&self, addr: Ipv4Addr, port: u16) -> bool {
        self.snat_addrs.contains(&addr) && (self.snat_ports.0..=self.snat_ports.1).contains(&port)
    }
}
