//! Replay protection: a timestamp window plus a bounded cache of nonces.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::{DropReason, Envelope};

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Rejects datagrams whose timestamp is more than `window` away from our clock
/// and nonces already accepted while still inside the window.
///
/// A nonce is remembered until its *timestamp* leaves the window; after that
/// the window check alone rejects a replay, so memory is bounded by the
/// message rate times twice the window. When `capacity` nonces are live the
/// guard refuses new datagrams ([`DropReason::ReplayCacheFull`]) rather than
/// forget one that could still be replayed: it fails closed. Only
/// authenticated datagrams reach the guard, so outsiders cannot fill it.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    by_time: BTreeSet<(u64, u64)>,
    seen: HashSet<u64>,
}

impl ReplayGuard {
    /// A guard accepting timestamps within ±`window`, remembering at most
    /// `capacity` nonces.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity,
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
        }
    }

    /// The accepted clock difference.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// Number of nonces currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks only the timestamp window (used by the client for responses,
    /// which it matches by request id instead of by nonce).
    pub fn in_window(&self, now: SystemTime, timestamp_ms: u64) -> bool {
        unix_ms(now).abs_diff(timestamp_ms) <= self.window_ms
    }

    /// Accepts `env` if fresh and never seen, and remembers its nonce.
    pub fn check(&mut self, now: SystemTime, env: &Envelope) -> Result<(), DropReason> {
        let now_ms = unix_ms(now);
        if now_ms.abs_diff(env.timestamp_ms) > self.window_ms {
            return Err(DropReason::OutsideWindow);
        }
        self.expire(now_ms);
        if self.seen.contains(&env.nonce) {
            return Err(DropReason::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(DropReason::ReplayCacheFull);
        }
        self.seen.insert(env.nonce);
        self.by_time.insert((env.timestamp_ms, env.nonce));
        Ok(())
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(ts, nonce)) = self.by_time.first() {
            if ts.saturating_add(self.window_ms) >= now_ms {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RequestId;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn env(ts: SystemTime, nonce: u64) -> Envelope {
        Envelope {
            timestamp_ms: unix_ms(ts),
            nonce,
            request_id: RequestId(1),
        }
    }

    #[test]
    fn window_edges() {
        let mut g = ReplayGuard::new(Duration::from_secs(30), 100);
        assert_eq!(g.check(at(100), &env(at(70), 1)), Ok(()));
        assert_eq!(g.check(at(100), &env(at(130), 2)), Ok(()));
        assert_eq!(
            g.check(at(100), &env(at(69), 3)),
            Err(DropReason::OutsideWindow)
        );
        assert_eq!(
            g.check(at(100), &env(at(131), 4)),
            Err(DropReason::OutsideWindow)
        );
    }

    #[test]
    fn replay_rejected_until_window_passes() {
        let mut g = ReplayGuard::new(Duration::from_secs(30), 100);
        let e = env(at(0), 7);
        assert_eq!(g.check(at(0), &e), Ok(()));
        assert_eq!(g.check(at(1), &e), Err(DropReason::Replayed));
        assert_eq!(g.check(at(30), &e), Err(DropReason::Replayed));
        // Once the timestamp is out of the window the nonce is forgotten, and
        // the window check takes over.
        assert_eq!(g.check(at(31), &e), Err(DropReason::OutsideWindow));
        assert_eq!(g.check(at(31), &env(at(31), 8)), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn bounded_and_fails_closed() {
        let mut g = ReplayGuard::new(Duration::from_secs(30), 3);
        for n in 0..3 {
            assert_eq!(g.check(at(0), &env(at(0), n)), Ok(()));
        }
        assert_eq!(
            g.check(at(0), &env(at(0), 99)),
            Err(DropReason::ReplayCacheFull)
        );
        // Old nonces expire, making room.
        assert_eq!(g.check(at(31), &env(at(31), 99)), Ok(()));
        assert_eq!(g.len(), 1);
    }
}
