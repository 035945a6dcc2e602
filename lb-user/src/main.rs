//! `xlb`: the XDP layer-4 load balancer agent.

use std::net::Ipv4Addr;

use anyhow::Result;
use clap::{Parser, Subcommand};
use lb_user::maglev::{self, Member};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a digest of the Maglev table for the given backends
    /// (`ADDR:PORT[*WEIGHT]`), to compare nodes.
    Maglev {
        #[arg(long, default_value_t = 0)]
        seed: u32,
        #[arg(long, default_value_t = maglev::DEFAULT_SIZE)]
        size: u32,
        backends: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
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
    Ok(())
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
pub fn digest(table: &[u32]) -> u64 {
    table
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
}
