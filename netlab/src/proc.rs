//! Process and machine statistics from /proc, through procfs.

use anyhow::Result;
use procfs::{process::Process, Current, CurrentSI};

/// Clock ticks of /proc's times per second.
fn ticks() -> f64 {
    procfs::ticks_per_second() as f64
}

/// User and system CPU time of process `pid` so far, in ticks ((0, 0) if
/// it is gone).
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| (s.utime, s.stime))
        .unwrap_or((0, 0))
}

/// User + system CPU time of process `pid` so far, in ms (0 if it is gone).
pub fn cpu_ms(pid: u32) -> f64 {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| (s.utime + s.stime) as f64 / ticks() * 1000.0)
        .unwrap_or(0.0)
}

/// When process `pid` started, in ticks since boot: with the pid, it names
/// one process (a pid is reused, a start time with it is not).
pub fn start_time(pid: u32) -> Option<u64> {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .ok()
        .map(|s| s.starttime)
}

/// Resident and peak resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let s = Process::new(pid as i32)?.status()?;
    Ok((s.vmrss.unwrap_or(0), s.vmhwm.unwrap_or(0)))
}

/// Resets the peak resident memory of process `pid` (`clear_refs` 5).
pub fn reset_peak(pid: u32) -> Result<()> {
    Process::new(pid as i32)?.clear_refs(procfs::process::ClearRefs::PeakRSS)?;
    Ok(())
}

/// The machine's idle, iowait and steal time so far, summed over CPUs, in
/// ticks: what is not busy. Idle time is measured exactly on a tickless
/// kernel, while the busy fields are sampled at ticks and miss short bursts.
pub fn machine_not_busy_ticks() -> Result<u64> {
    let t = procfs::KernelStats::current()?.total;
    Ok(t.idle + t.iowait.unwrap_or(0) + t.steal.unwrap_or(0))
}

/// Clock ticks of /proc's times per second.
pub fn ticks_per_sec() -> f64 {
    ticks()
}

/// The CPU's model name.
pub fn cpu_model() -> String {
    procfs::CpuInfo::current()
        .ok()
        .and_then(|c| c.model_name(0).map(str::to_string))
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Sets a sysctl of the host (see [`sysctl_path`]), e.g.
/// `net.core.somaxconn`.
pub fn sysctl_set(key: &str, value: &str) -> Result<()> {
    std::fs::write(sysctl_path(key), value)?;
    Ok(())
}

/// The file of sysctl `key`, read as sysctl(8) does: a key with a `/` is a
/// path under /proc/sys, else dots separate its parts.
pub fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    std::path::Path::new("/proc/sys").join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_counts_its_cpu_and_memory() {
        let pid = std::process::id();
        let before = cpu_ms(pid);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ms(pid) - before >= 100.0, "{} ms", cpu_ms(pid) - before);
        let (rss, peak) = rss_kib(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(start_time(pid).is_some() && start_time(u32::MAX).is_none());
        assert!(machine_not_busy_ticks().unwrap() > 0);
        assert!(!cpu_model().is_empty());
    }
}
