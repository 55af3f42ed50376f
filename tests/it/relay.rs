//! A TCP relay to put between keygate and a dependency (Redis) and break on cue: `cut()` is a
//! crashed or restarted server (every connection closed, new ones closed at once), `blackhole()`
//! a network partition (nothing forwarded, nothing closed), `restore()` the way back.
//!
//! ```ignore
//! let relay = Relay::start(redis_addr).await;
//! let limiter = limiter_at(&format!("redis://{}", relay.addr()));
//! relay.cut().await;       // from here on, no byte reaches Redis
//! relay.restore();         // new connections go through again
//! ```

#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Blackhole,
}

/// The relay's mode, and a count of mode changes so a connection notices even one it slept through.
#[derive(Debug, Clone, Copy)]
struct Phase {
    mode: Mode,
    epoch: u64,
}

pub struct Relay {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
    /// Connections currently forwarding bytes; `cut` and `blackhole` wait for it to reach zero.
    forwarding: watch::Sender<usize>,
    accepted: watch::Sender<usize>,
    accept_loop: JoinHandle<()>,
}

impl Relay {
    /// Listens on an ephemeral loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay: local addr");
        let (phase, _) = watch::channel(Phase { mode: Mode::Open, epoch: 0 });
        let (forwarding, _) = watch::channel(0usize);
        let (accepted, _) = watch::channel(0usize);
        let accept_loop = tokio::spawn({
            let phase = phase.clone();
            let forwarding = forwarding.clone();
            let accepted = accepted.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.send_modify(|n| *n += 1);
                    tokio::spawn(relay_one(client, target, phase.subscribe(), forwarding.clone()));
                }
            }
        });
        Relay { addr, phase, forwarding, accepted, accept_loop }
    }

    /// Where clients should connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection, and closes new ones as soon as they are accepted, until `restore`.
    /// Returns once no connection can carry another byte.
    pub async fn cut(&self) {
        self.switch(Mode::Cut).await;
    }

    /// Stops forwarding without closing anything, so clients wait for answers that never come.
    /// New connections are accepted and ignored. Returns once no connection forwards any more.
    pub async fn blackhole(&self) {
        self.switch(Mode::Blackhole).await;
    }

    /// Forwards new connections again. Connections held by a blackhole are closed now: bytes
    /// may have been lost in between, so their streams cannot be resumed.
    pub fn restore(&self) {
        self.phase.send_modify(|p| *p = Phase { mode: Mode::Open, epoch: p.epoch + 1 });
    }

    /// How many connections the relay has accepted since it started.
    pub fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    async fn switch(&self, mode: Mode) {
        self.phase.send_modify(|p| *p = Phase { mode, epoch: p.epoch + 1 });
        let mut forwarding = self.forwarding.subscribe();
        forwarding.wait_for(|n| *n == 0).await.expect("relay: the sender lives in self");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.phase.send_modify(|p| *p = Phase { mode: Mode::Cut, epoch: p.epoch + 1 });
    }
}

async fn relay_one(
    mut client: TcpStream,
    target: SocketAddr,
    mut phase: watch::Receiver<Phase>,
    forwarding: watch::Sender<usize>,
) {
    let busy = Busy::enter(forwarding);
    let Phase { mode, epoch } = *phase.borrow_and_update();
    match mode {
        Mode::Cut => {
            drop(client);
            return;
        }
        Mode::Blackhole => {
            drop(busy);
            let _ = phase.wait_for(|p| p.epoch != epoch).await;
            return;
        }
        Mode::Open => {}
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        drop(client);
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        _ = phase.wait_for(|p| p.epoch != epoch) => {}
    }
    let now = *phase.borrow_and_update();
    if now.mode == Mode::Blackhole {
        drop(busy);
        let _ = phase.wait_for(|p| p.epoch != now.epoch).await;
    }
    // Sockets close before `busy` drops, so a finished `cut()` means they are closed.
    drop(client);
    drop(upstream);
}

/// Counts a connection as forwarding while alive.
struct Busy(watch::Sender<usize>);

impl Busy {
    fn enter(counter: watch::Sender<usize>) -> Busy {
        counter.send_modify(|n| *n += 1);
        Busy(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes every connection back to itself.
    async fn echo_server() -> SocketAddr {
        crate::support::serve_tcp(|mut conn| async move {
            let (mut r, mut w) = conn.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await
    }

    async fn round_trip(conn: &mut TcpStream) -> std::io::Result<usize> {
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(std::time::Duration::from_millis(200), conn.read(&mut buf)).await {
            Ok(read) => read,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// A connection through `relay` that carries a round trip now.
    async fn working(relay: &Relay) -> TcpStream {
        let mut conn = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(round_trip(&mut conn).await.unwrap(), 4);
        conn
    }

    #[tokio::test]
    async fn forwards_until_cut_and_again_after_restore() {
        let relay = Relay::start(echo_server().await).await;
        let mut before = working(&relay).await;

        relay.cut().await;
        assert!(!matches!(round_trip(&mut before).await, Ok(4)), "a cut connection carries nothing");
        let mut during = TcpStream::connect(relay.addr()).await.unwrap();
        assert!(!matches!(round_trip(&mut during).await, Ok(4)), "new connections are closed while cut");

        relay.restore();
        working(&relay).await;
        assert_eq!(relay.accepted(), 3);
    }

    #[tokio::test]
    async fn a_blackhole_holds_connections_silent() {
        let relay = Relay::start(echo_server().await).await;
        let mut conn = working(&relay).await;

        relay.blackhole().await;
        let err = round_trip(&mut conn).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "no answer, and no close either");

        relay.restore();
        working(&relay).await;
    }
}
