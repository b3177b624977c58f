//! The writer thread: group commit, preconditions, apply-after-sync.
use crate::error::io_err;
use crate::{DataDir, StoreError};
use duanlian_index::Index;
use duanlian_journal::{Journal, Options as JournalOptions};
use duanlian_link::{now_secs, Change, Code, Domain, Link};
use duanlian_snapshot::{Builder, Snapshot};
use duanlian_write::{random_code, Op, Outcome, WriteError, GENERATE_TRIES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Journal segment size before a new segment is started. Default is 64 MiB.
    pub segment_bytes: u64,
    /// The most requests one group commit takes. Default is 4096.
    pub max_group: usize,
    /// How often visit counts are saved. Default is 2 s.
    pub save_every: std::time::Duration,
    /// Told how long each group write and fdatasync took (for metrics). Default is none.
    pub on_commit: Option<CommitObserver>,
}

/// A callback for the duration of each journal group commit.
#[derive(Clone)]
pub struct CommitObserver(pub Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitObserver")
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_bytes: JournalOptions::default().segment_bytes,
            max_group: 4096,
            save_every: std::time::Duration::from_secs(2),
            on_commit: None,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Write { op: Op, reply: Reply<Outcome> },
    Rotate { reply: Reply<u64> },
    Remove { through: u64, reply: Reply<usize> },
}

/// The write path; see the crate docs.
#[derive(Debug)]
pub struct Store {
    tx: Option<mpsc::Sender<Job>>,
    index: Arc<Index>,
    pub(crate) dir: DataDir,
    pub(crate) compaction: tokio::sync::Mutex<()>,
    writer: Option<JoinHandle<()>>,
    maintenance: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    replayed: u64,
}

impl Store {
    /// Opens the data directory's snapshot (an empty one is written if there is none), replays
    /// the journal into a fresh index, and starts the writer thread.
    pub fn open(dir: DataDir, opts: StoreOptions) -> Result<Store, StoreError> {
        let snap_path = dir.snapshot_path();
        if !dir.has_snapshot() {
            let bytes = Builder::new()
                .finish()
                .and_then(|t| t.to_bytes(0))
                .map_err(|e| StoreError::Build(e.to_string()))?;
            duanlian_snapshot::write_atomic(&snap_path, &bytes)?;
        }
        // The checksum is the caller's to verify (in the background; see `Snapshot::open_deferred`).
        let snapshot = Snapshot::open_deferred(&snap_path)?;
        let after = snapshot.header().sequence;
        let index = Arc::new(Index::new(Arc::new(snapshot)));
        for (key, count) in crate::visits_file::load(&dir.visits_path())? {
            index.visits().set(&key, count);
        }
        let mut replayed = 0;
        let journal = Journal::open(
            &dir.journal_dir(),
            after,
            JournalOptions {
                segment_bytes: opts.segment_bytes,
            },
            |record| {
                replayed += 1;
                for change in record.changes {
                    index.apply(record.seq, change);
                }
            },
        )?;
        let (tx, rx) = mpsc::channel();
        let writer_index = index.clone();
        let writer = std::thread::Builder::new()
            .name("duanlian-journal".into())
            .spawn(move || writer(rx, journal, writer_index, opts.max_group, opts.on_commit))
            .map_err(io_err(dir.path()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let maintenance = {
            let (index, stop, path, every) = (
                index.clone(),
                stop.clone(),
                dir.visits_path(),
                opts.save_every,
            );
            std::thread::Builder::new()
                .name("duanlian-maint".into())
                .spawn(move || maintain(&index, &stop, &path, every))
                .map_err(io_err(dir.path()))?
        };
        Ok(Store {
            tx: Some(tx),
            index,
            dir,
            compaction: tokio::sync::Mutex::new(()),
            writer: Some(writer),
            maintenance: Some((stop, maintenance)),
            replayed,
        })
    }

    /// Saves the visit counts now (also done every few seconds, and by [`Store::shutdown`]).
    pub fn save_visits(&self) -> Result<(), StoreError> {
        save_visits(&self.index, &self.dir.visits_path())
    }

    /// Stops background work and saves what it keeps in memory. Writes already acknowledged are
    /// on disk regardless; this only concerns visit counts.
    pub fn shutdown(&self) {
        if let Some((stop, _)) = &self.maintenance {
            stop.store(true, Ordering::Relaxed);
        }
        if let Err(e) = self.save_visits() {
            tracing::error!(error = %e, "saving visit counts at shutdown failed");
        }
    }

    /// The index this store writes into.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Bytes in the journal's segment files.
    pub fn journal_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.journal_dir())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Journal records replayed at open.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job(reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Submits a write and waits until it is durable and visible in the index.
    pub async fn submit(&self, op: Op) -> Result<Outcome, StoreError> {
        self.ask(|reply| Job::Write { op, reply }).await
    }

    /// Closes the journal's open segment; returns the last sequence number in closed segments.
    pub(crate) async fn rotate(&self) -> Result<u64, StoreError> {
        self.ask(|reply| Job::Rotate { reply }).await
    }

    /// Deletes journal segments folded into a published snapshot.
    pub(crate) async fn remove_through(&self, through: u64) -> Result<usize, StoreError> {
        self.ask(|reply| Job::Remove { through, reply }).await
    }
}

fn save_visits(index: &Index, path: &std::path::Path) -> Result<(), StoreError> {
    let Some(counts) = index.visits().take_changed() else {
        return Ok(());
    };
    let saved = crate::visits_file::save(path, &counts);
    if saved.is_err() {
        // Not saved: the next round must try again even if no visit comes in meanwhile.
        index.visits().mark_changed();
    }
    saved
}

/// The background loop: every `save_every`, save visit counts if they changed, waking every
/// quarter second so a stop is noticed promptly. (Freeing expired links is the index's reaper,
/// which every kind of node runs.)
fn maintain(
    index: &Index,
    stop: &AtomicBool,
    visits: &std::path::Path,
    save_every: std::time::Duration,
) {
    let mut last_save = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250).min(save_every));
        if last_save.elapsed() >= save_every {
            last_save = std::time::Instant::now();
            if let Err(e) = save_visits(index, visits) {
                tracing::warn!(error = %e, "saving visit counts failed; will retry");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.maintenance.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        let _ = self.save_visits();
        // Closing the channel lets the writer finish what it has and exit.
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

type Key = (Domain, Code);

/// Effects of the requests already planned in this group, so later ones in the same group see
/// them before they reach the index.
struct Pending<'a> {
    index: &'a Index,
    state: HashMap<Key, Option<Link>>,
}

impl Pending<'_> {
    fn current(&self, domain: &Domain, code: &Code) -> Option<Link> {
        match self.state.get(&(domain.clone(), code.clone())) {
            Some(state) => state.clone(),
            None => self.index.get(domain.as_str(), code.as_str()),
        }
    }

    fn taken(&self, domain: &Domain, code: &Code) -> bool {
        match self.state.get(&(domain.clone(), code.clone())) {
            Some(state) => state.is_some(),
            None => self.index.contains(domain.as_str(), code.as_str()),
        }
    }
}

/// Checks one request against the current state and turns it into changes. On failure the
/// pending state is left as it was (a batch is all or nothing).
fn plan(op: Op, pending: &mut Pending<'_>, now: i64) -> Result<(Vec<Change>, Outcome), StoreError> {
    match op {
        Op::Create(new) => {
            let mut added: Vec<Key> = Vec::with_capacity(new.len());
            let mut links = Vec::with_capacity(new.len());
            let undo = |pending: &mut Pending<'_>, added: &[Key]| {
                for k in added {
                    pending.state.remove(k);
                }
            };
            for n in new {
                let code = match n.code.clone() {
                    Some(code) => {
                        if pending.taken(&n.domain, &code) {
                            undo(pending, &added);
                            return Err(WriteError::Conflict {
                                domain: n.domain.to_string(),
                                code: code.to_string(),
                            }
                            .into());
                        }
                        code
                    }
                    None => match generate(pending, &n.domain, n.code_length) {
                        Ok(code) => code,
                        Err(e) => {
                            undo(pending, &added);
                            return Err(e);
                        }
                    },
                };
                let link = n.into_link(code, now);
                let key = (link.domain.clone(), link.code.clone());
                pending.state.insert(key.clone(), Some(link.clone()));
                added.push(key);
                links.push(link);
            }
            let changes = links.iter().cloned().map(Change::Put).collect();
            Ok((changes, Outcome::Created(links)))
        }
        Op::Update {
            domain,
            code,
            patch,
        } => {
            let Some(link) = pending.current(&domain, &code) else {
                return Err(WriteError::NotFound {
                    domain: domain.to_string(),
                    code: code.to_string(),
                }
                .into());
            };
            let link = patch.apply_to(link)?;
            pending.state.insert((domain, code), Some(link.clone()));
            Ok((vec![Change::Put(link.clone())], Outcome::Updated(link)))
        }
        Op::Delete { domain, code } => {
            if !pending.taken(&domain, &code) {
                return Err(WriteError::NotFound {
                    domain: domain.to_string(),
                    code: code.to_string(),
                }
                .into());
            }
            pending.state.insert((domain.clone(), code.clone()), None);
            Ok((vec![Change::Delete { domain, code }], Outcome::Deleted))
        }
    }
}

fn generate(pending: &Pending<'_>, domain: &Domain, len: usize) -> Result<Code, StoreError> {
    for _ in 0..GENERATE_TRIES {
        // A generated code could, once in 62^7, spell a reserved path: draw again.
        let Ok(code) = Code::parse_new(&random_code(len)?) else {
            continue;
        };
        if !pending.taken(domain, &code) {
            return Ok(code);
        }
    }
    Err(WriteError::CodeSpaceExhausted(len).into())
}

fn writer(
    rx: mpsc::Receiver<Job>,
    mut journal: Journal,
    index: Arc<Index>,
    max_group: usize,
    on_commit: Option<CommitObserver>,
) {
    let mut deferred: Option<Job> = None;
    loop {
        let first = match deferred.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut group = Vec::new();
        match first {
            Job::Write { op, reply } => group.push((op, reply)),
            Job::Rotate { reply } => {
                let _ = reply.send(journal.rotate().map_err(StoreError::from));
                continue;
            }
            Job::Remove { through, reply } => {
                let _ = reply.send(journal.remove_through(through).map_err(StoreError::from));
                continue;
            }
        }
        // Everything that queued up during the last sync joins this group; a control job ends
        // it, so rotation and removal happen between groups, in order.
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(Job::Write { op, reply }) => group.push((op, reply)),
                Ok(control) => {
                    deferred = Some(control);
                    break;
                }
                Err(_) => break,
            }
        }
        commit(&mut journal, &index, group, on_commit.as_ref());
    }
}

fn commit(
    journal: &mut Journal,
    index: &Index,
    group: Vec<(Op, Reply<Outcome>)>,
    on_commit: Option<&CommitObserver>,
) {
    let now = now_secs();
    let mut pending = Pending {
        index,
        state: HashMap::new(),
    };
    let mut planned = Vec::with_capacity(group.len());
    for (op, reply) in group {
        planned.push((plan(op, &mut pending, now), reply));
    }
    let records: Vec<&[Change]> = planned
        .iter()
        .filter_map(|(p, _)| p.as_ref().ok().map(|(changes, _)| changes.as_slice()))
        .collect();
    let written = if records.is_empty() {
        Ok(0)
    } else {
        let started = std::time::Instant::now();
        let written = journal.write(&records);
        if let Some(observe) = on_commit {
            (observe.0)(started.elapsed());
        }
        written
    };
    let mut seq = match &written {
        Ok(last) => last + 1 - records.len() as u64,
        Err(e) => {
            tracing::error!(error = %e, "journal write failed; refusing all further writes");
            0
        }
    };
    drop(records);
    for (result, reply) in planned {
        let answer = match (result, &written) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(WriteError::Unavailable(e.to_string()).into()),
            (Ok((changes, outcome)), Ok(_)) => {
                for change in changes {
                    index.apply(seq, change);
                }
                seq += 1;
                Ok(outcome)
            }
        };
        let _ = reply.send(answer);
    }
}
