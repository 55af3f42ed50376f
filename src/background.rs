//! Bulk work beside the request path (parsing a million-key table, walking it for metrics)
//! runs on blocking threads at the lowest CPU priority: on a one-CPU sidecar the scheduler then
//! preempts it whenever a request is ready, instead of time-slicing the two.

/// Runs `f` on tokio's blocking pool at nice 19.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        lower_this_thread();
        f()
    })
    .await
}

/// Nice 19 for the calling thread only (Linux applies `setpriority` per thread id). Failure
/// leaves the priority as it was: slower requests during a reload, nothing worse.
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}
