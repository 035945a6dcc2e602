//! Backend choice for a new flow from the service's live Maglev table.

use lb_common::{
    hash::source_hash, maglev_slot, Backend, Config, Service, NO_BACKEND, SVC_SRC_HASH,
};

use crate::maps::{BACKENDS, MAGLEV};

/// The backend id and backend for a flow with 5-tuple hash `flow_hash`.
#[inline(always)]
pub fn pick(cfg: &Config, svc: &Service, flow_hash: u32, src_addr: u32) -> Option<(u32, Backend)> {
    let h = if svc.flags & SVC_SRC_HASH != 0 {
        source_hash(cfg.hash_seed, src_addr)
    } else {
        flow_hash
    };
    if cfg.maglev_size == 0 {
        return None;
    }
    let id = *MAGLEV.get(maglev_slot(svc.id, svc.table, cfg.maglev_size, h))?;
    if id == NO_BACKEND {
        return None;
    }
    Some((id, *BACKENDS.get(id)?))
}
