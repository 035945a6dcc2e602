//! SNAT port allocation and the paired connection/NAT entries.

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    snat_candidate, Backend, Config, Conn, FlowKey, Nat, Service, MAX_SNAT_ADDRS, SNAT_TRIES,
};

use crate::{
    conntrack::expired,
    maps::{CONNS, NATS},
};

/// Why a new flow could not be set up.
pub enum AllocError {
    Exhausted,
    TableFull,
}

/// The reverse key a backend's replies carry for a connection.
#[inline(always)]
pub fn reverse_key(conn: &Conn, proto: u8) -> FlowKey {
    FlowKey::new(conn.backend_addr, conn.snat_addr, conn.backend_port, conn.snat_port, proto)
}

/// Claims an SNAT ip:port towards `backend` for the flow `key` and writes the
/// NAT and connection entries together. The first candidate comes from the
/// flow hash; a `BPF_NOEXIST` insert into the NAT map is the claim, so two
/// live flows to one backend never share a port.
#[inline(always)]
pub fn setup(
    cfg: &Config,
    svc: &Service,
    key: &FlowKey,
    hash: u32,
    backend_id: u32,
    be: &Backend,
    now: u64,
) -> Result<Conn, AllocError> {
    let nat = Nat {
        client_addr: key.src_addr,
        vip_addr: key.dst_addr,
        client_port: key.src_port,
        vip_port: key.dst_port,
        backend_id,
        service_id: svc.id,
        flags: 0,
        last_seen: now,
    };
    let mut rkey = FlowKey::new(be.addr, 0, be.port, 0, key.proto);
    let mut claimed = false;
    for attempt in 0..SNAT_TRIES {
        let (ai, port) = snat_candidate(svc, hash, attempt);
        if ai as usize >= MAX_SNAT_ADDRS {
            break;
        }
        rkey.dst_addr = svc.snat_addrs[ai as usize];
        rkey.dst_port = port.to_be();
        if NATS.insert(&rkey, &nat, BPF_NOEXIST as u64).is_ok() {
            claimed = true;
            break;
        }
        // Taken: reclaim it only if its flow is dead or is this very flow.
        if let Some(old) = NATS.get_ptr(&rkey) {
            let old = unsafe { *old };
            let same = old.client_addr == nat.client_addr
                && old.client_port == nat.client_port
                && old.vip_addr == nat.vip_addr
                && old.vip_port == nat.vip_port;
            if same || expired(cfg, key.proto, old.flags, old.last_seen, now) {
                if NATS.insert(&rkey, &nat, BPF_ANY as u64).is_ok() {
                    claimed = true;
                    break;
                }
            }
        }
    }
    if !claimed {
        return Err(AllocError::Exhausted);
    }
    let conn = Conn {
        backend_addr: be.addr,
        snat_addr: rkey.dst_addr,
        backend_port: be.port,
        snat_port: rkey.dst_port,
        backend_id,
        service_id: svc.id,
        flags: 0,
        last_seen: now,
    };
    if CONNS.insert(key, &conn, BPF_ANY as u64).is_err() {
        let _ = NATS.remove(&rkey);
        return Err(AllocError::TableFull);
    }
    Ok(conn)
}
