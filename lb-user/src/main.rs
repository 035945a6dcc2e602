//! `xlb`: the XDP layer-4 load balancer agent.

use std::{io::Write, net::Ipv4Addr, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use lb_user::{
    agent, config, import,
    maglev::{self, Member},
    plan::{Plan, Runtime},
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (SIGHUP reloads, SIGTERM stops).
    Run {
        #[arg(short, long, default_value = "/etc/xlb/xlb.yaml")]
        config: PathBuf,
        #[arg(long, default_value = agent::PID_FILE)]
        pid_file: PathBuf,
        /// On exit, leave XDP attached and the maps pinned, for the next
        /// agent to take over (an upgrade without dropping connections).
        #[arg(long)]
        keep_dataplane: bool,
        /// Unix socket for `xlb status`.
        #[arg(long, default_value = agent::SOCKET)]
        socket: PathBuf,
        /// Overrides `global.pin_path` (to run two agents on one host).
        #[arg(long)]
        pin_path: Option<String>,
    },
    /// VRRP state, services, backends with health and weight, and counters,
    /// from the running agent.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = agent::SOCKET)]
        socket: PathBuf,
    },
    /// Validate a config and print the plan it resolves to.
    Check {
        #[arg(short, long, default_value = "/etc/xlb/xlb.yaml")]
        config: PathBuf,
    },
    /// Translate a keepalived.conf into this YAML.
    ///
    /// The report on stderr says, as `file:line: kind: message`, what changed
    /// meaning (note), what was not carried over (dropped) and what is left
    /// to fill in (todo); the exit status is 2 when something was dropped
    /// or is left to fill in.
    ImportKeepalived {
        /// keepalived's configuration file (includes are followed).
        file: PathBuf,
        /// Write the YAML here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// `global.interface` (default: the first vrrp_instance's).
        #[arg(long)]
        interface: Option<String>,
        /// This node's address for the virtual servers' SNAT pool; repeat
        /// for more (default: the instance's unicast_src_ip).
        #[arg(long = "snat-address", value_name = "A.B.C.D")]
        snat_address: Vec<Ipv4Addr>,
    },
    /// Ask the running agent to reload its config (same as SIGHUP).
    Reload {
        #[arg(long, default_value = agent::PID_FILE)]
        pid_file: PathBuf,
    },
    /// Print a digest of the Maglev table for the given backends
    /// (`ADDR:PORT[*WEIGHT]`), to compare nodes.
    #[command(hide = true)]
    Maglev {
        #[arg(long, default_value_t = 0)]
        seed: u32,
        #[arg(long, default_value_t = maglev::DEFAULT_SIZE)]
        size: u32,
        backends: Vec<String>,
    },
}

fn main() -> ExitCode {
    lb_user::sys::limit_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Run {
            config,
            pid_file,
            keep_dataplane,
            socket,
            pin_path,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(agent::run(agent::RunOptions {
                config,
                pid_file,
                socket,
                keep_dataplane,
                pin_path,
            }))?,
        Cmd::Status { json, socket } => {
            print!("{}", lb_user::server::query_status(&socket, json)?);
        }
        Cmd::Check { config } => {
            let c = config::load(&config)?;
            print!("{}", Plan::build(&c, &Runtime::from_config_hints(&c), None));
        }
        Cmd::Reload { pid_file } => agent::signal_reload(&pid_file)?,
        Cmd::ImportKeepalived {
            file,
            output,
            interface,
            snat_address,
        } => return import_keepalived(file, output, interface, snat_address),
        Cmd::Maglev {
            seed,
            size,
            backends,
        } => {
            let members = backends
                .iter()
                .enumerate()
                .map(|(i, s)| parse_member(i as u32, s))
                .collect::<Result<Vec<_>>>()?;
            let table = maglev::build(seed, size, &members);
            println!("{:016x}", digest(&table));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `xlb import-keepalived`: YAML to stdout or `output`, the report to
/// stderr; 0 when everything was carried over, 2 when something was dropped
/// or left to fill in, 1 when the input cannot be read or the output written.
fn import_keepalived(
    file: PathBuf,
    output: Option<PathBuf>,
    interface: Option<String>,
    snat_addresses: Vec<Ipv4Addr>,
) -> Result<ExitCode> {
    let opts = import::Options {
        interface,
        snat_addresses,
    };
    let imp = import::import(&file, &opts, &import::Disk)?;
    let written = match &output {
        Some(path) => {
            std::fs::write(path, &imp.yaml).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        None => std::io::stdout()
            .write_all(imp.yaml.as_bytes())
            .map_err(|e| anyhow::anyhow!("stdout: {e}")),
    };
    let mut err = std::io::stderr().lock();
    for line in &imp.report {
        writeln!(err, "{line}")?;
    }
    written?;
    Ok(if imp.lossy() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn parse_member(id: u32, s: &str) -> Result<Member> {
    let (hostport, weight) = s.split_once('*').unwrap_or((s, "1"));
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("backend {s:?}: expected ADDR:PORT"))?;
    Ok(Member {
        id,
        addr: host.parse::<Ipv4Addr>()?,
        port: port.parse()?,
        weight: weight.parse()?,
    })
}

/// FNV-1a over the table, stable across processes and builds.
fn digest(table: &[u32]) -> u64 {
    table
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
}
