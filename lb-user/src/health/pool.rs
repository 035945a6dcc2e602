//! The agent's checks as one scheduler: a queue of due times and a bounded
//! set of probes in flight.
//!
//! A task per server would hold that server's checker and timer for the
//! agent's lifetime (over 1 KiB each), and would start every check of a
//! large pool at once: 100,000 servers meant 100,000 sockets, which runs out
//! of file descriptors and marks healthy servers down. Here a server costs a
//! [`Slot`] and a queue entry; its checker is built from the config when a
//! check is due.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::mpsc,
    task::{AbortHandle, Id, JoinSet},
    time::{sleep_until, Instant},
};
use tracing::{error, info};

use super::{
    checker_for, probe, secs, Checker, Event, Outcome, ServerKey, SharedLatencies, Tracker,
};
use crate::config::Config;

/// One checked server: where its settings are in the config, and its state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    vs: u32,
    rs: u32,
    track: Tracker,
}

/// A probe in flight: its server's slot and the checker it runs.
struct Flight {
    slot: u32,
    checker: Arc<Checker>,
    abort: AbortHandle,
}

/// What a probe task returns.
type Done = (Outcome, Duration);

/// The checks of a whole pool, run by one task; see the module docs.
pub struct Pool {
    config: Arc<Config>,
    slots: Vec<Slot>,
    /// Per virtual server of `config`, its range of `slots`.
    ranges: Vec<Range<u32>>,
    /// (due time, slot) of every server not being checked right now.
    due: BinaryHeap<Reverse<(Instant, u32)>>,
    probes: JoinSet<Done>,
    flights: HashMap<Id, Flight>,
    /// At most this many probes at once.
    limit: usize,
    events: mpsc::Sender<Event>,
    latencies: SharedLatencies,
}

/// A new config to check, and the servers known to be down (the state new
/// servers start from).
pub type Update = (Arc<Config>, BTreeSet<ServerKey>);

impl Pool {
    /// An empty pool that reports transitions on `events`.
    pub fn new(events: mpsc::Sender<Event>, latencies: SharedLatencies, limit: usize) -> Self {
        Pool {
            config: Arc::default(),
            slots: Vec::new(),
            ranges: Vec::new(),
            due: BinaryHeap::new(),
            probes: JoinSet::new(),
            flights: HashMap::new(),
            limit: limit.max(1),
            events,
            latencies,
        }
    }

    /// Runs until `updates` closes, checking the latest config received.
    pub async fn run(mut self, mut updates: mpsc::UnboundedReceiver<Update>) {
        loop {
            self.launch_due();
            let wake = (self.flights.len() < self.limit)
                .then(|| self.due.peek().map(|Reverse((t, _))| *t))
                .flatten();
            tokio::select! {
                u = updates.recv() => match u {
                    Some((config, down)) => self.update(config, &down),
                    None => return,
                },
                Some(done) = self.probes.join_next_with_id(), if !self.probes.is_empty() => {
                    if self.finish(done).await.is_err() {
                        return;
                    }
                }
                _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    /// Starts the checks that are due, up to the limit.
    fn launch_due(&mut self) {
        let now = Instant::now();
        while self.flights.len() < self.limit {
            match self.due.peek() {
                Some(Reverse((t, _))) if *t <= now => {}
                _ => return,
            }
            let Some(Reverse((_, slot))) = self.due.pop() else {
                return;
            };
            let s = self.slots[slot as usize];
            let vs = &self.config.virtual_servers[s.vs as usize];
            let Some(c) = checker_for(vs, &vs.real_servers[s.rs as usize]) else {
                continue;
            };
            let checker = Arc::new(c);
            let c = checker.clone();
            let abort = self.probes.spawn(async move {
                let t = Instant::now();
                let outcome = probe(&c).await;
                (outcome, t.elapsed())
            });
            self.flights.insert(
                abort.id(),
                Flight {
                    slot,
                    checker,
                    abort,
                },
            );
        }
    }

    /// Counts a finished probe and schedules the server's next one. Err when
    /// the agent is gone.
    async fn finish(&mut self, done: Result<(Id, Done), tokio::task::JoinError>) -> Result<(), ()> {
        let (id, result) = match done {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        // Not in flights: the server changed or left in a reload.
        let Some(f) = self.flights.remove(&id) else {
            return Ok(());
        };
        let outcome = match result {
            Ok((outcome, took)) => {
                if let Ok(mut l) = self.latencies.lock() {
                    l.record(took);
                }
                outcome
            }
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => {
                error!(server = ?f.checker.server, "health check panicked: {e}");
                Outcome::Down("the check panicked".into())
            }
        };
        let slot = &mut self.slots[f.slot as usize];
        let (change, pause) = slot.track.observe(&f.checker, outcome);
        self.due.push(Reverse((Instant::now() + pause, f.slot)));
        if let Some((up, weight, reason)) = change {
            let ev = Event {
                server: f.checker.server.clone(),
                up,
                weight,
                reason,
            };
            self.events.send(ev).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// Takes a new config: servers whose checker is unchanged keep their
    /// state, schedule and probe in flight; a changed checker starts from
    /// its predecessor's state, a new server from `down`, both after their
    /// warmup; removed ones stop.
    pub fn update(&mut self, config: Arc<Config>, down: &BTreeSet<ServerKey>) {
        let old = std::mem::replace(&mut self.config, config);
        let old_ranges = std::mem::take(&mut self.ranges);
        let old_slots = std::mem::take(&mut self.slots);
        let by_name: HashMap<&str, usize> = old
            .virtual_servers
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect();
        // Old slot -> new slot, u32::MAX when it is gone.
        let mut moved = vec![u32::MAX; old_slots.len()];
        let mut fresh = Vec::new();
        let now = Instant::now();
        let (mut kept, mut started) = (0usize, 0usize);
        for (vi, vs) in self.config.virtual_servers.iter().enumerate() {
            let start = self.slots.len() as u32;
            let prev = by_name
                .get(vs.name.as_str())
                .map(|&i| (i, &old.virtual_servers[i]));
            match prev {
                // The common case on a reload: nothing in it changed.
                Some((oi, ovs)) if Arc::ptr_eq(ovs, vs) || ovs == vs => {
                    for o in old_ranges[oi].clone() {
                        moved[o as usize] = self.slots.len() as u32;
                        self.slots.push(Slot {
                            vs: vi as u32,
                            ..old_slots[o as usize]
                        });
                        kept += 1;
                    }
                }
                _ => {
                    let old_of: HashMap<_, u32> = prev
                        .map(|(oi, ovs)| {
                            old_ranges[oi]
                                .clone()
                                .map(|o| {
                                    let r = &ovs.real_servers[old_slots[o as usize].rs as usize];
                                    ((r.address, r.port), o)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    for (ri, rs) in vs.real_servers.iter().enumerate() {
                        let Some(c) = checker_for(vs, rs) else {
                            continue;
                        };
                        let i = self.slots.len() as u32;
                        let before = old_of.get(&(rs.address, rs.port)).copied();
                        let same = before.filter(|&o| {
                            prev.is_some_and(|(_, ovs)| {
                                let ors = &ovs.real_servers[old_slots[o as usize].rs as usize];
                                checker_for(ovs, ors).as_ref() == Some(&c)
                            })
                        });
                        let track = match same {
                            Some(o) => {
                                moved[o as usize] = i;
                                kept += 1;
                                old_slots[o as usize].track
                            }
                            None => {
                                // A changed checker starts from what the old
                                // one last reported, not from `down`: that
                                // report may still be on its way to the agent.
                                let up = match before {
                                    Some(o) => old_slots[o as usize].track.up(),
                                    None => !down.contains(&c.server),
                                };
                                let warmup = c.common.warmup.filter(|w| *w > 0.0).unwrap_or(0.0);
                                fresh.push(Reverse((now + secs(warmup * fastrand::f64()), i)));
                                started += 1;
                                Tracker::new(up)
                            }
                        };
                        self.slots.push(Slot {
                            vs: vi as u32,
                            rs: ri as u32,
                            track,
                        });
                    }
                }
            }
            self.ranges.push(start..self.slots.len() as u32);
        }
        let mut due = std::mem::take(&mut self.due).into_vec();
        due.retain_mut(|Reverse((_, s))| {
            *s = moved[*s as usize];
            *s != u32::MAX
        });
        due.extend(fresh);
        self.due = BinaryHeap::from(due);
        self.flights.retain(|_, f| {
            f.slot = moved[f.slot as usize];
            if f.slot == u32::MAX {
                f.abort.abort();
            }
            f.slot != u32::MAX
        });
        if started > 0 || kept != old_slots.len() {
            info!(
                servers = self.slots.len(),
                started, kept, "health checks updated"
            );
        }
    }
}

/// A running [`Pool`]: give it each new config; dropping it stops the checks.
pub struct Checks {
    updates: mpsc::UnboundedSender<Update>,
    task: tokio::task::JoinHandle<()>,
}

impl Checks {
    /// Checks `config` from now on; servers new to the pool start down when
    /// they are in `down`.
    pub fn update(&self, config: Arc<Config>, down: BTreeSet<ServerKey>) {
        let _ = self.updates.send((config, down));
    }
}

impl Checks {
    /// Stops every check.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pool {
    /// Runs the pool on its own task.
    pub fn spawn(self) -> Checks {
        let (updates, rx) = mpsc::unbounded_channel();
        Checks {
            updates,
            task: tokio::spawn(self.run(rx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &[(u16, &str)]) -> Arc<Config> {
        let mut t = String::from(
            "global: {interface: lo}\nvirtual_servers:\n  - name: p\n    vip: 192.0.2.1\n    port: 80\n    snat: {addresses: [192.0.2.2]}\n    real_servers:\n",
        );
        for (port, cmd) in servers {
            t += &format!("      - {{address: 127.0.0.1, port: {port}, misc_check: {{misc_path: \"{cmd}\"}}}}\n");
        }
        Arc::new(crate::config::parse(&t, "t.yaml").unwrap())
    }

    fn up_of(p: &Pool, port: u16) -> bool {
        let i = p.config.virtual_servers[0]
            .real_servers
            .iter()
            .position(|r| r.port == port)
            .unwrap();
        p.slots
            .iter()
            .find(|s| s.rs as usize == i)
            .unwrap()
            .track
            .up()
    }

    /// A server whose checker changes keeps the state its old checker last
    /// reported (that report may still be on its way to the agent); only a
    /// server new to the pool starts from the agent's down set.
    #[test]
    fn an_update_carries_state_to_changed_checkers() {
        let (tx, _rx) = mpsc::channel(1);
        let mut p = Pool::new(tx, Default::default(), 4);
        p.update(config(&[(1, "true"), (2, "true")]), &Default::default());
        assert!(up_of(&p, 1) && up_of(&p, 2));
        // Both reported down.
        for s in &mut p.slots {
            s.track.up = false;
        }
        let down = [ServerKey {
            service: "p".into(),
            addr: std::net::Ipv4Addr::LOCALHOST,
            port: 3,
        }]
        .into();
        p.update(
            config(&[(1, "true"), (2, "exit 0"), (3, "true"), (4, "true")]),
            &down,
        );
        assert!(!up_of(&p, 1), "unchanged: kept");
        assert!(
            !up_of(&p, 2),
            "changed: carried over, not taken from the down set"
        );
        assert!(!up_of(&p, 3), "new and known down");
        assert!(up_of(&p, 4), "new");
        assert_eq!(p.slots.len(), 4);
        // Every server is due exactly once.
        let mut due: Vec<u32> = p.due.iter().map(|Reverse((_, s))| *s).collect();
        due.sort();
        assert_eq!(due, [0, 1, 2, 3]);
    }

    /// What a server costs between checks; 100,000 servers must fit in a
    /// few MiB.
    /// Thousands of TCP checks are in flight at once in a large pool; the
    /// HTTP, TLS and DNS states (KiBs) must not be part of each.
    #[test]
    fn a_tcp_probe_is_small() {
        let config = crate::config::parse(
            "global: {interface: lo}\nvirtual_servers:\n  - {name: w, vip: 192.0.2.1, port: 80, \
             snat: {addresses: [192.0.2.2]}, real_servers: [{address: 127.0.0.1, port: 80, tcp_check: {}}]}\n",
            "t.yaml",
        )
        .unwrap();
        let vs = &config.virtual_servers[0];
        let c = checker_for(vs, &vs.real_servers[0]).unwrap();
        let size = std::mem::size_of_val(&probe(&c));
        assert!(size < 1024, "a probe holds {size} bytes");
    }

    #[test]
    fn a_server_between_checks_is_small() {
        let per = std::mem::size_of::<Slot>() + std::mem::size_of::<Reverse<(Instant, u32)>>();
        assert!(per <= 64, "{per} bytes per checked server");
    }
}
