//! What may end a connection from outside its traffic (the shutdown's wind-down, drain and cut,
//! its idle timer, and the deadline of a request head begun and not finished), watched by a
//! task of its own that raises a flag and wakes the connection. The connection's task then reads
//! one atomic per wake-up instead of polling four futures beside hyper's at every wake-up; the
//! watcher costs one task per connection (measured in README, Performance).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::sync::watch;

use super::Activity;

/// The shutdown has begun: ask the client to go elsewhere (HTTP/2: GOAWAY now).
pub(super) const WIND_DOWN: u8 = 1;
/// Stop taking requests: finish the one in progress, then close.
pub(super) const DRAIN: u8 = 2;
/// Nothing read or written for the idle timeout, and no request in progress.
pub(super) const IDLE: u8 = 4;
/// The drain deadline passed: drop the connection and whatever it still holds.
pub(super) const CUT: u8 = 8;
/// A request head was begun and not finished within the header deadline (slowloris).
pub(super) const HEAD_TIMEOUT: u8 = 16;

/// The flags one connection's watcher raises and its task reads.
#[derive(Default)]
pub(super) struct Control {
    raised: AtomicU8,
    waker: AtomicWaker,
}

impl Control {
    pub(super) fn raise(&self, flag: u8) {
        if self.raised.fetch_or(flag, Ordering::AcqRel) & flag == 0 {
            self.waker.wake();
        }
    }

    /// Ready with every flag raised so far once one was raised that `seen` lacks.
    pub(super) fn poll_raised(&self, seen: u8, cx: &mut Context<'_>) -> Poll<u8> {
        let now = self.raised.load(Ordering::Acquire);
        if now & !seen != 0 {
            return Poll::Ready(now);
        }
        self.waker.register(cx.waker());
        // A flag raised between the load and the registration woke nobody: look again.
        let now = self.raised.load(Ordering::Acquire);
        if now & !seen != 0 {
            Poll::Ready(now)
        } else {
            Poll::Pending
        }
    }

    /// Completes when the connection is cut.
    pub(super) async fn cut(&self) {
        // Every other flag counts as seen: only the cut makes it ready.
        poll_fn(|cx| self.poll_raised(!CUT, cx).map(|_| ())).await
    }
}

/// What a connection is told of the listener's shutdown.
pub(super) struct Stop {
    /// Stop taking requests: finish the one in progress, then close.
    pub(super) drain: watch::Receiver<bool>,
    /// The shutdown has begun: ask the client to go elsewhere.
    pub(super) wind_down: watch::Receiver<bool>,
    /// Becomes true at the drain deadline.
    pub(super) cut_now: watch::Receiver<bool>,
    /// Set when the drain deadline cuts what is left (for the requests' records).
    pub(super) cut: Arc<AtomicBool>,
}

/// The idle timeout: `header` applies too until the first byte arrives (hyper starts its own
/// header timer only then), so a silent socket cannot hold a connection slot for long.
#[derive(Clone, Copy)]
pub(super) struct IdleLimits {
    pub(super) idle: Duration,
    pub(super) header: Duration,
}

/// Raises the connection's flags as the shutdown proceeds and its idle timer runs out; ends at
/// the cut (or when the connection ends and drops it). It looks at the head being read at least
/// every half header deadline, so a head is cut between one and one and a half deadlines after
/// its first byte: one wake-up per connection every few seconds instead of a timer a request.
pub(super) async fn watch(ctl: Arc<Control>, mut stop: Stop, activity: Arc<Activity>, limits: IdleLimits) {
    let limit = || match activity.has_read() {
        true => limits.idle,
        false => limits.idle.min(limits.header),
    };
    let (mut drained, mut wound, mut idle) = (false, false, false);
    let head_every = (limits.header / 2).max(Duration::from_millis(10));
    loop {
        let wait = activity.until_idle(limit()).min(head_every);
        tokio::select! {
            // A closed channel (the listener gone) drains too.
            _ = stop.drain.changed(), if !drained => {
                drained = true;
                ctl.raise(DRAIN);
            }
            Ok(()) = stop.wind_down.changed(), if !wound => {
                wound = true;
                ctl.raise(WIND_DOWN);
            }
            _ = stop.cut_now.wait_for(|cut| *cut) => {
                ctl.raise(CUT);
                return;
            }
            _ = tokio::time::sleep(wait), if !idle => {
                if activity.head_overdue(limits.header) {
                    ctl.raise(HEAD_TIMEOUT);
                    return;
                }
                if !drained && activity.is_idle(limit()) {
                    idle = true;
                    ctl.raise(IDLE);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(ctl: &Control, seen: u8) -> Poll<u8> {
        ctl.poll_raised(seen, &mut Context::from_waker(std::task::Waker::noop()))
    }

    /// A watcher on a fresh connection: its flags, the shutdown's three senders (drain, wind
    /// down, cut), its activity and its task.
    struct Watched {
        ctl: Arc<Control>,
        senders: [watch::Sender<bool>; 3],
        activity: Arc<Activity>,
        task: tokio::task::JoinHandle<()>,
    }

    fn watched(idle_secs: u64, header_secs: u64) -> Watched {
        let ctl = Arc::new(Control::default());
        let [(drain_tx, drain), (wind_tx, wind_down), (cut_tx, cut_now)] = [(); 3].map(|_| watch::channel(false));
        let stop = Stop { drain, wind_down, cut_now, cut: Arc::default() };
        let activity = Arc::new(Activity::new());
        let limits = IdleLimits { idle: Duration::from_secs(idle_secs), header: Duration::from_secs(header_secs) };
        let task = tokio::spawn(watch(Arc::clone(&ctl), stop, Arc::clone(&activity), limits));
        Watched { ctl, senders: [drain_tx, wind_tx, cut_tx], activity, task }
    }

    #[test]
    fn pending_until_a_flag_it_has_not_seen_is_raised() {
        let ctl = Control::default();
        assert_eq!(poll(&ctl, 0), Poll::Pending);
        ctl.raise(WIND_DOWN);
        assert_eq!(poll(&ctl, 0), Poll::Ready(WIND_DOWN));
        assert_eq!(poll(&ctl, WIND_DOWN), Poll::Pending, "seen already");
        ctl.raise(DRAIN);
        ctl.raise(DRAIN);
        assert_eq!(poll(&ctl, WIND_DOWN), Poll::Ready(WIND_DOWN | DRAIN));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_raises_idle_after_the_timeout_and_cut_at_the_deadline() {
        let Watched { ctl, senders: [drain_tx, wind_tx, cut_tx], task: watcher, .. } = watched(5, 2);
        tokio::time::sleep(Duration::from_millis(1_999)).await;
        assert_eq!(poll(&ctl, 0), Poll::Pending, "nothing read yet: the header deadline, not before");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(poll(&ctl, 0), Poll::Ready(IDLE));
        wind_tx.send(true).unwrap();
        drain_tx.send(true).unwrap();
        tokio::task::yield_now().await;
        assert_eq!(poll(&ctl, IDLE), Poll::Ready(IDLE | WIND_DOWN | DRAIN));
        cut_tx.send(true).unwrap();
        ctl.cut().await;
        watcher.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_and_not_finished_is_cut_within_one_and_a_half_deadlines() {
        use crate::server::observed::Observer;
        let Watched { ctl, senders: _senders, activity, task: watcher } = watched(60, 1);
        // A whole head, then nothing: idle, not overdue.
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        activity.head_in_progress(false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(poll(&ctl, 0), Poll::Pending, "a finished head has no deadline");
        // Half a head: cut once it is a deadline old (checked every half deadline).
        activity.read(b"GET / HTTP/1.1\r\n");
        activity.head_in_progress(true);
        tokio::time::sleep(Duration::from_millis(400)).await;
        activity.read(b"X-Drip: a");
        activity.head_in_progress(true);
        tokio::time::sleep(Duration::from_millis(590)).await;
        assert_eq!(poll(&ctl, 0), Poll::Pending, "not before its deadline, however it drips");
        tokio::time::sleep(Duration::from_millis(520)).await;
        assert_eq!(poll(&ctl, 0), Poll::Ready(HEAD_TIMEOUT));
        watcher.await.unwrap();
    }
}
