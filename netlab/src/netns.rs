//! Named network namespaces, made and removed as `ip netns` does (a bind
//! mount under /run/netns), without running `ip`.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

const RUN_DIR: &str = "/run/netns";

fn path_of(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Runs a program on the host; its stdout, or an error carrying its output.
pub fn sh(args: &[&str]) -> Result<String> {
    output(Command::new(args[0]).args(&args[1..]), &args.join(" "))
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    stdout_of(out, what)
}

/// The stdout of a finished program, or an error carrying its output.
fn stdout_of(out: std::process::Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes /run/netns a shared mount, as `ip netns add` does, so a namespace
/// made here is seen by processes in other mount namespaces.
fn shared_run_dir() -> Result<()> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    let share = || {
        mount(
            None::<&str>,
            RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if share().is_ok() {
        return Ok(());
    }
    mount(
        Some(RUN_DIR),
        RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {RUN_DIR}"))?;
    share().with_context(|| format!("sharing {RUN_DIR}"))
}

/// Removes the namespace `name` (what `ip netns del` does); a missing one
/// is not an error.
pub fn delete(name: &str) {
    let p = path_of(name);
    let _ = umount2(&p, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&p);
}

/// Removes the namespaces `<prefix>-<pid>-*` whose process is gone: what a
/// crashed run left.
pub fn reap_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{prefix}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
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
        delete(name);
        shared_run_dir()?;
        let path = path_of(name);
        File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // A thread of its own: unshare moves only the calling thread.
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .with_context(|| format!("bind-mounting {}", path.display()))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("creating namespace {name}: the thread panicked"))?
        })
        .inspect_err(|_| delete(name))?;
        let ns = Netns {
            name: name.to_string(),
            keep: AtomicBool::new(false),
        };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) -> Result<()> {
        enter(&self.name)
    }

    /// Spawns `cmd` inside the namespace. Unlike `ip netns exec`, this makes
    /// no private mount namespace, so bpffs pins outlive the child.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        let ns = File::open(path_of(&self.name)).with_context(|| format!("netns {}", self.name))?;
        // SAFETY: setns is async-signal-safe; `ns` stays open until spawn returns.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
            cmd.pre_exec(move || {
                let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?} in {}", cmd.get_program(), self.name));
        drop(ns);
        child
    }

    /// Runs a program inside the namespace; its stdout, or an error
    /// carrying its output. Only the network namespace changes: unlike
    /// `ip netns exec`, /sys is not remounted, so a program that reads
    /// /sys/class/net sees the host's links.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        let what = format!("{} in {}", args.join(" "), self.name);
        let child = self.spawn(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .stdin(Stdio::null()),
        )?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("running {what}"))?;
        stdout_of(out, &what)
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread in {} panicked", self.name))?
        })
    }

    /// Sets the sysctl `key` in the namespace. As for sysctl(8), a key with
    /// a `/` is a path under /proc/sys (an interface name may hold dots),
    /// else dots separate: `net.ipv4.ip_forward`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = crate::proc::sysctl_path(key);
        self.within(|| std::fs::write(&path, value))?
            .with_context(|| format!("{key}={value} in {}", self.name))
    }

    /// Leaves the namespace in place when this value drops.
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Relaxed) {
            delete(&self.name);
        }
    }
}

/// Moves the calling thread into the namespace called `name`.
pub fn enter(name: &str) -> Result<()> {
    let f = File::open(path_of(name)).with_context(|| format!("netns {name}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {name}"))
}
