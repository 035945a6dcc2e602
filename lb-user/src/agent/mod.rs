//! `xlb run`: load the data path, program it from the config, and keep it in
//! step with reloads (SIGHUP), health checks, VRRP and the connection sync;
//! SIGTERM or SIGINT is a clean shutdown.

mod events;
mod reload;
mod takeover;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config, ServerKey},
    dataplane::{Attached, Dataplane},
    health,
    plan::{Diff, Plan, Runtime},
    server::Servers,
    status::{CheckLatency, Sources, Status},
    sync::{self, ConnSync},
    sys,
    vrrp::{self, Vrrp},
};

/// Where `run` writes its pid by default, for `xlb reload`.
pub const PID_FILE: &str = "/run/xlb.pid";
/// Where `run` answers `xlb status` by default.
pub const SOCKET: &str = "/run/xlb.sock";

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

/// The data path needs IPv4 forwarding: `bpf_fib_lookup` refuses to route
/// otherwise, and the kernel forwards the packets whose neighbour is unknown.
fn enable_forwarding() -> Result<()> {
    sys::sysctl_on(
        "net.ipv4.ip_forward",
        "the data path routes through the kernel's FIB",
    )
}

/// Lets the kernel forward the packets the data path hands it when a next
/// hop has no neighbour entry yet. Those already carry the rewritten
/// source, a VIP this node holds, which the kernel drops as a martian
/// unless `accept_local` is on; forwarding them is what resolves the
/// neighbour (a new VRRP master has never heard from the clients).
fn accept_local(iface: &str) -> Result<()> {
    sys::sysctl_on(
        &format!("net/ipv4/conf/{iface}/accept_local"),
        "first packets to a new neighbour go through the kernel",
    )
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
        let sync = start_sync(&dp, &config, &sync_tx)?;
        let plan = if dp.adopted() {
            let ids = takeover::recover_ids(&dp, &config)?;
            info!(pin_path = %pin.display(), services = ids.services.len(), "took over the pinned data path and its connections");
            Plan::build(&config, &runtime, Some(&ids))
        } else {
            fresh
        };
        for iface in &plan.interfaces {
            let how = dp.attach(iface, config.global.xdp_mode)?;
            accept_local(iface)?;
            dp.add_egress(sys::ifindex(iface)?)?;
            match how {
                Attached::New(mode) => info!(interface = %iface, mode = ?mode, "XDP attached"),
                Attached::Replaced => info!(interface = %iface, "XDP program replaced in place"),
            }
        }
        // Everything is written: on a takeover, unchanged services get the
        // same table again, and what the old agent had beyond the plan goes.
        let mut diff = plan.diff(None);
        if dp.adopted() {
            takeover::remove_leftovers(&dp, &plan, &mut diff)?;
        }
        apply(&mut dp, &diff)?;
        info!(services = plan.services.len(), "serving");
        sys::release_memory();
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

    /// Hands the config to the health checks: servers whose checker is
    /// unchanged keep their schedule and counters, so a large pool is not
    /// checked all at once after every reload; new ones start from their
    /// current state.
    fn start_checks(&mut self) {
        self.checks
            .update(self.config.clone(), self.runtime.down.clone());
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

    /// A snapshot for `xlb status` and the metrics endpoint.
    pub fn status(&self) -> Result<Status> {
        let (samples, p50, p90, p99, max) = self
            .latencies
            .lock()
            .map(|l| l.percentiles())
            .unwrap_or_default();
        let sync = match &self.sync {
            Some(s) => Some(s.status(self.dp.sync_lost()?)),
            None => None,
        };
        Status::collect(Sources {
            config: &self.config,
            plan: &self.plan,
            down: &self.runtime.down,
            why: &self.why,
            dp: &self.dp,
            vrrp: self.vrrp.as_ref().map(|v| v.status()).unwrap_or_default(),
            sync,
            checks: CheckLatency {
                samples,
                p50_ms: p50,
                p90_ms: p90,
                p99_ms: p99,
                max_ms: max,
            },
        })
    }

    /// The metrics listen address, if configured.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.config.global.metrics.as_deref()
    }
}

/// `config` with the command line's pin path in place of its own.
fn with_pin_path(mut config: Config, pin_path: Option<&str>) -> Config {
    if let Some(p) = pin_path {
        config.global.pin_path = p.to_string();
    }
    config
}

/// How many health checks may run at once: each holds a descriptor or
/// two, and the soft descriptor limit (1,024 by default) is raised to the
/// hard one first. A pool of 100,000 servers started all at once would
/// otherwise run out and mark healthy servers down.
fn check_limit() -> usize {
    let nofile = sys::raise_nofile_limit();
    // Room for the agent's own descriptors; two per check for misc_check's pipes.
    let spare = (nofile as usize).saturating_sub(256) / 2;
    spare.clamp(16, MAX_CHECKS)
}

/// Checks in flight at most, whatever the descriptor limit.
const MAX_CHECKS: usize = 4096;

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

/// Starts the connection sync `config` asks for, if any.
fn start_sync(
    dp: &Dataplane,
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
    let (servers, mut asks) = Servers::start(socket, agent.metrics_addr()).await?;
    // Checks, reloads and status requests free memory in bursts; glibc keeps
    // it until trimmed.
    let mut trim = tokio::time::interval(TRIM_EVERY);
    loop {
        tokio::select! {
            _ = trim.tick() => sys::release_memory(),
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
            Some(ask) = asks.recv() => {
                let _ = ask.send(agent.status().map_err(|e| format!("{e:#}")));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Clients waiting for a snapshot are told the agent stops.
    drop((servers, asks));
    let _ = std::fs::remove_file(pid_file);
    let _ = std::fs::remove_file(socket);
    agent.stop(keep_dataplane).await
}

/// `xlb reload`: SIGHUP to the running agent.
pub fn signal_reload(pid_file: &Path) -> Result<()> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading {}: is the agent running?", pid_file.display()))?
        .trim()
        .parse()
        .context("bad pid file")?;
    sys::hangup(pid)
}
