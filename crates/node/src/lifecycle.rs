//! One node, one lifecycle: the signal that asks every part of a node to stop ([`Shutdown`],
//! set by a [`ShutdownTrigger`]) and the set of async tasks the node waits for ([`Tasks`]).
//!
//! Every server of a node takes an already bound listener and a [`Shutdown`], and returns once
//! it has stopped serving; the node spawns them on its one runtime and, on stop, sets the
//! signal and waits until each task has ended. Tests bind port 0 and read the address back.

use anyhow::{Context as _, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Sets the node's [`Shutdown`] signal.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// The node's shutdown signal, as each part sees it (cheap to clone).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal, not set, and what sets it.
pub fn shutdown_signal() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks every part holding the signal to stop (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Returns once a stop is asked for (or the trigger is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|set| *set).await;
    }
}

/// The node's async tasks, by name, waited for on stop.
#[derive(Debug, Default)]
pub struct Tasks(Vec<(&'static str, JoinHandle<Result<()>>)>);

impl Tasks {
    /// Spawns `task` on `runtime` under `name`.
    pub fn spawn(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        name: &'static str,
        task: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        self.0.push((name, runtime.spawn(task)));
    }

    /// Waits until every task has ended; the first error (or panic), named by its task.
    pub async fn join(self) -> Result<()> {
        let mut first = Ok(());
        for (name, task) in self.0 {
            let ended = task
                .await
                .with_context(|| format!("the {name} task panicked"))
                .and_then(|r| r.with_context(|| format!("the {name} task failed")));
            if let (Err(e), Ok(())) = (ended, &first) {
                first = Err(e);
            }
        }
        first
    }
}
