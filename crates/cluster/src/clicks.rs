//! Clicks leave a node aggregated.
//!
//! Each node's click writer hands batches to a [`ClickForwarder`]: a bounded channel (a full
//! one refuses the batch, counted as failed; the redirect path never waits) to a task that
//! - folds the clicks into a **delta**, this node's aggregates since the last one (per link and
//!   day: clicks by device class, human visits by referrer host), and publishes it once a second
//!   to the subject `duanlian.deltas.BUCKET` (stream `<clicks stream>_DELTAS`), cut into
//!   messages of at most [`MESSAGE_BYTES`];
//! - publishes the raw clicks, a batch a message, to the stream of click events, for export and
//!   for analytics outside (no node reads it).
//!
//! Every message has a `Nats-Msg-Id` of node name, process start and counter, so a resend after
//! a lost acknowledgement is dropped by the stream's duplicate window. Every node consumes the
//! deltas of all nodes into its aggregates (and other nodes' human visits into its visit
//! counters), so any node answers the statistics of every link, and its work grows with the
//! nodes and the links clicked each second, not with the clicks.
use crate::ClusterOptions;
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use duanlian_clicks::{encode_line, Click, Forward, Stats};
use duanlian_index::Index;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const NODE_HEADER: &str = "Duanlian-Node";

/// The largest message of clicks: well under NATS's default 1 MiB payload limit.
const MESSAGE_BYTES: usize = 256 << 10;

/// The click writer's way into the cluster's click stream; see the module docs.
#[derive(Debug)]
pub struct ClickForwarder {
    tx: mpsc::Sender<Vec<Click>>,
}

impl Forward for ClickForwarder {
    fn forward(&mut self, batch: &[Click]) -> bool {
        self.tx.try_send(batch.to_vec()).is_ok()
    }
}

impl ClickForwarder {
    /// A forwarder whose publishing task runs on `runtime` once `cluster` has joined;
    /// `buffer` batches wait at most (each up to 512 clicks).
    pub fn start(
        cluster: &Arc<crate::Cluster>,
        runtime: &tokio::runtime::Handle,
        buffer: usize,
    ) -> ClickForwarder {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        runtime.spawn(publish(cluster.clone(), rx));
        ClickForwarder { tx }
    }
}

fn subject(opts: &ClusterOptions) -> String {
    format!("duanlian.clicks.{}", opts.bucket)
}

fn delta_subject(opts: &ClusterOptions) -> String {
    format!("duanlian.deltas.{}", opts.bucket)
}

/// How often a node publishes its delta.
const DELTA_EVERY: Duration = Duration::from_secs(1);

/// The stream of raw click events (`deltas: false`) or of the nodes' deltas.
async fn ensure_stream(
    js: &jetstream::Context,
    opts: &ClusterOptions,
    deltas: bool,
) -> Option<stream::Stream> {
    let (name, what, subjects) = if deltas {
        (
            format!("{}_DELTAS", opts.clicks_stream),
            "duanlian statistics deltas (per node, per second)",
            "duanlian.deltas.>",
        )
    } else {
        (
            opts.clicks_stream.clone(),
            "duanlian click events",
            "duanlian.clicks.>",
        )
    };
    let config = stream::Config {
        name,
        description: Some(what.into()),
        subjects: vec![subjects.into()],
        num_replicas: opts.replicas.max(1),
        max_age: opts.clicks_max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, what, "cannot open the stream");
            None
        }
    }
}

/// `delta` as messages of about `limit` bytes at most (one link's lines are never split): per day a `D day` line, then the day's
/// lines in the day-summary form (`L` per link, its `R` lines after it). A message is cut only
/// before an `L` line, and starts again with its day's `D` line.
fn delta_messages(delta: &Stats, limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut message: Vec<u8> = Vec::new();
    let mut day_text = Vec::new();
    for day in delta.days() {
        day_text.clear();
        delta.write_day(day, &mut day_text);
        let header = format!("D\t{day}\n");
        message.extend_from_slice(header.as_bytes());
        let text = String::from_utf8_lossy(&day_text);
        let mut link = String::new();
        for line in text.lines() {
            if line.starts_with("L\t") && !link.is_empty() {
                if message.len() + link.len() > limit && message.len() > header.len() {
                    out.push(std::mem::take(&mut message));
                    message.extend_from_slice(header.as_bytes());
                }
                message.extend_from_slice(link.as_bytes());
                link.clear();
            }
            link.push_str(line);
            link.push('\n');
        }
        message.extend_from_slice(link.as_bytes());
    }
    if !message.is_empty() {
        out.push(message);
    }
    out
}

async fn publish(cluster: Arc<crate::Cluster>, mut rx: mpsc::Receiver<Vec<Click>>) {
    let opts = cluster.options().clone();
    let (subject, delta_subject) = (subject(&opts), delta_subject(&opts));
    let mut counter = 0u64;
    // A per-process prefix, so a restarted node's ids never collide with its last run's.
    let prefix = format!("{}-{:x}", opts.name, duanlian_link::now_secs());
    let mut line = Vec::with_capacity(128);
    let mut streams_ready = false;
    let mut delta = Stats::default();
    // Delta messages not acknowledged yet (NATS unreachable), oldest first.
    let mut unsent: Vec<(String, bytes::Bytes)> = Vec::new();
    let mut every = tokio::time::interval(DELTA_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = every.tick() => {
                if !delta.is_empty() {
                    let messages = delta_messages(&delta, MESSAGE_BYTES);
                    delta = Stats::default();
                    unsent.extend(messages.into_iter().map(|m| {
                        counter += 1;
                        (format!("{prefix}-{counter}"), bytes::Bytes::from(m))
                    }));
                }
                if let (false, Some(js)) = (unsent.is_empty(), cluster.jetstream()) {
                    // Sent once a tick: what is not acknowledged waits for the next one, with its
                    // id, so a late acknowledgement never counts a delta twice.
                    unsent = send(&js, &opts, &delta_subject, std::mem::take(&mut unsent), 1).await;
                    keep_within(&mut unsent, MAX_UNSENT_BYTES);
                }
                continue;
            }
        };
        let Some(js) = cluster.jetstream() else {
            tracing::debug!(clicks = batch.len(), "not joined yet; clicks dropped");
            continue;
        };
        if !streams_ready {
            streams_ready = ensure_stream(&js, &opts, false).await.is_some()
                & ensure_stream(&js, &opts, true).await.is_some();
        }
        delta.add(&batch);
        // The batch's click-log lines, cut into messages of at most MESSAGE_BYTES.
        let mut pending: Vec<(String, bytes::Bytes)> = Vec::new();
        let mut payload: Vec<u8> = Vec::with_capacity(batch.len() * 64);
        for (i, c) in batch.iter().enumerate() {
            encode_line(c, &mut line);
            payload.extend_from_slice(&line);
            if payload.len() >= MESSAGE_BYTES || i + 1 == batch.len() {
                counter += 1;
                let id = format!("{prefix}-{counter}");
                pending.push((id, bytes::Bytes::from(std::mem::take(&mut payload))));
            }
        }
        let lost = send(&js, &opts, &subject, pending, 5).await;
        if !lost.is_empty() {
            tracing::warn!(
                messages = lost.len(),
                "click events not acknowledged; dropped"
            );
        }
    }
}

/// The most bytes of deltas kept while NATS cannot take them: minutes of a busy node's
/// statistics. Past it the oldest are dropped, and said so.
const MAX_UNSENT_BYTES: usize = 64 << 20;

fn keep_within(unsent: &mut Vec<(String, bytes::Bytes)>, limit: usize) {
    let mut total: usize = unsent.iter().map(|(_, m)| m.len()).sum();
    let mut drop = 0;
    while total > limit && drop < unsent.len() {
        total -= unsent[drop].1.len();
        drop += 1;
    }
    if drop > 0 {
        unsent.drain(..drop);
        tracing::warn!(
            messages = drop,
            "statistics deltas dropped: NATS has been unreachable too long"
        );
    }
}

/// Publishes `pending` (id, payload) to `subject`, `attempts` times at most for what is not
/// acknowledged (resends keep their ids: the stream drops what it already has); returns what
/// never was.
async fn send(
    js: &jetstream::Context,
    opts: &ClusterOptions,
    subject: &str,
    mut pending: Vec<(String, bytes::Bytes)>,
    attempts: u32,
) -> Vec<(String, bytes::Bytes)> {
    for attempt in 0..attempts {
        let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        for (i, (id, payload)) in pending.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(NODE_HEADER, opts.name.as_str());
            let msg = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id)
                .headers(headers);
            match js.send_publish(subject.to_string(), msg).await {
                Ok(ack) => acks.push((i, ack)),
                Err(_) => failed.push(i),
            }
        }
        for (i, ack) in acks {
            if ack.await.is_err() {
                failed.push(i);
            }
        }
        if failed.is_empty() {
            return Vec::new();
        }
        failed.sort_unstable();
        pending = failed.into_iter().map(|i| pending[i].clone()).collect();
        if attempt + 1 < attempts {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }
    pending
}

/// Reads the click events of `opts`' bucket from the click stream, as far as it had them when
/// the call began (the stream keeps them for `--stats-retention`); returns how many were read.
pub async fn read_click_events(
    opts: &ClusterOptions,
    mut each: impl FnMut(Click),
) -> Result<u64, crate::ClusterError> {
    use crate::ClusterError as E;
    let client = crate::conn::connect(opts).await?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(&opts.clicks_stream)
        .await
        .map_err(E::ClickStream)?;
    let last = stream
        .info()
        .await
        .map_err(E::ClickStreamInfo)?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let config = consumer::push::OrderedConfig {
        deliver_subject: js.client().new_inbox(),
        filter_subject: subject(opts),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(E::ClickConsumer)?;
    let mut messages = consumer.messages().await.map_err(E::ReadClicks)?;
    let mut read = 0u64;
    // The subject may hold fewer messages than the stream (other buckets'): stop when idle.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        let m = m.map_err(E::ClickDelivery)?;
        for line in std::str::from_utf8(&m.payload).unwrap_or_default().lines() {
            if let Some(click) = duanlian_clicks::parse_line(line) {
                each(click);
                read += 1;
            }
        }
        if m.info().is_ok_and(|i| i.stream_sequence >= last) {
            break;
        }
    }
    Ok(read)
}

/// Feeds the deltas of every node into `stats`, and other nodes' human visits into this
/// node's visit counters; resumes after interruptions.
pub(crate) async fn consume(
    js: jetstream::Context,
    opts: ClusterOptions,
    stats: Arc<Stats>,
    index: Arc<Index>,
) {
    let mut next = 1u64;
    loop {
        if let Some(stream) = ensure_stream(&js, &opts, true).await {
            let config = consumer::push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                filter_subject: delta_subject(&opts),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                ..Default::default()
            };
            match stream.create_consumer(config).await {
                Ok(consumer) => match consumer.messages().await {
                    Ok(mut messages) => {
                        while let Some(Ok(m)) = messages.next().await {
                            if let Ok(info) = m.info() {
                                next = info.stream_sequence + 1;
                            }
                            merge(&m, &opts.name, &stats, &index);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "delta consumer failed"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot consume the deltas"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Merges one delta message (see [`delta_messages`]).
fn merge(m: &jetstream::Message, own: &str, stats: &Stats, index: &Index) {
    let Ok(text) = std::str::from_utf8(&m.payload) else {
        return;
    };
    let from_elsewhere = m
        .headers
        .as_ref()
        .and_then(|h| h.get(NODE_HEADER))
        .is_none_or(|n| n.as_str() != own);
    for (day, body) in sections(text) {
        if stats.add_day(day, &body).is_err() {
            tracing::warn!(day, "a malformed statistics delta was skipped");
            continue;
        }
        if from_elsewhere {
            for line in body.lines() {
                // `L domain code mobile desktop other bot`: people are all but the bots.
                let f: Vec<&str> = line.split('\t').collect();
                if let ["L", domain, code, a, b, c, _bot] = f.as_slice() {
                    let human: u64 = [a, b, c].iter().filter_map(|n| n.parse::<u64>().ok()).sum();
                    index.visits().add(domain, code, human);
                }
            }
        }
    }
}

/// A delta message's days and their lines: a `D day` line opens each.
fn sections(text: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in text.lines() {
        if let Some(day) = line.strip_prefix("D\t") {
            if let Ok(day) = day.parse() {
                out.push((day, String::new()));
            }
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use duanlian_clicks::Device;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn a_delta_merges_into_the_same_aggregates_its_clicks_make() {
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let clicks: Vec<Click> = (0..3_000)
            .map(|i| {
                let code = format!("c{}", i % 700);
                let referer = (i % 3 == 0).then_some(&b"https://weibo.com/x"[..]);
                let device = if i % 5 == 0 {
                    Device::Bot
                } else {
                    Device::browser(None)
                };
                Click::new(
                    86_400 * 20_000 + i64::from(i % 2) * 86_400,
                    "go.example.cn",
                    &code,
                    referer,
                    device,
                    ip,
                )
            })
            .collect();
        let direct = Stats::default();
        direct.add(&clicks);
        let delta = Stats::default();
        delta.add(&clicks);
        let merged = Stats::default();
        let messages = delta_messages(&delta, 2_000);
        assert!(messages.len() > 10, "cut into many messages");
        for m in &messages {
            assert!(m.starts_with(b"D\t"), "every message names its day");
            let text = std::str::from_utf8(m).expect("text");
            for (day, body) in sections(text) {
                merged.add_day(day, &body).expect("merges");
            }
        }
        for day in direct.days() {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            direct.write_day(day, &mut a);
            merged.write_day(day, &mut b);
            let mut a: Vec<&str> = std::str::from_utf8(&a).expect("text").lines().collect();
            let mut b: Vec<&str> = std::str::from_utf8(&b).expect("text").lines().collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "day {day}");
        }
    }
}
