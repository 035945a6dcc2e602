//! VRRP between our agents, and with Debian's keepalived, on a bridge lab
//! (see `support/vrrplab.rs`). What is checked is what a peer sees: which
//! node holds the virtual address on its interface, whether a client's
//! requests to it are answered, and what `xlb status` reports. The steps
//! run in order and share the lab.

mod support;

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use lb_user::vrrp::{
    arp,
    wire::{self, Advert, Auth},
};
use libtest_mimic::{Arguments, Failed, Trial};
use support::vrrplab::*;

static LAB: std::sync::OnceLock<Lab> = std::sync::OnceLock::new();

fn lab() -> &'static Lab {
    LAB.get().expect("lab")
}

/// Our instances in these tests: VRRPv3 every 200 ms.
const ADVERT: f64 = 0.2;
const SETTLE: Duration = Duration::from_secs(6);
/// Slack the issue allows on top of the protocol's own timers.
const SLACK: Duration = Duration::from_millis(100);

/// One `vrrp_instances` entry.
fn inst(name: &str, prio: u32, extra: &str) -> String {
    let (vrid, vip) = if name == "VI_1" {
        (51, VIP)
    } else {
        (52, VIP2)
    };
    format!(
        "  - name: {name}\n    virtual_router_id: {vrid}\n    priority: {prio}\n    version: 3\n    advert_int: {ADVERT}\n    garp_master_delay: 1\n    virtual_ipaddress: [{vip}/24]\n{extra}"
    )
}

fn start(n: usize, prio: u32, extra: &str) {
    let l = lab();
    l.start_agent(n, &l.agent_config(n, "", &inst("VI_1", prio, extra)));
}

fn vrrp_state(n: usize, instance: &str) -> (String, serde_json::Value) {
    let s = lab().status(n);
    let v = s["vrrp"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["instance"] == instance).cloned())
        .unwrap_or_default();
    (v["state"].as_str().unwrap_or("?").to_string(), v)
}

fn serving(n: usize, service: &str) -> bool {
    lab().status(n)["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == service).cloned())
        .is_some_and(|s| s["serving"] == true)
}

/// Answers the client got from `vip` in `d`.
fn answers(vip: std::net::Ipv4Addr, d: Duration) -> usize {
    let p = Prober::start(lab(), vip);
    thread::sleep(d);
    p.finish().len()
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(format!("{}\n{}", msg(), lab().logs()).into())
    }
}

fn election_of_two_agents_and_only_the_master_serves() -> Result<(), Failed> {
    let l = lab();
    start(0, 150, "");
    start(1, 100, "");
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    // Stable: n2 stays BACKUP while n1 advertises.
    thread::sleep(Duration::from_secs(1));
    check(l.holders(VIP) == [0], || {
        format!("holders {:?}", l.holders(VIP))
    })?;
    let (s1, _) = vrrp_state(0, "VI_1");
    let (s2, v2) = vrrp_state(1, "VI_1");
    check(s1 == "MASTER" && s2 == "BACKUP", || format!("{s1} {s2}"))?;
    check(v2["master"] == node_addr(0).to_string(), || {
        format!("n2 sees master {}", v2["master"])
    })?;
    check(
        v2["counters"]["adverts_received"].as_u64() > Some(0),
        || format!("{v2}"),
    )?;
    check(serving(0, "dns-VI_1") && !serving(1, "dns-VI_1"), || {
        "only the MASTER serves the VIP".into()
    })?;
    let n = answers(VIP, Duration::from_millis(300));
    check(n > 10, || format!("{n} answers from the VIP in 300 ms"))
}

/// Sends raw IPv4 datagrams from the client onto the LAN.
fn inject(datagrams: Vec<Vec<u8>>) {
    let client = lab().client.name.clone();
    thread::spawn(move || {
        use socket2::{Domain, Protocol, Socket, Type};
        netlab::enter(&client).unwrap();
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap();
        s.set_header_included_v4(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        let to = std::net::SocketAddrV4::new(wire::GROUP, 0).into();
        for d in datagrams {
            s.send_to(&d, &to).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// A VRRPv3 advert for VRID 51 at priority 254 from the client, spoiled by `spoil`.
fn hostile(spoil: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let a = Advert {
        version: 3,
        vrid: 51,
        priority: 254,
        interval_cs: 20,
        addresses: vec![VIP],
        auth: Auth::None,
    };
    let mut d = vec![0u8; 20 + a.buffer_len()];
    let n = a.emit(&mut d[20..], CLIENT, wire::GROUP);
    wire::emit_ipv4(&mut d, CLIENT, wire::GROUP, 0, n);
    spoil(&mut d);
    d
}

fn hostile_adverts_are_dropped_counted_and_change_nothing() -> Result<(), Failed> {
    let l = lab();
    let mut bad = Vec::new();
    for _ in 0..3 {
        bad.push(hostile(|d| d[8] = 254)); // TTL
        bad.push(hostile(|d| d[27] ^= 1)); // checksum
        bad.push(hostile(|d| d[20] = 0x21)); // version 2 to a v3 instance
        bad.push(hostile(|d| d[21] = 99)); // another VRID
        bad.push(hostile(|d| {
            d.truncate(26); // shorter than the header
            d[2..4].copy_from_slice(&26u16.to_be_bytes());
        }));
    }
    inject(bad);
    thread::sleep(Duration::from_millis(300));
    let (s1, v1) = vrrp_state(0, "VI_1");
    check(s1 == "MASTER" && l.holders(VIP) == [0], || {
        format!("n1: {v1}")
    })?;
    let d = &v1["counters"]["dropped"];
    for kind in ["ttl", "checksum", "version", "vrid", "truncated"] {
        check(d[kind].as_u64() >= Some(3), || {
            format!("dropped {kind}: {d}")
        })?;
    }
    let log = std::fs::read_to_string(l.log(0))?;
    check(log.matches("TTL 254 is not 255").count() == 1, || {
        "one log line per kind, rate-limited".into()
    })
}

fn kill_9_fails_over_within_master_down_and_the_client_gap_is_no_longer() -> Result<(), Failed> {
    let l = lab();
    let bound = master_down(3, ADVERT, 100) + SLACK;
    let probe = Prober::start(l, VIP);
    thread::sleep(Duration::from_millis(500));
    // The node dies: its agent without a goodbye, and its link. (The agent
    // alone dying would leave its pinned data path serving.)
    let t0 = Instant::now();
    l.nodes[0].link_down("eth0")?;
    l.kill9(0);
    let took = l.wait_holders(VIP, &[1], &[1], SETTLE)?;
    thread::sleep(Duration::from_millis(500));
    let times = probe.finish();
    let (gap, n) = longest_gap(&times);
    eprintln!("kill -9: n2 held the VIP after {took:?}; client gap {gap:?} over {n} answers (bound {bound:?})");
    check(t0.elapsed() > took && took <= bound, || {
        format!("failover took {took:?}, bound {bound:?}")
    })?;
    let after = times.iter().filter(|t| **t > t0 + took).count();

    check(after > 20, || format!("{after} answers after the failover"))?;
    check(gap <= bound, || {
        format!("client gap {gap:?} is longer than the failover bound {bound:?}")
    })
}

fn a_restarted_higher_priority_agent_preempts() -> Result<(), Failed> {
    let l = lab();
    // The killed agent left its address behind; the new one removes it and
    // takes over once its master-down timer ignores n2's lower adverts.
    l.nodes[0].link_up("eth0").unwrap();
    start(0, 150, "");
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let (s2, _) = vrrp_state(1, "VI_1");
    check(s2 == "BACKUP", || format!("n2 is {s2}"))
}

fn graceful_stop_hands_over_within_the_skew_time() -> Result<(), Failed> {
    let l = lab();
    let bound = skew(3, ADVERT, 100) + SLACK;
    let arps = ArpCapture::start(l, Duration::from_millis(1800));
    let t0 = Instant::now();
    l.signal(0, libc::SIGTERM);
    let took = l.wait_holders(VIP, &[1], &[1], SETTLE)?;
    eprintln!("priority 0: n2 held the VIP after {took:?} (bound {bound:?})");
    l.stop(0, libc::SIGTERM);
    check(took <= bound && t0.elapsed() >= took, || {
        format!("handover took {took:?}, bound {bound:?}")
    })?;
    check(!l.holds(0, VIP), || "the stopped agent kept the VIP".into())?;
    // The new master announced the VIP: 5 gratuitous ARPs at once and 5
    // more after garp_master_delay (1 s here).
    let mac = l.nodes[1].mac("eth0").unwrap();
    let garps: Vec<Instant> = arps
        .finish()
        .into_iter()
        .filter(|(_, f)| {
            arp::Frame::new_checked(&f[..])
                .is_some_and(|a| a.is_gratuitous() && a.sender_ip() == VIP && a.eth_src() == mac)
        })
        .map(|(t, _)| t)
        .collect();
    check(garps.len() == 10, || {
        format!("{} gratuitous ARPs", garps.len())
    })?;
    let (first, second) = (garps[4] - garps[0], garps[5] - garps[0]);
    check(
        first < Duration::from_millis(50) && second >= Duration::from_millis(950),
        || format!("bursts: first spans {first:?}, second starts after {second:?}"),
    )
}

fn nopreempt_keeps_the_current_master() -> Result<(), Failed> {
    let l = lab();
    start(0, 150, "    preempt: false\n");
    // Well past n1's master-down time.
    thread::sleep(master_down(3, ADVERT, 150) * 3 + Duration::from_millis(500));
    check(l.holders(VIP) == [1], || {
        format!("holders {:?}", l.holders(VIP))
    })?;
    let (s1, v1) = vrrp_state(0, "VI_1");
    check(
        s1 == "BACKUP" && v1["master"] == node_addr(1).to_string(),
        || format!("n1: {v1}"),
    )?;
    l.stop(0, libc::SIGTERM);
    Ok(())
}

fn preempt_delay_defers_the_takeover() -> Result<(), Failed> {
    let l = lab();
    let t0 = Instant::now();
    start(0, 150, "    preempt_delay: 1.5\n");
    thread::sleep(Duration::from_millis(1300));
    check(l.holders(VIP) == [1], || {
        format!("holders {:?} before the delay", l.holders(VIP))
    })?;
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let took = t0.elapsed();
    check(took >= Duration::from_millis(1500), || {
        format!("took over after {took:?}")
    })
}

/// Restarts n1 (priority 150) tracking a script `name` that succeeds while
/// the returned file exists, with `params` after its `script` key and
/// `extra` instance keys; waits until n1 is MASTER again.
fn restart_n1_tracking(name: &str, params: &str, extra: &str) -> Result<PathBuf, Failed> {
    let l = lab();
    let flag = l.dir.join(format!("n1-{name}-ok"));
    std::fs::write(&flag, "")?;
    let scripts = format!(
        "vrrp_scripts:\n  {name}:\n    script: \"test -f {}\"\n    interval: 0.1\n{params}",
        flag.display()
    );
    l.stop(0, libc::SIGTERM);
    let extra = format!("    track_script: [{name}]\n{extra}");
    l.start_agent(0, &l.agent_config(0, &scripts, &inst("VI_1", 150, &extra)));
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    Ok(flag)
}

fn track_script_moves_mastership_and_back() -> Result<(), Failed> {
    let l = lab();
    let notify = l.dir.join("n1-notify");
    let extra = format!(
        "    notify: \"echo >> {n}\"\n    notify_master: \"echo master >> {n}\"\n    notify_backup: \"echo backup >> {n}\"\n    notify_stop: \"echo stop >> {n}\"\n",
        n = notify.display()
    );
    let flag = restart_n1_tracking(
        "chk",
        "    weight: -100\n    fall: 2\n    rise: 2\n",
        &extra,
    )?;
    std::fs::remove_file(&flag)?;
    l.wait_holders(VIP, &[0, 1], &[1], SETTLE)?;
    let (s1, v1) = vrrp_state(0, "VI_1");
    check(s1 == "BACKUP" && v1["priority"] == 50, || {
        format!("n1: {v1}")
    })?;
    check(
        v1["tracking"].to_string().contains("chk failed: -100"),
        || format!("n1 tracking: {}", v1["tracking"]),
    )?;
    std::fs::write(&flag, "")?;
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let (_, v1) = vrrp_state(0, "VI_1");
    check(v1["priority"] == 150, || format!("n1: {v1}"))?;
    // Scripts run without being waited for: give the last one a moment.
    thread::sleep(Duration::from_millis(200));
    let got = std::fs::read_to_string(&notify)?;
    let want = "INSTANCE VI_1 BACKUP 150\nbackup\nINSTANCE VI_1 MASTER 150\nmaster\nINSTANCE VI_1 BACKUP 50\nbackup\nINSTANCE VI_1 MASTER 150\nmaster\n";
    // Each transition's two scripts race each other: compare as multisets.
    let mut lines: Vec<&str> = got.lines().collect();
    let mut expect: Vec<&str> = want.lines().collect();
    lines.sort();
    expect.sort();
    check(lines == expect, || format!("notify scripts wrote:\n{got}"))
}

fn a_failing_weight_0_script_is_fault_and_hands_over_at_once() -> Result<(), Failed> {
    let l = lab();
    let flag = restart_n1_tracking("link", "    weight: 0\n", "")?;
    std::fs::remove_file(&flag)?;
    // FAULT leaves with a priority-0 advert: n2 needs only its skew.
    let t0 = Instant::now();
    let took = l.wait_holders(VIP, &[0, 1], &[1], SETTLE)?;
    let bound = Duration::from_millis(100) + skew(3, ADVERT, 100) + SLACK;
    let (s1, v1) = vrrp_state(0, "VI_1");
    check(s1 == "FAULT" && !serving(0, "dns-VI_1"), || {
        format!("n1: {v1}")
    })?;
    check(took <= bound && t0.elapsed() >= took, || {
        format!("n2 took over {took:?} after the script failed (bound {bound:?}, one script interval included)")
    })?;
    std::fs::write(&flag, "")?;
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    Ok(())
}

/// keepalived's interface tracking: the master's link goes down, it is
/// FAULT and the backup takes over after master-down; the link comes back,
/// the node returns and preempts.
fn link_down_is_fault_and_link_up_preempts_back() -> Result<(), Failed> {
    let l = lab();
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let t0 = Instant::now();
    l.nodes[0].link_down("eth0")?;
    let took = l.wait_holders(VIP, &[1], &[1], SETTLE)?;
    // Master-down of n2, plus one link poll.
    let bound = master_down(3, ADVERT, 100) + Duration::from_millis(100) + SLACK;
    let (s1, v1) = vrrp_state(0, "VI_1");
    eprintln!("n2 took over {took:?} after n1's link went down (bound {bound:?}); n1: {s1}");
    check(
        s1 == "FAULT"
            && v1["tracking"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains("interface eth0")))
            }),
        || format!("n1 with its link down: {v1}"),
    )?;
    check(!l.holds(0, VIP) && !serving(0, "dns-VI_1"), || {
        "n1 kept the VIP or its service in FAULT".into()
    })?;
    check(took <= bound && t0.elapsed() >= took, || {
        format!("n2 took {took:?}")
    })?;
    l.nodes[0].link_up("eth0").unwrap();
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let (s1, v1) = vrrp_state(0, "VI_1");
    check(s1 == "MASTER", || {
        format!("n1 after its link came back: {v1}")
    })
}

fn three_agents_elect_the_highest_and_fall_back_in_order() -> Result<(), Failed> {
    let l = lab();
    start(2, 200, "");
    l.wait_holders(VIP, &[0, 1, 2], &[2], SETTLE)?;
    for n in [0, 1] {
        let (s, v) = vrrp_state(n, "VI_1");
        check(
            s == "BACKUP" && v["master"] == node_addr(2).to_string(),
            || format!("n{}: {v}", n + 1),
        )?;
    }
    l.stop(2, libc::SIGTERM);
    // n1 (150) beats n2 (100).
    l.wait_holders(VIP, &[0, 1, 2], &[0], SETTLE)?;
    Ok(())
}

fn dual_master_each_node_serves_only_its_own_vip() -> Result<(), Failed> {
    let l = lab();
    for (n, (p1, p2)) in [(0, (150, 100)), (1, (100, 150))] {
        l.stop(n, libc::SIGTERM);
        let i = inst("VI_1", p1, "") + &inst("VI_2", p2, "");
        l.start_agent(n, &l.agent_config(n, "", &i));
    }
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    l.wait_holders(VIP2, &[0, 1], &[1], SETTLE)?;
    check(serving(0, "dns-VI_1") && !serving(0, "dns-VI_2"), || {
        "n1 serves VI_1 only".into()
    })?;
    check(serving(1, "dns-VI_2") && !serving(1, "dns-VI_1"), || {
        "n2 serves VI_2 only".into()
    })?;
    for vip in [VIP, VIP2] {
        let n = answers(vip, Duration::from_millis(300));
        check(n > 10, || format!("{n} answers from {vip}"))?;
    }
    Ok(())
}

fn split_brain_is_answered_and_heals_within_one_advert_interval() -> Result<(), Failed> {
    let l = lab();
    let n2 = &l.nodes[1];
    // n2 stops hearing VRRP: it claims VI_1 while n1 still holds it.
    n2.exec(&["nft", "add", "table", "inet", "xlbt"]).unwrap();
    n2.exec(&[
        "nft",
        "add chain inet xlbt in { type filter hook input priority 0 ; }",
    ])
    .unwrap();
    n2.exec(&["nft", "add rule inet xlbt in ip protocol vrrp drop"])
        .unwrap();
    let both = l.wait_holders(VIP, &[0, 1], &[0, 1], SETTLE);
    let (_, v1) = vrrp_state(0, "VI_1");
    let t0 = Instant::now();
    n2.exec(&["nft", "delete", "table", "inet", "xlbt"])
        .unwrap();
    both?;
    check(v1["counters"]["split_brain"].as_u64() > Some(0), || {
        format!("n1 did not count the split brain: {v1}")
    })?;
    let took = l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    let bound = Duration::from_secs_f64(ADVERT) + SLACK;
    eprintln!(
        "split brain healed after {:?} (bound {bound:?})",
        t0.elapsed()
    );
    check(took <= bound, || format!("healed after {took:?}"))?;
    thread::sleep(Duration::from_millis(500));
    check(l.holders(VIP) == [0] && l.holders(VIP2) == [1], || {
        format!("holders {:?} {:?}", l.holders(VIP), l.holders(VIP2))
    })?;
    let m = lab().metrics_text(0);
    check(
        m.contains("xlb_vrrp_split_brain_total{instance=\"VI_1\"}"),
        || format!("metrics lack the split-brain counter:\n{m}"),
    )?;
    for n in [0, 1] {
        l.stop(n, libc::SIGTERM);
    }
    Ok(())
}

fn unicast_peers_elect_without_multicast() -> Result<(), Failed> {
    let l = lab();
    let drop_multicast = |n: usize, add: bool| {
        let ns = &l.nodes[n];
        if add {
            ns.exec(&["nft", "add", "table", "inet", "xlbt"]).unwrap();
            ns.exec(&[
                "nft",
                "add chain inet xlbt in { type filter hook input priority 0 ; }",
            ])
            .unwrap();
            ns.exec(&["nft", "add rule inet xlbt in ip daddr 224.0.0.18 drop"])
                .unwrap();
        } else {
            ns.exec(&["nft", "delete", "table", "inet", "xlbt"])
                .unwrap();
        }
    };
    for (n, prio, peer) in [(0, 150, 1), (1, 100, 0)] {
        drop_multicast(n, true);
        let extra = format!(
            "    unicast_src_ip: {}\n    unicast_peers: [{}]\n",
            node_addr(n),
            node_addr(peer)
        );
        l.start_agent(n, &l.agent_config(n, "", &inst("VI_1", prio, &extra)));
    }
    let r = l.wait_holders(VIP, &[0, 1], &[0], SETTLE);
    thread::sleep(Duration::from_secs(1));
    let (s2, v2) = vrrp_state(1, "VI_1");
    let held = l.holders(VIP);
    for n in [0, 1] {
        l.stop(n, libc::SIGTERM);
        drop_multicast(n, false);
    }
    r?;
    check(held == [0] && s2 == "BACKUP", || {
        format!("{held:?} n2: {v2}")
    })?;
    check(
        v2["counters"]["adverts_received"].as_u64() > Some(3),
        || format!("n2: {v2}"),
    )
}

fn health_quorum_tracking_moves_mastership() -> Result<(), Failed> {
    let l = lab();
    let flag = l.dir.join("backend-healthy");
    std::fs::write(&flag, "")?;
    let extra = "    track_virtual_server: [{name: dns-VI_1, weight: -100}]\n";
    let cfg = l
        .agent_config(0, "", &inst("VI_1", 150, extra))
        .replace(
            &format!("      - {{address: {BACKEND}, port: 53}}\n"),
            &format!(
                "      - {{address: {BACKEND}, port: 53, misc_check: {{misc_path: \"test -f {}\"}}}}\n    delay_loop: 0.1\n",
                flag.display()
            ),
        );
    check(cfg.contains("misc_check"), || cfg.clone())?;
    l.start_agent(0, &cfg);
    start(1, 100, "");
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    std::fs::remove_file(&flag)?;
    let moved = l.wait_holders(VIP, &[0, 1], &[1], SETTLE);
    let (_, v1) = vrrp_state(0, "VI_1");
    moved?;
    check(v1["priority"] == 50, || format!("n1: {v1}"))?;
    std::fs::write(&flag, "")?;
    l.wait_holders(VIP, &[0, 1], &[0], SETTLE)?;
    for n in [0, 1] {
        l.stop(n, libc::SIGTERM);
    }
    Ok(())
}

/// keepalived's config for node 3 (eth0 .3).
fn keepalived_conf(version: u8, advert: f64, prio: u32, auth: bool) -> String {
    let auth = if auth {
        "  authentication {\n    auth_type PASS\n    auth_pass secret1\n  }\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n  router_id ka\n  vrrp_version {version}\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {prio}\n  advert_int {advert}\n{auth}  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )
}

fn ours(version: u8, advert: f64, prio: u32, auth: bool) -> String {
    let auth = if auth {
        "    authentication: {auth_type: PASS, auth_pass: secret1}\n"
    } else {
        ""
    };
    format!(
        "  - name: VI_1\n    virtual_router_id: 51\n    priority: {prio}\n    version: {version}\n    advert_int: {advert}\n    virtual_ipaddress: [{VIP}/24]\n{auth}"
    )
}

/// Both directions with keepalived: ours MASTER over its BACKUP, our
/// priority-0 handover, its MASTER over our BACKUP, its handover, and
/// preemption each way.
fn interop(version: u8, advert: f64, auth: bool) -> Result<(), Failed> {
    let l = lab();
    let (us, ka) = (0, 2);
    let among = [us, ka];
    let cfg = |prio| l.agent_config(us, "", &ours(version, advert, prio, auth));
    // 1. Ours MASTER (150); keepalived (100) accepts our adverts and stays
    //    BACKUP well past its master-down time.
    l.start_agent(us, &cfg(150));
    l.wait_holders(VIP, &among, &[us], SETTLE)?;
    l.start_keepalived(ka, &keepalived_conf(version, advert, 100, auth));
    thread::sleep(master_down(version, advert, 100) + Duration::from_millis(1500));
    check(l.holders(VIP) == [us], || {
        format!(
            "keepalived did not accept our adverts: {:?}",
            l.holders(VIP)
        )
    })?;
    // 2. Our priority-0 handover: keepalived takes over after its skew.
    let t0 = Instant::now();
    l.signal(us, libc::SIGTERM);
    let took = l.wait_holders(VIP, &among, &[ka], SETTLE)?;
    l.stop(us, libc::SIGTERM);
    let bound = skew(version, advert, 100) + SLACK;
    eprintln!("v{version}: keepalived took over from our priority 0 after {took:?} (its skew + 100 ms = {bound:?})");
    check(took <= bound && t0.elapsed() >= took, || {
        format!("keepalived took {took:?}")
    })?;
    // 3. keepalived MASTER (100), ours BACKUP (50): we accept its adverts.
    l.start_agent(us, &cfg(50));
    thread::sleep(master_down(version, advert, 50) + Duration::from_millis(1500));
    let (s, v) = vrrp_state(us, "VI_1");
    check(
        s == "BACKUP"
            && v["master"] == node_addr(ka).to_string()
            && v["counters"]["dropped"]
                .as_object()
                .is_none_or(|d| d.is_empty()),
        || format!("ours under keepalived: {v}"),
    )?;
    check(l.holders(VIP) == [ka], || {
        format!("holders {:?}", l.holders(VIP))
    })?;
    // 4. keepalived's priority-0 handover: we take over within our skew.
    let t0 = Instant::now();
    l.signal(ka, libc::SIGTERM);
    let took = l.wait_holders(VIP, &[us], &[us], SETTLE)?;
    l.stop(ka, libc::SIGTERM);
    let bound = skew(version, advert, 50) + SLACK;
    eprintln!(
        "v{version}: we took over from keepalived's priority 0 after {took:?} (bound {bound:?})"
    );
    check(took <= bound && t0.elapsed() >= took, || {
        format!("we took {took:?}")
    })?;
    check(!l.holds(ka, VIP), || "keepalived kept the VIP".into())?;
    // 5. keepalived (100) preempts us (50).
    l.start_keepalived(ka, &keepalived_conf(version, advert, 100, auth));
    l.wait_holders(VIP, &among, &[ka], SETTLE)?;
    let (s, _) = vrrp_state(us, "VI_1");
    check(s == "BACKUP", || {
        format!("ours is {s} after keepalived preempted")
    })?;
    // 6. We (150) preempt keepalived (100).
    l.stop(us, libc::SIGTERM);
    l.start_agent(us, &cfg(150));
    l.wait_holders(VIP, &among, &[us], SETTLE)?;
    l.stop(us, libc::SIGTERM);
    l.stop(ka, libc::SIGTERM);
    check(l.holders(VIP).is_empty(), || {
        format!("left behind: {:?}", l.holders(VIP))
    })
}

fn keepalived_interop_v2_with_pass_both_ways() -> Result<(), Failed> {
    interop(2, 1.0, true)
}

fn keepalived_interop_v3_both_ways() -> Result<(), Failed> {
    interop(3, 0.5, false)
}

/// A keepalived.conf as a tutorial writes it: node `n` of a master/backup
/// pair with an LVS virtual server for DNS on the VIP.
fn tutorial_conf(n: usize) -> String {
    let (state, prio) = if n == 0 {
        ("MASTER", 150)
    } else {
        ("BACKUP", 100)
    };
    format!(
        "! keepalived.conf, node n{node}\n\
         global_defs {{\n   router_id LB_N{node}\n}}\n\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 51\n    \
         priority {prio}\n    advert_int 1\n    authentication {{\n        auth_type PASS\n        auth_pass 1111\n    }}\n    \
         virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\n\
         virtual_server {VIP} 53 {{\n    delay_loop 6\n    lb_algo rr\n    lb_kind DR\n    protocol UDP\n\n    \
         real_server {BACKEND} 53 {{\n        weight 1\n    }}\n}}\n",
        node = n + 1
    )
}

/// `xlb import-keepalived` of node `n`'s file, with this lab's pin path.
fn imported(n: usize, conf: &str) -> Result<String, Failed> {
    let l = lab();
    let path = l.dir.join(format!("n{}-import.conf", n + 1));
    std::fs::write(&path, conf)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("import-keepalived")
        .arg(&path)
        .arg("--snat-address")
        .arg(snat_addr(n).to_string())
        .output()?;
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "import of n{}: exit {:?}\n{report}",
        n + 1,
        out.status.code()
    );
    check(out.status.success(), || {
        format!("the import dropped something:\n{report}")
    })?;
    let yaml = String::from_utf8(out.stdout)?;
    // Three agents share this host: each needs its own pins.
    Ok(yaml.replacen(
        "global:\n",
        &format!("global:\n  pin_path: {}\n", l.pin_dir(n).display()),
        1,
    ))
}

/// A keepalived master/backup pair, the same pair imported and run as two
/// agents, and a mixed pair: same master, same failover, and the imported
/// virtual server serves the VIP.
fn imported_keepalived_pair_behaves_like_the_original() -> Result<(), Failed> {
    let l = lab();
    let among = [0, 1];
    let confs = [tutorial_conf(0), tutorial_conf(1)];
    let yaml = [imported(0, &confs[0])?, imported(1, &confs[1])?];
    // `run` is a closure per node: keepalived with its file, or the agent
    // with the import of it. Returns the failover time after SIGTERM.
    let pair = |agents: [bool; 2]| -> Result<Duration, Failed> {
        for n in [1, 0] {
            if agents[n] {
                l.start_agent(n, &yaml[n]);
            } else {
                l.start_keepalived(n, &confs[n]);
            }
            thread::sleep(Duration::from_millis(300));
        }
        l.wait_holders(VIP, &among, &[0], master_down(2, 1.0, 100) + SETTLE)?;
        if agents[0] {
            check(answers(VIP, Duration::from_millis(500)) > 10, || {
                "the imported virtual server does not answer on n1".into()
            })?;
        }
        l.signal(0, libc::SIGTERM);
        let took = l.wait_holders(VIP, &among, &[1], SETTLE)?;
        l.stop(0, libc::SIGTERM);
        if agents[1] {
            check(answers(VIP, Duration::from_millis(500)) > 10, || {
                "the imported virtual server does not answer on n2".into()
            })?;
        }
        l.stop(1, libc::SIGTERM);
        Ok(took)
    };
    let bound = skew(2, 1.0, 100) + SLACK;
    let ka = pair([false, false])?;
    let ours = pair([true, true])?;
    let mixed = pair([false, true])?;
    eprintln!(
        "failover after SIGTERM of the master: keepalived pair {ka:?}, imported pair {ours:?}, keepalived -> imported agent {mixed:?} (bound {bound:?})"
    );
    check(ka <= bound && ours <= bound && mixed <= bound, || {
        format!("failover over {bound:?}")
    })?;
    check(l.holders(VIP).is_empty(), || {
        format!("left behind: {:?}", l.holders(VIP))
    })
}

macro_rules! trials {
    ($($f:ident),* $(,)?) => { vec![$(Trial::test(stringify!($f), $f)),*] };
}

fn main() {
    let mut args = Arguments::from_args();
    // The steps build on each other's state: run them in order.
    args.test_threads = Some(1);
    let lab = LAB.get_or_init(Lab::new);
    let trials = trials![
        election_of_two_agents_and_only_the_master_serves,
        hostile_adverts_are_dropped_counted_and_change_nothing,
        kill_9_fails_over_within_master_down_and_the_client_gap_is_no_longer,
        a_restarted_higher_priority_agent_preempts,
        graceful_stop_hands_over_within_the_skew_time,
        nopreempt_keeps_the_current_master,
        preempt_delay_defers_the_takeover,
        track_script_moves_mastership_and_back,
        a_failing_weight_0_script_is_fault_and_hands_over_at_once,
        link_down_is_fault_and_link_up_preempts_back,
        three_agents_elect_the_highest_and_fall_back_in_order,
        dual_master_each_node_serves_only_its_own_vip,
        split_brain_is_answered_and_heals_within_one_advert_interval,
        unicast_peers_elect_without_multicast,
        health_quorum_tracking_moves_mastership,
        keepalived_interop_v2_with_pass_both_ways,
        keepalived_interop_v3_both_ways,
        imported_keepalived_pair_behaves_like_the_original,
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    lab.teardown();
    conclusion.exit();
}
