//! Every validation error, with its exact text.

use super::*;

const BASE: &str = "\
global:
  interface: eth0
vrrp_scripts:
  chk_web:
    script: /bin/true
    weight: -20
vrrp_instances:
  - name: VI_1
    virtual_router_id: 51
    priority: 100
    virtual_ipaddress: [192.0.2.10/24]
    track_script: [chk_web]
virtual_servers:
  - name: web
    vip: 192.0.2.10
    port: 80
    vrrp_instance: VI_1
    snat:
      addresses: [192.0.2.2]
    real_servers:
      - address: 198.51.100.1
        port: 8080
        tcp_check:
          connect_timeout: 3
      - address: 198.51.100.2
        port: 8080
";

fn errors(text: &str) -> Vec<String> {
    match parse(text, "lb.yaml") {
        Ok(_) => vec![],
        Err(e) => e.errors,
    }
}

/// The base config with `from` replaced by `to` (which must occur once).
fn with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once");
    BASE.replace(from, to)
}

#[test]
fn base_is_valid_with_keepalived_defaults() {
    let c = parse(BASE, "lb.yaml").unwrap();
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.protocol, Protocol::Tcp);
    assert_eq!(vs.lb_algo, LbAlgo::Mh);
    assert_eq!(vs.delay_loop, 60.0);
    assert_eq!(vs.snat.port_range(), Some((1024, 65535)));
    let tc = vs.real_servers[0].tcp_check.as_ref().unwrap();
    assert_eq!(
        (tc.connect_timeout, tc.retry, tc.delay_before_retry),
        (3.0, 1, 1.0)
    );
    assert_eq!(c.vrrp_instances[0].advert_int, 1.0);
    assert!(c.vrrp_instances[0].preempt);
    assert_eq!(c.global.conntrack.udp_timeout, 30.0);
}

#[test]
fn yaml_syntax_error_names_the_line() {
    assert_eq!(
        errors(&with("    priority: 100\n", "    priority: 100: 5\n")),
        ["lb.yaml:10:18: YAML syntax error: mapping values are not allowed in this context"]
    );
}

#[test]
fn unknown_key_names_line_and_path() {
    assert_eq!(
        errors(&with("        port: 8080\n        tcp_check:", "        port: 8080\n        wieght: 2\n        tcp_check:")),
        ["lb.yaml:23: virtual_servers[0].real_servers[0].wieght: unknown key `wieght`, expected one of `address`, `port`, `weight`, `inhibit_on_failure`, `tcp_check`, `http_get`, `ssl_get`, `dns_check`, `misc_check`, `notify_up`, `notify_down`, `alpha`"]
    );
    assert_eq!(
        errors(&with("  interface: eth0\n", "  interface: eth0\n  interfac: eth1\n")),
        ["lb.yaml:3: global.interfac: unknown key `interfac`, expected one of `router_id`, `interface`, `extra_interfaces`, `xdp_mode`, `pin_path`, `metrics`, `hash_seed`, `maglev_size`, `max_services`, `max_backends`, `conntrack`, `nexthop_ttl`, `lvs_sync_daemon`"]
    );
    assert_eq!(
        errors(&with("          connect_timeout: 3", "          connect_timout: 3")),
        ["lb.yaml:24: virtual_servers[0].real_servers[0].tcp_check.connect_timout: unknown key `connect_timout`, expected one of `connect_timeout`, `nb_get_retry`, `retry`, `rise`, `delay_before_retry`, `warmup`, `bindto`, `connect_ip`, `connect_port`"]
    );
}

#[test]
fn wrong_types_name_the_key() {
    assert_eq!(
        errors(&with("    port: 80\n", "    port: eighty\n")),
        ["lb.yaml:16: virtual_servers[0].port: invalid type: string \"eighty\", expected u16"]
    );
    assert_eq!(
        errors(&with("    vip: 192.0.2.10\n", "    vip: 192.0.2.300\n")),
        ["lb.yaml:15: virtual_servers[0].vip: invalid IPv4 address syntax"]
    );
    assert_eq!(
        errors(&with("  interface: eth0\n", "")),
        ["lb.yaml:1: global: missing key `interface`"]
    );
}

#[test]
fn duplicate_virtual_server() {
    let dup = "  - name: web2\n    vip: 192.0.2.10\n    port: 80\n    snat: {addresses: [192.0.2.3]}\n    real_servers: []\n";
    assert_eq!(
        errors(&format!("{BASE}{dup}")),
        ["lb.yaml:27: virtual_servers[1]: duplicate virtual server 192.0.2.10:80/tcp (first is virtual_servers[0])"]
    );
    // The same address and port over UDP is another service.
    assert_eq!(
        errors(&format!(
            "{BASE}{}",
            dup.replace("port: 80\n", "port: 80\n    protocol: udp\n")
        )),
        Vec::<String>::new()
    );
}

#[test]
fn vrid_and_priority_ranges() {
    assert_eq!(
        errors(&with("virtual_router_id: 51", "virtual_router_id: 256")),
        ["lb.yaml:9: vrrp_instances[0].virtual_router_id: 256 is out of range 1-255"]
    );
    assert_eq!(
        errors(&with("virtual_router_id: 51", "virtual_router_id: 0")),
        ["lb.yaml:9: vrrp_instances[0].virtual_router_id: 0 is out of range 1-255"]
    );
    assert_eq!(
        errors(&with("priority: 100", "priority: 0")),
        ["lb.yaml:10: vrrp_instances[0].priority: 0 is out of range 1-255"]
    );
    assert_eq!(
        errors(&with("priority: 100", "priority: 300")),
        ["lb.yaml:10: vrrp_instances[0].priority: 300 is out of range 1-255"]
    );
}

#[test]
fn snat_pool_errors() {
    assert_eq!(
        errors(&with("      addresses: [192.0.2.2]\n", "      addresses: []\n")),
        ["lb.yaml:19: virtual_servers[0].snat.addresses: the SNAT pool is empty: give at least one address of this node"]
    );
    assert_eq!(
        errors(&with("      addresses: [192.0.2.2]\n", "      addresses: [192.0.2.2]\n      ports: 2000-1000\n")),
        ["lb.yaml:20: virtual_servers[0].snat.ports: \"2000-1000\" is not a port range FIRST-LAST within 1-65535"]
    );
    assert_eq!(
        errors(&with("      addresses: [192.0.2.2]\n", "      addresses: [192.0.2.2]\n      ports: 1024-70000\n")),
        ["lb.yaml:20: virtual_servers[0].snat.ports: \"1024-70000\" is not a port range FIRST-LAST within 1-65535"]
    );
    assert_eq!(
        errors(&with("      addresses: [192.0.2.2]\n", "      addresses: [192.0.2.10]\n      ports: 1-1024\n")),
        ["lb.yaml:20: virtual_servers[0].snat.ports: SNAT pool 192.0.2.10:1-1024 overlaps virtual server 192.0.2.10:80 (virtual_servers[0]); exclude port 80"]
    );
    assert_eq!(
        errors(&with(
            "      addresses: [192.0.2.2]\n",
            "      addresses: [192.0.2.2, 192.0.2.2]\n"
        )),
        ["lb.yaml:19: virtual_servers[0].snat.addresses[1]: 192.0.2.2 is listed twice"]
    );
}

#[test]
fn duplicate_real_server() {
    assert_eq!(
        errors(&with("      - address: 198.51.100.2\n", "      - address: 198.51.100.1\n")),
        ["lb.yaml:25: virtual_servers[0].real_servers[1]: duplicate real server 198.51.100.1:8080 (first is real_servers[0])"]
    );
}

#[test]
fn references_must_exist() {
    assert_eq!(
        errors(&with(
            "    vrrp_instance: VI_1\n",
            "    vrrp_instance: VI_2\n"
        )),
        ["lb.yaml:17: virtual_servers[0].vrrp_instance: no vrrp_instance named \"VI_2\""]
    );
    assert_eq!(
        errors(&with(
            "    track_script: [chk_web]\n",
            "    track_script: [chk_web, chk_db]\n"
        )),
        ["lb.yaml:12: vrrp_instances[0].track_script[1]: no vrrp_script named \"chk_db\""]
    );
}

#[test]
fn lvs_sync_daemon_defaults_and_errors() {
    let c = parse(
        &with(
            "  interface: eth0\n",
            "  interface: eth0\n  lvs_sync_daemon: {interface: eth1, vrrp_instance: VI_1}\n",
        ),
        "lb.yaml",
    )
    .unwrap();
    let s = c.global.lvs_sync_daemon.unwrap();
    assert_eq!(
        (s.interface.as_str(), s.id, s.port, s.group, s.all_flows),
        ("eth1", 0, 8848, Ipv4Addr::new(224, 0, 0, 81), true)
    );
    assert_eq!(
        errors(&with(
            "  interface: eth0\n",
            "  interface: eth0\n  lvs_sync_daemon:\n    interface: eth1\n    vrrp_instance: VI_9\n    group: 192.0.2.1\n    port: 0\n",
        )),
        [
            "lb.yaml:5: global.lvs_sync_daemon.vrrp_instance: no vrrp_instance named \"VI_9\"",
            "lb.yaml:7: global.lvs_sync_daemon.port: must not be 0",
            "lb.yaml:6: global.lvs_sync_daemon.group: 192.0.2.1 is not a multicast address",
        ]
    );
    assert_eq!(
        errors(&with(
            "  interface: eth0\n",
            "  interface: eth0\n  lvs_sync_daemon: {interface: eth1, vrrp_instance: VI_1, ttl: 2}\n",
        )),
        ["lb.yaml:3: global.lvs_sync_daemon.ttl: unknown key `ttl`, expected one of `interface`, `vrrp_instance`, `id`, `port`, `group`, `all_flows`"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = with("priority: 100", "priority: 0")
        .replace("virtual_router_id: 51", "virtual_router_id: 999");
    assert_eq!(
        errors(&text),
        [
            "lb.yaml:9: vrrp_instances[0].virtual_router_id: 999 is out of range 1-255",
            "lb.yaml:10: vrrp_instances[0].priority: 0 is out of range 1-255",
        ]
    );
}

#[test]
fn checker_and_timer_values() {
    assert_eq!(
        errors(&with(
            "          connect_timeout: 3",
            "          connect_timeout: 3\n          retry: 0"
        )),
        ["lb.yaml:25: virtual_servers[0].real_servers[0].tcp_check.retry: must be at least 1"]
    );
    assert_eq!(
        errors(&with("        tcp_check:\n          connect_timeout: 3\n", "        tcp_check: {}\n        http_get: {path: /}\n")),
        ["lb.yaml:21: virtual_servers[0].real_servers[0]: give at most one of tcp_check, http_get, ssl_get, dns_check, misc_check"]
    );
    assert_eq!(
        errors(&with("        tcp_check:\n          connect_timeout: 3\n", "        http_get: {path: /health, status_code: \"200-299,9000\"}\n")),
        ["lb.yaml:23: virtual_servers[0].real_servers[0].http_get.status_code: Ranges(\"200-299,9000\") is not a code or a list of ranges like 200-299,301"]
    );
    assert_eq!(
        errors(&with("        tcp_check:\n          connect_timeout: 3\n", "        http_get: {path: /a b, virtualhost: \"x y\"}\n")),
        [
            "lb.yaml:23: virtual_servers[0].real_servers[0].http_get.path: \"/a b\" is not a request path: no spaces or control characters",
            "lb.yaml:23: virtual_servers[0].real_servers[0].http_get.virtualhost: \"x y\" is not a Host header: no spaces or control characters"
        ]
    );
    assert_eq!(
        errors(&with(
            "    priority: 100\n",
            "    priority: 100\n    advert_int: 0.5\n"
        )),
        ["lb.yaml:11: vrrp_instances[0].advert_int: 0.5 must be whole seconds 1-255 with VRRPv2"]
    );
    assert_eq!(
        errors(&with(
            "    priority: 100\n",
            "    priority: 100\n    advert_int: 0.5\n    version: 3\n"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn missing_file_is_named() {
    let e = load(Path::new("/nonexistent/lb.yaml")).unwrap_err();
    assert_eq!(
        e.errors,
        ["/nonexistent/lb.yaml: No such file or directory (os error 2)"]
    );
}

/// Random bytes, random YAML-ish token soup, and random edits of a valid
/// file: the parser returns, never panics.
#[test]
fn random_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const TOKENS: [&str; 24] = [
        "global:",
        "\n",
        "  ",
        "- ",
        "interface: eth0",
        "virtual_servers:",
        "real_servers:",
        "port: ",
        "80",
        "[",
        "]",
        "{",
        "}",
        ",",
        ": ",
        "&a ",
        "*a",
        "!!str ",
        "'",
        "\"",
        "snat:",
        "addresses: [1.2.3.4]",
        "-1",
        "65536",
    ];
    for i in 0..3000 {
        let text: String = match i % 3 {
            0 => (0..rnd() % 200)
                .map(|_| (rnd() % 128) as u8 as char)
                .collect(),
            1 => (0..rnd() % 60)
                .map(|_| TOKENS[(rnd() % TOKENS.len() as u64) as usize])
                .collect(),
            _ => {
                let mut b: Vec<char> = two_servers(1).chars().collect();
                for _ in 0..1 + rnd() % 4 {
                    let at = (rnd() as usize) % b.len();
                    match rnd() % 3 {
                        0 => {
                            b.remove(at);
                        }
                        1 => b.insert(
                            at,
                            TOKENS[(rnd() % TOKENS.len() as u64) as usize]
                                .chars()
                                .next()
                                .unwrap(),
                        ),
                        _ => b[at] = (rnd() % 128) as u8 as char,
                    }
                }
                b.into_iter().collect()
            }
        };
        // Parsed in pieces or whole, the outcome is the same.
        let pieces = parse(&text, "fuzz.yaml");
        match parse_yaml::<Config>(&text, "fuzz.yaml") {
            Ok(whole) => {
                if let Ok(c) = pieces {
                    assert_eq!(c, whole, "{text:?}");
                }
            }
            Err(e) => assert_eq!(pieces.err().map(|p| p.errors), Some(e.errors), "{text:?}"),
        }
    }
}

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} examples");
}

#[test]
fn real_server_stays_small() {
    // 100k real servers are held in memory: keep each one compact.
    assert!(
        std::mem::size_of::<RealServer>() <= 128,
        "{}",
        std::mem::size_of::<RealServer>()
    );
}

/// A fresh directory for files a test includes; removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("xlb-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("conf.d")).unwrap();
        TempDir(d)
    }
    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn included(name: &str, vip: &str, weight: &str) -> String {
    format!(
        "virtual_servers:\n  - name: {name}\n    vip: {vip}\n    port: 80\n    \
         snat: {{addresses: [192.0.2.2]}}\n    real_servers:\n      \
         - address: 198.51.100.1\n        port: 8080\n        weight: {weight}\n"
    )
}

const MAIN: &str = "global:\n  interface: eth0\ninclude: [conf.d/*.yaml]\n";

#[test]
fn included_files_add_virtual_servers_in_name_order() {
    let d = TempDir::new("order");
    let main = d.write("xlb.yaml", MAIN);
    d.write("conf.d/b.yaml", &included("b", "192.0.2.11", "1"));
    d.write("conf.d/a.yaml", &included("a", "192.0.2.10", "1"));
    // Not matched: another suffix, and a hidden editor file.
    d.write("conf.d/c.yaml.orig", &included("c", "192.0.2.12", "1"));
    d.write("conf.d/.d.yaml", &included("d", "192.0.2.13", "1"));
    let c = load(&main).unwrap();
    let names: Vec<&str> = c.virtual_servers.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // An empty conf.d is fine.
    let e = TempDir::new("empty");
    assert!(load(&e.write("xlb.yaml", MAIN))
        .unwrap()
        .virtual_servers
        .is_empty());
}

#[test]
fn errors_in_included_files_name_that_file_and_line() {
    let d = TempDir::new("errors");
    let main = d.write("xlb.yaml", MAIN);
    d.write("conf.d/a.yaml", &included("a", "192.0.2.10", "1"));
    let b = d.write("conf.d/b.yaml", &included("b", "192.0.2.11", "70000"));
    let err = |p: &Path| load(p).unwrap_err().errors;
    assert_eq!(
        err(&main),
        [format!(
            "{}:9: virtual_servers[0].real_servers[0].weight: 70000 is out of range 0-65535",
            b.display()
        )]
    );
    d.write(
        "conf.d/b.yaml",
        &included("b", "192.0.2.11", "1").replace("weight", "wieght"),
    );
    assert_eq!(
        err(&main),
        [format!(
            "{}:9: virtual_servers[0].real_servers[0].wieght: unknown key `wieght`, expected one of `address`, `port`, `weight`, `inhibit_on_failure`, `tcp_check`, `http_get`, `ssl_get`, `dns_check`, `misc_check`, `notify_up`, `notify_down`, `alpha`",
            b.display()
        )]
    );
    // A duplicate across files names both by their own files.
    d.write("conf.d/b.yaml", &included("a", "192.0.2.11", "1"));
    assert_eq!(
        err(&main),
        [format!(
            "{}:2: virtual_servers[0].name: duplicate virtual server name \"a\" (first is virtual_servers[0] of {})",
            b.display(),
            d.0.join("conf.d/a.yaml").display()
        )]
    );
    // Only virtual servers belong in an included file.
    d.write("conf.d/b.yaml", "global:\n  interface: eth1\n");
    assert_eq!(
        err(&main),
        [format!(
            "{}:1: global: unknown key `global`, expected `virtual_servers`",
            b.display()
        )]
    );
    // A plain path must exist; a wildcard may match nothing.
    let m = d.write(
        "xlb.yaml",
        "global:\n  interface: eth0\ninclude:\n  - conf.d/*.yaml\n  - extra.yaml\n",
    );
    assert_eq!(
        err(&m),
        [format!(
            "{}:5: include[1]: {}: no such file",
            m.display(),
            d.0.join("extra.yaml").display()
        )]
    );
}

#[test]
fn a_reload_parses_only_the_files_that_changed() {
    let d = TempDir::new("reload");
    let main = d.write("xlb.yaml", MAIN);
    for i in 0..5 {
        d.write(
            &format!("conf.d/{i}.yaml"),
            &included(&format!("vs{i}"), &format!("192.0.2.{}", 10 + i), "1"),
        );
    }
    let mut l = Loader::default();
    let first = l.load(&main).unwrap();
    assert_eq!(first.parsed_files, 5);
    assert!(l
        .load_if_changed(&main, Some(first.hash))
        .unwrap()
        .is_none());
    d.write("conf.d/3.yaml", &included("vs3", "192.0.2.13", "7"));
    let second = l.load_if_changed(&main, Some(first.hash)).unwrap().unwrap();
    assert_eq!(second.parsed_files, 1);
    assert_ne!(second.hash, first.hash);
    assert_eq!(second.config.virtual_servers[3].real_servers[0].weight, 7);
    assert_eq!(second.config.virtual_servers.len(), 5);
    // A removed file is a change too, and its servers are gone.
    std::fs::remove_file(d.0.join("conf.d/0.yaml")).unwrap();
    let third = l
        .load_if_changed(&main, Some(second.hash))
        .unwrap()
        .unwrap();
    assert_eq!(
        (third.parsed_files, third.config.virtual_servers.len()),
        (0, 4)
    );
    // Same result as a fresh load.
    assert_eq!(third.config, load(&main).unwrap());
}

/// BASE with a second virtual server `b` whose weight is `w`.
fn two_servers(w: u32) -> String {
    format!(
        "{BASE}  # the second one\n  - name: b\n    vip: 192.0.2.11\n    port: 53\n    protocol: udp\n    snat: {{addresses: [192.0.2.2]}}\n    real_servers:\n      - {{address: 198.51.100.3, port: 53, weight: {w}}}\n"
    )
}

#[test]
fn the_main_file_is_parsed_again_only_where_it_changed() {
    let mut l = Loader::default();
    let first = l.parse(&two_servers(1), Path::new("lb.yaml")).unwrap();
    assert_eq!(first.parsed_servers, 2);
    // Same as parsing the whole text at once.
    let whole: Config = serde_yaml::from_str(&two_servers(1)).unwrap();
    assert_eq!(first.config, whole);
    let second = l.parse(&two_servers(5), Path::new("lb.yaml")).unwrap();
    assert_eq!(second.parsed_servers, 1);
    assert_eq!(second.config.virtual_servers[1].real_servers[0].weight, 5);
    // The unchanged one is the same value, not a copy.
    assert!(Arc::ptr_eq(
        &first.config.virtual_servers[0],
        &second.config.virtual_servers[0]
    ));
    // An error in a piece is reported as for the whole file.
    let bad = two_servers(1).replace("weight: 1}", "weight: x}");
    let e = l.parse(&bad, Path::new("lb.yaml")).err().unwrap();
    let whole = parse_yaml::<Config>(&bad, "lb.yaml").err().unwrap();
    assert_eq!(e.errors, whole.errors);
    assert!(e.errors[0].contains("virtual_servers[1].real_servers[0].weight"));
}

#[test]
fn pieces_that_need_each_other_are_parsed_whole() {
    // An alias to an anchor in another item: that item cannot be parsed
    // alone, and the whole file is parsed instead.
    let text = two_servers(1)
        .replace(
            "    snat:\n      addresses: [192.0.2.2]",
            "    snat: &pool\n      addresses: [192.0.2.2]",
        )
        .replace("snat: {addresses: [192.0.2.2]}", "snat: *pool");
    let loaded = Loader::default()
        .parse(&text, Path::new("lb.yaml"))
        .unwrap();
    assert_eq!(loaded.parsed_servers, 2);
    assert_eq!(
        loaded.config.virtual_servers[1].snat,
        loaded.config.virtual_servers[0].snat
    );
}

#[test]
fn a_key_inside_a_quoted_string_is_not_cut() {
    // The `virtual_servers:` line is part of router_id's quoted string:
    // there are no virtual servers, as a whole-file parse says.
    let text = "global: {interface: eth0, router_id: \"n1\nvirtual_servers:\n  - {name: a, vip: 192.0.2.1, port: 80, snat: {addresses: [192.0.2.2]}, real_servers: [{address: 10.0.0.1, port: 80}]}\n\"}\n";
    let whole: Config = serde_yaml::from_str(text).unwrap();
    let c = parse(text, "lb.yaml").unwrap();
    assert!(c.virtual_servers.is_empty());
    assert_eq!(c, whole);
}

/// Equal checkers are one value: 100,000 servers with the same `tcp_check`
/// hold one copy. Different ones stay apart, and every value is as written.
#[test]
fn equal_checkers_are_shared() {
    let mut text = String::from(
        "global: {interface: eth0}\nvirtual_servers:\n  - name: a\n    vip: 192.0.2.10\n    port: 80\n    snat: {addresses: [192.0.2.2]}\n    real_servers:\n",
    );
    for (i, t) in [2, 2, 3, 2].iter().enumerate() {
        text += &format!(
            "      - {{address: 198.51.100.{}, port: 80, tcp_check: {{connect_timeout: {t}}}}}\n",
            i + 1
        );
    }
    let c = parse(&text, "lb.yaml").unwrap();
    let checks: Vec<&Arc<TcpCheck>> = c.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| r.tcp_check.as_ref().unwrap())
        .collect();
    let timeouts: Vec<f64> = checks.iter().map(|t| t.connect_timeout).collect();
    assert_eq!(timeouts, [2.0, 2.0, 3.0, 2.0]);
    assert!(Arc::ptr_eq(checks[0], checks[1]));
    assert!(Arc::ptr_eq(checks[0], checks[3]));
    assert!(!Arc::ptr_eq(checks[0], checks[2]));
}

/// Each struct's `Default` is what a file gets that leaves out every
/// optional key: the importer relies on it to leave defaults out.
#[test]
fn defaults_match_what_serde_fills_in() {
    fn of<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }
    assert_eq!(of::<Global>("interface: ''"), Global::default());
    assert_eq!(of::<VrrpScript>("script: ''"), VrrpScript::default());
    assert_eq!(
        of::<VrrpInstance>("{name: '', virtual_router_id: 0, priority: 0}"),
        VrrpInstance::default()
    );
    assert_eq!(
        of::<VirtualServer>(
            "{name: '', vip: 0.0.0.0, port: 0, snat: {addresses: []}, real_servers: []}"
        ),
        VirtualServer::default()
    );
    assert_eq!(of::<Snat>("addresses: []"), Snat::default());
    assert_eq!(
        of::<RealServer>("{address: 0.0.0.0, port: 0}"),
        RealServer::default()
    );
    assert_eq!(of::<TcpCheck>("{}"), TcpCheck::default());
    assert_eq!(of::<HttpGet>("{}"), HttpGet::default());
    assert_eq!(of::<DnsCheck>("{}"), DnsCheck::default());
    assert_eq!(of::<MiscCheck>("misc_path: ''"), MiscCheck::default());
    assert_eq!(
        of::<SyncDaemon>("{interface: '', vrrp_instance: ''}"),
        SyncDaemon::default()
    );
    assert_eq!(of::<Conntrack>("{}"), Conntrack::default());
}
