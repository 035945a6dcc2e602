//! The agent test's lab: the namespaces, the backends' servers in this
//! process, and the agent's process, config and log.

use super::*;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 98, 100, 1);
pub const SNAT: Ipv4Addr = Ipv4Addr::new(10, 98, 9, 1);
pub const LB_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 98, 1, 10),
    Ipv4Addr::new(10, 98, 2, 10),
    Ipv4Addr::new(10, 98, 3, 10),
];
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// The health-checked service: a1 and a2 on b1 and b2, the sorry server on b3.
pub const APP_PORT: u16 = 8081;
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Lab {
    pub client: Netns,
    pub lb: Netns,
    pub backends: Vec<Netns>,
    pub dir: PathBuf,
    pub agent: Mutex<Option<Child>>,
    /// The app servers a1, a2 and sorry, which the health steps stop and start.
    pub app: Vec<Switch>,
    /// XDP_PASS on the client and backend ends, so frames the LB sends with
    /// XDP_REDIRECT arrive.
    pub _pass: Vec<Ebpf>,
}

pub static LAB: OnceLock<Lab> = OnceLock::new();

pub fn lab() -> &'static Lab {
    LAB.get().expect("lab")
}

/// Pins of this run's agents.
pub fn pin_dir() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/xlbt-{}", std::process::id()))
}

pub fn config(backends: &[Ipv4Addr]) -> String {
    let pin = pin_dir().display().to_string();
    let reals: String = backends
        .iter()
        .map(|b| format!("      - {{address: {b}, port: {TCP_PORT}}}\n"))
        .collect();
    let udp_reals: String = backends
        .iter()
        .map(|b| format!("      - {{address: {b}, port: {UDP_PORT}}}\n"))
        .collect();
    format!(
        "\
global:
  interface: lbc
  extra_interfaces: [lbb1, lbb2, lbb3]
  xdp_mode: native
  max_services: 4
  max_backends: 64
  pin_path: {pin}
  metrics: 127.0.0.1:9464
  conntrack: {{max_entries: 65536}}
virtual_servers:
  - name: web
    vip: {VIP}
    port: 80
    snat: {{addresses: [{SNAT}]}}
    real_servers:
{reals}  - name: dns
    vip: {VIP}
    port: 53
    protocol: udp
    snat: {{addresses: [{SNAT}]}}
    real_servers:
{udp_reals}  - name: app
    vip: {VIP}
    port: {APP_PORT}
    snat: {{addresses: [{SNAT}]}}
    delay_loop: 0.3
    quorum: 1
    sorry_server: {{address: {sorry}, port: {APP_PORT}}}
    real_servers:
      - {{address: {a1}, port: {APP_PORT}, tcp_check: {{connect_timeout: 0.2, retry: 2, delay_before_retry: 0.1}}}}
      - address: {a2}
        port: {APP_PORT}
        tcp_check: {{connect_timeout: 0.2, retry: 2, delay_before_retry: 0.1}}
        notify_down: \"echo down >> {notify}\"
        notify_up: \"echo up >> {notify}\"
",
        notify = std::env::temp_dir().join(format!("xlbt-{}", std::process::id())).join("notify").display(),
        a1 = BACKENDS[0],
        a2 = BACKENDS[1],
        sorry = BACKENDS[2],
    )
}

pub fn setup() -> Lab {
    reap_stale();
    let client = netns("cl");
    let lb = netns("lb");
    client.veth("eth0", &lb, "lbc").unwrap();
    client.add_addr("eth0", "10.98.0.2/24").unwrap();
    client.route_via("10.98.100.0/24", "10.98.0.1").unwrap();
    lb.add_addr("lbc", "10.98.0.1/24").unwrap();
    let mut backends = Vec::new();
    for (i, addr) in BACKENDS.iter().enumerate() {
        let n = i + 1;
        let ns = netns(&format!("b{n}"));
        let dev = format!("lbb{n}");
        ns.veth("eth0", &lb, &dev).unwrap();
        ns.add_addr("eth0", &format!("{addr}/24")).unwrap();
        ns.route_via("default", &format!("10.98.{n}.1")).unwrap();
        lb.add_addr(&dev, &format!("10.98.{n}.1/24")).unwrap();
        backends.push(ns);
    }
    lb.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    lb.sysctl("net.ipv4.conf.default.rp_filter", "0").unwrap();
    // Offloaded checksums would leave the LB partial sums it cannot fix.
    for ns in std::iter::once(&client).chain(&backends) {
        ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).unwrap();
    }
    let mut pass = vec![attach_pass(&client, "eth0")];
    for ns in &backends {
        pass.push(attach_pass(ns, "eth0"));
    }
    let dir = std::env::temp_dir().join(format!("xlbt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = ["a1", "a2", "sorry"]
        .iter()
        .enumerate()
        .map(|(i, n)| Switch {
            backend: i,
            name: n.to_string(),
            running: Mutex::new(None),
        })
        .collect();
    Lab {
        client,
        lb,
        backends,
        dir,
        agent: Mutex::new(None),
        app,
        _pass: pass,
    }
}

/// TCP and UDP servers in every backend namespace, on detached threads.
pub fn start_servers(lab: &Lab) {
    for a in &lab.app {
        a.start();
    }
    for (i, ns) in lab.backends.iter().enumerate() {
        ns.enter().unwrap();
        let name = format!("b{}", i + 1);
        let tcp = TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap();
        let udp = UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap();
        let n = name.clone();
        thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                let n = n.clone();
                thread::spawn(move || serve_tcp(conn, &n));
            }
        });
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{name} {peer}").as_bytes(), peer);
            }
        });
    }
}

/// A TCP server that can be stopped (its port then refuses connections) and
/// started again; connections it accepted keep being served.
pub struct Switch {
    pub backend: usize,
    pub name: String,
    pub running: Mutex<Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>>,
}

impl Switch {
    pub fn start(&self) {
        let lab = lab();
        lab.backends[self.backend].enter().unwrap();
        let l = TcpListener::bind(("0.0.0.0", APP_PORT)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), self.name.clone());
        let h = thread::spawn(move || {
            for conn in l.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let n = name.clone();
                thread::spawn(move || serve_tcp(conn, &n));
            }
        });
        *self.running.lock().unwrap() = Some((stop, h));
    }

    pub fn stop(&self) {
        let Some((flag, h)) = self.running.lock().unwrap().take() else {
            return;
        };
        flag.store(true, Ordering::SeqCst);
        lab().backends[self.backend].enter().unwrap();
        // Wake the accept loop, which then drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", APP_PORT));
        h.join().unwrap();
    }
}

/// Answers every line with the backend's name, the peer it sees and the line.
pub fn serve_tcp(conn: TcpStream, name: &str) {
    let peer = conn.peer_addr().unwrap();
    let mut w = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        // One write per reply: several small ones would meet Nagle and
        // delayed ACKs, and every round trip would take 40 ms.
        if w.write_all(format!("{name} {peer} {line}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// Starts `xlb run` in the LB namespace and waits until it serves.
pub fn start_agent(lab: &Lab) -> Result<(), Failed> {
    let serving_before = agent_log(lab).matches("serving").count();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.dir.join("agent.log"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xlb"));
    cmd.args(["run", "-c"])
        .arg(lab.dir.join("xlb.yaml"))
        .arg("--pid-file")
        .arg(lab.dir.join("xlb.pid"))
        .arg("--socket")
        .arg(lab.dir.join("xlb.sock"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    let child = lab.lb.spawn(&mut cmd)?;
    *lab.agent.lock().unwrap() = Some(child);
    wait_log(lab, "serving", serving_before + 1)
}

pub fn agent_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.join("agent.log")).unwrap_or_default()
}

/// Waits until the agent's log has `n` lines containing `what`.
pub fn wait_log(lab: &Lab, what: &str, n: usize) -> Result<(), Failed> {
    let start = Instant::now();
    while start.elapsed() < STEP_TIMEOUT {
        if agent_log(lab).matches(what).count() >= n {
            return Ok(());
        }
        if let Some(c) = lab.agent.lock().unwrap().as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("agent exited {status}:\n{}", agent_log(lab)).into());
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no {what:?} in the agent log after {STEP_TIMEOUT:?}:\n{}",
        agent_log(lab)
    )
    .into())
}

pub fn signal_agent(lab: &Lab, sig: i32) {
    if let Some(c) = lab.agent.lock().unwrap().as_ref() {
        unsafe { libc::kill(c.id() as i32, sig) };
    }
}

/// One request on a new connection: (backend name, source address it saw).
pub fn tcp_request(stream: &mut BufReader<TcpStream>) -> Result<(String, SocketAddr), Failed> {
    stream.get_mut().write_all(b"hello\n")?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [name, peer, "hello"] = parts[..] else {
        return Err(format!("bad reply {line:?}").into());
    };
    let peer = peer.parse().map_err(|e| format!("reply {line:?}: {e}"))?;
    Ok((name.to_string(), peer))
}

pub fn tcp_connect() -> Result<BufReader<TcpStream>, Failed> {
    tcp_connect_to(80)
}

pub fn tcp_connect_to(port: u16) -> Result<BufReader<TcpStream>, Failed> {
    lab().client.enter().unwrap();
    let s = TcpStream::connect_timeout(&SocketAddr::from((VIP, port)), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(BufReader::new(s))
}

pub fn new_tcp_flows(n: usize) -> Result<BTreeMap<String, Vec<SocketAddr>>, Failed> {
    new_flows_to(80, n)
}

pub fn new_flows_to(port: u16, n: usize) -> Result<BTreeMap<String, Vec<SocketAddr>>, Failed> {
    let mut seen: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for _ in 0..n {
        let mut s = tcp_connect_to(port)?;
        let (name, peer) = tcp_request(&mut s)?;
        seen.entry(name).or_default().push(peer);
    }
    Ok(seen)
}
