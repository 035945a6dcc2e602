//! Loads the embedded XDP object and programs its maps.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use lb_common::{
    Backend, Config, Conn, FlowKey, Nat, Reason, Service, ServiceKey, Traffic, MAX_SNAT_ADDRS,
};

use crate::maglev::{self, Member};

/// The data-path object, built by `build.rs` from `lb-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
/// Benchmark helper programs, built from `lb-ebpf/src/bench.rs`.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench"));

/// How an interface got the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A new attachment in this mode.
    New(XdpMode),
    /// An earlier agent's pinned attachment now runs this program.
    Replaced,
}

/// Mounts bpffs at /sys/fs/bpf if `dir` is under it and it is not mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    const ROOT: &str = "/sys/fs/bpf";
    if !dir.starts_with(ROOT) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(ROOT))
    {
        return Ok(());
    }
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: static NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs at {ROOT}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Pins only work on a bpf filesystem.
fn require_bpffs(dir: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!("{}: {}", dir.display(), std::io::Error::last_os_error());
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "pin_path {} is not on a bpf filesystem (mount -t bpf bpf DIR)",
            dir.display()
        );
    }
    Ok(())
}

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
        flags: 0,
        _pad: 0,
        sync_refresh_ns: 0,
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
    /// Monotonic ns when this node took the service over; 0 if it has no
    /// VRRP instance or does not serve it.
    pub since_ns: u64,
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
            since_ns: self.since_ns,
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

/// Maglev tables built per round of [`Dataplane::apply_services`].
const TABLES_AT_ONCE: usize = 8;

/// Every map of the object. With a pin directory each is pinned there under
/// its name, and a restarted agent reuses them: connections survive.
pub const MAP_NAMES: [&str; 14] = [
    "ADDRS",
    "SERVICES",
    "BACKENDS",
    "MAGLEV",
    "CONNS",
    "NATS",
    "CONFIG",
    "NEXTHOPS",
    "DEVMAP",
    "REASONS",
    "SERVICE_STATS",
    "BACKEND_STATS",
    "SYNC",
    "SYNC_LOST",
];

/// Key and value sizes of the pinned maps whose layout is ours.
fn pinned_layouts() -> [(&'static str, u32, u32); 12] {
    use std::mem::size_of;
    let s = |n: usize| n as u32;
    [
        ("ADDRS", 4, 4),
        (
            "SERVICES",
            s(size_of::<ServiceKey>()),
            s(size_of::<Service>()),
        ),
        ("BACKENDS", 4, s(size_of::<Backend>())),
        ("MAGLEV", 4, 4),
        ("CONNS", s(size_of::<FlowKey>()), s(size_of::<Conn>())),
        ("NATS", s(size_of::<FlowKey>()), s(size_of::<Nat>())),
        ("CONFIG", 4, s(size_of::<Config>())),
        (
            "NEXTHOPS",
            s(size_of::<lb_common::NextHopKey>()),
            s(size_of::<lb_common::NextHop>()),
        ),
        ("REASONS", 4, 8),
        ("SERVICE_STATS", 4, s(size_of::<Traffic>())),
        ("BACKEND_STATS", 4, s(size_of::<Traffic>())),
        ("SYNC_LOST", 4, 8),
    ]
}

/// A window of the Maglev array mapped into this process
/// (`BPF_F_MMAPABLE`): a table is written with plain stores instead of M
/// syscalls, and unmapped right after, so the agent's RSS does not grow with
/// the tables. The kernel lays array values out at an 8-byte stride, so each
/// u32 slot is the low half of a u64.
struct Window {
    base: *mut libc::c_void,
    bytes: usize,
    /// First wanted slot, as an index into the mapping.
    skip: usize,
    len: usize,
}

impl Window {
    /// Maps slots `first..first + len` of the array behind `fd`.
    fn new(fd: std::os::fd::BorrowedFd<'_>, first: usize, len: usize) -> Result<Window> {
        use std::os::fd::AsRawFd;
        const PAGE: usize = 4096;
        let start = first * 8;
        let offset = start / PAGE * PAGE;
        let bytes = (start + len * 8 - offset).next_multiple_of(PAGE);
        // SAFETY: a shared mapping of a BPF array created with BPF_F_MMAPABLE.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            bail!(
                "mapping the Maglev array: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Window {
            base,
            bytes,
            skip: (start - offset) / 8,
            len,
        })
    }

    fn slots(&mut self) -> &mut [u64] {
        // SAFETY: the mapping covers skip + len u64s and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.base.cast::<u64>().add(self.skip), self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.base, self.bytes) };
    }
}

/// One flow of a peer's connection sync, for [`Dataplane::apply_synced`].
#[derive(Clone, Copy, Debug)]
pub struct SyncedFlow {
    /// Client → VIP.
    pub key: FlowKey,
    /// The mapping the peer gave it.
    pub conn: Conn,
    /// The peer saw it close.
    pub closed: bool,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    limits: Limits,
    config: Config,
    /// The table each service id currently serves from.
    live_table: BTreeMap<u32, u32>,
    /// bpffs directory of the pinned maps and links, if pinned.
    pin_dir: Option<PathBuf>,
    /// Whether the maps were taken over from a previous agent.
    adopted: bool,
    /// Attachments this process holds (their pins keep them after exit).
    links: Vec<XdpLink>,
    /// Backends as last written, to skip rewriting unchanged ones.
    backends: std::collections::HashMap<u32, Backend>,
    /// Maglev table writes per service id.
    builds: BTreeMap<u32, u64>,
}

impl Dataplane {
    /// Loads the program with fresh maps and writes `config`.
    pub fn load(limits: Limits, config: Config) -> Result<Self> {
        Self::open(limits, config, None)
    }

    /// Loads the program with its maps pinned in `dir`, reusing the maps
    /// already pinned there by an earlier agent (see [`Dataplane::adopted`]).
    pub fn load_pinned(limits: Limits, config: Config, dir: &Path) -> Result<Self> {
        Self::open(limits, config, Some(dir))
    }

    fn open(limits: Limits, config: Config, dir: Option<&Path>) -> Result<Self> {
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
        let sizes = [
            ("SERVICES", limits.max_services),
            ("SERVICE_STATS", limits.max_services),
            ("BACKENDS", limits.max_backends),
            ("BACKEND_STATS", limits.max_backends),
            ("MAGLEV", maglev_entries),
            ("CONNS", limits.conn_max),
            ("NATS", limits.conn_max),
        ];
        let mut loader = EbpfLoader::new();
        for (name, n) in sizes {
            loader.map_max_entries(name, n);
        }
        let mut adopted = false;
        if let Some(dir) = dir {
            ensure_bpffs(dir)?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            require_bpffs(dir)?;
            adopted = dir.join("CONNS").exists();
            if adopted {
                // A pinned map is reused as it is: its size must match.
                for (name, n) in sizes {
                    let info = aya::maps::MapInfo::from_pin(dir.join(name)).with_context(|| {
                        format!("reading pinned map {name} in {}", dir.display())
                    })?;
                    if info.max_entries() != n {
                        bail!(
                            "pinned map {name} in {} has {} entries, the config needs {n}: \
                             stop the agent without --keep-dataplane (or remove the directory) to resize",
                            dir.display(),
                            info.max_entries()
                        );
                    }
                }
                // Counters indexed by reason: another version may count
                // more or fewer reasons. They start afresh at its size
                // (the old program keeps its own until it is replaced).
                let reasons = dir.join("REASONS");
                if aya::maps::MapInfo::from_pin(&reasons)
                    .is_ok_and(|i| i.max_entries() != Reason::COUNT)
                {
                    std::fs::remove_file(&reasons)
                        .with_context(|| format!("replacing {}", reasons.display()))?;
                }
                // A data path left by another version may lay its maps out
                // differently: reusing them would fail verification or
                // misread entries.
                for (name, key, value) in pinned_layouts() {
                    let Ok(info) = aya::maps::MapInfo::from_pin(dir.join(name)) else {
                        continue;
                    };
                    if (info.key_size(), info.value_size()) != (key, value) {
                        bail!(
                            "pinned map {name} in {} has {}-byte keys and {}-byte values, this \
                             version needs {key} and {value}: it was left by another version; stop \
                             that data path (or remove the directory) first",
                            dir.display(),
                            info.key_size(),
                            info.value_size()
                        );
                    }
                }
            }
            for name in MAP_NAMES {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).context("loading the XDP object")?;
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
            pin_dir: dir.map(Path::to_path_buf),
            adopted,
            links: Vec::new(),
            backends: Default::default(),
            builds: BTreeMap::new(),
        };
        if adopted {
            let m: HashMap<&mut MapData, ServiceKey, Service> = dp.map("SERVICES")?;
            let live: Vec<(u32, u32)> = m
                .iter()
                .filter_map(|r| r.ok())
                .map(|(_, v)| (v.id, v.table))
                .collect();
            dp.live_table.extend(live);
        }
        dp.set_config(config)?;
        Ok(dp)
    }

    /// Whether the maps (and their connections) came from an earlier agent.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Services currently in the map, by (VIP, port, protocol): id and live table.
    pub fn installed_services(&mut self) -> Result<Vec<(ServiceKey, Service)>> {
        let m: HashMap<&mut MapData, ServiceKey, Service> = self.map("SERVICES")?;
        Ok(m.iter().filter_map(|r| r.ok()).collect())
    }

    /// Addresses currently in the map.
    pub fn installed_addrs(&mut self) -> Result<Vec<(Ipv4Addr, u32)>> {
        let m: HashMap<&mut MapData, u32, u32> = self.map("ADDRS")?;
        Ok(m.iter()
            .filter_map(|r| r.ok())
            .map(|(a, k)| (addr_of(a), k))
            .collect())
    }

    /// A backend as written in the map.
    pub fn backend(&mut self, id: u32) -> Result<Backend> {
        let m: Array<&mut MapData, Backend> = self.map("BACKENDS")?;
        Ok(m.get(&id, 0)?)
    }

    /// Detaches from every interface and removes the pins: nothing is left.
    pub fn destroy(mut self) -> Result<()> {
        self.links.clear();
        if let Some(dir) = self.pin_dir.take() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("link_") {
                        if let Ok(l) = PinnedLink::from_pin(&p) {
                            drop(l.unpin());
                        }
                    }
                    let _ = std::fs::remove_file(&p);
                }
            }
            std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
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
    /// With a pin directory the attachment is pinned there, so it outlives
    /// this process; an attachment pinned by an earlier agent is taken over
    /// by swapping in this program atomically, without a gap.
    pub fn attach(&mut self, iface: &str, mode: crate::config::XdpMode) -> Result<Attached> {
        use crate::config::XdpMode as M;
        let pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link_{iface}")));
        if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
            let link =
                PinnedLink::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(link))?;
            let prog = self.program();
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("replacing the program on {iface}"))?;
            let link = prog.take_link(id)?;
            self.links.push(link);
            return Ok(Attached::Replaced);
        }
        let prog = self.program();
        let tries: &[XdpMode] = match mode {
            M::Auto => &[XdpMode::Driver, XdpMode::Skb],
            M::Native => &[XdpMode::Driver],
            M::Skb => &[XdpMode::Skb],
        };
        let mut last = None;
        for &m in tries {
            match prog.attach(iface, m) {
                Ok(id) => {
                    let link = prog.take_link(id)?;
                    match pin {
                        Some(pin) => match FdLink::try_from(link) {
                            Ok(fd) => {
                                let pinned = fd
                                    .pin(&pin)
                                    .with_context(|| format!("pinning {}", pin.display()))?;
                                self.links.push(XdpLink::try_from(FdLink::from(pinned))?);
                            }
                            Err(e) => bail!("{iface}: the kernel gave no bpf_link to pin: {e}"),
                        },
                        None => self.links.push(link),
                    }
                    return Ok(Attached::New(m));
                }
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
        let v = Backend {
            addr: be_addr(b.addr),
            port: b.port.to_be(),
            _pad: 0,
        };
        if self.backends.get(&b.id) == Some(&v) {
            return Ok(());
        }
        let mut m: Array<&mut MapData, Backend> = self.map("BACKENDS")?;
        m.set(b.id, v, 0)?;
        self.backends.insert(b.id, v);
        Ok(())
    }

    /// [`Dataplane::apply_service`] for many services, building their Maglev
    /// tables on all cores, a few at a time.
    pub fn apply_services(&mut self, specs: &[&ServiceSpec]) -> Result<()> {
        let (seed, m) = (self.config.hash_seed, self.limits.maglev_size);
        // A few tables per core at a time: 100 tables of 65,537 slots built
        // at once would be 26 MB of the agent's peak.
        for batch in specs.chunks(TABLES_AT_ONCE) {
            let tables = crate::par::map(batch, |sp| maglev::build(seed, m, &sp.members()));
            for (spec, table) in batch.iter().zip(&tables) {
                self.install(spec, table)?;
            }
        }
        Ok(())
    }

    /// Installs or updates a service without a packet ever seeing a partial
    /// table: backends first, then the Maglev table into the staging half, then
    /// one update of the service entry flips to it.
    pub fn apply_service(&mut self, spec: &ServiceSpec) -> Result<()> {
        let table = maglev::build(
            self.config.hash_seed,
            self.limits.maglev_size,
            &spec.members(),
        );
        self.install(spec, &table)
    }

    fn install(&mut self, spec: &ServiceSpec, table: &[u32]) -> Result<()> {
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
        let next = match self.live_table.get(&spec.id) {
            Some(t) => t ^ 1,
            None => 0,
        };
        self.write_table(spec.id, next, table)?;
        *self.builds.entry(spec.id).or_default() += 1;
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

    /// Maps the slots of one table of a service.
    fn window(&self, service_id: u32, table: u32) -> Result<Window> {
        let m = self.limits.maglev_size as usize;
        let first = (service_id as usize * 2 + table as usize) * m;
        match self.ebpf.map("MAGLEV") {
            Some(aya::maps::Map::Array(a)) => Window::new(a.fd().as_fd(), first, m),
            _ => bail!("no MAGLEV array in the object"),
        }
    }

    fn write_table(&mut self, service_id: u32, table: u32, slots: &[u32]) -> Result<()> {
        let mut w = self.window(service_id, table)?;
        for (d, &id) in w.slots().iter_mut().zip(slots) {
            *d = u64::from(id);
        }
        // The flip of the service entry that follows is a syscall, which
        // orders these stores before any reader can see the new table.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The live Maglev table of a service, as the data path sees it.
    pub fn live_table(&mut self, service_id: u32) -> Result<Vec<u32>> {
        let table = *self
            .live_table
            .get(&service_id)
            .context("no such service")?;
        let mut w = self.window(service_id, table)?;
        Ok(w.slots().iter().map(|&v| v as u32).collect())
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

    /// Removes every connection of backend `id` and its NAT entry, so the
    /// next packet of such a flow starts a new one. Returns how many.
    pub fn purge_backend(&mut self, id: u32) -> Result<usize> {
        let doomed: Vec<(FlowKey, Conn)> = {
            let m: HashMap<&mut MapData, FlowKey, Conn> = self.map("CONNS")?;
            m.iter()
                .filter_map(|r| r.ok())
                .filter(|(_, c)| c.backend_id == id)
                .collect()
        };
        for (key, c) in &doomed {
            let rev = c.reverse_key(key.proto);
            let mut nats: HashMap<&mut MapData, FlowKey, Nat> = self.map("NATS")?;
            let _ = nats.remove(&rev);
            let mut conns: HashMap<&mut MapData, FlowKey, Conn> = self.map("CONNS")?;
            let _ = conns.remove(key);
        }
        Ok(doomed.len())
    }

    /// How many times each service's Maglev table was written.
    pub fn table_builds(&self, service_id: u32) -> u64 {
        self.builds.get(&service_id).copied().unwrap_or(0)
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

    /// Writes the entries of a flow another node set up; see
    /// [`Dataplane::apply_synced`].
    pub fn install_flow(&mut self, key: &FlowKey, conn: &Conn) -> Result<()> {
        let flow = SyncedFlow {
            key: *key,
            conn: *conn,
            closed: false,
        };
        self.apply_synced(&[flow], 0).map(|_| ())
    }

    /// Gives a flow another node saw close the short FIN timeout, if it is
    /// still mapped as `conn` says. Returns whether it was.
    pub fn close_flow(&mut self, key: &FlowKey, conn: &Conn, now: u64) -> Result<bool> {
        let flow = SyncedFlow {
            key: *key,
            conn: *conn,
            closed: true,
        };
        Ok(self.apply_synced(&[flow], now)? == 1)
    }

    /// Applies flows another node reported, in order, as the data path
    /// would have written them:
    /// - a flow set up gets its NAT and connection entries, and a different
    ///   earlier mapping of it gives up its NAT entry;
    /// - a flow closed gets the FIN timeout from `now` in both entries, if
    ///   it is still mapped as the record says.
    ///
    /// Each flow's lookups see the flows before it; the writes go out
    /// together, one batch per map, the NAT entries first so replies are
    /// restored as soon as a flow's packets are forwarded. Returns how many
    /// flows were applied.
    pub fn apply_synced(&mut self, flows: &[SyncedFlow], now: u64) -> Result<usize> {
        // This call's writes, seen before the maps; None is a removal.
        let mut conns: std::collections::HashMap<FlowKey, Conn> = Default::default();
        let mut nats: std::collections::HashMap<FlowKey, Option<Nat>> = Default::default();
        let mut applied = 0;
        for f in flows {
            let (key, proto) = (&f.key, f.key.proto);
            let rev = f.conn.reverse_key(proto);
            let current = match conns.get(key) {
                Some(c) => Some(*c),
                None => self.conn(key)?,
            };
            if f.closed {
                let Some(mut c) = current.filter(|c| c.reverse_key(proto) == rev) else {
                    continue;
                };
                c.flags |= lb_common::CT_FIN;
                c.last_seen = now;
                conns.insert(*key, c);
                if let Some(mut n) = self.nat_seen(&nats, &rev)?.filter(|n| n.restores(key)) {
                    n.flags |= lb_common::CT_FIN;
                    n.last_seen = now;
                    nats.insert(rev, Some(n));
                }
            } else {
                if let Some(old) = current {
                    let old_rev = old.reverse_key(proto);
                    if old_rev != rev
                        && self
                            .nat_seen(&nats, &old_rev)?
                            .is_some_and(|n| n.restores(key))
                    {
                        nats.insert(old_rev, None);
                    }
                }
                let c = &f.conn;
                let nat = Nat::new(key, c.backend_id, c.service_id, c.flags, c.last_seen);
                nats.insert(rev, Some(nat));
                conns.insert(*key, *c);
            }
            applied += 1;
        }
        let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in nats {
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => gone.push(k),
            }
        }
        if !gone.is_empty() {
            let mut m: HashMap<&mut MapData, FlowKey, Nat> = self.map("NATS")?;
            for k in &gone {
                let _ = m.remove(k);
            }
        }
        self.update_batch("NATS", &keys, &values)?;
        let (keys, values): (Vec<FlowKey>, Vec<Conn>) = conns.into_iter().unzip();
        self.update_batch("CONNS", &keys, &values)?;
        Ok(applied)
    }

    /// The NAT entry at `key` as this call's pending writes leave it.
    fn nat_seen(
        &mut self,
        pending: &std::collections::HashMap<FlowKey, Option<Nat>>,
        key: &FlowKey,
    ) -> Result<Option<Nat>> {
        match pending.get(key) {
            Some(n) => Ok(*n),
            None => self.nat(key),
        }
    }

    /// Writes `keys[i]` → `values[i]` into the hash map `name` with one
    /// `BPF_MAP_UPDATE_BATCH` call (aya has no batch operations).
    fn update_batch<V: Pod>(&self, name: &str, keys: &[FlowKey], values: &[V]) -> Result<()> {
        use std::os::fd::AsRawFd;
        /// The `batch` member of `union bpf_attr`.
        #[repr(C)]
        struct BatchAttr {
            in_batch: u64,
            out_batch: u64,
            keys: u64,
            values: u64,
            count: u32,
            map_fd: u32,
            elem_flags: u64,
            flags: u64,
        }
        const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
        assert_eq!(keys.len(), values.len());
        if keys.is_empty() {
            return Ok(());
        }
        // The kernel reads keys and values at the map's sizes: they must be ours.
        let (key, value) = (std::mem::size_of::<FlowKey>(), std::mem::size_of::<V>());
        if !pinned_layouts().contains(&(name, key as u32, value as u32)) {
            bail!("map {name} does not hold {key}-byte keys and {value}-byte values");
        }
        let fd = match self
            .ebpf
            .map(name)
            .with_context(|| format!("no map {name}"))?
        {
            aya::maps::Map::HashMap(m) | aya::maps::Map::LruHashMap(m) => m.fd().as_fd(),
            _ => bail!("map {name} is not a hash map"),
        };
        let mut attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the kernel reads `count` keys and values of the map's
        // sizes (those of FlowKey and V, checked above; pinned maps were
        // checked when adopted) from the two slices, and writes back `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        if rc < 0 {
            bail!(
                "writing {} entries to {name}: {} of them written: {}",
                keys.len(),
                attr.count,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// `SYNC` records lost to a full ring, summed over CPUs.
    pub fn sync_lost(&mut self) -> Result<u64> {
        let m: PerCpuArray<&mut MapData, u64> = self.map("SYNC_LOST")?;
        Ok(m.get(&0, 0)?.iter().sum())
    }

    /// A reader of the `SYNC` ring, where the data path reports flows a
    /// peer could not derive. One reader at a time.
    pub fn sync_ring(&mut self) -> Result<RingBuf<MapData>> {
        let m: &MapData = match self.ebpf.map("SYNC").context("no map SYNC")? {
            aya::maps::Map::RingBuf(m) => m,
            _ => bail!("map SYNC is not a ring buffer"),
        };
        // A second descriptor of the same map: the object keeps its own.
        let id = m.info()?.id();
        let data = MapData::from_id(id).context("opening the SYNC ring")?;
        Ok(RingBuf::try_from(aya::maps::Map::RingBuf(data))?)
    }
}

fn lookup<V>(r: Result<V, aya::maps::MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
