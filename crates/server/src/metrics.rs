//! Prometheus metrics, served as text on the admin listener at `/metrics`.
//!
//! The redirect path only bumps a pre-created atomic counter per answer and, for one request in
//! 64, observes its latency; everything else (links, snapshot, journal, connections) is read
//! when Prometheus scrapes.
use crate::Health;
use duanlian_index::Index;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Compaction {
    trigger: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Layer {
    layer: &'static str,
}

/// All of duanlian's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    redirect: Counter,
    not_found: Counter,
    expired: Counter,
    bad_request: Counter,
    health: Counter,
    latency: Histogram,
    links: Family<Layer, Gauge>,
    snapshot_sequence: Gauge,
    snapshot_age: Gauge,
    journal_bytes: Gauge,
    fsync: Histogram,
    connections: Gauge,
    visit_counters: Gauge,
    purged_in_snapshot: Gauge,
    reloads: Family<Outcome, Counter>,
    compactions: Family<Compaction, Counter>,
    clicks: Family<Outcome, Counter>,
    click_log_bytes: Gauge,
    click_source: std::sync::OnceLock<Arc<duanlian_clicks::Recorder>>,
    tls: std::sync::OnceLock<TlsMetrics>,
    /// The node writer's own gauges, by name.
    writer_gauges: Vec<(&'static str, Gauge)>,
}

thread_local! {
    static SAMPLE: Cell<u32> = const { Cell::new(0) };
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("duanlian");
        let requests = Family::<Outcome, Counter>::default();
        registry.register(
            "requests",
            "Requests on the redirect listener, by outcome",
            requests.clone(),
        );
        let counter = |outcome| requests.get_or_create(&Outcome { outcome }).clone();
        let latency = Histogram::new(exponential_buckets(1e-7, 2.0, 18));
        registry.register(
            "redirect_latency_seconds",
            "Time to answer a request once its head is parsed (one request in 64 is sampled)",
            latency.clone(),
        );
        let links = Family::<Layer, Gauge>::default();
        registry.register(
            "links",
            "Links held, by layer (overlay counts tombstones)",
            links.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let snapshot_sequence = gauge(
            &mut registry,
            "snapshot_sequence",
            "Change-feed sequence number the current snapshot includes",
        );
        let snapshot_age = gauge(
            &mut registry,
            "snapshot_age_seconds",
            "Seconds since the current snapshot was built",
        );
        let journal_bytes = gauge(&mut registry, "journal_bytes", "Bytes in journal segments");
        let connections = gauge(
            &mut registry,
            "open_connections",
            "Open connections on the redirect listener",
        );
        let visit_counters = gauge(
            &mut registry,
            "visit_counters",
            "Links with a visit counter",
        );
        let purged_in_snapshot = gauge(
            &mut registry,
            "purged_snapshot_links",
            "Snapshot links past their retention, left for the next compaction",
        );
        let fsync = Histogram::new(exponential_buckets(1e-5, 2.0, 16));
        registry.register(
            "journal_fsync_seconds",
            "Duration of each journal group write and fdatasync",
            fsync.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        registry.register(
            "snapshot_reloads",
            "Snapshot reloads, by result (ok, error)",
            reloads.clone(),
        );
        let compactions = Family::<Compaction, Counter>::default();
        registry.register(
            "compactions",
            "Compactions, by trigger (api, journal_bytes, overlay_links) and outcome (ok, error)",
            compactions.clone(),
        );
        let clicks = Family::<Outcome, Counter>::default();
        registry.register(
            "clicks",
            "Click events, by fate (written to the click log, dropped because the writer fell behind, failed to write, unlogged to keep the disk's reserve: counted in the statistics only)",
            clicks.clone(),
        );
        let click_log_bytes = gauge(
            &mut registry,
            "click_log_bytes",
            "Bytes the click log takes on disk: raw files and day summaries",
        );

        Metrics {
            writer_gauges: Vec::new(),
            reloads,
            compactions,
            clicks,
            click_log_bytes,
            click_source: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            redirect: counter("redirect"),
            not_found: counter("not_found"),
            expired: counter("expired"),
            bad_request: counter("bad_request"),
            health: counter("health"),
            registry,
            latency,
            links,
            snapshot_sequence,
            snapshot_age,
            journal_bytes,
            fsync,
            connections,
            visit_counters,
            purged_in_snapshot,
        }
    }

    /// Counts one answer by its status.
    #[inline]
    pub(crate) fn record(&self, status: u16) {
        match status {
            301 | 302 | 307 | 308 => &self.redirect,
            404 => &self.not_found,
            410 => &self.expired,
            200 | 503 => &self.health,
            _ => &self.bad_request,
        }
        .inc();
    }

    /// Whether this request's latency should be observed (one in 64, per thread: no shared
    /// state and no clock read for the other 63).
    #[inline]
    pub(crate) fn sample(&self) -> bool {
        SAMPLE.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n % 64 == 0
        })
    }

    pub(crate) fn observe_latency(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    pub(crate) fn record_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one compaction: `trigger` is `api` or the limit that made it due.
    pub fn record_compaction(&self, trigger: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.compactions
            .get_or_create(&Compaction { trigger, outcome })
            .inc();
    }

    /// Observes one journal group commit (the store calls this).
    pub fn observe_fsync(&self, took: Duration) {
        self.fsync.observe(took.as_secs_f64());
    }

    /// Reports `recorder`'s click counts.
    pub fn watch_clicks(&self, recorder: Arc<duanlian_clicks::Recorder>) {
        let _ = self.click_source.set(recorder);
    }

    /// Also reports `tls`'s handshakes, reloads and certificate expiry.
    pub fn with_tls(mut self, tls: Arc<crate::Tls>) -> Metrics {
        let handshakes = Family::<Outcome, Counter>::default();
        self.registry.register(
            "tls_handshakes",
            "TLS handshakes on the redirect listener, by outcome (full, resumed, failed; timed_out and unknown_name are failures counted again by cause)",
            handshakes.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        self.registry.register(
            "tls_reloads",
            "Certificate reloads, by result (ok, error: nothing changed)",
            reloads.clone(),
        );
        let expiry = Family::<Name, Gauge>::default();
        self.registry.register(
            "tls_certificate_expiry_seconds",
            "Seconds until each served certificate expires, by the name it answers",
            expiry.clone(),
        );
        let _ = self.tls.set(TlsMetrics {
            tls,
            handshakes,
            reloads,
            expiry,
        });
        self
    }

    /// Also reports the node writer's own gauges (a cluster node's connection, applied revision
    /// and lag), registered under the names `writes` gives now and read at every scrape.
    pub fn with_writer_gauges(mut self, writes: &dyn duanlian_write::Writes) -> Metrics {
        for g in writes.gauges() {
            let gauge = Gauge::default();
            self.registry.register(g.name, g.help, gauge.clone());
            self.writer_gauges.push((g.name, gauge));
        }
        self
    }

    /// The text exposition, with gauges read from the live state.
    pub fn render(
        &self,
        index: &Index,
        health: &Health,
        writes: &dyn duanlian_write::Writes,
    ) -> String {
        if !self.writer_gauges.is_empty() {
            for g in writes.gauges() {
                if let Some((_, gauge)) = self.writer_gauges.iter().find(|(n, _)| *n == g.name) {
                    gauge.set(g.value);
                }
            }
        }
        let journal_bytes = writes.journal_bytes();
        if let Some(rec) = self.click_source.get() {
            for (outcome, now) in [
                ("written", rec.written()),
                ("dropped", rec.dropped()),
                ("failed", rec.failed()),
                ("unlogged", rec.unlogged()),
            ] {
                catch_up(&self.clicks, outcome, now);
            }
            self.click_log_bytes.set(rec.log_bytes() as i64);
        }
        if let Some(t) = self.tls.get() {
            t.render();
        }
        let snap = index.snapshot();
        self.links
            .get_or_create(&Layer { layer: "snapshot" })
            .set(snap.len() as i64);
        self.links
            .get_or_create(&Layer { layer: "overlay" })
            .set(index.overlay_len() as i64);
        self.snapshot_sequence.set(snap.header().sequence as i64);
        self.snapshot_age
            .set(duanlian_link::now_secs() - snap.header().built_at);
        self.journal_bytes.set(journal_bytes.unwrap_or(0) as i64);
        self.connections.set(health.connections() as i64);
        self.visit_counters.set(index.visits().len() as i64);
        self.purged_in_snapshot
            .set(index.purged_in_snapshot() as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The TLS counts, copied from the handshake's atomics at each scrape.
#[derive(Debug)]
struct TlsMetrics {
    tls: Arc<crate::Tls>,
    handshakes: Family<Outcome, Counter>,
    reloads: Family<Outcome, Counter>,
    expiry: Family<Name, Gauge>,
}

impl TlsMetrics {
    fn render(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.tls.counts();
        catch_up(&self.handshakes, "full", c.full.load(Relaxed));
        catch_up(&self.handshakes, "resumed", c.resumed.load(Relaxed));
        catch_up(&self.handshakes, "failed", c.failed.load(Relaxed));
        catch_up(&self.handshakes, "timed_out", c.timed_out.load(Relaxed));
        catch_up(
            &self.handshakes,
            "unknown_name",
            c.unknown_name.load(Relaxed),
        );
        catch_up(&self.reloads, "ok", c.reloads_ok.load(Relaxed));
        catch_up(&self.reloads, "error", c.reloads_failed.load(Relaxed));
        // Names no longer served leave the family, so a removed domain stops alerting.
        self.expiry.clear();
        let now = duanlian_link::now_secs();
        for cert in self.tls.certificates() {
            self.expiry
                .get_or_create(&Name { name: cert.name })
                .set(cert.not_after - now);
        }
    }
}

/// Brings `family`'s counter for `outcome` up to `now`, a total kept elsewhere (an atomic read
/// at scrape time).
fn catch_up(family: &Family<Outcome, Counter>, outcome: &'static str, now: u64) {
    let counter = family.get_or_create(&Outcome { outcome });
    counter.inc_by(now.saturating_sub(counter.get()));
}
