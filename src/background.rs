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
/// can wait long for a CPU on a saturated node.
pub async fn run_idle<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        set_class(Class::Idle);
        f()
    })
    .await
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
        // Possibly the same pooled thread: it is put back to the normal class.
        assert_eq!(run(policy).await.unwrap(), libc::SCHED_OTHER);
    }
}
