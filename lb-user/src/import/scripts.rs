//! `vrrp_script` blocks, and the weights instances track them with: xlb
//! keeps one weight per script, so a second weight makes a copy.

use std::collections::{BTreeMap, HashMap};

use super::{
    ann::{sub, Ann},
    report::{shorten, Cx, USER},
    tree::Node,
    vrrp::{KTrack, Want},
};
use crate::config::{Config, VrrpScript};

/// A `vrrp_script`.
#[derive(Debug)]
pub(super) struct KScript {
    pub(super) name: String,
    /// The command as written; `reverse` inverts it where it applies.
    pub(super) s: VrrpScript,
    pub(super) reverse: bool,
    pub(super) ann: Ann,
}

pub(super) fn vrrp_script(cx: &mut Cx, n: &Node) -> Option<KScript> {
    let Some(name) = n.args.first().map(|w| w.text.clone()) else {
        cx.dropped(n.pos(), "vrrp_script without a name: ignored");
        return None;
    };
    let mut s = VrrpScript::default();
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

/// Gives each instance of `c` the scripts it tracks (`tracks[i]` for
/// instance `i`), and `c` the scripts: a track_script weight overrides the
/// script's own for that instance; xlb keeps one weight per script, so
/// another override needs a copy of the script.
pub(super) fn resolve(
    cx: &mut Cx,
    c: &mut Config,
    ann: &mut Ann,
    scripts: Vec<KScript>,
    tracks: &[Vec<KTrack>],
) {
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
}
