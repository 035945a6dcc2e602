//! The YAML configuration, with keepalived's names.
//!
//! Parsing is strict: an unknown key is an error, not a silent default. Every
//! error names the file, the line and the key path, e.g.
//! `lb.yaml:12: virtual_servers[0].real_servers[1].wieght: unknown key ...`.

mod defaults;
mod include;
mod lines;
mod split;
mod validate;

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};

use defaults::*;

pub use include::{Loaded, Loader};
pub use lines::LineIndex;
pub use validate::{http_host_ok, http_path_ok, parse_cidr, status_ranges};

/// A configuration that failed to load: one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub global: Global,
    /// Files holding more virtual servers (globs relative to this file's
    /// directory); see `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default)]
    pub vrrp_scripts: BTreeMap<String, VrrpScript>,
    #[serde(default)]
    pub vrrp_instances: Vec<VrrpInstance>,
    /// Shared: a reload reuses the virtual servers whose text is unchanged,
    /// and comparing two of them is then a pointer comparison.
    #[serde(default)]
    pub virtual_servers: Vec<Arc<VirtualServer>>,
}

/// `global`: the node and the data path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Name of this node in logs and notifications.
    #[serde(default)]
    pub router_id: Option<String>,
    /// Where XDP attaches and VRRP speaks.
    pub interface: String,
    /// More interfaces the XDP program attaches to (backends behind another link).
    #[serde(default)]
    pub extra_interfaces: Vec<String>,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// bpffs directory for pinned maps and the XDP link.
    #[serde(default = "default_pin_path")]
    pub pin_path: String,
    /// Prometheus listen address; off when absent.
    #[serde(default)]
    pub metrics: Option<String>,
    /// Flow-hash seed: keep it the same on every node.
    #[serde(default)]
    pub hash_seed: u32,
    /// Maglev table size M, prime.
    #[serde(default = "default_maglev_size")]
    pub maglev_size: u32,
    #[serde(default = "default_max_services")]
    pub max_services: u32,
    #[serde(default = "default_max_backends")]
    pub max_backends: u32,
    #[serde(default)]
    pub conntrack: Conntrack,
    /// Seconds a next-hop lookup is reused; 0 looks up every packet.
    #[serde(default = "default_nexthop_ttl")]
    pub nexthop_ttl: f64,
    /// Connection sync with the VRRP peer; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_sync_daemon: Option<SyncDaemon>,
}

/// `global.lvs_sync_daemon`: keepalived's connection sync, for this data
/// path. A peer that takes over a VIP derives most flows' backend and SNAT
/// port from the flow hash; the few that did not get their first SNAT
/// candidate are multicast to it as they start, so they survive a failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncDaemon {
    /// Where the sync messages go: a link both nodes share.
    pub interface: String,
    /// The instance whose link the sync serves (keepalived's syntax). A
    /// received flow is installed for a service this node does not serve
    /// at that moment.
    pub vrrp_instance: String,
    /// Sync id: both nodes of a pair use the same one (keepalived's `id`).
    #[serde(default)]
    pub id: u8,
    #[serde(default = "default_sync_port")]
    pub port: u16,
    /// Multicast group (keepalived's default).
    #[serde(default = "default_sync_group")]
    pub group: Ipv4Addr,
    /// Sync every flow, as LVS does, not only those the peer cannot derive:
    /// then a flow that stays silent through a failover keeps its port even
    /// when the new master's own new flows would have taken it. Costs a
    /// ring record per new and closed flow, and the peer's map writes.
    #[serde(default = "yes")]
    pub all_flows: bool,
}

/// How XDP attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, falling back to generic (skb).
    #[default]
    Auto,
    Native,
    Skb,
}

/// `global.conntrack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conntrack {
    #[serde(default = "default_ct_max")]
    pub max_entries: u32,
    /// Seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout: f64,
    /// Seconds after a FIN.
    #[serde(default = "default_tcp_fin_timeout")]
    pub tcp_fin_timeout: f64,
    /// Seconds a TCP flow may stay half-open (SYN seen, handshake not
    /// completed by the client).
    #[serde(default = "default_tcp_syn_timeout")]
    pub tcp_syn_timeout: f64,
    /// Seconds.
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout: f64,
}

/// `vrrp_scripts.NAME`: a tracking script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpScript {
    pub script: String,
    /// Seconds between runs.
    #[serde(default = "one")]
    pub interval: f64,
    /// Seconds before a run counts as failed.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Priority change (keepalived semantics; 0 means failure is FAULT).
    #[serde(default)]
    pub weight: i32,
    #[serde(default = "one_u32")]
    pub rise: u32,
    #[serde(default = "one_u32")]
    pub fall: u32,
}

/// `vrrp_instances[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpInstance {
    pub name: String,
    /// Defaults to `global.interface`.
    #[serde(default)]
    pub interface: Option<String>,
    /// The initial state hint.
    #[serde(default)]
    pub state: VrrpState,
    pub virtual_router_id: u32,
    pub priority: u32,
    /// Seconds, fractions allowed.
    #[serde(default = "one")]
    pub advert_int: f64,
    #[serde(default = "default_vrrp_version")]
    pub version: u8,
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Seconds.
    #[serde(default)]
    pub preempt_delay: f64,
    #[serde(default)]
    pub authentication: Option<Authentication>,
    #[serde(default)]
    pub unicast_src_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub unicast_peers: Vec<Ipv4Addr>,
    /// CIDRs, e.g. `192.168.1.10/24`.
    #[serde(default)]
    pub virtual_ipaddress: Vec<String>,
    #[serde(default)]
    pub track_script: Vec<String>,
    /// Health quorums of virtual servers this instance's priority follows.
    #[serde(default)]
    pub track_virtual_server: Vec<TrackVirtualServer>,
    /// Gratuitous ARPs per address on becoming MASTER.
    #[serde(default = "default_garp_repeat")]
    pub garp_master_repeat: u32,
    /// Seconds after becoming MASTER before a second burst; 0 sends none.
    #[serde(default = "default_garp_delay")]
    pub garp_master_delay: f64,
    #[serde(default)]
    pub notify_master: Option<String>,
    #[serde(default)]
    pub notify_backup: Option<String>,
    #[serde(default)]
    pub notify_fault: Option<String>,
    #[serde(default)]
    pub notify_stop: Option<String>,
    #[serde(default)]
    pub notify: Option<String>,
}

/// `track_virtual_server[]`: follow a virtual server's health quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackVirtualServer {
    /// The virtual server's `name`.
    pub name: String,
    /// keepalived's weight semantics: 0 makes a lost quorum FAULT, a
    /// positive weight is added while the quorum holds, a negative one is
    /// added while it is lost.
    #[serde(default)]
    pub weight: i32,
}

/// VRRP states a config may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpState {
    Master,
    #[default]
    Backup,
}

/// `authentication`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    pub auth_type: AuthType,
    pub auth_pass: String,
}

/// Only PASS: AH is deprecated and not supported by VRRPv3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    #[serde(rename = "PASS")]
    Pass,
}

/// Transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `lb_algo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgo {
    /// Maglev over the 5-tuple.
    #[default]
    Mh,
    /// Maglev over the source address (client affinity).
    Sh,
}

/// `lb_kind`: only full NAT, which needs nothing on the real servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbKind {
    #[default]
    Fullnat,
}

/// `virtual_servers[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// The VRRP instance whose MASTER serves this VIP; absent: always served.
    #[serde(default)]
    pub vrrp_instance: Option<String>,
    #[serde(default)]
    pub lb_algo: LbAlgo,
    #[serde(default)]
    pub lb_kind: LbKind,
    pub snat: Snat,
    /// Seconds between health checks.
    #[serde(default = "default_delay_loop")]
    pub delay_loop: f64,
    /// Healthy real servers needed; below it the sorry server takes over.
    #[serde(default = "one_u32")]
    pub quorum: u32,
    #[serde(default)]
    pub sorry_server: Option<Endpoint>,
    /// What happens to established connections of a real server that goes down.
    #[serde(default)]
    pub on_down: OnDown,
    pub real_servers: Vec<RealServer>,
}

impl VirtualServer {
    /// Whether `addr:port` is this service's sorry server and not also one
    /// of its real servers.
    pub fn is_sorry_only(&self, addr: Ipv4Addr, port: u16) -> bool {
        self.sorry_server
            .is_some_and(|s| (s.address, s.port) == (addr, port))
            && !self
                .real_servers
                .iter()
                .any(|r| (r.address, r.port) == (addr, port))
    }
}

/// `on_down`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// Keep their connection entries: they drain.
    #[default]
    Keep,
    /// Purge their entries: the next packet of such a flow is a new flow.
    Reset,
}

/// An address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    pub port: u16,
}

/// `snat`: the source addresses and ports the LB uses towards real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snat {
    pub addresses: Vec<Ipv4Addr>,
    /// `"FIRST-LAST"`, inclusive.
    #[serde(default = "default_snat_ports")]
    pub ports: String,
}

impl Snat {
    /// The port range, if `ports` is well formed.
    pub fn port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.ports.split_once('-')?;
        let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (a >= 1 && a <= b).then_some((a, b))
    }
}

/// Which real server: its virtual server's name, its address and port.
/// Ordered by name first, so one virtual server's keys form a range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey {
    /// The virtual server's `name`.
    pub service: String,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl ServerKey {
    /// The key of `rs` in `vs`.
    pub fn of(vs: &VirtualServer, rs: &RealServer) -> ServerKey {
        ServerKey {
            service: vs.name.clone(),
            addr: rs.address,
            port: rs.port,
        }
    }

    /// Every key of virtual server `name`, for a range query.
    pub fn range(name: &str) -> std::ops::RangeInclusive<ServerKey> {
        let key = |addr, port| ServerKey {
            service: name.to_string(),
            addr,
            port,
        };
        key(Ipv4Addr::UNSPECIFIED, 0)..=key(Ipv4Addr::BROADCAST, u16::MAX)
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// `real_servers[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub address: Ipv4Addr,
    pub port: u16,
    #[serde(default = "one_u32")]
    pub weight: u32,
    /// On failure, set the weight to 0 instead of removing the server.
    #[serde(default)]
    pub inhibit_on_failure: bool,
    // Behind a pointer: most servers have one checker, and 100k servers
    // must stay small. Shared: a pool's servers mostly have equal checkers,
    // kept once (see `shared`).
    #[serde(default, deserialize_with = "shared")]
    pub tcp_check: Option<Arc<TcpCheck>>,
    #[serde(default, deserialize_with = "shared")]
    pub http_get: Option<Arc<HttpGet>>,
    #[serde(default, deserialize_with = "shared")]
    pub ssl_get: Option<Arc<HttpGet>>,
    #[serde(default, deserialize_with = "shared")]
    pub dns_check: Option<Arc<DnsCheck>>,
    #[serde(default, deserialize_with = "shared")]
    pub misc_check: Option<Arc<MiscCheck>>,
    #[serde(default)]
    pub notify_up: Option<String>,
    #[serde(default)]
    pub notify_down: Option<String>,
    /// Start as down until the first successful check.
    #[serde(default)]
    pub alpha: bool,
}

impl RealServer {
    /// How many checker blocks the server has.
    pub fn checker_count(&self) -> usize {
        [
            self.tcp_check.is_some(),
            self.http_get.is_some(),
            self.ssl_get.is_some(),
            self.dns_check.is_some(),
            self.misc_check.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    }
}

/// The keys every checker shares, with keepalived's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckCommon {
    /// Seconds; the whole check must finish within it.
    pub connect_timeout: f64,
    /// Failures before down.
    pub retry: u32,
    /// Successes before up.
    pub rise: u32,
    /// Seconds between retries after a failure.
    pub delay_before_retry: f64,
    /// Seconds: random first delay up to this.
    pub warmup: Option<f64>,
    pub bindto: Option<Ipv4Addr>,
    pub connect_ip: Option<Ipv4Addr>,
    pub connect_port: Option<u16>,
}

/// Deserializes a checker, reusing an equal one parsed recently on this
/// thread: 100,000 servers with the same `tcp_check` hold one copy, and a
/// reload (parsed on the agent's one thread) shares it with the running
/// config. A few distinct values per checker type are remembered; others
/// are kept as parsed.
fn shared<'de, D, T>(d: D) -> Result<Option<Arc<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + PartialEq + Send + Sync + 'static,
{
    use std::{any::Any, cell::RefCell};
    /// Distinct values remembered per type.
    const KEEP: usize = 8;
    thread_local! {
        static RECENT: RefCell<Vec<Arc<dyn Any + Send + Sync>>> = const { RefCell::new(Vec::new()) };
    }
    let Some(v) = Option::<T>::deserialize(d)? else {
        return Ok(None);
    };
    Ok(Some(RECENT.with(|r| {
        let mut r = r.borrow_mut();
        let same = r
            .iter()
            .find(|a| (***a).downcast_ref::<T>().is_some_and(|x| *x == v));
        if let Some(Ok(a)) = same.map(|a| Arc::clone(a).downcast::<T>()) {
            return a;
        }
        let a = Arc::new(v);
        if r.iter().filter(|x| x.is::<T>()).count() >= KEEP {
            // Forget the oldest of this type.
            if let Some(i) = r.iter().position(|x| x.is::<T>()) {
                r.remove(i);
            }
        }
        r.push(a.clone());
        a
    })))
}

/// A checker block: the shared keys, then its own. (serde cannot combine
/// `flatten` with `deny_unknown_fields`, so each block is its own struct.)
macro_rules! checker {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty = $d:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Seconds; the whole check must finish within it.
            #[serde(default = "default_connect_timeout")]
            pub connect_timeout: f64,
            /// Failures before down (keepalived's `nb_get_retry` too).
            #[serde(default = "one_u32", alias = "nb_get_retry")]
            pub retry: u32,
            /// Successes before up.
            #[serde(default = "one_u32")]
            pub rise: u32,
            /// Seconds between retries after a failure.
            #[serde(default = "one")]
            pub delay_before_retry: f64,
            /// Seconds: random first delay up to this, so checks do not burst.
            #[serde(default)]
            pub warmup: Option<f64>,
            /// Source address of the check.
            #[serde(default)]
            pub bindto: Option<Ipv4Addr>,
            #[serde(default)]
            pub connect_ip: Option<Ipv4Addr>,
            #[serde(default)]
            pub connect_port: Option<u16>,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    connect_timeout: default_connect_timeout(),
                    retry: one_u32(),
                    rise: one_u32(),
                    delay_before_retry: one(),
                    warmup: None,
                    bindto: None,
                    connect_ip: None,
                    connect_port: None,
                    $($f: $d,)*
                }
            }
        }

        impl $name {
            /// The shared keys.
            pub fn common(&self) -> CheckCommon {
                CheckCommon {
                    connect_timeout: self.connect_timeout,
                    retry: self.retry,
                    rise: self.rise,
                    delay_before_retry: self.delay_before_retry,
                    warmup: self.warmup,
                    bindto: self.bindto,
                    connect_ip: self.connect_ip,
                    connect_port: self.connect_port,
                }
            }
        }
    };
}

checker!(
    /// `tcp_check`: a TCP connect.
    TcpCheck {}
);

checker!(
    /// `http_get` and `ssl_get`.
    HttpGet {
        #[serde(default = "default_path")]
        path: String = default_path(),
        /// A code or ranges, e.g. `200` or `"200-299,301"`.
        #[serde(default)]
        status_code: Option<StatusCodes> = None,
        /// MD5 of the body, as keepalived's genhash prints it.
        #[serde(default)]
        digest: Option<String> = None,
        /// Host header.
        #[serde(default)]
        virtualhost: Option<String> = None,
        /// "1.0" or "1.1".
        #[serde(default)]
        http_protocol: Option<String> = None,
        /// `ssl_get` only: verify the server's certificate.
        #[serde(default)]
        verify_certificate: bool = false,
    }
);

/// A status code or a list of ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusCodes {
    One(u16),
    Ranges(String),
}

checker!(
    /// `dns_check`: a UDP query, OK on a well-formed NOERROR reply.
    DnsCheck {
        #[serde(default = "default_dns_name")]
        name: String = default_dns_name(),
        #[serde(default = "default_dns_type", rename = "type")]
        qtype: String = default_dns_type(),
    }
);

checker!(
    /// `misc_check`: an external program.
    MiscCheck {
        misc_path: String = String::new(),
        /// Seconds before the program is killed.
        #[serde(default)]
        misc_timeout: Option<f64> = None,
        /// Exit 2-255 sets the weight to code - 2.
        #[serde(default)]
        misc_dynamic: bool = false,
    }
);

/// Reads and validates `path` and the files it includes.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    Loader::default().load(path).map(|l| l.config)
}

/// Parses and validates `text`, naming it `file` in errors; includes are
/// relative to `file`'s directory.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    Loader::default()
        .parse(text, Path::new(file))
        .map(|l| l.config)
}

/// Deserializes `text` as a `T`, naming it `file` in errors.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(de) {
        Ok(c) => Ok(c),
        Err(e) => {
            // Positions are only worked out on failure: indexing a large
            // file costs more than parsing it.
            let index = match LineIndex::new(text) {
                Ok(index) => index,
                Err((line, col, msg)) => {
                    return Err(ConfigError {
                        errors: vec![format!("{file}:{line}:{col}: YAML syntax error: {msg}")],
                    })
                }
            };
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .location()
                .map(|l| l.line())
                .or_else(|| index.line(&path))
                .unwrap_or(1);
            let msg = clean_serde_message(&inner.to_string(), &path);
            let where_ = if path.is_empty() || path == "." {
                String::new()
            } else {
                format!(" {path}:")
            };
            Err(ConfigError {
                errors: vec![format!("{file}:{line}:{where_} {msg}")],
            })
        }
    }
}

/// serde_yaml appends " at line N column M"; the line is already in front.
/// serde_yaml also puts the path in front; it is already in ours.
fn clean_serde_message(msg: &str, path: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    // ... as far as it knows it, which may stop short of ours.
    let msg = match msg.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && path.starts_with(p) => rest,
        _ => msg,
    };
    msg.replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
}

#[cfg(test)]
mod tests;
