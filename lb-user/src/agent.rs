//! `xlb run`: load the data path, program it from the config, and keep it in
//! step on SIGHUP; SIGTERM or SIGINT is a clean shutdown.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    dataplane::{addr_of, Attached, Dataplane},
    plan::{Diff, Ids, Plan, Runtime},
};

/// Where `run` writes its pid by default, for `xlb reload`.
pub const PID_FILE: &str = "/run/xlb.pid";

/// The running agent's state.
pub struct Agent {
    path: PathBuf,
    /// Hash of the file's bytes, so a reload of an unchanged file is free.
    text_hash: u64,
    config: Config,
    runtime: Runtime,
    plan: Plan,
    dp: Dataplane,
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
    pub fn start(path: &Path) -> Result<Agent> {
        let text = read(path)?;
        let config = config::parse(&text, &path.display().to_string())?;
        let text_hash = hash(&text);
        drop(text);
        let runtime = Runtime::from_config_hints(&config);
        if !config.vrrp_instances.is_empty() {
            warn!("VRRP is not running yet: services of instances with state MASTER are served, the others stand by");
        }
        let fresh = Plan::build(&config, &runtime, None);
        enable_forwarding()?;
        let pin = Path::new(&config.global.pin_path);
        let mut dp = Dataplane::load_pinned(fresh.limits.clone(), fresh.config, pin)?;
        let plan = if dp.adopted() {
            let ids = recover_ids(&mut dp, &config)?;
            info!(pin_path = %pin.display(), services = ids.services.len(), "took over the pinned data path and its connections");
            Plan::build(&config, &runtime, Some(&ids))
        } else {
            fresh
        };
        for iface in &plan.interfaces {
            let how = dp.attach(iface, config.global.xdp_mode)?;
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
        Ok(Agent {
            path: path.to_path_buf(),
            text_hash,
            config,
            runtime,
            plan,
            dp,
        })
    }

    /// Stops: detaches and unpins everything, or with `keep` leaves the data
    /// path running for the next agent to take over.
    pub fn stop(self, keep: bool) -> Result<()> {
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
        let text = read(&self.path)?;
        let text_hash = hash(&text);
        if text_hash == self.text_hash {
            info!(changed = 0, "reloaded: the file is unchanged");
            return Ok(());
        }
        let config = config::parse(&text, &self.path.display().to_string())?;
        drop(text);
        let parsed = started.elapsed();
        let plan = Plan::build(&config, &self.runtime, Some(&self.plan.ids));
        if !plan.fits(&self.dp.limits().clone()) {
            bail!("global limits (max_services, max_backends, conntrack.max_entries, maglev_size) changed: restart the agent to apply them");
        }
        if plan.interfaces != self.plan.interfaces
            || config.global.xdp_mode != self.config.global.xdp_mode
        {
            bail!("interfaces or xdp_mode changed: restart the agent to apply them");
        }
        let diff = plan.diff(Some(&self.plan));
        let changed = diff.upsert.len() + diff.remove.len();
        let planned = started.elapsed();
        apply(&mut self.dp, &diff)?;
        let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let done = started.elapsed();
        info!(
            services = plan.services.len(),
            changed,
            ms = ms(done),
            parse_ms = ms(parsed),
            plan_ms = ms(planned - parsed),
            apply_ms = ms(done - planned),
            "reloaded"
        );
        self.config = config;
        self.plan = plan;
        self.text_hash = text_hash;
        release_memory();
        Ok(())
    }

    /// The current plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
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

/// Runs until SIGTERM or SIGINT.
pub async fn run(path: &Path, pid_file: &Path, keep_dataplane: bool) -> Result<()> {
    let mut agent = Agent::start(path)?;
    std::fs::write(pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", agent.path.display());
                if let Err(e) = agent.reload() {
                    error!("reload refused, the running config stays: {e:#}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = std::fs::remove_file(pid_file);
    agent.stop(keep_dataplane)
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
