//! Reclaims departed entries in the background, one user at a time.
//!
//! Each bucket plans a visit at its next departure; a tokio timer wheel ([`DelayQueue`]) holds
//! the visits, so the work done is proportional to what departs, there is no scan over every
//! entry, and the only lock taken is one shard's, for one bucket. A visit that no longer
//! matches its bucket's plan (the bucket was replanned or replaced) is dropped, and a rewrite
//! keeps the plan (and so the visit already queued) unless it departs sooner, so visits never
//! pile up, however often one user is written. Time is tokio's: tests drive it with `pause`/`advance`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use super::clock::Tick;

/// The timer wheel holds at most about two years; a farther visit is made early and replanned.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The store side of the reaper.
pub(crate) trait Reap<U>: Send + Sync + 'static {
    /// Visits the bucket of `user` if it still plans a visit at `planned` (whatever its
    /// generation: a rewritten bucket keeps its plan); returns when to come back, on the store's
    /// clock and as a timer deadline.
    fn reap(&self, user: &U, planned: Tick) -> Option<(Tick, Instant)>;

    /// Called in a runtime the store had no reaper in yet, before its first visit is planned.
    fn entered_runtime(&self);
}

struct Visit<U> {
    user: U,
    /// The bucket's plan, which identifies the visit.
    planned: Tick,
    /// When the timer fires.
    at: Instant,
}

struct Running<U> {
    visits: mpsc::UnboundedSender<Visit<U>>,
    epoch: u32,
}

/// A handle to the reaper task, started on first use inside a tokio runtime (and again if that
/// runtime shuts down), with a new epoch each time.
///
/// A store used outside any runtime has no reaper; its entries still never outlive their TTL on
/// reads and are evicted under capacity pressure, and the first write inside a runtime plans
/// their visits.
pub(crate) struct Reaper<U> {
    running: ArcSwapOption<Running<U>>,
    starting: parking_lot::Mutex<u32>,
}

impl<U> Default for Reaper<U> {
    fn default() -> Self {
        Self {
            running: ArcSwapOption::empty(),
            starting: parking_lot::Mutex::new(0),
        }
    }
}

impl<U: Send + Sync + 'static> Reaper<U> {
    /// The epoch of the running reaper, starting one in the current runtime if none runs;
    /// `None` outside a runtime.
    pub(crate) fn running(&self, owner: &Arc<dyn Reap<U>>) -> Option<u32> {
        if let Some(running) = self.running.load().as_deref() {
            if !running.visits.is_closed() {
                return Some(running.epoch);
            }
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut epochs = self.starting.lock();
        if let Some(running) = self.running.load().as_deref() {
            if !running.visits.is_closed() {
                return Some(running.epoch);
            }
        }
        owner.entered_runtime();
        *epochs = epochs.wrapping_add(1).max(1);
        let (visits, receiver) = mpsc::unbounded_channel();
        runtime.spawn(run(Arc::downgrade(owner), receiver));
        self.running.store(Some(Arc::new(Running {
            visits,
            epoch: *epochs,
        })));
        Some(*epochs)
    }

    /// The epoch of the running reaper, without starting one.
    pub(crate) fn epoch(&self) -> Option<u32> {
        self.running.load().as_deref().map(|running| running.epoch)
    }

    /// Queues a visit to `user`'s bucket, planned for `planned`, at `at`. Lost if
    /// the reaper has died since [`running`](Self::running); the bucket's plan then names a dead
    /// epoch and the next write plans again.
    pub(crate) fn schedule(&self, user: U, planned: Tick, at: Instant) {
        if let Some(running) = self.running.load().as_deref() {
            let _ = running.visits.send(Visit { user, planned, at });
        }
    }
}

async fn run<U: 'static>(owner: Weak<dyn Reap<U>>, mut visits: mpsc::UnboundedReceiver<Visit<U>>) {
    let mut queue: DelayQueue<Visit<U>> = DelayQueue::new();
    let enqueue = |queue: &mut DelayQueue<Visit<U>>, visit: Visit<U>| {
        let when = visit.at.min(Instant::now() + LONGEST_WAIT);
        queue.insert_at(visit, when);
    };
    loop {
        tokio::select! {
            visit = visits.recv() => match visit {
                Some(visit) => enqueue(&mut queue, visit),
                None => return,
            },
            Some(due) = std::future::poll_fn(|cx| queue.poll_expired(cx)) => {
                let Some(owner) = owner.upgrade() else { return };
                let visit = due.into_inner();
                if let Some((planned, at)) = owner.reap(&visit.user, visit.planned) {
                    enqueue(&mut queue, Visit { planned, at, ..visit });
                }
            }
        }
    }
}
