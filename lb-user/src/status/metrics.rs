//! The Prometheus text exposition of a [`Status`].

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::Status;

impl Status {
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
