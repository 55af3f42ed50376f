//! The stack's floor, for the performance notes: hyper's HTTP/1.1 server and client doing
//! exactly what the harness's nginx-keyauth does and nothing more — one hash-map lookup of the
//! whole `Authorization` value, the two trusted headers set, a 401 otherwise, keep-alive
//! upstream connections — on the same current-thread tokio runtime keygate uses. No request id,
//! no policy, no limiter, no metrics, no audit line. What keygate costs above this is keygate's;
//! what this costs above nginx is the stack's.
//!
//!   cargo run --release --example floor_proxy -- KEYS.tsv 127.0.0.1:18087 127.0.0.1:18081
//!
//! KEYS.tsv is the harness's table (`key<TAB>clinics<TAB>scopes`). Not part of keygate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Out = UnsyncBoxBody<Bytes, hyper::Error>;

struct Floor {
    keys: HashMap<Vec<u8>, (HeaderValue, HeaderValue)>,
    upstream: String,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, table, listen, upstream] = args.as_slice() else {
        anyhow::bail!("usage: floor_proxy KEYS.tsv LISTEN UPSTREAM");
    };
    let mut keys = HashMap::new();
    for line in std::fs::read_to_string(table)?.lines() {
        let mut f = line.split('\t');
        let (Some(k), Some(c), Some(s)) = (f.next(), f.next(), f.next()) else { continue };
        keys.insert(format!("Bearer {k}").into_bytes(), (HeaderValue::from_str(c)?, HeaderValue::from_str(s)?));
    }
    let floor = Arc::new(Floor { keys, upstream: upstream.clone(), idle: Mutex::new(Vec::new()) });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen.as_str()).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let floor = Arc::clone(&floor);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let floor = Arc::clone(&floor);
                    async move { Ok::<_, Infallible>(floor.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

impl Floor {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Out> {
        let found = req.headers().get(http::header::AUTHORIZATION).and_then(|v| self.keys.get(v.as_bytes()));
        let Some((clinics, scopes)) = found.cloned() else {
            return reply(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        };
        let h = req.headers_mut();
        h.insert("x-allowed-clinics", clinics);
        h.insert("x-scopes", scopes);
        let ready = {
            let mut idle = self.idle.lock().unwrap();
            let at = idle.iter().rposition(|tx| tx.is_ready());
            at.map(|i| idle.swap_remove(i))
        };
        let mut tx = match ready {
            Some(tx) => tx,
            None => match self.connect().await {
                Some(tx) => tx,
                None => return reply(StatusCode::BAD_GATEWAY, r#"{"error":"upstream"}"#),
            },
        };
        match tx.send_request(req).await {
            Ok(resp) => {
                // Back on the stack now: `is_ready` skips it until its response is done.
                self.idle.lock().unwrap().push(tx);
                resp.map(|b| b.boxed_unsync())
            }
            Err(_) => reply(StatusCode::BAD_GATEWAY, r#"{"error":"upstream"}"#),
        }
    }

    async fn connect(&self) -> Option<SendRequest<Incoming>> {
        let io = TcpStream::connect(&self.upstream).await.ok()?;
        let _ = io.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.ok()?;
        tokio::spawn(conn);
        Some(tx)
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Out> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
