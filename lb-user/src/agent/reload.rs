//! `SIGHUP`: re-read the config and apply the difference, or refuse it and
//! keep serving the running one.

use std::collections::HashSet;

use anyhow::{bail, Result};
use tracing::info;

use super::{apply, start_sync, with_pin_path, Agent};
use crate::{
    config::{Config, ServerKey},
    plan::{Plan, Runtime},
    sys,
};

/// A real server's key, borrowed: a reload of 100,000 servers should not
/// copy a name for each.
#[derive(PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    service: &'a str,
    addr: std::net::Ipv4Addr,
    port: u16,
}

impl<'a> From<&'a ServerKey> for KeyRef<'a> {
    fn from(k: &'a ServerKey) -> Self {
        KeyRef {
            service: &k.service,
            addr: k.addr,
            port: k.port,
        }
    }
}

/// The real servers of `config` (with a checker only, if `checked`).
fn servers(config: &Config, checked: bool) -> HashSet<KeyRef<'_>> {
    config
        .virtual_servers
        .iter()
        .flat_map(|v| {
            v.real_servers
                .iter()
                .filter(move |r| !checked || r.checker_count() > 0)
                .map(|r| KeyRef {
                    service: &v.name,
                    addr: r.address,
                    port: r.port,
                })
        })
        .collect()
}

impl Agent {
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
            runtime.down.extend(
                hints
                    .into_iter()
                    .filter(|k| !old.contains(&KeyRef::from(k))),
            );
        }
        let checked = servers(&config, true);
        runtime.down.retain(|k| checked.contains(&KeyRef::from(k)));
        runtime
            .weights
            .retain(|k, _| checked.contains(&KeyRef::from(k)));
        let plan = Plan::build(&config, &runtime, Some(&self.plan.ids));
        if !plan.fits(self.dp.limits()) {
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
                Some(start_sync(&self.dp, &config, &self.sync_tx)?)
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
        self.why.retain(|k, _| checked.contains(&KeyRef::from(k)));
        drop(checked);
        self.config = std::sync::Arc::new(config);
        self.plan = plan;
        self.text_hash = text_hash;
        self.runtime = runtime;
        self.start_checks();
        self.sync_quorum();
        sys::release_memory();
        Ok(())
    }
}
