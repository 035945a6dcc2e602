//! Client traffic to the VIP, as a user's clients would send it: HTTP on
//! new connections, HTTP on long-lived keep-alive connections, and DNS
//! queries over UDP. Every answer names the backend that gave it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddrV4, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::lab::BACKENDS;

/// How long one request may take before it counts as an error.
pub const TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a keep-alive stream waits for an answer. A request sent while
/// the VIP moves is retransmitted by TCP at 0.2 s, 0.6 s and 1.4 s: a
/// failover of ~0.7 s can take the answer past one second although the
/// connection survives, so a stream is broken only when it errs or stays
/// silent longer than a patient client (a connection pool) would wait.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters shared by the load threads and the reader.
#[derive(Default)]
pub struct Stats {
    /// HTTP answers on new connections, per backend.
    pub http: [AtomicU64; BACKENDS],
    pub http_errors: AtomicU64,
    /// DNS answers, per backend.
    pub dns: [AtomicU64; BACKENDS],
    pub dns_errors: AtomicU64,
    /// Requests answered on the long-lived connections.
    pub stream_requests: AtomicU64,
    /// Long-lived connections that failed (reset, timeout, wrong backend).
    pub stream_breaks: AtomicU64,
    /// Long-lived connections open now, per backend.
    pub streams_open: [AtomicU64; BACKENDS],
    /// The most recent error, for the operator.
    pub last_error: Mutex<String>,
}

impl Stats {
    fn error(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = what;
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &[AtomicU64; BACKENDS]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        Snapshot {
            http: load(&self.http),
            http_errors: self.http_errors.load(Ordering::Relaxed),
            dns: load(&self.dns),
            dns_errors: self.dns_errors.load(Ordering::Relaxed),
            stream_requests: self.stream_requests.load(Ordering::Relaxed),
            stream_breaks: self.stream_breaks.load(Ordering::Relaxed),
            streams_open: load(&self.streams_open),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub http: [u64; BACKENDS],
    pub http_errors: u64,
    pub dns: [u64; BACKENDS],
    pub dns_errors: u64,
    pub stream_requests: u64,
    pub stream_breaks: u64,
    pub streams_open: [u64; BACKENDS],
}

/// Which backend a body like `b2 10.96.0.50\n` or a TXT `b2` names: its
/// index.
fn backend_of(body: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(body).ok()?.split_whitespace().next()?;
    let n: usize = s.strip_prefix('b')?.parse().ok()?;
    (1..=BACKENDS).contains(&n).then(|| n - 1)
}

/// One HTTP request on a new connection (`Connection: close`); the index
/// of the backend that answered.
pub fn http_once(vip: SocketAddrV4) -> Result<usize> {
    http_get(vip).map(|(b, _)| b)
}

/// One HTTP request on a new connection: the backend that answered and the
/// source address it saw.
pub fn http_get(vip: SocketAddrV4) -> Result<(usize, String)> {
    let mut s = TcpStream::connect_timeout(&vip.into(), TIMEOUT)
        .with_context(|| format!("connect {vip}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::with_capacity(256);
    s.read_to_end(&mut reply).context("reading the reply")?;
    let body = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| &reply[p + 4..])
        .context("no end of headers")?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        bail!(
            "status {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(12)])
        );
    }
    let b = backend_of(body)
        .with_context(|| format!("unknown body {:?}", String::from_utf8_lossy(body)))?;
    let seen = String::from_utf8_lossy(body)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    Ok((b, seen))
}

/// A keep-alive HTTP connection.
pub struct Stream {
    conn: BufReader<TcpStream>,
}

impl Stream {
    pub fn open(vip: SocketAddrV4) -> Result<Stream> {
        let s = TcpStream::connect_timeout(&vip.into(), TIMEOUT)
            .with_context(|| format!("connect {vip}"))?;
        Self::keep(s)
    }

    /// Opens from a chosen source port, to pick a flow's hash.
    pub fn open_from(vip: SocketAddrV4, port: u16) -> Result<Stream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port).into())
            .with_context(|| format!("binding port {port}"))?;
        s.connect_timeout(&vip.into(), TIMEOUT)
            .with_context(|| format!("connect {vip} from port {port}"))?;
        Self::keep(s.into())
    }

    fn keep(s: TcpStream) -> Result<Stream> {
        s.set_read_timeout(Some(STREAM_TIMEOUT))?;
        s.set_write_timeout(Some(STREAM_TIMEOUT))?;
        Ok(Stream {
            conn: BufReader::new(s),
        })
    }

    /// How long a request waits for its answer (default [`STREAM_TIMEOUT`]).
    pub fn set_timeout(&mut self, d: Duration) -> Result<()> {
        self.conn.get_ref().set_read_timeout(Some(d))?;
        Ok(())
    }

    /// One request on the open connection; the backend that answered.
    pub fn request(&mut self) -> Result<usize> {
        self.conn
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")?;
        let mut len = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.conn.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0u8; len.context("no Content-Length")?.min(4096)];
        self.conn.read_exact(&mut body)?;
        backend_of(&body).context("unknown body")
    }
}

/// One DNS query (TXT `whoami.demo`) from a fresh source port; the backend
/// that answered.
pub fn dns_once(vip: SocketAddrV4, id: u16) -> Result<usize> {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RData, RecordType},
    };
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    msg.add_query(Query::query(
        Name::from_ascii("whoami.demo.")?,
        RecordType::TXT,
    ));
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.connect(vip)?;
    sock.send(&msg.to_vec()?)?;
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if Instant::now() > deadline {
            bail!("no DNS answer");
        }
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bail!("no DNS answer within {TIMEOUT:?}")
            }
            Err(e) => return Err(e).context("receiving the DNS answer"),
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.id() != id {
            continue;
        }
        for a in reply.answers() {
            if let RData::TXT(txt) = a.data() {
                let text: Vec<u8> = txt.iter().flat_map(|b| b.iter().copied()).collect();
                if let Some(b) = backend_of(&text) {
                    return Ok(b);
                }
            }
        }
        bail!("DNS answer without whoami: {}", reply.response_code());
    }
}

/// The client's load, running on threads inside the client namespace until
/// [`Load::stop`].
pub struct Load {
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How much load to send.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// HTTP requests per second, each on a new connection.
    pub http: u32,
    /// DNS queries per second.
    pub dns: u32,
    /// Long-lived keep-alive connections, one request each 200 ms.
    pub streams: u32,
}

/// One load thread's body.
type Job = Box<dyn FnOnce(&Stats, &AtomicBool) + Send>;

/// Runs `f` every `1/rate` s until `stop`, keeping the pace.
fn paced(rate: u32, stop: &AtomicBool, mut f: impl FnMut(u64)) {
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        f(n);
        n += 1;
        next += period;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            // Behind (a timeout): do not burst to catch up.
            next = now;
        }
    }
}

impl Load {
    /// Starts the load from namespace `client` towards `vip`.
    pub fn start(client: &str, vip: std::net::Ipv4Addr, rates: Rates) -> Load {
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut go = |f: Job| {
            let (stats, stop, ns) = (stats.clone(), stop.clone(), client.to_string());
            threads.push(thread::spawn(move || {
                if let Err(e) = netlab::enter(&ns) {
                    *stats.last_error.lock().unwrap() = format!("{e:#}");
                    return;
                }
                f(&stats, &stop)
            }));
        };
        let web = SocketAddrV4::new(vip, 80);
        let dns = SocketAddrV4::new(vip, 53);
        // Two threads, so one timeout does not stall the whole rate.
        for _ in 0..2 {
            let rate = rates.http.div_ceil(2);
            go(Box::new(move |st, stop| {
                paced(rate, stop, |_| match http_once(web) {
                    Ok(b) => {
                        st.http[b].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => st.error(&st.http_errors, format!("http: {e:#}")),
                })
            }));
        }
        if rates.dns > 0 {
            go(Box::new(move |st, stop| {
                paced(rates.dns, stop, |n| match dns_once(dns, n as u16) {
                    Ok(b) => {
                        st.dns[b].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => st.error(&st.dns_errors, format!("dns: {e:#}")),
                })
            }));
        }
        for _ in 0..rates.streams {
            go(Box::new(move |st, stop| stream_loop(web, st, stop)));
        }
        Load {
            stats,
            stop,
            threads,
        }
    }

    /// Stops the load and waits for its threads (each ends within one
    /// request timeout).
    pub fn stop(self) -> Snapshot {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.stats.snapshot()
    }
}

/// Keeps one keep-alive connection busy; a failure, or an answer from
/// another backend than the first, is a break, and the stream reopens.
fn stream_loop(web: SocketAddrV4, st: &Stats, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let (mut s, backend) = match Stream::open(web).and_then(|mut s| s.request().map(|b| (s, b)))
        {
            Ok(v) => v,
            Err(e) => {
                st.error(&st.stream_breaks, format!("stream open: {e:#}"));
                thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        st.streams_open[backend].fetch_add(1, Ordering::Relaxed);
        st.stream_requests.fetch_add(1, Ordering::Relaxed);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            next += Duration::from_millis(200);
            thread::sleep(next.saturating_duration_since(Instant::now()));
            let sent = Instant::now();
            match s.request() {
                Ok(b) if b == backend => {
                    st.stream_requests.fetch_add(1, Ordering::Relaxed);
                }
                Ok(b) => {
                    let why = format!("stream moved from b{} to b{}", backend + 1, b + 1);
                    st.error(&st.stream_breaks, why);
                    break;
                }
                Err(e) => {
                    let after = sent.elapsed().as_millis();
                    let port = s.conn.get_ref().local_addr().map_or(0, |a| a.port());
                    let why = format!(
                        "stream from port {port} to b{}: {e:#} after {after} ms",
                        backend + 1
                    );
                    st.error(&st.stream_breaks, why);
                    break;
                }
            }
        }
        st.streams_open[backend].fetch_sub(1, Ordering::Relaxed);
    }
}
