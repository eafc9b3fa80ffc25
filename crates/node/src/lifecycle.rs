//! One node, one lifecycle: the signal that asks every part of a node to stop ([`Shutdown`],
//! set by a [`ShutdownTrigger`]) and the set of async tasks the node waits for ([`Tasks`]).
//!
//! Every server of a node takes an already bound listener and a [`Shutdown`], and returns once
//! it has stopped serving; the node spawns them on its one runtime and, on stop, sets the
//! signal and waits until each task has ended. Tests bind port 0 and read the address back.
//!
//! The blocking stages (the ingest's consumer and decoder, the detection thread, the store's
//! writer) hand the node their loops ([`StageLoop`]); the node starts each on a thread
//! ([`StageThread`]) once every fallible part of its start has succeeded, and on stop asks each
//! stage to end and joins its thread, in order. Nothing is joined on drop.

use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::NodeError;

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
pub struct Tasks(Vec<(&'static str, JoinHandle<Result<(), NodeError>>)>);

impl Tasks {
    /// Spawns `task` on `runtime` under `name`.
    pub fn spawn(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        name: &'static str,
        task: impl Future<Output = Result<(), NodeError>> + Send + 'static,
    ) {
        self.0.push((name, runtime.spawn(task)));
    }

    /// Waits until every task has ended; the first error (or panic), named by its task.
    pub async fn join(self) -> Result<(), NodeError> {
        let mut first = Ok(());
        for (name, task) in self.0 {
            let ended = match task.await {
                Err(_) => Err(NodeError::Panicked(name)),
                Ok(r) => r.map_err(|e| NodeError::Failed { part: name, source: Box::new(e) }),
            };
            if let (Err(e), Ok(())) = (ended, &first) {
                first = Err(e);
            }
        }
        first
    }
}

/// A blocking stage's loop (the detection thread, the store's writer, the ingest's consumer
/// and decoder), handed to the node to run on a thread of its own ([`StageThread::spawn`]).
/// Dropped without running, it never starts.
pub struct StageLoop<T> {
    name: &'static str,
    body: Box<dyn FnOnce() -> Result<T, NodeError> + Send>,
}

impl<T> StageLoop<T> {
    /// The loop `body` of the stage `name` (its thread is called `tessera-{name}`).
    pub fn new(name: &'static str, body: impl FnOnce() -> Result<T, NodeError> + Send + 'static) -> Self {
        Self { name, body: Box::new(body) }
    }

    /// The stage's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A stage's running thread. It ends when its stage is asked to stop (or fails), and is
/// joined explicitly ([`StageThread::join`]); dropping it does not wait.
pub struct StageThread<T> {
    name: &'static str,
    handle: std::thread::JoinHandle<(Result<T, NodeError>, Instant)>,
}

/// A stage that ended with an error: which, when, and why.
#[derive(Debug)]
pub struct StageFailure {
    /// The stage's name.
    pub stage: &'static str,
    /// When it ended: of several failures, the earliest is the cause of the others.
    pub at: Instant,
    /// Why.
    pub error: NodeError,
}

impl<T: Send + 'static> StageThread<T> {
    /// Starts `stage` on a new thread.
    pub fn spawn(stage: StageLoop<T>) -> Result<Self, NodeError> {
        let StageLoop { name, body } = stage;
        let handle = std::thread::Builder::new()
            .name(format!("tessera-{name}"))
            .spawn(move || (body(), Instant::now()))
            .map_err(|source| NodeError::Io { what: "starting a stage's thread", source })?;
        Ok(Self { name, handle })
    }

    /// True once the loop has ended (asked to, or on an error).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits until the loop has ended; its value, or its failure.
    pub fn join(self) -> Result<T, Box<StageFailure>> {
        let name = self.name;
        match self.handle.join() {
            Ok((Ok(value), _)) => Ok(value),
            Ok((Err(error), at)) => Err(Box::new(StageFailure { stage: name, at, error })),
            Err(_) => Err(Box::new(StageFailure { stage: name, at: Instant::now(), error: NodeError::Panicked(name) })),
        }
    }
}

impl StageFailure {
    /// The error, named by its stage.
    pub fn into_error(self) -> NodeError {
        match self.error {
            e @ NodeError::Panicked(_) => e,
            e => NodeError::Failed { part: self.stage, source: Box::new(e) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_thread_returns_its_value_or_its_named_failure() {
        let ok = StageThread::spawn(StageLoop::new("adds", || Ok(1 + 1))).unwrap();
        assert_eq!(ok.join().unwrap(), 2);
        let failed = StageThread::spawn(StageLoop::<()>::new("fails", || Err(NodeError::Stopped("store")))).unwrap();
        let failure = failed.join().unwrap_err();
        assert_eq!(failure.stage, "fails");
        assert_eq!(tessera_core::error_chain(&(*failure).into_error()), "the fails failed: the store has stopped");
        let panicked = StageThread::spawn(StageLoop::<()>::new("panics", || panic!("on purpose"))).unwrap();
        assert!(matches!(panicked.join().unwrap_err().error, NodeError::Panicked("panics")));
    }

    #[test]
    fn a_loop_dropped_unrun_never_starts() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        drop(StageLoop::new("never", move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
