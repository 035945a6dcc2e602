//! `vrrp_scripts`: programs run every `interval` whose exit status moves
//! the priority of the instances that track them.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::VrrpScript;

/// Runs `script` forever and reports each change of its state as
/// `(name, ok)`: the first result at once, later ones after `rise`
/// successes or `fall` failures in a row, as keepalived counts them.
pub async fn watch(name: String, script: VrrpScript, tx: mpsc::Sender<(String, bool)>) {
    let interval = Duration::from_secs_f64(script.interval.max(0.01));
    let limit = Duration::from_secs_f64(script.timeout.unwrap_or(script.interval).max(0.01));
    let mut state: Option<bool> = None;
    let mut streak = 0u32;
    loop {
        let (ok, why) = run_once(&script.script, limit).await;
        let next = match state {
            None => Some(ok),
            Some(s) if s == ok => {
                streak = 0;
                None
            }
            Some(_) => {
                streak += 1;
                let need = if ok { script.rise } else { script.fall };
                (streak >= need.max(1)).then_some(ok)
            }
        };
        if let Some(ok) = next {
            streak = 0;
            if ok {
                info!(script = %name, "track script OK");
            } else {
                warn!(script = %name, "track script failed: {why}");
            }
            state = Some(ok);
            if tx.send((name.clone(), ok)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One run: success, or why not.
async fn run_once(script: &str, limit: Duration) -> (bool, String) {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run: {e}")),
    };
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(s)) if s.success() => (true, String::new()),
        Ok(Ok(s)) => match s.code() {
            Some(c) => (false, format!("exit {c}")),
            None => (false, format!("{s}")),
        },
        Ok(Err(e)) => (false, format!("waiting: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            (false, format!("timed out after {limit:?}"))
        }
    }
}
