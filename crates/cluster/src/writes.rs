//! Writes through the bucket: create-if-absent, update and delete against the revision read,
//! each answered once JetStream acknowledged it and this node applied it.
use crate::conn::Conn;
use crate::{codec, Cluster, ClusterOptions};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::kv;
use duanlian_link::{now_secs, Code, Domain, Link};
use duanlian_write::{random_code, Op, Outcome, WriteError, GENERATE_TRIES};
use std::time::Duration;

impl Cluster {
    /// The connection, if NATS is reachable right now: writes are refused at once otherwise
    /// (503), instead of waiting out a request timeout.
    fn writable(&self) -> Result<&Conn, WriteError> {
        match self.conn.get() {
            Some(c) if c.client.connection_state() == async_nats::connection::State::Connected => {
                Ok(c)
            }
            Some(_) => Err(WriteError::Unavailable("NATS is unreachable".into())),
            None => Err(WriteError::Unavailable(
                "not joined to the cluster yet".into(),
            )),
        }
    }

    /// Writes through the bucket: answered once JetStream acknowledged the write and this
    /// node applied it (so the writer reads its own write). Returns the outcome and the
    /// revision of the last write.
    pub async fn submit(&self, op: Op) -> Result<(Outcome, u64), WriteError> {
        let conn = self.writable()?;
        let (outcome, revision) = match op {
            Op::Create(new) => self.create(conn, new).await?,
            Op::Update {
                domain,
                code,
                patch,
            } => {
                let key = codec::key(domain.as_str(), code.as_str());
                let mut tries = 0;
                loop {
                    let (link, read) = self.read(conn, &domain, &code).await?;
                    let link = patch.clone().apply_to(link)?;
                    match conn.kv.update(&key, codec::encode(&link), read).await {
                        Ok(rev) => break (Outcome::Updated(link), rev),
                        Err(e)
                            if e.kind() == kv::UpdateErrorKind::WrongLastRevision && tries < 8 =>
                        {
                            tries += 1; // changed meanwhile: read again and re-apply the patch
                        }
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            Op::Delete { domain, code } => {
                let mut tries = 0;
                loop {
                    let (_, read) = self.read(conn, &domain, &code).await?;
                    match delete(conn, &self.opts, &domain, &code, read).await {
                        Ok(rev) => break (Outcome::Deleted, rev),
                        // Most likely changed since the read: read again (a 404 ends it).
                        Err(_) if tries < 8 => tries += 1,
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        };
        self.wait_applied(revision).await;
        Ok((outcome, revision))
    }

    async fn wait_applied(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|a| *a >= revision))
                .await;
        if waited.is_err() {
            // Durable in the bucket regardless; this node will apply it when its watch does.
            tracing::warn!(
                revision,
                "a write was acknowledged but is not applied here yet"
            );
        }
    }

    /// The current link and its revision, or 404.
    async fn read(
        &self,
        conn: &Conn,
        domain: &Domain,
        code: &Code,
    ) -> Result<(Link, u64), WriteError> {
        let key = codec::key(domain.as_str(), code.as_str());
        let not_found = || WriteError::NotFound {
            domain: domain.to_string(),
            code: code.to_string(),
        };
        match conn.kv.entry(key.clone()).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => codec::decode(&key, &e.value)
                .map(|l| (l, e.revision))
                .map_err(|why| WriteError::Unavailable(format!("unreadable bucket entry: {why}"))),
            Ok(_) => Err(not_found()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Creates links one by one with create-if-absent. The bucket has no transactions, so a
    /// batch that fails part-way deletes the links it had created before answering the error.
    async fn create(
        &self,
        conn: &Conn,
        new: Vec<duanlian_write::NewLink>,
    ) -> Result<(Outcome, u64), WriteError> {
        let now = now_secs();
        let mut created: Vec<(Link, u64)> = Vec::with_capacity(new.len());
        for n in new {
            match self.create_one(conn, n, now).await {
                Ok(done) => created.push(done),
                Err(e) => {
                    for (link, rev) in &created {
                        let _ = delete(conn, &self.opts, &link.domain, &link.code, *rev).await;
                    }
                    return Err(e);
                }
            }
        }
        let last = created.iter().map(|c| c.1).max().unwrap_or(0);
        Ok((
            Outcome::Created(created.into_iter().map(|c| c.0).collect()),
            last,
        ))
    }

    async fn create_one(
        &self,
        conn: &Conn,
        n: duanlian_write::NewLink,
        now: i64,
    ) -> Result<(Link, u64), WriteError> {
        let chosen = n.code.clone();
        for _ in 0..GENERATE_TRIES {
            let code = match &chosen {
                Some(c) => c.clone(),
                None => match Code::parse_new(&random_code(n.code_length)?) {
                    Ok(c) if !self.index.contains(n.domain.as_str(), c.as_str()) => c,
                    _ => continue,
                },
            };
            let link = n.clone().into_link(code, now);
            let key = codec::key(link.domain.as_str(), link.code.as_str());
            match conn.kv.create(&key, codec::encode(&link)).await {
                Ok(rev) => return Ok((link, rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if chosen.is_some() {
                        return Err(WriteError::Conflict {
                            domain: link.domain.to_string(),
                            code: link.code.to_string(),
                        });
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(WriteError::CodeSpaceExhausted(n.code_length))
    }
}

fn unavailable(e: impl std::fmt::Display) -> WriteError {
    WriteError::Unavailable(format!("NATS: {e}"))
}

/// A delete marker that only lands if the key is still at `revision`.
async fn delete(
    conn: &Conn,
    opts: &ClusterOptions,
    domain: &Domain,
    code: &Code,
    revision: u64,
) -> Result<u64, PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        revision.to_string().as_str(),
    );
    let subject = opts.kv_subject_prefix() + &codec::key(domain.as_str(), code.as_str());
    let ack = conn
        .js
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await?
        .await?;
    Ok(ack.sequence)
}
