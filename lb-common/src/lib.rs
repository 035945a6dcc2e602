//! Types shared by the XDP data path (`lb-ebpf`) and the agent (`lb-user`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding, so both sides
//! agree on the layout byte for byte. Addresses and ports are kept in network
//! byte order exactly as they appear on the wire, stored in native integers
//! (`u32::from_ne_bytes(ip.octets())`), so the data path never swaps bytes.
#![no_std]

pub mod csum;
pub mod hash;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Maximum SNAT addresses in one service's pool.
pub const MAX_SNAT_ADDRS: usize = 8;
/// How many SNAT candidates a new flow tries before the pool counts as exhausted.
pub const SNAT_TRIES: u32 = 32;
/// Marker in a Maglev table slot that has no backend.
pub const NO_BACKEND: u32 = u32::MAX;

/// `ADDRS` value bit: the address is a VIP of at least one service.
pub const ADDR_VIP: u32 = 1;
/// `ADDRS` value bit: the address is an SNAT address (replies arrive on it).
pub const ADDR_SNAT: u32 = 2;

/// `Service::flags` bit: the service takes new flows (VRRP MASTER or unmanaged).
pub const SVC_ENABLED: u32 = 1;
/// `Service::flags` bit: Maglev hashes the source address only (`lb_algo: sh`).
pub const SVC_SRC_HASH: u32 = 2;

/// Connection-entry flag: a FIN was seen in this entry's direction.
pub const CT_FIN: u32 = 1;
/// Connection-entry flag: the flow was reported on `SYNC`, so its close is
/// reported too.
pub const CT_SYNCED: u32 = 2;
/// Connection-entry flag: a TCP flow its backend has not confirmed yet
/// with a segment other than a SYN or RST (a blind spoofer cannot make it
/// do so). It is not reported for sync, and a new flow may take its SNAT
/// port when the pool runs short.
pub const CT_HALF: u32 = 4;
/// Connection-entry flag, with `CT_HALF`: a TCP flow opened by a SYN whose
/// client has not acknowledged the handshake yet. It lives
/// `tcp_syn_timeout_ns`.
pub const CT_SYN_SENT: u32 = 8;

/// `Config::flags` bit: report on `SYNC` the flows that did not get their
/// first SNAT candidate, so the agent can hand them to its VRRP peer.
pub const CFG_SYNC: u32 = 1;
/// `Config::flags` bit, with `CFG_SYNC`: report every new flow, not only
/// those off their first SNAT candidate.
pub const CFG_SYNC_ALL: u32 = 2;

/// Key of the `SERVICES` map: one virtual server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index of the service: selects its Maglev tables and its counters.
    pub id: u32,
    /// `SVC_*` bits.
    pub flags: u32,
    /// Which of the service's two Maglev tables is live (0 or 1).
    pub table: u32,
    /// Number of valid entries in `snat_addrs`.
    pub snat_count: u32,
    /// SNAT pool addresses, network byte order.
    pub snat_addrs: [u32; MAX_SNAT_ADDRS],
    /// First SNAT port, host byte order.
    pub port_min: u16,
    /// Last SNAT port (inclusive), host byte order.
    pub port_max: u16,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` when this node last took the service over (became
    /// VRRP MASTER of its instance); 0 when it has no instance. See
    /// `nat::setup` in the data path.
    pub since_ns: u64,
}

/// Value of the `BACKENDS` array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Real server address, network byte order.
    pub addr: u32,
    /// Real server port, network byte order.
    pub port: u16,
    pub _pad: u16,
}

/// A directed IPv4 5-tuple: the key of both connection maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    // Scalar padding: a byte array would be zeroed with a memset call in BPF.
    pub _pad: u8,
    pub _pad2: u16,
}

impl FlowKey {
    /// A key from wire-order addresses and ports.
    #[inline(always)]
    pub const fn new(
        src_addr: u32,
        dst_addr: u32,
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> Self {
        FlowKey {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            _pad: 0,
            _pad2: 0,
        }
    }

    /// The same flow seen from the other side.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        FlowKey::new(
            self.dst_addr,
            self.src_addr,
            self.dst_port,
            self.src_port,
            self.proto,
        )
    }
}

/// Value of the `CONNS` map, keyed by client → VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub backend_addr: u32,
    pub snat_addr: u32,
    pub backend_port: u16,
    pub snat_port: u16,
    pub backend_id: u32,
    pub service_id: u32,
    /// `CT_*` bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns` of the last refresh.
    pub last_seen: u64,
}

impl Conn {
    /// The `NATS` key a backend's replies to this connection carry.
    #[inline(always)]
    pub const fn reverse_key(&self, proto: u8) -> FlowKey {
        FlowKey::new(
            self.backend_addr,
            self.snat_addr,
            self.backend_port,
            self.snat_port,
            proto,
        )
    }
}

/// Value of the `NATS` map, keyed by backend → SNAT: how to restore a reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    pub client_addr: u32,
    pub vip_addr: u32,
    pub client_port: u16,
    pub vip_port: u16,
    pub backend_id: u32,
    pub service_id: u32,
    /// `CT_*` bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns` of the last refresh.
    pub last_seen: u64,
}

impl Nat {
    /// The entry that restores replies to the client of `key` (client →
    /// VIP), for a flow to `backend_id` of `service_id`.
    #[inline(always)]
    pub const fn new(
        key: &FlowKey,
        backend_id: u32,
        service_id: u32,
        flags: u32,
        last_seen: u64,
    ) -> Nat {
        Nat {
            client_addr: key.src_addr,
            vip_addr: key.dst_addr,
            client_port: key.src_port,
            vip_port: key.dst_port,
            backend_id,
            service_id,
            flags,
            last_seen,
        }
    }

    /// Whether this entry restores replies to the client of `key` (client
    /// → VIP): the port is that flow's.
    #[inline(always)]
    pub const fn restores(&self, key: &FlowKey) -> bool {
        self.client_addr == key.src_addr
            && self.client_port == key.src_port
            && self.vip_addr == key.dst_addr
            && self.vip_port == key.dst_port
    }

    /// The `CONNS` key of the flow this entry restores replies for.
    #[inline(always)]
    pub const fn client_key(&self, proto: u8) -> FlowKey {
        FlowKey::new(
            self.client_addr,
            self.vip_addr,
            self.client_port,
            self.vip_port,
            proto,
        )
    }
}

/// The single entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Seed of the flow hash; the same on every node.
    pub hash_seed: u32,
    /// Maglev table size M (prime).
    pub maglev_size: u32,
    /// Idle timeout of a TCP connection.
    pub tcp_timeout_ns: u64,
    /// Idle timeout once a FIN was seen.
    pub tcp_fin_timeout_ns: u64,
    /// Idle timeout of a UDP flow.
    pub udp_timeout_ns: u64,
    /// How long a next-hop lookup is reused; 0 looks up every packet.
    pub nexthop_ttl_ns: u64,
    /// `CFG_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// With `CFG_SYNC`: a live synced TCP flow is reported again when its
    /// refreshes cross a multiple of this (UDP: a third of its timeout), so
    /// the peer's copy never times out while the flow lives. 0 never.
    pub sync_refresh_ns: u64,
    /// Idle timeout of a TCP flow whose client has sent only its SYN
    /// (`CT_SYN_SENT`).
    pub tcp_syn_timeout_ns: u64,
}

/// A record of the `SYNC` ring: a synced flow that started or lives on, or
/// with `CT_FIN` in `conn.flags`, one that is closing (FIN or RST).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEntry {
    /// Client → VIP.
    pub key: FlowKey,
    pub conn: Conn,
}

/// Key of the `NEXTHOPS` cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NextHopKey {
    /// Destination address, network byte order.
    pub dst_addr: u32,
    /// Interface the packet arrived on.
    pub ingress: u32,
}

/// A cached `bpf_fib_lookup` result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface.
    pub ifindex: u32,
    /// Largest IPv4 total length that may use this entry.
    pub mtu: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// `bpf_ktime_get_ns` after which the lookup is done again.
    pub expires: u64,
}

/// Per-CPU traffic counters of one service or one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

impl core::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_conns += o.new_conns;
    }
}

/// Why the data path passed, dropped or forwarded a packet: indexes of the
/// per-CPU `REASONS` counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4, or not addressed to a VIP or SNAT address: passed untouched.
    PassNotOurs = 0,
    /// For a VIP or SNAT address, but not TCP, UDP or an ICMP error (an
    /// echo request to the VIP, say): passed.
    PassOtherProto,
    /// For a VIP address, but no service on that port and protocol: passed.
    PassNoService,
    /// Service disabled (VRRP BACKUP): passed to the kernel.
    PassDisabled,
    /// A reply to an SNAT address with no live NAT entry: passed.
    PassNoNat,
    /// The next hop's MAC is unknown: the rewritten packet goes to the kernel,
    /// which resolves the neighbour.
    PassNoNeigh,
    /// `bpf_fib_lookup` failed for another reason: the rewritten packet goes to the kernel.
    PassFibFailed,
    /// Redirect target not in the device map: the rewritten packet goes to the kernel.
    PassNoDevmap,
    /// Shorter than its headers claim, or a bad IPv4 header: dropped.
    DropMalformed,
    /// IPv4 fragment addressed to a VIP: dropped (policy).
    DropFragment,
    /// IPv4 with options addressed to a VIP: dropped (policy).
    DropIpOptions,
    /// The service has no backend: dropped.
    DropNoBackend,
    /// No free SNAT ip:port after `SNAT_TRIES` candidates: dropped.
    DropSnatExhausted,
    /// Writing a connection entry failed: dropped.
    DropConnTableFull,
    /// A TCP RST for an unknown flow: dropped instead of creating state.
    DropRstNoConn,
    /// Forwarded with XDP_TX.
    TxForward,
    /// Forwarded with XDP_REDIRECT.
    RedirectForward,
    /// The `CONFIG` entry could not be read (never expected: the array's
    /// one entry always exists): passed.
    PassNoConfig,
    /// A TCP segment other than a SYN for no known flow, outside a
    /// takeover: dropped, so spoofed segments create no state and the
    /// kernel reflects nothing at their forged sources.
    DropNotSyn,
    /// Counted beside the packet's own reason: a new SYN found its SNAT
    /// pool short and took the port of the oldest half-open flow it probed.
    EvictHalfOpen,
    /// An ICMP error to a VIP or SNAT address that quotes no live flow (or
    /// a quote that is not plain IPv4 with TCP or UDP): passed.
    PassIcmpNoFlow,
    /// A "fragmentation needed" error to a VIP, for a backend, announcing
    /// a next-hop MTU under 1280: dropped, since the backend would apply it
    /// to every flow from the shared SNAT address.
    DropIcmpSmallMtu,
}

impl Reason {
    /// Number of reasons: the size of the `REASONS` array.
    pub const COUNT: u32 = Reason::DropIcmpSmallMtu as u32 + 1;
    /// All reasons in index order.
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::PassNotOurs,
        Reason::PassOtherProto,
        Reason::PassNoService,
        Reason::PassDisabled,
        Reason::PassNoNat,
        Reason::PassNoNeigh,
        Reason::PassFibFailed,
        Reason::PassNoDevmap,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropIpOptions,
        Reason::DropNoBackend,
        Reason::DropSnatExhausted,
        Reason::DropConnTableFull,
        Reason::DropRstNoConn,
        Reason::TxForward,
        Reason::RedirectForward,
        Reason::PassNoConfig,
        Reason::DropNotSyn,
        Reason::EvictHalfOpen,
        Reason::PassIcmpNoFlow,
        Reason::DropIcmpSmallMtu,
    ];

    /// A stable snake_case name, for status output and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotOurs => "pass_not_ours",
            Reason::PassOtherProto => "pass_other_proto",
            Reason::PassNoService => "pass_no_service",
            Reason::PassDisabled => "pass_disabled",
            Reason::PassNoNat => "pass_no_nat",
            Reason::PassNoNeigh => "pass_no_neigh",
            Reason::PassFibFailed => "pass_fib_failed",
            Reason::PassNoDevmap => "pass_no_devmap",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropFragment => "drop_fragment",
            Reason::DropIpOptions => "drop_ip_options",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropSnatExhausted => "drop_snat_exhausted",
            Reason::DropConnTableFull => "drop_conn_table_full",
            Reason::DropRstNoConn => "drop_rst_no_conn",
            Reason::TxForward => "tx_forward",
            Reason::RedirectForward => "redirect_forward",
            Reason::PassNoConfig => "pass_no_config",
            Reason::DropNotSyn => "drop_not_syn",
            Reason::EvictHalfOpen => "evict_half_open",
            Reason::PassIcmpNoFlow => "pass_icmp_no_flow",
            Reason::DropIcmpSmallMtu => "drop_icmp_small_mtu",
        }
    }

    /// Whether a packet with this reason is dropped; every other reason
    /// that ends a packet's path passes it to the kernel.
    #[inline(always)]
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Reason::DropMalformed
                | Reason::DropFragment
                | Reason::DropIpOptions
                | Reason::DropNoBackend
                | Reason::DropSnatExhausted
                | Reason::DropConnTableFull
                | Reason::DropRstNoConn
                | Reason::DropNotSyn
                | Reason::DropIcmpSmallMtu
        )
    }
}

/// Index of a Maglev slot in the flat `MAGLEV` array: each service owns two
/// tables of `m` slots (live and staging), so a reload fills the staging one
/// and flips `Service::table` in a single map update.
#[inline(always)]
pub const fn maglev_slot(service_id: u32, table: u32, m: u32, hash: u32) -> u32 {
    // rem: no panic path in the BPF object; m is never 0 in practice.
    (service_id * 2 + (table & 1)) * m + rem(hash, m)
}

/// The SNAT pool candidate `attempt` for a flow with hash `hash`: returns the
/// index into `Service::snat_addrs` and the port in host byte order. The first
/// candidate depends only on the flow, so every node would pick the same one.
#[inline(always)]
pub fn snat_candidate(svc: &Service, hash: u32, attempt: u32) -> (u32, u16) {
    let nports = (svc.port_max as u32).wrapping_sub(svc.port_min as u32) + 1;
    let naddrs = if svc.snat_count == 0 {
        1
    } else {
        svc.snat_count
    };
    let total = nports * naddrs;
    // Every attempt probes an independent position, so taken ports do not
    // cluster; the low bits of `hash` pick the Maglev slot, so rotate first.
    let idx = rem(
        hash::scramble(hash.rotate_left(16) ^ attempt.wrapping_mul(0x9e37_79b9)),
        total,
    );
    let addr = idx.checked_div(nports).unwrap_or(0);
    (addr, svc.port_min.wrapping_add(rem(idx, nports) as u16))
}

/// `a % b`, 0 when `b` is 0: the BPF object must have no panic path.
#[inline(always)]
pub const fn rem(a: u32, b: u32) -> u32 {
    match a.checked_rem(b) {
        Some(r) => r,
        None => 0,
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields and
    // no pointers, so any byte pattern is a valid value.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for Nat {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Traffic {}
    unsafe impl aya::Pod for NextHopKey {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for SyncEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<Service>(), 16 + 4 * MAX_SNAT_ADDRS + 16);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<Conn>(), 32);
        assert_eq!(size_of::<Nat>(), 32);
        assert_eq!(size_of::<Config>(), 64);
        assert_eq!(size_of::<SyncEntry>(), 48);
        assert_eq!(size_of::<NextHopKey>(), 8);
        assert_eq!(size_of::<NextHop>(), 32);
    }

    #[test]
    fn snat_candidates_stay_in_the_pool_and_spread() {
        let svc = Service {
            snat_count: 2,
            snat_addrs: [1, 2, 0, 0, 0, 0, 0, 0],
            port_min: 1000,
            port_max: 1009,
            ..Default::default()
        };
        let mut seen = [[false; 10]; 2];
        for attempt in 0..SNAT_TRIES {
            let (a, p) = snat_candidate(&svc, 0xdead_beef, attempt);
            assert!(a < 2 && (1000..=1009).contains(&p));
            seen[a as usize][(p - 1000) as usize] = true;
        }
        let distinct = seen.iter().flatten().filter(|&&s| s).count();
        assert!(distinct >= 15, "only {distinct} of 20 slots probed");
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn drop_reasons_are_named_so() {
        for r in Reason::ALL {
            assert_eq!(r.drops(), r.name().starts_with("drop_"), "{}", r.name());
        }
    }
}
