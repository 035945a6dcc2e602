//! keepalived statements → our [`Config`], with the comments the YAML will
//! carry ([`Ann`]) and report items. Every statement is either translated or
//! reported; nothing is dropped silently.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use serde::de::DeserializeOwned;

use super::{
    lexer::{Pos, Word},
    tree::{join, Node},
    Item, Kind, Options,
};
use crate::config::{
    parse_cidr, AuthType, Authentication, Config, DnsCheck, Endpoint, Global, HttpGet, LbAlgo,
    MiscCheck, Protocol, RealServer, Snat, StatusCodes, SyncDaemon, TcpCheck, VirtualServer,
    VrrpInstance, VrrpScript, VrrpState,
};

/// Comments and shown keys, by key path (`vrrp_instances[0].priority`).
/// Paths are relative while an item is built, then moved under its place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ann {
    /// Comment lines above a key or a list item.
    pub above: BTreeMap<String, Vec<String>>,
    /// A comment at the end of a key's line.
    pub trail: BTreeMap<String, Vec<String>>,
    /// Keys written even when they hold the default: keepalived's file had them.
    pub shown: BTreeSet<String>,
}

/// `prefix` + `rel`: `a[0]` + `b` → `a[0].b`; `a` + `[1]` → `a[1]`.
pub fn sub(prefix: &str, rel: &str) -> String {
    if rel.is_empty() {
        prefix.to_string()
    } else if prefix.is_empty() {
        rel.to_string()
    } else if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}.{rel}")
    }
}

impl Ann {
    pub fn above(&mut self, path: &str, text: impl Into<String>) {
        self.above
            .entry(path.to_string())
            .or_default()
            .push(text.into());
    }

    pub fn trail(&mut self, path: &str, text: impl Into<String>) {
        self.trail
            .entry(path.to_string())
            .or_default()
            .push(text.into());
    }

    pub fn show(&mut self, path: &str) {
        self.shown.insert(path.to_string());
    }

    /// Whether `path` has anything to say, so the emitter writes it.
    pub fn has(&self, path: &str) -> bool {
        self.shown.contains(path) || self.above.contains_key(path) || self.trail.contains_key(path)
    }

    /// Moves `other` under `prefix`.
    pub fn merge(&mut self, prefix: &str, other: Ann) {
        for (k, v) in other.above {
            self.above.entry(sub(prefix, &k)).or_default().extend(v);
        }
        for (k, v) in other.trail {
            self.trail.entry(sub(prefix, &k)).or_default().extend(v);
        }
        for k in other.shown {
            self.shown.insert(sub(prefix, &k));
        }
    }
}

/// The translation.
pub struct Out {
    pub config: Config,
    pub ann: Ann,
    /// Key paths deliberately left invalid for the operator to fill in.
    pub placeholders: Vec<String>,
}

/// Our defaults, as serde fills them in, so the emitter can leave them out.
pub mod defaults {
    use super::*;

    fn of<T: DeserializeOwned>(yaml: &str) -> T {
        // The inputs are constants that the tests parse.
        serde_yaml::from_str(yaml).expect("default YAML of a config struct")
    }

    pub fn global() -> Global {
        of("interface: x")
    }
    pub fn script() -> VrrpScript {
        of("script: x")
    }
    pub fn instance() -> VrrpInstance {
        of("{name: x, virtual_router_id: 1, priority: 1}")
    }
    pub fn server() -> VirtualServer {
        of("{name: x, vip: 0.0.0.0, port: 1, snat: {addresses: []}, real_servers: []}")
    }
    pub fn snat() -> Snat {
        of("addresses: []")
    }
    pub fn real() -> RealServer {
        of("{address: 0.0.0.0, port: 1}")
    }
    pub fn tcp() -> TcpCheck {
        of("{}")
    }
    pub fn http() -> HttpGet {
        of("{}")
    }
    pub fn dns() -> DnsCheck {
        of("{}")
    }
    pub fn misc() -> MiscCheck {
        of("misc_path: x")
    }
    pub fn sync() -> SyncDaemon {
        of("{interface: x, vrrp_instance: x}")
    }
}

const STRICT: &str = "not carried over: xlb has no strict mode (it accepts unicast peers and \
                      authentication, and installs no firewall rules against the VIPs: they are served)";
const EMAIL: &str = "e-mail notification is not supported; a notify script can send mail";
const GARP: &str = "not supported: xlb sends gratuitous ARPs on becoming MASTER only \
                    (garp_master_repeat, garp_master_delay)";
const USER: &str = "not carried over: scripts run as the agent's user";

/// Report items and argument checks.
struct Cx<'a> {
    items: &'a mut Vec<Item>,
}

/// A statement as written, shortened for messages.
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

fn show(n: &Node) -> String {
    let mut s = n.name().to_string();
    if !n.args.is_empty() {
        s.push(' ');
        s.push_str(&n.args_text());
    }
    shorten(&s)
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}…")
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `12`, `1.5`, `.5`: keepalived's decimal numbers (no sign, no exponent).
fn decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = (is_digits(int) || int.is_empty())
        && (is_digits(frac) || frac.is_empty())
        && !(int.is_empty() && frac.is_empty());
    if !ok {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

impl Cx<'_> {
    fn push(&mut self, pos: Pos, kind: Kind, msg: String) {
        self.items.push(Item::new(Some(pos), kind, msg));
    }

    fn note(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(pos, Kind::Note, msg.into());
    }

    fn dropped(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(pos, Kind::Dropped, msg.into());
    }

    /// `n` is not carried over, for `why`.
    fn unsupported(&mut self, n: &Node, why: &str) {
        self.dropped(n.pos(), format!("{}: {why}", show(n)));
    }

    fn unknown(&mut self, n: &Node, section: &str) {
        let what = if n.name() == "{" {
            "a block that follows no keyword".to_string()
        } else {
            show(n)
        };
        self.dropped(
            n.pos(),
            format!("{what}: not supported in {section}; ignored"),
        );
    }

    /// The arguments of a statement taking `min..=max` of them and no block.
    fn args<'n>(&mut self, n: &'n Node, min: usize, max: usize) -> Option<&'n [Word]> {
        if n.block.is_some() {
            self.dropped(
                n.pos(),
                format!("{}: takes no block; the block is ignored", n.name()),
            );
        }
        if n.args.len() < min {
            self.dropped(
                n.pos(),
                format!("{}: a value is missing; ignored", n.name()),
            );
            return None;
        }
        if n.args.len() > max {
            self.dropped(
                n.args[max].pos,
                format!(
                    "{}: extra words ignored: {}",
                    n.name(),
                    shorten(&join(&n.args[max..]))
                ),
            );
            return Some(&n.args[..max]);
        }
        Some(&n.args)
    }

    fn value<'n>(&mut self, n: &'n Node) -> Option<&'n Word> {
        self.args(n, 1, 1).map(|a| &a[0])
    }

    fn text(&mut self, n: &Node) -> Option<String> {
        self.value(n).map(|w| w.text.clone())
    }

    fn bad(&mut self, n: &Node, w: &Word, want: &str) {
        self.dropped(
            w.pos,
            format!("{} {}: {want}; ignored", n.name(), shorten(&w.text)),
        );
    }

    fn uint(&mut self, n: &Node, lo: u32, hi: u32) -> Option<u32> {
        let w = self.value(n)?;
        match w.text.parse::<u32>() {
            Ok(v) if is_digits(&w.text) && (lo..=hi).contains(&v) => Some(v),
            _ => {
                self.bad(n, w, &format!("not a whole number in {lo}-{hi}"));
                None
            }
        }
    }

    fn int(&mut self, w: &Word, n: &Node, lo: i32, hi: i32) -> Option<i32> {
        let digits = w.text.strip_prefix(['-', '+']).unwrap_or(&w.text);
        match w.text.parse::<i32>() {
            Ok(v) if is_digits(digits) && (lo..=hi).contains(&v) => Some(v),
            _ => {
                self.bad(n, w, &format!("not a whole number in {lo}-{hi}"));
                None
            }
        }
    }

    fn secs(&mut self, n: &Node, lo: f64, hi: f64) -> Option<f64> {
        let w = self.value(n)?;
        match decimal(&w.text) {
            Some(v) if (lo..=hi).contains(&v) => Some(v),
            _ => {
                self.bad(n, w, &format!("not a number of seconds in {lo}-{hi}"));
                None
            }
        }
    }

    /// A flag, bare or with a yes/no value.
    fn flag(&mut self, n: &Node) -> Option<bool> {
        let a = self.args(n, 0, 1)?;
        let Some(w) = a.first() else {
            return Some(true);
        };
        match w.text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => {
                self.bad(n, w, "not true or false");
                None
            }
        }
    }

    fn addr(&mut self, n: &Node, w: &Word) -> Option<Ipv4Addr> {
        match w.text.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) if w.text.contains(':') => {
                self.bad(n, w, "IPv6 is not supported");
                None
            }
            Err(_) => {
                self.bad(n, w, "not an IPv4 address");
                None
            }
        }
    }

    fn port(&mut self, n: &Node, w: &Word) -> Option<u16> {
        match w.text.parse::<u16>() {
            Ok(p) if p > 0 && is_digits(&w.text) => Some(p),
            _ => {
                self.bad(n, w, "not a port 1-65535");
                None
            }
        }
    }

    /// The children of a statement that takes a block (and no arguments
    /// beyond `args`).
    fn block<'n>(&mut self, n: &'n Node, args: usize) -> &'n [Node] {
        if n.args.len() > args {
            self.dropped(
                n.args[args].pos,
                format!(
                    "{}: extra words ignored: {}",
                    n.name(),
                    shorten(&join(&n.args[args..]))
                ),
            );
        }
        if n.block.is_none() {
            self.dropped(n.pos(), format!("{}: a block {{ … }} is missing", n.name()));
        }
        n.children()
    }

    /// A notify-style script: the command, then keepalived's optional user
    /// and group, which are not kept.
    fn script(&mut self, n: &Node) -> Option<String> {
        if n.block.is_some() {
            self.dropped(
                n.pos(),
                format!("{}: takes no block; the block is ignored", n.name()),
            );
        }
        let Some(first) = n.args.first() else {
            self.dropped(n.pos(), format!("{}: the command is missing", n.name()));
            return None;
        };
        if n.args.len() > 1 {
            self.dropped(
                n.args[1].pos,
                format!(
                    "{}: keepalived read `{}` as the user (and group) to run it as; {USER}",
                    n.name(),
                    shorten(&join(&n.args[1..]))
                ),
            );
        }
        let cmd = first.text.clone();
        self.shell_note(n, &cmd);
        Some(cmd)
    }

    /// keepalived runs scripts without a shell; xlb through `/bin/sh -c`.
    fn shell_note(&mut self, n: &Node, cmd: &str) {
        const SHELL: [char; 10] = ['|', '&', ';', '<', '>', '$', '`', '*', '?', '~'];
        if cmd.contains(SHELL) {
            self.note(
                n.pos(),
                format!(
                    "{}: xlb runs the command through /bin/sh, keepalived ran it without a shell; \
                     characters such as | $ * > now have their shell meaning",
                    n.name()
                ),
            );
        }
    }
}

/// `global_defs`, which applies to every instance.
#[derive(Debug, Default)]
struct Globals {
    router_id: Option<String>,
    router_id_key: &'static str,
    version: Option<u8>,
    garp_repeat: Option<u32>,
    garp_delay: Option<f64>,
    default_interface: Option<String>,
    /// lvs_timeouts: tcp, tcpfin, udp.
    timeouts: [Option<f64>; 3],
    vrrp_strict: bool,
    /// `lvs_sync_daemon`, with where it was written.
    sync: Option<(Pos, SyncDaemon)>,
}

fn global_defs(cx: &mut Cx, n: &Node, g: &mut Globals) {
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
fn garp_interval(cx: &mut Cx, n: &Node) {
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
fn skip_check_adv_addr(cx: &mut Cx, n: &Node) {
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

fn lvs_timeouts(cx: &mut Cx, n: &Node, g: &mut Globals) {
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
fn lvs_sync_daemon(cx: &mut Cx, n: &Node) -> Option<SyncDaemon> {
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
fn sync_daemon(interface: String, vrrp_instance: String) -> SyncDaemon {
    SyncDaemon {
        interface,
        vrrp_instance,
        ..defaults::sync()
    }
}

/// A `vrrp_script`.
#[derive(Debug)]
struct KScript {
    name: String,
    /// The command as written; `reverse` inverts it where it applies.
    s: VrrpScript,
    reverse: bool,
    ann: Ann,
}

fn vrrp_script(cx: &mut Cx, n: &Node) -> Option<KScript> {
    let Some(name) = n.args.first().map(|w| w.text.clone()) else {
        cx.dropped(n.pos(), "vrrp_script without a name: ignored");
        return None;
    };
    let mut s = defaults::script();
    let mut ann = Ann::default();
    let mut script: Option<String> = None;
    let mut reverse = None;
    for c in cx.block(n, 1) {
        match c.name() {
            "script" => {
                if c.block.is_some() || c.args.is_empty() {
                    cx.args(c, 1, usize::MAX);
                    continue;
                }
                let first = &c.args[0];
                let cmd = if first.quoted || c.args.len() == 1 {
                    if c.args.len() > 1 {
                        cx.args(c, 1, 1);
                    }
                    first.text.clone()
                } else {
                    let all: Vec<&str> = c.args.iter().map(|w| w.text.as_str()).collect();
                    let all = all.join(" ");
                    cx.note(
                        c.pos(),
                        format!(
                            "script {}: written as several words without quotes, of which \
                             keepalived runs only `{}`; the whole command is kept here",
                            shorten(&all),
                            first.text
                        ),
                    );
                    all
                };
                cx.shell_note(c, &cmd);
                script = Some(cmd);
            }
            "interval" => {
                if let Some(v) = cx.secs(c, 0.01, 3600.0) {
                    s.interval = v;
                    ann.show("interval");
                }
            }
            "timeout" => {
                if let Some(v) = cx.secs(c, 0.01, 3600.0) {
                    s.timeout = Some(v);
                }
            }
            "weight" => {
                let Some(a) = cx.args(c, 1, 2) else { continue };
                if let Some(v) = cx.int(&a[0], c, -253, 253) {
                    s.weight = v;
                    ann.show("weight");
                }
                if let Some(r) = a.get(1) {
                    if r.text == "reverse" {
                        reverse = Some(c.pos());
                    } else {
                        cx.bad(c, r, "not `reverse`");
                    }
                }
            }
            k @ ("rise" | "fall") => {
                if let Some(v) = cx.uint(c, 1, i32::MAX as u32) {
                    if k == "rise" {
                        s.rise = v;
                    } else {
                        s.fall = v;
                    }
                    ann.show(k);
                }
            }
            "user" => cx.unsupported(c, USER),
            "init_fail" => cx.unsupported(
                c,
                "not carried over: a script has no state here until its first result",
            ),
            _ => cx.unknown(c, "vrrp_script"),
        }
    }
    let Some(cmd) = script else {
        cx.dropped(
            n.pos(),
            format!("vrrp_script {name} has no script: ignored (keepalived ignores it too)"),
        );
        return None;
    };
    if let Some(pos) = reverse {
        cx.note(
            pos,
            format!(
                "weight {} reverse: the script's result is inverted here (`! …`), so the weight \
                 applies when keepalived applied it; a run that times out still counts as failed",
                s.weight
            ),
        );
    }
    s.script = cmd;
    Some(KScript {
        name,
        s,
        reverse: reverse.is_some(),
        ann,
    })
}

/// The weight and `reverse` a script is tracked with.
type Want = (i32, bool);

/// A `track_script` entry.
#[derive(Debug, Clone)]
struct KTrack {
    name: String,
    weight: Option<i32>,
    reverse: bool,
    pos: Pos,
}

/// A `virtual_ipaddress` entry.
#[derive(Debug, Clone)]
struct KVip {
    text: String,
    addr: Ipv4Addr,
    dev: Option<(String, Pos)>,
    /// Options not carried over, as written.
    lost: Vec<String>,
    excluded: bool,
    pos: Pos,
}

/// An `authentication` block: auth_type, auth_pass and where it is.
#[derive(Debug)]
struct KAuth {
    ty: Option<String>,
    pass: Option<(String, Pos)>,
    pos: Pos,
}

/// A `vrrp_instance`, before the global defaults apply.
#[derive(Debug)]
struct KInstance {
    name: String,
    pos: Pos,
    i: VrrpInstance,
    ann: Ann,
    interface: Option<String>,
    state: Option<VrrpState>,
    vrid: Option<u32>,
    priority: Option<u32>,
    advert: Option<(f64, Pos)>,
    version: Option<u8>,
    auth: Option<KAuth>,
    strict: Option<bool>,
    garp_repeat: Option<u32>,
    garp_delay: Option<f64>,
    vips: Vec<KVip>,
    tracks: Vec<KTrack>,
    sync_group: Option<(String, Vec<String>)>,
    /// The old `lvs_sync_daemon_interface`: the sync follows this instance.
    sync_iface: Option<(Pos, String)>,
}

fn vrrp_instance(cx: &mut Cx, n: &Node) -> Option<KInstance> {
    let Some(name) = n.args.first().map(|w| w.text.clone()) else {
        cx.dropped(n.pos(), "vrrp_instance without a name: ignored");
        return None;
    };
    let mut k = KInstance {
        name: name.clone(),
        pos: n.pos(),
        i: defaults::instance(),
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

fn vip_entry(cx: &mut Cx, e: &Node, excluded: bool) -> Option<KVip> {
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

fn track_entry(cx: &mut Cx, t: &Node) -> Option<KTrack> {
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
struct KGroup {
    name: String,
    members: Vec<String>,
}

fn sync_group(cx: &mut Cx, n: &Node) -> Option<KGroup> {
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

/// Checker defaults set on a virtual or real server.
#[derive(Debug, Default, Clone)]
struct Inherit {
    retry: Option<(u32, &'static str)>,
    delay_before_retry: Option<(f64, &'static str)>,
    warmup: Option<(f64, &'static str)>,
    connect_timeout: Option<(f64, &'static str)>,
    virtualhost: Option<(String, &'static str)>,
    alpha: Option<bool>,
    inhibit: Option<bool>,
    delay_loop: Option<(f64, Pos)>,
}

/// Reads a default that a virtual or real server passes down; false when
/// `c` is not one.
fn inherit(cx: &mut Cx, c: &Node, inh: &mut Inherit, from: &'static str) -> bool {
    match c.name() {
        "retry" => {
            if let Some(v) = cx.uint(c, 1, 1_000_000) {
                inh.retry = Some((v, from));
            }
        }
        "delay_before_retry" => {
            if let Some(v) = cx.secs(c, 0.0, 3600.0) {
                inh.delay_before_retry = Some((v, from));
            }
        }
        "warmup" => {
            if let Some(v) = cx.secs(c, 0.0, 3600.0) {
                inh.warmup = Some((v, from));
            }
        }
        "connect_timeout" => {
            if let Some(v) = cx.secs(c, 0.001, 3600.0) {
                inh.connect_timeout = Some((v, from));
            }
        }
        "virtualhost" => {
            if let Some(v) = cx.text(c) {
                inh.virtualhost = Some((v, from));
            }
        }
        "alpha" => inh.alpha = cx.flag(c).or(inh.alpha),
        "inhibit_on_failure" => inh.inhibit = cx.flag(c).or(inh.inhibit),
        "delay_loop" => {
            if let Some(v) = cx.secs(c, 0.01, 86400.0) {
                inh.delay_loop = Some((v, c.pos()));
            }
        }
        _ => return false,
    }
    true
}

/// A `virtual_server`, before it is linked to an instance and given SNAT.
#[derive(Debug)]
struct KServer {
    pos: Pos,
    vs: VirtualServer,
    ann: Ann,
    algo: Option<(String, Pos)>,
    flags: Vec<(String, Pos)>,
    kind: Option<(String, Pos)>,
    rs_kinds: Vec<Pos>,
    persistence: Option<(u32, Pos)>,
}

fn virtual_server(cx: &mut Cx, n: &Node) -> Option<KServer> {
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
    if n.args.len() > 2 {
        cx.dropped(
            n.args[2].pos,
            format!(
                "virtual_server: extra words ignored: {}",
                shorten(&join(&n.args[2..]))
            ),
        );
    }
    let mut k = KServer {
        pos: n.pos(),
        vs: defaults::server(),
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

fn real_server(
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
    if n.args.len() > 2 {
        cx.dropped(
            n.args[2].pos,
            format!(
                "real_server: extra words ignored: {}",
                shorten(&join(&n.args[2..]))
            ),
        );
    }
    let mut r = defaults::real();
    r.address = address;
    r.port = port;
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

/// Checker keys shared by all kinds.
#[derive(Debug, Default)]
struct Common {
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    retry_alias: bool,
    delay_before_retry: Option<f64>,
    warmup: Option<f64>,
    bindto: Option<Ipv4Addr>,
    connect_ip: Option<Ipv4Addr>,
    connect_port: Option<u16>,
    alpha: Option<bool>,
    delay_loop: Option<(f64, Pos)>,
}

/// Reads a shared key; false when `c` is not one.
fn common(cx: &mut Cx, c: &Node, m: &mut Common, kind: &str) -> bool {
    let connection = kind != "MISC_CHECK";
    match c.name() {
        "connect_ip" | "connect_port" | "bindto" | "connect_timeout" | "bind_port" | "bind_if"
        | "fwmark"
            if !connection =>
        {
            cx.unsupported(c, "not used by MISC_CHECK; ignored");
        }
        "connect_ip" => {
            if let Some(w) = cx.value(c) {
                m.connect_ip = cx.addr(c, w).or(m.connect_ip);
            }
        }
        "connect_port" => {
            if let Some(w) = cx.value(c) {
                m.connect_port = cx.port(c, w).or(m.connect_port);
            }
        }
        "bindto" => {
            if let Some(w) = cx.value(c) {
                m.bindto = cx.addr(c, w).or(m.bindto);
            }
        }
        "connect_timeout" => m.connect_timeout = cx.secs(c, 0.001, 3600.0).or(m.connect_timeout),
        "retry" => m.retry = cx.uint(c, 1, 1_000_000).or(m.retry),
        "nb_get_retry" => {
            if let Some(v) = cx.uint(c, 1, 1_000_000) {
                m.retry = Some(v);
                m.retry_alias = true;
                if !matches!(kind, "HTTP_GET" | "SSL_GET") {
                    cx.note(
                        c.pos(),
                        format!(
                            "nb_get_retry {v} in {kind}: keepalived knows it only in HTTP_GET and \
                             SSL_GET and ignored it here, so it ran with retry 1; kept as retry {v}, \
                             as the file means"
                        ),
                    );
                }
            }
        }
        "delay_before_retry" => {
            m.delay_before_retry = cx.secs(c, 0.0, 3600.0).or(m.delay_before_retry)
        }
        "warmup" => m.warmup = cx.secs(c, 0.0, 3600.0).or(m.warmup),
        "alpha" => m.alpha = cx.flag(c).or(m.alpha),
        "delay_loop" => {
            if let Some(v) = cx.secs(c, 0.01, 86400.0) {
                m.delay_loop = Some((v, c.pos()));
            }
        }
        "bind_port" | "bind_if" | "fwmark" => cx.unsupported(
            c,
            "not supported: checks use an ephemeral port and the routed interface",
        ),
        "log_all_failures" => cx.unsupported(
            c,
            "not carried over: every transition is logged with its reason",
        ),
        _ => return false,
    }
    true
}

/// Applies the shared keys, own or inherited, to a checker struct and its
/// comments.
macro_rules! apply_common {
    ($chk:expr, $m:expr, $inh:expr, $ann:expr, $connection:expr) => {{
        let (chk, m, inh, ann) = ($chk, $m, $inh, $ann);
        if $connection {
            if let Some(v) = m.connect_timeout {
                chk.connect_timeout = v;
                ann.show("connect_timeout");
            } else if let Some((v, from)) = inh.connect_timeout {
                chk.connect_timeout = v;
                ann.trail("connect_timeout", format!("from {from} connect_timeout"));
            }
            chk.connect_ip = m.connect_ip;
            chk.connect_port = m.connect_port;
            chk.bindto = m.bindto;
        }
        if let Some(v) = m.retry {
            chk.retry = v;
            if m.retry_alias {
                ann.trail("retry", "keepalived: nb_get_retry");
            } else {
                ann.show("retry");
            }
        } else if let Some((v, from)) = inh.retry {
            chk.retry = v;
            ann.trail("retry", format!("from {from} retry"));
        }
        if let Some(v) = m.delay_before_retry {
            chk.delay_before_retry = v;
            ann.show("delay_before_retry");
        } else if let Some((v, from)) = inh.delay_before_retry {
            chk.delay_before_retry = v;
            ann.trail(
                "delay_before_retry",
                format!("from {from} delay_before_retry"),
            );
        }
        if let Some(v) = m.warmup {
            chk.warmup = Some(v);
        } else if let Some((v, from)) = inh.warmup {
            chk.warmup = Some(v);
            ann.trail("warmup", format!("from {from} warmup"));
        }
    }};
}

/// Translates one checker block onto `r`; returns its key, its comments
/// and its `alpha`, or None when it is not kept.
/// Our key for a keepalived checker, if we have that checker.
fn checker_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "TCP_CHECK" => "tcp_check",
        "HTTP_GET" => "http_get",
        "SSL_GET" => "ssl_get",
        "DNS_CHECK" => "dns_check",
        "MISC_CHECK" => "misc_check",
        _ => return None,
    })
}

fn checker(
    cx: &mut Cx,
    c: &Node,
    r: &mut RealServer,
    inh: &Inherit,
    vs: &VirtualServer,
) -> Option<(&'static str, Ann, Option<bool>)> {
    let kind = c.name();
    let Some(key) = checker_key(kind) else {
        cx.unsupported(c, "this checker is not supported; ignored");
        return None;
    };
    if !c.args.is_empty() {
        cx.dropped(
            c.args[0].pos,
            format!("{kind}: extra words ignored: {}", shorten(&c.args_text())),
        );
    }
    let mut m = Common::default();
    let mut ann = Ann::default();
    let mut urls: Vec<&Node> = vec![];
    let mut rest: Vec<&Node> = vec![];
    for o in c.children() {
        if !common(cx, o, &mut m, kind) {
            if o.name() == "url" && matches!(kind, "HTTP_GET" | "SSL_GET") {
                urls.push(o);
            } else {
                rest.push(o);
            }
        }
    }
    if let Some((d, pos)) = m.delay_loop {
        if d != vs.delay_loop {
            cx.dropped(
                pos,
                format!(
                    "{kind} delay_loop {d}: not carried over: xlb checks every real server of a \
                     virtual server every delay_loop ({} s)",
                    vs.delay_loop
                ),
            );
        }
    }
    match kind {
        "TCP_CHECK" => {
            let mut t = defaults::tcp();
            apply_common!(&mut t, &m, inh, &mut ann, true);
            for o in rest {
                cx.unknown(o, "TCP_CHECK");
            }
            r.tcp_check = Some(Arc::new(t));
        }
        "HTTP_GET" | "SSL_GET" => {
            let mut h = defaults::http();
            apply_common!(&mut h, &m, inh, &mut ann, true);
            let mut vhost_own = false;
            for o in rest {
                match o.name() {
                    "virtualhost" => {
                        if let Some(v) = cx.text(o) {
                            h.virtualhost = Some(v);
                            vhost_own = true;
                        }
                    }
                    "http_protocol" => match cx.value(o) {
                        Some(w) if w.text == "1.0" || w.text == "1.1" => {
                            h.http_protocol = Some(w.text.clone())
                        }
                        Some(w) if w.text.eq_ignore_ascii_case("1.0c") => {
                            h.http_protocol = Some("1.0".into());
                            ann.trail("http_protocol", "keepalived: 1.0C");
                            cx.note(
                                o.pos(),
                                "http_protocol 1.0C: mapped to 1.0 (xlb's 1.0 request closes the connection too)",
                            );
                        }
                        Some(w) => cx.bad(o, w, "not 1.0, 1.0C or 1.1"),
                        None => {}
                    },
                    "enable_sni" | "sni_name" | "fast_recovery" | "tls_compliant" => {
                        cx.unsupported(o, "not supported; ignored")
                    }
                    _ => cx.unknown(o, kind),
                }
            }
            if !vhost_own {
                if let Some((v, from)) = &inh.virtualhost {
                    h.virtualhost = Some(v.clone());
                    ann.trail("virtualhost", format!("from {from} virtualhost"));
                }
            }
            if !url(cx, c, &urls, &mut h, &mut ann) {
                return None;
            }
            if kind == "HTTP_GET" {
                r.http_get = Some(Arc::new(h));
            } else {
                r.ssl_get = Some(Arc::new(h));
            }
        }
        "DNS_CHECK" => {
            let mut d = defaults::dns();
            apply_common!(&mut d, &m, inh, &mut ann, true);
            for o in rest {
                match o.name() {
                    "type" => {
                        const TYPES: [&str; 9] =
                            ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "PTR", "SRV"];
                        if let Some(w) = cx.value(o) {
                            let t = w.text.to_ascii_uppercase();
                            if TYPES.contains(&t.as_str()) {
                                d.qtype = t;
                                ann.show("type");
                            } else {
                                cx.bad(o, w, &format!("not one of {}", TYPES.join(", ")));
                            }
                        }
                    }
                    "name" => {
                        if let Some(v) = cx.text(o) {
                            d.name = v;
                            ann.show("name");
                        }
                    }
                    _ => cx.unknown(o, "DNS_CHECK"),
                }
            }
            r.dns_check = Some(Arc::new(d));
        }
        _ => {
            let mut x = defaults::misc();
            apply_common!(&mut x, &m, inh, &mut ann, false);
            let mut path = None;
            for o in rest {
                match o.name() {
                    "misc_path" => path = cx.script(o).or(path),
                    "misc_timeout" => {
                        if let Some(v) = cx.secs(o, 0.001, 3600.0) {
                            x.misc_timeout = Some(v);
                        }
                    }
                    "misc_dynamic" => {
                        if let Some(v) = cx.flag(o) {
                            x.misc_dynamic = v;
                            ann.show("misc_dynamic");
                        }
                    }
                    "user" => cx.unsupported(o, USER),
                    _ => cx.unknown(o, "MISC_CHECK"),
                }
            }
            let Some(path) = path else {
                cx.dropped(
                    c.pos(),
                    "MISC_CHECK without misc_path (keepalived ignores it too): not carried over",
                );
                return None;
            };
            x.misc_path = path;
            r.misc_check = Some(Arc::new(x));
        }
    }
    Some((key, ann, m.alpha))
}

/// The first `url` block of an HTTP_GET/SSL_GET; false when there is none
/// with a path, and keepalived ignores the checker.
fn url(cx: &mut Cx, c: &Node, urls: &[&Node], h: &mut HttpGet, ann: &mut Ann) -> bool {
    let mut first = true;
    let mut any = false;
    for u in urls {
        if !first {
            let p = u
                .children()
                .iter()
                .find(|o| o.name() == "path")
                .and_then(|o| o.args.first())
                .map_or("?".to_string(), |w| shorten(&w.text));
            cx.dropped(
                u.pos(),
                format!(
                    "{}: url {p}: keepalived checked every url; xlb checks one, the first",
                    c.name()
                ),
            );
            ann.trail("path", format!("keepalived also checked {p}"));
            continue;
        }
        let mut path = None;
        let mut status: Vec<String> = vec![];
        let mut digest = None;
        let mut vhost = None;
        for o in cx.block(u, 0) {
            match o.name() {
                "path" => match cx.value(o) {
                    // keepalived would send it as is: not a request line a
                    // server answers.
                    Some(w) if !w.text.starts_with('/') => cx.bad(o, w, "not a path that starts with /"),
                    Some(w) => path = Some(w.text.clone()),
                    None => {}
                },
                "digest" => match cx.value(o) {
                    Some(w) if w.text.len() == 32 && w.text.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        digest = Some(w.text.to_ascii_lowercase())
                    }
                    Some(w) => cx.bad(o, w, "not an MD5 digest of 32 hex digits"),
                    None => {}
                },
                "status_code" => {
                    if o.args.is_empty() {
                        cx.args(o, 1, 1);
                    }
                    for w in &o.args {
                        if status_word(&w.text) {
                            status.push(w.text.clone());
                        } else {
                            cx.bad(o, w, "not a status code 100-599 or a range of them");
                        }
                    }
                }
                "virtualhost" => vhost = cx.text(o).or(vhost),
                "regex" | "regex_no_match" | "regex_options" | "regex_min_offset"
                | "regex_max_offset" | "regex_stack" => cx.unsupported(
                    o,
                    "not supported: bodies are not matched against a regex (the status code and digest are checked)",
                ),
                _ => cx.unknown(o, "url"),
            }
        }
        let Some(path) = path else {
            cx.dropped(
                u.pos(),
                "url without a path (keepalived ignores it too): not carried over",
            );
            continue;
        };
        first = false;
        any = true;
        h.path = path;
        ann.show("path");
        if !status.is_empty() {
            h.status_code = Some(match status.as_slice() {
                [one] if is_digits(one) => StatusCodes::One(one.parse().unwrap_or(200)),
                many => StatusCodes::Ranges(many.join(",")),
            });
        }
        h.digest = digest;
        if let Some(v) = vhost {
            h.virtualhost = Some(v);
            ann.trail.remove("virtualhost");
        }
    }
    if !any {
        cx.dropped(
            c.pos(),
            format!(
                "{}: no url with a path (keepalived ignores such a checker too): not carried over",
                c.name()
            ),
        );
    }
    any
}

/// `200` or `200-299`, within 100-599.
fn status_word(s: &str) -> bool {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    if !is_digits(a) || !is_digits(b) {
        return false;
    }
    match (a.parse::<u16>(), b.parse::<u16>()) {
        (Ok(a), Ok(b)) => (100..=599).contains(&a) && (a..=599).contains(&b),
        _ => false,
    }
}

/// Translates the statements.
pub fn translate(nodes: &[Node], opts: &Options, items: &mut Vec<Item>) -> Out {
    let mut cx = Cx { items };
    let mut g = Globals::default();
    for n in nodes.iter().filter(|n| n.name() == "global_defs") {
        global_defs(&mut cx, n, &mut g);
    }
    let mut scripts: Vec<KScript> = vec![];
    let mut instances: Vec<KInstance> = vec![];
    let mut groups: Vec<KGroup> = vec![];
    let mut servers: Vec<KServer> = vec![];
    for n in nodes {
        match n.name() {
            "global_defs" => {}
            "vrrp_script" => {
                if let Some(s) = vrrp_script(&mut cx, n) {
                    if scripts.iter().any(|x| x.name == s.name) {
                        cx.dropped(
                            n.pos(),
                            format!("vrrp_script {}: a second one of that name; ignored", s.name),
                        );
                    } else {
                        scripts.push(s);
                    }
                }
            }
            "vrrp_instance" => {
                if let Some(i) = vrrp_instance(&mut cx, n) {
                    instances.push(i);
                }
            }
            "vrrp_sync_group" => {
                if let Some(gr) = sync_group(&mut cx, n) {
                    groups.push(gr);
                }
            }
            "virtual_server" => {
                if let Some(s) = virtual_server(&mut cx, n) {
                    servers.push(s);
                }
            }
            "virtual_server_group" => cx.unsupported(
                n,
                "not supported: give each address its own virtual_server",
            ),
            "static_ipaddress" | "static_routes" | "static_rules" => cx.unsupported(
                n,
                "not supported: configure static addresses and routes with the system's network tools",
            ),
            "vrrp_track_process" | "vrrp_track_file" | "track_file" | "bfd_instance"
            | "linkbeat_interfaces" | "garp_group" => {
                cx.unsupported(n, "not supported; ignored")
            }
            _ => cx.unknown(n, "keepalived.conf"),
        }
    }
    for gr in &groups {
        for m in &gr.members {
            if let Some(i) = instances.iter_mut().find(|i| &i.name == m) {
                let others = gr.members.iter().filter(|x| *x != m).cloned().collect();
                i.sync_group = Some((gr.name.clone(), others));
            }
        }
    }
    resolve(&mut cx, opts, g, scripts, instances, servers)
}

/// The instance as it will be written: global defaults applied, checked
/// against those already accepted.
fn finish_instance(
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

fn resolve(
    cx: &mut Cx,
    opts: &Options,
    mut g: Globals,
    scripts: Vec<KScript>,
    kinstances: Vec<KInstance>,
    servers: Vec<KServer>,
) -> Out {
    let mut c = Config {
        global: defaults::global(),
        ..Config::default()
    };
    let mut ann = Ann::default();
    let mut placeholders = vec![];

    if let Some(r) = &g.router_id {
        c.global.router_id = Some(r.clone());
        if g.router_id_key == "lvs_id" {
            ann.trail("global.router_id", "keepalived: lvs_id");
        }
    }
    let names = ["tcp_timeout", "tcp_fin_timeout", "udp_timeout"];
    let kw = ["tcp", "tcpfin", "udp"];
    for (j, t) in g.timeouts.iter().enumerate() {
        if let Some(v) = *t {
            let ct = &mut c.global.conntrack;
            *[
                &mut ct.tcp_timeout,
                &mut ct.tcp_fin_timeout,
                &mut ct.udp_timeout,
            ][j] = v;
            ann.trail(
                &format!("global.conntrack.{}", names[j]),
                format!("keepalived: lvs_timeouts {}", kw[j]),
            );
        }
    }

    // Instances, with their tracking resolved below.
    let mut tracks: Vec<Vec<KTrack>> = vec![];
    let mut vip_sets: Vec<Vec<Ipv4Addr>> = vec![];
    // The first instance that names its interface: (instance, interface).
    let mut named_iface: Option<(String, String)> = None;
    // The old per-instance form of `lvs_sync_daemon`: (where, interface, instance).
    let mut old_syncs: Vec<(Pos, String, String)> = vec![];
    for k in kinstances {
        let explicit = k.interface.clone();
        let old_sync = k.sync_iface.clone().map(|(p, i)| (p, i, k.name.clone()));
        if let Some((i, a, t, v)) = finish_instance(cx, &g, k, &c.vrrp_instances) {
            old_syncs.extend(old_sync);
            if let (None, Some(x)) = (&named_iface, explicit) {
                named_iface = Some((i.name.clone(), x));
            }
            ann.merge(&format!("vrrp_instances[{}]", c.vrrp_instances.len()), a);
            c.vrrp_instances.push(i);
            tracks.push(t);
            vip_sets.push(v);
        }
    }
    // keepalived reads `lvs_sync_daemon_interface X` in an instance as
    // `lvs_sync_daemon X <that instance>`; the global form wins, and there
    // is one sync daemon.
    let global_sync = g.sync.is_some();
    for (pos, iface, inst) in old_syncs {
        if global_sync {
            cx.dropped(
                pos,
                format!("lvs_sync_daemon_interface {iface}: global_defs lvs_sync_daemon is used instead"),
            );
        } else if let Some((_, first)) = &g.sync {
            cx.dropped(
                pos,
                format!(
                    "lvs_sync_daemon_interface {iface}: one sync runs, the one of vrrp_instance {}",
                    first.vrrp_instance
                ),
            );
        } else {
            g.sync = Some((pos, sync_daemon(iface, inst)));
        }
    }
    if let Some((pos, sd)) = &g.sync {
        if c.vrrp_instances.iter().any(|v| v.name == sd.vrrp_instance) {
            c.global.lvs_sync_daemon = Some(sd.clone());
            let from = if global_sync {
                "keepalived: lvs_sync_daemon".to_string()
            } else {
                format!(
                    "keepalived: lvs_sync_daemon_interface in {}",
                    sd.vrrp_instance
                )
            };
            ann.trail("global.lvs_sync_daemon", from);
        } else {
            cx.dropped(
                *pos,
                format!(
                    "lvs_sync_daemon: no vrrp_instance named {:?}; ignored",
                    sd.vrrp_instance
                ),
            );
        }
    }

    // global.interface.
    let iface_path = "global.interface";
    if let Some(x) = &opts.interface {
        c.global.interface = x.clone();
        ann.trail(iface_path, "from --interface");
    } else if let Some((name, x)) = &named_iface {
        c.global.interface = x.clone();
        ann.trail(iface_path, format!("from vrrp_instance {name}"));
    } else if let Some(x) = &g.default_interface {
        c.global.interface = x.clone();
        ann.trail(iface_path, "from global_defs default_interface");
    } else if let Some(i) = c.vrrp_instances.first() {
        c.global.interface = i.interface.clone().unwrap_or_default();
        ann.trail(iface_path, format!("from vrrp_instance {}", i.name));
    } else {
        c.global.interface = String::new();
        ann.trail(iface_path, "TODO: the interface XDP attaches to");
        placeholders.push(iface_path.to_string());
        cx.items.push(Item::new(
            None,
            Kind::Todo,
            "no vrrp_instance names an interface: global.interface is left empty; \
             fill it in or give --interface"
                .into(),
        ));
    }
    if opts.interface.is_none() && !c.global.interface.is_empty() {
        ann.above(
            iface_path,
            "keepalived has no global interface: XDP attaches here.",
        );
    }

    // Scripts: a track_script weight overrides the script's own for that
    // instance; xlb keeps one weight per script, so another override needs
    // a copy of the script.
    let originals: BTreeMap<String, (VrrpScript, bool)> = scripts
        .iter()
        .map(|k| (k.name.clone(), (k.s.clone(), k.reverse)))
        .collect();
    // Script name → each (weight, reverse) it is tracked with and the name
    // of the script written for it.
    let mut variants: HashMap<String, Vec<(Want, String)>> = HashMap::new();
    let mut copies: Vec<(String, String, Want)> = vec![];
    for (idx, ts) in tracks.iter().enumerate() {
        let inst = c.vrrp_instances[idx].name.clone();
        for t in ts {
            let Some((base, own_rev)) = originals.get(&t.name) else {
                cx.dropped(
                    t.pos,
                    format!(
                        "track_script {}: no vrrp_script of that name (keepalived ignores it too)",
                        t.name
                    ),
                );
                continue;
            };
            let own = (base.weight, *own_rev);
            let want = match t.weight {
                Some(w) => (w, t.reverse),
                None => own,
            };
            let vs = variants.entry(t.name.clone()).or_default();
            let used = match vs.iter().find(|(w, _)| *w == want) {
                Some((_, n)) => n.clone(),
                None if vs.is_empty() => {
                    if want != own {
                        cx.note(
                            t.pos,
                            format!(
                                "track_script {} weight {}{}: xlb keeps the weight on the script: \
                                 vrrp_script {} gets weight {} (it said {})",
                                t.name,
                                want.0,
                                if want.1 { " reverse" } else { "" },
                                t.name,
                                want.0,
                                own.0
                            ),
                        );
                        ann.trail(
                            &format!("vrrp_scripts.{}.weight", t.name),
                            format!("from track_script in {inst} (the script says {})", own.0),
                        );
                    }
                    vs.push((want, t.name.clone()));
                    t.name.clone()
                }
                None => {
                    let mut n = format!("{}_{inst}", t.name);
                    while originals.contains_key(&n) || copies.iter().any(|x| x.0 == n) {
                        n.push('_');
                    }
                    cx.note(
                        t.pos,
                        format!(
                            "track_script {} weight {}{}: another instance tracks it with another \
                             weight, and xlb keeps one per script: copied as vrrp_script {n}, \
                             which runs on its own",
                            t.name,
                            want.0,
                            if want.1 { " reverse" } else { "" },
                        ),
                    );
                    copies.push((n.clone(), t.name.clone(), want));
                    vs.push((want, n.clone()));
                    n
                }
            };
            c.vrrp_instances[idx].track_script.push(used);
        }
        if !c.vrrp_instances[idx].track_script.is_empty() {
            ann.show(&format!("vrrp_instances[{idx}].track_script"));
        }
    }
    let script_as = |name: &str, want: Option<Want>| -> Option<VrrpScript> {
        let (s, rev) = originals.get(name)?;
        let (w, r) = want.unwrap_or((s.weight, *rev));
        let mut s = s.clone();
        s.weight = w;
        if r {
            s.script = format!("! {}", s.script);
        }
        Some(s)
    };
    for k in scripts {
        let want = variants.get(&k.name).and_then(|v| v.first()).map(|x| x.0);
        let Some(s) = script_as(&k.name, want) else {
            continue;
        };
        let path = format!("vrrp_scripts.{}", k.name);
        if want.map_or(k.reverse, |w| w.1) {
            ann.above(
                &sub(&path, "script"),
                "`!` inverts the result: keepalived's weight … reverse.",
            );
        }
        ann.merge(&path, k.ann);
        c.vrrp_scripts.insert(k.name, s);
    }
    for (n, from, want) in copies {
        let Some(s) = script_as(&from, Some(want)) else {
            continue;
        };
        let path = format!("vrrp_scripts.{n}");
        ann.above(
            &path,
            format!("A copy of {from} with the weight another instance gives it."),
        );
        ann.show(&sub(&path, "weight"));
        c.vrrp_scripts.insert(n, s);
    }
    if opts.snat_addresses.len() > lb_common::MAX_SNAT_ADDRS {
        cx.items.push(Item::new(
            None,
            Kind::Dropped,
            format!(
                "--snat-address: at most {} addresses; the rest are not used",
                lb_common::MAX_SNAT_ADDRS
            ),
        ));
    }
    let snat_opt: Vec<Ipv4Addr> = opts
        .snat_addresses
        .iter()
        .take(lb_common::MAX_SNAT_ADDRS)
        .copied()
        .collect();

    // Virtual servers.
    for k in servers {
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
            continue;
        }
        let idx = c.virtual_servers.len();

        // The instance that holds the VIP.
        let linked = vip_sets.iter().position(|s| s.contains(&vs.vip));
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

        // SNAT pool.
        let iface = linked
            .and_then(|j| c.vrrp_instances[j].interface.clone())
            .unwrap_or_else(|| c.global.interface.clone());
        let (addrs, why): (Vec<Ipv4Addr>, String) = if !snat_opt.is_empty() {
            (snat_opt.clone(), "from --snat-address".into())
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
        let pool = if addrs.is_empty() {
            let p = format!("virtual_servers[{idx}].snat.addresses");
            placeholders.push(p);
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
        };

        // lb_kind.
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

        // lb_algo.
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
        a.show("protocol");
        ann.merge(&format!("virtual_servers[{idx}]"), a);
        c.virtual_servers.push(vs.into());
    }

    // Room in the maps.
    let services = c.virtual_servers.len() as u32;
    if services > c.global.max_services {
        c.global.max_services = services;
        ann.trail("global.max_services", "raised to hold every virtual server");
    }
    let backends: u32 = c
        .virtual_servers
        .iter()
        .map(|v| v.real_servers.len() as u32 + v.sorry_server.is_some() as u32)
        .sum();
    if backends > c.global.max_backends {
        c.global.max_backends = backends;
        ann.trail("global.max_backends", "raised to hold every real server");
    }
    Out {
        config: c,
        ann,
        placeholders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let _ = (
            defaults::global(),
            defaults::script(),
            defaults::instance(),
            defaults::server(),
            defaults::snat(),
            defaults::real(),
            defaults::tcp(),
            defaults::http(),
            defaults::dns(),
            defaults::misc(),
            defaults::sync(),
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(decimal("1.5"), Some(1.5));
        assert_eq!(decimal(".5"), Some(0.5));
        assert_eq!(decimal("3"), Some(3.0));
        for bad in ["", ".", "-1", "1e3", "inf", "NaN", "1.2.3", "+1"] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
        assert!(status_word("200"));
        assert!(status_word("200-299"));
        assert!(!status_word("99"));
        assert!(!status_word("300-200"));
        assert!(!status_word("2x0"));
        assert!(!status_word("+200"));
    }
}
