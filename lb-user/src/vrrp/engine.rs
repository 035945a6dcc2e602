//! The engine: every instance's state machine, sockets, timers, tracking
//! and notify scripts, run on the VRRP thread.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    fsm::{self, Action, Machine, Settings, State},
    net::{self, ArpSender, Netlink, VrrpSocket},
    run_script, track,
    wire::{self, Advert, Auth},
    Command, Counters, Event, InstanceStatus, SharedStatus, ACK_TIMEOUT, LOG_EVERY,
};
use crate::config::{self, Config};

/// One interface's socket and what arrives on it.
struct Iface {
    name: String,
    link: net::Link,
    socket: Arc<VrrpSocket>,
}

/// One running instance.
struct Instance {
    cfg: config::VrrpInstance,
    vrid: u8,
    iface: usize,
    /// Source of our adverts, and the tie-breaker.
    address: Ipv4Addr,
    vips: Vec<(Ipv4Addr, u8)>,
    auth: Auth,
    machine: Machine,
    base: u8,
    /// When the second burst of gratuitous ARPs is due.
    garp_again: Option<Instant>,
    ip_id: u16,
    counters: Counters,
    /// What tracking does to the priority, as status shows it.
    tracking: Vec<String>,
    logged: HashMap<&'static str, Instant>,
}

impl Instance {
    /// Logs at most once per [`LOG_EVERY`] per kind.
    fn log_limited(&mut self, kind: &'static str, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .logged
            .get(kind)
            .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY)
        {
            self.logged.insert(kind, now);
            warn!(instance = %self.cfg.name, "{msg}");
        }
    }
}

pub(super) struct Engine {
    ifaces: Vec<Iface>,
    instances: Vec<Instance>,
    netlink: Netlink,
    arp: ArpSender,
    events: mpsc::Sender<Event>,
    status: SharedStatus,
    scripts: BTreeMap<String, config::VrrpScript>,
    /// Latest result of each script (absent until its first run).
    script_ok: BTreeMap<String, bool>,
    /// Whether each tracked virtual server's quorum holds.
    quorum_ok: BTreeMap<String, bool>,
}

/// A datagram from one of the interfaces.
struct Received {
    iface: usize,
    bytes: Vec<u8>,
}

impl Engine {
    pub(super) async fn new(
        c: &Config,
        events: mpsc::Sender<Event>,
        status: SharedStatus,
    ) -> Result<Engine> {
        let netlink = Netlink::open()?;
        let mut ifaces: Vec<Iface> = Vec::new();
        let mut instances = Vec::new();
        for i in &c.vrrp_instances {
            let name = i.interface.clone().unwrap_or(c.global.interface.clone());
            let iface = match ifaces.iter().position(|f| f.name == name) {
                Some(n) => n,
                None => {
                    let link = netlink.link(&name).await?;
                    let socket = Arc::new(VrrpSocket::open(&name, link.index)?);
                    ifaces.push(Iface { name, link, socket });
                    ifaces.len() - 1
                }
            };
            let vips: Vec<(Ipv4Addr, u8)> = i
                .virtual_ipaddress
                .iter()
                .filter_map(|s| config::parse_cidr(s))
                .collect();
            let link = ifaces[iface].link;
            let address = match i.unicast_src_ip {
                Some(a) => a,
                None => netlink
                    .addresses(link.index)
                    .await?
                    .into_iter()
                    .find(|(a, _, primary)| *primary && !vips.iter().any(|(v, _)| v == a))
                    .map(|(a, _, _)| a)
                    .with_context(|| {
                        format!(
                            "vrrp_instances {}: {} has no IPv4 address to send adverts from",
                            i.name, ifaces[iface].name
                        )
                    })?,
            };
            // Addresses left by an earlier run go until we are MASTER.
            for (v, _) in &vips {
                if netlink.del_address(link.index, *v).await? {
                    info!(instance = %i.name, address = %v, "removed a virtual address left behind");
                }
            }
            let settings = Settings {
                version: i.version,
                interval: Duration::from_secs_f64(i.advert_int),
                preempt: i.preempt,
                preempt_delay: Duration::from_secs_f64(i.preempt_delay),
                address,
                start_master: i.state == config::VrrpState::Master,
            };
            let base = i.priority.min(255) as u8;
            instances.push(Instance {
                vrid: i.virtual_router_id as u8,
                iface,
                address,
                vips,
                auth: match &i.authentication {
                    Some(a) => Auth::pass(&a.auth_pass),
                    None => Auth::None,
                },
                machine: Machine::new(settings, base),
                base,
                garp_again: None,
                ip_id: 0,
                counters: Counters::default(),
                tracking: Vec::new(),
                logged: HashMap::new(),
                cfg: i.clone(),
            });
        }
        let arp = ArpSender::open()?;
        let mut quorum_ok = BTreeMap::new();
        for i in &c.vrrp_instances {
            for t in &i.track_virtual_server {
                quorum_ok.insert(t.name.clone(), true);
            }
        }
        Ok(Engine {
            ifaces,
            instances,
            netlink,
            arp,
            events,
            status,
            scripts: c.vrrp_scripts.clone(),
            script_ok: BTreeMap::new(),
            quorum_ok,
        })
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        let (rx_tx, mut rx) = mpsc::channel::<Received>(256);
        for (n, f) in self.ifaces.iter().enumerate() {
            let socket = f.socket.clone();
            let tx = rx_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                loop {
                    match socket.recv(&mut buf).await {
                        Ok(len) => {
                            let r = Received {
                                iface: n,
                                bytes: buf[..len].to_vec(),
                            };
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!("receiving VRRP: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        // An interface that goes down puts its instances in FAULT, as in
        // keepalived: polled, because link events need a multicast group
        // and a poll every 100 ms is cheap.
        let (link_tx, mut link_rx) = mpsc::channel(16);
        tokio::spawn(watch_links(
            self.netlink.clone(),
            self.ifaces
                .iter()
                .map(|f| (f.name.clone(), f.link.up))
                .collect(),
            link_tx,
        ));
        let (track_tx, mut track_rx) = mpsc::channel(64);
        let used: std::collections::BTreeSet<&String> = self
            .instances
            .iter()
            .flat_map(|i| i.cfg.track_script.iter())
            .collect();
        for name in used {
            if let Some(s) = self.scripts.get(name) {
                tokio::spawn(track::watch(name.clone(), s.clone(), track_tx.clone()));
            }
        }
        let now = Instant::now();
        for n in 0..self.instances.len() {
            // Before start, so a failing weight-0 script starts in FAULT.
            self.retrack(n, now);
            let a = self.instances[n].machine.start(now);
            self.act(n, a).await;
        }
        self.publish();
        loop {
            let next = self.next_deadline();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(r) = rx.recv() => self.on_datagram(r).await,
                Some((name, ok)) = track_rx.recv() => {
                    self.script_ok.insert(name, ok);
                    self.retrack_all().await;
                }
                Some((n, up)) = link_rx.recv() => {
                    let f = &mut self.ifaces[n];
                    if up {
                        info!(interface = %f.name, "link up");
                    } else {
                        warn!(interface = %f.name, "link down: its instances go to FAULT");
                    }
                    f.link.up = up;
                    self.retrack_all().await;
                }
                cmd = cmds.recv() => match cmd {
                    Some(Command::Quorum { name, ok }) => {
                        if self.quorum_ok.get(&name).is_some_and(|q| *q != ok) {
                            self.quorum_ok.insert(name, ok);
                            self.retrack_all().await;
                        }
                    }
                    Some(Command::Stop(done)) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                _ = sleep => self.on_timers().await,
            }
            self.publish();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.instances
            .iter()
            .flat_map(|i| [i.machine.deadline(), i.garp_again])
            .flatten()
            .min()
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        for n in 0..self.instances.len() {
            let a = self.instances[n].machine.on_timer(now);
            self.act(n, a).await;
            if self.instances[n].garp_again.is_some_and(|t| t <= now) {
                self.instances[n].garp_again = None;
                self.announce(n);
            }
        }
    }

    /// Validates a datagram and hands it to its instance.
    async fn on_datagram(&mut self, r: Received) {
        let Ok(ip) = wire::parse_ipv4(&r.bytes) else {
            return;
        };
        if ip.protocol != wire::PROTO_VRRP {
            return;
        }
        let payload = &r.bytes[ip.header_len..ip.header_len + ip.payload_len];
        let vrid = payload.get(1).copied();
        let Some(n) = self
            .instances
            .iter()
            .position(|i| i.iface == r.iface && Some(i.vrid) == vrid)
        else {
            // Another router's VRID, or a misconfiguration: counted on this
            // interface's instances, not logged (shared LANs are normal).
            for i in self.instances.iter_mut().filter(|i| i.iface == r.iface) {
                *i.counters.dropped.entry("vrid").or_default() += 1;
            }
            return;
        };
        let inst = &mut self.instances[n];
        if ip.src == inst.address {
            return;
        }
        let drop = |inst: &mut Instance, kind: &'static str, why: String| {
            *inst.counters.dropped.entry(kind).or_default() += 1;
            inst.log_limited(
                kind,
                format_args!("dropped an advert from {}: {why}", ip.src),
            );
        };
        if ip.ttl != wire::TTL {
            drop(inst, "ttl", format!("TTL {} is not 255", ip.ttl));
            return;
        }
        let packet = match wire::Packet::new_checked(payload) {
            Ok(p) => p,
            Err(e) => return drop(inst, "truncated", e.to_string()),
        };
        if packet.version() != inst.cfg.version {
            let v = packet.version();
            return drop(
                inst,
                "version",
                format!("version {v}, this instance runs {}", inst.cfg.version),
            );
        }
        let advert = match Advert::parse(&packet, ip.src, ip.dst) {
            Ok((a, _)) => a,
            Err(e @ wire::Error::Checksum) => return drop(inst, "checksum", e.to_string()),
            Err(e @ wire::Error::AuthType(_)) => return drop(inst, "auth", e.to_string()),
            Err(e) => return drop(inst, "truncated", e.to_string()),
        };
        if advert.auth != inst.auth {
            return drop(inst, "auth", "authentication does not match".into());
        }
        let interval = Duration::from_millis(advert.interval_cs as u64 * 10);
        if advert.version == 2 && interval != Duration::from_secs_f64(inst.cfg.advert_int) {
            return drop(
                inst,
                "interval",
                format!(
                    "advert_int {} s, this instance uses {} s",
                    interval.as_secs_f64(),
                    inst.cfg.advert_int
                ),
            );
        }
        inst.counters.adverts_received += 1;
        let a = inst
            .machine
            .on_advert(Instant::now(), ip.src, advert.priority, interval);
        self.act(n, a).await;
    }

    /// Does what the state machine asks.
    async fn act(&mut self, n: usize, actions: Vec<Action>) {
        self.act_telling(n, actions, true).await
    }

    /// As [`Engine::act`]; `tell_agent: false` leaves the data path alone
    /// (on stop, the agent is the one waiting).
    async fn act_telling(&mut self, n: usize, actions: Vec<Action>, tell_agent: bool) {
        for a in actions {
            match a {
                Action::Send(p) => self.advertise(n, p),
                Action::SplitBrain { from, priority } => {
                    let i = &mut self.instances[n];
                    i.counters.split_brain += 1;
                    let mine = i.machine.priority();
                    i.log_limited(
                        "split_brain",
                        format_args!(
                            "split brain: {from} advertises priority {priority} while we are MASTER at {mine}; answered at once"
                        ),
                    );
                }
                Action::Enter(s) => self.enter(n, s, tell_agent).await,
            }
        }
    }

    /// Follows a state change: the data path first, then the addresses.
    async fn enter(&mut self, n: usize, s: State, tell_agent: bool) {
        let name = self.instances[n].cfg.name.clone();
        let prio = self.instances[n].machine.priority();
        info!(instance = %name, priority = prio, "entering {} state", s.name());
        // Status shows the new state at once, not after the addresses move.
        self.publish();
        if s == State::Master {
            self.instances[n].counters.became_master += 1;
            if tell_agent {
                self.tell_agent(&name, s).await;
            }
            let (index, vips) = (self.link(n).index, self.instances[n].vips.clone());
            for (a, p) in vips {
                if let Err(e) = self.netlink.add_address(index, a, p).await {
                    error!(instance = %name, "{e:#}");
                }
            }
            self.announce(n);
            let delay = self.instances[n].cfg.garp_master_delay;
            self.instances[n].garp_again =
                (delay > 0.0).then(|| Instant::now() + Duration::from_secs_f64(delay));
        } else {
            self.instances[n].garp_again = None;
            let (index, vips) = (self.link(n).index, self.instances[n].vips.clone());
            for (a, _) in vips {
                if let Err(e) = self.netlink.del_address(index, a).await {
                    error!(instance = %name, "{e:#}");
                }
            }
            if tell_agent {
                self.tell_agent(&name, s).await;
            }
        }
        let cfg = &self.instances[n].cfg;
        let script = match s {
            State::Master => &cfg.notify_master,
            State::Backup => &cfg.notify_backup,
            State::Fault => &cfg.notify_fault,
            State::Init => &cfg.notify_stop,
        };
        if let Some(cmd) = script {
            run_script(cmd, &[]);
        }
        if let Some(cmd) = &cfg.notify {
            let state = if s == State::Init { "STOP" } else { s.name() };
            run_script(cmd, &["INSTANCE", &name, state, &prio.to_string()]);
        }
    }

    /// Waits, bounded, for the agent to make the data path follow.
    async fn tell_agent(&self, instance: &str, state: State) {
        let (ack, done) = oneshot::channel();
        let ev = Event {
            instance: instance.into(),
            state,
            ack,
        };
        if self.events.send(ev).await.is_ok()
            && tokio::time::timeout(ACK_TIMEOUT, done).await.is_err()
        {
            warn!(
                instance,
                "the data path did not follow within {ACK_TIMEOUT:?}"
            );
        }
    }

    fn link(&self, n: usize) -> net::Link {
        self.ifaces[self.instances[n].iface].link
    }

    /// Sends one advert with priority `p`, to the group or to each peer.
    fn advertise(&mut self, n: usize, p: u8) {
        let socket = self.ifaces[self.instances[n].iface].socket.clone();
        let i = &mut self.instances[n];
        let advert = Advert {
            version: i.cfg.version,
            vrid: i.vrid,
            priority: p,
            interval_cs: (i.cfg.advert_int * 100.0).round() as u16,
            addresses: i.vips.iter().map(|(a, _)| *a).collect(),
            auth: i.auth,
        };
        let peers = if i.cfg.unicast_peers.is_empty() {
            vec![wire::GROUP]
        } else {
            i.cfg.unicast_peers.clone()
        };
        let mut buf = [0u8; 20 + 8 + 4 * 255 + wire::AUTH_LEN];
        for dst in peers {
            i.ip_id = i.ip_id.wrapping_add(1);
            let len = advert.emit(&mut buf[20..], i.address, dst);
            wire::emit_ipv4(&mut buf, i.address, dst, i.ip_id, len);
            match socket.send(&buf[..20 + len], dst) {
                Ok(()) => i.counters.adverts_sent += 1,
                Err(e) => i.log_limited("send", format_args!("sending an advert to {dst}: {e}")),
            }
        }
    }

    /// A burst of gratuitous ARPs for every address of instance `n`.
    fn announce(&mut self, n: usize) {
        let link = self.link(n);
        let i = &mut self.instances[n];
        let vips: Vec<Ipv4Addr> = i.vips.iter().map(|(a, _)| *a).collect();
        for _ in 0..i.cfg.garp_master_repeat {
            for a in &vips {
                if let Err(e) = self.arp.announce(link.index, link.mac, *a) {
                    i.log_limited("garp", format_args!("gratuitous ARP for {a}: {e}"));
                }
            }
        }
    }

    /// Recomputes every instance's priority and fault from tracking.
    async fn retrack_all(&mut self) {
        let now = Instant::now();
        for n in 0..self.instances.len() {
            let a = self.retrack(n, now);
            self.act(n, a).await;
        }
    }

    fn retrack(&mut self, n: usize, now: Instant) -> Vec<Action> {
        let (prio, fault, why) = self.tracked(n);
        let i = &mut self.instances[n];
        i.tracking = why;
        if prio != i.machine.priority() {
            info!(instance = %i.cfg.name, from = i.machine.priority(), to = prio, "priority changed by tracking");
            i.machine.set_priority(prio);
        }
        i.machine.set_fault(now, fault)
    }

    /// Effective priority, fault, and why, with keepalived's weights.
    fn tracked(&self, n: usize) -> (u8, bool, Vec<String>) {
        let i = &self.instances[n];
        let mut why = Vec::new();
        let mut items: Vec<(String, i32, Option<bool>)> = Vec::new();
        let iface = &self.ifaces[i.iface];
        items.push((format!("interface {}", iface.name), 0, Some(iface.link.up)));
        for s in &i.cfg.track_script {
            let w = self.scripts.get(s).map_or(0, |s| s.weight);
            items.push((s.clone(), w, self.script_ok.get(s).copied()));
        }
        for t in &i.cfg.track_virtual_server {
            let ok = self.quorum_ok.get(&t.name).copied();
            items.push((format!("quorum of {}", t.name), t.weight, ok));
        }
        let (prio, fault) = effective(i.base, &items, &mut why);
        (prio, fault, why)
    }

    fn publish(&self) {
        let snapshot: Vec<InstanceStatus> = self
            .instances
            .iter()
            .map(|i| InstanceStatus {
                instance: i.cfg.name.clone(),
                state: i.machine.state().name(),
                priority: i.machine.priority(),
                base_priority: i.base,
                master: i.machine.master(),
                tracking: i.tracking.clone(),
                counters: i.counters.clone(),
            })
            .collect();
        if let Ok(mut s) = self.status.lock() {
            *s = snapshot;
        }
    }

    async fn stop(&mut self) {
        for n in 0..self.instances.len() {
            let a = self.instances[n].machine.stop();
            self.act_telling(n, a, false).await;
        }
        self.publish();
    }
}

/// Polls each interface (name, state at start) every 100 ms and reports
/// changes by index until the engine goes away.
async fn watch_links(
    netlink: Netlink,
    mut links: Vec<(String, bool)>,
    tx: mpsc::Sender<(usize, bool)>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        for (n, (name, last)) in links.iter_mut().enumerate() {
            // A vanished interface counts as down.
            let up = netlink.link(name).await.is_ok_and(|l| l.up);
            if up != *last {
                *last = up;
                if tx.send((n, up)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// keepalived's weights: 0 makes a failure FAULT; a positive weight is
/// added while OK; a negative one is added while failed. A result not yet
/// known counts as neither. The owner's 255 is never changed; any other
/// priority stays within 1-254.
fn effective(base: u8, items: &[(String, i32, Option<bool>)], why: &mut Vec<String>) -> (u8, bool) {
    let mut p = base as i32;
    let mut fault = false;
    for (name, w, ok) in items {
        match (*w, *ok) {
            (0, Some(false)) => {
                fault = true;
                why.push(format!("{name} failed: FAULT"));
            }
            (w, Some(true)) if w > 0 => {
                p += w;
                why.push(format!("{name} OK: +{w}"));
            }
            (w, Some(false)) if w < 0 => {
                p += w;
                why.push(format!("{name} failed: {w}"));
            }
            _ => {}
        }
    }
    if base == fsm::OWNER {
        return (base, fault);
    }
    (p.clamp(1, 254) as u8, fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_weights_follow_keepalived() {
        // (base, weight, result, effective priority, fault)
        let cases = [
            (100, 10, Some(true), 110, false),
            (100, 10, Some(false), 100, false),
            (100, -30, Some(false), 70, false),
            (100, -30, Some(true), 100, false),
            (100, 0, Some(false), 100, true),
            (100, 0, None, 100, false),
            // Clamped to 1-254; the owner keeps 255.
            (250, 50, Some(true), 254, false),
            (20, -50, Some(false), 1, false),
            (255, -50, Some(false), 255, false),
        ];
        let mut why = vec![];
        for (base, w, ok, prio, fault) in cases {
            let item = ("s".to_string(), w, ok);
            assert_eq!(
                effective(base, &[item], &mut why),
                (prio, fault),
                "base {base}, weight {w}, {ok:?}"
            );
        }
    }
}
