//! The slow-path worker: runs on the main lcore, owns the sans-I/O cache
//! logic, the filter writer and the clock. It drains the redirect ring, feeds
//! frames and time to the cache logic, turns its filter updates into a
//! published filter table, and prints the operator's statistics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use dataplane::{
    FilterWriter, InjectRing, Injected, RedirectRing, Redirected, SharedCounters,
    SharedFilterCounters, StaticRule,
};
use slowpath::{CacheLogic, FilterUpdate};

/// Frames handled between checks of the clock, timers and the quit flag.
const BATCH: usize = 256;
/// The image map is saved at most this often (and at exit): a boot storm
/// changes it with every request, and each save is a write and an fsync.
const SAVE_PERIOD: Duration = Duration::from_secs(1);
/// Timers (transfer idle timeouts, fragment timeouts) are checked this often:
/// their periods are seconds, and finding the next deadline walks every
/// transfer, which is too much to do on every pass of a busy loop.
const TIMER_PERIOD: Duration = Duration::from_millis(10);
/// Sleep when the ring is empty: the slow path is not latency-critical, and
/// on two CPUs it shares its core with others.
const IDLE_SLEEP: Duration = Duration::from_micros(200);
/// For this long after the last frame the worker sleeps only BUSY_SLEEP
/// when idle: a lock-step TFTP client served from the cache waits for every
/// DATA, and a 200 us sleep per ACK made warm reads slower than the origin
/// (bench-serve on af_packet veths). A short sleep, not a yield: a yielding
/// thread waits behind a CPU-bound neighbour (qemu) for a whole time slice,
/// a waking sleeper runs at once.
const BUSY_WINDOW: Duration = Duration::from_millis(2);
const BUSY_SLEEP: Duration = Duration::from_micros(20);

/// What the worker needs from the control thread.
pub(crate) struct Worker {
    pub(crate) logic: CacheLogic,
    pub(crate) filter: FilterWriter,
    pub(crate) ring: Arc<RedirectRing>,
    pub(crate) quit: Arc<AtomicBool>,
    pub(crate) bridge_counters: Arc<SharedCounters>,
    pub(crate) filter_counters: Arc<SharedFilterCounters>,
    pub(crate) stats_interval: Option<Duration>,
    /// Testing aid: sleep this long per redirected frame (throttles the slow path).
    pub(crate) throttle: Option<Duration>,
    /// Serving cache hits, when enabled (`serve_max_age`).
    pub(crate) serve: Option<crate::serve::Serve>,
    /// Where trapped frames that are not served go back to the fast path.
    pub(crate) inject: Arc<InjectRing>,
    /// Trapped frames that could not be handed back to the fast path.
    pub(crate) reinject_drops: u64,
}

impl Worker {
    /// Runs until the quit flag is set; the bridge may still be running.
    pub(crate) fn run(&mut self) -> Result<()> {
        let mut next_stats = self.stats_interval.map(|d| Instant::now() + d);
        let mut next_save = Instant::now() + SAVE_PERIOD;
        let mut next_timer_check = Instant::now();
        let mut last_busy = Instant::now();
        while !self.quit.load(Ordering::Relaxed) {
            let handled = self.handle_batch();
            let now = Instant::now();
            if let Some(s) = &mut self.serve {
                let wall = SystemTime::now();
                s.handle_timers(now, &mut self.logic, &mut self.filter);
                for r in s.poll_agent(now, wall, &mut self.logic, &mut self.filter) {
                    self.forward_trapped(now, wall, r);
                }
            }
            if now >= next_timer_check {
                if self.logic.poll_timeout().is_some_and(|t| t <= now) {
                    self.logic.handle_timeout(now);
                }
                next_timer_check = now + TIMER_PERIOD;
            }
            self.apply_filter_updates();
            if let (Some(t), Some(d)) = (next_stats, self.stats_interval) {
                if now >= t {
                    println!("{}", self.stats_line());
                    next_stats = Some(now + d);
                }
            }
            if now >= next_save {
                self.save_image_map()?;
                next_save = now + SAVE_PERIOD;
            }
            if handled > 0 {
                last_busy = now;
            } else if now.duration_since(last_busy) < BUSY_WINDOW {
                std::thread::sleep(BUSY_SLEEP);
            } else {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
        Ok(())
    }

    /// After the bridge stopped: handle what is still queued, then save.
    pub(crate) fn finish(&mut self) -> Result<()> {
        while self.handle_batch() > 0 {}
        self.apply_filter_updates();
        self.save_image_map()
    }

    /// The image map is saved (atomically) whenever it changed; writes are
    /// rare next to the frames that cause them.
    fn save_image_map(&self) -> Result<()> {
        let map = self.logic.image_map();
        if map.is_dirty() {
            map.save().context("saving the image map")?;
        }
        Ok(())
    }

    fn handle_batch(&mut self) -> usize {
        let mut n = 0;
        while n < BATCH {
            let Some(r) = self.ring.pop() else { break };
            if let Some(d) = self.throttle {
                std::thread::sleep(d);
            }
            let (now, wall) = (Instant::now(), SystemTime::now());
            if r.trapped {
                let back = match &mut self.serve {
                    Some(s) => s.handle_trapped(now, wall, r, &mut self.logic, &mut self.filter),
                    None => Some(r),
                };
                if let Some(r) = back {
                    self.forward_trapped(now, wall, r);
                }
            } else {
                self.logic
                    .handle_frame(now, wall, r.side == 0, r.mbuf.data());
            }
            n += 1;
        }
        n
    }

    /// A trapped frame that is not ours to answer goes on to the origin
    /// unchanged (the same buffer), and the cache fill sees it.
    fn forward_trapped(&mut self, now: Instant, wall: SystemTime, r: Redirected) {
        self.logic
            .handle_frame(now, wall, r.side == 0, r.mbuf.data());
        if self
            .inject
            .push(Injected {
                mbuf: r.mbuf,
                side: r.side ^ 1,
            })
            .is_err()
        {
            self.reinject_drops += 1;
        }
    }

    fn apply_filter_updates(&mut self) {
        let mut changed = false;
        while let Some(u) = self.logic.poll_filter_update() {
            changed = true;
            let res = match u {
                FilterUpdate::Expect { server, client } => {
                    self.filter.expect(server.into(), client.into()).map(drop)
                }
                FilterUpdate::Pin { server, client } => {
                    self.filter.pin(server.into(), client.into()).map(drop)
                }
                FilterUpdate::Remove { server, client } => {
                    self.filter.remove(server.into(), client.into());
                    Ok(())
                }
            };
            if let Err(e) = res {
                log::warn!("header filter: {e}");
            }
        }
        if changed {
            self.filter.publish();
        }
    }

    /// One line of everything the operator watches.
    pub(crate) fn stats_line(&self) -> String {
        let b = self.bridge_counters.snapshot();
        let f = self.filter_counters.snapshot();
        let [c, s] = &b.ports;
        let r = &b.redirect;
        let rules = StaticRule::ALL
            .iter()
            .map(|rule| format!("{}={}", rule.name(), f.static_hits(*rule)))
            .chain(std::iter::once(format!(
                "transfer-rules={}",
                f.dynamic_total()
            )))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "stats: client rx={} tx={} drop={} | server rx={} tx={} drop={} | redirect copied={} trapped={} \
             copy_drops={} trap_drops={} injected={} | rules {rules} | {}",
            c.rx_packets,
            c.tx_packets,
            c.tx_dropped,
            s.rx_packets,
            s.tx_packets,
            s.tx_dropped,
            r.copied,
            r.trapped,
            r.copy_drops,
            r.trap_drops,
            r.injected,
            self.slowpath_counters(),
        )
    }

    /// The slow path's counters as `key=value` words.
    fn slowpath_counters(&self) -> String {
        let k = self.logic.counters();
        let b = k.bounds_hit();
        let mut out = format!(
            "transfers seen={} active={} completed={} size_probes={} discarded={}",
            k.transfers_seen(),
            self.logic.active_transfers(),
            k.transfers_completed,
            k.size_probes,
            k.discarded.total()
        );
        for (reason, n) in k.discarded.iter().filter(|(_, n)| *n > 0) {
            out += &format!(" discarded_{}={n}", reason.as_str());
        }
        let d = &k.defrag;
        out += &format!(
            " | files cached={} refreshed={} replaced={} bytes_cached={} in_store={} | bounds transfers={} file_size={} quota={} \
             | origin_bytes={} | defrag fragments={} reassembled={} dropped={}",
            k.files_cached,
            k.files_refreshed,
            k.files_replaced,
            k.bytes_cached,
            self.logic.filestore().len(),
            b.transfers,
            b.file_size,
            b.quota,
            k.origin_bytes,
            d.fragments,
            d.reassembled,
            d.dropped.total(),
        );
        for (reason, n) in d.dropped.iter().filter(|(_, n)| *n > 0) {
            out += &format!(" defrag_{}={n}", reason.name());
        }
        out += &format!(
            " | dhcp={} bad_checksum={}",
            k.dhcp_messages, k.bad_checksum
        );
        if let Some(s) = &self.serve {
            let c = &s.counters;
            out += &format!(
                " | serve hits={} misses={} stale={} validated_current={} agent_unreachable={} active={} completed={} size_probes={} client_errors={} timeouts={} aborted={} served_bytes={} frames={} frame_drops={} reinject_drops={}",
                c.hits,
                c.misses,
                c.stale,
                c.validated_current,
                c.agent_unreachable,
                s.active(),
                c.completed,
                c.size_probes,
                c.client_errors,
                c.timeouts,
                c.aborted,
                c.served_bytes,
                c.frames,
                c.frame_drops,
                self.reinject_drops
            );
            if let Some(a) = &s.addressed {
                let c = &a.counters;
                let arp = a.arp_counters();
                out += &format!(
                    " | addressed requests={} fetches={} fetch_joins={} fetches_active={} fetches_completed={} fetches_failed={} fetched_bytes={} errors_sent={} pings={} dropped={} arp_answered={} arp_requests={} arp_failed={}",
                    c.requests,
                    c.fetches,
                    c.fetch_joins,
                    a.active_fetches(),
                    c.fetches_completed,
                    c.fetches_failed,
                    c.fetched_bytes,
                    c.errors_sent,
                    c.pings,
                    c.dropped,
                    arp.requests_answered,
                    arp.requests_sent,
                    arp.failed,
                );
            }
        }
        out
    }
}
