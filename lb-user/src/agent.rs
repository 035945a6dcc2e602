//! `xlb run`: load the data path, program it from the config, and keep it in
//! step on SIGHUP; SIGTERM or SIGINT is a clean shutdown.

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
    time::timeout,
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    dataplane::{addr_of, Attached, Dataplane},
    health::{self, ServerKey},
    plan::{Diff, Ids, Plan, Runtime},
    status::{BackendStatus, CheckLatency, ServiceStatus, Status},
    sync::{self, ConnSync},
    vrrp::{self, fsm::State, Vrrp},
};

/// Where `run` writes its pid by default, for `xlb reload`.
pub const PID_FILE: &str = "/run/xlb.pid";
/// Where `run` answers `xlb status` by default.
pub const SOCKET: &str = "/run/xlb.sock";
/// A status or metrics client gets this long to ask and to read.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The running agent's state.
pub struct Agent {
    path: PathBuf,
    /// `--pin-path`: replaces `global.pin_path` of every config read.
    pin_path: Option<String>,
    /// Reads the config and its includes; keeps what it parsed of each
    /// included file, so a reload parses only the files that changed.
    loader: config::Loader,
    /// Hash of the files' bytes, so a reload of unchanged files is free.
    text_hash: u64,
    config: Arc<Config>,
    runtime: Runtime,
    plan: Plan,
    dp: Dataplane,
    /// The health checks of every real server with a checker.
    checks: health::Checks,
    /// A health change failed to reach the data path: plan everything
    /// again next time instead of only the services that changed.
    plan_stale: bool,
    /// The last reason each checked server gave.
    why: BTreeMap<ServerKey, String>,
    /// Durations of recent checks.
    latencies: health::SharedLatencies,
    /// The VRRP instances, when the config has any.
    vrrp: Option<Vrrp>,
    /// Last quorum state told to VRRP, per tracked virtual server.
    quorum: BTreeMap<String, bool>,
    /// Connection sync with the peer, when configured.
    sync: Option<ConnSync>,
    /// Where the sync hands what the peer sent.
    sync_tx: mpsc::Sender<Vec<sync::Entry>>,
}

/// What the running agent listens to besides signals and sockets.
pub struct Inputs {
    /// Health transitions from the checker tasks.
    pub health: mpsc::Receiver<health::Event>,
    /// VRRP state changes the data path must follow.
    pub vrrp: Option<mpsc::Receiver<vrrp::Event>>,
    /// Flows the VRRP peer set up, from the connection sync.
    pub sync: mpsc::Receiver<Vec<sync::Entry>>,
}

/// The ifindex of `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("interface name")?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name:?}");
    }
    Ok(i)
}

/// The data path needs IPv4 forwarding: `bpf_fib_lookup` refuses to route
/// otherwise, and the kernel forwards the packets whose neighbour is unknown.
fn enable_forwarding() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").with_context(|| format!("enabling {p}"))?;
    info!("enabled net.ipv4.ip_forward: the data path routes through the kernel's FIB");
    Ok(())
}

/// Lets the kernel forward the packets the data path hands it when a
/// next hop has no neighbour entry yet. Those already carry the rewritten
/// source, a VIP this node holds, which the kernel drops as a martian
/// unless `accept_local` is on; forwarding them is what resolves the
/// neighbour (a new VRRP master has never heard from the clients).
fn accept_local(iface: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
    if std::fs::read_to_string(&p).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&p, "1").with_context(|| format!("enabling {p}"))?;
    info!(interface = %iface, "enabled accept_local: first packets to a new neighbour go through the kernel");
    Ok(())
}

/// Applies a plan difference to the maps, removals first.
fn apply(dp: &mut Dataplane, d: &Diff<'_>) -> Result<()> {
    if let Some(c) = d.config {
        dp.set_config(c)?;
    }
    for s in &d.remove {
        dp.remove_service(s)?;
    }
    dp.apply_services(&d.upsert)?;
    for &(a, kind) in &d.addrs {
        dp.set_addr(a, kind)?;
    }
    Ok(())
}

impl Agent {
    /// Loads the config and the program, attaches and programs the maps.
    /// Maps and attachments pinned by an earlier agent are taken over, so
    /// its connections keep flowing.
    pub fn start(path: &Path, pin_path: Option<String>) -> Result<(Agent, Inputs)> {
        let mut loader = config::Loader::default();
        let loaded = loader.load(path)?;
        let text_hash = loaded.hash;
        let config = with_pin_path(loaded.config, pin_path.as_deref());
        let mut runtime = Runtime::from_config_hints(&config);
        // VRRP decides: an instance's services wait for it to be MASTER.
        runtime.masters.clear();
        let fresh = Plan::build(&config, &runtime, None);
        enable_forwarding()?;
        let pin = Path::new(&config.global.pin_path);
        let mut dp = Dataplane::load_pinned(fresh.limits.clone(), fresh.config, pin)?;
        // Before anything is attached: a bad sync interface stops start-up
        // with nothing changed.
        let (sync_tx, sync_rx) = mpsc::channel(256);
        let sync = start_sync(&mut dp, &config, &sync_tx)?;
        let plan = if dp.adopted() {
            let ids = recover_ids(&mut dp, &config)?;
            info!(pin_path = %pin.display(), services = ids.services.len(), "took over the pinned data path and its connections");
            Plan::build(&config, &runtime, Some(&ids))
        } else {
            fresh
        };
        for iface in &plan.interfaces {
            let how = dp.attach(iface, config.global.xdp_mode)?;
            accept_local(iface)?;
            dp.add_egress(ifindex(iface)?)?;
            match how {
                Attached::New(mode) => info!(interface = %iface, mode = ?mode, "XDP attached"),
                Attached::Replaced => info!(interface = %iface, "XDP program replaced in place"),
            }
        }
        // Everything is written: on a takeover, unchanged services get the
        // same table again, and what the old agent had beyond the plan goes.
        let mut diff = plan.diff(None);
        if dp.adopted() {
            let keys: Vec<_> = plan.services.iter().map(|s| s.spec.key()).collect();
            for (key, svc) in dp.installed_services()? {
                if !keys.contains(&key) {
                    diff.remove.push(crate::dataplane::ServiceSpec {
                        id: svc.id,
                        vip: addr_of(key.addr),
                        port: u16::from_be(key.port),
                        proto: key.proto,
                        flags: 0,
                        snat_addrs: vec![],
                        snat_ports: (0, 0),
                        backends: vec![],
                        since_ns: 0,
                    });
                }
            }
            for (a, _) in dp.installed_addrs()? {
                if !plan.addrs.contains_key(&a) {
                    diff.addrs.push((a, 0));
                }
            }
        }
        apply(&mut dp, &diff)?;
        info!(services = plan.services.len(), "serving");
        release_memory();
        let (vrrp, vrrp_rx) = if config.vrrp_instances.is_empty() {
            (None, None)
        } else {
            let (v, rx) = Vrrp::start(&config)?;
            info!(instances = config.vrrp_instances.len(), "VRRP started");
            (Some(v), Some(rx))
        };
        let (health_tx, health_rx) = mpsc::channel(1024);
        let latencies = health::SharedLatencies::default();
        let checks = health::Pool::new(health_tx, latencies.clone(), check_limit()).spawn();
        let mut agent = Agent {
            path: path.to_path_buf(),
            pin_path,
            loader,
            text_hash,
            config: Arc::new(config),
            runtime,
            plan,
            dp,
            checks,
            plan_stale: false,
            why: BTreeMap::new(),
            latencies,
            vrrp,
            quorum: BTreeMap::new(),
            sync,
            sync_tx,
        };
        agent.start_checks();
        agent.sync_quorum();
        Ok((
            agent,
            Inputs {
                health: health_rx,
                vrrp: vrrp_rx,
                sync: sync_rx,
            },
        ))
    }

    /// Tells VRRP which tracked virtual servers hold their quorum.
    fn sync_quorum(&mut self) {
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
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(sync::monotonic_ns());
                    true
                }
                std::collections::btree_map::Entry::Occupied(_) => false,
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

    /// Hands the config to the health checks: servers whose checker is
    /// unchanged keep their schedule and counters, so a large pool is not
    /// checked all at once after every reload; new ones start from their
    /// current state.
    fn start_checks(&mut self) {
        self.checks
            .update(self.config.clone(), self.runtime.down.clone());
    }

    /// Real servers changed state: log why, run their notify scripts, and
    /// rebuild the tables once for all of them. When a whole rack fails,
    /// thousands of checks fail together, and a rebuild per server would
    /// cost O(servers) each.
    pub fn on_health_batch(&mut self, events: Vec<health::Event>) -> Result<()> {
        let mut resets = Vec::new();
        let mut changed = std::collections::BTreeSet::new();
        for ev in events {
            let vs = ev.server.0.clone();
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
        for (vs_name, sk, addr, port) in resets {
            if let Some(&id) = self.plan.ids.backends.get(&(sk, addr, port, false)) {
                let n = self.dp.purge_backend(id)?;
                info!(service = %vs_name, server = %format!("{addr}:{port}"), connections = n, "on_down reset: connections purged");
            }
        }
        Ok(())
    }

    /// Records one health change (state, reason, weight, notify script);
    /// adds the server to `resets` if its service purges connections on
    /// down. False when the server is no longer configured.
    fn record_health(&mut self, ev: health::Event, resets: &mut Vec<Purge>) -> bool {
        let (vs_name, addr, port) = ev.server.clone();
        let Some(vs) = self
            .config
            .virtual_servers
            .iter()
            .find(|v| v.name == vs_name)
        else {
            return false;
        };
        let Some(rs) = vs
            .real_servers
            .iter()
            .find(|r| (r.address, r.port) == (addr, port))
        else {
            return false;
        };
        let was_down = self.runtime.down.contains(&ev.server);
        if ev.up {
            self.runtime.down.remove(&ev.server);
            info!(service = %vs_name, server = %format!("{addr}:{port}"), "real server up: {}", ev.reason);
        } else {
            self.runtime.down.insert(ev.server.clone());
            warn!(service = %vs_name, server = %format!("{addr}:{port}"), "real server down: {}", ev.reason);
        }
        if let Some(w) = ev.weight {
            self.runtime.weights.insert(ev.server.clone(), w);
        }
        self.why.insert(ev.server.clone(), ev.reason.clone());
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
        if !ev.up && vs.on_down == crate::config::OnDown::Reset {
            resets.push((vs_name, (vs.vip, vs.port, vs.protocol.number()), addr, port));
        }
        true
    }

    /// Stops: detaches and unpins everything, or with `keep` leaves the data
    /// path running for the next agent to take over.
    pub async fn stop(mut self, keep: bool) -> Result<()> {
        self.checks.stop();
        if let Some(v) = self.vrrp.take() {
            v.stop().await;
        }
        if keep {
            info!(pin_path = %self.config.global.pin_path, "leaving the data path running");
            return Ok(());
        }
        info!("detaching XDP and removing the pins");
        self.dp.destroy()
    }

    /// Re-reads the config; a bad one is refused and the old one keeps serving.
    pub fn reload(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let Some(loaded) = self
            .loader
            .load_if_changed(&self.path, Some(self.text_hash))?
        else {
            info!(changed = 0, "reloaded: the files are unchanged");
            return Ok(());
        };
        let text_hash = loaded.hash;
        let (parsed_files, parsed_servers) = (loaded.parsed_files, loaded.parsed_servers);
        let config = with_pin_path(loaded.config, self.pin_path.as_deref());
        let parsed = started.elapsed();
        if config.vrrp_instances != self.config.vrrp_instances
            || config.vrrp_scripts != self.config.vrrp_scripts
        {
            bail!("vrrp_instances or vrrp_scripts changed: restart the agent to apply them (a MASTER hands over gracefully on SIGTERM)");
        }
        // Taken over only if the reload goes through. New `alpha` servers
        // start down, as at start-up; servers that are gone or no longer
        // checked lose their state (a server without a checker is up).
        let mut runtime = self.runtime.clone();
        let hints = Runtime::from_config_hints(&config).down;
        if !hints.is_empty() {
            let old = servers(&self.config, false);
            runtime
                .down
                .extend(hints.into_iter().filter(|k| !old.contains(&key_ref(k))));
        }
        let checked = servers(&config, true);
        runtime.down.retain(|k| checked.contains(&key_ref(k)));
        runtime.weights.retain(|k, _| checked.contains(&key_ref(k)));
        let plan = Plan::build(&config, &runtime, Some(&self.plan.ids));
        if !plan.fits(&self.dp.limits().clone()) {
            bail!("global limits (max_services, max_backends, conntrack.max_entries, maglev_size) changed: restart the agent to apply them");
        }
        if plan.interfaces != self.plan.interfaces
            || config.global.xdp_mode != self.config.global.xdp_mode
        {
            bail!("interfaces or xdp_mode changed: restart the agent to apply them");
        }
        // A changed sync opens its socket before anything changes: a bad
        // interface refuses the reload.
        let new_sync =
            if config.global.lvs_sync_daemon.as_ref() != self.sync.as_ref().map(|s| &s.config) {
                Some(start_sync(&mut self.dp, &config, &self.sync_tx)?)
            } else {
                None
            };
        let diff = plan.diff(Some(&self.plan));
        let changed = diff.upsert.len() + diff.remove.len();
        let planned = started.elapsed();
        apply(&mut self.dp, &diff)?;
        if let Some(s) = new_sync {
            self.sync = s;
        }
        let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let done = started.elapsed();
        info!(
            services = plan.services.len(),
            changed,
            ms = ms(done),
            parse_ms = ms(parsed),
            parsed_files,
            parsed_servers,
            plan_ms = ms(planned - parsed),
            apply_ms = ms(done - planned),
            "reloaded"
        );
        self.why.retain(|k, _| checked.contains(&key_ref(k)));
        drop(checked);
        self.config = Arc::new(config);
        self.plan = plan;
        self.text_hash = text_hash;
        self.runtime = runtime;
        self.start_checks();
        self.sync_quorum();
        release_memory();
        Ok(())
    }

    /// Installs flows the VRRP peer set up (or closes them), for services
    /// this node does not serve now: where it serves, its own entries are
    /// the ones in use.
    pub fn on_sync(&mut self, entries: Vec<sync::Entry>) -> Result<()> {
        let Some(counters) = self.sync.as_ref().map(|s| s.counters.clone()) else {
            return Ok(());
        };
        let now = sync::monotonic_ns();
        let mut flows = Vec::with_capacity(entries.len());
        for e in entries {
            let found = self.plan.services.iter().find_map(|ps| {
                let spec = &ps.spec;
                let ours = spec.vip == e.vip
                    && spec.port == e.vip_port
                    && spec.proto == e.proto
                    && spec.flags & lb_common::SVC_ENABLED == 0
                    && sync::in_pool(&spec.snat_addrs, spec.snat_ports, e.snat, e.snat_port);
                if !ours {
                    return None;
                }
                spec.backends
                    .iter()
                    .find(|b| b.addr == e.backend && b.port == e.backend_port)
                    .map(|b| (spec.id, b.id))
            });
            let Some((service_id, backend_id)) = found else {
                counters.ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            flows.push(crate::dataplane::SyncedFlow {
                key: e.key(),
                conn: e.conn(backend_id, service_id, now),
                closed: e.closed,
            });
        }
        // One datagram's flows with one write per map.
        self.dp.apply_synced(&flows, now)?;
        counters
            .installed
            .fetch_add(flows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A snapshot for `xlb status` and the metrics endpoint.
    pub fn status(&mut self) -> Result<Status> {
        let mut services = Vec::new();
        for ps in &self.plan.services {
            let spec = &ps.spec;
            let vs = self
                .config
                .virtual_servers
                .iter()
                .find(|v| v.name == ps.name);
            let t = self.dp.service_traffic(spec.id)?;
            let mut backends = Vec::new();
            for b in &spec.backends {
                let sorry = vs.is_some_and(|v| {
                    v.sorry_server
                        .is_some_and(|s| (s.address, s.port) == (b.addr, b.port))
                        && !v
                            .real_servers
                            .iter()
                            .any(|r| (r.address, r.port) == (b.addr, b.port))
                });
                let key = (ps.name.clone(), b.addr, b.port);
                let down = self.runtime.down.contains(&key);
                let checked = vs.is_some_and(|v| {
                    v.real_servers
                        .iter()
                        .any(|r| (r.address, r.port) == (b.addr, b.port) && r.checker_count() > 0)
                });
                let why = match (self.why.get(&key), down, checked) {
                    (Some(w), _, _) => w.clone(),
                    (None, true, _) => "alpha: waiting for a first successful check".into(),
                    (None, false, true) => "no check has failed yet".into(),
                    (None, false, false) => "no checker: always up".into(),
                };
                let bt = self.dp.backend_traffic(b.id)?;
                backends.push(BackendStatus {
                    address: b.addr,
                    port: b.port,
                    weight: b.weight,
                    sorry,
                    health: if down { "down" } else { "up" }.into(),
                    why,
                    packets: bt.packets,
                    bytes: bt.bytes,
                    new_conns: bt.new_conns,
                });
            }
            services.push(ServiceStatus {
                name: ps.name.clone(),
                vip: spec.vip,
                port: spec.port,
                protocol: if spec.proto == lb_common::PROTO_TCP {
                    "tcp"
                } else {
                    "udp"
                }
                .into(),
                serving: spec.flags & lb_common::SVC_ENABLED != 0,
                healthy: ps.healthy,
                quorum: vs.map_or(1, |v| v.quorum),
                sorry_active: ps.sorry_active,
                packets: t.packets,
                bytes: t.bytes,
                new_conns: t.new_conns,
                table_builds: self.dp.table_builds(spec.id),
                backends,
            });
        }
        let vrrp = self.vrrp.as_ref().map(|v| v.status()).unwrap_or_default();
        let sync = match &self.sync {
            Some(s) => Some(s.status(self.dp.sync_lost()?)),
            None => None,
        };
        let reasons = self
            .dp
            .reasons()?
            .into_iter()
            .map(|(r, n)| (r.name().to_string(), n))
            .collect();
        let (samples, p50, p90, p99, max) = self
            .latencies
            .lock()
            .map(|l| l.percentiles())
            .unwrap_or_default();
        Ok(Status {
            checks: CheckLatency {
                samples,
                p50_ms: p50,
                p90_ms: p90,
                p99_ms: p99,
                max_ms: max,
            },
            node: self.config.global.router_id.clone(),
            interfaces: self.plan.interfaces.clone(),
            adopted: self.dp.adopted(),
            vrrp,
            services,
            reasons,
            sync,
        })
    }

    /// The metrics listen address, if configured.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.config.global.metrics.as_deref()
    }

    /// The current plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// A server's key, borrowed.
type KeyRef<'a> = (&'a str, std::net::Ipv4Addr, u16);

fn key_ref(k: &ServerKey) -> KeyRef<'_> {
    (&k.0, k.1, k.2)
}

/// The real servers of `config` (with a checker only, if `checked`),
/// borrowed: a reload of 100,000 servers should not copy a name for each.
fn servers(config: &Config, checked: bool) -> std::collections::HashSet<KeyRef<'_>> {
    config
        .virtual_servers
        .iter()
        .flat_map(|v| {
            v.real_servers
                .iter()
                .filter(move |r| !checked || r.checker_count() > 0)
                .map(|r| (v.name.as_str(), r.address, r.port))
        })
        .collect()
}

/// `config` with the command line's pin path in place of its own.
fn with_pin_path(mut config: Config, pin_path: Option<&str>) -> Config {
    if let Some(p) = pin_path {
        config.global.pin_path = p.to_string();
    }
    config
}

/// Parsing a large config allocates far more than it keeps; hand the freed
/// memory back so the agent's resident size reflects what it holds.
fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ids of what an earlier agent installed: services from the service map,
/// backends from the live Maglev tables, so a takeover moves nothing.
fn recover_ids(dp: &mut Dataplane, config: &Config) -> Result<Ids> {
    let mut ids = Ids::default();
    for (key, svc) in dp.installed_services()? {
        let skey = (addr_of(key.addr), u16::from_be(key.port), key.proto);
        ids.services.insert(skey, svc.id);
        let vs = config
            .virtual_servers
            .iter()
            .find(|v| (v.vip, v.port, v.protocol.number()) == skey);
        let mut seen = std::collections::BTreeSet::new();
        for id in dp.live_table(svc.id)? {
            if id == lb_common::NO_BACKEND || !seen.insert(id) {
                continue;
            }
            let b = dp.backend(id)?;
            let (addr, port) = (addr_of(b.addr), u16::from_be(b.port));
            let sorry = vs.is_some_and(|v| {
                v.sorry_server
                    .is_some_and(|s| (s.address, s.port) == (addr, port))
                    && !v
                        .real_servers
                        .iter()
                        .any(|r| (r.address, r.port) == (addr, port))
            });
            ids.backends.insert((skey, addr, port, sorry), id);
        }
    }
    Ok(ids)
}

/// How many health checks may run at once: each holds a descriptor or
/// two, and the soft descriptor limit (1,024 by default) is raised to the
/// hard one first. A pool of 100,000 servers started all at once would
/// otherwise run out and mark healthy servers down.
fn check_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // Room for the agent's own descriptors; two per check for misc_check's pipes.
    let spare = (lim.rlim_cur as usize).saturating_sub(256) / 2;
    spare.clamp(16, MAX_CHECKS)
}

/// Checks in flight at most, whatever the descriptor limit.
const MAX_CHECKS: usize = 4096;

/// One malloc arena: the agent is mostly idle, and the threads that build
/// Maglev tables in parallel would otherwise each keep an arena's worth of
/// freed memory resident.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt before other threads exist only changes a tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// How `xlb run` was invoked.
pub struct RunOptions {
    pub config: PathBuf,
    pub pid_file: PathBuf,
    /// Unix socket for `xlb status`.
    pub socket: PathBuf,
    /// On exit, leave the data path attached and pinned for the next agent.
    pub keep_dataplane: bool,
    /// Replaces `global.pin_path`: two agents on one host need two.
    pub pin_path: Option<String>,
}

/// A server whose connections are purged: service name, service key,
/// address and port.
type Purge = (
    String,
    (std::net::Ipv4Addr, u16, u8),
    std::net::Ipv4Addr,
    u16,
);

/// Starts the connection sync `config` asks for, if any.
fn start_sync(
    dp: &mut Dataplane,
    config: &Config,
    tx: &mpsc::Sender<Vec<sync::Entry>>,
) -> Result<Option<ConnSync>> {
    let Some(cfg) = &config.global.lvs_sync_daemon else {
        return Ok(None);
    };
    let s = ConnSync::start(cfg, dp.sync_ring()?, tx.clone())
        .context("starting the connection sync")?;
    info!(interface = %cfg.interface, group = %cfg.group, port = cfg.port, id = cfg.id, "connection sync started");
    Ok(Some(s))
}

/// Most health changes applied with one plan rebuild.
const HEALTH_BATCH: usize = 4096;
/// How often the agent hands freed heap memory back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until SIGTERM or SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    let RunOptions {
        config: path,
        pid_file,
        socket,
        keep_dataplane,
        pin_path,
    } = opts;
    let (pid_file, socket) = (pid_file.as_path(), socket.as_path());
    // Handlers first: a SIGHUP or SIGTERM that comes during start-up (a
    // config-management run, `systemctl reload` right after start) is
    // handled once the loop runs instead of killing the agent.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (mut agent, mut inputs) = Agent::start(&path, pin_path)?;
    std::fs::write(pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let _ = std::fs::remove_file(socket);
    let status =
        UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    let metrics = match agent.metrics_addr() {
        Some(a) => {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("metrics listener {a}"))?;
            info!(address = %a, "metrics on /metrics");
            Some(l)
        }
        None => None,
    };
    // Checks, reloads and status requests free memory in bursts; glibc keeps
    // it until trimmed.
    let mut trim = tokio::time::interval(TRIM_EVERY);
    loop {
        tokio::select! {
            _ = trim.tick() => release_memory(),
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", agent.path.display());
                if let Err(e) = agent.reload() {
                    error!("reload refused, the running config stays: {e:#}");
                }
            }
            Some(ev) = inputs.health.recv() => {
                // Whatever else is already waiting goes into the same rebuild.
                let mut batch = vec![ev];
                while batch.len() < HEALTH_BATCH {
                    match inputs.health.try_recv() {
                        Ok(ev) => batch.push(ev),
                        Err(_) => break,
                    }
                }
                if let Err(e) = agent.on_health_batch(batch) {
                    error!("applying a health change: {e:#}");
                }
            }
            Some(entries) = inputs.sync.recv() => {
                if let Err(e) = agent.on_sync(entries) {
                    warn!("installing flows from the sync peer: {e:#}");
                }
            }
            Some(ev) = async { inputs.vrrp.as_mut().unwrap().recv().await }, if inputs.vrrp.is_some() => {
                if let Err(e) = agent.on_vrrp(ev) {
                    error!("following a VRRP state change: {e:#}");
                }
            }
            Ok((conn, _)) = status.accept() => {
                if let Err(e) = answer_status(&mut agent, conn).await {
                    warn!("status request: {e:#}");
                }
            }
            Ok((conn, _)) = async { metrics.as_ref().unwrap().accept().await }, if metrics.is_some() => {
                if let Err(e) = answer_metrics(&mut agent, conn).await {
                    warn!("metrics request: {e:#}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = std::fs::remove_file(pid_file);
    let _ = std::fs::remove_file(socket);
    agent.stop(keep_dataplane).await
}

/// One `status` or `status json` request per connection.
async fn answer_status(agent: &mut Agent, conn: UnixStream) -> Result<()> {
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    timeout(CLIENT_TIMEOUT, conn.read_line(&mut line)).await??;
    let s = agent.status()?;
    let reply = match line.trim() {
        "status json" => serde_json::to_string_pretty(&s)? + "\n",
        _ => s.text(),
    };
    timeout(CLIENT_TIMEOUT, conn.get_mut().write_all(reply.as_bytes())).await??;
    Ok(())
}

/// A minimal HTTP/1.1 answer to a scrape: the request is read and ignored
/// past its first line, and the connection closes after the reply.
async fn answer_metrics(agent: &mut Agent, mut conn: tokio::net::TcpStream) -> Result<()> {
    let mut buf = vec![0u8; 8192];
    let n = timeout(CLIENT_TIMEOUT, conn.read(&mut buf)).await??;
    let request = String::from_utf8_lossy(&buf[..n]);
    let (code, body) = if request.starts_with("GET /metrics ") || request.starts_with("GET / ") {
        ("200 OK", agent.status()?.metrics())
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let reply = format!(
        "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout(CLIENT_TIMEOUT, conn.write_all(reply.as_bytes())).await??;
    Ok(())
}

/// `xlb status`: asks the running agent.
pub fn query_status(socket: &Path, json: bool) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}: is the agent running?", socket.display()))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT * 5))?;
    s.write_all(if json { b"status json\n" } else { b"status\n" })?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `xlb reload`: SIGHUP to the running agent.
pub fn signal_reload(pid_file: &Path) -> Result<()> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading {}: is the agent running?", pid_file.display()))?
        .trim()
        .parse()
        .context("bad pid file")?;
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!("signalling pid {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
