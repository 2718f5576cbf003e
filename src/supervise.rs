//! systemd integration: READY once forwarding runs, and WATCHDOG pings that
//! follow the fast path only. A stuck slow path costs the cache, never the
//! segment, so it must not get the bridge restarted; a stuck forwarding
//! lcore must.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::SharedCounters;
use sd_notify::NotifyState;

/// The watchdog thread (only when systemd asked for one).
pub(crate) struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Tells systemd bootcache is ready (a no-op outside systemd) and, if
    /// `WatchdogSec=` is set, pings at half its period while every
    /// forwarding lcore's loop advances.
    pub(crate) fn start(quit: Arc<AtomicBool>, lcores: Vec<Arc<SharedCounters>>) -> Watchdog {
        let _ = sd_notify::notify(
            false,
            &[NotifyState::Ready, NotifyState::Status("forwarding")],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = watchdog_usec().map(|usec| {
            let period = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut last: Vec<u64> = lcores.iter().map(|c| c.ticks()).collect();
                let mut bypassing = false;
                while !stop.load(Relaxed) && !quit.load(Relaxed) {
                    std::thread::sleep(period);
                    let now: Vec<u64> = lcores.iter().map(|c| c.ticks()).collect();
                    if now.iter().zip(&last).all(|(n, l)| n != l) {
                        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                    } else {
                        log::error!("a forwarding lcore stopped advancing: no watchdog ping");
                    }
                    last = now;
                    let b = lcores.iter().any(|c| c.snapshot().bypassing);
                    if b != bypassing {
                        bypassing = b;
                        let status = if b {
                            "forwarding only: the slow path is bypassed"
                        } else {
                            "forwarding"
                        };
                        let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
                    }
                }
            })
        });
        Watchdog { stop, thread }
    }
}

/// `WATCHDOG_USEC`, as systemd's `sd_watchdog_enabled` reads it: set, and
/// `WATCHDOG_PID` either unset or this process.
fn watchdog_usec() -> Option<u64> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse() != Ok(std::process::id()) => None,
        _ => Some(usec),
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
