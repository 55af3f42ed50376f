//! Config reload: on SIGHUP, and when the file changes on disk (polled like the key table, since
//! a mounted ConfigMap changes by a symlink swap that a watch on the file itself misses). The
//! file is loaded and validated exactly as at start (`config::load`, which `check-config` runs
//! too); a good one is applied whole by swapping the request path, a bad one changes nothing.
//! Restart-only settings keep their running values, and the ones the file changed are named.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{self, reloadable, Config};
use crate::metrics::Metrics;
use crate::proxy::anomalies;
use crate::proxy::{Live, Proxy};
use crate::store::reload::{next_reload, retire, SharedScopes};

/// How often the file is looked at: a `stat`, so cheap; the kubelet takes far longer to
/// update a mounted ConfigMap (its sync period, about a minute) than this adds.
pub const POLL: Duration = Duration::from_secs(1);

pub struct ConfigReloader {
    pub path: PathBuf,
    /// The text keygate started with: restart-only settings are compared against it.
    pub started_from: Arc<str>,
    pub live: Live,
    pub metrics: Arc<Metrics>,
    /// Widened by routes that name new scopes; then the key table is asked to load again.
    pub scopes: SharedScopes,
    pub keys_trigger: Arc<Notify>,
    /// SIGHUP.
    pub trigger: Arc<Notify>,
    pub interval: Duration,
}

/// Starts the reloader for a config loaded from a file (`None` otherwise: nothing to re-read).
/// Returns its SIGHUP trigger and its task.
pub fn spawn(
    config: &Config,
    live: &Live,
    metrics: &Arc<Metrics>,
    scopes: SharedScopes,
    keys_trigger: &Arc<Notify>,
) -> Option<(Arc<Notify>, JoinHandle<()>)> {
    let source = config.source.as_ref()?;
    let trigger = Arc::new(Notify::new());
    let reloader = ConfigReloader {
        path: source.path.clone(),
        started_from: Arc::clone(&source.text),
        live: live.clone(),
        metrics: Arc::clone(metrics),
        scopes,
        keys_trigger: Arc::clone(keys_trigger),
        trigger: Arc::clone(&trigger),
        interval: POLL,
    };
    Some((trigger, tokio::spawn(reloader.run())))
}

/// What one attempt did, for the log line and the metrics.
enum Attempt {
    Unchanged,
    Applied { applied: Vec<&'static str>, needs_restart: Vec<&'static str> },
    Refused(String),
}

impl ConfigReloader {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        // A poll reloads only when the text differs from the one last acted on: a touched file
        // or one a kubelet re-links with the same content changes nothing.
        let mut seen = Arc::clone(&self.started_from);
        let mut last = None;
        loop {
            let forced = next_reload(&self.path, self.interval, &self.trigger, &mut last).await;
            let attempt = self.attempt(&mut seen, forced).await;
            self.report(attempt);
        }
    }

    async fn attempt(&self, seen: &mut Arc<str>, forced: bool) -> Attempt {
        // Off the runtime's threads: the load reads the config and the files it names.
        let path = self.path.clone();
        let loaded = crate::background::run(move || (config::load(&path), std::fs::read_to_string(&path))).await;
        let Ok((loaded, text)) = loaded else { return Attempt::Refused("config loader task failed".into()) };
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                // The same file would fail the same way: a poll does not try it again.
                if let Ok(text) = text {
                    *seen = text.into();
                }
                // One line, as check-config lists them: each problem with its line and field.
                return Attempt::Refused(format!("{}: invalid configuration: {}", e.file, e.problems.join("; ")));
            }
        };
        let text = new.source.as_ref().map_or_else(|| Arc::from(""), |s| Arc::clone(&s.text));
        if !forced && text == *seen {
            return Attempt::Unchanged;
        }
        *seen = Arc::clone(&text);
        let running = self.live.load();
        let running_text = running.config.source.as_ref().map_or("", |s| &*s.text);
        let applied = reloadable::applied(running_text, &text);
        let needs_restart = reloadable::needs_restart(&self.started_from, &text);
        let next = match reconfigured(&running, reloadable::keep_running(new, &running.config)) {
            Ok(p) => p,
            Err(e) => return Attempt::Refused(format!("{}: {e}", self.path.display())),
        };
        self.widen_scopes(&next.config);
        let old = self.live.swap(next);
        drop(running);
        tokio::spawn(crate::background::run(move || retire(old)));
        Attempt::Applied { applied, needs_restart }
    }

    /// Keys may hold the scopes the new routes name; a table refused for holding one loads now.
    fn widen_scopes(&self, config: &Config) {
        let current = self.scopes.load_full();
        let widened = current.union(&config.scope_catalogue());
        if widened != *current {
            self.scopes.store(Arc::new(widened));
            self.keys_trigger.notify_one();
        }
    }

    fn report(&self, attempt: Attempt) {
        match attempt {
            Attempt::Unchanged => {}
            Attempt::Applied { applied, needs_restart } => {
                if !needs_restart.is_empty() {
                    let fields = needs_restart.join(", ");
                    tracing::warn!(
                        file = %self.path.display(),
                        needs_restart = %fields,
                        "config reload: needs a restart: {fields} (running values kept; the rest applied)"
                    );
                }
                tracing::info!(file = %self.path.display(), applied = %applied.join(", "), "config reloaded");
                self.metrics.config_reloaded(OffsetDateTime::now_utc(), needs_restart.len());
            }
            Attempt::Refused(error) => {
                tracing::error!(file = %self.path.display(), %error, "config reload failed; still serving the last good config");
                self.metrics.config_reload_failed();
            }
        }
    }
}

/// The request path for `config`, sharing the running one's key store, upstream pool, tokens
/// and the state of its limiter and detectors (each keeps what its settings still allow; see
/// `Limiter::reconfigured`, `Anomalies::reconfigured`). The alerter is kept when its settings
/// did not change, so what it has de-duplicated stays de-duplicated.
fn reconfigured(running: &Proxy, config: Config) -> anyhow::Result<Proxy> {
    let notify = if config.webhook == running.config.webhook {
        running.anomalies.notifier()
    } else {
        alerter(&config, &running.metrics, &running.clock)?
    };
    // A route added by the reload may be the one being shadowed: its would-be refusals start at 0.
    running.metrics.would_refuse_known(config.routes.routes().iter().map(|r| r.spec.pattern.as_str()));
    Ok(Proxy {
        limiter: running.limiter.reconfigured(&config.rate_limits),
        anomalies: running.anomalies.reconfigured(config.anomaly.clone(), notify),
        config: Arc::new(config),
        keys: running.keys.clone(),
        forwarder: running.forwarder.clone(),
        metrics: Arc::clone(&running.metrics),
        usage: Arc::clone(&running.usage),
        epoch: running.epoch,
        clock: running.clock.clone(),
        tokens: running.tokens.clone(),
        freshness: running.freshness.clone(),
    })
}

/// The webhook alerter `config` asks for, started.
pub fn alerter(
    config: &Config,
    metrics: &Arc<Metrics>,
    clock: &crate::clock::Clock,
) -> anyhow::Result<Option<Arc<dyn anomalies::Notify>>> {
    Ok(match &config.webhook {
        Some(settings) => Some(Arc::new(
            crate::alert::Alerter::spawn(settings.clone(), Arc::clone(metrics), clock.clone())
                .map_err(anyhow::Error::msg)?,
        )),
        None => None,
    })
}
