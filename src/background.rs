//! Bulk work beside the request path (parsing a million-key table, walking it for metrics)
//! runs on blocking threads at the lowest CPU priority: on a one-CPU sidecar the scheduler then
//! preempts it whenever a request is ready, instead of time-slicing the two.

/// Runs `f` on tokio's blocking pool at nice 19. For work that may take locks the request path
/// also takes (the limiter's and detectors' sweeps): nice 19 still gets a small share of a
/// saturated CPU, so a lock it holds is released soon.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        set_class(Class::Nice19);
        f()
    })
    .await
}

/// Runs `f` as an idle-class (`SCHED_IDLE`) thread: it runs only when the request thread has
/// nothing to do and is preempted the moment it has. Nice 19 still takes a time slice now and
/// then, which a million-key reload under load showed in the p99. Only for work that shares no
/// lock with the request path (building a new table to swap in), since an idle-class thread
/// gets almost no CPU on a saturated node: callers bound the wait themselves (`store::reload`
/// loads again with `run_urgent`).
///
/// A thread of its own, not tokio's blocking pool: without CAP_SYS_NICE a thread cannot leave
/// `SCHED_IDLE` (or nice 19) again, and a pooled thread left idle would later run `run`'s work
/// (sweeps that share locks with requests) at idle priority too.
pub async fn run_idle<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, IdleGone> {
    on_own_thread(Some(Class::Idle), f).await
}

/// Runs `f` on a thread of its own at the priority requests run at: for work that must not
/// wait on a saturated CPU any longer (a reload carrying revocations).
pub async fn run_urgent<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, IdleGone> {
    on_own_thread(None, f).await
}

async fn on_own_thread<T: Send + 'static>(
    class: Option<Class>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IdleGone> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keygate-loader".into())
        .spawn(move || {
            if let Some(class) = class {
                set_class(class);
            }
            let _ = tx.send(f());
        })
        .map_err(|_| IdleGone)?;
    rx.await.map_err(|_| IdleGone)
}

/// The loader thread could not be started, or ended without an answer (it panicked).
#[derive(Debug)]
pub struct IdleGone;

impl std::fmt::Display for IdleGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the loader thread ended without a result")
    }
}

#[derive(Clone, Copy)]
enum Class {
    Nice19,
    Idle,
}

/// For the calling thread only (blocking threads are reused, so each run sets its own class).
/// Failure leaves the priority as it was: slower requests during a reload, nothing worse.
fn set_class(class: Class) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread (pid 0 / its own tid); `param` outlives the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = match class {
            Class::Nice19 => libc::SCHED_OTHER,
            Class::Idle => libc::SCHED_IDLE,
        };
        let idle_ok = libc::sched_setscheduler(0, policy, &param) == 0 && matches!(class, Class::Idle);
        if !idle_ok {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = class;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[tokio::test]
    async fn each_run_sets_its_own_class() {
        assert_eq!(run_idle(policy).await.unwrap(), libc::SCHED_IDLE);
        // The pool never sees an idle-class thread.
        assert_eq!(run(policy).await.unwrap(), libc::SCHED_OTHER);
    }
}
