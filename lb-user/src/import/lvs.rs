//! `virtual_server` and `real_server` blocks, and each virtual server as it
//! will be written: linked to its instance, with its SNAT pool, kind and
//! scheduler.

use std::net::Ipv4Addr;

use super::{
    ann::Ann,
    checker::{checker, checker_key, inherit, Inherit},
    lexer::Pos,
    report::{show, Cx, EMAIL},
    tree::{join, Node},
    Item, Kind,
};
use crate::config::{Config, Endpoint, LbAlgo, Protocol, RealServer, VirtualServer};

/// A `virtual_server`, before it is linked to an instance and given SNAT.
#[derive(Debug)]
pub(super) struct KServer {
    pub(super) pos: Pos,
    pub(super) vs: VirtualServer,
    pub(super) ann: Ann,
    pub(super) algo: Option<(String, Pos)>,
    pub(super) flags: Vec<(String, Pos)>,
    pub(super) kind: Option<(String, Pos)>,
    pub(super) rs_kinds: Vec<Pos>,
    pub(super) persistence: Option<(u32, Pos)>,
}

pub(super) fn virtual_server(cx: &mut Cx, n: &Node) -> Option<KServer> {
    let head = show(n);
    match n.args.first().map(|w| w.text.as_str()) {
        Some("group") => {
            cx.dropped(
                n.pos(),
                format!("{head}: virtual_server_group is not supported: give each address its own virtual_server"),
            );
            return None;
        }
        Some("fwmark") => {
            cx.dropped(
                n.pos(),
                format!("{head}: firewall-mark services are not supported: xlb matches address, port and protocol"),
            );
            return None;
        }
        _ => {}
    }
    let (Some(a), Some(p)) = (n.args.first(), n.args.get(1)) else {
        cx.dropped(
            n.pos(),
            format!("{head}: needs an address and a port (xlb serves one port per virtual server); ignored"),
        );
        return None;
    };
    let vip = cx.addr(n, a)?;
    let port = cx.port(n, p)?;
    cx.extra_words(n, 2);
    let mut k = KServer {
        pos: n.pos(),
        vs: VirtualServer::default(),
        ann: Ann::default(),
        algo: None,
        flags: vec![],
        kind: None,
        rs_kinds: vec![],
        persistence: None,
    };
    k.vs.vip = vip;
    k.vs.port = port;
    let mut inh = Inherit::default();
    let mut sctp = false;
    let mut protocol = false;
    let children = cx.block(n, 2);
    for c in children {
        if c.name() == "real_server" || inherit(cx, c, &mut inh, "the virtual_server's") {
            continue;
        }
        let vs = &mut k.vs;
        match c.name() {
            "lb_algo" | "lvs_sched" => {
                if let Some(w) = cx.value(c) {
                    k.algo = Some((w.text.clone(), c.pos()));
                }
            }
            "ops" | "hashed" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback"
            | "mh-port" | "mh-fallback" => {
                if cx.args(c, 0, 0).is_some() {
                    k.flags.push((c.name().to_string(), c.pos()));
                }
            }
            "lb_kind" | "lvs_method" => {
                if let Some(a) = cx.args(c, 1, usize::MAX) {
                    k.kind = Some((a[0].text.to_ascii_uppercase(), c.pos()));
                    if a.len() > 1 {
                        cx.dropped(
                            a[1].pos,
                            format!("{}: tunnel options ignored: {}", c.name(), join(&a[1..])),
                        );
                    }
                }
            }
            "persistence_timeout" => {
                // Without a value IPVS's default, 6 minutes.
                let t = if c.args.is_empty() && c.block.is_none() {
                    Some(360)
                } else {
                    cx.uint(c, 1, u32::MAX)
                };
                if let Some(t) = t {
                    k.persistence = Some((t, c.pos()));
                }
            }
            "persistence_granularity" => match cx.value(c) {
                Some(w) if w.text == "255.255.255.255" || w.text == "32" => {}
                Some(_) => cx.unsupported(
                    c,
                    "not supported: affinity (lb_algo sh) is per client address",
                ),
                None => {}
            },
            "persistence_engine" => cx.unsupported(c, "not supported"),
            "protocol" => match cx.value(c) {
                Some(w) if w.text.eq_ignore_ascii_case("tcp") => {
                    (protocol, sctp) = (true, false);
                    vs.protocol = Protocol::Tcp;
                    k.ann.show("protocol");
                }
                Some(w) if w.text.eq_ignore_ascii_case("udp") => {
                    (protocol, sctp) = (true, false);
                    vs.protocol = Protocol::Udp;
                    k.ann.show("protocol");
                }
                Some(w) if w.text.eq_ignore_ascii_case("sctp") => sctp = true,
                Some(w) => cx.bad(c, w, "not TCP or UDP"),
                None => {}
            },
            "quorum" => {
                if let Some(v) = cx.uint(c, 1, u32::MAX) {
                    vs.quorum = v;
                    k.ann.show("quorum");
                }
            }
            "sorry_server" => {
                let Some(a) = cx.args(c, 1, 2) else { continue };
                let Some(address) = cx.addr(c, &a[0]) else {
                    continue;
                };
                let port = match a.get(1) {
                    Some(w) => cx.port(c, w),
                    None => {
                        k.ann.trail(
                            "sorry_server",
                            "keepalived: no port, so the virtual server's",
                        );
                        Some(port)
                    }
                };
                if let Some(port) = port {
                    vs.sorry_server = Some(Endpoint { address, port });
                }
            }
            "sorry_server_lvs_method" => k.rs_kinds.push(c.pos()),
            "sorry_server_inhibit" => cx.unsupported(
                c,
                "not carried over: the sorry server has no weight to inhibit",
            ),
            "ha_suspend" => cx.unsupported(
                c,
                "not carried over: health checks run whether or not this node holds the VIP",
            ),
            "hysteresis" | "quorum_up" | "quorum_down" => cx.unsupported(
                c,
                "not supported: quorum has no hysteresis or scripts; track_virtual_server in a \
                 vrrp_instance can follow it",
            ),
            "smtp_alert" => cx.unsupported(c, EMAIL),
            "omega" => cx.unsupported(c, "not supported"),
            "ip_family" => match cx.value(c) {
                Some(w) if w.text == "inet" => {}
                Some(_) => cx.unsupported(c, "not supported: IPv4 only"),
                None => {}
            },
            _ => cx.unknown(c, "virtual_server"),
        }
    }
    if sctp {
        cx.dropped(
            n.pos(),
            format!(
                "{head}: protocol SCTP is not supported; the virtual server is not carried over"
            ),
        );
        return None;
    }
    if !protocol {
        k.vs.protocol = Protocol::Udp;
        k.ann
            .trail("protocol", "keepalived's default, as the kernel's");
        cx.note(
            n.pos(),
            format!(
                "{head}: no protocol, so keepalived's default, UDP (the kernel's); kept as udp: \
                 add protocol TCP if TCP was meant"
            ),
        );
    }
    if let Some((v, _)) = inh.delay_loop {
        k.vs.delay_loop = v;
        k.ann.show("delay_loop");
    }
    for c in children.iter().filter(|c| c.name() == "real_server") {
        let j = k.vs.real_servers.len();
        if let Some((r, ann, kinds)) = real_server(cx, c, &k.vs, &inh) {
            if k.vs
                .real_servers
                .iter()
                .any(|x| (x.address, x.port) == (r.address, r.port))
            {
                cx.dropped(
                    c.pos(),
                    format!(
                        "real_server {}:{}: listed twice; the second is dropped, as keepalived does",
                        r.address, r.port
                    ),
                );
                continue;
            }
            k.rs_kinds.extend(kinds);
            k.ann.merge(&format!("real_servers[{j}]"), ann);
            k.vs.real_servers.push(r);
        }
    }
    if k.vs.real_servers.is_empty() {
        cx.dropped(
            n.pos(),
            format!("{head}: no real servers (keepalived ignores it too); not carried over"),
        );
        return None;
    }
    Some(k)
}

pub(super) fn real_server(
    cx: &mut Cx,
    n: &Node,
    vs: &VirtualServer,
    vs_inh: &Inherit,
) -> Option<(RealServer, Ann, Vec<Pos>)> {
    let head = show(n);
    let Some(a) = n.args.first() else {
        cx.dropped(n.pos(), "real_server without an address: ignored");
        return None;
    };
    let address = cx.addr(n, a)?;
    let mut ann = Ann::default();
    let port = match n.args.get(1) {
        Some(p) if p.text.bytes().all(|b| b == b'0') => {
            ann.trail("port", "keepalived: port 0, so the virtual server's");
            vs.port
        }
        Some(p) => cx.port(n, p)?,
        None => {
            ann.trail("port", "keepalived: no port, so the virtual server's");
            vs.port
        }
    };
    cx.extra_words(n, 2);
    let mut r = RealServer {
        address,
        port,
        ..RealServer::default()
    };
    let mut inh = vs_inh.clone();
    let mut kinds = vec![];
    let children = cx.block(n, 2);
    let mut checkers: Vec<&Node> = vec![];
    for c in children {
        if matches!(
            c.name(),
            "TCP_CHECK"
                | "HTTP_GET"
                | "SSL_GET"
                | "DNS_CHECK"
                | "MISC_CHECK"
                | "SMTP_CHECK"
                | "UDP_CHECK"
                | "PING_CHECK"
                | "ICMP_CHECK"
                | "FILE_CHECK"
                | "BFD_CHECK"
        ) {
            checkers.push(c);
            continue;
        }
        if inherit(cx, c, &mut inh, "the real_server's") {
            continue;
        }
        match c.name() {
            "weight" => {
                if let Some(v) = cx.uint(c, 0, 65535) {
                    r.weight = v;
                    ann.show("weight");
                }
            }
            "notify_up" => r.notify_up = cx.script(c).or(r.notify_up.take()),
            "notify_down" => r.notify_down = cx.script(c).or(r.notify_down.take()),
            "lvs_method" => kinds.push(c.pos()),
            "uthreshold" | "lthreshold" => {
                cx.unsupported(c, "not supported: xlb does not cap a server's connections")
            }
            "smtp_alert" => cx.unsupported(c, EMAIL),
            _ => cx.unknown(c, "real_server"),
        }
    }
    if let Some(v) = inh.inhibit {
        r.inhibit_on_failure = v;
        ann.show("inhibit_on_failure");
    }
    if let Some(v) = inh.alpha {
        r.alpha = v;
        ann.show("alpha");
    }
    if let Some((d, pos)) = inh.delay_loop {
        if d != vs.delay_loop {
            cx.dropped(
                pos,
                format!(
                    "{head}: delay_loop {d}: not carried over: xlb checks every real \
                     server of a virtual server every delay_loop ({} s)",
                    vs.delay_loop
                ),
            );
        }
    }
    let mut kept: Option<&'static str> = None;
    for c in &checkers {
        if let (Some(first), Some(_)) = (kept, checker_key(c.name())) {
            cx.dropped(
                c.pos(),
                format!(
                    "{}: keepalived needed every checker of a server to pass; xlb runs one per \
                     server, the first ({}); this one is dropped",
                    c.name(),
                    first.to_ascii_uppercase()
                ),
            );
            ann.trail(first, format!("keepalived also ran {}", c.name()));
            continue;
        }
        let Some((key, ann_c, alpha)) = checker(cx, c, &mut r, &inh, vs) else {
            continue;
        };
        kept = Some(key);
        if let Some(a) = alpha {
            r.alpha = a;
            ann.show("alpha");
        }
        ann.merge(key, ann_c);
    }
    if !checkers.is_empty() && kept.is_none() {
        cx.note(
            n.pos(),
            format!("{head}: no checker is left, so the server counts as always up"),
        );
    }
    Some((r, ann, kinds))
}

/// What every virtual server is resolved against.
pub(super) struct Context<'a> {
    /// Each instance's VIPs, by instance index.
    pub(super) vip_sets: &'a [Vec<Ipv4Addr>],
    /// `--snat-address`.
    pub(super) snat: &'a [Ipv4Addr],
    /// Key paths left for the operator to fill in.
    pub(super) placeholders: &'a mut Vec<String>,
}

/// Adds virtual server `k` to `c`, linked to the instance that holds its
/// VIP, with its SNAT pool, `lb_kind` and scheduler resolved.
pub(super) fn finish_server(
    cx: &mut Cx,
    c: &mut Config,
    ann: &mut Ann,
    ctx: &mut Context<'_>,
    k: KServer,
) {
    let KServer {
        pos,
        mut vs,
        ann: mut a,
        algo,
        flags,
        kind,
        rs_kinds,
        persistence,
    } = k;
    let head = format!("virtual_server {} {}", vs.vip, vs.port);
    vs.name = match vs.protocol {
        Protocol::Tcp => format!("{}:{}", vs.vip, vs.port),
        Protocol::Udp => format!("{}:{}/udp", vs.vip, vs.port),
    };
    if c.virtual_servers
        .iter()
        .any(|x| (x.vip, x.port, x.protocol) == (vs.vip, vs.port, vs.protocol))
    {
        cx.dropped(
            pos,
            format!(
                "{head}: a second virtual server for {} ; not carried over",
                vs.name
            ),
        );
        return;
    }
    let idx = c.virtual_servers.len();

    let linked = link(cx, c, ctx, &head, pos, &mut vs, &mut a);
    let pool = snat_pool(cx, c, ctx, &head, pos, idx, linked, &mut vs, &mut a);
    lb_kind(cx, pos, kind, rs_kinds, &pool, &mut a);
    lb_algo(cx, pos, algo, flags, persistence, &mut vs, &mut a);
    a.show("protocol");
    ann.merge(&format!("virtual_servers[{idx}]"), a);
    c.virtual_servers.push(vs.into());
}

/// Links `vs` to the instance whose `virtual_ipaddress` holds its VIP;
/// returns that instance's index.
fn link(
    cx: &mut Cx,
    c: &Config,
    ctx: &Context<'_>,
    head: &str,
    pos: Pos,
    vs: &mut VirtualServer,
    a: &mut Ann,
) -> Option<usize> {
    let linked = ctx.vip_sets.iter().position(|s| s.contains(&vs.vip));
    match linked {
        Some(j) => {
            let iname = c.vrrp_instances[j].name.clone();
            vs.vrrp_instance = Some(iname.clone());
            a.trail(
                "vrrp_instance",
                format!("its virtual_ipaddress holds {}", vs.vip),
            );
            cx.note(
                pos,
                format!(
                    "{head}: served while this node is MASTER of vrrp_instance {iname}, whose virtual_ipaddress holds {}",
                    vs.vip
                ),
            );
        }
        None => {
            a.above(
                "",
                format!(
                    "No vrrp_instance holds {}: always served; route it to this node.",
                    vs.vip
                ),
            );
            cx.note(
                pos,
                format!(
                    "{head}: no vrrp_instance holds {}, so it is served whenever the agent runs; \
                     the address must reach this node as with LVS",
                    vs.vip
                ),
            );
        }
    }
    linked
}

/// Fills `vs`'s SNAT pool (or leaves a placeholder); returns the pool as
/// the report words it.
#[allow(clippy::too_many_arguments)]
fn snat_pool(
    cx: &mut Cx,
    c: &Config,
    ctx: &mut Context<'_>,
    head: &str,
    pos: Pos,
    idx: usize,
    linked: Option<usize>,
    vs: &mut VirtualServer,
    a: &mut Ann,
) -> String {
    let iface = linked
        .and_then(|j| c.vrrp_instances[j].interface.clone())
        .unwrap_or_else(|| c.global.interface.clone());
    let (addrs, why): (Vec<Ipv4Addr>, String) = if !ctx.snat.is_empty() {
        (ctx.snat.to_vec(), "from --snat-address".into())
    } else if let Some((src, name)) = linked
        .and_then(|j| {
            let i = &c.vrrp_instances[j];
            i.unicast_src_ip.map(|s| (s, i.name.clone()))
        })
        .or_else(|| {
            c.vrrp_instances
                .iter()
                .filter(|i| i.interface.as_deref() == Some(iface.as_str()))
                .find_map(|i| i.unicast_src_ip.map(|s| (s, i.name.clone())))
        })
    {
        (vec![src], format!("unicast_src_ip of {name}"))
    } else {
        (vec![], String::new())
    };
    if addrs.is_empty() {
        let p = format!("virtual_servers[{idx}].snat.addresses");
        ctx.placeholders.push(p);
        a.trail(
            "snat.addresses",
            format!("TODO: this node's address on {iface} (or the VIP)"),
        );
        cx.items.push(Item::new(
            Some(pos),
            Kind::Todo,
            format!(
                "{head}: no address of this node is known for the SNAT pool: snat.addresses is \
                 left empty and `xlb check` refuses it until it holds this node's address on {iface} \
                 (or give --snat-address)"
            ),
        ));
        format!("this node's address on {iface}, still to fill in")
    } else {
        a.trail("snat.addresses", why.clone());
        let list: Vec<String> = addrs.iter().map(|x| x.to_string()).collect();
        let s = format!("{}, {why}", list.join(", "));
        vs.snat.addresses = addrs;
        s
    }
}

/// keepalived's `lb_kind` (and the servers' `lvs_method`): every kind
/// becomes full NAT here, which the report says in its terms.
fn lb_kind(
    cx: &mut Cx,
    pos: Pos,
    kind: Option<(String, Pos)>,
    rs_kinds: Vec<Pos>,
    pool: &str,
    a: &mut Ann,
) {
    let (kind_text, kind_pos) = match &kind {
        Some((k, p)) => (format!("lb_kind {k}"), *p),
        None => ("no lb_kind, so keepalived's default NAT".to_string(), pos),
    };
    let from = format!(
        "connections reach the real servers from the SNAT pool ({pool}) instead of the \
         client's address"
    );
    let what = match kind.as_ref().map(|(k, _)| k.as_str()) {
        Some("DR") => Some(format!(
            "{from}, and addressed to them instead of the VIP; replies come back through this \
             node instead of going straight to the client; the VIP on their loopback and DR's \
             ARP settings are no longer needed"
        )),
        Some("TUN") => Some(format!(
            "{from}, without IPIP and addressed to them instead of the VIP; replies come back \
             through this node instead of going straight to the client"
        )),
        Some("NAT") | None => Some(format!(
            "{from}; replies come back through this node as with NAT, without the real servers \
             routing through it"
        )),
        Some(_) => None,
    };
    match what {
        Some(what) => {
            cx.note(
                kind_pos,
                format!("{kind_text}: becomes fullnat, the only kind xlb has: {what}"),
            );
            let short = kind
                .as_ref()
                .map_or("NAT, its default lb_kind".to_string(), |(k, _)| {
                    format!("lb_kind {k}")
                });
            a.above(
                "lb_kind",
                format!(
                    "keepalived: {short}. Full NAT: the real servers see connections from \
                     snat.addresses, not from the client, and reply through this node."
                ),
            );
            a.show("lb_kind");
        }
        None => {
            let k = kind.as_ref().map(|(k, _)| k.as_str()).unwrap_or_default();
            cx.dropped(
                kind_pos,
                format!("lb_kind {k}: not NAT, DR or TUN; it becomes fullnat: {from}"),
            );
            a.show("lb_kind");
        }
    }
    for p in rs_kinds {
        cx.note(
            p,
            "lvs_method of a real or sorry server: every server is reached by full NAT here",
        );
    }
}

/// keepalived's scheduler, `persistence_timeout` and scheduler flags as
/// one of ours.
fn lb_algo(
    cx: &mut Cx,
    pos: Pos,
    algo: Option<(String, Pos)>,
    flags: Vec<(String, Pos)>,
    persistence: Option<(u32, Pos)>,
    vs: &mut VirtualServer,
    a: &mut Ann,
) {
    let has = |f: &str| flags.iter().any(|(x, _)| x == f);
    let weights_differ = vs
        .real_servers
        .iter()
        .any(|r| r.weight != vs.real_servers[0].weight);
    let given = algo.as_ref().map(|(x, _)| x.as_str());
    let algo_pos = algo.as_ref().map_or(pos, |(_, p)| *p);
    if let Some((t, ppos)) = persistence {
        vs.lb_algo = LbAlgo::Sh;
        let instead = match given {
            Some(x) if x != "sh" => format!(" (instead of lb_algo {x})"),
            _ => String::new(),
        };
        cx.note(
            ppos,
            format!(
                "persistence_timeout {t}: becomes lb_algo sh{instead}: a client keeps its real \
                 server through a hash of its address (Maglev), not a {t} s table; the affinity \
                 has no timeout and holds while the set of healthy servers does not change"
            ),
        );
        a.trail("lb_algo", format!("keepalived: persistence_timeout {t}"));
    } else {
        let eff = given.unwrap_or("wlc");
        let said = match given {
            Some(x) => format!("lb_algo {x}"),
            None => "no lb_algo, so keepalived's default wlc".to_string(),
        };
        let (algo, comment, msg, lossy) = match eff {
            "sh" if has("sh-port") => (
                LbAlgo::Mh,
                "keepalived: sh with sh-port".to_string(),
                Some(format!(
                    "{said} with sh-port: mapped to mh, Maglev over the whole 5-tuple, ports included"
                )),
                false,
            ),
            "sh" => (LbAlgo::Sh, "source hashing, by Maglev".to_string(), None, false),
            "mh" if has("mh-port") => (
                LbAlgo::Mh,
                "keepalived: mh with mh-port".to_string(),
                None,
                false,
            ),
            "mh" => (
                LbAlgo::Sh,
                "keepalived: mh, which hashes the client address only".to_string(),
                Some(format!(
                    "{said}: mapped to sh: IPVS's mh hashes the client's address only, which is \
                     xlb's sh (Maglev over the source address); xlb's mh hashes the 5-tuple, \
                     as IPVS's mh-port does"
                )),
                false,
            ),
            "rr" | "wrr" | "lc" | "wlc" => {
                let how = match eff {
                    "rr" | "wrr" => "from a hash of the flow, not a rotation",
                    _ => "from a hash of the flow, not by the servers' active connections",
                };
                let ignored = if matches!(eff, "rr" | "lc") && weights_differ {
                    format!(" ({eff} ignored them)")
                } else {
                    String::new()
                };
                (
                    LbAlgo::Mh,
                    format!("keepalived: {eff}; Maglev, weights kept"),
                    Some(format!(
                        "{said}: mapped to mh (Maglev) with the weights kept{ignored}: each new \
                         flow's server comes {how}"
                    )),
                    false,
                )
            }
            x => (
                LbAlgo::Mh,
                format!("keepalived: {x}, which has no equivalent"),
                Some(format!(
                    "{said}: no equivalent; mh (Maglev) is used, spreading new flows over the \
                     healthy servers by weight"
                )),
                true,
            ),
        };
        vs.lb_algo = algo;
        a.trail("lb_algo", comment);
        match (msg, lossy) {
            (Some(m), true) => cx.dropped(algo_pos, m),
            (Some(m), false) => cx.note(algo_pos, m),
            (None, _) => {}
        }
    }
    for (f, p) in &flags {
        match f.as_str() {
            "sh-port" | "mh-port" => {}
            "sh-fallback" | "mh-fallback" => {}
            "ops" => cx.dropped(
                *p,
                "ops: one-packet scheduling is not supported: a UDP flow keeps its server until it is idle",
            ),
            _ => cx.dropped(*p, format!("{f}: not supported")),
        }
    }
}
