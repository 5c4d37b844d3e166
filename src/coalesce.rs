//! Single-flight: concurrent misses for one key share one fetch.
//!
//! The first caller for a key becomes the [`Leader`] and fetches; everyone who arrives while it
//! is in flight becomes a [`Waiter`] and receives a clone of the leader's outcome. If the leader
//! goes away without an outcome (its future was dropped, its client hung up), waiters are told so
//! and one of them leads the next attempt: nobody waits forever on a flight nobody drives.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// The flights in progress, by key.
pub(crate) struct Flights<K, T> {
    in_flight: Mutex<HashMap<K, watch::Receiver<Option<T>>>>,
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

/// What a caller of [`Flights::join`] must do.
pub(crate) enum Role<K: Hash + Eq, T> {
    /// Fetch, then [`Leader::complete`].
    Leader(Leader<K, T>),
    /// Wait for the leader's outcome.
    Waiter(Waiter<T>),
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// Joins the flight for `key`, starting one if none is in progress.
    pub(crate) fn join(self: &Arc<Self>, key: K) -> Role<K, T> {
        let mut in_flight = self.in_flight.lock();
        if let Some(receiver) = in_flight.get(&key) {
            return Role::Waiter(Waiter {
                receiver: receiver.clone(),
            });
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key.clone(), receiver);
        Role::Leader(Leader {
            flights: self.clone(),
            key: Some(key),
            sender,
        })
    }

    /// Flights in progress (for tests and stats).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_flight.lock().len()
    }
}

/// The caller that fetches for everyone.
pub(crate) struct Leader<K: Hash + Eq, T> {
    flights: Arc<Flights<K, T>>,
    key: Option<K>,
    sender: watch::Sender<Option<T>>,
}

impl<K: Hash + Eq, T> Leader<K, T> {
    /// Hands `outcome` to every waiter and ends the flight.
    pub(crate) fn complete(mut self, outcome: T) {
        // The flight ends before its waiters wake: one that cannot use the outcome (another
        // `Vary` variant) and joins again must find a new flight, not this finished one.
        self.end();
        self.sender.send_replace(Some(outcome));
    }

    fn end(&mut self) {
        if let Some(key) = self.key.take() {
            let mut in_flight = self.flights.in_flight.lock();
            if in_flight
                .get(&key)
                .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
            {
                in_flight.remove(&key);
            }
        }
    }
}

impl<K: Hash + Eq, T> Drop for Leader<K, T> {
    fn drop(&mut self) {
        // Without an outcome the sender closes with the leader, and waiters see `None`.
        self.end();
    }
}

/// A caller waiting on someone else's fetch.
pub(crate) struct Waiter<T> {
    receiver: watch::Receiver<Option<T>>,
}

impl<T: Clone> Waiter<T> {
    /// The leader's outcome, or `None` if the leader went away without one.
    pub(crate) async fn wait(mut self) -> Option<T> {
        match self.receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_the_flight_ends() {
        let flights = Arc::new(Flights::<&str, u32>::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first is leader")
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("second waits")
        };
        let waiting = tokio::spawn(waiter.wait());
        leader.complete(7);
        assert_eq!(waiting.await.unwrap(), Some(7));
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "a new flight starts"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let flights = Arc::new(Flights::<&str, u32>::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert_eq!(waiter.wait().await, None);
        assert_eq!(flights.len(), 0);
    }
}
