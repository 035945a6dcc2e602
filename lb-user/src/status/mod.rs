//! What `xlb status` and the metrics endpoint show: a snapshot of the plan
//! and of the data path's counters.

mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use anyhow::Result;
use serde::Serialize;

pub use crate::sync::SyncStatus;
use crate::{
    config::{Config, ServerKey, VirtualServer},
    dataplane::Dataplane,
    plan::{proto_name, BackendSpec, Plan},
};

/// The whole snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node: Option<String>,
    pub interfaces: Vec<String>,
    /// Whether this agent took over the data path of an earlier one.
    pub adopted: bool,
    pub vrrp: Vec<VrrpStatus>,
    pub services: Vec<ServiceStatus>,
    /// Every pass, drop and forward reason of the data path.
    pub reasons: BTreeMap<String, u64>,
    /// Durations of the most recent health checks.
    pub checks: CheckLatency,
    /// Connection sync with the peer, when configured.
    pub sync: Option<SyncStatus>,
}

/// Health-check duration percentiles over the most recent checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckLatency {
    pub samples: usize,
    pub p50_ms: f32,
    pub p90_ms: f32,
    pub p99_ms: f32,
    pub max_ms: f32,
}

/// One VRRP instance, as its thread reports it.
pub type VrrpStatus = crate::vrrp::InstanceStatus;

/// One virtual server.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    /// Taking new flows (VRRP MASTER, or no instance).
    pub serving: bool,
    pub healthy: usize,
    pub quorum: u32,
    pub sorry_active: bool,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    /// How many times this agent wrote the service's Maglev table.
    pub table_builds: u64,
    pub backends: Vec<BackendStatus>,
}

/// One real (or sorry) server.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub sorry: bool,
    pub health: String,
    pub why: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

/// What a snapshot is taken from.
pub struct Sources<'a> {
    pub config: &'a Config,
    pub plan: &'a Plan,
    /// Real servers failing their checks.
    pub down: &'a BTreeSet<ServerKey>,
    /// The last reason each checked server gave.
    pub why: &'a BTreeMap<ServerKey, String>,
    /// The data path's counters.
    pub dp: &'a Dataplane,
    pub vrrp: Vec<VrrpStatus>,
    pub sync: Option<SyncStatus>,
    pub checks: CheckLatency,
}

impl Status {
    /// A snapshot of the plan, the health state and the counters.
    pub fn collect(src: Sources<'_>) -> Result<Status> {
        let Sources {
            config, plan, dp, ..
        } = src;
        let mut services = Vec::new();
        for ps in &plan.services {
            let spec = &ps.spec;
            let vs = config
                .virtual_servers
                .iter()
                .find(|v| v.name == ps.name)
                .map(|v| &**v);
            let t = dp.service_traffic(spec.id)?;
            let mut backends = Vec::new();
            for b in &spec.backends {
                backends.push(backend(&src, &ps.name, vs, b)?);
            }
            services.push(ServiceStatus {
                name: ps.name.clone(),
                vip: spec.vip,
                port: spec.port,
                protocol: proto_name(spec.proto).into(),
                serving: spec.flags & lb_common::SVC_ENABLED != 0,
                healthy: ps.healthy,
                quorum: vs.map_or(1, |v| v.quorum),
                sorry_active: ps.sorry_active,
                packets: t.packets,
                bytes: t.bytes,
                new_conns: t.new_conns,
                table_builds: dp.table_builds(spec.id),
                backends,
            });
        }
        let reasons = dp
            .reasons()?
            .into_iter()
            .map(|(r, n)| (r.name().to_string(), n))
            .collect();
        Ok(Status {
            checks: src.checks,
            node: config.global.router_id.clone(),
            interfaces: plan.interfaces.clone(),
            adopted: dp.adopted(),
            vrrp: src.vrrp,
            services,
            reasons,
            sync: src.sync,
        })
    }

    /// The human-readable form of `xlb status`.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "node {} on {}{}",
            self.node.as_deref().unwrap_or("-"),
            self.interfaces.join(", "),
            if self.adopted {
                " (took over a running data path)"
            } else {
                ""
            }
        );
        for v in &self.vrrp {
            let c = &v.counters;
            let master = match v.master {
                Some(m) => format!(", master {m}"),
                None => String::new(),
            };
            let _ = write!(
                o,
                "vrrp {}: {} priority {} (base {}){master}; adverts sent {} received {}, became master {}, split brain {}",
                v.instance,
                v.state,
                v.priority,
                v.base_priority,
                c.adverts_sent,
                c.adverts_received,
                c.became_master,
                c.split_brain
            );
            for (why, n) in &c.dropped {
                let _ = write!(o, ", dropped {why} {n}");
            }
            for t in &v.tracking {
                let _ = write!(o, "; {t}");
            }
            o.push('\n');
        }
        for s in &self.services {
            let _ = writeln!(
                o,
                "service {} {}:{}/{}: {}, {} healthy (quorum {}){}; {} packets, {} bytes, {} connections",
                s.name,
                s.vip,
                s.port,
                s.protocol,
                if s.serving { "serving" } else { "standby" },
                s.healthy,
                s.quorum,
                if s.sorry_active { ", sorry server active" } else { "" },
                s.packets,
                s.bytes,
                s.new_conns
            );
            for b in &s.backends {
                let _ = writeln!(
                    o,
                    "  {}{}:{} weight {} {} ({}): {} packets, {} bytes, {} connections",
                    if b.sorry { "sorry " } else { "" },
                    b.address,
                    b.port,
                    b.weight,
                    b.health,
                    b.why,
                    b.packets,
                    b.bytes,
                    b.new_conns
                );
            }
        }
        if let Some(y) = &self.sync {
            let _ = writeln!(
                o,
                "sync{}: sent {} (errors {}, lost {}), received {}, installed {}, ignored {}, refused datagrams {}",
                if y.running { "" } else { " (stopped, see the log)" },
                y.sent, y.send_errors, y.lost, y.received, y.installed, y.ignored, y.refused
            );
        }
        let _ = write!(o, "data path:");
        for (r, n) in self.reasons.iter().filter(|(_, n)| **n > 0) {
            let _ = write!(o, " {r}={n}");
        }
        o.push('\n');
        o
    }
}

/// One backend of service `name` (configured as `vs`), with its health and
/// why.
fn backend(
    src: &Sources<'_>,
    name: &str,
    vs: Option<&VirtualServer>,
    b: &BackendSpec,
) -> Result<BackendStatus> {
    let at = |r: &crate::config::RealServer| (r.address, r.port) == (b.addr, b.port);
    let sorry = vs.is_some_and(|v| v.is_sorry_only(b.addr, b.port));
    let key = ServerKey {
        service: name.to_string(),
        addr: b.addr,
        port: b.port,
    };
    let down = src.down.contains(&key);
    let checked = vs.is_some_and(|v| {
        v.real_servers
            .iter()
            .any(|r| at(r) && r.checker_count() > 0)
    });
    let why = match (src.why.get(&key), down, checked) {
        (Some(w), _, _) => w.clone(),
        (None, true, _) => "alpha: waiting for a first successful check".into(),
        (None, false, true) => "no check has failed yet".into(),
        (None, false, false) => "no checker: always up".into(),
    };
    let t = src.dp.backend_traffic(b.id)?;
    Ok(BackendStatus {
        address: b.addr,
        port: b.port,
        weight: b.weight,
        sorry,
        health: if down { "down" } else { "up" }.into(),
        why,
        packets: t.packets,
        bytes: t.bytes,
        new_conns: t.new_conns,
    })
}
