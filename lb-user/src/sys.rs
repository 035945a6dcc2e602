//! The system calls the agent makes itself, beside those of the crates it
//! uses (aya, tokio, socket2, rtnetlink): one leaf module, so no other
//! module makes a raw call or names libc. Also the address conversions
//! between `std` and the maps' wire-order words.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
    ptr::NonNull,
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::{
        resource::{getrlimit, setrlimit, Resource},
        signal::{kill, Signal},
        statfs::{statfs, BPF_FS_MAGIC},
    },
    time::{clock_gettime, ClockId},
    unistd::Pid,
};
use tracing::info;

/// An address as the data path stores it: wire order in a native integer.
pub fn be_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// The inverse of [`be_addr`].
pub fn addr_of(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

/// The ifindex of `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) if i != 0 => Ok(i),
        _ => bail!("no interface {name:?}"),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the data path's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always there");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Raises the soft descriptor limit to the hard one; returns the soft
/// limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Sets the sysctl `key` to 1 unless it is already; logs `why` when it
/// changes it. As for sysctl(8), a key with a `/` is a path under
/// /proc/sys (an interface name may hold dots), else dots separate.
pub fn sysctl_on(key: &str, why: &str) -> Result<()> {
    let p = sysctl_path(key);
    if std::fs::read_to_string(&p).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&p, "1").with_context(|| format!("enabling {}", p.display()))?;
    info!("enabled {key}: {why}");
    Ok(())
}

/// The file of sysctl `key`, read as sysctl(8) does.
fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(rel)
}

/// SIGHUP to process `pid`.
pub fn hangup(pid: i32) -> Result<()> {
    kill(Pid::from_raw(pid), Signal::SIGHUP).with_context(|| format!("signalling pid {pid}"))
}

/// One malloc arena: the agent is mostly idle, and the threads that build
/// Maglev tables in parallel would otherwise each keep an arena's worth of
/// freed memory resident. Call before other threads exist.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt before other threads exist only changes a tunable.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands freed heap memory back to the system: parsing a large config
/// allocates far more than it keeps.
pub fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where bpffs is mounted on a normal system.
const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf if `dir` is under it and it is not mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    if !dir.starts_with(BPFFS) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS))
    {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs at {BPFFS}"))
}

/// Pins only work on a bpf filesystem.
pub fn require_bpffs(dir: &Path) -> Result<()> {
    let st = statfs(dir).with_context(|| dir.display().to_string())?;
    if st.filesystem_type() != BPF_FS_MAGIC {
        bail!(
            "pin_path {} is not on a bpf filesystem (mount -t bpf bpf DIR)",
            dir.display()
        );
    }
    Ok(())
}

/// A shared read-write mapping of `len` bytes at `offset` of `fd`, unmapped
/// on drop.
pub struct Mapping {
    base: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size) at `offset` (likewise).
    pub fn new(fd: BorrowedFd<'_>, offset: usize, len: usize) -> std::io::Result<Mapping> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let size = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a new shared mapping that no Rust object aliases; it is
        // only reached through `words` while `self` lives.
        let base = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        }?;
        Ok(Mapping { base, len })
    }

    /// The mapping as `u64` words.
    pub fn words(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is len bytes, page aligned, and lives as long
        // as the borrow of self.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().cast(), self.len / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped; no slice of it outlives self.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.len) };
    }
}

/// A packet socket that only sends (protocol 0 receives nothing): whole
/// frames out of an interface.
pub struct PacketSender {
    fd: OwnedFd,
}

impl PacketSender {
    /// Opens the socket (needs CAP_NET_RAW).
    pub fn open() -> std::io::Result<PacketSender> {
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(PacketSender {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `frame`, an Ethernet frame of type `ethertype` to `dst`, out of
    /// interface `ifindex`.
    pub fn send(
        &self,
        ifindex: u32,
        dst: [u8; 6],
        ethertype: u16,
        frame: &[u8],
    ) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ethertype.to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: frame and to are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `BPF_MAP_UPDATE_BATCH` (aya has no batch operations): writes `count`
/// keys and values from the two buffers into the map `fd`. On failure,
/// says how many were written.
///
/// # Safety
/// `keys` and `values` must each hold `count` elements of exactly the
/// map's key and value size.
pub unsafe fn map_update_batch(
    fd: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    count: u32,
) -> Result<(), (u32, std::io::Error)> {
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys as u64,
        values: values as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the kernel reads `count` keys and values of the map's sizes
    // from the two buffers (the caller's promise) and writes back `count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err((attr.count, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_wire_order() {
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(be_addr(a).to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(addr_of(be_addr(a)), a);
    }

    #[test]
    fn sysctl_keys_read_as_sysctl_does() {
        let p = |k| sysctl_path(k).display().to_string();
        assert_eq!(p("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(
            p("net/ipv4/conf/eth0.100/accept_local"),
            "/proc/sys/net/ipv4/conf/eth0.100/accept_local"
        );
    }

    #[test]
    fn clock_and_interfaces() {
        let (a, b) = (monotonic_ns(), monotonic_ns());
        assert!(a > 0 && b >= a);
        assert!(ifindex("lo").is_ok_and(|i| i > 0));
        assert!(ifindex("no-such-link0").is_err());
    }
}
