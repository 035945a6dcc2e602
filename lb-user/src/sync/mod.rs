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
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use lb_common::SyncEntry;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::{io::unix::AsyncFd, net::UdpSocket, sync::mpsc, task::JoinHandle};
use tracing::{debug, error, warn};

use crate::config::SyncDaemon;
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

/// The running sync: a task that sends what the data path reports and
/// passes on what the peer sends.
pub struct ConnSync {
    pub config: SyncDaemon,
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl ConnSync {
    /// What `status` shows; `lost` is the data path's count.
    pub fn status(&self, lost: u64) -> crate::status::SyncStatus {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::status::SyncStatus {
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
    let ifindex = crate::agent::ifindex(&cfg.interface)?;
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

/// Whether `a` is in the SNAT pool `addrs` × `ports`.
pub fn in_pool(addrs: &[Ipv4Addr], ports: (u16, u16), a: Ipv4Addr, port: u16) -> bool {
    addrs.contains(&a) && (ports.0..=ports.1).contains(&port)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the data path's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
