//! Packets per second: 64-byte UDP frames sent by `test_run` live frames
//! from the client, counted at the backends, through a bare XDP forwarder
//! (the lab's limit) and through xlb.

use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::{FRAMES, SINK_PORT};
use crate::lab::{self, backend_addr, Lab, BACKENDS, VIP};

/// A 60-byte UDP frame from the client to VIP:SINK_PORT (64 on the wire),
/// without a UDP checksum (0, none), as a load generator sends it.
pub fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(
        8 + 18,
        64,
        etherparse::IpNumber::UDP,
        lab::CLIENT.octets(),
        VIP.octets(),
    )
    .expect("a 26-byte payload fits");
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let udp = etherparse::UdpHeader {
        source_port: 40000,
        destination_port: SINK_PORT,
        length: 8 + 18,
        checksum: 0,
    };
    let eth = etherparse::Ethernet2Header {
        source: src_mac,
        destination: dst_mac,
        ether_type: etherparse::EtherType::IPV4,
    };
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&eth.to_bytes());
    f.extend_from_slice(&ip.to_bytes());
    f.extend_from_slice(&udp.to_bytes());
    f.extend_from_slice(&[0xab; 18]);
    f
}

/// Sends FRAMES frames from the client with `test_run` live frames; the
/// packets per second that reached the backends, and the send rate.
pub fn pps_run(lab: &Lab) -> Result<(f64, f64)> {
    use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
    let frame = udp_frame(lab.client.mac("eth0")?, lab.lbs[0].mac("eth0")?);
    let before: u64 = (0..BACKENDS)
        .map(|b| lab.backends[b].rx_packets("eth0"))
        .sum::<Result<u64>>()?;
    let ifindex = lab.client.ifindex("eth0")?;
    let sent_secs = lab.client.within(|| -> Result<f64> {
        let mut obj = aya::Ebpf::load(lb_user::dataplane::BENCH_OBJECT)?;
        let prog: &mut Xdp = obj.program_mut("tx").context("tx")?.try_into()?;
        prog.load()?;
        let ctx = netlab::xdp::test_ctx(frame.len(), ifindex);
        let start = std::time::Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: FRAMES,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        })?;
        Ok(start.elapsed().as_secs_f64())
    })??;
    // Let the queues drain before counting.
    std::thread::sleep(Duration::from_millis(500));
    let after: u64 = (0..BACKENDS)
        .map(|b| lab.backends[b].rx_packets("eth0"))
        .sum::<Result<u64>>()?;
    let delivered = after.saturating_sub(before) as f64;
    Ok((delivered / sent_secs, FRAMES as f64 / sent_secs))
}

/// Attaches the bare forwarder to lb1 with `hops` (destination → MAC); it
/// is detached when the returned object is dropped.
pub fn attach_forward(lab: &Lab, hops: &[(std::net::Ipv4Addr, [u8; 6])]) -> Result<aya::Ebpf> {
    let mut fwd = lab.lbs[0].within(|| lab::attach_bench("forward", "eth0"))??;
    let mut map: aya::maps::HashMap<_, u32, [u8; 8]> =
        aya::maps::HashMap::try_from(fwd.map_mut("NEXT_HOPS").context("NEXT_HOPS")?)?;
    for (addr, mac) in hops {
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(mac);
        map.insert(u32::from_ne_bytes(addr.octets()), v, 0)?;
    }
    Ok(fwd)
}

/// The `hop` setup: the client reaches b1, and b1 the client, through the
/// bare forwarder on lb1 (static neighbours point at lb1's MAC). The same
/// extra path as a one-armed LB, with no LB work: the lab's limit for any
/// XDP balancer. Undone by [`Hop::drop`].
pub struct Hop<'a> {
    lab: &'a Lab,
    _fwd: aya::Ebpf,
}

impl<'a> Hop<'a> {
    /// Attaches the forwarder and points the neighbours at lb1.
    pub fn start(lab: &'a Lab) -> Result<Self> {
        let lb = lab.lbs[0].mac("eth0")?;
        let fwd = attach_forward(
            lab,
            &[
                (backend_addr(0), lab.backends[0].mac("eth0")?),
                (lab::CLIENT, lab.client.mac("eth0")?),
            ],
        )?;
        let hop = Hop { lab, _fwd: fwd };
        for (ns, to) in hop.neighbours() {
            ns.neigh_replace(to, lb, "eth0")?;
        }
        Ok(hop)
    }

    /// The neighbour entries the hop overrides: (namespace, peer).
    fn neighbours(&self) -> [(&'a netlab::Netns, std::net::Ipv4Addr); 2] {
        [
            (&self.lab.client, backend_addr(0)),
            (&self.lab.backends[0], lab::CLIENT),
        ]
    }
}

impl Drop for Hop<'_> {
    fn drop(&mut self) {
        for (ns, to) in self.neighbours() {
            let _ = ns.neigh_del(to, "eth0");
        }
    }
}

/// Packets per second through the bare forwarder and through xlb.
pub fn pps(lab: &Lab, rounds: usize) -> Result<Vec<(String, f64, f64)>> {
    for b in &lab.backends {
        b.exec(&["nft", "add table inet sink"])?;
        b.exec(&[
            "nft",
            "add chain inet sink in { type filter hook input priority 0; }",
        ])?;
        b.exec(&[
            "nft",
            &format!("add rule inet sink in udp dport {SINK_PORT} drop"),
        ])?;
    }
    let next_hop = lab.backends[0].mac("eth0")?;
    let mut out = Vec::new();
    for round in 0..rounds {
        {
            let _fwd = attach_forward(lab, &[(VIP, next_hop)])?;
            let (got, sent) = pps_run(lab)?;
            println!(
                "round {} forward  {:>6.3} Mpps delivered, {:.3} Mpps sent",
                round + 1,
                got / 1e6,
                sent / 1e6
            );
            out.push(("forward".to_string(), got, sent));
        }
        lab.start_agent(0)?;
        std::thread::sleep(Duration::from_secs(2));
        let (got, sent) = pps_run(lab)?;
        println!(
            "round {} xlb      {:>6.3} Mpps delivered, {:.3} Mpps sent",
            round + 1,
            got / 1e6,
            sent / 1e6
        );
        out.push(("xlb".to_string(), got, sent));
        lab.stop_agent(0, Signal::SIGTERM);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_valid_64_byte_udp_datagram() {
        let f = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.len(), 60);
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(
            (h.source, h.destination),
            (lab::CLIENT.octets(), VIP.octets())
        );
        let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
            panic!("not UDP")
        };
        assert_eq!((u.destination_port(), u.checksum()), (SINK_PORT, 0));
    }
}
