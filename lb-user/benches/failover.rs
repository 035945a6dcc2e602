//! `cargo xtask bench failover`: how long a backup takes to hold the VIP
//! after the master dies, for our agent and for keepalived on the same lab.
//!
//! Two nodes run VRRPv3 at equal priority with `nopreempt`, so a restarted
//! node rejoins as BACKUP and the next trial kills the current master. A
//! trial waits a random part of an advert interval, takes the master's link
//! down and kills it with SIGKILL (a node dying), then times how long until
//! the other node has the VIP on its interface. The dead node then
//! "reboots": its VIP is cleared, its link comes up and its daemon restarts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    thread,
    time::{Duration, Instant},
};

use support::vrrplab::*;

const TRIALS: usize = 20;
const PRIORITY: u32 = 100;

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Ours,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Ours => "xlb",
            Impl::Keepalived => "keepalived 2.2.7",
        }
    }
}

fn start(lab: &Lab, who: Impl, n: usize, advert: f64) {
    match who {
        Impl::Ours => {
            let inst = format!(
                "  - name: VI_1\n    virtual_router_id: 51\n    priority: {PRIORITY}\n    version: 3\n    advert_int: {advert}\n    preempt: false\n    virtual_ipaddress: [{VIP}/24]\n"
            );
            lab.start_agent(n, &lab.agent_config(n, "", &inst));
        }
        Impl::Keepalived => {
            let conf = format!(
                "global_defs {{\n  router_id ka{n}\n  vrrp_version 3\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 51\n  priority {PRIORITY}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
            );
            lab.start_keepalived(n, &conf);
        }
    }
}

/// Failover times of `TRIALS` trials.
fn run(lab: &Lab, who: Impl, advert: f64) -> Vec<Duration> {
    let nodes = [0, 1];
    for n in nodes {
        start(lab, who, n, advert);
    }
    let settle = Duration::from_secs(10);
    let mut master = None;
    let start_wait = Instant::now();
    while master.is_none() && start_wait.elapsed() < settle {
        let h = lab.holders(VIP);
        if h.len() == 1 {
            master = Some(h[0]);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut master = master.expect("no master elected");
    let mut times = Vec::new();
    for trial in 0..TRIALS {
        let survivor = 1 - master;
        thread::sleep(Duration::from_secs_f64(advert * fastrand::f64()));
        // Link first, so nothing leaves the dying node: keepalived's VRRP
        // child would otherwise notice its parent's death and send
        // priority 0 before it is killed.
        let t0 = Instant::now();
        lab.nodes[master].link_down("eth0").unwrap();
        lab.kill9(master);
        match lab.wait_holders(VIP, &[survivor], &[survivor], settle) {
            Ok(_) => times.push(t0.elapsed()),
            Err(e) => panic!("trial {trial}: {e}"),
        }
        // The dead node reboots and rejoins as BACKUP.
        let dead = &lab.nodes[master];
        let _ = dead.del_addr("eth0", &format!("{VIP}/24"));
        dead.link_up("eth0").unwrap();
        start(lab, who, master, advert);
        thread::sleep(Duration::from_millis(1500) + Duration::from_secs_f64(3.0 * advert));
        let h = lab.holders(VIP);
        assert_eq!(
            h,
            [survivor],
            "trial {trial}: the rejoining node disturbed the master"
        );
        master = survivor;
    }
    for n in nodes {
        lab.stop(n, libc::SIGTERM);
    }
    times
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lab = Lab::new();
    let mut rows = Vec::new();
    for advert in [1.0, 0.1] {
        for who in [Impl::Ours, Impl::Keepalived] {
            let mut t = run(&lab, who, advert);
            t.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let bound = master_down(3, advert, PRIORITY);
            let row = format!(
                "| {} | {advert} s | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
                who.name(),
                ms(t[0]),
                ms(t[t.len() / 2]),
                ms(t[t.len() - 1]),
                ms(bound)
            );
            eprintln!("{row}");
            rows.push(row);
        }
    }
    lab.teardown();
    println!("\nfailover after SIGKILL + link down, {TRIALS} trials each, VRRPv3, priority {PRIORITY}:\n");
    println!("| implementation | advert_int | min | p50 | max | 3 x advert_int + skew |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
