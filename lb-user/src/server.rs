//! The status socket (`xlb status`) and the metrics endpoint (HTTP), each
//! on its own task: every connection gets a task of its own and a time
//! limit, so a slow or idle client never holds the agent's loop. A request
//! asks the loop for a snapshot over a channel.

use std::{convert::Infallible, future::Future, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
    task::JoinHandle,
    time::timeout,
};
use tracing::{debug, warn};

use crate::status::Status;

/// A status or metrics client gets this long to ask and to read.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once on each listener; more are closed at once.
const MAX_CLIENTS: usize = 64;

/// A request for a snapshot, answered by the agent's loop.
pub type Ask = oneshot::Sender<Result<Status, String>>;

/// The loop's side: where snapshots are asked for.
pub type Requests = mpsc::Receiver<Ask>;

/// The servers' handle on the loop.
#[derive(Clone)]
struct Snapshots(mpsc::Sender<Ask>);

impl Snapshots {
    async fn get(&self) -> Result<Status, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| "the agent is stopping".to_string())?;
        rx.await.map_err(|_| "the agent is stopping".to_string())?
    }
}

/// The running listeners; dropping this stops them.
pub struct Servers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Servers {
    /// Listens on the unix socket `socket` and, if given, serves metrics on
    /// `metrics` (`ip:port`). Returns the servers and the channel the
    /// agent's loop answers.
    pub async fn start(socket: &Path, metrics: Option<&str>) -> Result<(Servers, Requests)> {
        let (tx, rx) = mpsc::channel(MAX_CLIENTS);
        let snapshots = Snapshots(tx);
        let _ = std::fs::remove_file(socket);
        let unix = UnixListener::bind(socket)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let mut tasks = vec![tokio::spawn(serve_status(unix, snapshots.clone()))];
        if let Some(addr) = metrics {
            let tcp = TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener {addr}"))?;
            tracing::info!(address = %addr, "metrics on /metrics");
            tasks.push(tokio::spawn(serve_metrics(tcp, snapshots)));
        }
        Ok((Servers { tasks }, rx))
    }
}

/// Accepts connections with `accept` forever, each answered by `answer` on
/// a task of its own; past MAX_CLIENTS at once, new ones are closed.
async fn serve<C, A, AF, H, HF>(what: &'static str, mut accept: A, snapshots: Snapshots, answer: H)
where
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<C>>,
    H: Fn(C, Snapshots) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let conn = match accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("{what}: too many clients, one closed");
            continue;
        };
        let answered = answer(conn, snapshots.clone());
        tokio::spawn(async move {
            answered.await;
            drop(slot);
        });
    }
}

/// Status clients: one request line each, `status` or `status json`.
async fn serve_status(listener: UnixListener, snapshots: Snapshots) {
    let l = &listener;
    let accept = move || async move { l.accept().await.map(|(c, _)| c) };
    serve(
        "status socket",
        accept,
        snapshots,
        |conn, snapshots| async move {
            if let Err(e) = answer_status(conn, &snapshots).await {
                debug!("status request: {e:#}");
            }
        },
    )
    .await
}

async fn answer_status(conn: UnixStream, snapshots: &Snapshots) -> Result<()> {
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    timeout(CLIENT_TIMEOUT, conn.read_line(&mut line)).await??;
    let reply = match snapshots.get().await {
        Ok(s) if line.trim() == "status json" => serde_json::to_string_pretty(&s)? + "\n",
        Ok(s) => s.text(),
        Err(e) => format!("error: {e}\n"),
    };
    timeout(CLIENT_TIMEOUT, conn.get_mut().write_all(reply.as_bytes())).await??;
    Ok(())
}

/// `GET /metrics` (and `GET /`) over HTTP/1.1, one response per
/// connection.
async fn serve_metrics(listener: TcpListener, snapshots: Snapshots) {
    let l = &listener;
    let accept = move || async move { l.accept().await.map(|(c, _)| c) };
    serve(
        "metrics listener",
        accept,
        snapshots,
        |conn, snapshots| async move {
            let service = service_fn(move |req| {
                let snapshots = snapshots.clone();
                async move { Ok::<_, Infallible>(metrics(req, &snapshots).await) }
            });
            // The request must come within the limit; the answer waits
            // for the agent's loop, however busy it is.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(conn), service);
            if let Err(e) = served.await {
                debug!("metrics request: {e}");
            }
        },
    )
    .await
}

async fn metrics<B>(req: Request<B>, snapshots: &Snapshots) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET || !matches!(req.uri().path(), "/metrics" | "/") {
        return reply(StatusCode::NOT_FOUND, "try /metrics\n".into());
    }
    match snapshots.get().await {
        Ok(s) => reply(StatusCode::OK, s.metrics()),
        Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// `xlb status`: asks the running agent.
pub fn query_status(socket: &Path, json: bool) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}: is the agent running?", socket.display()))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT * 5))?;
    s.write_all(if json { b"status json\n" } else { b"status\n" })?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
