//! Per-CPU counters: no atomics on the hot path.

use lb_common::{Reason, Traffic};

use crate::maps::{BACKEND_STATS, REASONS, SERVICE_STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

/// Adds one packet of `bytes` to a service and a backend.
#[inline(always)]
pub fn traffic(service_id: u32, backend_id: u32, bytes: u64, new_conn: bool) {
    let n = new_conn as u64;
    if let Some(t) = SERVICE_STATS.get_ptr_mut(service_id) {
        add(t, bytes, n);
    }
    if let Some(t) = BACKEND_STATS.get_ptr_mut(backend_id) {
        add(t, bytes, n);
    }
}

#[inline(always)]
fn add(t: *mut Traffic, bytes: u64, new_conns: u64) {
    unsafe {
        (*t).packets += 1;
        (*t).bytes += bytes;
        (*t).new_conns += new_conns;
    }
}
