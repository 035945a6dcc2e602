//! Checker blocks (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `DNS_CHECK`,
//! `MISC_CHECK`) and the keys they share or inherit.

use std::{net::Ipv4Addr, sync::Arc};

use super::{
    ann::Ann,
    lexer::Pos,
    report::{is_digits, shorten, Cx, USER},
    tree::Node,
};
use crate::config::{
    http_host_ok, http_path_ok, DnsCheck, HttpGet, MiscCheck, RealServer, StatusCodes, TcpCheck,
    VirtualServer,
};

/// A `virtualhost` that can be sent as a Host header.
fn vhost(cx: &mut Cx, n: &Node) -> Option<String> {
    let w = cx.value(n)?;
    if http_host_ok(&w.text) {
        Some(w.text.clone())
    } else {
        cx.bad(n, w, "not a Host header: no spaces or control characters");
        None
    }
}

/// Checker defaults set on a virtual or real server.
#[derive(Debug, Default, Clone)]
pub(super) struct Inherit {
    pub(super) retry: Option<(u32, &'static str)>,
    pub(super) delay_before_retry: Option<(f64, &'static str)>,
    pub(super) warmup: Option<(f64, &'static str)>,
    pub(super) connect_timeout: Option<(f64, &'static str)>,
    pub(super) virtualhost: Option<(String, &'static str)>,
    pub(super) alpha: Option<bool>,
    pub(super) inhibit: Option<bool>,
    pub(super) delay_loop: Option<(f64, Pos)>,
}

/// Reads a default that a virtual or real server passes down; false when
/// `c` is not one.
pub(super) fn inherit(cx: &mut Cx, c: &Node, inh: &mut Inherit, from: &'static str) -> bool {
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
            if let Some(v) = vhost(cx, c) {
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

/// Checker keys shared by all kinds.
#[derive(Debug, Default)]
pub(super) struct Common {
    pub(super) connect_timeout: Option<f64>,
    pub(super) retry: Option<u32>,
    pub(super) retry_alias: bool,
    pub(super) delay_before_retry: Option<f64>,
    pub(super) warmup: Option<f64>,
    pub(super) bindto: Option<Ipv4Addr>,
    pub(super) connect_ip: Option<Ipv4Addr>,
    pub(super) connect_port: Option<u16>,
    pub(super) alpha: Option<bool>,
    pub(super) delay_loop: Option<(f64, Pos)>,
}

/// Reads a shared key; false when `c` is not one.
pub(super) fn common(cx: &mut Cx, c: &Node, m: &mut Common, kind: &str) -> bool {
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
pub(super) fn checker_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "TCP_CHECK" => "tcp_check",
        "HTTP_GET" => "http_get",
        "SSL_GET" => "ssl_get",
        "DNS_CHECK" => "dns_check",
        "MISC_CHECK" => "misc_check",
        _ => return None,
    })
}

pub(super) fn checker(
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
    cx.extra_words(c, 0);
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
            let mut t = TcpCheck::default();
            apply_common!(&mut t, &m, inh, &mut ann, true);
            for o in rest {
                cx.unknown(o, "TCP_CHECK");
            }
            r.tcp_check = Some(Arc::new(t));
        }
        "HTTP_GET" | "SSL_GET" => {
            let mut h = HttpGet::default();
            apply_common!(&mut h, &m, inh, &mut ann, true);
            let mut vhost_own = false;
            for o in rest {
                match o.name() {
                    "virtualhost" => {
                        if let Some(v) = vhost(cx, o) {
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
            let mut d = DnsCheck::default();
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
            let mut x = MiscCheck::default();
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
pub(super) fn url(cx: &mut Cx, c: &Node, urls: &[&Node], h: &mut HttpGet, ann: &mut Ann) -> bool {
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
                    Some(w) if !http_path_ok(&w.text) => {
                        cx.bad(o, w, "not a request path: no spaces or control characters")
                    }
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
                "virtualhost" => vhost = self::vhost(cx, o).or(vhost),
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
pub(super) fn status_word(s: &str) -> bool {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    if !is_digits(a) || !is_digits(b) {
        return false;
    }
    match (a.parse::<u16>(), b.parse::<u16>()) {
        (Ok(a), Ok(b)) => (100..=599).contains(&a) && (a..=599).contains(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words() {
        assert!(status_word("200"));
        assert!(status_word("200-299"));
        assert!(!status_word("99"));
        assert!(!status_word("300-200"));
        assert!(!status_word("2x0"));
        assert!(!status_word("+200"));
    }
}
