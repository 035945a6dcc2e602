//! Health checks of real servers, with keepalived's checker set; each
//! server's up/down transitions are reported with the reason. [`Pool`] runs
//! the checks of a whole config.
//!
//! Unlike keepalived, the whole exchange of a check — connect, request and
//! response — must finish within `connect_timeout`: a server that accepts and
//! then trickles or hangs is down.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpSocket, TcpStream, UdpSocket},
    time::{timeout, Instant},
};

pub use crate::config::ServerKey;
use crate::config::{status_ranges, CheckCommon, RealServer, StatusCodes, VirtualServer};

mod pool;
pub use pool::{Checks, Pool};

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Healthy; `misc_dynamic` may also set the weight.
    Up { weight: Option<u32> },
    /// Failing, and why.
    Down(String),
}

/// A state change of a real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub server: ServerKey,
    pub up: bool,
    /// A new weight from `misc_dynamic`, if any.
    pub weight: Option<u32>,
    /// Why it is down, or what brought it up.
    pub reason: String,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Tcp,
    Http(Http),
    Dns {
        name: String,
        qtype: String,
    },
    Misc {
        command: String,
        timeout: Duration,
        dynamic: bool,
    },
}

/// `http_get` / `ssl_get`.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub tls: bool,
    pub verify: bool,
    pub path: String,
    pub host: Option<String>,
    pub version: String,
    pub codes: Vec<(u16, u16)>,
    pub codes_text: String,
    pub digest: Option<String>,
}

/// One real server's checker.
#[derive(Debug, Clone, PartialEq)]
pub struct Checker {
    pub server: ServerKey,
    /// Where the check connects (`connect_ip`/`connect_port` override the server).
    pub target: SocketAddr,
    pub common: CheckCommon,
    pub delay_loop: Duration,
    pub kind: Kind,
    /// Starts down until the first success.
    pub alpha: bool,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The checker of one real server, if it has a checker block.
pub fn checker_for(vs: &VirtualServer, rs: &RealServer) -> Option<Checker> {
    let (common, kind) = if let Some(c) = &rs.tcp_check {
        (c.common(), Kind::Tcp)
    } else if let Some(h) = rs
        .http_get
        .as_ref()
        .map(|h| (h, false))
        .or(rs.ssl_get.as_ref().map(|h| (h, true)))
    {
        let (h, tls) = h;
        let codes = h
            .status_code
            .clone()
            .unwrap_or(StatusCodes::Ranges("200-299".into()));
        let codes_text = match &codes {
            StatusCodes::One(c) => c.to_string(),
            StatusCodes::Ranges(r) => r.clone(),
        };
        (
            h.common(),
            Kind::Http(Http {
                tls,
                verify: h.verify_certificate,
                path: h.path.clone(),
                host: h.virtualhost.clone(),
                version: h.http_protocol.clone().unwrap_or_else(|| "1.0".into()),
                codes: status_ranges(&codes).unwrap_or_else(|| vec![(200, 299)]),
                codes_text,
                digest: h.digest.as_ref().map(|d| d.to_ascii_lowercase()),
            }),
        )
    } else if let Some(d) = &rs.dns_check {
        (
            d.common(),
            Kind::Dns {
                name: d.name.clone(),
                qtype: d.qtype.to_ascii_uppercase(),
            },
        )
    } else if let Some(m) = &rs.misc_check {
        let c = m.common();
        let t = m.misc_timeout.unwrap_or(c.connect_timeout);
        (
            c,
            Kind::Misc {
                command: m.misc_path.clone(),
                timeout: secs(t),
                dynamic: m.misc_dynamic,
            },
        )
    } else {
        return None;
    };
    let ip = common.connect_ip.unwrap_or(rs.address);
    let port = common.connect_port.unwrap_or(rs.port);
    Some(Checker {
        server: ServerKey::of(vs, rs),
        target: SocketAddr::from((ip, port)),
        common,
        delay_loop: secs(vs.delay_loop),
        kind,
        alpha: rs.alpha,
    })
}

/// Durations of the most recent checks, for latency percentiles.
#[derive(Debug, Default)]
pub struct Latencies {
    ring: Vec<f32>,
    next: usize,
}

/// How many recent check durations are kept.
const LATENCY_SAMPLES: usize = 8192;

impl Latencies {
    /// Records one check's duration.
    pub fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f32() * 1e3;
        if self.ring.len() < LATENCY_SAMPLES {
            self.ring.push(ms);
        } else {
            self.ring[self.next] = ms;
        }
        self.next = (self.next + 1) % LATENCY_SAMPLES;
    }

    /// (samples, p50, p90, p99, max) in milliseconds.
    pub fn percentiles(&self) -> (usize, f32, f32, f32, f32) {
        if self.ring.is_empty() {
            return (0, 0.0, 0.0, 0.0, 0.0);
        }
        let mut v = self.ring.clone();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (v.len(), at(0.5), at(0.9), at(0.99), v[v.len() - 1])
    }
}

/// Shared by every checker task of an agent.
pub type SharedLatencies = Arc<std::sync::Mutex<Latencies>>;

/// A server's state between checks: keepalived's `retry` failures take it
/// down, `rise` successes bring it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    up: bool,
    fails: u32,
    passes: u32,
    weight: Option<u32>,
}

/// What a check changed: (up, weight, reason).
pub type Change = (bool, Option<u32>, String);

impl Tracker {
    /// Starting `up` or down, with no failures or successes counted.
    pub fn new(up: bool) -> Self {
        Tracker {
            up,
            fails: 0,
            passes: 0,
            weight: None,
        }
    }

    /// Whether the server is up.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Counts one outcome of `c`: the change to report, if any, and how long
    /// to wait before the next check.
    pub fn observe(&mut self, c: &Checker, outcome: Outcome) -> (Option<Change>, Duration) {
        match outcome {
            Outcome::Up { weight } => {
                self.fails = 0;
                let changed = weight != self.weight;
                self.weight = weight;
                let rise = c.common.rise.max(1);
                let change = if !self.up {
                    self.passes += 1;
                    (self.passes >= rise).then(|| {
                        self.up = true;
                        self.passes = 0;
                        (true, weight, format!("{rise} successful check(s)"))
                    })
                } else {
                    changed.then(|| (true, weight, "dynamic weight".into()))
                };
                (change, c.delay_loop)
            }
            Outcome::Down(reason) => {
                self.passes = 0;
                if !self.up {
                    return (None, c.delay_loop);
                }
                self.fails += 1;
                if self.fails < c.common.retry.max(1) {
                    return (None, secs(c.common.delay_before_retry));
                }
                self.up = false;
                self.fails = 0;
                (Some((false, None, reason)), c.delay_loop)
            }
        }
    }
}

/// One check, bounded by `connect_timeout` as a whole (misc: `misc_timeout`).
pub async fn probe(c: &Checker) -> Outcome {
    // Each kind's future is boxed on its own: the TLS/HTTP and DNS states
    // are KiBs, and a TCP check, the common one, should not carry them
    // (thousands are in flight at once in a large pool).
    match &c.kind {
        Kind::Misc {
            command,
            timeout: t,
            dynamic,
        } => Box::pin(misc(command, *t, *dynamic)).await,
        Kind::Dns { name, qtype } => Box::pin(probe_dns(c, name, qtype)).await,
        Kind::Tcp => match connect(c, secs(c.common.connect_timeout)).await {
            Ok(_) => Outcome::Up { weight: None },
            Err(e) => Outcome::Down(e),
        },
        Kind::Http(h) => Box::pin(probe_http(c, h)).await,
    }
}

async fn probe_dns(c: &Checker, name: &str, qtype: &str) -> Outcome {
    let limit = secs(c.common.connect_timeout);
    match timeout(limit, dns(c, name, qtype)).await {
        Ok(o) => o,
        Err(_) => Outcome::Down(format!("no DNS answer within {}", show(limit))),
    }
}

async fn probe_http(c: &Checker, h: &Http) -> Outcome {
    let limit = secs(c.common.connect_timeout);
    let deadline = Instant::now() + limit;
    let stream = match connect(c, limit).await {
        Ok(s) => s,
        Err(e) => return Outcome::Down(e),
    };
    if h.tls {
        match timeout_at(deadline, tls(stream, h, c.target)).await {
            Ok(Ok(s)) => http(s, h, deadline, limit).await,
            Ok(Err(e)) => Outcome::Down(format!("TLS handshake: {e}")),
            Err(_) => Outcome::Down(format!("TLS handshake timeout after {}", show(limit))),
        }
    } else {
        http(stream, h, deadline, limit).await
    }
}

async fn timeout_at<F: std::future::Future>(
    deadline: Instant,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline, f).await
}

/// "3 s", "0.5 s".
fn show(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

async fn connect(c: &Checker, limit: Duration) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(b) = c.common.bindto {
        sock.bind(SocketAddr::from((b, 0)))
            .map_err(|e| format!("bind {b}: {e}"))?;
    }
    match timeout(limit, sock.connect(c.target)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect to {}: {e}", c.target)),
        Err(_) => Err(format!("connect timeout after {}", show(limit))),
    }
}

async fn tls(
    stream: TcpStream,
    h: &Http,
    target: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = if h.verify {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    } else {
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert::new()))
            .with_no_client_auth()
    };
    let name = match &h.host {
        Some(host) => rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("virtualhost {host:?}: {e}"))?,
        None => rustls::pki_types::ServerName::IpAddress(target.ip().into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())
}

/// `ssl_get` without `verify_certificate`, like keepalived: any certificate.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl AnyCert {
    fn new() -> Self {
        AnyCert(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Largest response a check reads.
const MAX_RESPONSE: usize = 1 << 20;

/// One request and its whole response (hyper's HTTP/1 client over the
/// check's own connection), judged; all of it before `deadline`.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    h: &Http,
    deadline: Instant,
    limit: Duration,
) -> Outcome {
    match timeout_at(deadline, exchange(s, h)).await {
        Err(_) => Outcome::Down(format!("response timeout after {}", show(limit))),
        Ok(Err(why)) => Outcome::Down(why),
        Ok(Ok(r)) => judge(h, r),
    }
}

/// The status and body of the response to `h`'s request, or why there is
/// none.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: S, h: &Http) -> Result<Response, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper::{body::Bytes, header, Request, Version};
    let sending = |e: hyper::Error| format!("sending the request: {e}");
    // `Host:`, not `host:`: some health endpoints compare names as written.
    let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(sending)?;
    let req = Request::get(h.path.as_str())
        .version(if h.version == "1.1" {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        })
        .header(header::HOST, h.host.as_deref().unwrap_or("localhost"))
        .header(header::USER_AGENT, "xlb-healthcheck")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("the request: {e}"))?;
    let response = async {
        let resp = tx.send_request(req).await.map_err(reading)?;
        let code = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let data = f.data_ref().map_or(&[][..], |d| &d[..]);
                    if got.len() + data.len() > MAX_RESPONSE {
                        return Err("response over 1 MiB".to_string());
                    }
                    got.extend_from_slice(data);
                }
                // A body cut short by the server's close is judged on what
                // came, as keepalived does; a reset or another error fails.
                Err(e) if cut_short(&e) => break,
                Err(e) => return Err(reading(e)),
            }
        }
        Ok(Response { code, body: got })
    };
    // The connection is driven beside the exchange, on this task: it ends
    // with the response (the request asked for `Connection: close`).
    let (mut response, mut conn) = (std::pin::pin!(response), std::pin::pin!(conn));
    tokio::select! {
        biased;
        r = &mut response => r,
        done = &mut conn => match done {
            // The whole response was read before the connection closed.
            Ok(()) => response.await,
            Err(e) => Err(reading(e)),
        },
    }
}

/// Whether a body read failed because the connection closed before the
/// body's end: no I/O error but an unexpected end of file.
fn cut_short(e: &hyper::Error) -> bool {
    use std::error::Error;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        source = s.source();
    }
    true
}

/// Why a response could not be read.
fn reading(e: hyper::Error) -> String {
    use std::error::Error;
    match e.source() {
        _ if e.is_incomplete_message() => "connection closed before a full response".into(),
        Some(why) => format!("reading the response: {e}: {why}"),
        None => format!("reading the response: {e}"),
    }
}

struct Response {
    code: u16,
    body: Vec<u8>,
}

fn judge(h: &Http, r: Response) -> Outcome {
    if !h.codes.iter().any(|(a, b)| (*a..=*b).contains(&r.code)) {
        return Outcome::Down(format!("status {} not in {}", r.code, h.codes_text));
    }
    if let Some(want) = &h.digest {
        use md5::{Digest, Md5};
        let got: String = Md5::digest(&r.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if &got != want {
            return Outcome::Down(format!("digest mismatch: body MD5 {got}, want {want}"));
        }
    }
    Outcome::Up { weight: None }
}

async fn dns(c: &Checker, name: &str, qtype: &str) -> Outcome {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{Name, RecordType},
    };
    let rtype: RecordType = match qtype.parse() {
        Ok(t) => t,
        Err(_) => return Outcome::Down(format!("unknown query type {qtype}")),
    };
    let qname = match Name::from_ascii(name) {
        Ok(n) => n,
        Err(e) => return Outcome::Down(format!("query name {name:?}: {e}")),
    };
    let id: u16 = fastrand::u16(..);
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    msg.add_query(Query::query(qname, rtype));
    let bytes = match msg.to_vec() {
        Ok(b) => b,
        Err(e) => return Outcome::Down(format!("building the query: {e}")),
    };
    let bind = SocketAddr::from((c.common.bindto.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return Outcome::Down(format!("bind {bind}: {e}")),
    };
    if let Err(e) = sock.connect(c.target).await {
        return Outcome::Down(format!("connect to {}: {e}", c.target));
    }
    if let Err(e) = sock.send(&bytes).await {
        return Outcome::Down(format!("sending the query: {e}"));
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => return Outcome::Down(format!("receiving: {e}")),
        };
        let reply = match Message::from_vec(&buf[..n]) {
            Ok(m) => m,
            Err(e) => return Outcome::Down(format!("malformed DNS reply: {e}")),
        };
        if reply.id() != id || reply.message_type() != MessageType::Response {
            continue;
        }
        return match reply.response_code() {
            ResponseCode::NoError => Outcome::Up { weight: None },
            rc => Outcome::Down(format!("DNS rcode {rc}")),
        };
    }
}

async fn misc(command: &str, limit: Duration, dynamic: bool) -> Outcome {
    let mut child = match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Down(format!("running {command:?}: {e}")),
    };
    let status = match timeout(limit, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Down(format!("waiting for {command:?}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            return Outcome::Down(format!("killed after {}", show(limit)));
        }
    };
    match status.code() {
        Some(0) => Outcome::Up { weight: None },
        Some(code) if dynamic && code >= 2 => Outcome::Up {
            weight: Some(code as u32 - 2),
        },
        Some(code) => Outcome::Down(format!("exit {code}")),
        None => Outcome::Down("killed by a signal".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The response to a request, from a server that writes `reply` and
    /// closes.
    async fn answer(reply: &'static [u8]) -> Result<(u16, Vec<u8>), String> {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
            let _ = server.write_all(reply).await;
        });
        let h = Http {
            tls: false,
            verify: false,
            path: "/".into(),
            host: None,
            version: "1.1".into(),
            codes: vec![(200, 299)],
            codes_text: "200-299".into(),
            digest: None,
        };
        exchange(client, &h).await.map(|r| (r.code, r.body))
    }

    #[tokio::test]
    async fn chunked_length_and_until_close_framing() {
        let r = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcde").await;
        assert_eq!(r, Ok((200, b"abc".to_vec())));
        // A body cut short by the close is judged on what came.
        let short = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab").await;
        assert_eq!(short, Ok((200, b"ab".to_vec())));
        const CHUNKED: &[u8] =
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(answer(CHUNKED).await, Ok((503, b"abcde".to_vec())));
        let cut = &CHUNKED[..CHUNKED.len() - 7];
        let cut: &'static [u8] = Box::leak(cut.to_vec().into_boxed_slice());
        assert_eq!(answer(cut).await, Ok((503, b"abcde".to_vec())));
        let close = answer(b"HTTP/1.0 200 OK\r\n\r\nuntil close").await;
        assert_eq!(close, Ok((200, b"until close".to_vec())));
        let head = answer(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        assert_eq!(head, Err("connection closed before a full response".into()));
    }

    #[tokio::test]
    async fn a_response_over_the_limit_is_refused() {
        let big: &'static [u8] = Box::leak(
            [
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    MAX_RESPONSE + 1
                )
                .into_bytes(),
                vec![b'x'; MAX_RESPONSE + 1],
            ]
            .concat()
            .into_boxed_slice(),
        );
        assert_eq!(answer(big).await, Err("response over 1 MiB".into()));
    }

    #[test]
    fn judge_codes_and_digest() {
        let h = Http {
            tls: false,
            verify: false,
            path: "/".into(),
            host: None,
            version: "1.0".into(),
            codes: vec![(200, 299)],
            codes_text: "200-299".into(),
            // MD5 of "hello"
            digest: Some("5d41402abc4b2a76b9719d911017c592".into()),
        };
        assert_eq!(
            judge(
                &h,
                Response {
                    code: 200,
                    body: b"hello".to_vec()
                }
            ),
            Outcome::Up { weight: None }
        );
        assert_eq!(
            judge(
                &h,
                Response {
                    code: 503,
                    body: vec![]
                }
            ),
            Outcome::Down("status 503 not in 200-299".into())
        );
        assert!(
            matches!(judge(&h, Response { code: 200, body: b"hellO".to_vec() }), Outcome::Down(m) if m.starts_with("digest mismatch"))
        );
    }
}
