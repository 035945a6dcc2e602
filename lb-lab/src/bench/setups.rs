//! The balancers under test on lb1: xlb's config, and nginx `stream` and
//! HAProxy started from their own.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};

use super::SINK_PORT;
use crate::lab::{self, backend_addr, Lab, BACKENDS, VIP};

/// How many backends the balancers (xlb, nginx, HAProxy) spread over:
/// `L4_BACKENDS`, 1 to 3, default all three. With 1 every setup talks to b1
/// alone, as direct does, so the CPU added is the balancer's own work only.
pub fn lb_backends() -> usize {
    std::env::var("L4_BACKENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=BACKENDS).contains(n))
        .unwrap_or(BACKENDS)
}

/// xlb's config: web (80/tcp), dns (53/udp) and the packet-rate sink, on
/// lb1, `L4_XDP_MODE` (native by default).
pub fn xlb_config() -> String {
    let mode = std::env::var("L4_XDP_MODE").unwrap_or_else(|_| "native".into());
    let backends = lb_backends();
    let service = |name: &str, port: u16, proto: &str| {
        let mut s = format!(
            "  - name: {name}\n    vip: {VIP}\n    port: {port}\n    protocol: {proto}\n    \
             snat: {{addresses: [{VIP}], ports: 1024-65535}}\n    real_servers:\n"
        );
        for b in 0..backends {
            // dnsmasq answers TCP too: a cheap check for both services.
            s += &format!(
                "      - {{address: {}, port: {port}, tcp_check: {{connect_timeout: 1}}}}\n",
                backend_addr(b)
            );
        }
        s
    };
    // The packet-rate test's UDP sink: no checker, always up.
    let sink: String = (0..BACKENDS)
        .map(|b| {
            format!(
                "      - {{address: {}, port: {SINK_PORT}}}\n",
                backend_addr(b)
            )
        })
        .collect();
    format!(
        "global:\n  interface: eth0\n  xdp_mode: {mode}\nvirtual_servers:\n{}{}\
         \x20 - name: sink\n    vip: {VIP}\n    port: {SINK_PORT}\n    protocol: udp\n    \
         snat: {{addresses: [{VIP}], ports: 1024-65535}}\n    real_servers:\n{sink}",
        service("web", 80, "tcp"),
        service("dns", 53, "udp")
    )
}

/// nginx `stream` proxying web and dns to the same backends.
pub fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    let ups = |port: u16| {
        (0..lb_backends())
            .map(|b| format!("server {}:{port};", backend_addr(b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes auto;\ndaemon off;\npid {d}/lbnginx.pid;\nerror_log {d}/lbnginx.err error;\n\
         events {{ worker_connections 16384; }}\n\
         stream {{\n\
         \x20 upstream web {{ {} }}\n  upstream dns {{ {} }}\n\
         \x20 server {{ listen {VIP}:80 backlog=4096; proxy_pass web; }}\n\
         \x20 server {{ listen {VIP}:53 udp; proxy_pass dns; proxy_responses 1; proxy_timeout 2s; }}\n}}\n",
        ups(80),
        ups(53)
    )
}

/// HAProxy `mode tcp` for web (it has no UDP).
pub fn haproxy_conf() -> String {
    let servers: String = (0..lb_backends())
        .map(|b| format!("  server b{} {}:80\n", b + 1, backend_addr(b)))
        .collect();
    format!(
        "global\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         frontend web\n  bind {VIP}:80\n  default_backend web\n\
         backend web\n  balance roundrobin\n{servers}"
    )
}

/// Starts the proxy of `setup` on lb1 (nothing for direct and xlb); the
/// lab records it, so it is stopped even if the benchmark dies.
pub fn start_proxy(lab: &Lab, dir: &Path, setup: &str) -> Result<Option<String>> {
    let mut cmd = match setup {
        "nginx" => {
            let conf = dir.join("lbnginx.conf");
            std::fs::write(&conf, nginx_conf(dir))?;
            let mut c = std::process::Command::new("nginx");
            c.arg("-c").arg(conf).arg("-e").arg(dir.join("lbnginx.err"));
            c
        }
        "haproxy" => {
            let conf = dir.join("haproxy.cfg");
            std::fs::write(&conf, haproxy_conf())?;
            let mut c = std::process::Command::new("haproxy");
            c.arg("-db").arg("-f").arg(conf);
            c
        }
        _ => return Ok(None),
    };
    let name = format!("proxy-{setup}");
    lab.spawn(&lab.lbs[0], &name, &mut cmd)?;
    let vip = std::net::SocketAddrV4::new(VIP, 80);
    lab::wait_tcp(&lab.client, vip, Duration::from_secs(5))
        .with_context(|| format!("{setup} does not listen:\n{}", lab.log_tail(&name, 10)))?;
    Ok(Some(name))
}
