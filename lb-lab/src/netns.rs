//! Named network namespaces, created with `ip` and removed on drop unless
//! the lab is kept.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

/// Runs a command; its stdout, or an error carrying its output.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread into the namespace called `name`.
pub fn enter_netns(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}")).with_context(|| format!("netns {name}"))?;
    // SAFETY: setns only changes the calling thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A network namespace that lives as long as this value, or longer once
/// [`Netns::keep`] is called.
pub struct Netns {
    pub name: String,
    keep: AtomicBool,
}

impl Netns {
    /// Creates the namespace `name` (replacing a leftover one), loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            keep: AtomicBool::new(false),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) -> Result<()> {
        enter_netns(&self.name)
    }

    /// Spawns `cmd` inside the namespace. Unlike `ip netns exec`, this makes
    /// no private mount namespace, so bpffs pins outlive the child.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
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
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?} in {}", cmd.get_program(), self.name));
        drop(netns);
        child
    }

    /// Leaves the namespace in place when this value drops.
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Relaxed) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}

/// Creates a veth pair `a` in `na` and `b` in `nb`, both up.
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) -> Result<()> {
    na.ip(&[
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", &nb.name,
    ])?;
    na.ip(&["link", "set", a, "up"])?;
    nb.ip(&["link", "set", b, "up"])?;
    Ok(())
}
