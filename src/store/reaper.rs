//! Reclaims departed entries in the background, one user at a time.
//!
//! Each bucket asks for a visit at its next departure; a tokio timer wheel
//! ([`DelayQueue`]) holds the visits, so the work done is proportional to what departs, there is
//! no scan over every entry, and the only lock taken is one shard's, for one bucket. Time is
//! tokio's, so tests drive it with `tokio::time::pause`/`advance`.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

/// The store side of the reaper.
pub(crate) trait Reap<U>: Send + Sync + 'static {
    /// Visits the bucket of `user` if it still has `generation`; returns when to come back.
    fn reap(&self, user: &U, generation: u64, now: Instant) -> Option<Instant>;
}

struct Visit<U> {
    user: U,
    generation: u64,
    at: Instant,
}

/// A handle to the reaper task, started on first use inside a tokio runtime.
///
/// A store used outside any runtime has no reaper; its entries still never outlive their TTL on
/// reads and are evicted under capacity pressure.
pub(crate) struct Reaper<U> {
    sender: ArcSwapOption<mpsc::UnboundedSender<Visit<U>>>,
    starting: parking_lot::Mutex<()>,
}

impl<U> Default for Reaper<U> {
    fn default() -> Self {
        Self {
            sender: ArcSwapOption::empty(),
            starting: parking_lot::Mutex::new(()),
        }
    }
}

impl<U: Send + Sync + 'static> Reaper<U> {
    /// Asks for a visit to `user`'s bucket `generation` at `at`.
    pub(crate) fn schedule(&self, owner: &Arc<dyn Reap<U>>, user: U, generation: u64, at: Instant) {
        let visit = Visit {
            user,
            generation,
            at,
        };
        let visit = match self.sender.load().as_deref() {
            Some(sender) => match sender.send(visit) {
                Ok(()) => return,
                // The runtime that ran the reaper has shut down; start another below.
                Err(mpsc::error::SendError(visit)) => visit,
            },
            None => visit,
        };
        let _starting = self.starting.lock();
        if let Some(sender) = self.sender.load().as_deref() {
            if !sender.is_closed() {
                let _ = sender.send(visit);
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(visit);
        runtime.spawn(run(Arc::downgrade(owner), receiver));
        self.sender.store(Some(Arc::new(sender)));
    }
}

async fn run<U: 'static>(owner: Weak<dyn Reap<U>>, mut visits: mpsc::UnboundedReceiver<Visit<U>>) {
    let mut queue: DelayQueue<(U, u64)> = DelayQueue::new();
    loop {
        tokio::select! {
            visit = visits.recv() => match visit {
                Some(v) => {
                    queue.insert_at((v.user, v.generation), v.at);
                }
                None => return,
            },
            Some(due) = std::future::poll_fn(|cx| queue.poll_expired(cx)) => {
                let Some(owner) = owner.upgrade() else { return };
                let (user, generation) = due.into_inner();
                if let Some(next) = owner.reap(&user, generation, Instant::now()) {
                    queue.insert_at((user, generation), next);
                }
            }
        }
    }
}
