//! Loads the embedded XDP object, attaches it, and programs its maps from
//! a plan's specs.

mod flows;
mod maps;
mod window;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{Backend, Config, Reason, Service, ServiceKey, Traffic};

pub use flows::{FlowCounts, SyncedFlow};

use crate::{
    config::XdpMode as Mode,
    maglev,
    plan::{BackendSpec, Limits, ServiceSpec},
    sys::{addr_of, be_addr},
};
use maps::{remove, Maps};
use window::Window;

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

/// Maglev tables built per round of [`Dataplane::apply_services`].
const TABLES_AT_ONCE: usize = 8;

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
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
        if let Some(dir) = dir {
            crate::sys::ensure_bpffs(dir)?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::sys::require_bpffs(dir)?;
        }
        let mut loader = EbpfLoader::new();
        let adopted = maps::prepare(&mut loader, &limits, dir)?;
        let mut ebpf = loader.load(OBJECT).context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("lb")
            .context("no program lb")?
            .try_into()?;
        prog.load().context("verifying the XDP program")?;
        let maps = Maps::take(&mut ebpf)?;
        let mut dp = Dataplane {
            ebpf,
            maps,
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
            let live: Vec<(u32, u32)> = dp
                .maps
                .services
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
    pub fn installed_services(&self) -> Result<Vec<(ServiceKey, Service)>> {
        Ok(self.maps.services.iter().filter_map(|r| r.ok()).collect())
    }

    /// Addresses currently in the map.
    pub fn installed_addrs(&self) -> Result<Vec<(Ipv4Addr, u32)>> {
        Ok(self
            .maps
            .addrs
            .iter()
            .filter_map(|r| r.ok())
            .map(|(a, k)| (addr_of(a), k))
            .collect())
    }

    /// A backend as written in the map.
    pub fn backend(&self, id: u32) -> Result<Backend> {
        Ok(self.maps.backends.get(&id, 0)?)
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
    pub fn attach(&mut self, iface: &str, mode: Mode) -> Result<Attached> {
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
            Mode::Auto => &[XdpMode::Driver, XdpMode::Skb],
            Mode::Native => &[XdpMode::Driver],
            Mode::Skb => &[XdpMode::Skb],
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

    /// Writes the global settings.
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        self.maps.config.set(0, config, 0)?;
        self.config = config;
        Ok(())
    }

    /// Marks `addr` as VIP and/or SNAT address (`ADDR_*` bits); 0 removes it.
    pub fn set_addr(&mut self, addr: Ipv4Addr, kind: u32) -> Result<()> {
        if kind == 0 {
            remove(&mut self.maps.addrs, &be_addr(addr))
        } else {
            Ok(self.maps.addrs.insert(be_addr(addr), kind, 0)?)
        }
    }

    /// Lets the program redirect to `ifindex`.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<()> {
        self.maps.devmap.insert(ifindex, ifindex, None, 0)?;
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
        self.maps.backends.set(b.id, v, 0)?;
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
            let tables = crate::par::map(batch, |sp| maglev::build(seed, m, &sp.backends));
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
            &spec.backends,
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
        self.maps.services.insert(spec.key(), spec.value(next), 0)?;
        self.live_table.insert(spec.id, next);
        Ok(())
    }

    /// Removes a service; its established flows keep their entries and drain.
    pub fn remove_service(&mut self, spec: &ServiceSpec) -> Result<()> {
        remove(&mut self.maps.services, &spec.key())?;
        self.live_table.remove(&spec.id);
        Ok(())
    }

    /// Maps the slots of one table of a service.
    fn window(&self, service_id: u32, table: u32) -> Result<Window> {
        let m = self.limits.maglev_size as usize;
        let first = (service_id as usize * 2 + table as usize) * m;
        Window::new(self.maps.maglev.fd().as_fd(), first, m)
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
    pub fn live_table(&self, service_id: u32) -> Result<Vec<u32>> {
        let table = *self
            .live_table
            .get(&service_id)
            .context("no such service")?;
        let mut w = self.window(service_id, table)?;
        Ok(w.slots().iter().map(|&v| v as u32).collect())
    }

    /// Counters of every reason, summed over CPUs.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>> {
        Reason::ALL
            .iter()
            .map(|&r| Ok((r, self.reason(r)?)))
            .collect()
    }

    /// One reason's counter, summed over CPUs.
    pub fn reason(&self, r: Reason) -> Result<u64> {
        Ok(self.maps.reasons.get(&(r as u32), 0)?.iter().sum())
    }

    /// Traffic of a service, summed over CPUs.
    pub fn service_traffic(&self, id: u32) -> Result<Traffic> {
        Ok(sum(self.maps.service_stats.get(&id, 0)?.iter()))
    }

    /// Traffic of a backend, summed over CPUs.
    pub fn backend_traffic(&self, id: u32) -> Result<Traffic> {
        Ok(sum(self.maps.backend_stats.get(&id, 0)?.iter()))
    }

    /// How many times each service's Maglev table was written.
    pub fn table_builds(&self, service_id: u32) -> u64 {
        self.builds.get(&service_id).copied().unwrap_or(0)
    }

    /// `SYNC` records lost to a full ring, summed over CPUs.
    pub fn sync_lost(&self) -> Result<u64> {
        Ok(self.maps.sync_lost.get(&0, 0)?.iter().sum())
    }

    /// A reader of the `SYNC` ring, where the data path reports flows a
    /// peer could not derive. One reader at a time.
    pub fn sync_ring(&self) -> Result<RingBuf<MapData>> {
        // A second descriptor of the same map: the agent keeps its own.
        let id = self.maps.sync.info()?.id();
        let data = MapData::from_id(id).context("opening the SYNC ring")?;
        Ok(RingBuf::try_from(aya::maps::Map::RingBuf(data))?)
    }
}

fn sum<'a>(per_cpu: impl Iterator<Item = &'a Traffic>) -> Traffic {
    let mut t = Traffic::default();
    for v in per_cpu {
        t += *v;
    }
    t
}
