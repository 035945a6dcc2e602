//! The connection and NAT tables as the agent reads and writes them:
//! lookups, purges, and the flows a peer's connection sync reports,
//! written in batches.

use std::{collections::HashMap as Pending, os::fd::AsFd};

use anyhow::{bail, Result};
use aya::{
    maps::{HashMap, IterableMap, MapData},
    Pod,
};
use lb_common::{Conn, FlowKey, Nat};

use super::{
    maps::{lookup, remove},
    Dataplane,
};

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

/// Entry counts of the flow tables, from [`Dataplane::flow_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Connection entries (client → VIP).
    pub conns: usize,
    /// Of those, half-open TCP flows.
    pub half_open: usize,
    /// NAT entries (backend → SNAT).
    pub nats: usize,
}

impl Dataplane {
    /// The connection entry of a client → VIP flow.
    pub fn conn(&self, key: &FlowKey) -> Result<Option<Conn>> {
        lookup(self.maps.conns.get(key, 0))
    }

    /// The NAT entry of a backend → SNAT flow.
    pub fn nat(&self, key: &FlowKey) -> Result<Option<Nat>> {
        lookup(self.maps.nats.get(key, 0))
    }

    /// How many entries the connection and NAT tables hold, and how many
    /// connections are half-open. Walks both tables: for tests and tools,
    /// not for every status call.
    pub fn flow_counts(&self) -> FlowCounts {
        let conns: Vec<Conn> = self
            .maps
            .conns
            .iter()
            .filter_map(|r| r.ok())
            .map(|(_, c)| c)
            .collect();
        FlowCounts {
            conns: conns.len(),
            half_open: conns
                .iter()
                .filter(|c| c.flags & lb_common::CT_HALF != 0)
                .count(),
            nats: self.maps.nats.keys().filter(|k| k.is_ok()).count(),
        }
    }

    /// Removes every connection of backend `id` and its NAT entry, so the
    /// next packet of such a flow starts a new one. Returns how many.
    pub fn purge_backend(&mut self, id: u32) -> Result<usize> {
        let doomed: Vec<(FlowKey, Conn)> = self
            .maps
            .conns
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, c)| c.backend_id == id)
            .collect();
        for (key, c) in &doomed {
            let _ = remove(&mut self.maps.nats, &c.reverse_key(key.proto));
            let _ = remove(&mut self.maps.conns, key);
        }
        Ok(doomed.len())
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
        let mut conns: Pending<FlowKey, Conn> = Pending::new();
        let mut nats: Pending<FlowKey, Option<Nat>> = Pending::new();
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
        for k in &gone {
            let _ = remove(&mut self.maps.nats, k);
        }
        update_batch(&self.maps.nats, "NATS", &keys, &values)?;
        let (keys, values): (Vec<FlowKey>, Vec<Conn>) = conns.into_iter().unzip();
        update_batch(&self.maps.conns, "CONNS", &keys, &values)?;
        Ok(applied)
    }

    /// The NAT entry at `key` as this call's pending writes leave it.
    fn nat_seen(
        &self,
        pending: &Pending<FlowKey, Option<Nat>>,
        key: &FlowKey,
    ) -> Result<Option<Nat>> {
        match pending.get(key) {
            Some(n) => Ok(*n),
            None => self.nat(key),
        }
    }
}

/// Writes `keys[i]` → `values[i]` into `map` with one batch call.
fn update_batch<V: Pod>(
    map: &HashMap<MapData, FlowKey, V>,
    name: &str,
    keys: &[FlowKey],
    values: &[V],
) -> Result<()> {
    assert_eq!(keys.len(), values.len());
    if keys.is_empty() {
        return Ok(());
    }
    // SAFETY: the map's key and value types are FlowKey and V (the map
    // table's layouts, checked when a pinned map is adopted), and both
    // slices hold keys.len() of them.
    let written = unsafe {
        crate::sys::map_update_batch(
            map.map().fd().as_fd(),
            keys.as_ptr().cast(),
            values.as_ptr().cast(),
            keys.len() as u32,
        )
    };
    if let Err((n, e)) = written {
        bail!(
            "writing {} entries to {name}: {n} of them written: {e}",
            keys.len()
        );
    }
    Ok(())
}
