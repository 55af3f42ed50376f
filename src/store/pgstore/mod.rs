//! The PostgreSQL key store: connecting (plain or rustls), the embedded schema migrations, the
//! transactional writes the key CLI makes, the follower that keeps a proxy current (the whole
//! table in memory with `sync: replica`, or the invalidation of a bounded lookup cache with
//! `sync: cache`), and the usage write-back. With a replica the request path never touches any
//! of it; with the cache, a miss waits for one bounded query on the lookup pool.

pub mod cache;
pub mod migrate;
pub mod pool;
pub mod rows;
pub mod sync;
pub mod usage;
pub mod write;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client};

use crate::config::PgStore;

/// The NOTIFY channel for one schema, so fleets (and tests) sharing a database stay apart.
pub fn channel(schema: &str) -> String {
    format!("keygate_keys_{schema}")
}

/// What the connection tells the session besides query results.
#[derive(Debug)]
pub enum Note {
    /// A write committed this change version (and, when the payload says so, at this Unix ms).
    Changed { version: i64, committed_ms: Option<i64> },
    /// The connection ended; the reason is for the log.
    Closed(String),
}

/// One connection: the client, and the notifications its driver task forwards.
pub struct Session {
    pub client: Client,
    pub notes: mpsc::UnboundedReceiver<Note>,
    driver: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The connection settings: the URL, or the libpq environment when there is none.
pub fn pg_config(s: &PgStore) -> anyhow::Result<tokio_postgres::Config> {
    let mut cfg = match &s.url {
        Some(url) => url
            .expose()
            .parse::<tokio_postgres::Config>()
            .map_err(|_| anyhow::anyhow!("key_store.url is not a PostgreSQL connection URL"))?,
        None => from_env()?,
    };
    cfg.connect_timeout(s.timeout);
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(15));
    // Times come back as UTC offsets, whatever the server's default zone.
    cfg.options("-c TimeZone=UTC");
    if cfg.get_application_name().is_none() {
        cfg.application_name("keygate");
    }
    Ok(cfg)
}

/// The libpq variables keygate honours, for deployments that put credentials in the
/// environment (a Kubernetes Secret) rather than in a URL.
fn from_env() -> anyhow::Result<tokio_postgres::Config> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(var("PGHOST").as_deref().unwrap_or("localhost"));
    if let Some(p) = var("PGPORT") {
        cfg.port(p.parse().map_err(|_| anyhow::anyhow!("PGPORT {p:?} is not a port"))?);
    }
    let user = var("PGUSER").or_else(|| var("USER")).unwrap_or_else(|| "postgres".into());
    cfg.user(&user);
    if let Some(pw) = var("PGPASSWORD") {
        cfg.password(pw);
    }
    cfg.dbname(var("PGDATABASE").as_deref().unwrap_or(&user));
    cfg.ssl_mode(match var("PGSSLMODE").as_deref() {
        None | Some("prefer" | "allow") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some(other) => anyhow::bail!("PGSSLMODE {other:?} is not one keygate knows"),
    });
    Ok(cfg)
}

/// Connects, bounded by the configured timeout. TLS is used when `sslmode=require` (or a
/// `ca_file` is given), and then the certificate and host name are always verified; otherwise
/// the connection is plain (libpq's `prefer` would encrypt without verifying, which protects
/// nothing against an active attacker and fails on self-signed development servers).
pub async fn connect(s: &PgStore) -> anyhow::Result<Session> {
    let mut cfg = pg_config(s)?;
    let tls = cfg.get_ssl_mode() == SslMode::Require || s.ca_file.is_some();
    let (tx, notes) = mpsc::unbounded_channel();
    let connecting = async {
        if tls {
            cfg.ssl_mode(SslMode::Require);
            let rustls = crate::forward::client_tls(s.ca_file.as_deref(), "key_store.ca_file")?;
            let (client, conn) = cfg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(rustls)).await?;
            Ok::<_, anyhow::Error>((client, tokio::spawn(drive(conn, tx))))
        } else {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            Ok((client, tokio::spawn(drive(conn, tx))))
        }
    };
    let (client, driver) = tokio::time::timeout(s.timeout, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no connection within {}", humantime::format_duration(s.timeout)))??;
    Ok(Session { client, notes, driver })
}

/// Runs the connection, forwarding notifications; tells the session when it ends.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, tx: mpsc::UnboundedSender<Note>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let reason = loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let mut parts = n.payload().split(' ');
                if let Some(version) = parts.next().and_then(|v| v.parse().ok()) {
                    let committed_ms = parts.next().and_then(|v| v.parse().ok());
                    let _ = tx.send(Note::Changed { version, committed_ms });
                }
            }
            Some(Ok(AsyncMessage::Notice(n))) => tracing::debug!(notice = %n.message(), "postgres notice"),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.to_string(),
            None => break "closed by the server".to_string(),
        }
    };
    let _ = tx.send(Note::Closed(reason));
}

/// Bounds one database step by the configured timeout: a partitioned network otherwise hangs
/// a query until TCP gives up, minutes later.
pub async fn bounded<T, E: Into<anyhow::Error>>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(|e| e.into().context(what.to_string())),
        Err(_) => anyhow::bail!("{what}: no answer within {}", humantime::format_duration(timeout)),
    }
}

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// ±25%, so a fleet that lost the database together does not return in lockstep.
pub(crate) fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    let f = 0.75 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.5;
    d.mul_f64(f)
}

/// The wait before the next connect: the backoff, jittered, but never longer than the catch-up
/// poll, so a database that answers again is noticed within one poll interval (as a change is
/// while connected), not after the backoff's full length. One attempt per poll is the poll's load.
pub(crate) fn retry_wait(backoff: Duration, poll_interval: Duration) -> Duration {
    jitter(backoff).min(poll_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_never_waits_longer_than_the_poll() {
        assert!(retry_wait(BACKOFF_MAX, Duration::from_millis(200)) <= Duration::from_millis(200));
        assert!(retry_wait(BACKOFF_MIN, Duration::from_secs(2)) <= BACKOFF_MIN.mul_f64(1.25));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5), "{d:?}");
        }
    }
}
