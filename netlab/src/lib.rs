//! Network-namespace labs for the tests and benchmarks of `lb-user` and
//! `lb-lab`: named namespaces, veth pairs, bridges, addresses, routes and
//! neighbours over rtnetlink, XDP helpers, and process statistics from
//! /proc. It depends on neither crate it serves.

mod link;
mod netns;
pub mod proc;
pub mod xdp;

pub use netns::{delete, enter, reap_stale, sh, Netns};

/// The median of `v` (the mean of the middle two of an even count); 0
/// when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("MAC {s:?}: {e}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("MAC {s:?}: not six bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_macs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").unwrap(),
            [2, 0, 10, 255, 0, 1]
        );
        assert!(parse_mac("02:00").is_err() && parse_mac("zz:00:00:00:00:00").is_err());
    }
}
