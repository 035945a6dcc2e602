//! The maps of the data-path object: one table of their names, sizes and
//! layouts, and the maps themselves, taken out of the object once at load
//! time and held by type.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData, MapInfo, PerCpuArray},
    Ebpf, EbpfLoader,
};
use lb_common::{
    Backend, Config, Conn, FlowKey, Nat, NextHop, NextHopKey, Reason, Service, ServiceKey, Traffic,
};

use crate::plan::Limits;

/// How many entries a map gets at load time.
#[derive(Clone, Copy)]
enum Size {
    /// As the object declares it.
    Fixed,
    /// One per service.
    Services,
    /// One per backend.
    Backends,
    /// Two Maglev tables per service.
    Maglev,
    /// The connection table's size.
    Conns,
    /// One per [`Reason`]: fixed by the version, not by the config. A pinned
    /// one of another size (another version's) starts afresh.
    Reasons,
}

/// One map of the object.
struct Def {
    name: &'static str,
    size: Size,
    /// Key and value sizes, for the maps whose layout is ours.
    layout: Option<(usize, usize)>,
}

const fn def(name: &'static str, size: Size, key: usize, value: usize) -> Def {
    Def {
        name,
        size,
        layout: Some((key, value)),
    }
}

/// Every map of the object. With a pin directory each is pinned there under
/// its name, and a restarted agent reuses them: connections survive.
const DEFS: [Def; 14] = {
    use std::mem::size_of;
    [
        def("ADDRS", Size::Fixed, 4, 4),
        def(
            "SERVICES",
            Size::Services,
            size_of::<ServiceKey>(),
            size_of::<Service>(),
        ),
        def("BACKENDS", Size::Backends, 4, size_of::<Backend>()),
        def("MAGLEV", Size::Maglev, 4, 4),
        def(
            "CONNS",
            Size::Conns,
            size_of::<FlowKey>(),
            size_of::<Conn>(),
        ),
        def("NATS", Size::Conns, size_of::<FlowKey>(), size_of::<Nat>()),
        def("CONFIG", Size::Fixed, 4, size_of::<Config>()),
        def(
            "NEXTHOPS",
            Size::Fixed,
            size_of::<NextHopKey>(),
            size_of::<NextHop>(),
        ),
        Def {
            name: "DEVMAP",
            size: Size::Fixed,
            layout: None,
        },
        def("REASONS", Size::Reasons, 4, 8),
        def("SERVICE_STATS", Size::Services, 4, size_of::<Traffic>()),
        def("BACKEND_STATS", Size::Backends, 4, size_of::<Traffic>()),
        Def {
            name: "SYNC",
            size: Size::Fixed,
            layout: None,
        },
        def("SYNC_LOST", Size::Fixed, 4, 8),
    ]
};

impl Size {
    fn entries(self, l: &Limits) -> Result<Option<u32>> {
        Ok(match self {
            Size::Fixed => None,
            Size::Services => Some(l.max_services),
            Size::Backends => Some(l.max_backends),
            Size::Conns => Some(l.conn_max),
            Size::Reasons => Some(Reason::COUNT),
            Size::Maglev => Some(
                l.max_services
                    .checked_mul(2 * l.maglev_size)
                    .context("max_services × 2 × Maglev size overflows")?,
            ),
        })
    }
}

/// Sizes every map for `limits` and, with a pin directory, pins each there
/// or reuses the one already pinned. Returns whether maps were reused.
pub fn prepare(loader: &mut EbpfLoader<'_>, limits: &Limits, dir: Option<&Path>) -> Result<bool> {
    for d in &DEFS {
        if let Some(n) = d.size.entries(limits)? {
            loader.map_max_entries(d.name, n);
        }
    }
    let Some(dir) = dir else {
        return Ok(false);
    };
    let adopted = dir.join("CONNS").exists();
    if adopted {
        check_pinned(dir, limits)?;
    }
    for d in &DEFS {
        loader.map_pin_path(d.name, dir.join(d.name));
    }
    Ok(adopted)
}

/// Refuses pinned maps this agent cannot reuse as they are, and replaces
/// those it may start afresh.
fn check_pinned(dir: &Path, limits: &Limits) -> Result<()> {
    let mut fresh = Vec::new();
    for d in &DEFS {
        let path = dir.join(d.name);
        let info = match MapInfo::from_pin(&path) {
            Ok(info) => info,
            // The tables the connections live in and that the config sizes
            // must be there; the others are made if missing.
            Err(e) if !matches!(d.size, Size::Fixed | Size::Reasons) => {
                return Err(e)
                    .with_context(|| format!("reading pinned map {} in {}", d.name, dir.display()))
            }
            Err(_) => continue,
        };
        if let Some(n) = d.size.entries(limits)? {
            if matches!(d.size, Size::Reasons) && info.max_entries() != n {
                // Counters start afresh at this version's size (the old
                // program keeps its own until it is replaced).
                fresh.push(path);
                continue;
            }
            if info.max_entries() != n {
                bail!(
                    "pinned map {} in {} has {} entries, the config needs {n}: \
                     stop the agent without --keep-dataplane (or remove the directory) to resize",
                    d.name,
                    dir.display(),
                    info.max_entries()
                );
            }
        }
        // A data path left by another version may lay its maps out
        // differently: reusing them would fail verification or misread
        // entries.
        if let Some((key, value)) = d.layout {
            let (k, v) = (info.key_size() as usize, info.value_size() as usize);
            if (k, v) != (key, value) {
                bail!(
                    "pinned map {} in {} has {k}-byte keys and {v}-byte values, this \
                     version needs {key} and {value}: it was left by another version; stop \
                     that data path (or remove the directory) first",
                    d.name,
                    dir.display(),
                );
            }
        }
    }
    for path in fresh {
        std::fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

/// The maps the agent reads and writes, by type.
pub struct Maps {
    /// VIP and SNAT addresses → `ADDR_*` bits.
    pub addrs: HashMap<MapData, u32, u32>,
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub backends: Array<MapData, Backend>,
    /// The Maglev tables, written through a memory mapping only.
    pub maglev: MapData,
    pub conns: HashMap<MapData, FlowKey, Conn>,
    pub nats: HashMap<MapData, FlowKey, Nat>,
    pub config: Array<MapData, Config>,
    pub devmap: DevMapHash<MapData>,
    pub reasons: PerCpuArray<MapData, u64>,
    pub service_stats: PerCpuArray<MapData, Traffic>,
    pub backend_stats: PerCpuArray<MapData, Traffic>,
    /// The connection-sync ring.
    pub sync: MapData,
    pub sync_lost: PerCpuArray<MapData, u64>,
}

impl Maps {
    /// Takes the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("no map {name}"))
        };
        fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(m: Map, name: &str) -> Result<T> {
            T::try_from(m).with_context(|| format!("map {name}"))
        }
        fn array(m: Map, name: &str) -> Result<MapData> {
            match m {
                Map::Array(d) => Ok(d),
                _ => bail!("map {name} is not an array"),
            }
        }
        fn ring(m: Map, name: &str) -> Result<MapData> {
            match m {
                Map::RingBuf(d) => Ok(d),
                _ => bail!("map {name} is not a ring buffer"),
            }
        }
        Ok(Maps {
            addrs: typed(take("ADDRS")?, "ADDRS")?,
            services: typed(take("SERVICES")?, "SERVICES")?,
            backends: typed(take("BACKENDS")?, "BACKENDS")?,
            maglev: array(take("MAGLEV")?, "MAGLEV")?,
            conns: typed(take("CONNS")?, "CONNS")?,
            nats: typed(take("NATS")?, "NATS")?,
            config: typed(take("CONFIG")?, "CONFIG")?,
            devmap: typed(take("DEVMAP")?, "DEVMAP")?,
            reasons: typed(take("REASONS")?, "REASONS")?,
            service_stats: typed(take("SERVICE_STATS")?, "SERVICE_STATS")?,
            backend_stats: typed(take("BACKEND_STATS")?, "BACKEND_STATS")?,
            sync: ring(take("SYNC")?, "SYNC")?,
            sync_lost: typed(take("SYNC_LOST")?, "SYNC_LOST")?,
        })
    }
}

/// `Ok(None)` for a missing key.
pub fn lookup<V>(r: Result<V, aya::maps::MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `key`; a missing key is not an error.
pub fn remove<K: aya::Pod, V: aya::Pod>(m: &mut HashMap<MapData, K, V>, key: &K) -> Result<()> {
    match m.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
