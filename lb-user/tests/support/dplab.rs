//! The data-path lab: one namespace with a client link and a backend link,
//! real routes and static neighbours, where the compiled program runs under
//! BPF_PROG_TEST_RUN. Shared by the data-path tests and the benchmark.

use std::{net::Ipv4Addr, sync::OnceLock};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{PROTO_TCP, PROTO_UDP, SVC_ENABLED};
use lb_user::{
    dataplane::Dataplane,
    maglev,
    plan::{default_config, BackendSpec, Limits, ServiceSpec},
};

use super::{netns::*, packet::*};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const SEED: u32 = 0x5eed;
pub const M: u32 = maglev::DEFAULT_SIZE;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 100, 1);
pub const SNAT: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
pub const SNAT2: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 2);
pub const BACKEND_PORT: u16 = 8080;
/// Backends behind the `b0` link, with their neighbour MACs.
pub const BACKENDS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(10, 99, 1, 10), [2, 0, 0, 0, 1, 10]),
    (Ipv4Addr::new(10, 99, 1, 11), [2, 0, 0, 0, 1, 11]),
    (Ipv4Addr::new(10, 99, 1, 12), [2, 0, 0, 0, 1, 12]),
];
/// A backend on the client side link: reached with XDP_TX.
pub const SAME_LINK: (Ipv4Addr, [u8; 6]) = (Ipv4Addr::new(10, 99, 0, 50), [2, 0, 0, 0, 0, 50]);
/// A backend whose MAC is not known yet.
pub const NO_NEIGH: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 99);

/// The shared topology: `lb` holds `c0` (clients) and `b0` (backends); their
/// veth peers sit in `peer` so the links are up.
pub struct Lab {
    pub lb: Netns,
    pub peer: Netns,
    pub c0: u32,
    pub b0: u32,
    pub c0_mac: [u8; 6],
    pub b0_mac: [u8; 6],
    /// Keeps an XDP program on both links, which registers their receive
    /// queues: test_run needs that to accept `ingress_ifindex`.
    pub holder: std::sync::Mutex<Dataplane>,
}

pub fn lab() -> &'static Lab {
    LAB.get().expect("lab not set up")
}

pub fn setup() -> Lab {
    reap_stale();
    let lb = netns("dp");
    let peer = netns("dpp");
    lb.veth("c0", &peer, "c0p").unwrap();
    lb.veth("b0", &peer, "b0p").unwrap();
    lb.add_addr("c0", "10.99.0.1/24").unwrap();
    lb.add_addr("b0", "10.99.1.1/24").unwrap();
    lb.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let neigh = |ip: Ipv4Addr, mac: [u8; 6], dev: &str| lb.neigh_replace(ip, mac, dev).unwrap();
    neigh(CLIENT, CLIENT_MAC, "c0");
    neigh(SAME_LINK.0, SAME_LINK.1, "c0");
    for (ip, mac) in BACKENDS {
        neigh(ip, mac, "b0");
    }
    lb.enter().unwrap();
    let mut holder = new_dp();
    holder
        .attach("c0", lb_user::config::XdpMode::Native)
        .unwrap();
    holder
        .attach("b0", lb_user::config::XdpMode::Native)
        .unwrap();
    Lab {
        c0: lb.ifindex("c0").unwrap(),
        b0: lb.ifindex("b0").unwrap(),
        c0_mac: lb.mac("c0").unwrap(),
        b0_mac: lb.mac("b0").unwrap(),
        lb,
        peer,
        holder: std::sync::Mutex::new(holder),
    }
}

pub fn new_dp() -> Dataplane {
    let limits = Limits {
        max_services: 4,
        max_backends: 64,
        conn_max: 65536,
        maglev_size: M,
    };
    Dataplane::load(limits, default_config(SEED, M)).expect("load")
}

pub fn backends() -> Vec<BackendSpec> {
    BACKENDS
        .iter()
        .enumerate()
        .map(|(i, (addr, _))| BackendSpec {
            id: i as u32,
            addr: *addr,
            port: BACKEND_PORT,
            weight: 1,
        })
        .collect()
}

pub fn web() -> ServiceSpec {
    ServiceSpec {
        id: 0,
        vip: VIP,
        port: 80,
        proto: PROTO_TCP,
        flags: SVC_ENABLED,
        snat_addrs: vec![SNAT],
        snat_ports: (1024, 65535),
        backends: backends(),
        since_ns: 0,
    }
}

pub fn dns() -> ServiceSpec {
    ServiceSpec {
        id: 1,
        port: 53,
        proto: PROTO_UDP,
        backends: backends()
            .into_iter()
            .map(|b| BackendSpec {
                id: b.id + 10,
                port: 53,
                ..b
            })
            .collect(),
        ..web()
    }
}

/// A program loaded in the lab with the web and DNS services.
pub fn dp() -> Dataplane {
    let lab = lab();
    lab.lb.enter().unwrap();
    let mut dp = new_dp();
    dp.set_addr(VIP, lb_common::ADDR_VIP).unwrap();
    dp.set_addr(SNAT, lb_common::ADDR_SNAT).unwrap();
    dp.add_egress(lab.c0).unwrap();
    dp.add_egress(lab.b0).unwrap();
    dp.apply_service(&web()).unwrap();
    dp.apply_service(&dns()).unwrap();
    dp
}

/// Runs one packet as if received on `ifindex`: (action, output bytes).
pub fn run_on(dp: &mut Dataplane, pkt: &[u8], ifindex: u32) -> std::io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; pkt.len() + 256];
    let ctx = netlab::xdp::test_ctx(pkt.len(), ifindex);
    let opts = TestRunOptions {
        data_in: Some(pkt),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..TestRunOptions::new()
    };
    match dp.program().test_run(opts) {
        Ok(r) => {
            out.truncate(r.data_size_out as usize);
            Ok((r.return_value, out))
        }
        Err(aya::programs::ProgramError::SyscallError(e)) => Err(e.io_error),
        Err(e) => panic!("test_run: {e}"),
    }
}

/// Runs a packet from the client link.
pub fn run(dp: &mut Dataplane, pkt: &[u8]) -> (u32, Vec<u8>) {
    run_on(dp, pkt, lab().c0).expect("test_run")
}

pub fn from_client(sport: u16, dport: u16) -> Ends {
    Ends {
        smac: CLIENT_MAC,
        dmac: lab().c0_mac,
        src: CLIENT,
        dst: VIP,
        sport,
        dport,
    }
}

pub fn backend_mac(ip: Ipv4Addr) -> [u8; 6] {
    BACKENDS
        .iter()
        .chain([&SAME_LINK])
        .find(|b| b.0 == ip)
        .unwrap()
        .1
}

static LAB: OnceLock<Lab> = OnceLock::new();

/// Builds the lab once; call it on the main thread before spawning others,
/// which then inherit its namespace.
pub fn init() -> &'static Lab {
    LAB.get_or_init(setup)
}

/// Removes the lab's namespaces (statics are never dropped).
pub fn teardown() {
    if let Some(lab) = LAB.get() {
        for ns in [&lab.lb.name, &lab.peer.name] {
            netlab::delete(ns);
        }
    }
}
