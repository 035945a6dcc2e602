//! `cargo xtask`: set-up, build, test, demo and benchmarks.
//!
//! Every command first runs `setup`, which installs only what is missing, so
//! the README's commands work on a fresh machine and cost nothing on a warm one.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

/// The eBPF linker version that links against the nightly toolchain's LLVM
/// here; newer ones need a system LLVM that is not available.
const BPF_LINKER_VERSION: &str = "0.10.2";

/// Debian packages the tests and the lab use.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "procps",
    "ethtool",
    "iputils-ping",
    "keepalived",
    "nftables",
    // The lab's backends, client tools and the L4 proxies it is compared with.
    "nginx",
    "libnginx-mod-stream",
    "dnsmasq-base",
    "bind9-dnsutils",
    "curl",
    "haproxy",
    "wrk",
    "dnsperf",
];

/// `cargo xtask bench NAME`: the package holding it and why it needs root.
const BENCHES: &[(&str, &str, &str)] = &[
    ("dataplane", "lb-user", "the benchmark loads XDP programs"),
    (
        "agent",
        "lb-user",
        "the benchmark runs the agent in a network namespace",
    ),
    (
        "health",
        "lb-user",
        "the benchmark runs the agent in a network namespace",
    ),
    (
        "failover",
        "lb-user",
        "the benchmark builds a network-namespace lab",
    ),
    (
        "l4",
        "lb-lab",
        "the benchmark builds a network-namespace lab",
    ),
    (
        "streams",
        "lb-lab",
        "the benchmark builds a network-namespace lab",
    ),
    (
        "sync",
        "lb-lab",
        "the benchmark builds a network-namespace lab",
    ),
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup              install what is missing (rust-src, bpf-linker, Debian packages)
  build              build everything in release mode
  test               run every test (needs root)
  lint               cargo fmt --check and clippy -D warnings
  demo [--keep]      the lab: a VRRP pair of agents, three nginx + dnsmasq backends, live traffic
  demo --clean       remove a lab left by `demo --keep`
  bench dataplane    ns per packet of each data-path path vs a bare XDP forwarder
  bench agent        reload time and RSS of the agent with 100 VIPs x 1,000 real servers
  bench health       agent CPU, RSS and check latency with 1,000 servers checked every second
  bench failover     VRRP failover time of the agent and of keepalived, 20 trials at 1 s and 0.1 s
  bench streams      keep-alive streams broken by a failover under churn, connection sync off vs on
  bench sync         what the backup's agent spends per connection-sync record it installs
  bench l4 [stamina|pps]
                     direct vs xlb vs nginx stream vs HAProxy on the lab: req/s, conns/s, DNS q/s, CPU, latency
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> Result<()> {
    match args {
        ["setup"] => setup(),
        ["build"] => {
            setup()?;
            cargo(&["build", "--release", "--workspace"])
        }
        ["test"] => {
            setup()?;
            require_root("the data-path tests load XDP programs and make network namespaces")?;
            test()
        }
        ["lint"] => {
            setup()?;
            cargo(&["fmt", "--all", "--", "--check"])?;
            let deny = ["--", "-D", "warnings"];
            cargo(&[&["clippy", "--workspace", "--all-targets"][..], &deny].concat())?;
            // The eBPF crate builds with nightly for the BPF target.
            let ebpf = root_dir().join("lb-ebpf");
            let nightly = ["run", "nightly", "cargo"];
            run_in(
                &ebpf,
                "rustup",
                &[&nightly[..], &["fmt", "--all", "--", "--check"]].concat(),
            )?;
            let bpf = [
                "clippy",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--release",
            ];
            run_in(&ebpf, "rustup", &[&nightly[..], &bpf, &deny].concat())
        }
        ["demo", rest @ ..] => {
            setup()?;
            require_root("the demo builds network namespaces and loads XDP")?;
            cargo(&["build", "--release", "-p", "lb-user", "-p", "lb-lab"])?;
            let demo = root_dir().join("target/release/xlb-demo");
            let status = Command::new(&demo)
                .args(rest)
                .status()
                .with_context(|| format!("running {}", demo.display()))?;
            if !status.success() {
                bail!("the demo failed");
            }
            Ok(())
        }
        ["bench", name, rest @ ..] => {
            let Some((_, package, why)) = BENCHES.iter().find(|(n, _, _)| n == name) else {
                let names: Vec<&str> = BENCHES.iter().map(|(n, _, _)| *n).collect();
                bail!("bench {name}: unknown; available: {}", names.join(", "));
            };
            setup()?;
            require_root(why)?;
            if *package == "lb-lab" {
                // The lab runs the release agent.
                cargo(&["build", "--release", "-p", "lb-user", "-p", "lb-lab"])?;
            }
            // Anything after the name goes to the benchmark (`l4 stamina`).
            let mut args = vec!["bench", "-p", package, "--bench", name, "--"];
            args.extend(rest.iter().copied());
            cargo(&args)
        }
        _ => {
            print!("{USAGE}");
            if args.is_empty() || args == ["help"] || args == ["--help"] {
                Ok(())
            } else {
                bail!("unknown command {args:?}")
            }
        }
    }
}

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root_dir())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Runs every test, echoing cargo's output, and closes with one summary line.
fn test() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        // Every test binary runs even after one fails, so a red run lists
        // every failure at once.
        .args([
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--no-fail-fast",
        ])
        .current_dir(root_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (kind, n) = (
                    words.next(),
                    words.next().and_then(|n| n.parse::<u64>().ok()),
                );
                match (kind, n) {
                    (Some("passed"), Some(n)) => passed += n,
                    (Some("failed"), Some(n)) => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}

fn run_in(dir: &Path, cmd: &str, args: &[&str]) -> Result<()> {
    let mut c = Command::new(cmd);
    c.args(args).current_dir(dir);
    // Keep the outer cargo's host settings away from the nested build.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO") || k.starts_with("RUSTC") || k == "RUSTUP_TOOLCHAIN" {
            c.env_remove(k);
        }
    }
    let status = c.status().with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed in {}", args.join(" "), dir.display());
    }
    Ok(())
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: {why}");
    }
    Ok(())
}

/// Output of a command, or None if it could not run or failed.
fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_cmd(cmd: &str, args: &[&str]) -> Result<()> {
    println!("setup: {cmd} {}", args.join(" "));
    let status = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed", args.join(" "));
    }
    Ok(())
}

/// Installs what is missing; idempotent and quiet when nothing is.
fn setup() -> Result<()> {
    if output("rustup", &["run", "nightly", "rustc", "--version"]).is_none() {
        bail!("the nightly Rust toolchain is missing; the eBPF crate needs it (rustup toolchain install nightly)");
    }
    let components = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run_cmd(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        run_cmd(
            "cargo",
            &[
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ],
        )?;
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        // The lab runs its own servers in namespaces: keep the packages'
        // services (nginx, haproxy on the host) from starting on install.
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let ours = !policy.exists();
        if ours {
            std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
            std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        let installed = install(&missing);
        if ours {
            let _ = std::fs::remove_file(policy);
        }
        installed?;
    }
    Ok(())
}

fn install(packages: &[&str]) -> Result<()> {
    run_cmd("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    run_cmd("apt-get", &args)
}
