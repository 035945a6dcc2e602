//! Connection lifetime: which entries are still live.

use lb_common::{Config, CT_FIN, CT_SYN_SENT, PROTO_TCP};

/// Entries are refreshed at most this often, to spare cache-line bouncing
/// between CPUs on busy flows.
pub const REFRESH_NS: u64 = 1_000_000_000;

/// Idle timeout of an entry with these flags.
#[inline(always)]
pub fn timeout(cfg: &Config, proto: u8, flags: u32) -> u64 {
    if proto != PROTO_TCP {
        cfg.udp_timeout_ns
    } else if flags & CT_FIN != 0 {
        cfg.tcp_fin_timeout_ns
    } else if flags & CT_SYN_SENT != 0 {
        cfg.tcp_syn_timeout_ns
    } else {
        cfg.tcp_timeout_ns
    }
}

/// Whether an entry last seen at `last_seen` has outlived its timeout.
#[inline(always)]
pub fn expired(cfg: &Config, proto: u8, flags: u32, last_seen: u64, now: u64) -> bool {
    now.wrapping_sub(last_seen) > timeout(cfg, proto, flags)
}

/// Whether `last_seen` is due for a refresh.
#[inline(always)]
pub fn stale(last_seen: u64, now: u64) -> bool {
    now.wrapping_sub(last_seen) > REFRESH_NS
}
