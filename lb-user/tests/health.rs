//! Every checker against real servers on loopback: tokio servers written for
//! the tests, switched between healthy and each way of failing. Each failure
//! must be detected within `retry × delay_loop + connect_timeout` (+10 %), and
//! a server must come back after `rise` successes, each with its reason.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use lb_user::{
    config::{CheckCommon, ServerKey},
    health::{self, Checker, Event, Http, Kind, Outcome},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::mpsc,
    time::{timeout, Instant},
};

const DELAY_LOOP: f64 = 0.5;
const RETRY: u32 = 2;
const CONNECT_TIMEOUT: f64 = 0.25;

/// The detection bound the checkers promise, with 10 % slack.
fn bound() -> Duration {
    Duration::from_secs_f64((RETRY as f64 * DELAY_LOOP + CONNECT_TIMEOUT) * 1.1)
}

fn common() -> CheckCommon {
    CheckCommon {
        connect_timeout: CONNECT_TIMEOUT,
        retry: RETRY,
        rise: 2,
        delay_before_retry: 0.25,
        warmup: None,
        bindto: None,
        connect_ip: None,
        connect_port: None,
    }
}

fn checker(target: SocketAddr, kind: Kind) -> Checker {
    Checker {
        server: ServerKey {
            service: "vs".into(),
            addr: Ipv4Addr::LOCALHOST,
            port: target.port(),
        },
        target,
        common: common(),
        delay_loop: Duration::from_secs_f64(DELAY_LOOP),
        kind,
        alpha: false,
    }
}

fn http(digest: Option<&str>) -> Kind {
    Kind::Http(Http {
        tls: false,
        verify: false,
        path: "/health".into(),
        host: Some("backend.test".into()),
        version: "1.1".into(),
        codes: vec![(200, 299)],
        codes_text: "200-299".into(),
        digest: digest.map(str::to_string),
    })
}

// Server modes.
const OK: u8 = 0;
const ERROR_503: u8 = 1;
const HANG: u8 = 2;
const TRICKLE: u8 = 3;
const OTHER_BODY: u8 = 4;

/// An HTTP server on loopback whose behaviour follows `mode`.
async fn http_server(mode: Arc<AtomicU8>, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let mode = mode.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        if let Ok(s) = acc.accept(s).await {
                            serve(s, mode.load(Ordering::SeqCst)).await;
                        }
                    }
                    None => serve(s, mode.load(Ordering::SeqCst)).await,
                }
            });
        }
    });
    addr
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, mode: u8) {
    let mut buf = [0u8; 2048];
    let _ = s.read(&mut buf).await;
    let reply: &[u8] = match mode {
        OK => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ERROR_503 => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        OTHER_BODY => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhellO\r\n0\r\n\r\n"
        }
        HANG => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => {
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
    };
    let _ = s.write_all(reply).await;
}

/// Checks `c` forever from state `up`, as the agent's pool does for each
/// server (probe, count with a `Tracker`, wait), and returns its events.
fn start(c: Checker, up: bool) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut t = health::Tracker::new(up);
        loop {
            let (change, pause) = t.observe(&c, health::probe(&c).await);
            if let Some((up, weight, reason)) = change {
                let server = c.server.clone();
                let ev = Event {
                    server,
                    up,
                    weight,
                    reason,
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(pause).await;
        }
    });
    rx
}

async fn next(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Event {
    timeout(within, rx.recv())
        .await
        .expect("no health event in time")
        .unwrap()
}

/// Switches the server to `mode` and checks the server is declared down in
/// time, with `reason`.
async fn goes_down(rx: &mut mpsc::Receiver<Event>, mode: &AtomicU8, to: u8, reason: &str) {
    let t = Instant::now();
    mode.store(to, Ordering::SeqCst);
    let ev = next(rx, bound() + Duration::from_secs(2)).await;
    let took = t.elapsed();
    assert!(!ev.up, "{ev:?}");
    assert!(
        ev.reason.contains(reason),
        "reason {:?} lacks {reason:?}",
        ev.reason
    );
    assert!(took <= bound(), "down after {took:?}, bound {:?}", bound());
}

#[tokio::test]
async fn http_get_detects_503_hang_and_trickle_on_time_and_recovers_after_rise() {
    let mode = Arc::new(AtomicU8::new(OK));
    let addr = http_server(mode.clone(), None).await;
    let c = checker(addr, http(Some("5d41402abc4b2a76b9719d911017c592")));
    assert_eq!(health::probe(&c).await, Outcome::Up { weight: None });
    let mut rx = start(c, true);
    goes_down(&mut rx, &mode, ERROR_503, "status 503 not in 200-299").await;
    // Back after `rise` (2) successes: at least one delay_loop later.
    let t = Instant::now();
    mode.store(OK, Ordering::SeqCst);
    let ev = next(&mut rx, Duration::from_secs(3)).await;
    assert!(ev.up && ev.reason.contains("2 successful"), "{ev:?}");
    assert!(
        t.elapsed() >= Duration::from_secs_f64(DELAY_LOOP * 0.9),
        "up too early: {:?}",
        t.elapsed()
    );
    goes_down(&mut rx, &mode, HANG, "response timeout after 0.25 s").await;
    mode.store(OK, Ordering::SeqCst);
    assert!(next(&mut rx, Duration::from_secs(3)).await.up);
    goes_down(&mut rx, &mode, TRICKLE, "response timeout after 0.25 s").await;
    mode.store(OK, Ordering::SeqCst);
    assert!(next(&mut rx, Duration::from_secs(3)).await.up);
    goes_down(&mut rx, &mode, OTHER_BODY, "digest mismatch").await;
}

#[tokio::test]
async fn tcp_check_detects_a_closed_port() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = checker(addr, Kind::Tcp);
    let mut rx = start(c, true);
    let t = Instant::now();
    drop(l);
    let ev = next(&mut rx, bound() + Duration::from_secs(2)).await;
    assert!(!ev.up && ev.reason.contains("Connection refused"), "{ev:?}");
    assert!(t.elapsed() <= bound(), "{:?}", t.elapsed());
    // A port nothing listens on: the reason names the target.
    let mut c = checker(SocketAddr::from(([127, 0, 0, 1], 9)), Kind::Tcp);
    c.common.retry = 1;
    match health::probe(&c).await {
        Outcome::Down(r) => assert!(r.starts_with("connect to 127.0.0.1:9: "), "{r}"),
        up => panic!("{up:?}"),
    }
}

#[tokio::test]
async fn ssl_get_speaks_tls_with_sni_and_verifies_only_when_asked() {
    let cert = rcgen::generate_simple_self_signed(vec!["backend.test".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acc = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mode = Arc::new(AtomicU8::new(OK));
    let addr = http_server(mode.clone(), Some(acc)).await;
    let mut kind = http(None);
    if let Kind::Http(h) = &mut kind {
        h.tls = true;
    }
    let c = checker(addr, kind.clone());
    assert_eq!(health::probe(&c).await, Outcome::Up { weight: None });
    mode.store(ERROR_503, Ordering::SeqCst);
    assert_eq!(
        health::probe(&c).await,
        Outcome::Down("status 503 not in 200-299".into())
    );
    if let Kind::Http(h) = &mut kind {
        h.verify = true;
    }
    match health::probe(&checker(addr, kind)).await {
        Outcome::Down(r) => assert!(r.starts_with("TLS handshake: "), "{r}"),
        up => panic!("a self-signed certificate passed verification: {up:?}"),
    }
}

/// A DNS server on loopback: answers NOERROR, SERVFAIL, or nothing.
async fn dns_server(mode: Arc<AtomicU8>) -> SocketAddr {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = s.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let rc = match mode.load(Ordering::SeqCst) {
                OK => ResponseCode::NoError,
                ERROR_503 => ResponseCode::ServFail,
                _ => continue,
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_response_code(rc);
            r.add_queries(q.queries().to_vec());
            let _ = s.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_check_needs_a_noerror_answer() {
    let mode = Arc::new(AtomicU8::new(OK));
    let addr = dns_server(mode.clone()).await;
    let c = checker(
        addr,
        Kind::Dns {
            name: "example.org".into(),
            qtype: "A".into(),
        },
    );
    assert_eq!(health::probe(&c).await, Outcome::Up { weight: None });
    let mut rx = start(c, true);
    goes_down(&mut rx, &mode, ERROR_503, "DNS rcode Server Failure").await;
    mode.store(OK, Ordering::SeqCst);
    assert!(next(&mut rx, Duration::from_secs(3)).await.up);
    goes_down(&mut rx, &mode, HANG, "no DNS answer within 0.25 s").await;
}

#[tokio::test]
async fn misc_check_exit_codes_dynamic_weight_and_timeout() {
    let misc = |cmd: &str, dynamic: bool| {
        checker(
            SocketAddr::from(([127, 0, 0, 1], 1)),
            Kind::Misc {
                command: cmd.into(),
                timeout: Duration::from_millis(300),
                dynamic,
            },
        )
    };
    assert_eq!(
        health::probe(&misc("exit 0", false)).await,
        Outcome::Up { weight: None }
    );
    assert_eq!(
        health::probe(&misc("exit 1", false)).await,
        Outcome::Down("exit 1".into())
    );
    assert_eq!(
        health::probe(&misc("exit 7", false)).await,
        Outcome::Down("exit 7".into())
    );
    assert_eq!(
        health::probe(&misc("exit 7", true)).await,
        Outcome::Up { weight: Some(5) }
    );
    let t = Instant::now();
    assert_eq!(
        health::probe(&misc("sleep 5", false)).await,
        Outcome::Down("killed after 0.3 s".into())
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "not killed on time: {:?}",
        t.elapsed()
    );
}

/// A pool of servers whose misc_check logs its start and end to `log`
/// (`s N` / `e N`) and takes 0.3 s; `extra` is appended to server 0's
/// command, so changing it changes that server's checker.
fn pool_config(
    log: &std::path::Path,
    servers: std::ops::Range<u16>,
    extra: &str,
) -> Arc<lb_user::config::Config> {
    let mut text = String::from(
        "global: {interface: lo}\nvirtual_servers:\n  - name: pool\n    vip: 192.0.2.1\n    port: 80\n    delay_loop: 60\n    snat: {addresses: [192.0.2.2]}\n    real_servers:\n",
    );
    for n in servers {
        let more = if n == 0 { extra } else { "" };
        text += &format!(
            "      - {{address: 127.0.0.1, port: {}, misc_check: {{misc_path: \"echo s {n} >> {log}; sleep 0.3; echo e {n} >> {log}{more}\", misc_timeout: 5}}}}\n",
            10000 + n,
            log = log.display()
        );
    }
    Arc::new(lb_user::config::parse(&text, "pool.yaml").unwrap())
}

/// Waits (bounded) until `log` holds `ends` end lines; returns its lines.
async fn log_lines(log: &std::path::Path, ends: usize) -> Vec<String> {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.iter().filter(|l| l.starts_with('e')).count() >= ends {
            return lines;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "only {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pool_bounds_checks_in_flight_and_keeps_unchanged_servers_on_update() {
    let dir = std::env::temp_dir().join(format!("xlbt-{}-pool", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("checks.log");
    let (tx, mut rx) = mpsc::channel(64);
    let checks = health::Pool::new(tx, Default::default(), 3).spawn();
    checks.update(pool_config(&log, 0..12, ""), Default::default());
    let lines = log_lines(&log, 12).await;
    // Every server checked once, never more than three at a time.
    let (mut running, mut most) = (0i32, 0i32);
    for l in &lines {
        running += if l.starts_with('s') { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(lines.len(), 24, "{lines:?}");
    assert_eq!(most, 3, "checks in flight at once: {lines:?}");
    std::fs::write(&log, "").unwrap();

    // Server 0's checker changes, 11 goes, 12 and 13 come (13 known down):
    // only 0, 12 and 13 are checked now; the others keep their schedule.
    let down = [ServerKey {
        service: "pool".into(),
        addr: Ipv4Addr::LOCALHOST,
        port: 10013,
    }]
    .into();
    checks.update(pool_config(&log, 0..11, "; true"), Default::default());
    checks.update(
        {
            let mut c = (*pool_config(&log, 0..14, "; true")).clone();
            Arc::make_mut(&mut c.virtual_servers[0])
                .real_servers
                .remove(11);
            Arc::new(c)
        },
        down,
    );
    let lines = log_lines(&log, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut checked: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('e'))
        .map(String::from)
        .collect();
    checked.sort();
    assert_eq!(checked, ["e 0", "e 12", "e 13"], "{lines:?}");
    // Only the server that started down reports: up after one success.
    let ev = next(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(
        (ev.server, ev.up, ev.reason.as_str()),
        (
            ServerKey {
                service: "pool".into(),
                addr: Ipv4Addr::LOCALHOST,
                port: 10013
            },
            true,
            "1 successful check(s)"
        )
    );
    assert!(rx.try_recv().is_err());
    drop(checks);
    let _ = std::fs::remove_dir_all(&dir);
}
