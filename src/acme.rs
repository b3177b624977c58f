//! Automatic certificates: the ACME robot run beside the node, its challenge answers served by
//! the redirect listener, each new certificate loaded by the TLS listener.
use anyhow::{Context, Result};
use duanlian_acme::{Acme, AcmeOptions, Challenges};
use duanlian_server::{AcmeAnswers, Health, Tls};
use std::sync::Arc;

/// The redirect listener's challenge answers, as the robot sees them.
struct Board(Arc<AcmeAnswers>);

impl Challenges for Board {
    fn publish(&self, token: &str, key_authorization: &str) {
        self.0.publish(token, key_authorization);
    }

    fn withdraw(&self, token: &str) {
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
    let robot = Acme::new(opts, Arc::new(Board(answers)), on_issued);
    std::thread::Builder::new()
        .name("duanlian-acme".into())
        .spawn(move || {
            while !health.is_ready() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            rt.block_on(robot.run())
        })
        .context("starting the ACME thread")?;
    Ok(())
}
