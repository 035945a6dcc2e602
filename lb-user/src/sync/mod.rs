//! Connection sync between the nodes of a VRRP pair
//! (`global.lvs_sync_daemon`).
//!
//! Both nodes derive a flow's backend and first SNAT candidate from the same
//! seeded hash, so a node that takes over a VIP rebuilds most flows'
//! mappings from their next packet alone. A flow whose first candidate was
//! taken got another port, which the peer cannot guess, and a silent flow
//! can lose its port to the new master's new flows: the data path reports
//! synced flows (every flow by default, else the first kind) on its `SYNC`
//! ring as they start, live on and close, and this module multicasts them
//! to the peer, which installs them for the services it does not serve
//! now. The channel is
//! unauthenticated, like keepalived's: run it on a link you trust. A
//! received flow is installed only for a configured service, backend and
//! SNAT pool.

pub mod wire;

use std::{
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use lb_common::SyncEntry;
use serde::Serialize;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::{io::unix::AsyncFd, net::UdpSocket, sync::mpsc, task::JoinHandle};
use tracing::{debug, error, warn};

use crate::{config::SyncDaemon, dataplane::SyncedFlow, plan::Plan, sys::ifindex};
pub use wire::Entry;

/// What the sync has done, for `status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Flows sent to the peer.
    pub sent: AtomicU64,
    /// Flows received from the peer.
    pub received: AtomicU64,
    /// Datagrams refused: malformed, another version or another sync id.
    pub refused: AtomicU64,
    /// Flows the ring held that could not be sent.
    pub send_errors: AtomicU64,
    /// Received flows written to the data path (the agent counts them).
    pub installed: AtomicU64,
    /// Received flows not written: served here, or unknown here.
    pub ignored: AtomicU64,
}

/// Flows exchanged with the VRRP peer, for `status` and the metrics.
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

/// The running sync: a task that sends what the data path reports and
/// passes on what the peer sends.
pub struct ConnSync {
    pub config: SyncDaemon,
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl ConnSync {
    /// What `status` shows; `lost` is the data path's count.
    pub fn status(&self, lost: u64) -> SyncStatus {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncStatus {
            running: !self.task.is_finished(),
            lost,
            sent: n(&c.sent),
            send_errors: n(&c.send_errors),
            received: n(&c.received),
            installed: n(&c.installed),
            ignored: n(&c.ignored),
            refused: n(&c.refused),
        }
    }
}

impl Drop for ConnSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the multicast socket on `cfg.interface`: bound to the group and
/// port, joined there, TTL 1, without loopback of our own messages.
fn open(cfg: &SyncDaemon) -> Result<UdpSocket> {
    let ifindex = ifindex(&cfg.interface)?;
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(cfg.interface.as_bytes()))
        .with_context(|| format!("binding the sync socket to {}", cfg.interface))?;
    s.bind(&SocketAddrV4::new(cfg.group, cfg.port).into())
        .with_context(|| format!("binding {}:{}", cfg.group, cfg.port))?;
    s.join_multicast_v4_n(&cfg.group, &InterfaceIndexOrAddress::Index(ifindex))
        .with_context(|| format!("joining {} on {}", cfg.group, cfg.interface))?;
    s.set_multicast_ttl_v4(1)?;
    s.set_multicast_loop_v4(false)?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into())?)
}

impl ConnSync {
    /// Starts sending what `ring` reports and forwarding what arrives to
    /// `installs`.
    pub fn start(
        cfg: &SyncDaemon,
        ring: RingBuf<MapData>,
        installs: mpsc::Sender<Vec<Entry>>,
    ) -> Result<ConnSync> {
        let sock = open(cfg)?;
        // SAFETY: the RingBuf owns its map descriptor, which stays open and
        // the same for as long as the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| e.into_parts().1)
            .context("polling the SYNC ring")?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(cfg.clone(), sock, ring, installs, counters.clone()));
        Ok(ConnSync {
            config: cfg.clone(),
            counters,
            task,
        })
    }
}

async fn run(
    cfg: SyncDaemon,
    sock: UdpSocket,
    mut ring: AsyncFd<RingBuf<MapData>>,
    installs: mpsc::Sender<Vec<Entry>>,
    counters: Arc<Counters>,
) {
    let to = SocketAddrV4::new(cfg.group, cfg.port);
    let mut out = Vec::with_capacity(1500);
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<Entry> = Vec::new();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        error!("connection sync stopped: polling the SYNC ring: {e}");
                        return;
                    }
                };
                let r = guard.get_inner_mut();
                while let Some(item) = r.next() {
                    pending.extend(record(&item).map(|e| Entry::from_ring(&e)));
                }
                guard.clear_ready();
                for chunk in pending.chunks(wire::MAX_ENTRIES) {
                    let n = wire::emit(cfg.id, chunk, &mut out);
                    match sock.send_to(&out, to).await {
                        Ok(_) => counters.sent.fetch_add(n as u64, Ordering::Relaxed),
                        Err(e) => {
                            debug!("sending {n} synced flows: {e}");
                            counters.send_errors.fetch_add(n as u64, Ordering::Relaxed)
                        }
                    };
                }
                pending.clear();
            }
            r = sock.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Not a reason to stop; not a reason to spin either.
                        warn!("connection sync: receiving: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let m = match wire::Message::new_checked(&buf[..n]) {
                    Ok(m) if m.sync_id() == cfg.id => m,
                    Ok(m) => {
                        debug!(%from, id = m.sync_id(), "sync message for another sync id");
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => {
                        // Debug only: an IPVS sync daemon on the same group and
                        // port would flood the log; status counts them.
                        debug!(%from, "sync message refused: {e}");
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let entries: Vec<Entry> = m.entries().collect();
                counters.received.fetch_add(entries.len() as u64, Ordering::Relaxed);
                if installs.send(entries).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The record in one item of the `SYNC` ring; `None` if it is too short.
pub fn record(item: &[u8]) -> Option<SyncEntry> {
    // SAFETY: the length is checked; any bytes are a valid SyncEntry (Pod),
    // and read_unaligned copies them out of the ring.
    (item.len() >= std::mem::size_of::<SyncEntry>())
        .then(|| unsafe { std::ptr::read_unaligned(item.as_ptr() as *const SyncEntry) })
}

/// The flows of `entries` this node writes, in order, and how many it
/// ignores. A flow is written only for a service of `plan` that this node
/// does not serve now (where it serves, its own entries are the ones in
/// use), to one of that service's backends, from its SNAT pool.
pub fn to_install(plan: &Plan, entries: &[Entry], now: u64) -> (Vec<SyncedFlow>, u64) {
    let mut flows = Vec::with_capacity(entries.len());
    let mut ignored = 0;
    for e in entries {
        let found = plan.services.iter().find_map(|ps| {
            let spec = &ps.spec;
            let ours = spec.vip == e.vip
                && spec.port == e.vip_port
                && spec.proto == e.proto
                && spec.flags & lb_common::SVC_ENABLED == 0
                && spec.in_snat_pool(e.snat, e.snat_port);
            if !ours {
                return None;
            }
            spec.backends
                .iter()
                .find(|b| b.addr == e.backend && b.port == e.backend_port)
                .map(|b| (spec.id, b.id))
        });
        match found {
            Some((service_id, backend_id)) => flows.push(SyncedFlow {
                key: e.key(),
                conn: e.conn(backend_id, service_id, now),
                closed: e.closed,
            }),
            None => ignored += 1,
        }
    }
    (flows, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Runtime;

    const CFG: &str = "\
global: {interface: eth0}
vrrp_instances:
  - {name: VI_1, virtual_router_id: 1, priority: 100}
  - {name: VI_2, virtual_router_id: 2, priority: 100, state: MASTER}
virtual_servers:
  - name: standby
    vip: 192.0.2.10
    port: 80
    vrrp_instance: VI_1
    snat: {addresses: [192.0.2.2], ports: 2000-2999}
    real_servers: [{address: 198.51.100.1, port: 8080}, {address: 198.51.100.2, port: 8080}]
  - name: served
    vip: 192.0.2.11
    port: 80
    vrrp_instance: VI_2
    snat: {addresses: [192.0.2.2], ports: 3000-3999}
    real_servers: [{address: 198.51.100.1, port: 8080}]
";

    fn entry(vip: [u8; 4], backend: [u8; 4], snat_port: u16) -> Entry {
        Entry {
            client: "203.0.113.9".parse().unwrap(),
            client_port: 40000,
            vip: vip.into(),
            vip_port: 80,
            backend: backend.into(),
            backend_port: 8080,
            snat: [192, 0, 2, 2].into(),
            snat_port,
            proto: lb_common::PROTO_TCP,
            closed: false,
        }
    }

    #[test]
    fn only_flows_of_services_this_node_does_not_serve_are_installed() {
        let c = crate::config::parse(CFG, "t.yaml").unwrap();
        let plan = Plan::build(&c, &Runtime::from_config_hints(&c), None);
        let standby = &plan.services[0].spec;
        let mut closed = entry([192, 0, 2, 10], [198, 51, 100, 2], 2999);
        closed.closed = true;
        let entries = [
            entry([192, 0, 2, 10], [198, 51, 100, 1], 2000),
            closed,
            // Served here: its own entries are the ones in use.
            entry([192, 0, 2, 11], [198, 51, 100, 1], 3000),
            // Not a backend of the service.
            entry([192, 0, 2, 10], [198, 51, 100, 3], 2000),
            // Outside the service's SNAT ports.
            entry([192, 0, 2, 10], [198, 51, 100, 1], 3000),
            // No such service.
            entry([192, 0, 2, 12], [198, 51, 100, 1], 2000),
        ];
        let (flows, ignored) = to_install(&plan, &entries, 7);
        assert_eq!(ignored, 4);
        let got: Vec<_> = flows
            .iter()
            .map(|f| {
                (
                    f.conn.backend_id,
                    f.conn.service_id,
                    f.closed,
                    f.conn.last_seen,
                )
            })
            .collect();
        let (b1, b2) = (standby.backends[0].id, standby.backends[1].id);
        assert_eq!(got, [(b1, standby.id, false, 7), (b2, standby.id, true, 7)]);
        assert_eq!(flows[0].key, entries[0].key());
    }
}
