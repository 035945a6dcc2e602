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

    /// An address as the data path reads it: wire order in a native word.
    fn a(o: [u8; 4]) -> u32 {
        u32::from_ne_bytes(o)
    }

    #[test]
    fn pinned_values() {
        // Every node of a pair or an ECMP group must compute these, on any
        // version: a change would move every flow to another backend and
        // SNAT port on a live upgrade or a failover between versions.
        let p = u16::to_be;
        assert_eq!(flow_hash(0, 0, 0, 0, 0, 0), 0x11b1_771c);
        let (client, vip) = (a([10, 99, 0, 2]), a([10, 99, 100, 1]));
        assert_eq!(
            flow_hash(0x5eed, client, vip, p(40000), p(80), 6),
            0x193e_7738
        );
        assert_eq!(
            flow_hash(0x5eed, client, vip, p(40000), p(53), 17),
            0xaeee_d42a
        );
        let (c2, v2) = (a([192, 0, 2, 1]), a([198, 51, 100, 7]));
        assert_eq!(
            flow_hash(u32::MAX, c2, v2, p(65535), p(443), 6),
            0x0368_0ccc
        );
        assert_eq!(source_hash(0x5eed, client), 0x1efc_83c6);
        assert_eq!(source_hash(0, c2), 0x6466_fd5a);
        assert_eq!(scramble(0), 0);
        assert_eq!(scramble(0xdead_beef), 0x0de5_c6a9);
    }

    #[test]
    fn every_field_counts() {
        let h = flow_hash(1, 2, 3, 4, 5, 6);
        assert_ne!(h, flow_hash(2, 2, 3, 4, 5, 6));
        assert_ne!(h, flow_hash(1, 2, 3, 5, 4, 6));
        assert_ne!(h, flow_hash(1, 3, 2, 4, 5, 6));
        assert_ne!(h, flow_hash(1, 2, 3, 4, 5, 17));
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
