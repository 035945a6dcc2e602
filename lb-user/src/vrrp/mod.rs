//! VRRP (RFC 3768 v2 and RFC 5798 v3 for IPv4), wire-compatible with
//! keepalived, so that only the MASTER holds an instance's virtual addresses
//! and serves its virtual servers.
//!
//! The instances run on their own thread with their own runtime, so adverts
//! keep their rhythm while the agent parses a large config or rebuilds
//! tables. The agent hears about every state change and acknowledges once
//! the data path follows; only then are the addresses added and announced,
//! so the first packets after a takeover meet an enabled service.

pub mod arp;
mod engine;
pub mod fsm;
pub mod net;
pub mod track;
pub mod wire;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::config::Config;
use engine::Engine;
use fsm::State;

/// How long the agent may take to make the data path follow a state change.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one log line per instance and kind of dropped packet this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A state change the agent must follow.
#[derive(Debug)]
pub struct Event {
    pub instance: String,
    pub state: State,
    /// Dropped or sent when the data path follows.
    pub ack: oneshot::Sender<()>,
}

/// Requests from the agent.
#[derive(Debug)]
enum Command {
    /// A virtual server's health quorum holds (true) or is lost.
    Quorum { name: String, ok: bool },
    /// Graceful stop: priority-0 adverts, addresses removed.
    Stop(oneshot::Sender<()>),
}

/// Counters of one instance, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub became_master: u64,
    /// Lower-priority adverts heard while MASTER.
    pub split_brain: u64,
    /// Dropped adverts by reason: ttl, vrid (another VRID on this
    /// interface), version, auth, checksum, interval, truncated.
    pub dropped: BTreeMap<&'static str, u64>,
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub state: &'static str,
    pub priority: u8,
    pub base_priority: u8,
    pub master: Option<Ipv4Addr>,
    /// What tracking does to the priority, e.g. "chk_nginx failed: -20".
    pub tracking: Vec<String>,
    pub counters: Counters,
}

/// Shared view of every instance.
pub type SharedStatus = Arc<Mutex<Vec<InstanceStatus>>>;

/// The agent's handle on the VRRP thread.
pub struct Vrrp {
    cmd: mpsc::UnboundedSender<Command>,
    status: SharedStatus,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Vrrp {
    /// Starts every instance of `config`; state changes arrive on the
    /// returned channel. Fails if an interface or socket cannot be set up.
    pub fn start(config: &Config) -> Result<(Vrrp, mpsc::Receiver<Event>)> {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let status: SharedStatus = Default::default();
        let config = config.clone();
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("vrrp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Engine::new(&config, ev_tx, shared).await {
                        Ok(engine) => {
                            let _ = ready_tx.send(Ok(()));
                            engine.run(cmd_rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("starting the VRRP thread")?;
        ready_rx
            .recv()
            .context("the VRRP thread ended while starting")??;
        Ok((
            Vrrp {
                cmd: cmd_tx,
                status,
                thread: Some(thread),
            },
            ev_rx,
        ))
    }

    /// Tells the instances tracking `name` whether its quorum holds.
    pub fn quorum(&self, name: &str, ok: bool) {
        let _ = self.cmd.send(Command::Quorum {
            name: name.into(),
            ok,
        });
    }

    /// A snapshot of every instance.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Masters send priority 0 and every address is removed; waits for it.
    pub async fn stop(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Stop(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Runs a notify script, `cmd` followed by `args`, without waiting for it.
pub fn run_script(cmd: &str, args: &[&str]) {
    let r = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{cmd} \"$@\""))
        .arg("sh")
        .args(args)
        .spawn();
    if let Err(e) = r {
        warn!("notify script {cmd:?}: {e}");
    }
}
