//! VRRP conformance against packets keepalived 2.2.7 sent (Debian 12),
//! captured on a veth: sender 192.168.77.1, VIP 192.168.77.100/24, VRID 51,
//! priority 150, advert_int 1, then stopped with SIGTERM (priority 0).
//! Every advert and gratuitous ARP must parse, and what we emit for the
//! same settings must be the same bytes.

use std::net::Ipv4Addr;

use lb_user::vrrp::{
    arp,
    wire::{self, Advert, Auth, ChecksumForm, Packet},
};

const SENDER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);

/// The Ethernet frames of a classic pcap file.
fn frames(name: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/tests/vectors/keepalived-2.2.7/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    assert_eq!(
        reader.header().datalink,
        pcap_file::DataLink::ETHERNET,
        "{path}"
    );
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// Checks every frame of a capture; returns the priorities of its adverts.
fn conform(name: &str, version: u8, auth: Auth) -> Vec<u8> {
    let mut priorities = Vec::new();
    let mut garps = 0;
    for f in frames(name) {
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0800 => {
                let ip = wire::parse_ipv4(&f[14..]).unwrap();
                assert_eq!((ip.src, ip.dst, ip.ttl), (SENDER, wire::GROUP, wire::TTL));
                assert_eq!(ip.protocol, wire::PROTO_VRRP);
                let raw = &f[14 + ip.header_len..14 + ip.header_len + ip.payload_len];
                let p = Packet::new_checked(raw).unwrap();
                let (a, form) = Advert::parse(&p, ip.src, ip.dst).unwrap();
                let expect_form = if version == 3 {
                    ChecksumForm::PseudoHeader
                } else {
                    ChecksumForm::Plain
                };
                assert_eq!(form, expect_form);
                assert_eq!(
                    (a.version, a.vrid, a.interval_cs, &a.addresses[..], a.auth),
                    (version, 51, 100, &[VIP][..], auth)
                );
                priorities.push(a.priority);
                // Our encoder, same settings: the same VRRP bytes.
                let ours = Advert {
                    version,
                    vrid: 51,
                    priority: a.priority,
                    interval_cs: 100,
                    addresses: vec![VIP],
                    auth,
                };
                let mut buf = [0u8; 64];
                let n = ours.emit(&mut buf, SENDER, wire::GROUP);
                assert_eq!(&buf[..n], raw, "{name}: advert at priority {}", a.priority);
                // And the same IPv4 header, given the same IP ID.
                let id = u16::from_be_bytes([f[18], f[19]]);
                let mut hdr = [0u8; 20];
                wire::emit_ipv4(&mut hdr, SENDER, wire::GROUP, id, n);
                assert_eq!(&hdr[..], &f[14..34], "{name}: IPv4 header");
            }
            0x0806 => {
                let frame = arp::Frame::new_checked(&f[..]).unwrap();
                assert!(frame.is_gratuitous());
                assert_eq!(frame.sender_ip(), VIP);
                let mut buf = [0u8; 64];
                let n = arp::emit_gratuitous(&mut buf, frame.eth_src(), VIP);
                assert_eq!(&buf[..n], &f[..n], "{name}: gratuitous ARP");
                garps += 1;
            }
            t => panic!("{name}: unexpected EtherType {t:#x}"),
        }
    }
    // keepalived's defaults here: bursts of 5.
    assert!(
        garps >= 5 && garps % 5 == 0,
        "{name}: {garps} gratuitous ARPs"
    );
    priorities
}

#[test]
fn keepalived_v2_pass_adverts_parse_and_match_our_encoder() {
    let p = conform("vrrp-v2-pass.pcap", 2, Auth::pass("secret1"));
    assert_eq!(p.last(), Some(&0), "shutdown advert at priority 0");
    assert!(p[..p.len() - 1].iter().all(|&x| x == 150), "{p:?}");
}

#[test]
fn keepalived_v3_adverts_parse_and_match_our_encoder() {
    let p = conform("vrrp-v3.pcap", 3, Auth::None);
    assert_eq!(p.last(), Some(&0), "shutdown advert at priority 0");
    assert!(p[..p.len() - 1].iter().all(|&x| x == 150), "{p:?}");
}

#[test]
fn corrupted_vectors_are_refused_not_misread() {
    for name in ["vrrp-v2-pass.pcap", "vrrp-v3.pcap"] {
        let f = &frames(name)[0];
        let ip = wire::parse_ipv4(&f[14..]).unwrap();
        let raw = &f[14 + ip.header_len..14 + ip.header_len + ip.payload_len];
        // Every single-bit flip is either refused or still parses to
        // something self-consistent; none may panic.
        let mut refused = 0;
        for bit in 0..raw.len() * 8 {
            let mut b = raw.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok(p) = Packet::new_checked(&b[..]) {
                if Advert::parse(&p, ip.src, ip.dst).is_err() {
                    refused += 1;
                }
            } else {
                refused += 1;
            }
        }
        // The checksum catches every single-bit error.
        assert_eq!(refused, raw.len() * 8, "{name}");
        // Every truncation is refused or parses without the cut bytes.
        for len in 0..raw.len() {
            if let Ok(p) = Packet::new_checked(&raw[..len]) {
                assert!(
                    Advert::parse(&p, ip.src, ip.dst).is_err(),
                    "{name} cut at {len}"
                );
            }
        }
    }
}
