//! `global_defs`: what applies to every instance, and the connection sync.

use super::{
    lexer::Pos,
    report::{decimal, is_digits, show, Cx, EMAIL, GARP, STRICT, USER},
    tree::Node,
};
use crate::config::SyncDaemon;

/// `global_defs`, which applies to every instance.
#[derive(Debug, Default)]
pub(super) struct Globals {
    pub(super) router_id: Option<String>,
    pub(super) router_id_key: &'static str,
    pub(super) version: Option<u8>,
    pub(super) garp_repeat: Option<u32>,
    pub(super) garp_delay: Option<f64>,
    pub(super) default_interface: Option<String>,
    /// lvs_timeouts: tcp, tcpfin, udp.
    pub(super) timeouts: [Option<f64>; 3],
    pub(super) vrrp_strict: bool,
    /// `lvs_sync_daemon`, with where it was written.
    pub(super) sync: Option<(Pos, SyncDaemon)>,
}

pub(super) fn global_defs(cx: &mut Cx, n: &Node, g: &mut Globals) {
    for c in cx.block(n, 0) {
        match c.name() {
            k @ ("router_id" | "lvs_id") => {
                if let Some(v) = cx.text(c) {
                    g.router_id = Some(v);
                    g.router_id_key = if k == "router_id" {
                        "router_id"
                    } else {
                        "lvs_id"
                    };
                }
            }
            "vrrp_version" => {
                if let Some(v) = cx.uint(c, 2, 3) {
                    g.version = Some(v as u8);
                }
            }
            "vrrp_garp_master_repeat" => {
                if let Some(v) = cx.uint(c, 0, 100) {
                    g.garp_repeat = Some(v);
                }
            }
            "vrrp_garp_master_delay" => {
                if let Some(v) = cx.secs(c, 0.0, 3600.0) {
                    g.garp_delay = Some(v);
                }
            }
            "default_interface" => {
                if let Some(v) = cx.text(c) {
                    g.default_interface = Some(v);
                }
            }
            "lvs_timeouts" => lvs_timeouts(cx, c, g),
            "vrrp_garp_interval" | "vrrp_gna_interval" => garp_interval(cx, c),
            "vrrp_garp_master_refresh"
            | "vrrp_garp_master_refresh_repeat"
            | "vrrp_garp_lower_prio_delay"
            | "vrrp_garp_lower_prio_repeat"
            | "vrrp_min_garp"
            | "vrrp_garp_extra_if" => cx.unsupported(c, GARP),
            "vrrp_skip_check_adv_addr" => skip_check_adv_addr(cx, c),
            "vrrp_strict" => {
                g.vrrp_strict = true;
                cx.unsupported(c, STRICT);
            }
            "notification_email"
            | "notification_email_from"
            | "smtp_server"
            | "smtp_helo_name"
            | "smtp_connect_timeout"
            | "smtp_alert"
            | "smtp_alert_vrrp"
            | "smtp_alert_checker"
            | "no_email_faults" => cx.unsupported(c, EMAIL),
            "lvs_sync_daemon" => g.sync = lvs_sync_daemon(cx, c).map(|s| (c.pos(), s)),
            "script_user" => cx.unsupported(c, USER),
            "enable_script_security" => {
                cx.unsupported(c, "not carried over: xlb does not check script permissions")
            }
            _ => cx.unknown(c, "global_defs"),
        }
    }
}

/// A gap between gratuitous ARPs (or IPv6 neighbour adverts): 0, which
/// distributions' sample files set, is what xlb does.
pub(super) fn garp_interval(cx: &mut Cx, n: &Node) {
    match n.args.first().and_then(|w| decimal(&w.text)) {
        Some(v) if v == 0.0 && n.args.len() == 1 && n.block.is_none() => cx.note(
            n.pos(),
            format!(
                "{}: xlb sends its gratuitous ARPs without a gap, as this asks",
                show(n)
            ),
        ),
        _ => cx.unsupported(n, GARP),
    }
}

/// xlb does not compare the addresses an advert lists with its own.
pub(super) fn skip_check_adv_addr(cx: &mut Cx, n: &Node) {
    match cx.flag(n) {
        Some(true) => cx.note(
            n.pos(),
            format!(
                "{}: xlb does not check the addresses listed in adverts anyway",
                n.name()
            ),
        ),
        Some(false) => cx.unsupported(
            n,
            "not supported: xlb does not check the addresses listed in adverts",
        ),
        None => {}
    }
}

pub(super) fn lvs_timeouts(cx: &mut Cx, n: &Node, g: &mut Globals) {
    let day = 86400.0;
    let mut it = n.args.iter();
    while let Some(w) = it.next() {
        let (i, max) = match w.text.as_str() {
            "tcp" => (0, 7.0 * day),
            "tcpfin" => (1, day),
            "udp" => (2, day),
            _ => {
                cx.bad(n, w, "not tcp, tcpfin or udp");
                continue;
            }
        };
        match it.next().map(|v| (v, decimal(&v.text))) {
            Some((_, Some(v))) if (1.0..=max).contains(&v) => g.timeouts[i] = Some(v),
            Some((v, _)) => cx.bad(n, v, &format!("not a number of seconds in 1-{max}")),
            None => cx.bad(n, w, "the value is missing"),
        }
    }
}

/// `lvs_sync_daemon <interface> <instance> [id N] [maxlen N] [port N]
/// [ttl N] [group ADDR]`; the instance is checked once instances are read.
pub(super) fn lvs_sync_daemon(cx: &mut Cx, n: &Node) -> Option<SyncDaemon> {
    let [iface, inst, rest @ ..] = n.args.as_slice() else {
        cx.dropped(
            n.pos(),
            format!(
                "{}: needs an interface and a VRRP instance; ignored",
                show(n)
            ),
        );
        return None;
    };
    let mut s = sync_daemon(iface.text.clone(), inst.text.clone());
    let mut it = rest.iter();
    while let Some(k) = it.next() {
        let Some(v) = it.next() else {
            cx.bad(n, k, "the value is missing");
            break;
        };
        match k.text.as_str() {
            "id" => match v.text.parse::<u8>() {
                Ok(id) if is_digits(&v.text) => s.id = id,
                _ => cx.bad(n, v, "not a sync id 0-255"),
            },
            "port" => s.port = cx.port(n, v).unwrap_or(s.port),
            "group" => match cx.addr(n, v) {
                Some(a) if a.is_multicast() => s.group = a,
                Some(_) => cx.bad(n, v, "not a multicast group"),
                None => {}
            },
            "maxlen" => cx.note(
                k.pos,
                "lvs_sync_daemon maxlen: not carried over: a sync message is at most 1,352 bytes",
            ),
            "ttl" => cx.note(
                k.pos,
                "lvs_sync_daemon ttl: not carried over: sync messages stay on the link (TTL 1)",
            ),
            _ => cx.bad(n, k, "not id, maxlen, port, ttl or group"),
        }
    }
    Some(s)
}

/// The sync on `interface`, following `instance`, with our defaults (which
/// are keepalived's).
pub(super) fn sync_daemon(interface: String, vrrp_instance: String) -> SyncDaemon {
    SyncDaemon {
        interface,
        vrrp_instance,
        ..SyncDaemon::default()
    }
}
