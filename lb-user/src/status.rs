//! What `xlb status` and the metrics endpoint show: a snapshot of the plan
//! and of the data path's counters.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;

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

/// Flows exchanged with the VRRP peer by the connection sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// Whether the sync task runs (it logs why it stopped).
    pub running: bool,
    /// Records the data path could not queue: the ring was full.
    pub lost: u64,
    /// Flows sent to the peer.
    pub sent: u64,
    /// Flows the ring held that could not be sent.
    pub send_errors: u64,
    /// Flows received from the peer.
    pub received: u64,
    /// Received flows (new or closed) written to the data path.
    pub installed: u64,
    /// Received flows not written: this node serves that service now, or
    /// has no such service, backend or SNAT pool.
    pub ignored: u64,
    /// Datagrams refused: malformed, another version or sync id.
    pub refused: u64,
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

impl Status {
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

    /// The Prometheus text exposition of the snapshot.
    pub fn metrics(&self) -> String {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Svc {
            service: String,
            vip: String,
            port: u16,
            protocol: String,
        }
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Be {
            service: String,
            backend: String,
        }
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Reason {
            reason: String,
        }
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Inst {
            instance: String,
        }
        // A fresh registry per scrape: the counters live in the kernel, so
        // each is set to its current total.
        let mut reg = Registry::with_prefix("xlb");
        let counter = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Svc, Counter>::default();
            reg.register(name, help, f.clone());
            f
        };
        let sp = counter(
            &mut reg,
            "service_packets",
            "Packets forwarded for a virtual server, both directions",
        );
        let sb = counter(
            &mut reg,
            "service_bytes",
            "Bytes forwarded for a virtual server, both directions",
        );
        let sc = counter(
            &mut reg,
            "service_connections",
            "New connections to a virtual server",
        );
        let serving = Family::<Svc, Gauge>::default();
        reg.register(
            "service_serving",
            "1 while the virtual server takes new flows",
            serving.clone(),
        );
        let bp = Family::<Be, Counter>::default();
        reg.register(
            "backend_packets",
            "Packets forwarded for a real server",
            bp.clone(),
        );
        let bc = Family::<Be, Counter>::default();
        reg.register(
            "backend_connections",
            "New connections to a real server",
            bc.clone(),
        );
        let up = Family::<Be, Gauge>::default();
        reg.register(
            "backend_up",
            "1 while the real server passes its checks",
            up.clone(),
        );
        let weight = Family::<Be, Gauge>::default();
        reg.register(
            "backend_weight",
            "Weight of the real server in the Maglev table",
            weight.clone(),
        );
        let reasons = Family::<Reason, Counter>::default();
        reg.register(
            "datapath_packets",
            "Packets by what the data path did with them",
            reasons.clone(),
        );
        let vrrp = Family::<Inst, Gauge>::default();
        reg.register(
            "vrrp_master",
            "1 while this node is MASTER of the instance",
            vrrp.clone(),
        );
        let vprio = Family::<Inst, Gauge>::default();
        reg.register(
            "vrrp_priority",
            "Effective VRRP priority after tracking",
            vprio.clone(),
        );
        let vcount = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Inst, Counter>::default();
            reg.register(name, help, f.clone());
            f
        };
        let vsent = vcount(&mut reg, "vrrp_adverts_sent", "VRRP adverts sent");
        let vrecv = vcount(
            &mut reg,
            "vrrp_adverts_received",
            "Valid VRRP adverts received",
        );
        let vmaster = vcount(&mut reg, "vrrp_became_master", "Transitions to MASTER");
        let vsplit = vcount(
            &mut reg,
            "vrrp_split_brain",
            "Lower-priority adverts heard while MASTER",
        );
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Dropped {
            instance: String,
            reason: String,
        }
        let vdrop = Family::<Dropped, Counter>::default();
        reg.register(
            "vrrp_dropped",
            "VRRP packets dropped, by reason",
            vdrop.clone(),
        );
        for s in &self.services {
            let l = Svc {
                service: s.name.clone(),
                vip: s.vip.to_string(),
                port: s.port,
                protocol: s.protocol.clone(),
            };
            sp.get_or_create(&l).inc_by(s.packets);
            sb.get_or_create(&l).inc_by(s.bytes);
            sc.get_or_create(&l).inc_by(s.new_conns);
            serving.get_or_create(&l).set(s.serving as i64);
            for b in &s.backends {
                let l = Be {
                    service: s.name.clone(),
                    backend: format!("{}:{}", b.address, b.port),
                };
                bp.get_or_create(&l).inc_by(b.packets);
                bc.get_or_create(&l).inc_by(b.new_conns);
                up.get_or_create(&l).set((b.health == "up") as i64);
                weight.get_or_create(&l).set(b.weight as i64);
            }
        }
        for (r, n) in &self.reasons {
            reasons
                .get_or_create(&Reason { reason: r.clone() })
                .inc_by(*n);
        }
        for v in &self.vrrp {
            let l = Inst {
                instance: v.instance.clone(),
            };
            vrrp.get_or_create(&l).set((v.state == "MASTER") as i64);
            vprio.get_or_create(&l).set(v.priority as i64);
            vsent.get_or_create(&l).inc_by(v.counters.adverts_sent);
            vrecv.get_or_create(&l).inc_by(v.counters.adverts_received);
            vmaster.get_or_create(&l).inc_by(v.counters.became_master);
            vsplit.get_or_create(&l).inc_by(v.counters.split_brain);
            for (why, n) in &v.counters.dropped {
                vdrop
                    .get_or_create(&Dropped {
                        instance: v.instance.clone(),
                        reason: why.to_string(),
                    })
                    .inc_by(*n);
            }
        }
        if let Some(y) = &self.sync {
            for (name, help, n) in [
                ("sync_sent", "Flows sent to the VRRP peer", y.sent),
                (
                    "sync_send_errors",
                    "Flows that could not be sent to the peer",
                    y.send_errors,
                ),
                ("sync_lost", "Flow records lost to a full ring", y.lost),
                (
                    "sync_received",
                    "Flows received from the VRRP peer",
                    y.received,
                ),
                (
                    "sync_installed",
                    "Received flows written to the data path",
                    y.installed,
                ),
                (
                    "sync_ignored",
                    "Received flows not written (MASTER, or unknown service)",
                    y.ignored,
                ),
                ("sync_refused", "Sync datagrams refused", y.refused),
            ] {
                let c = Counter::<u64>::default();
                c.inc_by(n);
                reg.register(name, help, c);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &reg);
        out
    }
}
