//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//!
//! Each backend walks its own permutation of the M slots, given by an offset
//! and a skip derived from the backend's address and port. Backends take turns
//! claiming their next free slot; a backend's turns are paced by its weight, so
//! its share of the table follows the weight, and removing a backend moves
//! little more than its own slots.

use std::net::Ipv4Addr;

use lb_common::{hash::flow_hash, NO_BACKEND};

/// Default table size: prime, and large enough for 1 % balance with hundreds
/// of backends.
pub const DEFAULT_SIZE: u32 = 65537;

/// One backend as Maglev sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The data path's backend id, written into the table.
    pub id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
}

/// Whether `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| (*d as u64) * (*d as u64) <= n as u64)
            .all(|d| !n.is_multiple_of(d))
}

/// Builds the table of `m` slots (prime). The result depends only on the seed,
/// `m` and the set of members, not on their order. With no member of
/// positive weight every slot is `NO_BACKEND`.
pub fn build(seed: u32, m: u32, members: &[Member]) -> Vec<u32> {
    assert!(is_prime(m), "Maglev table size {m} is not prime");
    let mut live: Vec<&Member> = members.iter().filter(|b| b.weight > 0).collect();
    let mut table = vec![NO_BACKEND; m as usize];
    if live.is_empty() {
        return table;
    }
    live.sort_by_key(|b| (u32::from(b.addr), b.port, b.id));
    let wmax = live.iter().map(|b| b.weight as u64).max().unwrap_or(1);
    // (position in the permutation, skip, credit)
    let mut state: Vec<(u64, u64, u64)> = live
        .iter()
        .map(|b| {
            let a = u32::from_ne_bytes(b.addr.octets());
            let p = b.port.to_be();
            let offset = flow_hash(seed, a, 0, p, 0, 1) % m;
            let skip = flow_hash(seed ^ 0x9e37_79b9, a, 0, p, 0, 2) % (m - 1) + 1;
            (offset as u64, skip as u64, 0)
        })
        .collect();
    let mut filled = 0u32;
    'fill: loop {
        for (b, st) in live.iter().zip(state.iter_mut()) {
            st.2 += b.weight as u64;
            if st.2 < wmax {
                continue;
            }
            st.2 -= wmax;
            // position + skip < 2m: a subtraction instead of a division,
            // which this loop would otherwise spend most of its time in.
            let next = |p: u64| {
                let n = p + st.1;
                if n >= m as u64 {
                    n - m as u64
                } else {
                    n
                }
            };
            while table[st.0 as usize] != NO_BACKEND {
                st.0 = next(st.0);
            }
            table[st.0 as usize] = b.id;
            st.0 = next(st.0);
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn members(n: u32, weight: impl Fn(u32) -> u32) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: i,
                addr: Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8),
                port: 80,
                weight: weight(i),
            })
            .collect()
    }

    fn shares(t: &[u32]) -> HashMap<u32, usize> {
        let mut s = HashMap::new();
        for &id in t {
            *s.entry(id).or_default() += 1;
        }
        s
    }

    #[test]
    fn balance_within_two_percent() {
        let t = build(7, DEFAULT_SIZE, &members(100, |_| 1));
        let s = shares(&t);
        assert_eq!(s.len(), 100);
        let mean = DEFAULT_SIZE as f64 / 100.0;
        let max = *s.values().max().unwrap() as f64;
        assert!(max / mean <= 1.02, "max/mean {}", max / mean);
    }

    #[test]
    fn removal_moves_little_more_than_the_removed_share() {
        let all = members(100, |_| 1);
        let before = build(7, DEFAULT_SIZE, &all);
        let removed = 42;
        let rest: Vec<_> = all.iter().copied().filter(|b| b.id != removed).collect();
        let after = build(7, DEFAULT_SIZE, &rest);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let share = before.iter().filter(|&&b| b == removed).count();
        let budget = share + DEFAULT_SIZE as usize / 100;
        assert!(moved <= budget, "moved {moved}, budget {budget}");
        assert!(after.iter().all(|&b| b != removed));
    }

    #[test]
    fn weights_are_honoured() {
        let t = build(3, DEFAULT_SIZE, &members(4, |i| i + 1));
        let s = shares(&t);
        for i in 0..4u32 {
            let want = DEFAULT_SIZE as f64 * (i + 1) as f64 / 10.0;
            let got = s[&i] as f64;
            assert!(
                (got - want).abs() / want <= 0.02,
                "backend {i}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn order_does_not_matter_and_zero_weight_is_out() {
        let mut m = members(10, |i| if i == 3 { 0 } else { 1 });
        let a = build(1, 251, &m);
        m.reverse();
        assert_eq!(a, build(1, 251, &m));
        assert!(!a.contains(&3));
        assert!(build(1, 251, &members(3, |_| 0))
            .iter()
            .all(|&b| b == NO_BACKEND));
    }

    #[test]
    fn pinned_table() {
        // Nodes on different versions must build the same table from the
        // same seed and backends, or a failover moves flows.
        let m: Vec<Member> = (0..3u32)
            .map(|i| Member {
                id: i,
                addr: Ipv4Addr::new(10, 99, 1, 10 + i as u8),
                port: 8080,
                weight: 1 + i,
            })
            .collect();
        let t = build(0x5eed, 251, &m);
        assert_eq!(t[..12], [1, 1, 2, 2, 1, 1, 2, 2, 0, 2, 2, 0]);
        let fnv = t
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
        assert_eq!(fnv, 0x8c3f_9d2f_58fd_5d47);
    }

    #[test]
    fn pinned_snat_candidates() {
        // The first candidate is what a peer derives for a flow it takes over.
        let svc = lb_common::Service {
            snat_count: 2,
            snat_addrs: [1, 2, 0, 0, 0, 0, 0, 0],
            port_min: 1024,
            port_max: 65535,
            ..Default::default()
        };
        let got: Vec<_> = (0..3)
            .map(|a| lb_common::snat_candidate(&svc, 0x193e_7738, a))
            .collect();
        assert_eq!(got, [(0, 7627), (0, 49420), (0, 59360)]);
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0));
    }
}
