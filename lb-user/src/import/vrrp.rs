//! `vrrp_instance` and `vrrp_sync_group` blocks, and each instance as it
//! will be written once the global defaults apply.

use std::net::Ipv4Addr;

use super::{
    ann::Ann,
    global::{garp_interval, skip_check_adv_addr, Globals},
    lexer::Pos,
    report::{shorten, Cx, EMAIL, GARP, STRICT},
    tree::Node,
};
use crate::config::{parse_cidr, AuthType, Authentication, VrrpInstance, VrrpState};

/// The weight and `reverse` a script is tracked with.
pub(super) type Want = (i32, bool);

/// A `track_script` entry.
#[derive(Debug, Clone)]
pub(super) struct KTrack {
    pub(super) name: String,
    pub(super) weight: Option<i32>,
    pub(super) reverse: bool,
    pub(super) pos: Pos,
}

/// A `virtual_ipaddress` entry.
#[derive(Debug, Clone)]
pub(super) struct KVip {
    pub(super) text: String,
    pub(super) addr: Ipv4Addr,
    pub(super) dev: Option<(String, Pos)>,
    /// Options not carried over, as written.
    pub(super) lost: Vec<String>,
    pub(super) excluded: bool,
    pub(super) pos: Pos,
}

/// An `authentication` block: auth_type, auth_pass and where it is.
#[derive(Debug)]
pub(super) struct KAuth {
    pub(super) ty: Option<String>,
    pub(super) pass: Option<(String, Pos)>,
    pub(super) pos: Pos,
}

/// A `vrrp_instance`, before the global defaults apply.
#[derive(Debug)]
pub(super) struct KInstance {
    pub(super) name: String,
    pub(super) pos: Pos,
    pub(super) i: VrrpInstance,
    pub(super) ann: Ann,
    pub(super) interface: Option<String>,
    pub(super) state: Option<VrrpState>,
    pub(super) vrid: Option<u32>,
    pub(super) priority: Option<u32>,
    pub(super) advert: Option<(f64, Pos)>,
    pub(super) version: Option<u8>,
    pub(super) auth: Option<KAuth>,
    pub(super) strict: Option<bool>,
    pub(super) garp_repeat: Option<u32>,
    pub(super) garp_delay: Option<f64>,
    pub(super) vips: Vec<KVip>,
    pub(super) tracks: Vec<KTrack>,
    pub(super) sync_group: Option<(String, Vec<String>)>,
    /// The old `lvs_sync_daemon_interface`: the sync follows this instance.
    pub(super) sync_iface: Option<(Pos, String)>,
}

pub(super) fn vrrp_instance(cx: &mut Cx, n: &Node) -> Option<KInstance> {
    let Some(name) = n.args.first().map(|w| w.text.clone()) else {
        cx.dropped(n.pos(), "vrrp_instance without a name: ignored");
        return None;
    };
    let mut k = KInstance {
        name: name.clone(),
        pos: n.pos(),
        i: VrrpInstance::default(),
        ann: Ann::default(),
        interface: None,
        state: None,
        vrid: None,
        priority: None,
        advert: None,
        version: None,
        auth: None,
        strict: None,
        garp_repeat: None,
        garp_delay: None,
        vips: vec![],
        tracks: vec![],
        sync_group: None,
        sync_iface: None,
    };
    k.i.name = name;
    for c in cx.block(n, 1) {
        let i = &mut k.i;
        match c.name() {
            "state" => match cx.value(c) {
                Some(w) if w.text.eq_ignore_ascii_case("MASTER") => k.state = Some(VrrpState::Master),
                Some(w) if w.text.eq_ignore_ascii_case("BACKUP") => k.state = Some(VrrpState::Backup),
                Some(w) => cx.bad(c, w, "not MASTER or BACKUP"),
                None => {}
            },
            "interface" => k.interface = cx.text(c).or(k.interface.take()),
            "virtual_router_id" => k.vrid = cx.uint(c, 1, 255).or(k.vrid),
            "priority" => k.priority = cx.uint(c, 1, 255).or(k.priority),
            "advert_int" => {
                if let Some(v) = cx.secs(c, 0.01, 255.0) {
                    k.advert = Some((v, c.pos()));
                }
            }
            "version" => {
                if let Some(v) = cx.uint(c, 2, 3) {
                    k.version = Some(v as u8);
                }
            }
            "authentication" => {
                let mut ty = None;
                let mut pass = None;
                for a in cx.block(c, 0) {
                    match a.name() {
                        "auth_type" => ty = cx.text(a).or(ty),
                        "auth_pass" => {
                            if let Some(w) = cx.value(a) {
                                pass = Some((w.text.clone(), w.pos));
                            }
                        }
                        _ => cx.unknown(a, "authentication"),
                    }
                }
                k.auth = Some(KAuth {
                    ty,
                    pass,
                    pos: c.pos(),
                });
            }
            "nopreempt" => {
                if cx.args(c, 0, 0).is_some() {
                    i.preempt = false;
                    k.ann.trail("preempt", "keepalived: nopreempt");
                }
            }
            "preempt" => {
                if cx.args(c, 0, 0).is_some() {
                    i.preempt = true;
                    k.ann.show("preempt");
                }
            }
            "preempt_delay" => {
                if let Some(v) = cx.secs(c, 0.0, 3600.0) {
                    i.preempt_delay = v;
                    k.ann.show("preempt_delay");
                }
            }
            "unicast_src_ip" => {
                if let Some(w) = cx.value(c) {
                    if let Some(a) = cx.addr(c, w) {
                        i.unicast_src_ip = Some(a);
                    }
                }
            }
            "unicast_peer" => {
                for p in cx.block(c, 0) {
                    if let Some(a) = cx.addr(c, &p.key) {
                        if i.unicast_peers.contains(&a) {
                            cx.dropped(p.pos(), format!("unicast_peer {a}: listed twice"));
                        } else {
                            i.unicast_peers.push(a);
                        }
                    }
                    if !p.args.is_empty() {
                        cx.dropped(
                            p.args[0].pos,
                            format!(
                                "unicast_peer {}: {}: not supported (adverts are checked for TTL 255)",
                                p.name(),
                                shorten(&p.args_text())
                            ),
                        );
                    }
                    if p.block.is_some() {
                        cx.dropped(p.pos(), format!("unicast_peer {}: unexpected block", p.name()));
                    }
                }
            }
            k2 @ ("virtual_ipaddress" | "virtual_ipaddress_excluded") => {
                let excluded = k2 == "virtual_ipaddress_excluded";
                for e in cx.block(c, 0) {
                    if let Some(v) = vip_entry(cx, e, excluded) {
                        if k.vips.iter().any(|x| x.addr == v.addr) {
                            cx.dropped(e.pos(), format!("{k2} {}: listed twice", v.text));
                        } else {
                            k.vips.push(v);
                        }
                    }
                }
            }
            "track_script" => {
                for t in cx.block(c, 0) {
                    if let Some(t) = track_entry(cx, t) {
                        k.tracks.push(t);
                    }
                }
            }
            slot @ ("notify_master" | "notify_backup" | "notify_fault" | "notify_stop"
            | "notify") => {
                let Some(cmd) = cx.script(c) else { continue };
                let field = match slot {
                    "notify_master" => &mut i.notify_master,
                    "notify_backup" => &mut i.notify_backup,
                    "notify_fault" => &mut i.notify_fault,
                    "notify_stop" => &mut i.notify_stop,
                    _ => &mut i.notify,
                };
                if field.is_some() {
                    cx.dropped(
                        c.pos(),
                        format!("{slot}: given twice; the first is kept, as keepalived does"),
                    );
                } else {
                    *field = Some(cmd);
                }
            }
            "garp_master_repeat" => k.garp_repeat = cx.uint(c, 0, 100).or(k.garp_repeat),
            "garp_master_delay" => k.garp_delay = cx.secs(c, 0.0, 3600.0).or(k.garp_delay),
            "garp_interval" | "gna_interval" => garp_interval(cx, c),
            "garp_master_refresh"
            | "garp_master_refresh_repeat"
            | "garp_lower_prio_delay"
            | "garp_lower_prio_repeat" => cx.unsupported(c, GARP),
            "skip_check_adv_addr" => skip_check_adv_addr(cx, c),
            "smtp_alert" => cx.unsupported(c, EMAIL),
            "strict_mode" => {
                k.strict = cx.flag(c).or(k.strict);
                if k.strict == Some(true) {
                    cx.unsupported(c, STRICT);
                }
            }
            "lvs_sync_daemon_interface" => {
                k.sync_iface = cx.text(c).map(|i| (c.pos(), i)).or(k.sync_iface.take())
            }
            "mcast_src_ip" => cx.unsupported(
                c,
                "not supported: adverts leave from the interface's own address (unicast_src_ip is for unicast)",
            ),
            "use_vmac" | "vmac_xmit_base" | "use_vmac_addr" => cx.unsupported(
                c,
                "not supported: the VIPs keep the interface's MAC address, announced by gratuitous ARPs",
            ),
            "virtual_routes" | "virtual_rules" => cx.unsupported(
                c,
                "not supported: routes and rules are not managed; a notify_master script can add them",
            ),
            "track_interface" | "track_file" | "track_process" | "track_bfd" => cx.unsupported(
                c,
                "not supported: only track_script (and track_virtual_server) move the priority; \
                 a vrrp_script can test the same thing",
            ),
            "dont_track_primary" => {
                cx.unsupported(c, "not carried over: xlb does not track the interface's link")
            }
            "notify_deleted" | "notify_master_rx_lower_pri" | "notify_priority_changes" => {
                cx.unsupported(c, "not supported: see notify for the states that run scripts")
            }
            _ => cx.unknown(c, "vrrp_instance"),
        }
    }
    Some(k)
}

pub(super) fn vip_entry(cx: &mut Cx, e: &Node, excluded: bool) -> Option<KVip> {
    let what = if excluded {
        "virtual_ipaddress_excluded"
    } else {
        "virtual_ipaddress"
    };
    if e.block.is_some() {
        cx.dropped(
            e.pos(),
            format!("{what} {}: unexpected block; ignored", e.name()),
        );
    }
    let text = e.name().to_string();
    let addr = match parse_cidr(&text) {
        Some((a, _)) => a,
        None => {
            let why = if text.contains(':') {
                "IPv6 is not supported"
            } else {
                "not an IPv4 address or CIDR"
            };
            cx.dropped(
                e.pos(),
                format!("{what} {}: {why}; ignored", shorten(&text)),
            );
            return None;
        }
    };
    let mut v = KVip {
        text: text.clone(),
        addr,
        dev: None,
        lost: vec![],
        excluded,
        pos: e.pos(),
    };
    let mut it = e.args.iter();
    while let Some(o) = it.next() {
        let with_value = matches!(
            o.text.as_str(),
            "brd"
                | "broadcast"
                | "dev"
                | "scope"
                | "label"
                | "peer"
                | "track_group"
                | "preferred_lft"
        );
        let val = if with_value { it.next() } else { None };
        if with_value && val.is_none() {
            cx.dropped(
                o.pos,
                format!("{what} {text}: {} has no value; ignored", o.text),
            );
            continue;
        }
        let shown = match val {
            Some(v) => format!("{} {}", o.text, v.text),
            None => o.text.clone(),
        };
        let why = match o.text.as_str() {
            "dev" => {
                v.dev = val.map(|w| (w.text.clone(), o.pos));
                continue;
            }
            "scope" if val.is_some_and(|w| w.text == "global") => continue,
            "brd" | "broadcast" => "no broadcast address is set",
            "label" => "xlb sets no address labels",
            "scope" => "addresses are added with scope global",
            "peer" => "point-to-point addresses are not supported",
            "home" | "-nodad" | "nodad" | "noprefixroute" | "autojoin" | "preferred_lft" => {
                "address flags are not supported"
            }
            "no_track" | "track_group" => "xlb does not track the VIPs' interfaces",
            _ => "unknown option",
        };
        cx.dropped(o.pos, format!("{what} {text}: {}: {why}", shorten(&shown)));
        v.lost.push(shorten(&shown));
    }
    Some(v)
}

pub(super) fn track_entry(cx: &mut Cx, t: &Node) -> Option<KTrack> {
    if t.block.is_some() {
        cx.dropped(
            t.pos(),
            format!("track_script {}: unexpected block; ignored", t.name()),
        );
    }
    let mut k = KTrack {
        name: t.name().to_string(),
        weight: None,
        reverse: false,
        pos: t.pos(),
    };
    let mut it = t.args.iter().peekable();
    while let Some(w) = it.next() {
        match w.text.as_str() {
            "weight" => match it.next() {
                Some(v) => {
                    if let Some(x) = cx.int(v, t, -253, 253) {
                        k.weight = Some(x);
                    }
                    if it.peek().is_some_and(|r| r.text == "reverse") {
                        it.next();
                        k.reverse = true;
                    }
                }
                None => cx.bad(t, w, "the weight is missing"),
            },
            _ => cx.bad(t, w, "not `weight N`"),
        }
    }
    Some(k)
}

/// A `vrrp_sync_group`.
#[derive(Debug)]
pub(super) struct KGroup {
    pub(super) name: String,
    pub(super) members: Vec<String>,
}

pub(super) fn sync_group(cx: &mut Cx, n: &Node) -> Option<KGroup> {
    let name = n.args.first().map(|w| w.text.clone()).unwrap_or_default();
    let mut members = vec![];
    for c in cx.block(n, 1) {
        match c.name() {
            "group" => {
                for m in cx.block(c, 0) {
                    members.push(m.name().to_string());
                    members.extend(m.args.iter().map(|w| w.text.clone()));
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => cx
                .unsupported(
                    c,
                    "a sync group's script is not carried over (there is no group); \
                     each instance's own notify scripts still run",
                ),
            "smtp_alert" => cx.unsupported(c, EMAIL),
            "track_script" | "track_interface" | "track_file" | "track_process" | "track_bfd" => {
                cx.unsupported(
                    c,
                    "a sync group's tracking is not carried over; track the script in each instance",
                )
            }
            _ => cx.unknown(c, "vrrp_sync_group"),
        }
    }
    cx.dropped(
        n.pos(),
        format!(
            "vrrp_sync_group {name} ({}): xlb runs each VRRP instance on its own, so a fault in \
             one no longer takes the others along; tracking the same vrrp_script in each \
             makes them move together",
            members.join(", ")
        ),
    );
    Some(KGroup { name, members })
}

/// An instance's own value, else the one `global_defs` sets as
/// `vrrp_<key>` (annotated as such), else the default already in `slot`.
fn own_or_global<T>(ann: &mut Ann, key: &str, slot: &mut T, own: Option<T>, global: Option<T>) {
    match (own, global) {
        (Some(v), _) => {
            *slot = v;
            ann.show(key);
        }
        (None, Some(v)) => {
            *slot = v;
            ann.trail(key, format!("from global_defs vrrp_{key}"));
        }
        _ => {}
    }
}

/// The instance as it will be written: global defaults applied, checked
/// against those already accepted.
pub(super) fn finish_instance(
    cx: &mut Cx,
    g: &Globals,
    mut k: KInstance,
    accepted: &[VrrpInstance],
) -> Option<(VrrpInstance, Ann, Vec<KTrack>, Vec<Ipv4Addr>)> {
    let name = k.name.clone();
    let Some(vrid) = k.vrid else {
        cx.dropped(
            k.pos,
            format!("vrrp_instance {name} has no virtual_router_id (keepalived refuses it too): not carried over"),
        );
        return None;
    };
    let i = &mut k.i;
    let ann = &mut k.ann;
    i.virtual_router_id = vrid;
    ann.show("virtual_router_id");
    match (&k.interface, &g.default_interface) {
        (Some(x), _) => {
            i.interface = Some(x.clone());
            ann.show("interface");
        }
        (None, Some(d)) => {
            i.interface = Some(d.clone());
            ann.trail("interface", "from global_defs default_interface");
        }
        (None, None) => {
            i.interface = Some("eth0".into());
            ann.trail("interface", "keepalived's default");
            cx.note(
                k.pos,
                format!("vrrp_instance {name} has no interface: keepalived's default, eth0"),
            );
        }
    }
    let iface = i.interface.clone().unwrap_or_default();
    if accepted.iter().any(|x| x.name == name) {
        cx.dropped(
            k.pos,
            format!("vrrp_instance {name}: a second instance of that name; not carried over"),
        );
        return None;
    }
    if let Some(x) = accepted.iter().find(|x| {
        x.virtual_router_id == vrid && x.interface.as_deref().unwrap_or_default() == iface
    }) {
        cx.dropped(
            k.pos,
            format!(
                "vrrp_instance {name}: virtual_router_id {vrid} is already used on {iface} by {}; not carried over",
                x.name
            ),
        );
        return None;
    }
    if let Some(s) = k.state {
        i.state = s;
        ann.show("state");
    }
    match k.priority {
        Some(p) => {
            i.priority = p;
            ann.show("priority");
        }
        None if k.state == Some(VrrpState::Master) => {
            i.priority = 255;
            ann.trail(
                "priority",
                "keepalived's default for state MASTER: the address owner",
            );
        }
        None => {
            i.priority = 100;
            ann.trail("priority", "keepalived's default");
        }
    }
    if k.state.is_none() && i.priority == 255 {
        i.state = VrrpState::Master;
        ann.trail("state", "keepalived's default for priority 255");
    }
    match k.version {
        Some(v) => {
            i.version = v;
            ann.show("version");
        }
        None => {
            if let Some(v) = g.version {
                i.version = v;
                ann.trail("version", "from global_defs vrrp_version");
            }
        }
    }
    if let Some((v, pos)) = k.advert {
        let (lo, hi, step) = if i.version == 2 {
            (1.0, 255.0, 1.0)
        } else {
            (0.01, 40.95, 0.01)
        };
        let r = ((v / step).round() * step).clamp(lo, hi);
        // Printed with at most two decimals, as parsed back.
        let r = format!("{r:.2}").parse::<f64>().unwrap_or(lo);
        if r != v {
            cx.note(
                pos,
                format!(
                    "advert_int {v}: VRRPv{} needs {}; {r} is used, as keepalived rounds it",
                    i.version,
                    if i.version == 2 {
                        "whole seconds 1-255"
                    } else {
                        "0.01-40.95 s in steps of 0.01"
                    }
                ),
            );
            ann.trail("advert_int", format!("keepalived: advert_int {v}"));
        } else {
            ann.show("advert_int");
        }
        i.advert_int = r;
    }
    if let Some(KAuth { ty, pass, pos }) = k.auth.take() {
        let ty_ok = ty.as_deref().map(|t| t.eq_ignore_ascii_case("PASS"));
        let lost = |cx: &mut Cx, ann: &mut Ann, pos: Pos, why: String| {
            cx.dropped(pos, format!("authentication: {why}; not carried over"));
            ann.above(
                "",
                format!("keepalived's authentication is not carried over: {why}."),
            );
        };
        let strict = k.strict.unwrap_or(g.vrrp_strict);
        match (ty_ok, pass) {
            _ if strict => lost(
                cx,
                ann,
                pos,
                "keepalived ignores it in strict mode (vrrp_strict), so its adverts had none"
                    .into(),
            ),
            _ if i.version == 3 => lost(
                cx,
                ann,
                pos,
                "VRRPv3 has none (keepalived ignores it too)".into(),
            ),
            (None, _) => lost(cx, ann, pos, "auth_type is missing".into()),
            (Some(false), _) => lost(
                cx,
                ann,
                pos,
                format!(
                    "auth_type {} is not supported (PASS only)",
                    ty.unwrap_or_default()
                ),
            ),
            (Some(true), None) => lost(cx, ann, pos, "auth_pass is missing".into()),
            (Some(true), Some((p, ppos))) => {
                let mut p = p;
                if p.is_empty() {
                    lost(cx, ann, ppos, "auth_pass is empty".into());
                } else {
                    if p.len() > 8 {
                        let mut cut = String::new();
                        for ch in p.chars() {
                            if cut.len() + ch.len_utf8() > 8 {
                                break;
                            }
                            cut.push(ch);
                        }
                        cx.note(
                            ppos,
                            format!(
                                "auth_pass is longer than 8 characters: truncated to {cut:?}, as keepalived does"
                            ),
                        );
                        ann.trail(
                            "authentication",
                            "auth_pass truncated to 8 characters, as keepalived does",
                        );
                        p = cut;
                    }
                    i.authentication = Some(Authentication {
                        auth_type: AuthType::Pass,
                        auth_pass: p,
                    });
                }
            }
        }
    }
    own_or_global(
        ann,
        "garp_master_repeat",
        &mut i.garp_master_repeat,
        k.garp_repeat,
        g.garp_repeat,
    );
    own_or_global(
        ann,
        "garp_master_delay",
        &mut i.garp_master_delay,
        k.garp_delay,
        g.garp_delay,
    );
    let mut addrs = vec![];
    for v in &mut k.vips {
        let j = i.virtual_ipaddress.len();
        let path = format!("virtual_ipaddress[{j}]");
        if let Some((dev, pos)) = v.dev.clone() {
            if dev != iface {
                cx.dropped(
                    pos,
                    format!(
                        "virtual_ipaddress {}: dev {dev}: xlb adds an instance's VIPs to its interface, {iface}",
                        v.text
                    ),
                );
                v.lost.insert(0, format!("dev {dev}"));
            }
        }
        if !v.lost.is_empty() {
            ann.trail(&path, format!("not kept: {}", v.lost.join(", ")));
        }
        if v.excluded {
            cx.note(
                v.pos,
                format!(
                    "virtual_ipaddress_excluded {}: held like the other VIPs, and now listed in the adverts too",
                    v.text
                ),
            );
            ann.trail(&path, "keepalived: virtual_ipaddress_excluded");
        }
        i.virtual_ipaddress.push(v.text.clone());
        addrs.push(v.addr);
    }
    if k.strict.unwrap_or(g.vrrp_strict) && !i.unicast_peers.is_empty() {
        cx.note(
            k.pos,
            format!(
                "vrrp_instance {name}: keepalived refuses unicast peers in strict mode on an \
                 interface with multicast; they are kept here"
            ),
        );
    }
    if let Some((gname, others)) = &k.sync_group {
        let with = if others.is_empty() {
            String::new()
        } else {
            format!(" with {}", others.join(", "))
        };
        ann.above(
            "",
            format!("keepalived: in vrrp_sync_group {gname}{with}; here it fails over on its own."),
        );
    }
    Some((k.i, k.ann, k.tracks, addrs))
}
