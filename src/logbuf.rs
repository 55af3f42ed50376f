//! Where log lines go: appended to an in-memory buffer (a lock held only for the copy), written
//! to stderr in batches by one background thread. A slow or stuck log reader can never block
//! the request path: past `limit` bytes waiting, lines are dropped and counted instead. One
//! write syscall per batch instead of one per request keeps the audit log cheap.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

struct Shared {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    limit: usize,
    /// Set by the guard at exit: drain once more, then stop. (The global subscriber keeps a
    /// writer alive forever, so the thread cannot wait to be the last owner.)
    closing: AtomicBool,
}

/// The `MakeWriter` for tracing-subscriber: each event is one `write` of a whole line.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Flushes what is buffered when dropped (at exit).
pub struct FlushGuard(Arc<Shared>, Option<std::thread::JoinHandle<()>>);

impl BatchWriter {
    /// Starts the writer thread: it writes every `interval`, or sooner when half the limit is
    /// waiting.
    pub fn start(mut out: impl Write + Send + 'static, limit: usize, interval: Duration) -> (BatchWriter, FlushGuard) {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            limit,
            closing: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("keygate-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    let closing = s.closing.load(Ordering::Acquire);
                    {
                        let mut buf = s.buf.lock().unwrap_or_else(|p| p.into_inner());
                        if buf.is_empty() && !closing {
                            buf = s.wake.wait_timeout(buf, interval).unwrap_or_else(|p| p.into_inner()).0;
                        }
                        std::mem::swap(&mut *buf, &mut spare);
                    }
                    if spare.is_empty() {
                        if closing {
                            return;
                        }
                        continue;
                    }
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                    let dropped = s.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        let _ = writeln!(out, "{{\"level\":\"WARN\",\"message\":\"log buffer full: {dropped} lines dropped\",\"target\":\"keygate::log\"}}");
                    }
                    if !closing {
                        std::thread::sleep(interval.min(Duration::from_millis(20)));
                    }
                }
            })
            .expect("spawn the log writer thread");
        (BatchWriter(Arc::clone(&shared)), FlushGuard(shared, Some(thread)))
    }

    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl BatchWriter {
    /// Queues one whole line (what `write` does, without a handle per call).
    pub fn push(&self, line: &[u8]) {
        let mut buf = self.0.buf.lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() + line.len() > self.0.limit {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buf.extend_from_slice(line);
            if buf.len() > self.0.limit / 2 {
                self.0.wake.notify_one();
            }
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.wake.notify_one();
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_everything_is_flushed_on_drop() {
        let sink = Sink::default();
        let (mut w, guard) = BatchWriter::start(sink.clone(), 1 << 20, Duration::from_secs(3600));
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        // The writer stays alive (as the global subscriber's does): the guard alone must finish.
        drop(guard);
        drop(w);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
    }

    #[test]
    fn past_the_limit_lines_are_dropped_and_counted_not_blocked() {
        // A writer thread that is stuck: the buffer fills, then writes are dropped at once.
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (mut w, guard) = BatchWriter::start(Stuck, 100, Duration::from_secs(3600));
        std::mem::forget(guard); // the stuck thread would never join, even if an assertion fails
        let started = std::time::Instant::now();
        for _ in 0..50 {
            w.write_all(b"0123456789\n").unwrap();
        }
        // Blocked writes would take an hour; a generous bound keeps a loaded machine green.
        assert!(started.elapsed() < Duration::from_secs(30));
        // At most two buffers' worth (9 lines each) get through: the one the stuck thread took,
        // whenever it took it, and the one waiting behind it.
        assert!(w.dropped() >= 50 - 2 * (100 / 11), "{}", w.dropped());
    }
}
