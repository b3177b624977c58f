//! Automatic certificates: the ACME robot run beside the node, its challenge answers served by
//! the redirect listener, each new certificate loaded by the TLS listener.
use anyhow::{Context, Result};
use duanlian_acme::{Acme, AcmeOptions, Challenges, DirStore};
use duanlian_server::{AcmeAnswers, Health, Tls};
use std::sync::Arc;

/// The redirect listener's challenge answers, as the robot sees them.
pub(crate) struct Board(Arc<AcmeAnswers>);

impl Challenges for Board {
    async fn publish(&self, token: &str, key_authorization: &str) {
        self.0.publish(token, key_authorization);
    }

    async fn withdraw(&self, token: &str) {
        self.0.withdraw(token);
    }
}

/// Starts the robot on a thread of its own (a current-thread runtime: it only waits on the CA).
/// It waits until the node is ready: the CA's first request may come as soon as it orders.
pub(crate) fn spawn(
    opts: AcmeOptions,
    answers: Arc<AcmeAnswers>,
    tls: Arc<Tls>,
    health: Arc<Health>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("ACME runtime")?;
    let on_issued = Box::new(move || {
        // The robot wrote both files before this; a refusal is logged and counted by `reload`.
        let _ = tls.reload();
    });
    let store = DirStore::new(opts.state_dir.clone());
    let robot = Acme::new(opts, store, Board(answers), on_issued);
    std::thread::Builder::new()
        .name("duanlian-acme".into())
        .spawn(move || {
            rt.block_on(async {
                when_ready(&health).await;
                robot.run().await
            })
        })
        .context("starting the ACME thread")?;
    Ok(())
}

/// Cluster mode: the account and certificates live in the cluster's secrets bucket (`acme.*`
/// keys), one node orders a domain at a time (a claim with an expiry), every node mirrors the
/// certificates into its own managed directory and answers every challenge.
pub(crate) mod shared {
    use super::Board;
    use duanlian_acme::{
        account_of, account_record, leaf_validity, write_certificate, AcmeError, Challenges, Store,
    };
    use duanlian_cluster::Cluster;
    use duanlian_server::{AcmeAnswers, Tls};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    fn store_error(e: duanlian_cluster::ClusterError) -> AcmeError {
        AcmeError::Store(e.to_string())
    }

    pub(crate) struct ClusterStore {
        pub(crate) cluster: Arc<Cluster>,
        pub(crate) node: String,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Certificate {
        chain: String,
        key: String,
    }

    fn cert_key(domain: &str) -> String {
        format!("acme.cert.{domain}")
    }

    fn lock_key(domain: &str) -> String {
        format!("acme.lock.{domain}")
    }

    impl Store for ClusterStore {
        async fn account(&self, directory: &str) -> Result<Option<String>, AcmeError> {
            let got = self
                .cluster
                .shared_get("acme.account")
                .await
                .map_err(store_error)?;
            match got {
                Some((record, _)) => account_of(&record, directory).map_err(AcmeError::Store),
                None => Ok(None),
            }
        }

        async fn save_account(&self, directory: &str, json: &str) -> Result<(), AcmeError> {
            let record = account_record(directory, json).map_err(AcmeError::Store)?;
            self.cluster
                .shared_put("acme.account", record)
                .await
                .map_err(store_error)
        }

        async fn validity(&self, domain: &str) -> Option<(i64, i64)> {
            let (bytes, _) = self.cluster.shared_get(&cert_key(domain)).await.ok()??;
            let cert: Certificate = serde_json::from_slice(&bytes).ok()?;
            leaf_validity(cert.chain.as_bytes())
        }

        async fn save_certificate(
            &self,
            domain: &str,
            chain: &str,
            key: &str,
        ) -> Result<(), AcmeError> {
            let value = serde_json::to_vec(&Certificate {
                chain: chain.to_string(),
                key: key.to_string(),
            })
            .map_err(|e| AcmeError::Store(e.to_string()))?;
            self.cluster
                .shared_put(&cert_key(domain), value)
                .await
                .map_err(store_error)
        }

        async fn claim(&self, domain: &str, ttl: Duration) -> bool {
            let now = duanlian_link::now_secs();
            let value = format!("{} {}", now + ttl.as_secs() as i64, self.node).into_bytes();
            match self.cluster.shared_get(&lock_key(domain)).await {
                Ok(None) => self
                    .cluster
                    .shared_create(&lock_key(domain), value)
                    .await
                    .unwrap_or(false),
                Ok(Some((held, revision))) => {
                    let held = String::from_utf8_lossy(&held).into_owned();
                    let (until, owner) = held.split_once(' ').unwrap_or(("0", ""));
                    let lapsed = until.parse::<i64>().map_or(true, |u| u <= now);
                    (lapsed || owner == self.node)
                        && self
                            .cluster
                            .shared_update(&lock_key(domain), value, revision)
                            .await
                            .unwrap_or(false)
                }
                Err(_) => false,
            }
        }

        async fn release(&self, domain: &str) {
            if let Ok(Some((held, _))) = self.cluster.shared_get(&lock_key(domain)).await {
                if String::from_utf8_lossy(&held).ends_with(&format!(" {}", self.node)) {
                    let _ = self.cluster.shared_delete(&lock_key(domain)).await;
                }
            }
        }
    }

    /// Challenge answers go to the bucket, from which every node serves them.
    pub(crate) struct ClusterBoard {
        pub(crate) cluster: Arc<Cluster>,
        pub(crate) local: Board,
    }

    /// Time for every node's watch to see a new challenge before the CA is told to look.
    const SPREAD: Duration = Duration::from_millis(500);

    impl Challenges for ClusterBoard {
        async fn publish(&self, token: &str, key_authorization: &str) {
            self.local.publish(token, key_authorization).await;
            let key = format!("acme.challenge.{token}");
            if let Err(e) = self
                .cluster
                .shared_put(&key, key_authorization.as_bytes().to_vec())
                .await
            {
                tracing::warn!(error = %e, "ACME challenge not shared; only this node answers it");
            }
            tokio::time::sleep(SPREAD).await;
        }

        async fn withdraw(&self, token: &str) {
            self.local.withdraw(token).await;
            let _ = self
                .cluster
                .shared_delete(&format!("acme.challenge.{token}"))
                .await;
        }
    }

    /// Keeps this node's copy of the cluster's certificates and challenge answers: every
    /// certificate into `certs` (then a TLS reload), every challenge into `answers`.
    pub(crate) async fn mirror(
        cluster: Arc<Cluster>,
        certs: PathBuf,
        answers: Arc<AcmeAnswers>,
        tls: Arc<Tls>,
    ) {
        use futures_util::StreamExt as _;
        loop {
            let watch = match cluster.watch_shared("acme.").await {
                Ok(w) => w,
                Err(_) => {
                    // Soon after joining: another node's challenge may already be on its way.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut watch = std::pin::pin!(watch);
            while let Some((key, value)) = watch.next().await {
                if let Some(token) = key.strip_prefix("acme.challenge.") {
                    match value {
                        Some(v) => answers.publish(token, &String::from_utf8_lossy(&v)),
                        None => answers.withdraw(token),
                    }
                } else if let (Some(domain), Some(v)) = (key.strip_prefix("acme.cert."), value) {
                    let Ok(cert) = serde_json::from_slice::<Certificate>(&v) else {
                        continue;
                    };
                    let (certs, tls, domain) = (certs.clone(), tls.clone(), domain.to_string());
                    let _ = tokio::task::spawn_blocking(move || {
                        match write_certificate(&certs, &domain, &cert.chain, &cert.key) {
                            Ok(()) => {
                                let _ = tls.reload();
                            }
                            Err(e) => tracing::warn!(%domain, error = %e, "cluster certificate not written"),
                        }
                    })
                    .await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Cluster mode: the robot and the mirror on the cluster's runtime. Every node runs both; the
/// claims in the bucket make one of them order each domain.
pub(crate) fn spawn_in_cluster(
    runtime: &tokio::runtime::Handle,
    cluster: Arc<duanlian_cluster::Cluster>,
    opts: AcmeOptions,
    answers: Arc<AcmeAnswers>,
    tls: Arc<Tls>,
    health: Arc<Health>,
) {
    let certs = duanlian_acme::certs_dir(&opts.state_dir);
    runtime.spawn(shared::mirror(cluster.clone(), certs, answers.clone(), tls));
    let store = shared::ClusterStore {
        cluster: cluster.clone(),
        node: cluster.options().name.clone(),
    };
    let board = shared::ClusterBoard {
        cluster,
        local: Board(answers),
    };
    // The mirror loads what the robot stores, on this node as on the others.
    let robot = Acme::new(opts, store, board, Box::new(|| {}));
    runtime.spawn(async move {
        when_ready(&health).await;
        robot.run().await
    });
}

/// Returns once the node is ready (listening; in a cluster, caught up): the CA may call as soon
/// as the robot orders.
async fn when_ready(health: &Health) {
    while !health.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A test makes another node order first, so that a challenge crosses nodes.
    tokio::time::sleep(crate::test_hooks::delay(
        "DUANLIAN_TEST_ACME_START_DELAY_MS",
    ))
    .await;
}
