//! Reports for the agent's connection sync (`SYNC` ring, `CFG_SYNC`).
//!
//! A synced flow (`CT_SYNCED`: every flow with `CFG_SYNC_ALL`, else those
//! off their hashed SNAT port) is reported when it starts (TCP: when its
//! backend confirms it), while it lives
//! (so the peer's copy does not time out), and when it closes (so the peer
//! does not hold its port for the whole idle timeout).

use lb_common::{
    Config, Conn, FlowKey, SyncEntry, CFG_SYNC, CT_FIN, CT_HALF, CT_SYNCED, PROTO_TCP,
};

use crate::{
    conntrack::timeout,
    maps::{SYNC, SYNC_LOST},
};

/// Reports flow `key` (client → VIP) with `conn`'s mapping, if it is
/// synced; `flags` is 0 for an open flow, `CT_FIN` for a closing one. A
/// half-open flow is not reported: a flood must not reach the peer. Its
/// backend's answer reports it (and a takeover meanwhile re-derives it).
#[inline(always)]
pub fn report(cfg: &Config, key: &FlowKey, conn: &Conn, flags: u32) {
    if conn.flags & (CT_SYNCED | CT_HALF) != CT_SYNCED || cfg.flags & CFG_SYNC == 0 {
        return;
    }
    let mut conn = *conn;
    conn.flags = flags;
    // A full ring loses the record, not the flow: the peer only misses
    // this flow on a takeover. The agent shows the count.
    if SYNC
        .output::<SyncEntry>(SyncEntry { key: *key, conn }, 0)
        .is_err()
    {
        if let Some(c) = SYNC_LOST.get_ptr_mut(0) {
            unsafe { *c += 1 };
        }
    }
}

/// Whether a flow with entry `flags` refreshed at `now`, last at
/// `last_seen`, is synced and due to be reported again: an open TCP flow
/// every `sync_refresh_ns`, a UDP flow every third of its idle timeout, a
/// closing TCP flow every third of the FIN timeout or `sync_refresh_ns`,
/// whichever is shorter.
#[inline(always)]
pub fn due(cfg: &Config, proto: u8, flags: u32, last_seen: u64, now: u64) -> bool {
    if flags & (CT_SYNCED | CT_HALF) != CT_SYNCED || cfg.flags & CFG_SYNC == 0 {
        return false;
    }
    let third = timeout(cfg, proto, flags) / 3;
    let p = if proto != PROTO_TCP {
        third
    } else if flags & CT_FIN != 0 {
        third.min(cfg.sync_refresh_ns)
    } else {
        cfg.sync_refresh_ns
    };
    p != 0 && now / p != last_seen / p
}
