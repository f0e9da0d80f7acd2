//! Completion of a submitted batch: each part gets its result from the log writer (after its
//! record is durable), and the submitter is woken once when the last part is in.

use crate::core::{Outcome, Reason, Seq};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// The result of a movement (or of one shard's part of it): its outcome and the sequence number
/// of the record that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovementResult {
    /// The sequence number of the record that decided it (for a retry: of the first attempt).
    pub seq: Option<Seq>,
    pub outcome: Outcome,
}

impl MovementResult {
    pub const SHUTTING_DOWN: MovementResult = MovementResult { seq: None, outcome: Err(Reason::ShuttingDown) };
}

/// Where the submitter waits for every part's result.
type Waiter = oneshot::Sender<Vec<MovementResult>>;

/// Shared between a submitter and the threads completing its parts.
pub struct BatchState {
    remaining: AtomicUsize,
    inner: Mutex<(Vec<MovementResult>, Option<Waiter>)>,
}

impl BatchState {
    /// A batch of `parts` parts; the receiver gets every part's result when the last is in.
    pub fn new(parts: usize) -> (BatchState, oneshot::Receiver<Vec<MovementResult>>) {
        let (tx, rx) = oneshot::channel();
        let results = vec![MovementResult::SHUTTING_DOWN; parts];
        let state = BatchState { remaining: AtomicUsize::new(parts), inner: Mutex::new((results, Some(tx))) };
        if parts == 0 {
            state.send();
        }
        (state, rx)
    }

    pub fn complete(&self, part: u32, result: MovementResult) {
        self.complete_all(&[(part, result)]);
    }

    /// Completes several parts under one lock.
    pub fn complete_all(&self, parts: &[(u32, MovementResult)]) {
        {
            let mut inner = self.inner.lock().unwrap();
            for &(part, result) in parts {
                inner.0[part as usize] = result;
            }
        }
        if self.remaining.fetch_sub(parts.len(), Ordering::AcqRel) == parts.len() {
            self.send();
        }
    }

    fn send(&self) {
        let mut inner = self.inner.lock().unwrap();
        let results = std::mem::take(&mut inner.0);
        if let Some(tx) = inner.1.take() {
            let _ = tx.send(results); // the submitter may have gone; nothing to tell then
        }
    }
}
