//! Clicks leave a node aggregated.
//!
//! The redirect threads fold their clicks into a **delta** as they record them, this node's
//! aggregates since the last one (per link and day: clicks by device class, human visits by
//! referrer host), and write their click-log lines into buffers. The click writer hands both
//! to a [`ClickForwarder`]: a bounded channel (a full one refuses a batch of lines, counted as
//! failed, and a delta, which the writer keeps and merges into the next; the redirect path
//! never waits) to a task that
//! - publishes the delta once a second to the subject `duanlian.deltas.BUCKET` (stream
//!   `<clicks stream>_DELTAS`), cut into messages of at most [`DELTA_MESSAGE_BYTES`];
//! - publishes the raw clicks, gathered into messages of at most [`MESSAGE_BYTES`] (cut once a
//!   second), to the stream of click events, for export and for analytics outside (no node
//!   reads it).
//!
//! A node's own delta goes straight into its statistics; its consumer skips the deltas this
//! process published (known by their id prefix) and merges all others, its own from earlier
//! runs included.
//!
//! Publishing runs in a task of its own, once a second; what NATS does not acknowledge waits
//! on the node (up to a bound of bytes for each kind, then the oldest go, counted) and goes
//! out in order when NATS is back.
//!
//! Every message has a `Nats-Msg-Id` of node name, process start and counter, so a resend after
//! a lost acknowledgement is dropped by the stream's duplicate window. Every node consumes the
//! deltas of all nodes into its aggregates (and other nodes' human visits into its visit
//! counters), so any node answers the statistics of every link, and its work grows with the
//! nodes and the links clicked each second, not with the clicks.
use crate::ClusterOptions;
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::BytesMut;
use duanlian_clicks::{Click, Forward, Stats};
use duanlian_index::Index;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const NODE_HEADER: &str = "Duanlian-Node";

/// The largest message of clicks: well under NATS's default 1 MiB payload limit.
const MESSAGE_BYTES: usize = 256 << 10;

/// The largest delta message. Every node reads every delta, and the NATS client reads a
/// message whole into its read buffer (64 KiB): a larger one grows that buffer, and at these
/// sizes every growth is fresh memory the kernel zeroes, several times a second on a busy
/// cluster. Room is left for the message's line and headers.
const DELTA_MESSAGE_BYTES: usize = 60 << 10;

/// The click writer's way into the cluster's click stream; see the module docs.
#[derive(Debug)]
pub struct ClickForwarder {
    tx: mpsc::Sender<Handed>,
    spares: Spares,
}

/// What the publisher is done with, for the click writer to use again rather than have
/// memory allocated (and, at these sizes, zeroed by the kernel) anew: deltas it has sent and
/// emptied, and the buffers lines came in.
#[derive(Debug, Default)]
struct Returned {
    deltas: std::sync::Mutex<Vec<Stats>>,
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

type Spares = Arc<Returned>;

/// Of each, kept at most: one delta a second comes back, and a buffer every writer's turn,
/// and the writer takes them as they come.
const MAX_SPARES: usize = 4;

/// A buffer larger than this (a burst's) is let go rather than kept.
const MAX_SPARE_BUFFER: usize = 4 << 20;

/// Puts `spare` among `spares`, emptied, if there is room. Emptied outside the lock: the click
/// writer taking one never waits for it.
fn keep_spare<T>(spares: &std::sync::Mutex<Vec<T>>, mut spare: T, empty: impl FnOnce(&mut T)) {
    if spares.lock().is_ok_and(|s| s.len() < MAX_SPARES) {
        empty(&mut spare);
        if let Ok(mut spares) = spares.lock() {
            spares.push(spare);
        }
    }
}

/// What the click writer hands the publisher.
#[derive(Debug)]
enum Handed {
    /// Whole click-log lines.
    Lines(Vec<u8>),
    Delta(Stats),
}

impl Forward for ClickForwarder {
    fn lines(&mut self, lines: &[u8]) -> bool {
        let spare = self.spares.buffers.lock().ok().and_then(|mut b| b.pop());
        let mut buffer = spare.unwrap_or_default();
        buffer.extend_from_slice(lines);
        self.tx.try_send(Handed::Lines(buffer)).is_ok()
    }

    fn delta(&mut self, delta: Stats) -> Result<(), Stats> {
        use mpsc::error::TrySendError::{Closed, Full};
        match self.tx.try_send(Handed::Delta(delta)) {
            Err(Full(Handed::Delta(d)) | Closed(Handed::Delta(d))) => Err(d),
            _ => Ok(()),
        }
    }

    fn spare_delta(&mut self) -> Option<Stats> {
        self.spares.deltas.lock().ok()?.pop()
    }
}

impl ClickForwarder {
    /// A forwarder whose publishing task runs on `runtime` once `cluster` has joined;
    /// `buffer` batches wait at most (each what a redirect thread recorded between two polls of
    /// the click writer, 20 ms). At shutdown, await
    /// [`crate::Cluster::flush_clicks`] after the click writer has finished.
    pub fn start(
        cluster: &Arc<crate::Cluster>,
        runtime: &tokio::runtime::Handle,
        buffer: usize,
    ) -> ClickForwarder {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let spares = Spares::default();
        let task = runtime.spawn(publish(cluster.clone(), rx, spares.clone()));
        if let Ok(mut slot) = cluster.publisher.lock() {
            *slot = Some(task);
        }
        ClickForwarder { tx, spares }
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
        // Resends keep their ids for as long as the node holds them; past the window a
        // message first sent (and stored, its acknowledgement lost) earlier is stored again.
        duplicate_window: Duration::from_secs(600),
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

/// `delta` as messages of about `limit` bytes at most (one link's lines are never split), and
/// `delta` emptied: per day a `D day` line, then the day's lines in the day-summary form (`L`
/// per link, its `R` lines after it). A message is cut only before an `L` line, and starts
/// again with its day's `D` line. Built a thousandth of the links at a time, making way for
/// other threads now and then: a second's delta of many links is milliseconds of work on a
/// core redirects may share.
fn drain_messages(delta: &Stats, limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // The message being filled for each day: nearly always one.
    let mut open: Vec<(i64, usize, Vec<u8>)> = Vec::new();
    let mut since_yield = 0;
    delta.drain_parts(|day, mut part| {
        let at = match open.iter().position(|(d, _, _)| *d == day) {
            Some(at) => at,
            None => {
                let header = format!("D\t{day}\n");
                open.push((day, header.len(), new_message(header.as_bytes(), limit)));
                open.len() - 1
            }
        };
        let (_, header, message) = &mut open[at];
        since_yield += part.len();
        while !part.is_empty() {
            let room = limit.saturating_sub(message.len());
            let mut cut = last_link_end(part, room);
            if cut == 0 {
                if message.len() > *header {
                    let next = new_message(&message[..*header], limit);
                    out.push(std::mem::replace(message, next));
                    continue;
                }
                // One link larger than a message on its own (a link's referrers are bounded;
                // never in practice): it goes whole.
                cut = first_link_end(part);
            }
            message.extend_from_slice(&part[..cut]);
            part = &part[cut..];
        }
        // A few hundred links, as `Stats::absorb` offers the core between its shards.
        if since_yield >= 16 << 10 {
            since_yield = 0;
            std::thread::yield_now();
        }
    });
    // The last message of a day is often short (a quiet second: a few links), and may wait
    // for NATS a long time: it keeps no room beyond what it holds.
    out.extend(
        open.into_iter()
            .filter(|(_, header, m)| m.len() > *header)
            .map(|(_, _, mut m)| {
                if m.len() < limit / 2 {
                    m.shrink_to_fit();
                }
                m
            }),
    );
    out
}

fn new_message(header: &[u8], limit: usize) -> Vec<u8> {
    let mut message = Vec::with_capacity(limit + 1024);
    message.extend_from_slice(header);
    message
}

/// Where the last whole link of `text` (whole links of a day summary) that ends within its
/// first `room` bytes ends: all of it if it fits; 0 if no link does.
fn last_link_end(text: &[u8], room: usize) -> usize {
    if room >= text.len() {
        return text.len();
    }
    // A link ends where the next one's `L` line starts.
    memchr::memrchr_iter(b'\n', &text[..room])
        .map(|nl| nl + 1)
        .find(|&next| text[next..].starts_with(b"L\t"))
        .unwrap_or(0)
}

/// Where the first link of `text` ends.
fn first_link_end(text: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', text)
        .map(|nl| nl + 1)
        .find(|&next| next == text.len() || text[next..].starts_with(b"L\t"))
        .unwrap_or(text.len())
}

/// Messages waiting for NATS, oldest first, within a bound of bytes; past it the oldest go,
/// counted in `dropped` (by what each message holds: clicks, or delta messages).
struct Outbox {
    what: &'static str,
    queue: VecDeque<Pending>,
    bytes: usize,
    limit: usize,
}

/// One message to publish: its `Nats-Msg-Id`, payload, and what it counts for when dropped.
#[derive(Clone)]
struct Pending {
    id: String,
    payload: bytes::Bytes,
    counts: u64,
}

impl Outbox {
    fn new(what: &'static str, limit: usize) -> Outbox {
        Outbox {
            what,
            queue: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    fn push(&mut self, p: Pending, dropped: &AtomicU64) {
        self.bytes += p.payload.len();
        self.queue.push_back(p);
        self.keep_within(dropped);
    }

    /// Puts back what a send did not get acknowledged, ahead of what came since.
    fn put_back(&mut self, unsent: Vec<Pending>, dropped: &AtomicU64) {
        for p in unsent.into_iter().rev() {
            self.bytes += p.payload.len();
            self.queue.push_front(p);
        }
        self.keep_within(dropped);
    }

    /// At most `n` of the oldest messages, for one send.
    fn take(&mut self, n: usize) -> Vec<Pending> {
        let out: Vec<Pending> = self.queue.drain(..n.min(self.queue.len())).collect();
        self.bytes -= out.iter().map(|p| p.payload.len()).sum::<usize>();
        out
    }

    fn keep_within(&mut self, dropped: &AtomicU64) {
        let (mut messages, mut counts) = (0u64, 0u64);
        while self.bytes > self.limit {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= p.payload.len();
            messages += 1;
            counts += p.counts;
        }
        if messages > 0 {
            dropped.fetch_add(counts, Ordering::Relaxed);
            tracing::warn!(
                messages,
                counts,
                what = self.what,
                "dropped: NATS has been unreachable longer than the buffer holds"
            );
        }
    }
}

/// What the click publisher tells the metrics.
#[derive(Debug, Default)]
pub(crate) struct ClickCounters {
    /// Click events dropped because NATS stayed unreachable past [`MAX_UNSENT_EVENT_BYTES`].
    pub(crate) events_dropped: AtomicU64,
    /// Delta messages dropped because NATS stayed unreachable past [`MAX_UNSENT_DELTA_BYTES`].
    pub(crate) deltas_dropped: AtomicU64,
    /// Bytes of click events and deltas waiting for NATS.
    pub(crate) unsent_bytes: AtomicU64,
}

/// The most bytes of deltas kept while NATS cannot take them: hours of a busy node's
/// statistics. Past it the oldest are dropped, counted and logged.
const MAX_UNSENT_DELTA_BYTES: usize = 64 << 20;

/// The most bytes of raw click events kept while NATS cannot take them: about a million
/// clicks. Past it the oldest are dropped, counted and logged (their statistics are in the
/// deltas, which are kept apart).
const MAX_UNSENT_EVENT_BYTES: usize = 64 << 20;

/// The buffer a message of click events is built in: room for a whole one, so it never grows
/// (and copies itself) line by line. A full one becomes the message itself, and comes back
/// once NATS has acknowledged it: under load that is 30 messages a second, and a fresh buffer
/// of this size each time was memory the kernel zeroed each time. One less than half full (a
/// quiet second) is copied out exactly instead, so what waits in the outbox while NATS is away
/// takes at most twice the bytes it is counted by.
const EVENTS_BUFFER: usize = MESSAGE_BYTES + 4096;

/// Emptied event buffers kept for the next messages: a second's worth at a busy node.
const SPARE_EVENT_BUFFERS: usize = 32;

/// How long a round waits for JetStream's acknowledgements before it counts the rest as not
/// taken (they are sent again with their ids).
const ACK_WAIT: Duration = Duration::from_secs(10);

/// The most messages one send takes, so a backlog after an outage goes out in rounds.
const MESSAGES_PER_SEND: usize = 256;

/// What the publisher holds: the delta being folded, the click-log lines not yet in a
/// message, and what waits for NATS.
struct Held<'a> {
    counters: &'a ClickCounters,
    prefix: String,
    counter: u64,
    delta: Stats,
    spares: Spares,
    /// The click-log lines of clicks not yet in an events message, and how many clicks.
    payload: BytesMut,
    in_payload: u64,
    /// Buffers of sent event messages, emptied, for the next ones.
    spare_payloads: Vec<BytesMut>,
    deltas: Outbox,
    events: Outbox,
}

impl Held<'_> {
    fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("{}{}", self.prefix, self.counter)
    }

    /// Gathers click-log lines into messages of click events, cut between lines.
    fn add_lines(&mut self, mut lines: &[u8]) {
        while !lines.is_empty() {
            let room = MESSAGE_BYTES.saturating_sub(self.payload.len());
            let cut = if lines.len() <= room {
                lines.len()
            } else {
                match lines[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    // Not even one more line fits.
                    None if !self.payload.is_empty() => {
                        self.seal_events();
                        continue;
                    }
                    // A line longer than a message (a link's parts are bounded; never here).
                    None => lines.len(),
                }
            };
            let part = &lines[..cut];
            self.payload.extend_from_slice(part);
            self.in_payload += memchr::memchr_iter(b'\n', part).count() as u64;
            lines = &lines[cut..];
            if !lines.is_empty() {
                self.seal_events();
            }
        }
    }

    /// Folds a redirect thread's delta into the one to publish.
    fn add_delta(&mut self, delta: Stats) {
        if self.delta.is_empty() {
            self.delta = delta;
        } else {
            self.delta.absorb(&delta);
            self.give_back(delta);
        }
    }

    /// Empties a delta whose clicks are now elsewhere, for the click writer to count in.
    fn give_back(&self, delta: Stats) {
        keep_spare(&self.spares.deltas, delta, |d| d.clear());
    }

    /// A buffer the click writer handed lines in, for its next lines.
    fn give_back_buffer(&self, buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_SPARE_BUFFER {
            keep_spare(&self.spares.buffers, buffer, Vec::clear);
        }
    }

    fn seal_events(&mut self) {
        if self.payload.is_empty() {
            return;
        }
        let payload = if self.payload.len() >= MESSAGE_BYTES / 2 {
            let fresh = self
                .spare_payloads
                .pop()
                .unwrap_or_else(|| BytesMut::with_capacity(EVENTS_BUFFER));
            std::mem::replace(&mut self.payload, fresh).freeze()
        } else {
            let exact = bytes::Bytes::copy_from_slice(&self.payload);
            self.payload.clear();
            exact
        };
        let p = Pending {
            id: self.next_id(),
            payload,
            counts: self.in_payload,
        };
        self.in_payload = 0;
        self.events.push(p, &self.counters.events_dropped);
    }

    /// The delta so far and the lines so far become messages waiting for NATS.
    fn seal(&mut self) {
        if !self.delta.is_empty() {
            let delta = std::mem::take(&mut self.delta);
            for m in drain_messages(&delta, DELTA_MESSAGE_BYTES) {
                let p = Pending {
                    id: self.next_id(),
                    payload: m.into(),
                    counts: 1,
                };
                self.deltas.push(p, &self.counters.deltas_dropped);
            }
            // Emptied already: another `clear` would count as a second, sparse, fill.
            keep_spare(&self.spares.deltas, delta, |_| {});
        }
        self.seal_events();
    }

    fn waiting(&self) -> bool {
        !self.deltas.queue.is_empty() || !self.events.queue.is_empty()
    }

    /// The next round to send: deltas first (they are the statistics; raw events can wait
    /// longer).
    fn round(&mut self) -> (Vec<Pending>, Vec<Pending>) {
        let d = self.deltas.take(MESSAGES_PER_SEND);
        let e = self.events.take(MESSAGES_PER_SEND.saturating_sub(d.len()));
        (d, e)
    }

    /// Takes back what a round left unacknowledged; whether there was any.
    fn put_back(&mut self, sent: Sent) -> bool {
        let stuck = !sent.deltas.is_empty() || !sent.events.is_empty();
        for mut b in sent.emptied {
            if self.spare_payloads.len() < SPARE_EVENT_BUFFERS && b.capacity() >= EVENTS_BUFFER {
                b.clear();
                self.spare_payloads.push(b);
            }
        }
        self.deltas
            .put_back(sent.deltas, &self.counters.deltas_dropped);
        self.events
            .put_back(sent.events, &self.counters.events_dropped);
        stuck
    }
}

/// Folds and buffers the clicks the writer hands over; publishes once a second from a task
/// of its own, so a slow or absent NATS never holds up the folding (nor the click writer).
async fn publish(cluster: Arc<crate::Cluster>, mut rx: mpsc::Receiver<Handed>, spares: Spares) {
    let opts = cluster.options().clone();
    let mut held = Held {
        counters: &cluster.click_counters,
        prefix: cluster.message_prefix.clone(),
        counter: 0,
        delta: Stats::default(),
        spares,
        payload: BytesMut::with_capacity(EVENTS_BUFFER),
        in_payload: 0,
        spare_payloads: Vec::new(),
        deltas: Outbox::new("statistics deltas", MAX_UNSENT_DELTA_BYTES),
        events: Outbox::new("click events", MAX_UNSENT_EVENT_BYTES),
    };
    let mut sending: Option<tokio::task::JoinHandle<Sent>> = None;
    let mut streams_ready = false;
    let mut every = tokio::time::interval(DELTA_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            handed = rx.recv() => {
                match handed {
                    None => break,
                    Some(Handed::Lines(lines)) => {
                        held.add_lines(&lines);
                        held.give_back_buffer(lines);
                    }
                    Some(Handed::Delta(delta)) => {
                        if let Some(stats) = cluster.stats.get() {
                            stats.absorb(&delta);
                        }
                        held.add_delta(delta);
                    }
                }
            }
            sent = async {
                match sending.as_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            }, if sending.is_some() => {
                sending = None;
                match sent {
                    Ok(sent) => {
                        streams_ready |= sent.streams_ready;
                        held.put_back(sent);
                    }
                    Err(e) => tracing::error!(error = %e, "the click publisher's send task failed"),
                }
            }
            _ = every.tick() => {
                held.seal();
                if let (true, None, Some(js), true) = (held.waiting(), &sending, cluster.jetstream(), cluster.connected()) {
                    let (d, e) = held.round();
                    sending = Some(tokio::spawn(send_round(js, opts.clone(), streams_ready, d, e)));
                }
                let unsent = held.deltas.bytes + held.events.bytes + held.payload.len();
                held.counters.unsent_bytes.store(unsent as u64, Ordering::Relaxed);
            }
        }
    }
    // The click writer has finished (shutdown): what this node holds goes out now, or is lost
    // with the process.
    held.seal();
    if let Some(handle) = sending.take() {
        if let Ok(sent) = handle.await {
            streams_ready |= sent.streams_ready;
            held.put_back(sent);
        }
    }
    while let (true, Some(js), true) = (held.waiting(), cluster.jetstream(), cluster.connected()) {
        let (d, e) = held.round();
        let sent = send_round(js, opts.clone(), streams_ready, d, e).await;
        streams_ready |= sent.streams_ready;
        if held.put_back(sent) {
            break;
        }
    }
    let (d, e) = (held.deltas.queue.len(), held.events.queue.len());
    if d + e > 0 {
        tracing::warn!(
            deltas = d,
            click_event_messages = e,
            "stopping with click data NATS did not take; it is lost"
        );
    }
}

/// What one round of sending left unacknowledged, and the buffers of the event messages NATS
/// took, if no one else holds them any more.
struct Sent {
    streams_ready: bool,
    deltas: Vec<Pending>,
    events: Vec<Pending>,
    emptied: Vec<BytesMut>,
}

async fn send_round(
    js: jetstream::Context,
    opts: ClusterOptions,
    mut streams_ready: bool,
    deltas: Vec<Pending>,
    events: Vec<Pending>,
) -> Sent {
    if !streams_ready {
        streams_ready = ensure_stream(&js, &opts, false).await.is_some()
            & ensure_stream(&js, &opts, true).await.is_some();
        if !streams_ready {
            return Sent {
                streams_ready,
                deltas,
                events,
                emptied: Vec::new(),
            };
        }
    }
    // Sent once a round: what is not acknowledged waits for the next one, with its id, so a
    // late acknowledgement never counts anything twice.
    let (deltas, _) = send(&js, &opts, &delta_subject(&opts), deltas).await;
    let (events, taken) = send(&js, &opts, &subject(&opts), events).await;
    // Only event messages' buffers are worth having back (see `EVENTS_BUFFER`).
    let emptied = taken
        .into_iter()
        .filter_map(|p| p.payload.try_into_mut().ok())
        .collect();
    Sent {
        streams_ready,
        deltas,
        events,
        emptied,
    }
}

/// Publishes `pending` to `subject` once; returns what was not acknowledged, in order (a
/// resend keeps its id, so the stream drops what it already has), and what was.
async fn send(
    js: &jetstream::Context,
    opts: &ClusterOptions,
    subject: &str,
    pending: Vec<Pending>,
) -> (Vec<Pending>, Vec<Pending>) {
    let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(pending.len());
    let mut failed = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        // `header`, not `headers`: a whole map set after `message_id` would replace the id, and
        // with it the stream's deduplication of resends (and this node's knowing its own).
        let msg = jetstream::message::PublishMessage::build()
            .payload(p.payload.clone())
            .header(NODE_HEADER, opts.name.as_str())
            .message_id(&p.id);
        match js.send_publish(subject.to_string(), msg).await {
            Ok(ack) => acks.push((i, ack)),
            Err(_) => failed.push(i),
        }
    }
    // All at once, under one deadline: awaited one after another, each ack's own timeout
    // (5 s) started only when the one before it ended, so a round of 256 messages whose
    // connection dropped took 20 minutes to give up.
    let (ids, acks): (Vec<usize>, Vec<PublishAckFuture>) = acks.into_iter().unzip();
    let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
    match tokio::time::timeout(ACK_WAIT, futures_util::future::join_all(acks)).await {
        Ok(results) => failed.extend(
            ids.into_iter()
                .zip(results)
                .filter_map(|(i, r)| r.is_err().then_some(i)),
        ),
        Err(_) => failed.extend(ids),
    }
    failed.sort_unstable();
    let mut failed = failed.into_iter().peekable();
    let (mut unsent, mut taken) = (Vec::new(), Vec::new());
    for (i, p) in pending.into_iter().enumerate() {
        if failed.next_if_eq(&i).is_some() {
            unsent.push(p);
        } else {
            taken.push(p);
        }
    }
    (unsent, taken)
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
    own_prefix: String,
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
                            let own = m
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                                .is_some_and(|id| id.as_str().starts_with(&own_prefix));
                            if !own {
                                merge(&m, &opts.name, &stats, &index);
                            }
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

/// Merges one delta message (see [`drain_messages`]).
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
        if day.is_none_or(|day| stats.add_day(day, &body).is_err()) {
            tracing::warn!(?day, "a malformed statistics delta was skipped");
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
/// A day whose header does not parse is `None`: its lines must not join the day before.
fn sections(text: &str) -> Vec<(Option<i64>, String)> {
    let mut out: Vec<(Option<i64>, String)> = Vec::new();
    for line in text.lines() {
        if let Some(day) = line.strip_prefix("D\t") {
            out.push((day.parse().ok(), String::new()));
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

    /// A delta's day that does not parse keeps its lines to itself, and one outside the
    /// years a date has four digits for is refused whole.
    #[test]
    fn a_bad_day_in_a_delta_is_skipped_alone() {
        let text = "D\t20000\nL\td.cn\ta\t1\t0\t0\t0\nD\tx\nL\td.cn\tb\t5\t0\t0\t0\n";
        let parts = sections(text);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            (Some(20000), "L\td.cn\ta\t1\t0\t0\t0\n".to_owned())
        );
        assert_eq!(parts[1].0, None);
        let stats = Stats::default();
        assert_eq!(stats.add_day(1 << 40, "L\td.cn\ta\t1\t0\t0\t0\n"), Err(0));
        assert!(stats.is_empty());
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_and_counts_what_they_held() {
        let dropped = AtomicU64::new(0);
        let mut out = Outbox::new("click events", 100);
        let msg = |n: u64| Pending {
            id: format!("m{n}"),
            payload: vec![b'x'; 40].into(),
            counts: n,
        };
        for n in 1..=3 {
            out.push(msg(n), &dropped);
        }
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1,
            "the oldest (1 click) went"
        );
        assert_eq!(out.bytes, 80);
        // What a send did not get acknowledged goes back ahead of the rest, and still counts
        // against the bound.
        let sent = out.take(1);
        out.push(msg(4), &dropped);
        out.put_back(sent, &dropped);
        let ids: Vec<&str> = out.queue.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["m3", "m4"]);
        assert_eq!(dropped.load(Ordering::Relaxed), 1 + 2);
    }
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
        let messages = drain_messages(&delta, 2_000);
        assert!(delta.is_empty(), "the delta is emptied");
        assert!(messages.len() > 10, "cut into many messages");
        for m in &messages {
            assert!(m.starts_with(b"D\t"), "every message names its day");
            assert!(m.len() <= 2_000, "no message over the bound: {}", m.len());
            let text = std::str::from_utf8(m).expect("text");
            for (day, body) in sections(text) {
                merged.add_day(day.expect("a day"), &body).expect("merges");
            }
        }
        // The clicks' two days.
        for day in [20_000, 20_001] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            direct.write_day(day, &mut a);
            assert!(!a.is_empty(), "day {day} has clicks");
            merged.write_day(day, &mut b);
            let mut a: Vec<&str> = std::str::from_utf8(&a).expect("text").lines().collect();
            let mut b: Vec<&str> = std::str::from_utf8(&b).expect("text").lines().collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "day {day}");
        }
    }
}
