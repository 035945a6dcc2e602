//! SNAT port allocation and the paired connection/NAT entries.

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    snat_candidate, Backend, Config, Conn, FlowKey, Nat, Reason, Service, CFG_SYNC, CFG_SYNC_ALL,
    CT_FIN, CT_HALF, CT_SYNCED, CT_SYN_SENT, MAX_SNAT_ADDRS, PROTO_TCP, SNAT_TRIES,
};

use crate::{
    conntrack::{expired, REFRESH_NS},
    maps::{CONNS, NATS},
    stats::count,
    sync,
};

/// How many of a flow's SNAT candidates a full pool's eviction looks at.
const EVICT_TRIES: u32 = 8;

/// `-EEXIST` from a `BPF_NOEXIST` insert: the key is taken.
const EEXIST: i32 = -17;

/// Revives the dead entry `conn` of flow `key` in place, with `flags`
/// (a new TCP flow's `CT_HALF` and `CT_SYN_SENT`), when the flow goes to the same backend (`picked`:
/// its id and address) and its NAT entry still belongs to it. Returns
/// whether it did.
#[inline(always)]
pub fn revive(
    cfg: &Config,
    conn: &mut Conn,
    key: &FlowKey,
    (backend_id, be): (u32, &Backend),
    service_id: u32,
    now: u64,
    flags: u32,
) -> bool {
    if conn.backend_id != backend_id || conn.backend_addr != be.addr || conn.backend_port != be.port
    {
        return false;
    }
    let Some(n) = NATS.get_ptr_mut(&conn.reverse_key(key.proto)) else {
        return false;
    };
    let nat = unsafe { &mut *n };
    if !nat.restores(key) {
        return false;
    }
    // A synced flow stays synced, and with CFG_SYNC_ALL every flow is: the
    // caller reports it again.
    let synced = flags
        | if cfg.flags & CFG_SYNC_ALL != 0 {
            CT_SYNCED
        } else {
            conn.flags & CT_SYNCED
        };
    nat.flags = synced;
    nat.service_id = service_id;
    nat.last_seen = now;
    conn.flags = synced;
    conn.service_id = service_id;
    conn.last_seen = now;
    true
}

/// Removes the NAT entry of flow `key`'s dead entry `conn`, unless another
/// flow has claimed that port since.
#[inline(always)]
pub fn release(conn: &Conn, key: &FlowKey) {
    let rkey = conn.reverse_key(key.proto);
    if let Some(n) = NATS.get_ptr(&rkey) {
        if unsafe { &*n }.restores(key) {
            let _ = NATS.remove(&rkey);
        }
    }
}

/// Claims an SNAT ip:port towards `backend` for the flow `key` and writes the
/// NAT and connection entries together, both with `flags` (a new TCP flow's
/// `CT_HALF`, and `CT_SYN_SENT` when a SYN opened it). The first candidate comes from the flow hash; a
/// `BPF_NOEXIST` insert into the NAT map is the claim, so two live flows to
/// one backend never share a port. A VRRP peer taking over mid-flow derives
/// the same first candidate; a flow that got a later one is reported on
/// `SYNC` (with `CFG_SYNC`) for the agent to send to the peer.
///
/// `midflow` is a TCP packet without SYN: a flow this node takes over from
/// its peer. Its first candidate is the port the peer gave it (else the sync
/// would have told us), so an unsynced entry holding that port that was
/// last seen before this node took the service over belongs to a flow that
/// ended on the peer meanwhile, and is reclaimed.
///
/// When every candidate is taken, a TCP flow takes the port of the oldest
/// half-open flow among its first candidates: a spoofed SYN flood then
/// holds a port only until newer SYNs need it, and a confirmed flow is
/// never evicted.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn setup(
    cfg: &Config,
    svc: &Service,
    key: &FlowKey,
    hash: u32,
    backend_id: u32,
    be: &Backend,
    now: u64,
    flags: u32,
    midflow: bool,
) -> Result<Conn, Reason> {
    let mut nat = Nat::new(key, backend_id, svc.id, flags, now);
    let mut rkey = FlowKey::new(be.addr, 0, be.port, 0, key.proto);
    let mut claimed = false;
    // Synced flows are marked in both entries, so their close and refreshes
    // are reported too: every flow with CFG_SYNC_ALL, else those off their
    // first candidate, which the peer cannot derive.
    if cfg.flags & CFG_SYNC_ALL != 0 {
        nat.flags |= CT_SYNCED;
    }
    for attempt in 0..SNAT_TRIES {
        if attempt == 1 && cfg.flags & CFG_SYNC != 0 {
            nat.flags |= CT_SYNCED;
        }
        let (ai, port) = snat_candidate(svc, hash, attempt);
        if ai as usize >= MAX_SNAT_ADDRS {
            break;
        }
        rkey.dst_addr = svc.snat_addrs[ai as usize];
        rkey.dst_port = port.to_be();
        // Look before claiming: a failed insert into an LRU map costs an
        // allocation (and, in a full table, may evict another entry), so a
        // pool held by a flood would make every probe pay it.
        let held = NATS.get_ptr(&rkey);
        if held.is_none() {
            match NATS.insert(&rkey, &nat, BPF_NOEXIST as u64) {
                Ok(()) => {
                    claimed = true;
                    break;
                }
                // Another CPU claimed it since: the next candidate.
                Err(EEXIST) => continue,
                // No room for a new entry: the table, not the pool, is full.
                Err(_) => return Err(Reason::DropConnTableFull),
            }
        }
        // Taken: reclaim it only if its flow is dead or is this very flow.
        if let Some(old) = held {
            let old = unsafe { &*old };
            // Only with the sync running (the premise). A synced entry is
            // the peer's word that its flow lives (the peer reports the
            // close): never reclaimed this way. `last_seen` lags by up to a
            // refresh interval.
            let before_takeover = midflow
                && attempt == 0
                && cfg.flags & CFG_SYNC != 0
                && old.flags & CT_SYNCED == 0
                && old.last_seen.saturating_add(REFRESH_NS) < svc.since_ns;
            let reclaimable = old.restores(key)
                || before_takeover
                || expired(cfg, key.proto, old.flags, old.last_seen, now);
            if reclaimable && take(&rkey, &nat) {
                claimed = true;
                break;
            }
        }
    }
    // Every new TCP flow is half-open (tested on the protocol, not on
    // `flags`: a branch on a constant argument would keep the verifier
    // from merging states).
    if !claimed && key.proto == PROTO_TCP {
        claimed = evict(svc, key, hash, &mut rkey, &nat);
    }
    if !claimed {
        return Err(Reason::DropSnatExhausted);
    }
    let conn = Conn {
        backend_addr: be.addr,
        snat_addr: rkey.dst_addr,
        backend_port: be.port,
        snat_port: rkey.dst_port,
        backend_id,
        service_id: svc.id,
        flags: nat.flags,
        last_seen: now,
    };
    if CONNS.insert(key, &conn, BPF_ANY as u64).is_err() {
        let _ = NATS.remove(&rkey);
        return Err(Reason::DropConnTableFull);
    }
    sync::report(cfg, key, &conn, 0);
    Ok(conn)
}

/// Takes the port of the oldest half-open flow among the first
/// `EVICT_TRIES` candidates for the flow `key`: that flow's connection entry
/// goes too, so its client's next segment cannot reach the new flow's
/// 4-tuple. A second, shorter pass than the claim's, so that the claim's
/// loop stays small for the verifier. Leaves the port in `rkey`.
#[inline(always)]
fn evict(svc: &Service, key: &FlowKey, hash: u32, rkey: &mut FlowKey, nat: &Nat) -> bool {
    // The victim's SNAT ip:port, kept as values: an attempt index would
    // make the verifier tell every iteration's states apart.
    let (mut addr, mut port, mut seen) = (0u32, 0u16, u64::MAX);
    for attempt in 0..EVICT_TRIES {
        let (ai, p) = snat_candidate(svc, hash, attempt);
        if ai as usize >= MAX_SNAT_ADDRS {
            break;
        }
        rkey.dst_addr = svc.snat_addrs[ai as usize];
        rkey.dst_port = p.to_be();
        if let Some(old) = NATS.get_ptr(&*rkey) {
            let old = unsafe { &*old };
            if old.flags & CT_HALF != 0 && old.last_seen < seen {
                (addr, port, seen) = (rkey.dst_addr, rkey.dst_port, old.last_seen);
            }
        }
    }
    if seen == u64::MAX {
        return false;
    }
    (rkey.dst_addr, rkey.dst_port) = (addr, port);
    let Some(old) = NATS.get_ptr(&*rkey) else {
        return false;
    };
    let old = unsafe { &*old };
    // Still the flow chosen: another CPU may have confirmed it, or taken
    // its port for a new flow, meanwhile.
    if old.flags & CT_HALF == 0 || old.last_seen != seen {
        return false;
    }
    let okey = old.client_key(key.proto);
    take(rkey, nat) && {
        if let Some(c) = CONNS.get_ptr(&okey) {
            if unsafe { &*c }.reverse_key(key.proto) == *rkey {
                let _ = CONNS.remove(&okey);
            }
        }
        count(Reason::EvictHalfOpen);
        true
    }
}

/// Replaces the NAT entry at `rkey` with `nat`: a remove that only one CPU
/// can win, then an insert that fails if another CPU's new flow claimed the
/// freed port first. (An overwrite would let two CPUs both win the port.)
#[inline(always)]
fn take(rkey: &FlowKey, nat: &Nat) -> bool {
    NATS.remove(rkey).is_ok() && NATS.insert(rkey, nat, BPF_NOEXIST as u64).is_ok()
}

/// The client of the flow `key` (entry `conn`) acknowledged the handshake:
/// both entries now live the full timeout.
#[inline(always)]
pub fn acked(key: &FlowKey, conn: &mut Conn, now: u64) {
    conn.flags &= !CT_SYN_SENT;
    conn.last_seen = now;
    if let Some(n) = NATS.get_ptr_mut(&conn.reverse_key(key.proto)) {
        let nat = unsafe { &mut *n };
        if nat.restores(key) {
            nat.flags &= !CT_SYN_SENT;
            nat.last_seen = now;
        }
    }
}

/// The backend of the half-open flow with NAT key `rkey` (backend → SNAT)
/// and entry `nat` answered within it: both entries are confirmed (see
/// `CT_HALF`), and the sync hears of the flow, closing if it is.
#[inline(always)]
pub fn confirm_reply(cfg: &Config, rkey: &FlowKey, nat: &mut Nat, now: u64) {
    nat.flags &= !(CT_HALF | CT_SYN_SENT);
    nat.last_seen = now;
    let key = nat.client_key(rkey.proto);
    if let Some(c) = CONNS.get_ptr_mut(&key) {
        let conn = unsafe { &mut *c };
        if conn.reverse_key(rkey.proto) == *rkey {
            conn.flags &= !(CT_HALF | CT_SYN_SENT);
            conn.last_seen = now;
            sync::report(cfg, &key, conn, conn.flags & CT_FIN);
        }
    }
}
