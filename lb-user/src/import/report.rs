//! The report and the argument checks: every statement is either
//! translated or reported, with its position.

use std::net::Ipv4Addr;

use super::{
    lexer::{Pos, Word},
    tree::{join, Node},
    Item, Kind,
};

pub(super) const STRICT: &str = "not carried over: xlb has no strict mode (it accepts unicast peers and \
                      authentication, and installs no firewall rules against the VIPs: they are served)";
pub(super) const EMAIL: &str =
    "e-mail notification is not supported; a notify script can send mail";
pub(super) const GARP: &str = "not supported: xlb sends gratuitous ARPs on becoming MASTER only \
                    (garp_master_repeat, garp_master_delay)";
pub(super) const USER: &str = "not carried over: scripts run as the agent's user";

/// Report items and argument checks.
pub(super) struct Cx<'a> {
    pub(super) items: &'a mut Vec<Item>,
}

/// A statement as written, shortened for messages.
pub(super) fn show(n: &Node) -> String {
    let mut s = n.name().to_string();
    if !n.args.is_empty() {
        s.push(' ');
        s.push_str(&n.args_text());
    }
    shorten(&s)
}

pub(super) fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}…")
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `12`, `1.5`, `.5`: keepalived's decimal numbers (no sign, no exponent).
pub(super) fn decimal(s: &str) -> Option<f64> {
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
    pub(super) fn push(&mut self, pos: Pos, kind: Kind, msg: String) {
        self.items.push(Item::new(Some(pos), kind, msg));
    }

    pub(super) fn note(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(pos, Kind::Note, msg.into());
    }

    pub(super) fn dropped(&mut self, pos: Pos, msg: impl Into<String>) {
        self.push(pos, Kind::Dropped, msg.into());
    }

    /// `n` is not carried over, for `why`.
    pub(super) fn unsupported(&mut self, n: &Node, why: &str) {
        self.dropped(n.pos(), format!("{}: {why}", show(n)));
    }

    pub(super) fn unknown(&mut self, n: &Node, section: &str) {
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
    pub(super) fn args<'n>(&mut self, n: &'n Node, min: usize, max: usize) -> Option<&'n [Word]> {
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
        if self.extra_words(n, max) {
            return Some(&n.args[..max]);
        }
        Some(&n.args)
    }

    pub(super) fn value<'n>(&mut self, n: &'n Node) -> Option<&'n Word> {
        self.args(n, 1, 1).map(|a| &a[0])
    }

    pub(super) fn text(&mut self, n: &Node) -> Option<String> {
        self.value(n).map(|w| w.text.clone())
    }

    pub(super) fn bad(&mut self, n: &Node, w: &Word, want: &str) {
        self.dropped(
            w.pos,
            format!("{} {}: {want}; ignored", n.name(), shorten(&w.text)),
        );
    }

    pub(super) fn uint(&mut self, n: &Node, lo: u32, hi: u32) -> Option<u32> {
        let w = self.value(n)?;
        match w.text.parse::<u32>() {
            Ok(v) if is_digits(&w.text) && (lo..=hi).contains(&v) => Some(v),
            _ => {
                self.bad(n, w, &format!("not a whole number in {lo}-{hi}"));
                None
            }
        }
    }

    pub(super) fn int(&mut self, w: &Word, n: &Node, lo: i32, hi: i32) -> Option<i32> {
        let digits = w.text.strip_prefix(['-', '+']).unwrap_or(&w.text);
        match w.text.parse::<i32>() {
            Ok(v) if is_digits(digits) && (lo..=hi).contains(&v) => Some(v),
            _ => {
                self.bad(n, w, &format!("not a whole number in {lo}-{hi}"));
                None
            }
        }
    }

    pub(super) fn secs(&mut self, n: &Node, lo: f64, hi: f64) -> Option<f64> {
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
    pub(super) fn flag(&mut self, n: &Node) -> Option<bool> {
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

    pub(super) fn addr(&mut self, n: &Node, w: &Word) -> Option<Ipv4Addr> {
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

    pub(super) fn port(&mut self, n: &Node, w: &Word) -> Option<u16> {
        match w.text.parse::<u16>() {
            Ok(p) if p > 0 && is_digits(&w.text) => Some(p),
            _ => {
                self.bad(n, w, "not a port 1-65535");
                None
            }
        }
    }

    /// Reports the arguments of `n` past the first `keep`, if any; returns
    /// whether there were.
    pub(super) fn extra_words(&mut self, n: &Node, keep: usize) -> bool {
        let Some(first) = n.args.get(keep) else {
            return false;
        };
        self.dropped(
            first.pos,
            format!(
                "{}: extra words ignored: {}",
                n.name(),
                shorten(&join(&n.args[keep..]))
            ),
        );
        true
    }

    /// The children of a statement that takes a block (and no arguments
    /// beyond `args`).
    pub(super) fn block<'n>(&mut self, n: &'n Node, args: usize) -> &'n [Node] {
        self.extra_words(n, args);
        if n.block.is_none() {
            self.dropped(n.pos(), format!("{}: a block {{ … }} is missing", n.name()));
        }
        n.children()
    }

    /// A notify-style script: the command, then keepalived's optional user
    /// and group, which are not kept.
    pub(super) fn script(&mut self, n: &Node) -> Option<String> {
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
    pub(super) fn shell_note(&mut self, n: &Node, cmd: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(decimal("1.5"), Some(1.5));
        assert_eq!(decimal(".5"), Some(0.5));
        assert_eq!(decimal("3"), Some(3.0));
        for bad in ["", ".", "-1", "1e3", "inf", "NaN", "1.2.3", "+1"] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }
}
