//! Click events through a JetStream stream.
//!
//! Each node's click writer hands batches to a [`ClickForwarder`]: a bounded channel (a full
//! one refuses the batch, counted as failed; the redirect path never waits) to a task that
//! publishes each batch as one message (click-log lines, one per click, up to
//! [`MESSAGE_BYTES`]) with a `Nats-Msg-Id` of node name and counter, so a resend after a lost
//! acknowledgement is dropped by the stream's duplicate window. One message a batch instead of
//! one a click: the stream takes a few messages a second per node, not one per redirect. Every node consumes the whole
//! stream into its aggregates, so any node answers statistics for clicks on all of them; clicks
//! made on other nodes also count toward this node's visit counters (visit caps are enforced
//! cluster-wide, a moment late).
use crate::ClusterOptions;
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use duanlian_clicks::{encode_line, parse_line, Click, Device, Forward, Stats};
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

async fn ensure_stream(js: &jetstream::Context, opts: &ClusterOptions) -> Option<stream::Stream> {
    let config = stream::Config {
        name: opts.clicks_stream.clone(),
        description: Some("duanlian click events".into()),
        subjects: vec!["duanlian.clicks.>".into()],
        num_replicas: opts.replicas.max(1),
        max_age: opts.clicks_max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match js.get_or_create_stream(config).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the click stream");
            None
        }
    }
}

async fn publish(cluster: Arc<crate::Cluster>, mut rx: mpsc::Receiver<Vec<Click>>) {
    let opts = cluster.options().clone();
    let subject = subject(&opts);
    let mut counter = 0u64;
    // A per-process prefix, so a restarted node's ids never collide with its last run's.
    let prefix = format!("{}-{:x}", opts.name, duanlian_link::now_secs());
    let mut line = Vec::with_capacity(128);
    let mut stream_ready = false;
    while let Some(batch) = rx.recv().await {
        let Some(js) = cluster.jetstream() else {
            tracing::debug!(clicks = batch.len(), "not joined yet; clicks dropped");
            continue;
        };
        if !stream_ready {
            stream_ready = ensure_stream(&js, &opts).await.is_some();
        }
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
        // Resends keep their ids: the stream drops what it already has.
        for attempt in 0..5 {
            let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(pending.len());
            let mut failed = Vec::new();
            for (i, (id, payload)) in pending.iter().enumerate() {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(NODE_HEADER, opts.name.as_str());
                let msg = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(id)
                    .headers(headers);
                match js.send_publish(subject.clone(), msg).await {
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
                break;
            }
            failed.sort_unstable();
            pending = failed.into_iter().map(|i| pending[i].clone()).collect();
            if attempt == 4 {
                tracing::warn!(
                    clicks = pending.len(),
                    "click events not acknowledged; dropped"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }
}

/// Feeds every click of the stream into `stats`, and clicks made by people on other nodes into
/// this node's visit counters; resumes after interruptions.
pub(crate) async fn consume(
    js: jetstream::Context,
    opts: ClusterOptions,
    stats: Arc<Stats>,
    index: Arc<Index>,
) {
    let mut next = 1u64;
    loop {
        if let Some(stream) = ensure_stream(&js, &opts).await {
            let config = consumer::push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                filter_subject: subject(&opts),
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
                            count(&m, &opts.name, &stats, &index);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "click stream consumer failed"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot consume the click stream"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Counts the clicks of one message (one click-log line each; a message of an older node
/// holds one line without its newline).
fn count(m: &jetstream::Message, own: &str, stats: &Stats, index: &Index) {
    let Ok(text) = std::str::from_utf8(&m.payload) else {
        return;
    };
    let clicks: Vec<Click> = text.lines().filter_map(parse_line).collect();
    let from_elsewhere = m
        .headers
        .as_ref()
        .and_then(|h| h.get(NODE_HEADER))
        .is_none_or(|n| n.as_str() != own);
    if from_elsewhere {
        for click in clicks.iter().filter(|c| c.device != Device::Bot) {
            index.visits().hit(click.domain(), click.code(), None);
        }
    }
    stats.add(&clicks);
}
