//! Config + runtime state → a plan: every map entry the data path should
//! hold, as a plain value. The agent applies the difference between two plans;
//! `xlb check` prints one. No kernel is needed to build or test a plan.

mod spec;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use lb_common::{ADDR_SNAT, ADDR_VIP, SVC_ENABLED, SVC_SRC_HASH};

pub use spec::{
    default_config, proto_name, secs, BackendKey, BackendSpec, Limits, ServiceAddr, ServiceSpec,
};

use crate::config::{Config, LbAlgo, RealServer, ServerKey, VirtualServer};

/// What the agent knows beyond the config: which VRRP instances this node is
/// MASTER of, and which real servers are down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// VRRP instances in MASTER state, with the monotonic ns when each
    /// became MASTER here (0 when not known: the config's hint).
    pub masters: BTreeMap<String, u64>,
    /// Real servers failing their checks.
    pub down: BTreeSet<ServerKey>,
    /// Weights set by `misc_dynamic` checks, overriding the config's.
    pub weights: BTreeMap<ServerKey, u32>,
}

impl Runtime {
    /// Before VRRP and health checks run: the instances whose configured
    /// `state` is MASTER, and down only the `alpha` servers with a checker.
    pub fn from_config_hints(c: &Config) -> Self {
        Runtime {
            masters: c
                .vrrp_instances
                .iter()
                .filter(|i| i.state == crate::config::VrrpState::Master)
                .map(|i| (i.name.clone(), 0))
                .collect(),
            down: c
                .virtual_servers
                .iter()
                .flat_map(|v| {
                    v.real_servers
                        .iter()
                        .filter(|r| r.alpha && r.checker_count() > 0)
                        .map(|r| ServerKey::of(v, r))
                })
                .collect(),
            weights: BTreeMap::new(),
        }
    }
}

/// Stable ids: a service or backend keeps its id across reloads, so its
/// counters and Maglev tables stay put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub services: BTreeMap<ServiceAddr, u32>,
    pub backends: BTreeMap<BackendKey, u32>,
}

/// Ids for `keys`: kept from `prev`, new ones get the lowest free id.
fn assign<K: Ord + Clone>(keys: &[K], prev: &BTreeMap<K, u32>) -> BTreeMap<K, u32> {
    let mut out: BTreeMap<K, u32> = keys
        .iter()
        .filter_map(|k| prev.get(k).map(|&id| (k.clone(), id)))
        .collect();
    let mut used: BTreeSet<u32> = out.values().copied().collect();
    let mut next = 0;
    for k in keys {
        if out.contains_key(k) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        out.insert(k.clone(), next);
        used.insert(next);
    }
    out
}

/// One service as planned, with the names `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedService {
    pub name: String,
    pub spec: ServiceSpec,
    /// Real servers that are up; the sorry server is serving instead when below quorum.
    pub healthy: usize,
    pub sorry_active: bool,
}

/// Everything the data path should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Interfaces the program attaches to; the first is `global.interface`.
    pub interfaces: Vec<String>,
    pub limits: Limits,
    pub config: lb_common::Config,
    /// VIP and SNAT addresses with their `ADDR_*` bits.
    pub addrs: BTreeMap<Ipv4Addr, u32>,
    pub services: Vec<PlannedService>,
    pub ids: Ids,
}

impl Plan {
    /// Builds the plan for `c` in state `rt`, keeping the ids of `prev`.
    pub fn build(c: &Config, rt: &Runtime, prev: Option<&Ids>) -> Plan {
        let empty = Ids::default();
        let prev = prev.unwrap_or(&empty);
        let g = &c.global;
        let skeys: Vec<ServiceAddr> = c
            .virtual_servers
            .iter()
            .map(|v| ServiceAddr::of(v))
            .collect();
        let service_ids = assign(&skeys, &prev.services);
        let bkeys: Vec<BackendKey> = c
            .virtual_servers
            .iter()
            .flat_map(|v| {
                let service = ServiceAddr::of(v);
                let key = move |addr, port, sorry| BackendKey {
                    service,
                    addr,
                    port,
                    sorry,
                };
                let reals = v
                    .real_servers
                    .iter()
                    .map(move |r| key(r.address, r.port, false));
                let sorry = v.sorry_server.map(|s| key(s.address, s.port, true));
                reals.chain(sorry)
            })
            .collect();
        let backend_ids = assign(&bkeys, &prev.backends);

        let mut addrs = BTreeMap::new();
        let mut services = Vec::new();
        for v in &c.virtual_servers {
            *addrs.entry(v.vip).or_insert(0) |= ADDR_VIP;
            for a in &v.snat.addresses {
                *addrs.entry(*a).or_insert(0) |= ADDR_SNAT;
            }
            services.push(plan_service(v, rt, &service_ids, &backend_ids));
        }
        services.sort_by_key(|s| s.spec.id);
        let ns = |s: f64| (s * 1e9) as u64;
        let mut interfaces = vec![g.interface.clone()];
        interfaces.extend(
            g.extra_interfaces
                .iter()
                .filter(|i| **i != g.interface)
                .cloned(),
        );
        Plan {
            interfaces,
            limits: Limits {
                max_services: g.max_services,
                max_backends: g.max_backends,
                conn_max: g.conntrack.max_entries,
                maglev_size: g.maglev_size,
            },
            config: lb_common::Config {
                hash_seed: g.hash_seed,
                maglev_size: g.maglev_size,
                tcp_timeout_ns: ns(g.conntrack.tcp_timeout),
                tcp_fin_timeout_ns: ns(g.conntrack.tcp_fin_timeout),
                udp_timeout_ns: ns(g.conntrack.udp_timeout),
                nexthop_ttl_ns: ns(g.nexthop_ttl).min(secs(60)),
                flags: match &g.lvs_sync_daemon {
                    Some(s) if s.all_flows => lb_common::CFG_SYNC | lb_common::CFG_SYNC_ALL,
                    Some(_) => lb_common::CFG_SYNC,
                    None => 0,
                },
                _pad: 0,
                // Three reports per timeout: one may be lost.
                sync_refresh_ns: if g.lvs_sync_daemon.is_some() {
                    ns(g.conntrack.tcp_timeout) / 3
                } else {
                    0
                },
                tcp_syn_timeout_ns: ns(g.conntrack.tcp_syn_timeout),
            },
            addrs,
            services,
            ids: Ids {
                services: service_ids,
                backends: backend_ids,
            },
        }
    }

    /// This plan after runtime changes (health, weights) to the virtual
    /// servers named in `changed` only: the config is the one this plan was
    /// built from, so every id stays and the other services are reused. A
    /// server going down in a 100,000-server pool then costs its own
    /// service, not the whole pool.
    pub fn update_services(&self, c: &Config, rt: &Runtime, changed: &BTreeSet<&str>) -> Plan {
        let mut next = self.clone();
        for v in c
            .virtual_servers
            .iter()
            .filter(|v| changed.contains(v.name.as_str()))
        {
            let fresh = plan_service(v, rt, &self.ids.services, &self.ids.backends);
            if let Some(s) = next
                .services
                .iter_mut()
                .find(|s| s.spec.id == fresh.spec.id)
            {
                *s = fresh;
            }
        }
        next
    }

    /// Whether a loaded data path can take this plan without reloading the
    /// program (the map sizes are fixed at load time).
    pub fn fits(&self, loaded: &Limits) -> bool {
        self.limits == *loaded
    }
}

/// One service as planned for runtime state `rt`.
fn plan_service(
    v: &VirtualServer,
    rt: &Runtime,
    service_ids: &BTreeMap<ServiceAddr, u32>,
    backend_ids: &BTreeMap<BackendKey, u32>,
) -> PlannedService {
    let sk = ServiceAddr::of(v);
    let id_of = |addr, port, sorry| {
        backend_ids[&BackendKey {
            service: sk,
            addr,
            port,
            sorry,
        }]
    };
    let enabled = v
        .vrrp_instance
        .as_ref()
        .is_none_or(|i| rt.masters.contains_key(i));
    let mut flags = if enabled { SVC_ENABLED } else { 0 };
    if v.lb_algo == LbAlgo::Sh {
        flags |= SVC_SRC_HASH;
    }
    // This service's share of the runtime state, looked up without
    // a key per server: 100,000 servers are rebuilt on every change.
    let down: BTreeSet<(Ipv4Addr, u16)> = rt
        .down
        .range(ServerKey::range(&v.name))
        .map(|k| (k.addr, k.port))
        .collect();
    let weights: BTreeMap<(Ipv4Addr, u16), u32> = rt
        .weights
        .range(ServerKey::range(&v.name))
        .map(|(k, w)| ((k.addr, k.port), *w))
        .collect();
    let up = |r: &RealServer| !down.contains(&(r.address, r.port));
    let mut backends: Vec<BackendSpec> = v
        .real_servers
        .iter()
        .map(|r| BackendSpec {
            id: id_of(r.address, r.port, false),
            addr: r.address,
            port: r.port,
            // Down, or inhibited: no new flows either way.
            weight: if up(r) {
                weights
                    .get(&(r.address, r.port))
                    .copied()
                    .unwrap_or(r.weight)
            } else {
                0
            },
        })
        .collect();
    let healthy = v.real_servers.iter().filter(|r| up(r)).count();
    let mut sorry_active = false;
    if let Some(s) = v.sorry_server {
        if healthy < v.quorum as usize {
            sorry_active = true;
            for b in &mut backends {
                b.weight = 0;
            }
            backends.push(BackendSpec {
                id: id_of(s.address, s.port, true),
                addr: s.address,
                port: s.port,
                weight: 1,
            });
        }
    }
    PlannedService {
        name: v.name.clone(),
        healthy,
        sorry_active,
        spec: ServiceSpec {
            id: service_ids[&sk],
            vip: v.vip,
            port: v.port,
            proto: v.protocol.number(),
            flags,
            snat_addrs: v.snat.addresses.clone(),
            snat_ports: v.snat.port_range().unwrap_or((1024, 65535)),
            backends,
            since_ns: v
                .vrrp_instance
                .as_ref()
                .and_then(|i| rt.masters.get(i))
                .copied()
                .unwrap_or(0),
        },
    }
}

/// What changes from one plan to the next.
#[derive(Debug, Default, PartialEq)]
pub struct Diff<'a> {
    pub config: Option<lb_common::Config>,
    /// Addresses to set (bits) or remove (0).
    pub addrs: Vec<(Ipv4Addr, u32)>,
    pub upsert: Vec<&'a ServiceSpec>,
    pub remove: Vec<ServiceSpec>,
}

impl Plan {
    /// The changes that turn `old` (or an empty data path) into `self`.
    pub fn diff<'a>(&'a self, old: Option<&Plan>) -> Diff<'a> {
        let mut d = Diff::default();
        if old.map(|o| o.config) != Some(self.config) {
            d.config = Some(self.config);
        }
        let old_addrs = old.map(|o| o.addrs.clone()).unwrap_or_default();
        for (a, k) in &self.addrs {
            if old_addrs.get(a) != Some(k) {
                d.addrs.push((*a, *k));
            }
        }
        for a in old_addrs.keys() {
            if !self.addrs.contains_key(a) {
                d.addrs.push((*a, 0));
            }
        }
        let old_services: BTreeMap<u32, &ServiceSpec> = old
            .map(|o| o.services.iter().map(|s| (s.spec.id, &s.spec)).collect())
            .unwrap_or_default();
        for s in &self.services {
            if old_services.get(&s.spec.id) != Some(&&s.spec) {
                d.upsert.push(&s.spec);
            }
        }
        for (id, s) in &old_services {
            // Gone, or its id now belongs to another (VIP, port, protocol).
            if !self
                .services
                .iter()
                .any(|n| n.spec.id == *id && n.spec.addr() == s.addr())
            {
                d.remove.push((*s).clone());
            }
        }
        d
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        let c = &self.config;
        writeln!(f, "interfaces: {}", self.interfaces.join(", "))?;
        writeln!(
            f,
            "limits: {} services, {} backends, {} connections, Maglev M={}",
            l.max_services, l.max_backends, l.conn_max, l.maglev_size
        )?;
        writeln!(
            f,
            "timeouts: tcp {}s, tcp after FIN {}s, tcp half-open {}s, udp {}s; next hop reused {}s; hash seed {:#x}",
            c.tcp_timeout_ns as f64 / 1e9,
            c.tcp_fin_timeout_ns as f64 / 1e9,
            c.tcp_syn_timeout_ns as f64 / 1e9,
            c.udp_timeout_ns as f64 / 1e9,
            c.nexthop_ttl_ns as f64 / 1e9,
            c.hash_seed
        )?;
        for (a, k) in &self.addrs {
            let kind = match (k & ADDR_VIP != 0, k & ADDR_SNAT != 0) {
                (true, true) => "VIP and SNAT",
                (true, false) => "VIP",
                _ => "SNAT",
            };
            writeln!(f, "address {a}: {kind}")?;
        }
        for s in &self.services {
            let p = &s.spec;
            let algo = if p.flags & SVC_SRC_HASH != 0 {
                "sh"
            } else {
                "mh"
            };
            let state = if p.flags & SVC_ENABLED != 0 {
                "serving"
            } else {
                "standby (not VRRP MASTER)"
            };
            let snat: Vec<String> = p.snat_addrs.iter().map(|a| a.to_string()).collect();
            writeln!(
                f,
                "service {} {:?}: {} {algo}, {state}, SNAT {} ports {}-{}",
                p.id,
                s.name,
                p.addr(),
                snat.join(","),
                p.snat_ports.0,
                p.snat_ports.1
            )?;
            if s.sorry_active {
                writeln!(
                    f,
                    "  below quorum ({} healthy): sorry server serving",
                    s.healthy
                )?;
            }
            for b in &p.backends {
                writeln!(
                    f,
                    "  backend {} {}:{} weight {}",
                    b.id, b.addr, b.port, b.weight
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const CFG: &str = "\
global: {interface: eth0}
vrrp_instances:
  - {name: VI_1, virtual_router_id: 1, priority: 100, state: MASTER}
  - {name: VI_2, virtual_router_id: 2, priority: 100}
virtual_servers:
  - name: web
    vip: 192.0.2.10
    port: 80
    vrrp_instance: VI_1
    snat: {addresses: [192.0.2.2], ports: 2000-3000}
    quorum: 2
    sorry_server: {address: 198.51.100.9, port: 80}
    real_servers:
      - {address: 198.51.100.1, port: 80, weight: 2}
      - {address: 198.51.100.2, port: 80}
  - name: dns
    vip: 192.0.2.10
    port: 53
    protocol: udp
    lb_algo: sh
    vrrp_instance: VI_2
    snat: {addresses: [192.0.2.10], ports: 1024-65535}
    real_servers:
      - {address: 198.51.100.1, port: 53}
";

    fn cfg(text: &str) -> Config {
        parse(text, "t.yaml").unwrap()
    }

    fn web(addr: &str) -> ServerKey {
        ServerKey {
            service: "web".into(),
            addr: addr.parse().unwrap(),
            port: 80,
        }
    }

    #[test]
    fn builds_services_addresses_and_flags() {
        let c = cfg(CFG);
        let p = Plan::build(&c, &Runtime::from_config_hints(&c), None);
        assert_eq!(p.services.len(), 2);
        let web = &p.services[0].spec;
        assert_eq!(
            (web.id, web.flags, web.snat_ports),
            (0, SVC_ENABLED, (2000, 3000))
        );
        assert_eq!(
            web.backends
                .iter()
                .map(|b| (b.id, b.weight))
                .collect::<Vec<_>>(),
            [(0, 2), (1, 1)]
        );
        let dns = &p.services[1].spec;
        assert_eq!(dns.flags, SVC_SRC_HASH, "VI_2 is not MASTER: standby");
        assert_eq!(
            p.addrs[&"192.0.2.10".parse().unwrap()],
            ADDR_VIP | ADDR_SNAT
        );
        assert_eq!(p.addrs[&"192.0.2.2".parse().unwrap()], ADDR_SNAT);
    }

    #[test]
    fn down_servers_and_quorum() {
        let c = cfg(CFG);
        let mut rt = Runtime::from_config_hints(&c);
        rt.down.insert(web("198.51.100.2"));
        let p = Plan::build(&c, &rt, None);
        let web = &p.services[0];
        assert!(web.sorry_active, "1 healthy < quorum 2");
        let w: Vec<_> = web
            .spec
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect();
        assert_eq!(
            w,
            [
                ("198.51.100.1".into(), 0),
                ("198.51.100.2".into(), 0),
                ("198.51.100.9".into(), 1)
            ]
        );
        rt.down.clear();
        let p2 = Plan::build(&c, &rt, Some(&p.ids));
        assert!(!p2.services[0].sorry_active);
        assert_eq!(p2.services[0].spec.backends.len(), 2);
    }

    #[test]
    fn ids_survive_reloads_and_diff_is_minimal() {
        let c = cfg(CFG);
        let rt = Runtime::from_config_hints(&c);
        let p1 = Plan::build(&c, &rt, None);
        assert_eq!(p1.diff(None).upsert.len(), 2);
        // Remove the first real server of web: web changes, dns does not.
        let c2 = cfg(&CFG.replace("      - {address: 198.51.100.1, port: 80, weight: 2}\n", ""));
        let p2 = Plan::build(&c2, &rt, Some(&p1.ids));
        assert_eq!(
            p2.services[0].spec.backends[0].id, 1,
            "198.51.100.2 keeps its id"
        );
        let d = p2.diff(Some(&p1));
        assert_eq!(d.upsert.iter().map(|s| s.id).collect::<Vec<_>>(), [0]);
        assert!(d.remove.is_empty() && d.addrs.is_empty() && d.config.is_none());
        // Drop the dns service: it is removed, and its VIP stays (web uses it).
        let c3 = cfg(&CFG[..CFG.find("  - name: dns").unwrap()]);
        let p3 = Plan::build(&c3, &rt, Some(&p1.ids));
        let d = p3.diff(Some(&p1));
        assert_eq!(d.remove.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
        assert_eq!(d.addrs, [("192.0.2.10".parse().unwrap(), ADDR_VIP)]);
        // A new service takes the lowest free id.
        let p4 = Plan::build(&c, &rt, Some(&p3.ids));
        assert_eq!(p4.services[1].spec.id, 1);
    }

    #[test]
    fn updating_some_services_equals_a_full_build() {
        let c = cfg(CFG);
        let mut rt = Runtime::from_config_hints(&c);
        let p = Plan::build(&c, &rt, None);
        rt.down.insert(web("198.51.100.2"));
        rt.weights.insert(web("198.51.100.1"), 9);
        let full = Plan::build(&c, &rt, Some(&p.ids));
        let part = p.update_services(&c, &rt, &["web"].into());
        assert_eq!(part, full);
        assert_ne!(part, p);
        // Only web's table is rewritten.
        let d = part.diff(Some(&p));
        assert_eq!(d.upsert.iter().map(|s| s.port).collect::<Vec<_>>(), [80]);
    }

    #[test]
    fn display_lists_everything() {
        let c = cfg(CFG);
        let text = Plan::build(&c, &Runtime::from_config_hints(&c), None).to_string();
        assert!(
            text.contains(
                "service 0 \"web\": 192.0.2.10:80/tcp mh, serving, SNAT 192.0.2.2 ports 2000-3000"
            ),
            "{text}"
        );
        assert!(
            text.contains("service 1 \"dns\": 192.0.2.10:53/udp sh, standby (not VRRP MASTER)"),
            "{text}"
        );
        assert!(
            text.contains("  backend 0 198.51.100.1:80 weight 2"),
            "{text}"
        );
    }
}
