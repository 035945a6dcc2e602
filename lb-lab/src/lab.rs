//! The lab: a client, two LB nodes and three backends on one bridge.
//!
//! ```text
//!   client 10.96.0.100 ─┐
//!   lb1    10.96.0.1   ─┤                 b1 10.96.0.201
//!   lb2    10.96.0.2   ─┼─ br0 (ns sw) ───b2 10.96.0.202   nginx :80
//!                       │                 b3 10.96.0.203   dnsmasq :53
//!   VIP    10.96.0.50 (VRRP, on the master)
//! ```
//!
//! Namespaces are named `<prefix>-<role>`. Every process the lab starts is
//! recorded (pid and start time) in `<dir>/procs`, so [`clean`] can stop
//! them by pid after a crash or a `--keep` run, without ever matching names.

use std::{
    fs::OpenOptions,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netlab::{proc::start_time, sh, Netns};
use nix::sys::signal::{kill, Signal};

/// The virtual address the LB pair serves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
/// Size of the backends' `/10m` download.
pub const BIG_FILE: u64 = 10 << 20;
/// LB nodes.
pub const LBS: usize = 2;
/// Backends.
pub const BACKENDS: usize = 3;
/// The port of the long-lived TCP echo some tests run on the backends.
pub const ECHO_PORT: u16 = 3306;

/// LB node `i`'s own address (lb1 is index 0).
pub fn lb_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, i as u8 + 1)
}

/// Backend `i`'s address (b1 is index 0).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, 201 + i as u8)
}

/// What the lab needs to know.
pub struct Options {
    /// Namespace, pin and directory prefix, e.g. `xlb-demo`.
    pub prefix: String,
    /// The `xlb` binary.
    pub xlb: PathBuf,
    /// The config both agents run.
    pub config: PathBuf,
    /// Attach an XDP_PASS program to the bridge ports of the LB nodes and the
    /// client, so frames they send with native XDP_TX arrive (not needed in
    /// skb mode).
    pub native_pass: bool,
}

struct Proc {
    name: String,
    child: Child,
}

/// The running lab. Dropping it removes everything it made, unless
/// [`Lab::keep`] was called.
pub struct Lab {
    pub opts: Options,
    /// Logs, configs, sockets and the process record.
    pub dir: PathBuf,
    pub sw: Netns,
    pub lbs: Vec<Netns>,
    pub client: Netns,
    pub backends: Vec<Netns>,
    procs: Mutex<Vec<Proc>>,
    kept: AtomicBool,
    _pass: Vec<aya::Ebpf>,
}

/// The state directory of a lab with this prefix.
pub fn state_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(prefix)
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Removes what a lab with this prefix left behind: its recorded processes
/// (by pid, checked against their start time), namespaces, pins and
/// directory. Safe to run when nothing is left.
pub fn clean(prefix: &str) -> Result<()> {
    let dir = state_dir(prefix);
    let record = std::fs::read_to_string(dir.join("procs")).unwrap_or_default();
    let live: Vec<u32> = record
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let pid: u32 = w.next()?.parse().ok()?;
            let start: u64 = w.next()?.parse().ok()?;
            (start_time(pid) == Some(start)).then_some(pid)
        })
        .collect();
    // SIGTERM first: agents hand over VRRP and unpin, nginx masters stop
    // their workers.
    for &pid in &live {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.iter().any(|&p| start_time(p).is_some()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for &pid in &live {
        if start_time(pid).is_some() {
            signal(pid, Signal::SIGKILL);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}-")) {
                netlab::delete(&name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Polls `ready` every 50 ms until it holds, or fails naming `what` after
/// `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what}: not ready after {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until a TCP connect to `addr` from inside `ns` succeeds.
pub fn wait_tcp(ns: &Netns, addr: SocketAddrV4, limit: Duration) -> Result<()> {
    wait_for(&format!("{addr} from {}", ns.name), limit, || {
        ns.within(|| TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok())
            .unwrap_or(false)
    })
}

impl Lab {
    /// A benchmark's lab: prefix `xlbb-PID-TAG`, the agents' config at
    /// `TAG.yaml` in its state directory (for the caller to write).
    pub fn for_bench(tag: &str, native_pass: bool) -> Result<Lab> {
        let prefix = format!("xlbb-{}-{tag}", std::process::id());
        let config = state_dir(&prefix).join(format!("{tag}.yaml"));
        Lab::build(Options {
            prefix,
            xlb: find_xlb()?,
            config,
            native_pass,
        })
    }

    /// Builds the topology and starts the backends' servers. Leftovers of an
    /// earlier lab with the same prefix are removed first.
    pub fn build(opts: Options) -> Result<Lab> {
        clean(&opts.prefix)?;
        let dir = state_dir(&opts.prefix);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = &opts.prefix;
        let sw = Netns::create(&format!("{p}-sw"))?;
        sw.bridge("br0", true)?;
        let plug = |ns: &Netns, port: &str, addr: Ipv4Addr| {
            sw.plug("br0", ns, "eth0", port, &[format!("{addr}/24")])
        };
        let mut lbs = Vec::new();
        for i in 0..LBS {
            let ns = Netns::create(&format!("{p}-lb{}", i + 1))?;
            plug(&ns, &format!("lb{}", i + 1), lb_addr(i))?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
            lbs.push(ns);
        }
        let client = Netns::create(&format!("{p}-client"))?;
        plug(&client, "client", CLIENT)?;
        let mut backends = Vec::new();
        for i in 0..BACKENDS {
            let ns = Netns::create(&format!("{p}-b{}", i + 1))?;
            plug(&ns, &format!("b{}", i + 1), backend_addr(i))?;
            backends.push(ns);
        }
        let pass = if opts.native_pass {
            sw.within(|| -> Result<Vec<aya::Ebpf>> {
                (0..LBS)
                    .map(|i| format!("lb{}", i + 1))
                    .chain(["client".to_string()])
                    .map(|port| attach_bench("pass", &port))
                    .collect()
            })??
        } else {
            Vec::new()
        };
        let lab = Lab {
            opts,
            dir,
            sw,
            lbs,
            client,
            backends,
            procs: Mutex::new(Vec::new()),
            kept: AtomicBool::new(false),
            _pass: pass,
        };
        for i in 0..BACKENDS {
            lab.start_backend(i)?;
        }
        Ok(lab)
    }

    /// Starts `cmd` in `ns`, in its own process group (a terminal's Ctrl-C
    /// reaches only the lab's owner), with output appended to `<name>.log`.
    pub fn spawn(&self, ns: &Netns, name: &str, cmd: &mut Command) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = ns.spawn(cmd)?;
        let pid = child.id();
        let start = start_time(pid).unwrap_or(0);
        let mut rec = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("procs"))?;
        writeln!(rec, "{pid} {start} {name}")?;
        self.procs.lock().unwrap().push(Proc {
            name: name.to_string(),
            child,
        });
        Ok(())
    }

    /// Stops the processes called `name` with `sig` and waits for them
    /// (bounded: SIGKILL after 5 s).
    pub fn stop(&self, name: &str, sig: Signal) {
        let mut procs = self.procs.lock().unwrap();
        let mut i = 0;
        while i < procs.len() {
            if procs[i].name != name {
                i += 1;
                continue;
            }
            let mut p = procs.remove(i);
            signal(p.child.id(), sig);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !matches!(p.child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The pid of the running process called `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    fn running(&self, name: &str) -> bool {
        self.procs
            .lock()
            .unwrap()
            .iter_mut()
            .any(|p| p.name == name && matches!(p.child.try_wait(), Ok(None)))
    }

    /// Starts backend `i`'s nginx (HTTP on :80, answering its name and the
    /// source it sees, `b1 10.96.0.50`; `/10m` is a 10 MiB download)
    /// and dnsmasq (TXT `whoami.demo` = its name), and waits for them.
    pub fn start_backend(&self, i: usize) -> Result<()> {
        let name = format!("b{}", i + 1);
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "# One process: stopping it stops the server.\n\
                 master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
                 \x20 fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
                 \x20 keepalive_requests 1000000;\n\
                 \x20 server {{\n    listen {addr}:80 backlog=4096;\n    location / {{ default_type text/plain; return 200 \"{name} $remote_addr\\n\"; }}\n\
                 \x20   location = /10m {{ alias {d}/10m; }}\n  }}\n}}\n",
                addr = backend_addr(i)
            ),
        )?;
        // Sparse: zeros on the wire, no disk.
        std::fs::File::create(dir.join("10m"))?.set_len(BIG_FILE)?;
        let ns = &self.backends[i];
        self.spawn(
            ns,
            &format!("{name}-nginx"),
            Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("nginx.err")),
        )?;
        self.spawn(
            ns,
            &format!("{name}-dns"),
            Command::new("dnsmasq").args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={}", backend_addr(i)),
                "--pid-file=",
                "--log-facility=-",
                "--cache-size=0",
                &format!("--txt-record=whoami.demo,{name}"),
            ]),
        )?;
        wait_tcp(
            ns,
            SocketAddrV4::new(backend_addr(i), 80),
            Duration::from_secs(10),
        )
    }

    /// Kills backend `i`'s servers, as a crash would.
    pub fn kill_backend(&self, i: usize) {
        self.stop(&format!("b{}-nginx", i + 1), Signal::SIGKILL);
        self.stop(&format!("b{}-dns", i + 1), Signal::SIGKILL);
    }

    /// Asks node `i`'s agent to reload its config (SIGHUP).
    pub fn reload_agent(&self, i: usize) -> Result<()> {
        lb_user::agent::signal_reload(&self.dir.join(format!("lb{}.pid", i + 1)))
    }

    /// The agent's status socket on node `i`.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}.sock", i + 1))
    }

    /// The agent's pin directory on node `i`.
    pub fn pin_path(&self, i: usize) -> String {
        format!("/sys/fs/bpf/{}-lb{}", self.opts.prefix, i + 1)
    }

    /// Starts the agent on node `i` and waits until it answers `status`.
    pub fn start_agent(&self, i: usize) -> Result<()> {
        let name = format!("lb{}", i + 1);
        let pid = self.dir.join(format!("{name}.pid"));
        let mut cmd = Command::new(&self.opts.xlb);
        cmd.arg("run")
            .arg("-c")
            .arg(&self.opts.config)
            .arg("--pin-path")
            .arg(self.pin_path(i))
            .arg("--pid-file")
            .arg(&pid)
            .arg("--socket")
            .arg(self.socket(i))
            .env("RUST_LOG", "info");
        let _ = std::fs::remove_file(self.socket(i));
        self.spawn(&self.lbs[i], &name, &mut cmd)?;
        wait_for(&format!("agent {name}"), Duration::from_secs(15), || {
            if !self.running(&name) {
                return true;
            }
            self.status(i).is_ok()
        })?;
        if !self.running(&name) {
            bail!(
                "agent {name} exited; its log {}:\n{}",
                self.dir.join(format!("{name}.log")).display(),
                self.log_tail(&name, 20)
            );
        }
        Ok(())
    }

    /// Stops node `i`'s agent with `sig` (SIGTERM hands VRRP over with
    /// priority 0; SIGKILL is a crash).
    pub fn stop_agent(&self, i: usize, sig: Signal) {
        self.stop(&format!("lb{}", i + 1), sig);
    }

    /// The last `n` lines of a process's log.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Node `i`'s `xlb status --json`.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let text = lb_user::server::query_status(&self.socket(i), true)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The VRRP state of node `i` ("MASTER", "BACKUP", ...), or "down".
    pub fn vrrp_state(&self, i: usize) -> String {
        self.status(i)
            .ok()
            .and_then(|s| s["vrrp"][0]["state"].as_str().map(str::to_string))
            .unwrap_or_else(|| "down".into())
    }

    /// Waits until some node is MASTER; returns its index.
    pub fn wait_master(&self, limit: Duration) -> Result<usize> {
        let mut master = None;
        wait_for("a VRRP master", limit, || {
            master = (0..LBS).find(|&i| self.vrrp_state(i) == "MASTER");
            master.is_some()
        })?;
        Ok(master.unwrap())
    }

    /// Leaves everything running when the lab drops; [`clean`] removes it.
    pub fn keep(&self) {
        self.kept.store(true, Ordering::Relaxed);
        for ns in self.lbs.iter().chain(&self.backends) {
            ns.keep();
        }
        self.sw.keep();
        self.client.keep();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept.load(Ordering::Relaxed) {
            return;
        }
        let names: Vec<String> = self
            .procs
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        for n in names {
            self.stop(&n, Signal::SIGTERM);
        }
        let _ = clean(&self.opts.prefix);
    }
}

/// Service `name` in a node's `xlb status --json`.
pub fn service<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["services"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

/// The backend at `addr` of service `name` in a node's status.
pub fn backend<'a>(
    status: &'a serde_json::Value,
    name: &str,
    addr: Ipv4Addr,
) -> Option<&'a serde_json::Value> {
    service(status, name)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == addr.to_string())
}

/// Attaches benchmark program `name` (see `lb-ebpf/src/bench.rs`) to `dev`
/// in native mode, in the calling thread's namespace; dropping the value
/// detaches it.
pub fn attach_bench(name: &str, dev: &str) -> Result<aya::Ebpf> {
    netlab::xdp::attach(lb_user::dataplane::BENCH_OBJECT, name, dev)
}

/// The `xlb` binary next to the running one (`target/<profile>/`), or
/// `$XLB_BIN`.
pub fn find_xlb() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("XLB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("xlb");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no xlb binary next to {}; build it (cargo build -p lb-user) or set XLB_BIN",
        exe.display()
    )
}

/// The workspace's `configs/` file `name`.
pub fn config_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

/// Whether every tool the lab runs is installed.
pub fn check_tools() -> Result<()> {
    for tool in ["nginx", "dnsmasq", "ethtool"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    Ok(())
}
