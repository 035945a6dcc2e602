//! Checks a parsed configuration for what types cannot express. Each problem
//! is `(key path, message)`; the caller adds file and line.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
};

use super::{CheckCommon, Config, StatusCodes, VirtualServer};
use crate::maglev;

/// Highest `weight` of a real server.
pub const MAX_WEIGHT: u32 = 65535;
/// At most this many SNAT addresses per virtual server.
pub const MAX_SNAT_ADDRS: usize = lb_common::MAX_SNAT_ADDRS;

type Problems = Vec<(String, String)>;

pub fn check(c: &Config) -> Problems {
    let mut p = Problems::new();
    global(c, &mut p);
    scripts(c, &mut p);
    instances(c, &mut p);
    servers(c, &mut p);
    p
}

fn err(p: &mut Problems, path: impl Into<String>, msg: impl Into<String>) {
    p.push((path.into(), msg.into()));
}

/// Seconds must be finite and within `min..=max`.
fn seconds(p: &mut Problems, path: String, v: f64, min: f64, max: f64) {
    if !v.is_finite() || v < min || v > max {
        err(p, path, format!("{v} is out of range {min}-{max} seconds"));
    }
}

fn global(c: &Config, p: &mut Problems) {
    let g = &c.global;
    if g.interface.trim().is_empty() {
        err(p, "global.interface", "must name an interface");
    }
    if !maglev::is_prime(g.maglev_size) || g.maglev_size < 3 {
        err(
            p,
            "global.maglev_size",
            format!("{} is not a prime of at least 3", g.maglev_size),
        );
    }
    let services = c.virtual_servers.len() as u64;
    if services > g.max_services as u64 {
        err(
            p,
            "global.max_services",
            format!(
                "{} virtual servers do not fit in max_services {}",
                services, g.max_services
            ),
        );
    }
    let backends: u64 = c
        .virtual_servers
        .iter()
        .map(|v| v.real_servers.len() as u64 + v.sorry_server.is_some() as u64)
        .sum();
    if backends > g.max_backends as u64 {
        err(
            p,
            "global.max_backends",
            format!(
                "{backends} real and sorry servers do not fit in max_backends {}",
                g.max_backends
            ),
        );
    }
    if (g.max_services as u64) * 2 * (g.maglev_size as u64) > u32::MAX as u64 {
        err(
            p,
            "global.max_services",
            "max_services × 2 × maglev_size must fit in 32 bits",
        );
    }
    if g.conntrack.max_entries == 0 {
        err(p, "global.conntrack.max_entries", "must be at least 1");
    }
    let day = 86400.0;
    seconds(
        p,
        "global.conntrack.tcp_timeout".into(),
        g.conntrack.tcp_timeout,
        1.0,
        7.0 * day,
    );
    seconds(
        p,
        "global.conntrack.tcp_fin_timeout".into(),
        g.conntrack.tcp_fin_timeout,
        1.0,
        day,
    );
    seconds(
        p,
        "global.conntrack.tcp_syn_timeout".into(),
        g.conntrack.tcp_syn_timeout,
        1.0,
        day,
    );
    seconds(
        p,
        "global.conntrack.udp_timeout".into(),
        g.conntrack.udp_timeout,
        1.0,
        day,
    );
    seconds(p, "global.nexthop_ttl".into(), g.nexthop_ttl, 0.0, 60.0);
    if let Some(m) = &g.metrics {
        if m.parse::<std::net::SocketAddr>().is_err() {
            err(p, "global.metrics", format!("{m:?} is not an address:port"));
        }
    }
    if let Some(s) = &g.lvs_sync_daemon {
        if s.interface.trim().is_empty() {
            err(
                p,
                "global.lvs_sync_daemon.interface",
                "must name an interface",
            );
        }
        if !c.vrrp_instances.iter().any(|v| v.name == s.vrrp_instance) {
            err(
                p,
                "global.lvs_sync_daemon.vrrp_instance",
                format!("no vrrp_instance named {:?}", s.vrrp_instance),
            );
        }
        if s.port == 0 {
            err(p, "global.lvs_sync_daemon.port", "must not be 0");
        }
        if !s.group.is_multicast() {
            err(
                p,
                "global.lvs_sync_daemon.group",
                format!("{} is not a multicast address", s.group),
            );
        }
    }
}

fn scripts(c: &Config, p: &mut Problems) {
    for (name, s) in &c.vrrp_scripts {
        let at = |k: &str| format!("vrrp_scripts.{name}.{k}");
        if s.script.trim().is_empty() {
            err(p, at("script"), "must not be empty");
        }
        seconds(p, at("interval"), s.interval, 0.01, 3600.0);
        if let Some(t) = s.timeout {
            seconds(p, at("timeout"), t, 0.01, 3600.0);
        }
        if !(-253..=253).contains(&s.weight) {
            err(
                p,
                at("weight"),
                format!("{} is out of range -253-253", s.weight),
            );
        }
        for (k, v) in [("rise", s.rise), ("fall", s.fall)] {
            if v == 0 {
                err(p, at(k), "must be at least 1");
            }
        }
    }
}

fn instances(c: &Config, p: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut vrids: HashMap<(&str, u32), usize> = HashMap::new();
    for (i, v) in c.vrrp_instances.iter().enumerate() {
        let at = |k: &str| format!("vrrp_instances[{i}].{k}");
        if let Some(first) = names.insert(&v.name, i) {
            err(
                p,
                at("name"),
                format!(
                    "duplicate VRRP instance {:?} (first is vrrp_instances[{first}])",
                    v.name
                ),
            );
        }
        if !(1..=255).contains(&v.virtual_router_id) {
            err(
                p,
                at("virtual_router_id"),
                format!("{} is out of range 1-255", v.virtual_router_id),
            );
        } else {
            let iface = v.interface.as_deref().unwrap_or(&c.global.interface);
            if let Some(first) = vrids.insert((iface, v.virtual_router_id), i) {
                err(
                    p,
                    at("virtual_router_id"),
                    format!(
                        "virtual_router_id {} is already used on {iface} by vrrp_instances[{first}]",
                        v.virtual_router_id
                    ),
                );
            }
        }
        if !(1..=255).contains(&v.priority) {
            err(
                p,
                at("priority"),
                format!("{} is out of range 1-255", v.priority),
            );
        }
        match v.version {
            // v2 carries whole seconds; v3 centiseconds in 12 bits.
            2 => {
                if !v.advert_int.is_finite()
                    || v.advert_int < 1.0
                    || v.advert_int > 255.0
                    || v.advert_int.fract() != 0.0
                {
                    err(
                        p,
                        at("advert_int"),
                        format!("{} must be whole seconds 1-255 with VRRPv2", v.advert_int),
                    );
                }
            }
            3 => seconds(p, at("advert_int"), v.advert_int, 0.01, 40.95),
            other => err(p, at("version"), format!("{other} is not 2 or 3")),
        }
        seconds(p, at("preempt_delay"), v.preempt_delay, 0.0, 3600.0);
        if let Some(a) = &v.authentication {
            if v.version == 3 {
                err(
                    p,
                    at("authentication"),
                    "VRRPv3 has no authentication; remove it or use version 2",
                );
            }
            if a.auth_pass.is_empty() || a.auth_pass.len() > 8 {
                err(
                    p,
                    format!("vrrp_instances[{i}].authentication.auth_pass"),
                    "must be 1-8 characters",
                );
            }
        }
        for (j, cidr) in v.virtual_ipaddress.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                err(
                    p,
                    format!("vrrp_instances[{i}].virtual_ipaddress[{j}]"),
                    format!("{cidr:?} is not an IPv4 address or CIDR"),
                );
            }
        }
        for (j, t) in v.track_virtual_server.iter().enumerate() {
            if !c.virtual_servers.iter().any(|vs| vs.name == t.name) {
                err(
                    p,
                    format!("vrrp_instances[{i}].track_virtual_server[{j}].name"),
                    format!("no virtual server named {:?}", t.name),
                );
            }
            if !(-253..=253).contains(&t.weight) {
                err(
                    p,
                    format!("vrrp_instances[{i}].track_virtual_server[{j}].weight"),
                    format!("{} is out of range -253-253", t.weight),
                );
            }
        }
        if v.garp_master_repeat > 100 {
            err(
                p,
                at("garp_master_repeat"),
                format!("{} is more than 100", v.garp_master_repeat),
            );
        }
        seconds(p, at("garp_master_delay"), v.garp_master_delay, 0.0, 3600.0);
        for (j, s) in v.track_script.iter().enumerate() {
            if !c.vrrp_scripts.contains_key(s) {
                err(
                    p,
                    format!("vrrp_instances[{i}].track_script[{j}]"),
                    format!("no vrrp_script named {s:?}"),
                );
            }
        }
    }
}

/// `a.b.c.d` or `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (s, 32),
    };
    (len <= 32).then_some(())?;
    Some((a.parse().ok()?, len))
}

fn servers(c: &Config, p: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<(Ipv4Addr, u16, super::Protocol), usize> = HashMap::new();
    // Listeners: (address, port) pairs that SNAT ports must not shadow.
    let listeners: BTreeMap<(Ipv4Addr, u16), usize> = c
        .virtual_servers
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.vip, v.port), i))
        .collect();
    let reals: HashSet<Ipv4Addr> = c
        .virtual_servers
        .iter()
        .flat_map(|v| v.real_servers.iter().map(|r| r.address))
        .collect();
    for (i, v) in c.virtual_servers.iter().enumerate() {
        let at = |k: &str| format!("virtual_servers[{i}].{k}");
        if let Some(first) = names.insert(&v.name, i) {
            err(
                p,
                at("name"),
                format!(
                    "duplicate virtual server name {:?} (first is virtual_servers[{first}])",
                    v.name
                ),
            );
        }
        if let Some(first) = keys.insert((v.vip, v.port, v.protocol), i) {
            err(
                p,
                format!("virtual_servers[{i}]"),
                format!(
                    "duplicate virtual server {}:{}/{} (first is virtual_servers[{first}])",
                    v.vip, v.port, v.protocol
                ),
            );
        }
        if v.port == 0 {
            err(p, at("port"), "must be 1-65535");
        }
        if let Some(inst) = &v.vrrp_instance {
            if !c.vrrp_instances.iter().any(|x| &x.name == inst) {
                err(
                    p,
                    at("vrrp_instance"),
                    format!("no vrrp_instance named {inst:?}"),
                );
            }
        }
        seconds(p, at("delay_loop"), v.delay_loop, 0.01, 86400.0);
        if v.quorum == 0 {
            err(p, at("quorum"), "must be at least 1");
        }
        snat(v, i, &listeners, &reals, p);
        real_servers(v, i, p);
    }
}

fn snat(
    v: &VirtualServer,
    i: usize,
    listeners: &BTreeMap<(Ipv4Addr, u16), usize>,
    reals: &HashSet<Ipv4Addr>,
    p: &mut Problems,
) {
    let at = |k: &str| format!("virtual_servers[{i}].snat.{k}");
    if v.snat.addresses.is_empty() {
        err(
            p,
            at("addresses"),
            "the SNAT pool is empty: give at least one address of this node",
        );
    }
    if v.snat.addresses.len() > MAX_SNAT_ADDRS {
        err(
            p,
            at("addresses"),
            format!("at most {MAX_SNAT_ADDRS} SNAT addresses per virtual server"),
        );
    }
    let mut seen = HashSet::new();
    for (j, a) in v.snat.addresses.iter().enumerate() {
        let here = format!("virtual_servers[{i}].snat.addresses[{j}]");
        if !seen.insert(a) {
            err(p, here.clone(), format!("{a} is listed twice"));
        }
        if reals.contains(a) {
            err(
                p,
                here.clone(),
                format!("{a} is a real server, not an address of this node"),
            );
        }
    }
    let Some((lo, hi)) = v.snat.port_range() else {
        err(
            p,
            at("ports"),
            format!(
                "{:?} is not a port range FIRST-LAST within 1-65535",
                v.snat.ports
            ),
        );
        return;
    };
    // Replies to an SNAT ip:port must never look like new flows to a VIP.
    for a in &v.snat.addresses {
        for (&(addr, port), &k) in listeners.range((*a, 0)..=(*a, u16::MAX)) {
            if addr == *a && (lo..=hi).contains(&port) {
                err(
                    p,
                    at("ports"),
                    format!(
                        "SNAT pool {a}:{lo}-{hi} overlaps virtual server {addr}:{port} (virtual_servers[{k}]); exclude port {port}"
                    ),
                );
            }
        }
    }
}

fn real_servers(v: &VirtualServer, i: usize, p: &mut Problems) {
    let mut seen: HashMap<(Ipv4Addr, u16), usize> = HashMap::new();
    for (j, r) in v.real_servers.iter().enumerate() {
        let at = |k: &str| format!("virtual_servers[{i}].real_servers[{j}].{k}");
        if let Some(first) = seen.insert((r.address, r.port), j) {
            err(
                p,
                format!("virtual_servers[{i}].real_servers[{j}]"),
                format!(
                    "duplicate real server {}:{} (first is real_servers[{first}])",
                    r.address, r.port
                ),
            );
        }
        if r.port == 0 {
            err(p, at("port"), "must be 1-65535");
        }
        if r.weight > MAX_WEIGHT {
            err(
                p,
                at("weight"),
                format!("{} is out of range 0-{MAX_WEIGHT}", r.weight),
            );
        }
        if r.checker_count() > 1 {
            err(
                p,
                format!("virtual_servers[{i}].real_servers[{j}]"),
                "give at most one of tcp_check, http_get, ssl_get, dns_check, misc_check",
            );
        }
        let common = |p: &mut Problems, k: &str, c: CheckCommon| {
            let at = |f: &str| format!("virtual_servers[{i}].real_servers[{j}].{k}.{f}");
            seconds(p, at("connect_timeout"), c.connect_timeout, 0.001, 3600.0);
            seconds(
                p,
                at("delay_before_retry"),
                c.delay_before_retry,
                0.0,
                3600.0,
            );
            if let Some(w) = c.warmup {
                seconds(p, at("warmup"), w, 0.0, 3600.0);
            }
            for (f, n) in [("retry", c.retry), ("rise", c.rise)] {
                if n == 0 {
                    err(p, at(f), "must be at least 1");
                }
            }
        };
        if let Some(c) = &r.tcp_check {
            common(p, "tcp_check", c.common());
        }
        for (k, h) in [("http_get", &r.http_get), ("ssl_get", &r.ssl_get)] {
            let Some(h) = h else { continue };
            common(p, k, h.common());
            let at = |f: &str| format!("virtual_servers[{i}].real_servers[{j}].{k}.{f}");
            if !h.path.starts_with('/') {
                err(p, at("path"), format!("{:?} must start with /", h.path));
            } else if !http_path_ok(&h.path) {
                err(
                    p,
                    at("path"),
                    format!(
                        "{:?} is not a request path: no spaces or control characters",
                        h.path
                    ),
                );
            }
            if let Some(v) = h.virtualhost.as_deref().filter(|v| !http_host_ok(v)) {
                err(
                    p,
                    at("virtualhost"),
                    format!("{v:?} is not a Host header: no spaces or control characters"),
                );
            }
            if let Some(sc) = &h.status_code {
                if status_ranges(sc).is_none() {
                    err(
                        p,
                        at("status_code"),
                        format!("{sc:?} is not a code or a list of ranges like 200-299,301"),
                    );
                }
            }
            if let Some(d) = &h.digest {
                if d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    err(
                        p,
                        at("digest"),
                        "must be 32 hex digits (an MD5, as genhash prints it)",
                    );
                }
            }
            if let Some(v) = &h.http_protocol {
                if v != "1.0" && v != "1.1" {
                    err(p, at("http_protocol"), format!("{v:?} is not 1.0 or 1.1"));
                }
            }
        }
        if let Some(d) = &r.dns_check {
            common(p, "dns_check", d.common());
            const TYPES: [&str; 9] = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "PTR", "SRV"];
            if !TYPES.contains(&d.qtype.to_ascii_uppercase().as_str()) {
                err(
                    p,
                    format!("virtual_servers[{i}].real_servers[{j}].dns_check.type"),
                    format!("{:?} is not one of {}", d.qtype, TYPES.join(", ")),
                );
            }
        }
        if let Some(m) = &r.misc_check {
            common(p, "misc_check", m.common());
            let at = |f: &str| format!("virtual_servers[{i}].real_servers[{j}].misc_check.{f}");
            if m.misc_path.trim().is_empty() {
                err(p, at("misc_path"), "must not be empty");
            }
            if let Some(t) = m.misc_timeout {
                seconds(p, at("misc_timeout"), t, 0.001, 3600.0);
            }
        }
    }
}

/// The accepted status codes as inclusive ranges.
pub fn status_ranges(sc: &StatusCodes) -> Option<Vec<(u16, u16)>> {
    match sc {
        StatusCodes::One(c) => (100..=599).contains(c).then(|| vec![(*c, *c)]),
        StatusCodes::Ranges(s) => s
            .split(',')
            .map(|part| {
                let part = part.trim();
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                ((100..=599).contains(&a) && (a..=599).contains(&b)).then_some((a, b))
            })
            .collect(),
    }
}

/// Whether `path` can be sent as an HTTP request's path (and query).
pub fn http_path_ok(path: &str) -> bool {
    path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok()
}

/// Whether `host` can be sent as an HTTP `Host` header: a host name or
/// address, and a port if any.
pub fn http_host_ok(host: &str) -> bool {
    host.parse::<http::uri::Authority>()
        .is_ok_and(|a| a.as_str() == host && !host.contains('@'))
}
