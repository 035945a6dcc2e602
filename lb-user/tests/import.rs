//! `xlb import-keepalived` on a corpus of keepalived.conf files written the
//! way tutorials and distributions write them (`tests/keepalived/`): each
//! `X.conf` has the expected YAML in `X.yaml` and the expected report (the
//! stderr lines) in `X.report`; the exit status is in the table below.
//! `UPDATE_GOLDEN=1 cargo test -p lb-user --test import` rewrites the
//! golden files, which are then read by eye before they are committed.
//!
//! Also: every golden parses back into exactly the translated `Config`,
//! and random and mutated input never panics. No root, no network.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use lb_user::{
    config::{self, Config},
    import::{self, Kind, MemFiles, Options},
};

/// Each corpus file, the extra arguments it is imported with, and the
/// expected exit status (0: all carried over; 2: something dropped or left
/// to fill in).
const CORPUS: &[(&str, &[&str], i32)] = &[
    ("master-backup.conf", &[], 0),
    ("dual-master.conf", &["--snat-address", "10.10.0.11"], 0),
    ("lvs-dr.conf", &[], 2),
    ("http-digest.conf", &[], 2),
    ("track-script.conf", &[], 2),
    ("unicast.conf", &[], 2),
    ("pasted.conf", &["--snat-address", "192.168.4.2"], 2),
    ("include.conf", &[], 2),
    ("sync-group.conf", &[], 2),
    ("unsupported.conf", &["--interface", "eth0"], 2),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived")
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0")
}

fn options(args: &[&str]) -> Options {
    let mut o = Options::default();
    for pair in args.chunks(2) {
        match pair {
            ["--snat-address", a] => o.snat_addresses.push(a.parse().unwrap()),
            ["--interface", i] => o.interface = Some(i.to_string()),
            _ => panic!("unknown arguments {pair:?}"),
        }
    }
    o
}

/// Runs the binary in the corpus directory, so the report names files as
/// they are written there.
fn run(file: &str, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .current_dir(dir())
        .env("RUST_LOG", "off")
        .arg("import-keepalived")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn corpus_matches_goldens() {
    let mut listed: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    listed.sort();
    let mut table: Vec<String> = CORPUS.iter().map(|c| c.0.to_string()).collect();
    table.sort();
    assert_eq!(listed, table, "every corpus file needs a line in CORPUS");

    let mut failures = vec![];
    for &(file, args, status) in CORPUS {
        let (yaml, report, code) = run(file, args);
        let stem = file.trim_end_matches(".conf");
        let (yaml_path, report_path) = (
            dir().join(format!("{stem}.yaml")),
            dir().join(format!("{stem}.report")),
        );
        if update() {
            std::fs::write(&yaml_path, &yaml).unwrap();
            std::fs::write(&report_path, &report).unwrap();
        }
        let want_yaml = std::fs::read_to_string(&yaml_path).unwrap_or_default();
        let want_report = std::fs::read_to_string(&report_path).unwrap_or_default();
        if yaml != want_yaml {
            failures.push(format!("{file}: YAML differs from {stem}.yaml:\n{yaml}"));
        }
        if report != want_report {
            failures.push(format!(
                "{file}: report differs from {stem}.report:\n{report}"
            ));
        }
        if code != status {
            failures.push(format!("{file}: exit status {code}, expected {status}"));
        }
        // The status follows the report: non-zero exactly when a line says
        // something was dropped or is left to fill in.
        let lossy = report
            .lines()
            .any(|l| l.contains(": dropped: ") || l.contains(": todo: "));
        if lossy != (code != 0) {
            failures.push(format!("{file}: exit status {code} with report:\n{report}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every golden parses into exactly the translated `Config`, and passes
/// validation except where a placeholder is flagged.
#[test]
fn goldens_round_trip_and_pass_check() {
    for &(file, args, _) in CORPUS {
        let imp = import::import(&dir().join(file), &options(args), &import::Disk).unwrap();
        let stem = file.trim_end_matches(".conf");
        let golden = if update() {
            // The goldens may be being rewritten in parallel.
            imp.yaml.clone()
        } else {
            std::fs::read_to_string(dir().join(format!("{stem}.yaml"))).unwrap()
        };
        assert_eq!(imp.yaml, golden, "{file}: library and binary differ");
        let back: Config = serde_yaml::from_str(&golden).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            back, imp.config,
            "{file}: the YAML does not read back as written"
        );
        let todo = imp.items.iter().any(|i| i.kind == Kind::Todo);
        match config::parse(&golden, stem) {
            Ok(c) => {
                assert!(!todo, "{file}: a placeholder passes check");
                assert_eq!(c, imp.config);
            }
            Err(e) => {
                assert!(todo, "{file}: check refuses it without a todo: {e}");
                for err in &e.errors {
                    assert!(
                        err.contains("snat.addresses: the SNAT pool is empty")
                            || err.contains("global.interface: must name an interface"),
                        "{file}: refused for more than its placeholder: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn output_file_and_unreadable_input() {
    let out = std::env::temp_dir().join(format!("xlb-import-{}.yaml", std::process::id()));
    let (stdout, _, code) = run(
        "lvs-dr.conf",
        &[
            "-o",
            out.to_str().unwrap(),
            "--snat-address",
            "192.168.200.2",
        ],
    );
    assert_eq!(stdout, "");
    assert_eq!(code, 2, "lvs-dr.conf still drops its e-mail settings");
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert!(
        text.contains("addresses: [192.168.200.2]  # from --snat-address"),
        "{text}"
    );
    config::parse(&text, "lvs-dr.yaml").unwrap();

    let (stdout, stderr, code) = run("no-such.conf", &[]);
    assert_eq!((stdout.as_str(), code), ("", 1));
    assert!(stderr.starts_with("xlb: no-such.conf: "), "{stderr}");
}

/// The older per-instance `lvs_sync_daemon_interface` becomes the sync of
/// the first instance that names it, the others reported; a url `path`
/// that is not a path is reported and dropped, not left for `xlb check` to
/// refuse (found by `random_input_never_panics`).
#[test]
fn old_sync_form_and_bad_url_path() {
    let conf = "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n priority 100\n\
                \x20lvs_sync_daemon_interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n }\n}\n\
                vrrp_instance B {\n interface eth1\n virtual_router_id 2\n priority 100\n\
                \x20lvs_sync_daemon_interface eth1\n virtual_ipaddress {\n  10.0.1.1/24\n }\n}\n\
                virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.2.1 80 {\n\
                \x20 HTTP_GET {\n   url {\n    path health\n   }\n   url {\n    path /ok\n   }\n  }\n }\n}\n";
    let mut fs = MemFiles::new();
    fs.add("/k/keepalived.conf", conf.to_string());
    let opts = options(&["--snat-address", "10.0.0.2"]);
    let imp = import::import(Path::new("/k/keepalived.conf"), &opts, &fs).unwrap();
    let sync = imp.config.global.lvs_sync_daemon.as_ref().expect("sync");
    assert_eq!(
        (sync.interface.as_str(), sync.vrrp_instance.as_str()),
        ("eth0", "A")
    );
    let report = imp.report.join("\n");
    assert!(
        report.contains(":14: dropped: lvs_sync_daemon_interface eth1: one sync runs, the one of vrrp_instance A"),
        "{report}"
    );
    assert!(
        report.contains(":24: dropped: path health: not a path that starts with /; ignored"),
        "{report}"
    );
    let http = imp.config.virtual_servers[0].real_servers[0]
        .http_get
        .as_ref()
        .expect("http_get");
    assert_eq!(http.path, "/ok");
    config::parse(&imp.yaml, "k.yaml").unwrap();
}

/// Small and deterministic (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const WORDS: &[&str] = &[
    "global_defs",
    "vrrp_script",
    "vrrp_instance",
    "vrrp_sync_group",
    "virtual_server",
    "virtual_server_group",
    "real_server",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "DNS_CHECK",
    "MISC_CHECK",
    "url",
    "path",
    "digest",
    "status_code",
    "group",
    "state",
    "MASTER",
    "BACKUP",
    "interface",
    "eth0",
    "virtual_router_id",
    "priority",
    "advert_int",
    "version",
    "authentication",
    "auth_type",
    "PASS",
    "AH",
    "auth_pass",
    "nopreempt",
    "preempt_delay",
    "unicast_src_ip",
    "unicast_peer",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "dev",
    "label",
    "brd",
    "scope",
    "track_script",
    "weight",
    "reverse",
    "notify_master",
    "notify",
    "script",
    "interval",
    "timeout",
    "rise",
    "fall",
    "delay_loop",
    "lb_algo",
    "lb_kind",
    "persistence_timeout",
    "protocol",
    "TCP",
    "UDP",
    "SCTP",
    "quorum",
    "sorry_server",
    "inhibit_on_failure",
    "connect_timeout",
    "nb_get_retry",
    "retry",
    "delay_before_retry",
    "connect_port",
    "bindto",
    "warmup",
    "misc_path",
    "misc_timeout",
    "misc_dynamic",
    "type",
    "name",
    "rr",
    "wlc",
    "mh",
    "sh",
    "mh-port",
    "NAT",
    "DR",
    "TUN",
    "fwmark",
    "include",
    "lvs_timeouts",
    "tcp",
    "udp",
    "vrrp_version",
    "vrrp_garp_master_repeat",
    "router_id",
    "default_interface",
    "VI_1",
    "VI_2",
    "chk",
    "10.0.0.1",
    "10.0.0.1/24",
    "10.0.0.2",
    "192.0.2.10",
    "2001:db8::1",
    "80",
    "0",
    "-1",
    "255",
    "256",
    "65536",
    "1.5",
    "0.001",
    "99999999999",
    "inf",
    "abc",
    "9b3a0c85a887a256d6939da88aabd8cd",
    "200-299",
    "\"quoted words\"",
    "\"",
    "{",
    "}",
    "{",
    "}",
    "\n",
    "\n",
    "\n",
    "!",
    "#",
    "\\",
    "12",
    "*.conf",
    "self.conf",
    "é",
    "\t",
    "\u{2028}",
];

/// Random keepalived-ish text.
fn soup(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..r.below(300) {
        s.push_str(r.pick(WORDS));
        s.push(if r.below(4) == 0 { '\n' } else { ' ' });
    }
    s
}

/// A corpus file with a few random edits.
fn mutate(r: &mut Rng, base: &str) -> String {
    let mut lines: Vec<String> = base.lines().map(String::from).collect();
    for _ in 0..1 + r.below(6) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let at = r.below(lines.len());
        match r.below(7) {
            0 => {
                lines.remove(at);
            }
            1 => {
                let l = lines[at].clone();
                lines.insert(at, l);
            }
            2 => lines[at] = lines[at].replace(['{', '}'], ""),
            3 => lines[at].push_str(&format!(" {}", r.pick(WORDS))),
            4 => {
                let words: Vec<&str> = lines[at].split_whitespace().collect();
                if let Some(w) = words.get(r.below(words.len())) {
                    lines[at] = lines[at].replacen(w, r.pick(WORDS), 1);
                }
            }
            5 => {
                let mut chars: Vec<char> = lines[at].chars().collect();
                let i = r.below(chars.len() + 1);
                chars.insert(i, (r.below(128) as u8) as char);
                lines[at] = chars.into_iter().collect();
            }
            _ => lines.insert(at, format!("{} {}", r.below(100), r.pick(WORDS))),
        }
    }
    lines.join("\n")
}

/// Random and mutated input: the importer returns, never panics; its YAML
/// always reads back as its `Config`; and without a placeholder it passes
/// validation.
#[test]
fn random_input_never_panics() {
    let corpus: Vec<String> = CORPUS
        .iter()
        .map(|c| std::fs::read_to_string(dir().join(c.0)).unwrap())
        .collect();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    // How many results had instances and virtual servers: the inputs must
    // reach the translation, not only the lexer.
    let (mut instances, mut servers) = (0, 0);
    for i in 0..2000 {
        let text = match i % 2 {
            0 => soup(&mut r),
            _ => {
                let base = &corpus[r.below(corpus.len())];
                mutate(&mut r, base)
            }
        };
        let mut fs = MemFiles::new();
        fs.add("/k/keepalived.conf", text.clone())
            .add("/k/self.conf", "include self.conf\nvrrp_instance X {\n")
            .add("/k/a.conf", "}\n} include *.conf\n");
        let opts = if r.below(2) == 0 {
            Options::default()
        } else {
            options(&["--snat-address", "10.9.9.9", "--interface", "eth9"])
        };
        let imp = import::import(Path::new("/k/keepalived.conf"), &opts, &fs)
            .unwrap_or_else(|e| panic!("input {i}: {e}\n{text}"));
        let back: Config = serde_yaml::from_str(&imp.yaml)
            .unwrap_or_else(|e| panic!("input {i}: {e}\n{text}\n---\n{}", imp.yaml));
        assert_eq!(back, imp.config, "input {i}:\n{text}\n---\n{}", imp.yaml);
        // The importer checks its own result; what it still finds is a bug
        // of the translation.
        let late: Vec<&String> = imp
            .report
            .iter()
            .filter(|l| l.contains("xlb check refuses the result"))
            .collect();
        assert!(
            late.is_empty(),
            "input {i}: {late:?}\n{text}\n---\n{}",
            imp.yaml
        );
        let todo = imp.items.iter().any(|i| i.kind == Kind::Todo);
        if !todo {
            if let Err(e) = config::parse(&imp.yaml, "fuzz.yaml") {
                panic!(
                    "input {i}: refused without a todo: {e}\n{text}\n---\n{}",
                    imp.yaml
                );
            }
        }
        assert_eq!(imp.report.len(), imp.items.len());
        instances += !imp.config.vrrp_instances.is_empty() as u32;
        servers += !imp.config.virtual_servers.is_empty() as u32;
    }
    assert!(instances > 300 && servers > 300, "{instances} {servers}");
}
