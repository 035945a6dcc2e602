//! Every map of the data path. Sizes here are defaults; the agent sets the
//! real ones at load time from its config.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    Backend, Config, Conn, FlowKey, Nat, NextHop, NextHopKey, Reason, Service, ServiceKey, Traffic,
};

/// Destination addresses the program cares about: value is `ADDR_*` bits.
/// One small lookup lets all other traffic pass at once.
#[map]
pub static ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Virtual servers by (VIP, port, protocol).
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(64, 0);

/// Real servers by backend id.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(4096, 0);

/// Two Maglev tables of M backend ids per service, flat; see
/// `lb_common::maglev_slot`. Memory-mapped by the agent, which writes a whole
/// table with one copy.
#[map]
pub static MAGLEV: Array<u32> = Array::with_max_entries(64 * 2 * 65537, BPF_F_MMAPABLE);

/// Connection table, client → VIP. Shared, not per-CPU: a flow's packets may
/// arrive on any CPU. The common LRU list measured faster under eviction than
/// per-CPU lists here, and does not split capacity between CPUs.
#[map]
pub static CONNS: LruHashMap<FlowKey, Conn> = LruHashMap::with_max_entries(1 << 20, 0);

/// Reverse NAT table, backend → SNAT address.
#[map]
pub static NATS: LruHashMap<FlowKey, Nat> = LruHashMap::with_max_entries(1 << 20, 0);

/// Global settings, one entry.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Cached next hops by (destination, ingress interface); see `fib`.
#[map]
pub static NEXTHOPS: LruHashMap<NextHopKey, NextHop> = LruHashMap::with_max_entries(65536, 0);

/// Egress devices for XDP_REDIRECT, keyed by ifindex.
#[map]
pub static DEVMAP: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Per-CPU count of every pass, drop and forward reason.
#[map]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Per-CPU traffic per service id.
#[map]
pub static SERVICE_STATS: PerCpuArray<Traffic> = PerCpuArray::with_max_entries(64, 0);

/// Per-CPU traffic per backend id.
#[map]
pub static BACKEND_STATS: PerCpuArray<Traffic> = PerCpuArray::with_max_entries(4096, 0);

/// Synced flows' starts, refreshes and closes (`SyncEntry`), for the agent's
/// connection sync; written only with `CFG_SYNC` set.
#[map]
pub static SYNC: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU count of `SYNC` records lost to a full ring.
#[map]
pub static SYNC_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
