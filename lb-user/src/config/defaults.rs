//! The defaults of the optional keys: serde fills them in for a file that
//! leaves a key out, and each struct's `Default` is made of the same values
//! (a required key is empty there). The importer writes a key only where it
//! differs from these.

use std::net::Ipv4Addr;

use super::*;

impl Default for Global {
    fn default() -> Self {
        Global {
            router_id: None,
            interface: String::new(),
            extra_interfaces: vec![],
            xdp_mode: XdpMode::default(),
            pin_path: default_pin_path(),
            metrics: None,
            hash_seed: 0,
            maglev_size: default_maglev_size(),
            max_services: default_max_services(),
            max_backends: default_max_backends(),
            conntrack: Conntrack::default(),
            nexthop_ttl: default_nexthop_ttl(),
            lvs_sync_daemon: None,
        }
    }
}

impl Default for SyncDaemon {
    fn default() -> Self {
        SyncDaemon {
            interface: String::new(),
            vrrp_instance: String::new(),
            id: 0,
            port: default_sync_port(),
            group: default_sync_group(),
            all_flows: yes(),
        }
    }
}

pub(super) fn default_sync_port() -> u16 {
    8848
}

pub(super) fn default_sync_group() -> Ipv4Addr {
    Ipv4Addr::new(224, 0, 0, 81)
}

pub(super) fn default_pin_path() -> String {
    "/sys/fs/bpf/xlb".into()
}

pub(super) fn default_maglev_size() -> u32 {
    crate::maglev::DEFAULT_SIZE
}

pub(super) fn default_max_services() -> u32 {
    64
}

pub(super) fn default_max_backends() -> u32 {
    4096
}

pub(super) fn default_nexthop_ttl() -> f64 {
    1.0
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack {
            max_entries: default_ct_max(),
            tcp_timeout: default_tcp_timeout(),
            tcp_fin_timeout: default_tcp_fin_timeout(),
            tcp_syn_timeout: default_tcp_syn_timeout(),
            udp_timeout: default_udp_timeout(),
        }
    }
}

pub(super) fn default_ct_max() -> u32 {
    1 << 20
}

pub(super) fn default_tcp_timeout() -> f64 {
    900.0
}

pub(super) fn default_tcp_fin_timeout() -> f64 {
    10.0
}

/// A backend gives up a half-open connection after its SYN-ACK retries
/// (Linux: 5, about 63 s); conntrack and LVS keep `SYN_RECV` for 60 s.
pub(super) fn default_tcp_syn_timeout() -> f64 {
    60.0
}

pub(super) fn default_udp_timeout() -> f64 {
    30.0
}

impl Default for VrrpScript {
    fn default() -> Self {
        VrrpScript {
            script: String::new(),
            interval: one(),
            timeout: None,
            weight: 0,
            rise: one_u32(),
            fall: one_u32(),
        }
    }
}

pub(super) fn one() -> f64 {
    1.0
}

pub(super) fn one_u32() -> u32 {
    1
}

pub(super) fn yes() -> bool {
    true
}

impl Default for VrrpInstance {
    fn default() -> Self {
        VrrpInstance {
            name: String::new(),
            interface: None,
            state: VrrpState::default(),
            virtual_router_id: 0,
            priority: 0,
            advert_int: one(),
            version: default_vrrp_version(),
            preempt: yes(),
            preempt_delay: 0.0,
            authentication: None,
            unicast_src_ip: None,
            unicast_peers: vec![],
            virtual_ipaddress: vec![],
            track_script: vec![],
            track_virtual_server: vec![],
            garp_master_repeat: default_garp_repeat(),
            garp_master_delay: default_garp_delay(),
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            notify_stop: None,
            notify: None,
        }
    }
}

pub(super) fn default_garp_repeat() -> u32 {
    5
}

pub(super) fn default_garp_delay() -> f64 {
    5.0
}

pub(super) fn default_vrrp_version() -> u8 {
    2
}

impl Default for VirtualServer {
    fn default() -> Self {
        VirtualServer {
            name: String::new(),
            vip: Ipv4Addr::UNSPECIFIED,
            port: 0,
            protocol: default_protocol(),
            vrrp_instance: None,
            lb_algo: LbAlgo::default(),
            lb_kind: LbKind::default(),
            snat: Snat::default(),
            delay_loop: default_delay_loop(),
            quorum: one_u32(),
            sorry_server: None,
            on_down: OnDown::default(),
            real_servers: vec![],
        }
    }
}

pub(super) fn default_protocol() -> Protocol {
    Protocol::Tcp
}

pub(super) fn default_delay_loop() -> f64 {
    60.0
}

impl Default for Snat {
    fn default() -> Self {
        Snat {
            addresses: vec![],
            ports: default_snat_ports(),
        }
    }
}

pub(super) fn default_snat_ports() -> String {
    "1024-65535".into()
}

impl Default for RealServer {
    fn default() -> Self {
        RealServer {
            address: Ipv4Addr::UNSPECIFIED,
            port: 0,
            weight: one_u32(),
            inhibit_on_failure: false,
            tcp_check: None,
            http_get: None,
            ssl_get: None,
            dns_check: None,
            misc_check: None,
            notify_up: None,
            notify_down: None,
            alpha: false,
        }
    }
}

pub(super) fn default_connect_timeout() -> f64 {
    5.0
}

pub(super) fn default_path() -> String {
    "/".into()
}

pub(super) fn default_dns_name() -> String {
    ".".into()
}

pub(super) fn default_dns_type() -> String {
    "SOA".into()
}
