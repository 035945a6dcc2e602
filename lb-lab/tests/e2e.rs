//! End to end, on the demo's lab: two agents as a VRRP pair, three nginx +
//! dnsmasq backends (plus a long-lived TCP echo on 3306), a client. The
//! steps share one lab and run in order.

use nix::sys::signal::Signal;
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use lb_lab::{
    lab::{self, backend_addr, lb_addr, Lab, Options, BACKENDS, ECHO_PORT, LBS, VIP},
    traffic::{http_get, Load, Rates, Stream},
};
use lb_user::sys::be_addr;
use libtest_mimic::{Arguments, Failed, Trial};

#[path = "e2e/edge.rs"]
mod edge;

type Step = fn(&Lab) -> Result<(), Failed>;

/// The demo's config plus a MySQL-port TCP service.
fn config(weight_b3: u32) -> String {
    let demo = std::fs::read_to_string(lab::config_file("demo.yaml")).unwrap();
    let demo = demo.replace(
        "      - address: 10.96.0.203\n        port: 80\n        weight: 1\n",
        &format!("      - address: 10.96.0.203\n        port: 80\n        weight: {weight_b3}\n"),
    );
    let mut servers = String::new();
    for b in 0..BACKENDS {
        servers += &format!(
            "      - {{address: {}, port: {ECHO_PORT}, tcp_check: {{connect_timeout: 1}}}}\n",
            backend_addr(b)
        );
    }
    format!(
        "{demo}  - name: mysql\n    vip: {VIP}\n    port: {ECHO_PORT}\n    protocol: tcp\n    \
         vrrp_instance: VI_DEMO\n    lb_algo: sh\n    snat: {{addresses: [{VIP}], ports: 20000-60999}}\n    \
         delay_loop: 1\n    real_servers:\n{servers}\
         \x20 - name: narrow\n    vip: {VIP}\n    port: {NARROW_PORT}\n    protocol: tcp\n    \
         vrrp_instance: VI_DEMO\n    snat: {{addresses: [{VIP}], ports: {}-{}}}\n    \
         real_servers:\n      - {{address: {}, port: 80}}\n{}",
        NARROW_SNAT.0,
        NARROW_SNAT.1,
        backend_addr(0),
        edge::service()
    )
}

/// A service to b1's nginx with four SNAT ports, where the test can make two
/// flows want the same one. The ports are outside the web service's pool,
/// which reaches the same backend from the same address.
const NARROW_PORT: u16 = 8080;
const NARROW_SNAT: (u16, u16) = (61000, 61003);
/// `hash_seed` of configs/demo.yaml.
const SEED: u32 = 0xd3e0;

/// Whether node `i`'s connection table has the client's flow from `port` to
/// the narrow service (read from its pinned map).
fn holds_flow(lab: &Lab, i: usize, port: u16) -> bool {
    use aya::maps::{HashMap, Map, MapData};
    let key = lb_common::FlowKey::new(
        be_addr(lab::CLIENT),
        be_addr(VIP),
        port.to_be(),
        NARROW_PORT.to_be(),
        lb_common::PROTO_TCP,
    );
    let Ok(data) = MapData::from_pin(format!("{}/CONNS", lab.pin_path(i))) else {
        return false;
    };
    HashMap::<MapData, lb_common::FlowKey, lb_common::Conn>::try_from(Map::LruHashMap(data))
        .is_ok_and(|m| m.get(&key, 0).is_ok())
}

/// The first SNAT port the data path tries for a client port to the narrow
/// service: what a node taking over derives on its own.
fn narrow_first_port(client_port: u16) -> u16 {
    let mut svc = lb_common::Service {
        snat_count: 1,
        port_min: NARROW_SNAT.0,
        port_max: NARROW_SNAT.1,
        ..Default::default()
    };
    svc.snat_addrs[0] = be_addr(VIP);
    let h = lb_common::hash::flow_hash(
        SEED,
        be_addr(lab::CLIENT),
        be_addr(VIP),
        client_port.to_be(),
        NARROW_PORT.to_be(),
        lb_common::PROTO_TCP,
    );
    lb_common::snat_candidate(&svc, h, 0).1
}

/// A TCP echo on 3306 in each backend, as threads of this process.
fn start_echoes(lab: &Lab) {
    for b in 0..BACKENDS {
        let ns = lab.backends[b].name.clone();
        let ready = std::sync::Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        thread::spawn(move || {
            netlab::enter(&ns).unwrap();
            let l = TcpListener::bind((backend_addr(b), ECHO_PORT)).unwrap();
            r.store(true, Ordering::SeqCst);
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut c = c;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        while !ready.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

fn web() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, 80)
}

/// `n` new HTTP connections from the client, on 4 threads: per backend
/// counts, errors, and the sources the backends saw.
fn many_gets(lab: &Lab, n: usize) -> ([usize; BACKENDS], usize, Vec<String>) {
    // Each thread enters the client's namespace itself.
    thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    lab.client.enter().unwrap();
                    let mut counts = [0usize; BACKENDS];
                    let (mut errors, mut seen) = (0, Vec::new());
                    for _ in 0..n / 4 {
                        match http_get(web()) {
                            Ok((b, src)) => {
                                counts[b] += 1;
                                if !seen.contains(&src) {
                                    seen.push(src);
                                }
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    (counts, errors, seen)
                })
            })
            .collect();
        let mut total = ([0usize; BACKENDS], 0, Vec::new());
        for h in handles {
            let (c, e, s) = h.join().unwrap();
            for (t, n) in total.0.iter_mut().zip(c) {
                *t += n;
            }
            total.1 += e;
            for src in s {
                if !total.2.contains(&src) {
                    total.2.push(src);
                }
            }
        }
        total
    })
}

fn http_shares_follow_weights(lab: &Lab) -> Result<(), Failed> {
    let (counts, errors, seen) = many_gets(lab, 3000);
    let total: usize = counts.iter().sum();
    println!(
        "  3000 new connections: per backend {counts:?}, errors {errors}, sources seen {seen:?}"
    );
    ensure(errors == 0, format!("{errors} requests failed"))?;
    for (b, want) in [(0, 0.50), (1, 0.25), (2, 0.25)] {
        let got = counts[b] as f64 / total as f64;
        ensure(
            (got - want).abs() <= 0.05,
            format!(
                "b{} got {:.1} % of new connections, want {:.0} % ± 5",
                b + 1,
                got * 100.0,
                want * 100.0
            ),
        )?;
    }
    ensure(
        seen == [VIP.to_string()],
        format!("backends saw sources {seen:?}, want only the SNAT address {VIP}"),
    )
}

fn dns_with_dig(lab: &Lab) -> Result<(), Failed> {
    let mut answered = [0usize; BACKENDS];
    for _ in 0..30 {
        let out = lab.client.exec(&[
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            &format!("@{VIP}"),
            "whoami.demo",
            "TXT",
        ])?;
        let name = out.trim().trim_matches('"');
        let b = name
            .strip_prefix('b')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=BACKENDS).contains(n))
            .ok_or_else(|| format!("dig answered {out:?}"))?;
        answered[b - 1] += 1;
    }
    println!("  30 dig queries: answers per backend {answered:?}");
    ensure(
        answered.iter().all(|&n| n > 0),
        format!("every backend should answer some of 30 queries: {answered:?}"),
    )
}

fn mysql_port_stream(lab: &Lab) -> Result<(), Failed> {
    lab.client.within(|| -> Result<(), Failed> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddrV4::new(VIP, ECHO_PORT).into(),
            Duration::from_secs(1),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        for i in 0..40u32 {
            // Packets of different sizes, up to several segments.
            let msg: Vec<u8> = (0..(i * 397 % 6000 + 1)).map(|j| (i + j) as u8).collect();
            s.write_all(&msg)?;
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back)?;
            ensure(back == msg, format!("round trip {i}: echo differs"))?;
            thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    })?
}

fn non_vip_traffic(lab: &Lab) -> Result<(), Failed> {
    // An ssh-like service on each LB node's own address.
    for i in 0..LBS {
        let l = lab.lbs[i].within(|| TcpListener::bind((lb_addr(i), 22)))??;
        let server = thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let (mut c, _) = l.accept()?;
            let mut buf = vec![0u8; 5];
            c.read_exact(&mut buf)?;
            c.write_all(b"SSH-2.0-lab\r\n")?;
            Ok(buf)
        });
        let banner = lab.client.within(|| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect_timeout(
                &SocketAddrV4::new(lb_addr(i), 22).into(),
                Duration::from_secs(1),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"hello")?;
            let mut b = vec![0u8; 13];
            s.read_exact(&mut b)?;
            Ok(b)
        })??;
        ensure(
            banner == b"SSH-2.0-lab\r\n",
            "LB node's own TCP service answered wrongly",
        )?;
        ensure(
            server.join().unwrap()? == b"hello",
            "LB node's TCP service got wrong bytes",
        )?;
        lab.client.exec(&[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            &lb_addr(i).to_string(),
        ])?;
    }
    // The VIP itself answers ping through the master's kernel.
    lab.client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", &VIP.to_string()])?;
    Ok(())
}

fn write_config(lab: &Lab, weight_b3: u32) {
    std::fs::write(&lab.opts.config, config(weight_b3)).unwrap();
}

/// A field of backend `b` of `service` in node `node`'s status.
fn backend_field(
    lab: &Lab,
    node: usize,
    service: &str,
    b: usize,
    field: &str,
) -> serde_json::Value {
    lab.status(node)
        .ok()
        .and_then(|s| lab::backend(&s, service, backend_addr(b)).map(|v| v[field].clone()))
        .unwrap_or_default()
}

/// Rewrites b3's web weight in the config, reloads both agents and waits
/// until both apply it.
fn set_b3_weight(lab: &Lab, weight: u32) -> Result<(), Failed> {
    write_config(lab, weight);
    for i in 0..LBS {
        lab.reload_agent(i)?;
    }
    Ok(lab::wait_for(
        &format!("reload to b3 weight {weight} on both nodes"),
        Duration::from_secs(5),
        || (0..LBS).all(|i| backend_field(lab, i, "web", 2, "weight") == weight),
    )?)
}

fn config_reload(lab: &Lab) -> Result<(), Failed> {
    let load = Load::start(
        &lab.client.name,
        VIP,
        Rates {
            http: 20,
            dns: 0,
            streams: 6,
        },
    );
    thread::sleep(Duration::from_secs(1));
    set_b3_weight(lab, 0)?;
    let (counts, errors, _) = many_gets(lab, 400);
    println!("  weight of b3 set to 0 by reload: 400 new connections {counts:?}, errors {errors}");
    ensure(
        counts[2] == 0 && errors == 0,
        format!("after the reload b3 still got new connections: {counts:?}, errors {errors}"),
    )?;
    set_b3_weight(lab, 1)?;
    let total = load.stop();
    println!("  during both reloads: {total:?}");
    ensure(
        total.stream_breaks == 0 && total.http_errors == 0,
        format!(
            "a reload disturbed traffic: {} streams broke, {} requests failed",
            total.stream_breaks, total.http_errors
        ),
    )
}

fn backend_death_and_recovery(lab: &Lab) -> Result<(), Failed> {
    // Streams opened now: note which backend each has, then kill b2.
    let streams: Vec<(Stream, usize)> = lab.client.within(|| {
        (0..12)
            .filter_map(|_| {
                let mut s = Stream::open(web()).ok()?;
                let b = s.request().ok()?;
                Some((s, b))
            })
            .collect()
    })?;
    ensure(streams.len() == 12, "could not open 12 keep-alive streams")?;
    let killed_at = Instant::now();
    lab.kill_backend(1);
    let master = lab.wait_master(Duration::from_secs(1))?;
    let b2_health = || backend_field(lab, master, "web", 1, "health");
    lab::wait_for("b2 marked down", Duration::from_secs(5), || {
        b2_health() == "down"
    })?;
    println!(
        "  b2 marked down {} ms after its servers died",
        killed_at.elapsed().as_millis()
    );
    let (counts, errors, _) = many_gets(lab, 400);
    println!("  then 400 new connections: {counts:?}, errors {errors}");
    ensure(
        counts[1] == 0 && errors == 0,
        format!("new connections still reach dead b2: {counts:?}, errors {errors}"),
    )?;
    // Streams to b1 and b3 are untouched.
    let mut kept = 0;
    lab.client.within(|| -> Result<(), Failed> {
        for (mut s, b) in streams {
            if b == 1 {
                continue;
            }
            let now = s
                .request()
                .map_err(|e| format!("a stream to b{} broke: {e:#}", b + 1))?;
            ensure(
                now == b,
                format!("a stream moved from b{} to b{}", b + 1, now + 1),
            )?;
            kept += 1;
        }
        Ok(())
    })??;
    println!("  {kept} established streams to b1/b3 answered by the same backend");
    lab.start_backend(1)?;
    lab::wait_for("b2 back up", Duration::from_secs(5), || b2_health() == "up")?;
    let (counts, errors, _) = many_gets(lab, 400);
    println!("  b2 back: 400 new connections {counts:?}, errors {errors}");
    ensure(
        counts[1] > 50 && errors == 0,
        format!("b2 did not get its share back: {counts:?}"),
    )
}

/// Anyone on the link can send to the sync group: a malformed datagram is
/// refused, and a flow for a service this node does not have is ignored.
fn sync_refuses_foreign_flows(lab: &Lab) -> Result<(), Failed> {
    use lb_user::sync::wire::{self, Entry};
    let master = lab.wait_master(Duration::from_secs(1))?;
    let backup = 1 - master;
    let counters = || -> Result<(u64, u64, u64), Failed> {
        let s = lab.status(backup)?;
        let n = |k: &str| s["sync"][k].as_u64().unwrap_or(u64::MAX);
        Ok((n("refused"), n("ignored"), n("installed")))
    };
    let before = counters()?;
    let foreign = Entry {
        client: lab::CLIENT,
        client_port: 12345,
        vip: std::net::Ipv4Addr::new(10, 96, 0, 99),
        vip_port: 80,
        backend: backend_addr(0),
        backend_port: 80,
        snat: VIP,
        snat_port: 20000,
        proto: lb_common::PROTO_TCP,
        closed: false,
    };
    let mut good = Vec::new();
    wire::emit(0, &[foreign], &mut good);
    lab.client.within(|| -> std::io::Result<()> {
        let s = std::net::UdpSocket::bind((lab::CLIENT, 0))?;
        s.set_multicast_ttl_v4(1)?;
        let to = (std::net::Ipv4Addr::new(224, 0, 0, 81), 8848);
        s.send_to(&[9, 0, 0, 1], to)?;
        s.send_to(&good, to)?;
        Ok(())
    })??;
    lab::wait_for(
        "the backup counts both datagrams",
        Duration::from_secs(2),
        || counters().is_ok_and(|c| c.0 > before.0 && c.1 > before.1),
    )?;
    let after = counters()?;
    println!("  backup sync counters (refused, ignored, installed): {before:?} -> {after:?}");
    // The backup serves nothing: the peer's own flows are installed, so
    // only the foreign one can be ignored.
    ensure(after.1 == before.1 + 1, "the foreign flow was not ignored")
}

fn vrrp_failover_with_traffic(lab: &Lab) -> Result<(), Failed> {
    let master = lab.wait_master(Duration::from_secs(1))?;
    let other = 1 - master;
    let load = Load::start(
        &lab.client.name,
        VIP,
        Rates {
            http: 50,
            dns: 20,
            streams: 6,
        },
    );
    // Two streams whose flows want the same SNAT port: the second gets
    // another, which only the connection sync tells the backup (the demo
    // syncs every flow; the second is the one that needs it).
    let a = 21000;
    let b = (a + 1..a + 400)
        .find(|&p| narrow_first_port(p) == narrow_first_port(a))
        .ok_or("no client port with the same first SNAT port")?;
    let narrow = SocketAddrV4::new(VIP, NARROW_PORT);
    let mut pinned: Vec<Stream> = lab.client.within(|| {
        [a, b]
            .map(|p| Stream::open_from(narrow, p))
            .into_iter()
            .collect::<anyhow::Result<_>>()
    })??;
    for s in &mut pinned {
        s.request()?;
    }
    lab::wait_for(
        "the backup installs the synced flow",
        Duration::from_secs(3),
        || holds_flow(lab, other, b),
    )?;
    ensure(holds_flow(lab, other, a), "the first flow was not synced")?;
    thread::sleep(Duration::from_secs(2));
    let before = load.stats.snapshot();
    let t0 = Instant::now();
    lab.stop_agent(master, Signal::SIGTERM);
    lab::wait_for(
        &format!("lb{} MASTER", other + 1),
        Duration::from_secs(5),
        || lab.vrrp_state(other) == "MASTER",
    )?;
    println!(
        "  lb{} MASTER {} ms after lb{} got SIGTERM",
        other + 1,
        t0.elapsed().as_millis(),
        master + 1
    );
    thread::sleep(Duration::from_secs(3));
    // The second flow speaks first on the new master: derived alone, it
    // would take the first flow's port and break both.
    for (s, port) in pinned.iter_mut().zip([a, b]).rev() {
        s.request().map_err(|e| {
            format!("the stream from client port {port} to the narrow service broke: {e:#}")
        })?;
    }
    println!("  both streams that wanted one SNAT port answered after the failover");
    // Read after stop: a stream that stays silent errs only at its timeout.
    let stats = load.stats.clone();
    let total = load.stop();
    let last_error = stats.last_error.lock().unwrap().clone();
    let http: u64 = total.http.iter().sum::<u64>() - before.http.iter().sum::<u64>();
    println!("  during the failover: {total:?}");
    ensure(
        total.stream_breaks == 0,
        format!(
            "{} keep-alive streams broke (last: {last_error})",
            total.stream_breaks
        ),
    )?;
    ensure(
        total.http_errors <= 2 && total.dns_errors <= 2,
        format!(
            "{} HTTP and {} DNS errors during the failover",
            total.http_errors, total.dns_errors
        ),
    )?;
    ensure(
        http > 100,
        format!("only {http} HTTP answers after the failover started"),
    )?;
    // The stopped node comes back as BACKUP (preempt: false).
    lab.start_agent(master)?;
    thread::sleep(Duration::from_secs(4));
    ensure(
        lab.vrrp_state(master) == "BACKUP",
        "the restarted node should stay BACKUP",
    )?;
    ensure(
        lab.vrrp_state(other) == "MASTER",
        "the VIP should stay where it is",
    )
}

fn agent_restart(lab: &Lab) -> Result<(), Failed> {
    let master = lab.wait_master(Duration::from_secs(1))?;
    let backup = 1 - master;
    let load = Load::start(
        &lab.client.name,
        VIP,
        Rates {
            http: 40,
            dns: 10,
            streams: 6,
        },
    );
    thread::sleep(Duration::from_secs(1));
    // The backup crashes and restarts: nothing moves.
    lab.stop_agent(backup, Signal::SIGKILL);
    lab.start_agent(backup)?;
    thread::sleep(Duration::from_secs(1));
    // The master restarts the way a service manager does (SIGTERM, start):
    // the VIP goes to the peer and flows carry on there.
    lab.stop_agent(master, Signal::SIGTERM);
    lab.start_agent(master)?;
    thread::sleep(Duration::from_secs(3));
    let total = load.stop();
    println!("  both agents restarted: {total:?}");
    ensure(
        lab.wait_master(Duration::from_secs(1)).is_ok(),
        "no master after the restarts",
    )?;
    ensure(
        total.stream_breaks == 0,
        format!("{} keep-alive streams broke", total.stream_breaks),
    )?;
    ensure(
        total.http_errors <= 2,
        format!(
            "{} HTTP requests failed across the restarts",
            total.http_errors
        ),
    )
}

/// Removes labs of earlier runs whose test process is gone.
fn reap_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("xlbt-") else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some("e2e")) = (parts.next(), parts.next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = lab::clean(&format!("xlbt-{pid}-e2e"));
        }
    }
}

fn main() {
    let args = Arguments::from_args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("e2e: skipped, needs root");
        return;
    }
    reap_stale();
    let prefix = format!("xlbt-{}-e2e", std::process::id());
    let steps: Vec<(&str, Step)> = vec![
        (
            "http_shares_follow_weights_and_backends_see_snat",
            http_shares_follow_weights,
        ),
        ("dns_over_udp_with_dig", dns_with_dig),
        ("mysql_port_long_lived_tcp_stream", mysql_port_stream),
        ("non_vip_traffic_to_lb_nodes_unaffected", non_vip_traffic),
        ("config_reload_under_traffic", config_reload),
        ("backend_death_and_recovery", backend_death_and_recovery),
        ("sync_refuses_foreign_flows", sync_refuses_foreign_flows),
        (
            "spoofed_flood_spares_real_clients",
            edge::spoofed_flood_spares_real_clients,
        ),
        (
            "path_mtu_discovery_through_the_vip",
            edge::path_mtu_discovery_through_the_vip,
        ),
        ("vrrp_failover_with_traffic", vrrp_failover_with_traffic),
        ("agent_restarts_lose_no_connection", agent_restart),
    ];
    let lab = Lab::build(Options {
        prefix: prefix.clone(),
        xlb: lab::find_xlb().expect("xlb binary"),
        config: lab::state_dir(&prefix).join("e2e.yaml"),
        native_pass: false,
    })
    .expect("building the lab");
    write_config(&lab, 1);
    start_echoes(&lab);
    for i in 0..LBS {
        lab.start_agent(i).expect("starting an agent");
    }
    lab.wait_master(Duration::from_secs(10))
        .expect("a VRRP master");
    // Both services healthy on the master before the first step.
    let deadline = Instant::now() + Duration::from_secs(10);
    let healthy = |lab: &Lab| {
        lab.wait_master(Duration::from_millis(100))
            .ok()
            .and_then(|m| lab.status(m).ok())
            .is_some_and(|s| {
                s["services"].as_array().is_some_and(|v| {
                    v.iter().all(|v| {
                        v["backends"].as_array().map(Vec::len)
                            == v["healthy"].as_u64().map(|n| n as usize)
                    })
                })
            })
    };
    while !healthy(&lab) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let lab = std::sync::Arc::new(lab);
    let trials: Vec<Trial> = steps
        .into_iter()
        .map(|(name, f)| {
            let lab = lab.clone();
            Trial::test(name, move || f(&lab))
        })
        .collect();
    let mut args = args;
    // The steps share the lab and run in order.
    args.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&args, trials);
    drop(lab);
    conclusion.exit_if_failed();
}
