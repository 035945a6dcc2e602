//! Network namespaces for tests: created with `ip`, removed on drop, named
//! after the test process so a crashed run's leftovers can be told apart.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, Output},
};

/// Runs a command and fails loudly with its output.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Prefix of every namespace a test run creates.
pub const PREFIX: &str = "xlbt";

/// Removes namespaces left by earlier runs whose process is gone.
pub fn reap_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// Moves the calling thread into the namespace called `name`; threads that
/// only carry a name (not the [`Netns`]) use this.
pub fn enter_netns(name: &str) {
    let f = File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// A network namespace that lives as long as this value.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `xlbt-<pid>-<tag>`, with loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("{PREFIX}-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) {
        enter_netns(&self.name);
    }

    /// A permanent neighbour entry: `ip` has `mac` on `dev`.
    pub fn neigh(&self, ip: std::net::Ipv4Addr, mac: [u8; 6], dev: &str) {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.ip(&[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }

    /// Spawns `cmd` inside the namespace. Unlike `ip netns exec`, this makes
    /// no private mount namespace, so bpffs pins outlive the child.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let netns = File::open(format!("/run/netns/{}", self.name))?;
        let fd = netns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop(netns);
        child
    }

    /// The ifindex of `dev` inside the namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let s = String::from_utf8_lossy(&out.stdout);
        s.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// The MAC of `dev` inside the namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split("link/ether ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        parse_mac(mac)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Creates a veth pair `a` in `na` and `b` in `nb`, both up.
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) {
    na.ip(&[
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", &nb.name,
    ]);
    na.ip(&["link", "set", a, "up"]);
    nb.ip(&["link", "set", b, "up"]);
}

/// Attaches a bare XDP_PASS program to `dev` in `ns` (the calling thread
/// moves there): frames sent into a veth with XDP_TX or XDP_REDIRECT arrive
/// only when its peer runs an XDP program. Dropping the value detaches it.
pub fn attach_pass(ns: &Netns, dev: &str) -> aya::Ebpf {
    ns.enter();
    let mut obj = aya::Ebpf::load(lb_user::dataplane::BENCH_OBJECT).unwrap();
    let prog: &mut aya::programs::Xdp = obj.program_mut("pass").unwrap().try_into().unwrap();
    prog.load().unwrap();
    prog.attach(dev, aya::programs::XdpMode::Driver).unwrap();
    obj
}
