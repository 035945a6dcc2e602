//! A VRRP lab: LB nodes, a client and a backend on one bridge.
//!
//! ```text
//!   n1 ─┐                       n1..n3: xlb agents or keepalived, eth0 .1-.3,
//!   n2 ─┤                               SNAT address .11-.13 (routed by b)
//!   n3 ─┼─ br0 (namespace sw)   c: client .100
//!   c  ─┤                       b: backend .200, a UDP echo on port 53
//!   b  ─┘                       VIPs: .50 (VRID 51) and .51 (VRID 52)
//! ```
//!
//! Every process is a child of the test, tracked here and killed by pid at
//! the end; pins live under a per-run directory that teardown removes.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use aya::Ebpf;

use super::netns::*;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 50);
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 51);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 100);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 200);
pub const NODES: usize = 3;
/// Where each agent serves metrics, on its node's loopback.
pub const METRICS_PORT: u16 = 9464;

/// A node's own address.
pub fn node_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, 0, n as u8 + 1)
}

/// A node's SNAT address.
pub fn snat_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, 0, n as u8 + 11)
}

/// What runs on a node.
pub enum Proc {
    Agent(Child),
    /// keepalived's parent and the pid file of its VRRP child.
    Keepalived(Child, PathBuf),
}

pub struct Lab {
    pub sw: Netns,
    pub nodes: Vec<Netns>,
    pub client: Netns,
    pub backend: Netns,
    pub dir: PathBuf,
    pub procs: Mutex<Vec<Option<Proc>>>,
    _pass: Vec<Ebpf>,
}

impl Lab {
    /// Builds the lab and starts the backend's UDP echo.
    pub fn new() -> Lab {
        reap_stale();
        let sw = netns("sw");
        sw.bridge("br0", false).unwrap();
        let plug = |ns: &Netns, port: &str, addrs: &[String]| {
            sw.plug("br0", ns, "eth0", port, addrs).unwrap();
        };
        let mut nodes = Vec::new();
        let mut pass = Vec::new();
        for n in 0..NODES {
            let ns = netns(&format!("n{}", n + 1));
            let port = format!("p-n{}", n + 1);
            plug(&ns, &port, &[format!("{}/24", node_addr(n))]);
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0").unwrap();
            // Frames a node sends with XDP_TX arrive only through an XDP program.
            pass.push(attach_pass(&sw, &port));
            nodes.push(ns);
        }
        let client = netns("c");
        plug(&client, "p-c", &[format!("{CLIENT}/24")]);
        let backend = netns("b");
        plug(&backend, "p-b", &[format!("{BACKEND}/24")]);
        // SNAT addresses are not on the nodes' links: each is routed to its
        // node, as a FULLNAT pool usually is.
        for n in 0..NODES {
            let (snat, via) = (snat_addr(n).to_string(), node_addr(n).to_string());
            backend.route_via(&snat, &via).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("xlbt-vrrp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        backend.enter().unwrap();
        let udp = UdpSocket::bind(("0.0.0.0", 53)).unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], peer);
            }
        });
        Lab {
            sw,
            nodes,
            client,
            backend,
            dir,
            procs: Mutex::new((0..NODES).map(|_| None).collect()),
            _pass: pass,
        }
    }

    pub fn pin_dir(&self, n: usize) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/bpf/xlbt-{}-n{}",
            std::process::id(),
            n + 1
        ))
    }

    pub fn socket(&self, n: usize) -> PathBuf {
        self.dir.join(format!("n{}.sock", n + 1))
    }

    pub fn log(&self, n: usize) -> PathBuf {
        self.dir.join(format!("n{}.log", n + 1))
    }

    /// An agent config for node `n` with the given `vrrp_instances` (and
    /// optional `vrrp_scripts`) YAML; a UDP service on each VIP it names.
    pub fn agent_config(&self, n: usize, scripts: &str, instances: &str) -> String {
        let mut services = String::new();
        for (inst, vip) in [("VI_1", VIP), ("VI_2", VIP2)] {
            if instances.contains(&format!("name: {inst}")) {
                services += &format!(
                    "  - name: dns-{inst}\n    vip: {vip}\n    port: 53\n    protocol: udp\n    vrrp_instance: {inst}\n    snat: {{addresses: [{snat}], ports: \"20000-29999\"}}\n    real_servers:\n      - {{address: {BACKEND}, port: 53}}\n",
                    snat = snat_addr(n)
                );
            }
        }
        format!(
            "global:\n  router_id: n{}\n  interface: eth0\n  xdp_mode: native\n  max_services: 4\n  max_backends: 16\n  pin_path: {}\n  metrics: 127.0.0.1:{METRICS_PORT}\n  conntrack: {{max_entries: 4096}}\n{scripts}vrrp_instances:\n{instances}virtual_servers:\n{services}",
            n + 1,
            self.pin_dir(n).display()
        )
    }

    /// Starts `xlb run` on node `n` with `config`.
    pub fn start_agent(&self, n: usize, config: &str) {
        self.stop(n, libc::SIGKILL);
        let path = self.dir.join(format!("n{}.yaml", n + 1));
        std::fs::write(&path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(n))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xlb"));
        cmd.args(["run", "-c"])
            .arg(&path)
            .arg("--pid-file")
            .arg(self.dir.join(format!("n{}.pid", n + 1)))
            .arg("--socket")
            .arg(self.socket(n))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let child = self.nodes[n].spawn(&mut cmd).unwrap();
        self.procs.lock().unwrap()[n] = Some(Proc::Agent(child));
    }

    /// Starts keepalived's VRRP process on node `n` with `config`.
    pub fn start_keepalived(&self, n: usize, config: &str) {
        self.stop(n, libc::SIGKILL);
        let tag = format!("n{}-ka", n + 1);
        let conf = self.dir.join(format!("{tag}.conf"));
        std::fs::write(&conf, config).unwrap();
        let vrrp_pid = self.dir.join(format!("{tag}-vrrp.pid"));
        let _ = std::fs::remove_file(&vrrp_pid);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(n))
            .unwrap();
        let mut cmd = Command::new("keepalived");
        cmd.args(["-n", "-l", "-D", "--vrrp", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.join(format!("{tag}.pid")))
            .arg("-r")
            .arg(&vrrp_pid)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = self.nodes[n].spawn(&mut cmd).unwrap();
        self.procs.lock().unwrap()[n] = Some(Proc::Keepalived(child, vrrp_pid));
    }

    /// Signals node `n`'s process and, for SIGKILL, reaps it at once;
    /// otherwise waits (bounded) for it to exit.
    pub fn stop(&self, n: usize, sig: i32) {
        let Some(p) = self.procs.lock().unwrap()[n].take() else {
            return;
        };
        let (mut child, vrrp_pid) = match p {
            Proc::Agent(c) => (c, None),
            Proc::Keepalived(c, pid) => (c, Some(pid)),
        };
        // SAFETY: kill has no memory preconditions; the pid is our child.
        unsafe { libc::kill(child.id() as i32, sig) };
        if sig != libc::SIGKILL {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // keepalived's VRRP child outlives a killed parent: end it too.
        if let Some(pid) = vrrp_pid.and_then(|p| std::fs::read_to_string(p).ok()) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: as above; the pid comes from this run's pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Kills a node's process without any goodbye, leaving what it set up.
    pub fn kill9(&self, n: usize) {
        self.stop(n, libc::SIGKILL);
    }

    /// Sends `sig` to node `n`'s process without waiting.
    pub fn signal(&self, n: usize, sig: i32) {
        let procs = self.procs.lock().unwrap();
        let pid = match procs[n].as_ref() {
            Some(Proc::Agent(c)) | Some(Proc::Keepalived(c, _)) => c.id(),
            None => return,
        };
        // SAFETY: kill has no memory preconditions; the pid is our child.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// The agent's Prometheus text on node `n` (its metrics listen on the
    /// node's loopback).
    pub fn metrics_text(&self, n: usize) -> String {
        let ns = self.nodes[n].name.clone();
        thread::spawn(move || {
            use std::io::{Read, Write};
            netlab::enter(&ns).unwrap();
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT)) else {
                return String::new();
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .join()
        .unwrap_or_default()
    }

    /// Whether node `n` has `vip` on its interface.
    pub fn holds(&self, n: usize, vip: Ipv4Addr) -> bool {
        self.nodes[n].addrs("eth0").is_ok_and(|a| a.contains(&vip))
    }

    /// The nodes holding `vip`.
    pub fn holders(&self, vip: Ipv4Addr) -> Vec<usize> {
        (0..NODES).filter(|&n| self.holds(n, vip)).collect()
    }

    /// Waits until exactly `want` hold `vip` (among `among`), or fails after
    /// `limit` with what was seen.
    pub fn wait_holders(
        &self,
        vip: Ipv4Addr,
        among: &[usize],
        want: &[usize],
        limit: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut seen = vec![];
        while start.elapsed() < limit {
            seen = among
                .iter()
                .copied()
                .filter(|&n| self.holds(n, vip))
                .collect();
            if seen == want {
                return Ok(start.elapsed());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Err(format!(
            "{vip}: held by {seen:?} after {limit:?}, wanted {want:?}\n{}",
            self.logs()
        ))
    }

    /// `xlb status --json` of node `n`.
    pub fn status(&self, n: usize) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_xlb"))
            .args(["status", "--json", "--socket"])
            .arg(self.socket(n))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..NODES)
            .map(|n| {
                let t = std::fs::read_to_string(self.log(n)).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("---- n{} ----\n{}\n", n + 1, tail.join("\n"))
            })
            .collect()
    }

    /// Kills everything, removes pins, namespaces and the work directory.
    pub fn teardown(&self) {
        for n in 0..NODES {
            self.stop(n, libc::SIGKILL);
            let _ = std::fs::remove_dir_all(self.pin_dir(n));
        }
        for ns in self
            .nodes
            .iter()
            .chain([&self.client, &self.backend, &self.sw])
        {
            netlab::delete(&ns.name);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client that sends a UDP request to a VIP every 10 ms and records when
/// each answer arrives.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Vec<Instant>>>,
}

impl Prober {
    pub fn start(lab: &Lab, vip: Ipv4Addr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let client = lab.client.name.clone();
        let handle = thread::spawn(move || {
            netlab::enter(&client).unwrap();
            let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            let mut next = Instant::now();
            // Bounded: at most 10 minutes of probing.
            let limit = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::SeqCst) && Instant::now() < limit {
                if Instant::now() >= next {
                    let _ = s.send_to(b"probe", (vip, 53));
                    next += Duration::from_millis(10);
                }
                if s.recv(&mut buf).is_ok() {
                    got.push(Instant::now());
                }
            }
            got
        });
        Prober {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns the arrival times of the answers.
    pub fn finish(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap_or_default()
    }
}

/// Frames with their arrival times.
pub type Frames = Vec<(Instant, Vec<u8>)>;

/// Captures ARP frames on the client for a while.
pub struct ArpCapture {
    handle: Option<thread::JoinHandle<Frames>>,
}

impl ArpCapture {
    pub fn start(lab: &Lab, how_long: Duration) -> ArpCapture {
        let client = lab.client.name.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            netlab::enter(&client).unwrap();
            let proto = (libc::ETH_P_ARP as u16).to_be() as i32;
            // SAFETY: plain socket(2); the fd is owned right after.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is fresh and ours.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            // SAFETY: tv is a valid timeval for SO_RCVTIMEO.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let _ = ready_tx.send(());
            let end = Instant::now() + how_long;
            let mut out = Vec::new();
            let mut buf = [0u8; 128];
            while Instant::now() < end {
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    out.push((Instant::now(), buf[..n as usize].to_vec()));
                }
            }
            out
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        ArpCapture {
            handle: Some(handle),
        }
    }

    /// Waits for the capture to end and returns (arrival, frame).
    pub fn finish(mut self) -> Frames {
        self.handle.take().unwrap().join().unwrap_or_default()
    }
}

/// The longest silence between answers, and how many there were.
pub fn longest_gap(times: &[Instant]) -> (Duration, usize) {
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    (gap, times.len())
}

/// keepalived's master-down time for a backup of `priority`.
pub fn master_down(version: u8, advert: f64, priority: u32) -> Duration {
    let skew = match version {
        2 => (256 - priority) as f64 / 256.0,
        _ => (256 - priority) as f64 * advert / 256.0,
    };
    Duration::from_secs_f64(3.0 * advert + skew)
}

/// keepalived's skew time.
pub fn skew(version: u8, advert: f64, priority: u32) -> Duration {
    master_down(version, advert, priority) - Duration::from_secs_f64(3.0 * advert)
}
