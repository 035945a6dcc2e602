//! The YAML text of a [`Config`], written by hand so it can carry the
//! translation's comments, in the style of `configs/*.yaml`. A key is
//! written when it differs from our default or when keepalived's file had
//! it ([`Ann::shown`]); parsing the text gives back the same `Config`.

use std::fmt::Write as _;

use super::ann::{sub, Ann};
use crate::config::{
    CheckCommon, Config, DnsCheck, Endpoint, Global, HttpGet, LbAlgo, LbKind, MiscCheck, OnDown,
    Protocol, RealServer, Snat, StatusCodes, SyncDaemon, TcpCheck, VirtualServer, VrrpInstance,
    VrrpScript, VrrpState, XdpMode,
};

/// Comments are wrapped to this width.
const WIDTH: usize = 78;
/// Trailing comments start at this column when the line is shorter.
const COMMENT_COL: usize = 30;

/// The YAML for `c`, with `ann`'s comments; `source` names the keepalived
/// file in the header.
pub fn emit(c: &Config, ann: &Ann, source: &str) -> String {
    let mut w = W {
        out: String::new(),
        ann,
    };
    w.wrap(
        0,
        &format!(
            "Imported from {} by `xlb import-keepalived`. Comments mark what was defaulted or \
             translated; the import's report lists what was not carried over. Every key is in \
             the README's configuration reference; check the file with:  xlb check -c FILE",
            clean(source)
        ),
    );
    w.out.push('\n');
    global(&mut w, c);
    if !c.vrrp_scripts.is_empty() {
        w.out.push('\n');
        w.line(0, false, "vrrp_scripts", None, "vrrp_scripts");
        let d = VrrpScript::default();
        for (name, s) in &c.vrrp_scripts {
            let p = format!("vrrp_scripts.{name}");
            w.line(2, false, &scalar(name), None, &p);
            w.line(
                4,
                false,
                "script",
                Some(scalar(&s.script)),
                &sub(&p, "script"),
            );
            w.opt(4, "interval", &p, &s.interval, &d.interval, |v| num(*v));
            w.opt(4, "timeout", &p, &s.timeout, &d.timeout, |v| opt_num(*v));
            w.opt(4, "weight", &p, &s.weight, &d.weight, |v| v.to_string());
            w.opt(4, "rise", &p, &s.rise, &d.rise, |v| v.to_string());
            w.opt(4, "fall", &p, &s.fall, &d.fall, |v| v.to_string());
        }
    }
    if !c.vrrp_instances.is_empty() {
        w.out.push('\n');
        w.line(0, false, "vrrp_instances", None, "vrrp_instances");
        for (i, v) in c.vrrp_instances.iter().enumerate() {
            instance(&mut w, &format!("vrrp_instances[{i}]"), v);
        }
    }
    if !c.virtual_servers.is_empty() {
        w.out.push('\n');
        w.line(0, false, "virtual_servers", None, "virtual_servers");
        for (i, v) in c.virtual_servers.iter().enumerate() {
            server(&mut w, &format!("virtual_servers[{i}]"), v);
        }
    }
    w.out
}

fn global(w: &mut W, c: &Config) {
    let g = &c.global;
    let d = Global::default();
    let p = "global";
    w.line(0, false, "global", None, p);
    if let Some(r) = &g.router_id {
        w.line(2, false, "router_id", Some(scalar(r)), "global.router_id");
    }
    w.line(
        2,
        false,
        "interface",
        Some(scalar(&g.interface)),
        "global.interface",
    );
    w.opt(
        2,
        "extra_interfaces",
        p,
        &g.extra_interfaces,
        &d.extra_interfaces,
        |v| flow(v.iter().map(|s| scalar(s))),
    );
    w.opt(2, "xdp_mode", p, &g.xdp_mode, &d.xdp_mode, |m| {
        match m {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
        .to_string()
    });
    w.opt(2, "pin_path", p, &g.pin_path, &d.pin_path, |v| scalar(v));
    w.opt(2, "metrics", p, &g.metrics, &d.metrics, |v| {
        v.as_deref().map_or("null".into(), scalar)
    });
    w.opt(2, "hash_seed", p, &g.hash_seed, &d.hash_seed, |v| {
        v.to_string()
    });
    w.opt(2, "maglev_size", p, &g.maglev_size, &d.maglev_size, |v| {
        v.to_string()
    });
    w.opt(
        2,
        "max_services",
        p,
        &g.max_services,
        &d.max_services,
        |v| v.to_string(),
    );
    w.opt(
        2,
        "max_backends",
        p,
        &g.max_backends,
        &d.max_backends,
        |v| v.to_string(),
    );
    let cp = "global.conntrack";
    let (ct, dc) = (&g.conntrack, &d.conntrack);
    let mut s = w.child();
    s.opt(
        4,
        "max_entries",
        cp,
        &ct.max_entries,
        &dc.max_entries,
        |v| v.to_string(),
    );
    s.opt(
        4,
        "tcp_timeout",
        cp,
        &ct.tcp_timeout,
        &dc.tcp_timeout,
        |v| num(*v),
    );
    s.opt(
        4,
        "tcp_fin_timeout",
        cp,
        &ct.tcp_fin_timeout,
        &dc.tcp_fin_timeout,
        |v| num(*v),
    );
    s.opt(
        4,
        "udp_timeout",
        cp,
        &ct.udp_timeout,
        &dc.udp_timeout,
        |v| num(*v),
    );
    let body = s.out;
    if !body.is_empty() || w.ann.has(cp) {
        w.line(2, false, "conntrack", empty_map(&body), cp);
        w.out.push_str(&body);
    }
    w.opt(2, "nexthop_ttl", p, &g.nexthop_ttl, &d.nexthop_ttl, |v| {
        num(*v)
    });
    if let Some(s) = &g.lvs_sync_daemon {
        let sp = "global.lvs_sync_daemon";
        w.line(2, false, "lvs_sync_daemon", None, sp);
        let at = |k: &str| format!("{sp}.{k}");
        w.line(
            4,
            false,
            "interface",
            Some(scalar(&s.interface)),
            &at("interface"),
        );
        let inst = scalar(&s.vrrp_instance);
        w.line(4, false, "vrrp_instance", Some(inst), &at("vrrp_instance"));
        let d = SyncDaemon::default();
        if s.id != d.id {
            w.line(4, false, "id", Some(s.id.to_string()), &at("id"));
        }
        if s.port != d.port {
            w.line(4, false, "port", Some(s.port.to_string()), &at("port"));
        }
        if s.group != d.group {
            w.line(4, false, "group", Some(s.group.to_string()), &at("group"));
        }
    }
}

fn instance(w: &mut W, p: &str, v: &VrrpInstance) {
    let d = VrrpInstance::default();
    w.line(2, true, "name", Some(scalar(&v.name)), p);
    w.opt(4, "interface", p, &v.interface, &d.interface, |x| {
        x.as_deref().map_or("null".into(), scalar)
    });
    w.opt(4, "state", p, &v.state, &d.state, |s| {
        match s {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
        }
        .to_string()
    });
    w.line(
        4,
        false,
        "virtual_router_id",
        Some(v.virtual_router_id.to_string()),
        &sub(p, "virtual_router_id"),
    );
    w.line(
        4,
        false,
        "priority",
        Some(v.priority.to_string()),
        &sub(p, "priority"),
    );
    w.opt(4, "advert_int", p, &v.advert_int, &d.advert_int, |x| {
        num(*x)
    });
    w.opt(4, "version", p, &v.version, &d.version, |x| x.to_string());
    w.opt(4, "preempt", p, &v.preempt, &d.preempt, |x| x.to_string());
    w.opt(
        4,
        "preempt_delay",
        p,
        &v.preempt_delay,
        &d.preempt_delay,
        |x| num(*x),
    );
    w.opt(
        4,
        "authentication",
        p,
        &v.authentication,
        &d.authentication,
        |a| match a {
            Some(a) => format!("{{auth_type: PASS, auth_pass: {}}}", scalar(&a.auth_pass)),
            None => "null".into(),
        },
    );
    w.opt(
        4,
        "unicast_src_ip",
        p,
        &v.unicast_src_ip,
        &d.unicast_src_ip,
        |a| a.map_or("null".into(), |a| a.to_string()),
    );
    w.opt(
        4,
        "unicast_peers",
        p,
        &v.unicast_peers,
        &d.unicast_peers,
        |x| flow(x.iter().map(|a| a.to_string())),
    );
    let vp = sub(p, "virtual_ipaddress");
    let commented = (0..v.virtual_ipaddress.len()).any(|j| w.ann.has(&format!("{vp}[{j}]")));
    if commented {
        w.line(4, false, "virtual_ipaddress", None, &vp);
        for (j, a) in v.virtual_ipaddress.iter().enumerate() {
            w.item(6, &scalar(a), &format!("{vp}[{j}]"));
        }
    } else {
        w.opt(
            4,
            "virtual_ipaddress",
            p,
            &v.virtual_ipaddress,
            &d.virtual_ipaddress,
            |x| flow(x.iter().map(|s| scalar(s))),
        );
    }
    w.opt(
        4,
        "track_script",
        p,
        &v.track_script,
        &d.track_script,
        |x| flow(x.iter().map(|s| scalar(s))),
    );
    w.opt(
        4,
        "track_virtual_server",
        p,
        &v.track_virtual_server,
        &d.track_virtual_server,
        |x| {
            flow(
                x.iter()
                    .map(|t| format!("{{name: {}, weight: {}}}", scalar(&t.name), t.weight)),
            )
        },
    );
    w.opt(
        4,
        "garp_master_repeat",
        p,
        &v.garp_master_repeat,
        &d.garp_master_repeat,
        |x| x.to_string(),
    );
    w.opt(
        4,
        "garp_master_delay",
        p,
        &v.garp_master_delay,
        &d.garp_master_delay,
        |x| num(*x),
    );
    for (k, val) in [
        ("notify_master", &v.notify_master),
        ("notify_backup", &v.notify_backup),
        ("notify_fault", &v.notify_fault),
        ("notify_stop", &v.notify_stop),
        ("notify", &v.notify),
    ] {
        w.opt(4, k, p, val, &None, |x| {
            x.as_deref().map_or("null".into(), scalar)
        });
    }
}

fn server(w: &mut W, p: &str, v: &VirtualServer) {
    let d = VirtualServer::default();
    w.line(2, true, "name", Some(scalar(&v.name)), p);
    w.line(4, false, "vip", Some(v.vip.to_string()), &sub(p, "vip"));
    w.line(4, false, "port", Some(v.port.to_string()), &sub(p, "port"));
    w.opt(4, "protocol", p, &v.protocol, &d.protocol, |x| {
        match x {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
        .to_string()
    });
    w.opt(
        4,
        "vrrp_instance",
        p,
        &v.vrrp_instance,
        &d.vrrp_instance,
        |x| x.as_deref().map_or("null".into(), scalar),
    );
    w.opt(4, "lb_algo", p, &v.lb_algo, &d.lb_algo, |x| {
        match x {
            LbAlgo::Mh => "mh",
            LbAlgo::Sh => "sh",
        }
        .to_string()
    });
    w.opt(4, "lb_kind", p, &v.lb_kind, &d.lb_kind, |x| match x {
        LbKind::Fullnat => "fullnat".to_string(),
    });
    let sp = sub(p, "snat");
    let ds = Snat::default();
    w.line(4, false, "snat", None, &sp);
    w.line(
        6,
        false,
        "addresses",
        Some(flow(v.snat.addresses.iter().map(|a| a.to_string()))),
        &sub(&sp, "addresses"),
    );
    w.opt(6, "ports", &sp, &v.snat.ports, &ds.ports, |x| scalar(x));
    w.opt(4, "delay_loop", p, &v.delay_loop, &d.delay_loop, |x| {
        num(*x)
    });
    w.opt(4, "quorum", p, &v.quorum, &d.quorum, |x| x.to_string());
    w.opt(
        4,
        "sorry_server",
        p,
        &v.sorry_server,
        &d.sorry_server,
        |x| match x {
            Some(Endpoint { address, port }) => format!("{{address: {address}, port: {port}}}"),
            None => "null".into(),
        },
    );
    w.opt(4, "on_down", p, &v.on_down, &d.on_down, |x| {
        match x {
            OnDown::Keep => "keep",
            OnDown::Reset => "reset",
        }
        .to_string()
    });
    let rp = sub(p, "real_servers");
    w.line(
        4,
        false,
        "real_servers",
        empty_list(v.real_servers.is_empty()),
        &rp,
    );
    for (j, r) in v.real_servers.iter().enumerate() {
        real(w, &format!("{rp}[{j}]"), r);
    }
}

fn real(w: &mut W, p: &str, r: &RealServer) {
    let d = RealServer::default();
    w.line(6, true, "address", Some(r.address.to_string()), p);
    w.line(8, false, "port", Some(r.port.to_string()), &sub(p, "port"));
    w.opt(8, "weight", p, &r.weight, &d.weight, |x| x.to_string());
    w.opt(
        8,
        "inhibit_on_failure",
        p,
        &r.inhibit_on_failure,
        &d.inhibit_on_failure,
        |x| x.to_string(),
    );
    w.opt(8, "notify_up", p, &r.notify_up, &d.notify_up, |x| {
        x.as_deref().map_or("null".into(), scalar)
    });
    w.opt(8, "notify_down", p, &r.notify_down, &d.notify_down, |x| {
        x.as_deref().map_or("null".into(), scalar)
    });
    w.opt(8, "alpha", p, &r.alpha, &d.alpha, |x| x.to_string());
    if let Some(t) = &r.tcp_check {
        let cp = sub(p, "tcp_check");
        let mut s = w.child();
        common(&mut s, &cp, t.common(), TcpCheck::default().common());
        s.close(w, "tcp_check", &cp);
    }
    for (k, h) in [("http_get", &r.http_get), ("ssl_get", &r.ssl_get)] {
        let Some(h) = h else { continue };
        let cp = sub(p, k);
        let dh = HttpGet::default();
        let mut s = w.child();
        common(&mut s, &cp, h.common(), dh.common());
        s.opt(10, "path", &cp, &h.path, &dh.path, |x| scalar(x));
        s.opt(
            10,
            "status_code",
            &cp,
            &h.status_code,
            &dh.status_code,
            |x| match x {
                Some(StatusCodes::One(c)) => c.to_string(),
                Some(StatusCodes::Ranges(r)) => quoted(r),
                None => "null".into(),
            },
        );
        s.opt(10, "digest", &cp, &h.digest, &dh.digest, |x| {
            x.as_deref().map_or("null".into(), scalar)
        });
        s.opt(
            10,
            "virtualhost",
            &cp,
            &h.virtualhost,
            &dh.virtualhost,
            |x| x.as_deref().map_or("null".into(), scalar),
        );
        s.opt(
            10,
            "http_protocol",
            &cp,
            &h.http_protocol,
            &dh.http_protocol,
            |x| x.as_deref().map_or("null".into(), quoted),
        );
        s.opt(
            10,
            "verify_certificate",
            &cp,
            &h.verify_certificate,
            &dh.verify_certificate,
            |x| x.to_string(),
        );
        s.close(w, k, &cp);
    }
    if let Some(c) = &r.dns_check {
        let cp = sub(p, "dns_check");
        let dd = DnsCheck::default();
        let mut s = w.child();
        common(&mut s, &cp, c.common(), dd.common());
        s.opt(10, "name", &cp, &c.name, &dd.name, |x| scalar(x));
        s.opt(10, "type", &cp, &c.qtype, &dd.qtype, |x| scalar(x));
        s.close(w, "dns_check", &cp);
    }
    if let Some(m) = &r.misc_check {
        let cp = sub(p, "misc_check");
        let dm = MiscCheck::default();
        let mut s = w.child();
        common(&mut s, &cp, m.common(), dm.common());
        s.line(
            10,
            false,
            "misc_path",
            Some(scalar(&m.misc_path)),
            &sub(&cp, "misc_path"),
        );
        s.opt(
            10,
            "misc_timeout",
            &cp,
            &m.misc_timeout,
            &dm.misc_timeout,
            |x| opt_num(*x),
        );
        s.opt(
            10,
            "misc_dynamic",
            &cp,
            &m.misc_dynamic,
            &dm.misc_dynamic,
            |x| x.to_string(),
        );
        s.close(w, "misc_check", &cp);
    }
}

fn common(s: &mut W, p: &str, c: CheckCommon, d: CheckCommon) {
    s.opt(
        10,
        "connect_timeout",
        p,
        &c.connect_timeout,
        &d.connect_timeout,
        |x| num(*x),
    );
    s.opt(10, "retry", p, &c.retry, &d.retry, |x| x.to_string());
    s.opt(10, "rise", p, &c.rise, &d.rise, |x| x.to_string());
    s.opt(
        10,
        "delay_before_retry",
        p,
        &c.delay_before_retry,
        &d.delay_before_retry,
        |x| num(*x),
    );
    s.opt(10, "warmup", p, &c.warmup, &d.warmup, |x| opt_num(*x));
    s.opt(10, "bindto", p, &c.bindto, &d.bindto, |x| {
        x.map_or("null".into(), |a| a.to_string())
    });
    s.opt(10, "connect_ip", p, &c.connect_ip, &d.connect_ip, |x| {
        x.map_or("null".into(), |a| a.to_string())
    });
    s.opt(
        10,
        "connect_port",
        p,
        &c.connect_port,
        &d.connect_port,
        |x| x.map_or("null".into(), |a| a.to_string()),
    );
}

/// The text being written and the comments to put in it.
struct W<'a> {
    out: String,
    ann: &'a Ann,
}

impl<'a> W<'a> {
    /// A writer for a block whose key is written once its body is known.
    fn child(&self) -> W<'a> {
        W {
            out: String::new(),
            ann: self.ann,
        }
    }

    /// Writes `key:` (or `key: {}` for an empty body) and this body into
    /// `parent`, at checker depth.
    fn close(self, parent: &mut W, key: &str, path: &str) {
        parent.line(8, false, key, empty_map(&self.out), path);
        parent.out.push_str(&self.out);
    }

    /// Comment lines, wrapped.
    fn wrap(&mut self, indent: usize, text: &str) {
        let room = WIDTH.saturating_sub(indent + 2).max(20);
        let mut line = String::new();
        for word in clean(text).split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
                let _ = writeln!(self.out, "{:indent$}# {line}", "");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            let _ = writeln!(self.out, "{:indent$}# {line}", "");
        }
    }

    /// `key: value` (or `- key: value`), with the comments of `path`.
    fn line(&mut self, indent: usize, dash: bool, key: &str, value: Option<String>, path: &str) {
        let mut l = format!("{:indent$}{}{key}:", "", if dash { "- " } else { "" });
        if let Some(v) = value {
            l.push(' ');
            l.push_str(&v);
        }
        self.finish(indent, l, path);
    }

    /// A sequence item that is a scalar.
    fn item(&mut self, indent: usize, value: &str, path: &str) {
        let l = format!("{:indent$}- {value}", "");
        self.finish(indent, l, path);
    }

    /// Writes the comments above `path`, then the line `l` with its
    /// trailing comment, which goes above too when the line would be too
    /// long.
    fn finish(&mut self, indent: usize, mut l: String, path: &str) {
        for text in self.ann.above.get(path).into_iter().flatten() {
            self.wrap(indent, text);
        }
        if let Some(t) = self.ann.trail.get(path) {
            let text = clean(&t.join("; "));
            let len = l.chars().count();
            let pad = if len + 2 <= COMMENT_COL {
                COMMENT_COL - len
            } else {
                2
            };
            if len + pad + 2 + text.chars().count() <= WIDTH {
                l.push_str(&" ".repeat(pad));
                l.push_str("# ");
                l.push_str(&text);
            } else {
                let mut t = text;
                if !t.ends_with('.') {
                    t.push('.');
                }
                self.wrap(indent, &t);
            }
        }
        self.out.push_str(&l);
        self.out.push('\n');
    }

    /// An optional key: written when it differs from the default or has
    /// something to say.
    fn opt<T: PartialEq>(
        &mut self,
        indent: usize,
        key: &str,
        parent: &str,
        v: &T,
        default: &T,
        show: impl Fn(&T) -> String,
    ) {
        let path = sub(parent, key);
        if v != default || self.ann.has(&path) {
            self.line(indent, false, key, Some(show(v)), &path);
        }
    }
}

fn empty_map(body: &str) -> Option<String> {
    body.is_empty().then(|| "{}".to_string())
}

fn empty_list(empty: bool) -> Option<String> {
    empty.then(|| "[]".to_string())
}

fn flow(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn num(v: f64) -> String {
    // Display gives the shortest text that parses back to the same value.
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or("null".into(), num)
}

/// Comment text: one line, printable.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A string as a YAML scalar: plain when that reads back as the same
/// string, else double-quoted.
pub fn scalar(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Plain when it starts with a letter, `_` or `/` and holds no character
/// YAML could read otherwise, or when it is an IPv4 address or CIDR.
fn is_plain(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    if crate::config::parse_cidr(s).is_some()
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
    {
        return true;
    }
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '@' | '+'))
}

/// A double-quoted YAML scalar; anything YAML might not read back as
/// itself is escaped.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}'
                if !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                out.push(c)
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back() {
        for s in [
            "VI_1",
            "/usr/bin/x.sh",
            "killall -0 haproxy",
            "1111",
            "yes",
            "No",
            "",
            "a: b",
            "#x",
            "x # y",
            "\"q\" \\ '",
            "tab\there",
            "nl\nx",
            "é ü ✓ 𝄞",
            "\u{2028}\u{feff}\u{85}\u{7f}\u{0}",
            "-1",
            "0x10",
            "1e3",
            ".inf",
            "~",
            "[a]",
            "{a}",
            "192.0.2.1/24",
            "1.2",
            "@x",
            "*a",
            "&a",
            "!x",
            "%x",
            "|",
            ">",
        ] {
            let text = format!("k: {}\nl: [{}]\n", scalar(s), scalar(s));
            let back: std::collections::BTreeMap<String, serde_yaml::Value> =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let got = back["k"].as_str().map(str::to_string);
            assert_eq!(got.as_deref(), Some(s), "{text:?}");
            assert_eq!(back["l"][0].as_str(), Some(s), "{text:?}");
        }
    }
}
