//! What the data path refuses or leaves alone: policies, traffic not for
//! it, truncated and random input; and what it must keep agreeing on
//! (Maglev tables across processes, pinned maps across versions).

use super::*;

pub fn policies_and_misses_are_counted() -> Result<(), Failed> {
    let mut dp = dp();
    // IPv4 options (IHL 6) to the VIP.
    let mut p = tcp(from_client(1, 80), SYN, b"");
    p.splice(34..34, [1, 1, 1, 1]);
    p[14] = 0x46;
    let len = u16::from_be_bytes([p[16], p[17]]) + 4;
    p[16..18].copy_from_slice(&len.to_be_bytes());
    ensure_eq!(run(&mut dp, &p).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropIpOptions)?, 1);
    // A fragment (MF set) to the VIP.
    let mut p = udp(from_client(2, 53), b"frag");
    p[20] = 0x20;
    ensure_eq!(run(&mut dp, &p).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropFragment)?, 1);
    // A disabled service passes, and so does an unknown port.
    let mut svc = web();
    svc.flags &= !SVC_ENABLED;
    dp.apply_service(&svc)?;
    ensure_eq!(run(&mut dp, &tcp(from_client(3, 80), SYN, b"")).0, XDP_PASS);
    ensure_eq!(dp.reason(Reason::PassDisabled)?, 1);
    ensure_eq!(run(&mut dp, &tcp(from_client(3, 81), SYN, b"")).0, XDP_PASS);
    ensure_eq!(dp.reason(Reason::PassNoService)?, 1);
    // No backend at all.
    let mut svc = web();
    svc.backends.clear();
    dp.apply_service(&svc)?;
    ensure_eq!(run(&mut dp, &tcp(from_client(4, 80), SYN, b"")).0, XDP_DROP);
    ensure_eq!(dp.reason(Reason::DropNoBackend)?, 1);
    Ok(())
}

pub fn non_vip_traffic_passes_byte_identical() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let other = Ends {
        dst: Ipv4Addr::new(10, 99, 0, 1),
        ..from_client(50000, 22)
    };
    let mut vrrp = udp(
        Ends {
            dst: Ipv4Addr::new(224, 0, 0, 18),
            ..other
        },
        &[0x21, 1, 100, 1, 0, 1, 0, 0],
    );
    vrrp[23] = 112;
    let arp = {
        let mut a = vec![0xff; 6];
        a.extend_from_slice(&CLIENT_MAC);
        a.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        a.extend_from_slice(&CLIENT_MAC);
        a.extend_from_slice(&CLIENT.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&VIP.octets());
        a
    };
    let mut icmp_to_vip = udp(from_client(0, 0), b"pingpingping");
    icmp_to_vip[23] = 1;
    let mut ipv6 = tcp(other, SYN, b"");
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ssh to the node", tcp(other, SYN, b"SSH-2.0")),
        ("udp to the node", udp(other, b"x")),
        ("vrrp", vrrp),
        ("arp", arp),
        ("icmp to the vip", icmp_to_vip),
        ("ipv6 ethertype", ipv6),
        (
            "reply with no nat entry",
            tcp(Ends { dst: SNAT, ..other }, ACK, b""),
        ),
    ];
    for (name, p) in cases {
        let (act, out) = run_on(&mut dp, &p, lab.c0)?;
        ensure_eq!(act, XDP_PASS, "{name}");
        check(out == p, || format!("{name}: bytes changed"))?;
    }
    Ok(())
}

/// Valid packets cut at every length from 0 to 128 bytes: below 14 the kernel
/// refuses the run; from 14 up nothing is forwarded.
pub fn truncations_are_never_forwarded() -> Result<(), Failed> {
    let mut dp = dp();
    let lab = lab();
    let payload = [0x55u8; 120];
    let reply = Ends {
        smac: BACKENDS[0].1,
        dmac: lab.b0_mac,
        src: BACKENDS[0].0,
        dst: SNAT,
        sport: 8080,
        dport: 3000,
    };
    let packets = [
        tcp(from_client(41000, 80), SYN, &payload),
        udp(from_client(41001, 53), &payload),
        vlan_tag(&tcp(from_client(41002, 80), SYN, &payload), 7),
        tcp(reply, ACK, &payload),
    ];
    for p in &packets {
        // Establish the flows first, so truncated packets hit live state too.
        run(&mut dp, p);
    }
    for (i, p) in packets.iter().enumerate() {
        for len in 0..=128 {
            match run_on(&mut dp, &p[..len], lab.c0) {
                Err(e) => check(len < 14 && e.raw_os_error() == Some(libc::EINVAL), || {
                    format!("packet {i} len {len}: {e}")
                })?,
                Ok((act, _)) => {
                    check(len >= 14, || format!("packet {i} len {len} ran"))?;
                    check(act == XDP_PASS || act == XDP_DROP, || {
                        format!("packet {i} len {len}: action {act}")
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Random bytes, and random headers addressed to the VIP: the run never fails,
/// and what is forwarded was a well-formed IPv4 TCP/UDP packet to begin with.
pub fn random_input_is_never_forwarded_unless_well_formed() -> Result<(), Failed> {
    let mut dp = dp();
    let mut rng = Rng(0xfeed_f00d_dead_beef);
    let template = tcp(from_client(42000, 80), SYN, &[0u8; 40]);
    for i in 0..20_000 {
        let len = rng.below(160) as usize;
        let mut p = rng.bytes(len);
        if i % 2 == 1 && len >= 34 {
            // Keep Ethernet, IPv4 and the VIP; everything else random.
            p[..14].copy_from_slice(&template[..14]);
            p[30..34].copy_from_slice(&VIP.octets());
            if rng.below(2) == 0 {
                p[14] = 0x45;
                p[23] = [6u8, 17][rng.below(2) as usize];
                p[20] &= 0x80;
                let tl = (len - 14 - rng.below(4) as usize) as u16;
                p[16..18].copy_from_slice(&tl.to_be_bytes());
            }
        }
        match run_on(&mut dp, &p, lab().c0) {
            Err(e) => check(len < 14 && e.raw_os_error() == Some(libc::EINVAL), || {
                format!("input {i}: {e}")
            })?,
            Ok((act, _)) if act == XDP_TX || act == XDP_REDIRECT => {
                let h = etherparse::PacketHeaders::from_ethernet_slice(&p)
                    .map_err(|e| format!("input {i} forwarded but malformed: {e}"))?;
                let well_formed = matches!(h.net, Some(etherparse::NetHeaders::Ipv4(ref ip, _)) if ip.ihl() == 5 && !ip.is_fragmenting_payload())
                    && matches!(
                        h.transport,
                        Some(
                            etherparse::TransportHeader::Tcp(_)
                                | etherparse::TransportHeader::Udp(_)
                        )
                    );
                check(well_formed, || {
                    format!("input {i} forwarded but malformed: {p:02x?}")
                })?;
            }
            Ok((act, _)) => check(act == XDP_PASS || act == XDP_DROP, || {
                format!("input {i}: action {act}")
            })?,
        }
    }
    Ok(())
}

/// The same Maglev table from two processes in two namespaces ("nodes").
pub fn maglev_is_the_same_in_two_processes() -> Result<(), Failed> {
    let lab = lab();
    let args: Vec<String> = backends()
        .iter()
        .map(|b| format!("{}:{}*{}", b.addr, b.port, b.weight))
        .collect();
    let mut cmd = vec![
        env!("CARGO_BIN_EXE_xlb").to_string(),
        "maglev".into(),
        "--seed".into(),
        SEED.to_string(),
    ];
    cmd.extend(args);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let a = lab.lb.exec(&argv)?;
    let b = lab.peer.exec(&argv)?;
    ensure_eq!(a, b);
    ensure_eq!(a.trim().len(), 16);
    Ok(())
}

/// A pinned data path is adopted only if its maps fit this version and
/// this config; the reason counters, whose size follows the version, start
/// afresh instead.
pub fn pinned_maps_are_checked_when_adopted() -> Result<(), Failed> {
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/xlbt-{}-adopt", std::process::id()));
    let limits = || lb_user::plan::Limits {
        max_services: 4,
        max_backends: 64,
        conn_max: 4096,
        maglev_size: M,
    };
    let config = lb_user::plan::default_config(SEED, M);
    let result = (|| -> Result<(), Failed> {
        drop(Dataplane::load_pinned(limits(), config, &dir)?);
        let mut bigger = limits();
        bigger.conn_max *= 2;
        let err = match Dataplane::load_pinned(bigger, config, &dir) {
            Ok(_) => return Err("a pinned table of another size was adopted".into()),
            Err(e) => format!("{e:#}"),
        };
        check(
            err.contains("pinned map CONNS") && err.contains("has 4096 entries"),
            || err.clone(),
        )?;
        // An older version counted fewer reasons.
        std::fs::remove_file(dir.join("REASONS"))?;
        let older = Reason::COUNT - 1;
        drop(
            aya::EbpfLoader::new()
                .map_max_entries("REASONS", older)
                .map_max_entries("CONNS", 16)
                .map_max_entries("NATS", 16)
                .map_max_entries("MAGLEV", 2 * M)
                .map_pin_path("REASONS", dir.join("REASONS"))
                .load(lb_user::dataplane::OBJECT)?,
        );
        let info = aya::maps::MapInfo::from_pin(dir.join("REASONS"))?;
        ensure_eq!(info.max_entries(), older);
        let dp = Dataplane::load_pinned(limits(), config, &dir)?;
        check(dp.adopted(), || "not adopted".into())?;
        ensure_eq!(dp.reasons()?.len(), Reason::ALL.len());
        let info = aya::maps::MapInfo::from_pin(dir.join("REASONS"))?;
        ensure_eq!(info.max_entries(), Reason::COUNT);
        dp.destroy()?;
        Ok(())
    })();
    if dir.exists() {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    result
}
