//! What the agent does when something changes at run time: a VRRP state,
//! real servers' health, flows from the sync peer.

use std::collections::{btree_map::Entry, BTreeSet};

use anyhow::Result;
use tracing::{info, warn};

use super::{apply, Agent};
use crate::{
    config::{OnDown, ServerKey},
    health,
    plan::{BackendKey, Plan, ServiceAddr},
    sync, sys,
    vrrp::{self, fsm::State},
};

impl Agent {
    /// Tells VRRP which tracked virtual servers hold their quorum.
    pub(super) fn sync_quorum(&mut self) {
        let Some(v) = &self.vrrp else { return };
        for inst in &self.config.vrrp_instances {
            for t in &inst.track_virtual_server {
                let Some(ps) = self.plan.services.iter().find(|s| s.name == t.name) else {
                    continue;
                };
                let quorum = self
                    .config
                    .virtual_servers
                    .iter()
                    .find(|vs| vs.name == t.name)
                    .map_or(1, |vs| vs.quorum as usize);
                let ok = ps.healthy >= quorum;
                if self.quorum.insert(t.name.clone(), ok) != Some(ok) {
                    v.quorum(&t.name, ok);
                }
            }
        }
    }

    /// A VRRP instance changed state: serve its virtual servers only as MASTER.
    pub fn on_vrrp(&mut self, ev: vrrp::Event) -> Result<()> {
        let changed = if ev.state == State::Master {
            // The time it became MASTER: kept while it stays MASTER.
            match self.runtime.masters.entry(ev.instance.clone()) {
                Entry::Vacant(v) => {
                    v.insert(sys::monotonic_ns());
                    true
                }
                Entry::Occupied(_) => false,
            }
        } else {
            self.runtime.masters.remove(&ev.instance).is_some()
        };
        if changed {
            let plan = Plan::build(&self.config, &self.runtime, Some(&self.plan.ids));
            let diff = plan.diff(Some(&self.plan));
            apply(&mut self.dp, &diff)?;
            info!(instance = %ev.instance, services = diff.upsert.len(), "{} the instance's virtual servers",
                if ev.state == State::Master { "serving" } else { "stopped serving" });
            self.plan = plan;
        }
        let _ = ev.ack.send(());
        Ok(())
    }

    /// Real servers changed state: log why, run their notify scripts, and
    /// rebuild the tables once for all of them. When a whole rack fails,
    /// thousands of checks fail together, and a rebuild per server would
    /// cost O(servers) each.
    pub fn on_health_batch(&mut self, events: Vec<health::Event>) -> Result<()> {
        let mut resets = Vec::new();
        let mut changed = BTreeSet::new();
        for ev in events {
            let vs = ev.server.service.clone();
            if self.record_health(ev, &mut resets) {
                changed.insert(vs);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        // After a failed write the plan may not be what the data path holds:
        // then every service is planned and compared again.
        let plan = if self.plan_stale {
            Plan::build(&self.config, &self.runtime, Some(&self.plan.ids))
        } else {
            let names = changed.iter().map(String::as_str).collect();
            self.plan
                .update_services(&self.config, &self.runtime, &names)
        };
        let applied = apply(&mut self.dp, &plan.diff(Some(&self.plan)));
        self.plan_stale = applied.is_err();
        applied?;
        self.plan = plan;
        self.sync_quorum();
        for Purge { server, key } in resets {
            if let Some(&id) = self.plan.ids.backends.get(&key) {
                let n = self.dp.purge_backend(id)?;
                info!(service = %server.service, server = %server, connections = n, "on_down reset: connections purged");
            }
        }
        Ok(())
    }

    /// Records one health change (state, reason, weight, notify script);
    /// adds the server to `resets` if its service purges connections on
    /// down. False when the server is no longer configured.
    fn record_health(&mut self, ev: health::Event, resets: &mut Vec<Purge>) -> bool {
        let server = &ev.server;
        let Some(vs) = self
            .config
            .virtual_servers
            .iter()
            .find(|v| v.name == server.service)
        else {
            return false;
        };
        let Some(rs) = vs
            .real_servers
            .iter()
            .find(|r| (r.address, r.port) == (server.addr, server.port))
        else {
            return false;
        };
        let was_down = self.runtime.down.contains(server);
        if ev.up {
            self.runtime.down.remove(server);
            info!(service = %server.service, server = %server, "real server up: {}", ev.reason);
        } else {
            self.runtime.down.insert(server.clone());
            warn!(service = %server.service, server = %server, "real server down: {}", ev.reason);
        }
        if let Some(w) = ev.weight {
            self.runtime.weights.insert(server.clone(), w);
        }
        self.why.insert(server.clone(), ev.reason.clone());
        // A real transition (not a weight update): run the notify script.
        if was_down == ev.up {
            let script = if ev.up {
                &rs.notify_up
            } else {
                &rs.notify_down
            };
            if let Some(cmd) = script {
                vrrp::run_script(cmd, &[]);
            }
        }
        if !ev.up && vs.on_down == OnDown::Reset {
            resets.push(Purge {
                key: BackendKey {
                    service: ServiceAddr::of(vs),
                    addr: server.addr,
                    port: server.port,
                    sorry: false,
                },
                server: ev.server,
            });
        }
        true
    }

    /// Installs flows the VRRP peer set up (or closes them), for services
    /// this node does not serve now: where it serves, its own entries are
    /// the ones in use.
    pub fn on_sync(&mut self, entries: Vec<sync::Entry>) -> Result<()> {
        let Some(counters) = self.sync.as_ref().map(|s| s.counters.clone()) else {
            return Ok(());
        };
        let now = sys::monotonic_ns();
        let (flows, ignored) = sync::to_install(&self.plan, &entries, now);
        counters
            .ignored
            .fetch_add(ignored, std::sync::atomic::Ordering::Relaxed);
        // One datagram's flows with one write per map.
        self.dp.apply_synced(&flows, now)?;
        counters
            .installed
            .fetch_add(flows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// A server whose connections are purged, and its backend.
struct Purge {
    server: ServerKey,
    key: BackendKey,
}
