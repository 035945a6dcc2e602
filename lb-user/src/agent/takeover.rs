//! Taking over the data path an earlier agent left pinned: its ids, so
//! nothing moves, and what it had beyond this config, which goes.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::{
    config::Config,
    dataplane::Dataplane,
    plan::{BackendKey, Diff, Ids, Plan, ServiceAddr, ServiceSpec},
    sys::addr_of,
};

/// Ids of what an earlier agent installed: services from the service map,
/// backends from the live Maglev tables, so a takeover moves nothing.
pub fn recover_ids(dp: &Dataplane, config: &Config) -> Result<Ids> {
    let mut ids = Ids::default();
    for (key, svc) in dp.installed_services()? {
        let service = ServiceAddr {
            vip: addr_of(key.addr),
            port: u16::from_be(key.port),
            proto: key.proto,
        };
        ids.services.insert(service, svc.id);
        let vs = config
            .virtual_servers
            .iter()
            .find(|v| ServiceAddr::of(v) == service);
        let mut seen = BTreeSet::new();
        for id in dp.live_table(svc.id)? {
            if id == lb_common::NO_BACKEND || !seen.insert(id) {
                continue;
            }
            let b = dp.backend(id)?;
            let (addr, port) = (addr_of(b.addr), u16::from_be(b.port));
            let sorry = vs.is_some_and(|v| v.is_sorry_only(addr, port));
            let key = BackendKey {
                service,
                addr,
                port,
                sorry,
            };
            ids.backends.insert(key, id);
        }
    }
    Ok(ids)
}

/// Adds to `diff` the removal of the services and addresses the earlier
/// agent installed that `plan` does not have.
pub fn remove_leftovers<'a>(dp: &Dataplane, plan: &'a Plan, diff: &mut Diff<'a>) -> Result<()> {
    let keys: Vec<_> = plan.services.iter().map(|s| s.spec.key()).collect();
    for (key, svc) in dp.installed_services()? {
        if !keys.contains(&key) {
            diff.remove.push(ServiceSpec {
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
    Ok(())
}
