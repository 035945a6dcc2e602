//! keepalived statements → our [`Config`], with the comments the YAML will
//! carry ([`Ann`]) and report items: each section is read on its own, then
//! resolved against the others (global defaults, the instance holding a
//! VIP, the scripts an instance tracks). Nothing is dropped silently.

use std::net::Ipv4Addr;

use super::{
    ann::Ann,
    global::{global_defs, sync_daemon, Globals},
    lexer::Pos,
    lvs::{self, virtual_server, KServer},
    report::Cx,
    scripts::{self, vrrp_script, KScript},
    tree::Node,
    vrrp::{finish_instance, sync_group, vrrp_instance, KGroup, KInstance, KTrack},
    Item, Kind, Options,
};
use crate::config::{Config, Global, SyncDaemon};

/// The translation.
pub struct Out {
    pub config: Config,
    pub ann: Ann,
    /// Key paths deliberately left invalid for the operator to fill in.
    pub placeholders: Vec<String>,
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

fn resolve(
    cx: &mut Cx,
    opts: &Options,
    mut g: Globals,
    scripts: Vec<KScript>,
    kinstances: Vec<KInstance>,
    servers: Vec<KServer>,
) -> Out {
    let mut c = Config {
        global: Global::default(),
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
    sync(cx, &mut c, &mut ann, g.sync.take(), old_syncs);
    interface(
        cx,
        &mut c,
        &mut ann,
        opts,
        &g,
        named_iface,
        &mut placeholders,
    );

    scripts::resolve(cx, &mut c, &mut ann, scripts, &tracks);
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
    let mut ctx = lvs::Context {
        vip_sets: &vip_sets,
        snat: &snat_opt,
        placeholders: &mut placeholders,
    };
    for k in servers {
        lvs::finish_server(cx, &mut c, &mut ann, &mut ctx, k);
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

/// The connection sync: global_defs' `lvs_sync_daemon` (`global`, with where
/// it was written), else the first instance's older
/// `lvs_sync_daemon_interface` (`old`: where, interface, instance).
fn sync(
    cx: &mut Cx,
    c: &mut Config,
    ann: &mut Ann,
    global: Option<(Pos, SyncDaemon)>,
    old: Vec<(Pos, String, String)>,
) {
    let mut chosen = global;
    // keepalived reads `lvs_sync_daemon_interface X` in an instance as
    // `lvs_sync_daemon X <that instance>`; the global form wins, and there
    // is one sync daemon.
    let global_sync = chosen.is_some();
    for (pos, iface, inst) in old {
        if global_sync {
            cx.dropped(
                pos,
                format!("lvs_sync_daemon_interface {iface}: global_defs lvs_sync_daemon is used instead"),
            );
        } else if let Some((_, first)) = &chosen {
            cx.dropped(
                pos,
                format!(
                    "lvs_sync_daemon_interface {iface}: one sync runs, the one of vrrp_instance {}",
                    first.vrrp_instance
                ),
            );
        } else {
            chosen = Some((pos, sync_daemon(iface, inst)));
        }
    }
    if let Some((pos, sd)) = &chosen {
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
}

/// `global.interface`: `--interface`, else the first instance that names
/// one (`named`: instance, interface), else global_defs'
/// `default_interface`, else the first instance's, else a placeholder.
fn interface(
    cx: &mut Cx,
    c: &mut Config,
    ann: &mut Ann,
    opts: &Options,
    g: &Globals,
    named: Option<(String, String)>,
    placeholders: &mut Vec<String>,
) {
    // global.interface.
    let iface_path = "global.interface";
    if let Some(x) = &opts.interface {
        c.global.interface = x.clone();
        ann.trail(iface_path, "from --interface");
    } else if let Some((name, x)) = &named {
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
}
