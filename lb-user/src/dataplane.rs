//! Loads the embedded XDP object and programs its maps.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    Backend, Config, Conn, FlowKey, Nat, Reason, Service, ServiceKey, Traffic, MAX_SNAT_ADDRS,
};

use crate::maglev::{self, Member};

/// The data-path object, built by `build.rs` from `lb-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
/// Benchmark helper programs, built from `lb-ebpf/src/bench.rs`.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench"));

/// Sizes and global settings fixed at load time.
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

/// Seconds → nanoseconds for `Config`.
pub const fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

/// Default settings: LVS-like timeouts, UDP idle 30 s.
pub fn default_config(hash_seed: u32, maglev_size: u32) -> Config {
    Config {
        hash_seed,
        maglev_size,
        tcp_timeout_ns: secs(900),
        tcp_fin_timeout_ns: secs(10),
        udp_timeout_ns: secs(30),
        nexthop_ttl_ns: secs(1),
    }
}

/// One real server of a service, as the data path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
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
}

impl ServiceSpec {
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
        }
    }

    /// The Maglev members of this service.
    pub fn members(&self) -> Vec<Member> {
        self.backends
            .iter()
            .map(|b| Member {
                id: b.id,
                addr: b.addr,
                port: b.port,
                weight: b.weight,
            })
            .collect()
    }
}

/// An address as the data path stores it: wire order in a native integer.
pub fn be_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// The inverse of [`be_addr`].
pub fn addr_of(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    limits: Limits,
    config: Config,
    /// The table each service id currently serves from.
    live_table: BTreeMap<u32, u32>,
}

impl Dataplane {
    /// Loads the program with `limits` and writes `config`.
    pub fn load(limits: Limits, config: Config) -> Result<Self> {
        if !maglev::is_prime(limits.maglev_size) {
            bail!("Maglev table size {} is not prime", limits.maglev_size);
        }
        if config.maglev_size != limits.maglev_size {
            bail!("config Maglev size differs from the loaded table size");
        }
        let maglev_entries = limits
            .max_services
            .checked_mul(2 * limits.maglev_size)
            .context("max_services × 2 × Maglev size overflows")?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("SERVICES", limits.max_services)
            .map_max_entries("SERVICE_STATS", limits.max_services)
            .map_max_entries("BACKENDS", limits.max_backends)
            .map_max_entries("BACKEND_STATS", limits.max_backends)
            .map_max_entries("MAGLEV", maglev_entries)
            .map_max_entries("CONNS", limits.conn_max)
            .map_max_entries("NATS", limits.conn_max)
            .load(OBJECT)
            .context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("lb")
            .context("no program lb")?
            .try_into()?;
        prog.load().context("verifying the XDP program")?;
        let mut dp = Dataplane {
            ebpf,
            limits,
            config,
            live_table: BTreeMap::new(),
        };
        dp.set_config(config)?;
        Ok(dp)
    }

    /// The XDP program.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf.program_mut("lb").unwrap().try_into().unwrap()
    }

    /// The underlying object, for maps not wrapped here.
    pub fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Load-time sizes.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Current global settings.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Attaches to `iface`; `Auto` tries native first, then generic (skb).
    pub fn attach(&mut self, iface: &str, mode: crate::config::XdpMode) -> Result<XdpMode> {
        use crate::config::XdpMode as M;
        let prog = self.program();
        let tries: &[XdpMode] = match mode {
            M::Auto => &[XdpMode::Driver, XdpMode::Skb],
            M::Native => &[XdpMode::Driver],
            M::Skb => &[XdpMode::Skb],
        };
        let mut last = None;
        for &m in tries {
            match prog.attach(iface, m) {
                Ok(_) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap()).with_context(|| format!("attaching XDP to {iface}"))
    }

    fn map<'a, T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>>(
        &'a mut self,
        name: &str,
    ) -> Result<T> {
        let m = self
            .ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name}"))?;
        T::try_from(m).with_context(|| format!("map {name}"))
    }

    /// Writes the global settings.
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        let mut m: Array<&mut MapData, Config> = self.map("CONFIG")?;
        m.set(0, config, 0)?;
        self.config = config;
        Ok(())
    }

    /// Marks `addr` as VIP and/or SNAT address (`ADDR_*` bits); 0 removes it.
    pub fn set_addr(&mut self, addr: Ipv4Addr, kind: u32) -> Result<()> {
        let mut m: HashMap<&mut MapData, u32, u32> = self.map("ADDRS")?;
        if kind == 0 {
            match m.remove(&be_addr(addr)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e.into()),
            }
        } else {
            Ok(m.insert(be_addr(addr), kind, 0)?)
        }
    }

    /// Lets the program redirect to `ifindex`.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<()> {
        let mut m: DevMapHash<&mut MapData> = self.map("DEVMAP")?;
        m.insert(ifindex, ifindex, None, 0)?;
        Ok(())
    }

    /// Writes one backend.
    pub fn set_backend(&mut self, b: &BackendSpec) -> Result<()> {
        if b.id >= self.limits.max_backends {
            bail!(
                "backend id {} beyond max_backends {}",
                b.id,
                self.limits.max_backends
            );
        }
        let mut m: Array<&mut MapData, Backend> = self.map("BACKENDS")?;
        let v = Backend {
            addr: be_addr(b.addr),
            port: b.port.to_be(),
            _pad: 0,
        };
        m.set(b.id, v, 0)?;
        Ok(())
    }

    /// Installs or updates a service without a packet ever seeing a partial
    /// table: backends first, then the Maglev table into the staging half, then
    /// one update of the service entry flips to it.
    pub fn apply_service(&mut self, spec: &ServiceSpec) -> Result<()> {
        if spec.id >= self.limits.max_services {
            bail!(
                "service id {} beyond max_services {}",
                spec.id,
                self.limits.max_services
            );
        }
        for b in &spec.backends {
            self.set_backend(b)?;
        }
        let table = maglev::build(
            self.config.hash_seed,
            self.limits.maglev_size,
            &spec.members(),
        );
        let next = match self.live_table.get(&spec.id) {
            Some(t) => t ^ 1,
            None => 0,
        };
        self.write_table(spec.id, next, &table)?;
        let mut m: HashMap<&mut MapData, ServiceKey, Service> = self.map("SERVICES")?;
        m.insert(spec.key(), spec.value(next), 0)?;
        self.live_table.insert(spec.id, next);
        Ok(())
    }

    /// Removes a service; its established flows keep their entries and drain.
    pub fn remove_service(&mut self, spec: &ServiceSpec) -> Result<()> {
        let mut m: HashMap<&mut MapData, ServiceKey, Service> = self.map("SERVICES")?;
        match m.remove(&spec.key()) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.live_table.remove(&spec.id);
        Ok(())
    }

    fn write_table(&mut self, service_id: u32, table: u32, slots: &[u32]) -> Result<()> {
        let base = (service_id * 2 + table) * self.limits.maglev_size;
        let mut m: Array<&mut MapData, u32> = self.map("MAGLEV")?;
        for (i, &id) in slots.iter().enumerate() {
            m.set(base + i as u32, id, 0)?;
        }
        Ok(())
    }

    /// The live Maglev table of a service, as the data path sees it.
    pub fn live_table(&mut self, service_id: u32) -> Result<Vec<u32>> {
        let table = *self
            .live_table
            .get(&service_id)
            .context("no such service")?;
        let size = self.limits.maglev_size;
        let base = (service_id * 2 + table) * size;
        let m: Array<&mut MapData, u32> = self.map("MAGLEV")?;
        (0..size).map(|i| Ok(m.get(&(base + i), 0)?)).collect()
    }

    /// Counters of every reason, summed over CPUs.
    pub fn reasons(&mut self) -> Result<Vec<(Reason, u64)>> {
        let m: PerCpuArray<&mut MapData, u64> = self.map("REASONS")?;
        Reason::ALL
            .iter()
            .map(|&r| Ok((r, m.get(&(r as u32), 0)?.iter().sum())))
            .collect()
    }

    /// One reason's counter, summed over CPUs.
    pub fn reason(&mut self, r: Reason) -> Result<u64> {
        let m: PerCpuArray<&mut MapData, u64> = self.map("REASONS")?;
        Ok(m.get(&(r as u32), 0)?.iter().sum())
    }

    fn traffic(&mut self, map: &str, id: u32) -> Result<Traffic> {
        let m: PerCpuArray<&mut MapData, Traffic> = self.map(map)?;
        let mut t = Traffic::default();
        for v in m.get(&id, 0)?.iter() {
            t += *v;
        }
        Ok(t)
    }

    /// Traffic of a service, summed over CPUs.
    pub fn service_traffic(&mut self, id: u32) -> Result<Traffic> {
        self.traffic("SERVICE_STATS", id)
    }

    /// Traffic of a backend, summed over CPUs.
    pub fn backend_traffic(&mut self, id: u32) -> Result<Traffic> {
        self.traffic("BACKEND_STATS", id)
    }

    /// The connection entry of a client → VIP flow.
    pub fn conn(&mut self, key: &FlowKey) -> Result<Option<Conn>> {
        let m: HashMap<&mut MapData, FlowKey, Conn> = self.map("CONNS")?;
        lookup(m.get(key, 0))
    }

    /// The NAT entry of a backend → SNAT flow.
    pub fn nat(&mut self, key: &FlowKey) -> Result<Option<Nat>> {
        let m: HashMap<&mut MapData, FlowKey, Nat> = self.map("NATS")?;
        lookup(m.get(key, 0))
    }
}

fn lookup<V>(r: Result<V, aya::maps::MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
