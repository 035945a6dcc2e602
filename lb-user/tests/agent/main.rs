//! The agent binary on a namespace lab with real TCP and UDP traffic:
//!
//! ```text
//!  client ── lbc [ lb: xlb run, XDP on all four links ] lbb1 ── b1
//!                                                      lbb2 ── b2
//!                                                      lbb3 ── b3
//! ```
//!
//! Backends are servers in this process, each on a thread inside its
//! backend's namespace; they answer with their name and the source address
//! they saw. The steps share one agent and run in order.

mod lab;
#[path = "../support/mod.rs"]
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    sync::{Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use aya::Ebpf;
use lab::*;
use libtest_mimic::{Arguments, Failed, Trial};
use support::netns::*;

// ---- steps, in order ----

fn tcp_reaches_every_backend_from_the_snat_address() -> Result<(), Failed> {
    let seen = new_tcp_flows(60)?;
    let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    if names != BTreeSet::from(["b1", "b2", "b3"]) {
        return Err(format!("backends reached: {names:?}").into());
    }
    for (name, peers) in &seen {
        if let Some(p) = peers.iter().find(|p| p.ip() != SNAT) {
            return Err(format!("{name} saw source {p}, not the SNAT address {SNAT}").into());
        }
    }
    Ok(())
}

fn udp_reaches_every_backend_and_replies_come_from_the_vip() -> Result<(), Failed> {
    lab().client.enter().unwrap();
    let mut names = BTreeSet::new();
    for i in 0..60 {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(format!("query {i}").as_bytes(), (VIP, 53))?;
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf)?;
        if from != SocketAddr::from((VIP, 53)) {
            return Err(format!("reply from {from}, not the VIP").into());
        }
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let (name, peer) = text.split_once(' ').ok_or("bad reply")?;
        let peer: SocketAddr = peer.parse()?;
        if peer.ip() != SNAT {
            return Err(format!("{name} saw {peer}, not the SNAT address").into());
        }
        names.insert(name.to_string());
    }
    if names.len() != 3 {
        return Err(format!("UDP reached only {names:?}").into());
    }
    Ok(())
}

fn xlb_status(json: bool) -> Result<String, Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xlb"));
    cmd.arg("status")
        .arg("--socket")
        .arg(lab().dir.join("xlb.sock"));
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("xlb status: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// After the traffic above: every backend has counters, and the metrics
/// endpoint says the same.
fn status_and_metrics_show_services_backends_and_counters() -> Result<(), Failed> {
    let v: serde_json::Value = serde_json::from_str(&xlb_status(true)?)?;
    let services = v["services"].as_array().ok_or("no services")?;
    let web = services
        .iter()
        .find(|s| s["name"] == "web")
        .ok_or("no web service")?;
    if web["serving"] != true || web["new_conns"].as_u64().unwrap_or(0) < 60 {
        return Err(format!("web: {web}").into());
    }
    for b in web["backends"].as_array().ok_or("no backends")? {
        if b["health"] != "up" || b["weight"] != 1 || b["new_conns"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("backend {b}").into());
        }
    }
    if v["reasons"]["redirect_forward"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("reasons: {}", v["reasons"]).into());
    }
    let text = xlb_status(false)?;
    if !text.contains(&format!("service web {VIP}:80/tcp: serving, 3 healthy")) {
        return Err(format!("status text:\n{text}").into());
    }
    lab().lb.enter().unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", 9464))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut c, &mut body)?;
    let line = body
        .lines()
        .find(|l| l.starts_with("xlb_service_connections_total{") && l.contains("service=\"web\""))
        .ok_or_else(|| format!("no web connections metric in:\n{body}"))?;
    let n: u64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
    if !body.starts_with("HTTP/1.1 200 OK") || n < 60 || !body.contains("xlb_backend_up{") {
        return Err(format!("metrics:\n{body}").into());
    }
    Ok(())
}

/// Clients that connect and say nothing hold neither the status socket
/// nor the metrics endpoint: both are served off the agent's loop, each
/// connection on its own.
fn idle_clients_hold_neither_status_nor_metrics() -> Result<(), Failed> {
    let lab = lab();
    lab.lb.enter()?;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(("127.0.0.1", 9464))?);
    }
    let mut idle_unix = Vec::new();
    for _ in 0..20 {
        idle_unix.push(std::os::unix::net::UnixStream::connect(
            lab.dir.join("xlb.sock"),
        )?);
    }
    let t = Instant::now();
    let text = xlb_status(false)?;
    let took = t.elapsed();
    if !text.contains("service web") || took > Duration::from_secs(1) {
        return Err(format!("status took {took:?} beside 40 idle clients:\n{text}").into());
    }
    let mut c = TcpStream::connect(("127.0.0.1", 9464))?;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut c, &mut body)?;
    if !body.starts_with("HTTP/1.1 200 OK") || t.elapsed() > Duration::from_secs(2) {
        return Err(format!("metrics after {:?}:\n{body}", t.elapsed()).into());
    }
    drop((idle, idle_unix));
    Ok(())
}

fn non_vip_traffic_to_the_node_is_untouched() -> Result<(), Failed> {
    let lab = lab();
    lab.lb.enter().unwrap();
    let listener = TcpListener::bind((LB_CLIENT_SIDE, 2222))?;
    let server = thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        c.write_all(b"SSH-2.0-test\r\n")
    });
    lab.client.enter().unwrap();
    let mut s = BufReader::new(TcpStream::connect_timeout(
        &SocketAddr::from((LB_CLIENT_SIDE, 2222)),
        Duration::from_secs(3),
    )?);
    let mut banner = String::new();
    s.read_line(&mut banner)?;
    server.join().unwrap()?;
    if banner != "SSH-2.0-test\r\n" {
        return Err(format!("banner {banner:?}").into());
    }
    lab.client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.98.0.1"])
        .unwrap();
    Ok(())
}

fn reload_removes_a_backend_and_keeps_its_established_flow() -> Result<(), Failed> {
    let lab = lab();
    let mut long = tcp_connect()?;
    let (victim, _) = tcp_request(&mut long)?;
    let index = victim[1..].parse::<usize>()? - 1;
    let rest: Vec<Ipv4Addr> = BACKENDS
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, a)| *a)
        .collect();
    std::fs::write(lab.dir.join("xlb.yaml"), config(&rest))?;
    signal_agent(lab, libc::SIGHUP);
    wait_log(lab, "reloaded", 1)?;
    let seen = new_tcp_flows(30)?;
    if seen.contains_key(&victim) {
        return Err(format!("new flows still reach the removed {victim}: {seen:?}").into());
    }
    let (again, _) = tcp_request(&mut long)?;
    if again != victim {
        return Err(format!("the established flow moved from {victim} to {again}").into());
    }
    Ok(())
}

fn bad_reload_is_refused_and_the_old_config_keeps_serving() -> Result<(), Failed> {
    let lab = lab();
    let good = std::fs::read_to_string(lab.dir.join("xlb.yaml"))?;
    std::fs::write(
        lab.dir.join("xlb.yaml"),
        "global:\n  interface: lbc\n  bogus: 1\n",
    )?;
    signal_agent(lab, libc::SIGHUP);
    let refused = wait_log(lab, "reload refused", 1);
    std::fs::write(lab.dir.join("xlb.yaml"), good)?;
    refused?;
    let log = agent_log(lab);
    if !log.contains("global.bogus: unknown key `bogus`") {
        return Err(format!("the refusal does not name the key:\n{log}").into());
    }
    let seen = new_tcp_flows(20)?;
    if seen.len() != 2 {
        return Err(format!("after the refused reload: {seen:?}").into());
    }
    Ok(())
}

/// The app service as `xlb status --json` shows it.
fn app_status() -> Result<serde_json::Value, Failed> {
    let v: serde_json::Value = serde_json::from_str(&xlb_status(true)?)?;
    let app = v["services"]
        .as_array()
        .ok_or("no services")?
        .iter()
        .find(|s| s["name"] == "app")
        .cloned();
    Ok(app.ok_or("no app service")?)
}

/// Polls the app service's status until `ok` holds.
fn wait_app(
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, Failed> {
    let start = Instant::now();
    loop {
        let app = app_status()?;
        if ok(&app) {
            return Ok(app);
        }
        if start.elapsed() > STEP_TIMEOUT {
            return Err(format!("app never {what}: {app:#}").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn health_of(app: &serde_json::Value, addr: Ipv4Addr) -> String {
    app["backends"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .find(|b| b["address"] == addr.to_string() && b["sorry"] == false)
        })
        .map(|b| b["health"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn health_takes_a_dead_backend_out_and_keeps_established_streams() -> Result<(), Failed> {
    let lab = lab();
    // A stream to a1, which stays up.
    let mut stream = None;
    for _ in 0..40 {
        let mut s = tcp_connect_to(APP_PORT)?;
        if tcp_request(&mut s)?.0 == "a1" {
            stream = Some(s);
            break;
        }
    }
    let mut stream = stream.ok_or("no flow landed on a1")?;
    // And one to a2, which is about to fail its checks.
    let mut doomed = None;
    for _ in 0..40 {
        let mut s = tcp_connect_to(APP_PORT)?;
        if tcp_request(&mut s)?.0 == "a2" {
            doomed = Some(s);
            break;
        }
    }
    let mut doomed = doomed.ok_or("no flow landed on a2")?;
    lab.app[1].stop();
    let app = wait_app("saw a2 down", |a| health_of(a, BACKENDS[1]) == "down")?;
    let why = app["backends"][1]["why"].as_str().unwrap_or("");
    if !why.contains("Connection refused") {
        return Err(format!("a2 is down for {why:?}").into());
    }
    let seen = new_flows_to(APP_PORT, 20)?;
    if seen.keys().collect::<Vec<_>>() != ["a1"] {
        return Err(format!("with a2 down, new flows went to {seen:?}").into());
    }
    if tcp_request(&mut stream)?.0 != "a1" {
        return Err("the established stream to a1 broke".into());
    }
    // on_down: keep (the default): a2's established flow drains on a2.
    if tcp_request(&mut doomed)?.0 != "a2" {
        return Err("the established stream to the down a2 did not drain on a2".into());
    }
    Ok(())
}

fn quorum_loss_moves_traffic_to_the_sorry_server_and_back() -> Result<(), Failed> {
    let lab = lab();
    lab.app[0].stop();
    wait_app("switched to the sorry server", |a| {
        a["sorry_active"] == true
    })?;
    let seen = new_flows_to(APP_PORT, 10)?;
    if seen.keys().collect::<Vec<_>>() != ["sorry"] {
        return Err(format!("below quorum, new flows went to {seen:?}").into());
    }
    lab.app[0].start();
    lab.app[1].start();
    wait_app("recovered", |a| {
        a["sorry_active"] == false
            && health_of(a, BACKENDS[0]) == "up"
            && health_of(a, BACKENDS[1]) == "up"
    })?;
    let seen = new_flows_to(APP_PORT, 30)?;
    if seen.keys().collect::<Vec<_>>() != ["a1", "a2"] {
        return Err(format!("after recovery, new flows went to {seen:?}").into());
    }
    Ok(())
}

fn a_flapping_server_rebuilds_its_table_once_per_transition() -> Result<(), Failed> {
    let lab = lab();
    let transitions = || {
        let a2 = format!("{}:{APP_PORT}", BACKENDS[1]);
        agent_log(lab)
            .lines()
            .filter(|l| l.contains("real server") && l.contains(&a2))
            .count()
    };
    let (builds0, moves0) = (
        app_status()?["table_builds"].as_u64().unwrap_or(0),
        transitions(),
    );
    for _ in 0..3 {
        lab.app[1].stop();
        wait_app("saw a2 down", |a| health_of(a, BACKENDS[1]) == "down")?;
        lab.app[1].start();
        wait_app("saw a2 up", |a| health_of(a, BACKENDS[1]) == "up")?;
    }
    let (builds, moves) = (
        app_status()?["table_builds"].as_u64().unwrap_or(0) - builds0,
        transitions() - moves0,
    );
    if moves != 6 || builds != 6 {
        return Err(
            format!("{moves} transitions logged, {builds} table builds; want 6 and 6").into(),
        );
    }
    // Every transition ran the server's notify script.
    thread::sleep(Duration::from_millis(200));
    let notes = std::fs::read_to_string(lab.dir.join("notify"))?;
    let (downs, ups) = (notes.matches("down").count(), notes.matches("up").count());
    if downs < 4 || ups < 4 {
        return Err(format!("notify scripts ran {downs} down and {ups} up times:\n{notes}").into());
    }
    Ok(())
}

/// kill -9 and a restart under a running stream: the pinned attachment keeps
/// forwarding while no agent runs, the new agent takes over the maps, and the
/// stream sees every byte in order with no reset.
fn kill_9_and_restart_keep_a_stream_whole() -> Result<(), Failed> {
    let lab = lab();
    let mut s = tcp_connect()?;
    let (backend, _) = tcp_request(&mut s)?;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stream = thread::spawn(move || -> Result<(u32, Duration), String> {
        let mut n = 0u32;
        let start = Instant::now();
        let mut worst = Duration::ZERO;
        loop {
            let t = Instant::now();
            let last = stop_rx.try_recv().is_ok();
            s.get_mut()
                .write_all(format!("seq {n}\n").as_bytes())
                .map_err(|e| format!("write {n}: {e}"))?;
            let mut line = String::new();
            s.read_line(&mut line)
                .map_err(|e| format!("read {n}: {e}"))?;
            if !line.trim_end().ends_with(&format!(" seq {n}")) || !line.starts_with(&backend) {
                return Err(format!("reply {n}: {line:?} (backend was {backend})"));
            }
            n += 1;
            worst = worst.max(t.elapsed());
            if last || start.elapsed() > Duration::from_secs(30) {
                return Ok((n, worst));
            }
            thread::sleep(Duration::from_millis(10));
        }
    });
    thread::sleep(Duration::from_millis(300));
    {
        let mut guard = lab.agent.lock().unwrap();
        let child = guard.as_mut().ok_or("no agent")?;
        child.kill()?;
        child.wait()?;
        *guard = None;
    }
    thread::sleep(Duration::from_millis(300));
    start_agent(lab)?;
    if !agent_log(lab).contains("took over the pinned data path") {
        return Err(format!("the new agent did not take over:\n{}", agent_log(lab)).into());
    }
    thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).ok();
    let (n, worst) = stream.join().unwrap()?;
    // A lost packet would show as a retransmission stall of 200 ms or more.
    if worst > Duration::from_millis(150) || n < 50 {
        return Err(format!("{n} round trips, the slowest {worst:?}, across the restart").into());
    }
    Ok(())
}

fn sigterm_detaches_xdp() -> Result<(), Failed> {
    let lab = lab();
    signal_agent(lab, libc::SIGTERM);
    let mut child = lab.agent.lock().unwrap().take().ok_or("no agent")?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            return Err("agent did not stop on SIGTERM".into());
        }
        thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        return Err(format!("agent exited {status}:\n{}", agent_log(lab)).into());
    }
    let mut attached = Vec::new();
    for link in lab.lb.links()? {
        if lab.lb.xdp_attached(&link)? {
            attached.push(link);
        }
    }
    if !attached.is_empty() {
        return Err(format!("XDP still attached after shutdown to {attached:?}").into());
    }
    if pin_dir().exists() {
        return Err(format!("{} left behind", pin_dir().display()).into());
    }
    Ok(())
}

macro_rules! trials {
    ($($f:ident),* $(,)?) => { vec![$(Trial::test(stringify!($f), $f)),*] };
}

fn main() {
    let mut args = Arguments::from_args();
    // The steps share one agent and change its config: run them in order.
    args.test_threads = Some(1);
    let lab = LAB.get_or_init(setup);
    start_servers(lab);
    std::fs::write(lab.dir.join("xlb.yaml"), config(&BACKENDS)).unwrap();
    let started = start_agent(lab);
    let trials = match started {
        Ok(()) => trials![
            tcp_reaches_every_backend_from_the_snat_address,
            udp_reaches_every_backend_and_replies_come_from_the_vip,
            status_and_metrics_show_services_backends_and_counters,
            idle_clients_hold_neither_status_nor_metrics,
            non_vip_traffic_to_the_node_is_untouched,
            reload_removes_a_backend_and_keeps_its_established_flow,
            bad_reload_is_refused_and_the_old_config_keeps_serving,
            health_takes_a_dead_backend_out_and_keeps_established_streams,
            quorum_loss_moves_traffic_to_the_sorry_server_and_back,
            a_flapping_server_rebuilds_its_table_once_per_transition,
            kill_9_and_restart_keep_a_stream_whole,
            sigterm_detaches_xdp,
        ],
        Err(e) => {
            let msg = e;
            vec![Trial::test("agent_starts", move || Err(msg))]
        }
    };
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        eprintln!("---- agent log ----\n{}", agent_log(lab));
    }
    if let Some(mut c) = lab.agent.lock().unwrap().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    for ns in [&lab.client, &lab.lb].into_iter().chain(&lab.backends) {
        netlab::delete(&ns.name);
    }
    let _ = std::fs::remove_dir_all(&lab.dir);
    // Pins of an agent that did not stop cleanly.
    if let Ok(entries) = std::fs::read_dir(pin_dir()) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(pin_dir());
    }
    conclusion.exit();
}
