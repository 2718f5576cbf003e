//! The slow-path worker: runs on the main lcore, owns the sans-I/O cache
//! logic, the filter writer and the clock. It drains the redirect rings (one
//! per forwarding lcore, merged in arrival order), feeds frames and time to
//! the cache logic, turns its filter updates into a published filter table,
//! and prints the operator's statistics.
//!
//! **Fail open.** It beats the fast path's heartbeat once per pass. A cache
//! that cannot be written (disk full, read-only, image map not saved) puts it
//! in degraded mode: the fast path forwards only (nothing copied or trapped),
//! a log line and the `degraded` counters say why, and every
//! [`RETRY_PERIOD`] it probes the cache directory and resumes when writes
//! work again. A panic is caught: the fast path forwards only meanwhile, the
//! cache is reopened from disk and the worker goes on. Only the operator's
//! signal ends it.
//!
//! **Reload.** On SIGHUP it reads the configuration again between two
//! batches and applies what can change live (see `src/reload.rs`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use std::borrow::Cow;

use bootcache_metrics::{Show, Snapshot};
use dataplane::{
    BridgeCounters, FilterSnapshot, FilterWriter, InjectRing, Injected, PortCounters,
    RedirectCounters, RedirectRx, Redirected, SharedCounters, SharedFilterCounters, SlowPathHealth,
    StaticRule,
};
use slowpath::{CacheError, CacheLogic, DiscardReason, FilterUpdate};

use crate::stats;

/// Frames handled between checks of the clock, timers and the quit flag.
const BATCH: usize = 256;
/// The image map's changes are handed to the cache's writer thread at most
/// this often (and at exit): a boot storm changes it with every request,
/// and one record per changed client a second is plenty.
const SAVE_PERIOD: Duration = Duration::from_secs(1);
/// Timers (transfer idle timeouts, fragment timeouts) are checked this often:
/// their periods are seconds, and finding the next deadline walks every
/// transfer, which is too much to do on every pass of a busy loop.
const TIMER_PERIOD: Duration = Duration::from_millis(10);
/// Sleep when the rings are empty: the slow path is not latency-critical
/// (copies wait in the ring; a trapped frame starts the busy window), and a
/// slow path that wakes often takes time from whatever shares its CPU (on
/// this VM each wake-up also costs a hypervisor exit, and the bench's 10 kpps
/// p99 through the bridge was 29 µs against testpmd's 4 µs at 5,000
/// wake-ups a second). The sleep starts at IDLE_SLEEP and doubles while
/// nothing arrives, up to IDLE_SLEEP_MAX: ~200 wake-ups a second when idle.
/// Copies alone (cache fill: nobody waits for them) do not reset it: each
/// wake-up drains what accumulated, and the sleep halves when a wake-up
/// found more than an eighth of the ring (so a fast transfer never fills
/// it) and doubles when it found less than a 32nd.
const IDLE_SLEEP: Duration = Duration::from_micros(200);
const IDLE_SLEEP_MIN: Duration = Duration::from_micros(20);
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(5);
/// For this long after the last trapped frame, and while serving sessions
/// are active, the worker sleeps only BUSY_SLEEP when idle: a lock-step
/// TFTP client served from the cache waits for every DATA, and a 200 us
/// sleep per ACK made warm reads slower than the origin (bench-serve on
/// af_packet veths). A short sleep, not a yield: a yielding thread waits
/// behind a CPU-bound neighbour (qemu) for a whole time slice, a waking
/// sleeper runs at once. Copies (cache fill) do not start the window: nobody
/// waits for them, and after every copied frame it woke the slow path
/// ~20,000 times a second, each wake-up taking the hypervisor's time from
/// whatever shares the CPU (0.62x testpmd in bench-forward's rule scenario).
///
/// The kernel stretches every sleep by the thread's timer slack (50 us by
/// default, which made the 20 us sleep 60-87 us, paid once per block of a
/// lock-step read): the worker sets its slack to 1 ns ([`low_timer_slack`]).
///
/// While serving sessions are active the worker does not sleep at all: a
/// lock-step client waits for each DATA. It yields between polls, so that
/// the client or the origin sharing its CPU runs at once when it has work,
/// and that CPU never idles (on this VM, waking an idle vCPU costs tens of
/// microseconds); with `--slowpath-poll` (the slow path has a CPU of its
/// own) it spins. Measured with bench-serve --mode warm, 16 MiB, curl 1428
/// (medians of 5; README): sleeping 1.66 s, ACK-to-DATA p50 28.7 us;
/// spinning 0.36 s, 8.2 us (the spinner took the client's CPU); yielding
/// 0.19 s, 3.2 us.
///
/// A yield hands the CPU to a CPU-bound neighbour for a whole time slice
/// (a TCG qemu PXE client: p50 6.8 ms a block, the warm boot never ended),
/// while a waking sleeper preempts it. So a yield that took longer than
/// YIELD_STOLEN makes the worker sleep BUSY_SLEEP instead for YIELD_BACKOFF,
/// then try yielding again.
const BUSY_WINDOW: Duration = Duration::from_millis(2);
const BUSY_SLEEP: Duration = Duration::from_micros(20);
const YIELD_STOLEN: Duration = Duration::from_micros(200);
const YIELD_BACKOFF: Duration = Duration::from_millis(100);
/// In that fallback the sleep doubles from BUSY_SLEEP after each pass that
/// found nothing, up to SERVE_SLEEP_MAX, and drops back to BUSY_SLEEP when
/// a frame came. A TCG qemu client (iPXE) ACKs a block about a millisecond
/// after its DATA; a 20 us sleep throughout woke the slow path ~90 times a
/// block on the CPU the emulated guest runs on (15,400 a second, 18% of the
/// CPU, each preempting the guest): the kernel took 23-45 s from the cache
/// against 6-12 s from the origin. With the doubling: ~8 a block, 8% of
/// the CPU (README, "iPXE under TCG").
const SERVE_SLEEP_MAX: Duration = Duration::from_micros(200);
/// The slow path's sleep between polls while it serves with yields off
/// (SERVE_SLEEP_MAX).
#[derive(Debug)]
struct ServePace(Duration);

impl ServePace {
    fn new() -> ServePace {
        ServePace(BUSY_SLEEP)
    }

    /// How long to sleep after a pass that found nothing; the next is longer.
    fn empty_pass(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(SERVE_SLEEP_MAX);
        d
    }

    /// A frame came: poll soon again.
    fn frame(&mut self) {
        self.0 = BUSY_SLEEP;
    }
}

/// A degraded cache is probed this often.
pub(crate) const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Reopens the cache from disk (after a panic).
pub(crate) type Reopen = Box<dyn FnMut() -> Result<CacheLogic, CacheError>>;

/// What the worker is built from.
pub(crate) struct Parts {
    pub(crate) logic: CacheLogic,
    pub(crate) filter: FilterWriter,
    pub(crate) rings: Vec<RedirectRx>,
    pub(crate) quit: Arc<AtomicBool>,
    pub(crate) bridge_counters: Vec<Arc<SharedCounters>>,
    pub(crate) filter_counters: Vec<Arc<SharedFilterCounters>>,
    pub(crate) health: Arc<SlowPathHealth>,
    /// The client-side and server-side ports (their driver statistics).
    pub(crate) ports: Vec<dpdk::Port>,
    pub(crate) stats_interval: Option<Duration>,
    /// Print a JSON object of the statistics after each text line.
    pub(crate) stats_json: bool,
    /// Where the Prometheus exporter reads the metrics, when it runs.
    pub(crate) published: Option<Arc<crate::exporter::Published>>,
    pub(crate) throttle: Option<Duration>,
    pub(crate) panic_after: Option<u64>,
    pub(crate) serve: Option<crate::serve::Serve>,
    pub(crate) fleet: Option<crate::fleet::Member>,
    /// The control socket's requests (`bootcache cache ...`), when it runs.
    pub(crate) control: Option<crate::control::Control>,
    pub(crate) inject: Arc<InjectRing>,
    pub(crate) reopen: Reopen,
    /// The slow path has a CPU of its own: spin, not yield, while serving
    /// sessions are active.
    pub(crate) poll: bool,
    /// The cache could not be opened at start (why): `logic` is a
    /// placeholder on an empty directory, the worker starts degraded and
    /// opens the real cache when it can.
    pub(crate) unopened: Option<String>,
    /// SIGHUP's flag, the running configuration and the endpoint.
    pub(crate) reload: crate::reload::State,
}

/// Fail-open state and counters.
#[derive(Debug, Default)]
pub(crate) struct FailOpen {
    /// Why the cache is unusable, while it is.
    pub(crate) reason: Option<String>,
    /// Times the worker went degraded.
    pub(crate) periods: u64,
    /// Panics caught (the cache was reopened after each).
    pub(crate) restarts: u64,
    /// Image map saves that failed.
    pub(crate) save_errors: u64,
    io_seen: u64,
    /// Failed writes of the cache's writer thread, as last seen.
    persist_errors_seen: u64,
    next_retry: Option<Instant>,
    /// The real cache is not open yet (`logic` is a placeholder).
    unopened: bool,
}

/// The slow path's state, owned by the main lcore.
pub(crate) struct Worker {
    pub(crate) logic: CacheLogic,
    filter: FilterWriter,
    rings: Vec<RedirectRx>,
    /// The next frame of each ring, popped but not handled yet.
    heads: Vec<Option<Redirected>>,
    quit: Arc<AtomicBool>,
    bridge_counters: Vec<Arc<SharedCounters>>,
    filter_counters: Vec<Arc<SharedFilterCounters>>,
    health: Arc<SlowPathHealth>,
    ports: Vec<dpdk::Port>,
    stats_interval: Option<Duration>,
    stats_json: bool,
    published: Option<Arc<crate::exporter::Published>>,
    /// Testing aid: sleep this long per redirected frame (throttles the slow path).
    pub(crate) throttle: Option<Duration>,
    /// Testing aid: panic once after this many frames.
    panic_after: Option<u64>,
    handled: u64,
    /// Trapped frames in the last batch (they start the busy window).
    trapped_in_batch: usize,
    /// Serving cache hits, when enabled (`serve_max_age`).
    pub(crate) serve: Option<crate::serve::Serve>,
    /// The fleet's member thread (holdings, directives), with `[fleet]`.
    fleet: Option<crate::fleet::Member>,
    /// The control socket's requests.
    control: Option<crate::control::Control>,
    /// Where trapped frames that are not served go back to the fast path.
    inject: Arc<InjectRing>,
    /// Trapped frames that could not be handed back to the fast path.
    pub(crate) reinject_drops: u64,
    pub(crate) fail: FailOpen,
    reopen: Reopen,
    poll: bool,
    /// Yields that took over YIELD_STOLEN (sleeps followed for YIELD_BACKOFF).
    yield_fallbacks: u64,
    /// The forwarding lcores' own final counts, once they stopped (more
    /// recent than their last published copy).
    pub(crate) final_counters: Option<BridgeCounters>,
    reload: crate::reload::State,
}

impl Worker {
    /// A worker over `p`.
    pub(crate) fn new(p: Parts) -> Worker {
        let io_seen = p.logic.counters().discarded.get(DiscardReason::Io);
        let unopened = p.unopened.clone();
        let mut w = Worker {
            logic: p.logic,
            filter: p.filter,
            heads: p.rings.iter().map(|_| None).collect(),
            rings: p.rings,
            quit: p.quit,
            bridge_counters: p.bridge_counters,
            filter_counters: p.filter_counters,
            health: p.health,
            ports: p.ports,
            stats_interval: p.stats_interval,
            stats_json: p.stats_json,
            published: p.published,
            throttle: p.throttle,
            panic_after: p.panic_after,
            handled: 0,
            trapped_in_batch: 0,
            serve: p.serve,
            fleet: p.fleet,
            control: p.control,
            inject: p.inject,
            reinject_drops: 0,
            fail: FailOpen {
                io_seen,
                ..FailOpen::default()
            },
            reopen: p.reopen,
            poll: p.poll,
            yield_fallbacks: 0,
            final_counters: None,
            reload: p.reload,
        };
        if let Some(why) = unopened {
            w.fail.unopened = true;
            w.degrade(
                Instant::now(),
                format!("the cache could not be opened: {why}"),
            );
        }
        w
    }

    /// Runs until the quit flag is set; the bridge may still be running.
    /// A panic in the loop is caught and recovered from (see the module
    /// doc); errors of the cache degrade it, they never end the loop.
    pub(crate) fn run(&mut self) -> Result<()> {
        low_timer_slack();
        loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.run_loop())) {
                Ok(()) => return Ok(()),
                Err(payload) => {
                    // The fast path forwards only until the cache is back.
                    self.health.set_forward_only(true);
                    self.fail.restarts += 1;
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    log::error!(
                        "slow path panicked ({msg}); forwarding only while the cache is reopened"
                    );
                    self.recover();
                }
            }
        }
    }

    /// After a panic: what was in flight is dropped (clients retransmit),
    /// the transfer rules are cleared, the cache is reopened from disk (its
    /// writer thread stopped first: one writer per cache directory).
    fn recover(&mut self) {
        self.logic.filestore_mut().close();
        for h in &mut self.heads {
            *h = None;
        }
        for ring in &mut self.rings {
            while ring.pop().is_some() {}
        }
        self.filter.clear_dynamic();
        self.filter.publish();
        match (self.reopen)() {
            Ok(logic) => {
                self.logic = logic;
                self.reapply();
                self.fail.unopened = false;
                self.fail.io_seen = self.logic.counters().discarded.get(DiscardReason::Io);
                self.fail.persist_errors_seen = 0;
                if self.fail.reason.is_none() {
                    self.health.set_forward_only(false);
                    log::info!("slow path recovered: cache reopened, copying and serving resumed");
                }
            }
            Err(e) => self.degrade(Instant::now(), format!("reopening the cache failed: {e}")),
        }
    }

    fn run_loop(&mut self) {
        let mut next_stats = self.stats_interval.map(|d| Instant::now() + d);
        let mut next_save = Instant::now() + SAVE_PERIOD;
        let mut next_publish = Instant::now();
        let mut next_timer_check = Instant::now();
        let mut last_busy = Instant::now();
        let mut idle_sleep = IDLE_SLEEP;
        // Until when yields cost a time slice: sleep instead.
        let mut sleep_until = Instant::now();
        // The sleep between polls while serving after a costly yield.
        let mut serve_pace = ServePace::new();
        // Frames handled since the last sleep, and the smallest ring.
        let mut found = 0usize;
        let ring_cap = self.rings.iter().map(|r| r.capacity()).min().unwrap_or(1);
        while !self.quit.load(Ordering::Relaxed) {
            self.health.beat();
            // Publishes in place and hashes checked by the writer thread,
            // taken in before the frames: a request that follows a publish
            // finds the file.
            self.logic.filestore_mut().poll();
            let handled = self.handle_batch();
            // Fetches through the server-side port that ended (for the
            // fleet's member or the control socket; empty: no allocation).
            let fetched = self
                .serve
                .as_mut()
                .map(|s| s.take_fetched())
                .unwrap_or_default();
            if let Some(f) = &mut self.fleet {
                f.poll(
                    Instant::now(),
                    &mut self.logic,
                    self.serve.as_mut(),
                    &fetched,
                );
            }
            if let Some(c) = &mut self.control {
                let port = self
                    .serve
                    .as_mut()
                    .map(|s| s as &mut dyn crate::control::PortFetcher);
                c.poll(&mut self.logic, self.fail.reason.as_deref(), port, &fetched);
            }
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
            // A load per pass; the swap only when SIGHUP came.
            if self.reload.flag.load(Ordering::Relaxed)
                && self.reload.flag.swap(false, Ordering::Relaxed)
            {
                self.reload(now);
            }
            if let (Some(t), Some(d)) = (next_stats, self.stats_interval) {
                if now >= t {
                    println!("{}", self.stats_output());
                    next_stats = Some(now + d);
                }
            }
            if let Some(p) = &self.published {
                if now >= next_publish {
                    p.publish(self.snapshot());
                    next_publish = now + crate::exporter::PUBLISH_PERIOD;
                }
            }
            if now >= next_save {
                self.save_image_map(now);
                // Suppressed warnings' counts that no later line carried.
                bootcache_metrics::ratelimit::flush();
                next_save = now + SAVE_PERIOD;
            }
            self.check_cache(now);
            let serving = self.serve.as_ref().is_some_and(|s| s.active() > 0);
            if self.trapped_in_batch > 0 || serving {
                last_busy = now;
            }
            if handled > 0 {
                // More may be waiting: poll again at once.
                found += handled;
                serve_pace.frame();
            } else if now.duration_since(last_busy) < BUSY_WINDOW {
                found = 0;
                idle_sleep = IDLE_SLEEP;
                match (serving, self.poll) {
                    (true, true) => std::hint::spin_loop(),
                    (true, false) if now >= sleep_until => {
                        let before = Instant::now();
                        std::thread::yield_now();
                        if before.elapsed() > YIELD_STOLEN {
                            sleep_until = now + YIELD_BACKOFF;
                            self.yield_fallbacks += 1;
                        }
                    }
                    (true, false) => {
                        // Yields cost a time slice: sleep, longer after each
                        // pass that found nothing (see SERVE_SLEEP_MAX).
                        std::thread::sleep(serve_pace.empty_pass());
                    }
                    _ => std::thread::sleep(BUSY_SLEEP),
                }
            } else {
                idle_sleep = if found > ring_cap / 8 {
                    (idle_sleep / 2).max(IDLE_SLEEP_MIN)
                } else if found < ring_cap / 32 {
                    (idle_sleep * 2).min(IDLE_SLEEP_MAX)
                } else {
                    idle_sleep
                };
                found = 0;
                std::thread::sleep(idle_sleep);
            }
        }
    }

    /// SIGHUP: reads the configuration again and applies it, or keeps the
    /// running one (one log line naming the field either way).
    fn reload(&mut self, now: Instant) {
        match self.apply_reload(now) {
            Ok(msg) => {
                self.reload.ok += 1;
                log::info!("{msg}");
            }
            Err(e) => {
                self.reload.failed += 1;
                log::error!("config reload refused, the running configuration is kept: {e:#}");
            }
        }
        if let Some(p) = &self.published {
            p.set_info(crate::reload::info(&self.reload.current, self.reload.mode));
        }
    }

    /// What [`Worker::reload`] does: I/O that can fail first (the agent's
    /// key and socket, the metrics address), so that nothing is applied
    /// unless all of it can be.
    fn apply_reload(&mut self, now: Instant) -> Result<String> {
        use anyhow::Context;
        let st = &self.reload;
        let new = crate::reload::load(st.path.as_deref(), st.cache_dir.as_deref())?;
        let d = crate::reload::diff(&st.current, &new);
        if !d.restart.is_empty() {
            log::warn!(
                "config reload: {} changed: restart to apply (running with the values it started with)",
                d.restart.join(", ")
            );
        }
        let e = &d.effective;
        // A new agent link only for what the validator is built with.
        let relink = [
            "agent",
            "limits.max_validations",
            "limits.max_waiters_per_validation",
        ];
        let relink = relink.iter().any(|f| d.has(f));
        let serve_changed = relink
            || [
                "serve_max_age",
                "limits.max_sessions",
                "limits.max_held_requests",
                "limits.max_fetches",
            ]
            .iter()
            .any(|f| d.has(f));
        let agent = match (&self.serve, relink) {
            (Some(_), true) => crate::agent_link(e)?.map(|(link, _)| link),
            _ => None,
        };
        let listener = match e.metrics.listen {
            Some(addr) if d.has("metrics.listen") => {
                let moved = crate::exporter::bind_moving(addr, &mut self.reload.exporter);
                Some(moved.context("config: metrics.listen")?)
            }
            _ => None,
        };
        let old = &self.reload.current;
        let servers = e.boot_servers();
        if old.boot_servers() != servers {
            let ips: Vec<std::net::IpAddr> = servers.iter().map(|&s| s.into()).collect();
            self.filter
                .set_servers(&ips)
                .map_err(|err| anyhow::anyhow!("config: servers: {err}"))?;
            self.filter.publish();
            self.logic.set_servers(servers);
        }
        if old.slowpath_limits() != e.slowpath_limits() {
            self.logic.set_limits(e.slowpath_limits());
        }
        if let (Some(s), true) = (&mut self.serve, serve_changed) {
            s.reconfigure(
                now,
                &mut self.logic,
                &mut self.filter,
                Duration::from_secs(e.serve_max_age.unwrap_or(0)),
                crate::serve::ServeLimits {
                    sessions: e.limits.max_sessions,
                    held: e.limits.max_held_requests,
                    fetches: e.limits.max_fetches,
                    // Not the configuration's: kept by the endpoint.
                    stream_bytes: 0,
                },
                agent,
            );
        }
        if d.has("metrics.listen") {
            // The new address is bound: the old endpoint stops.
            self.reload.exporter = None;
            match listener {
                Some(l) => {
                    let p = Arc::clone(self.published.get_or_insert_with(Default::default));
                    self.reload.exporter = Some(crate::exporter::start(l, p)?);
                }
                None => self.published = None,
            }
        }
        if d.has("log_level") {
            crate::reload::apply_log_level(&d.effective);
        }
        let msg = if d.live.is_empty() {
            "config reload: nothing to apply".to_string()
        } else {
            format!("config reload: applied {}", d.live.join(", "))
        };
        self.reload.current = d.effective;
        Ok(msg)
    }

    /// A cache reopened from disk (after a panic, or opened late) follows
    /// the running configuration, which a reload may have changed.
    fn reapply(&mut self) {
        let c = &self.reload.current;
        self.logic.set_servers(c.boot_servers());
        self.logic.set_limits(c.slowpath_limits());
    }

    /// After the bridge stopped: handle what is still queued, then hand
    /// the image map's changes to the writer and wait for it to finish.
    pub(crate) fn finish(&mut self) -> Result<()> {
        while self.handle_batch() > 0 {}
        self.apply_filter_updates();
        self.logic.filestore_mut().sync();
        if let Err(e) = self.logic.image_map_mut().persist() {
            log::error!("saving the image map at exit: {e}");
        }
        self.logic.filestore_mut().sync();
        Ok(())
    }

    /// The image map's changes go to the writer thread (records, never a
    /// whole rewrite, never a wait). A failure degrades the cache.
    fn save_image_map(&mut self, now: Instant) {
        if let Err(e) = self.logic.image_map_mut().persist() {
            self.fail.save_errors += 1;
            self.degrade(now, format!("saving the image map failed: {e}"));
        }
    }

    /// Notices write errors of the cache; while degraded, probes it.
    fn check_cache(&mut self, now: Instant) {
        let io = self.logic.counters().discarded.get(DiscardReason::Io);
        if io > self.fail.io_seen {
            self.fail.io_seen = io;
            self.degrade(
                now,
                "writing to the cache failed (transfers discarded with reason io)".into(),
            );
        }
        let persist = self.logic.filestore().persist_counters().errors;
        if persist > self.fail.persist_errors_seen {
            self.fail.persist_errors_seen = persist;
            self.degrade(
                now,
                "the cache's writer thread could not write (persist errors)".into(),
            );
        }
        let Some(at) = self.fail.next_retry else {
            return;
        };
        if now < at {
            return;
        }
        if self.fail.unopened {
            self.logic.filestore_mut().close();
            match (self.reopen)() {
                Ok(logic) => {
                    let placeholder = self.logic.filestore().dir().to_path_buf();
                    self.logic = logic;
                    self.reapply();
                    self.fail.unopened = false;
                    self.fail.io_seen = self.logic.counters().discarded.get(DiscardReason::Io);
                    self.fail.persist_errors_seen = 0;
                    let _ = std::fs::remove_dir_all(placeholder);
                    log::warn!("cache opened: copying and serving start");
                }
                Err(e) => {
                    log::debug!("cache still cannot be opened: {e}");
                    self.fail.next_retry = Some(now + RETRY_PERIOD);
                    return;
                }
            }
        }
        match self.probe() {
            Ok(()) => {
                let was = self.fail.reason.take().unwrap_or_default();
                self.fail.next_retry = None;
                self.health.set_forward_only(false);
                log::warn!("cache writable again ({was} before): copying and serving resumed");
            }
            Err(e) => {
                log::debug!("cache still unusable: {e}");
                self.fail.next_retry = Some(now + RETRY_PERIOD);
            }
        }
    }

    /// Enters degraded mode (forward only) if not already in it.
    fn degrade(&mut self, now: Instant, reason: String) {
        if self.fail.reason.is_none() {
            self.fail.periods += 1;
            log::error!("cache degraded, forwarding only (nothing copied or trapped): {reason}; retrying every {} s", RETRY_PERIOD.as_secs());
            self.fail.reason = Some(reason);
        }
        self.health.set_forward_only(true);
        self.fail.next_retry = Some(now + RETRY_PERIOD);
    }

    /// Can the cache be written again? A block written, synced and removed
    /// in its tmp directory (the writer thread retries its own writes).
    fn probe(&self) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.logic.filestore().tmp_dir().join(".probe");
        let res = std::fs::File::create(&path).and_then(|mut f| {
            f.write_all(&[0u8; 65536])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&path);
        res
    }

    /// Up to [`BATCH`] redirected frames, oldest first across the rings
    /// (both directions of a transfer normally share a ring; merging by
    /// arrival TSC keeps a read request before its answer even when they
    /// did not).
    fn handle_batch(&mut self) -> usize {
        let mut n = 0;
        self.trapped_in_batch = 0;
        while n < BATCH {
            for (head, ring) in self.heads.iter_mut().zip(self.rings.iter_mut()) {
                if head.is_none() {
                    *head = ring.pop();
                }
            }
            let Some(i) = self
                .heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.as_ref().map(|r| (r.tsc, i)))
                .min()
                .map(|(_, i)| i)
            else {
                break;
            };
            if let Some(d) = self.throttle {
                // Throttled (a testing aid), a batch can take minutes: the
                // operator's signal is checked per frame.
                if self.quit.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(d);
            }
            let Some(r) = self.heads[i].take() else { break };
            self.handled += 1;
            if self.panic_after.is_some_and(|p| self.handled > p) {
                self.panic_after = None;
                panic!("testing aid: --slowpath-panic-after reached");
            }
            let (now, wall) = (Instant::now(), SystemTime::now());
            if r.trapped {
                self.trapped_in_batch += 1;
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
                // Freed by the lcore that copied it (see RedirectTx).
                self.rings[i].give_back(r.mbuf);
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
            if let Err(e) = apply_update(&mut self.filter, u) {
                bootcache_metrics::warn_limited!("header filter: {e}");
            }
        }
        if changed {
            self.filter.publish();
        }
    }

    /// One line of everything the operator watches, and with
    /// `--stats-json` one JSON object of the same snapshot on the next line.
    pub(crate) fn stats_output(&self) -> String {
        let s = self.snapshot();
        if self.stats_json {
            format!("{}\n{}", s.line(), s.json())
        } else {
            s.line()
        }
    }

    /// Every metric now, in the stats line's order (see `src/stats.rs`
    /// and the metrics crate): per-lcore counters summed, the slow path's
    /// and serving's read in place, the driver's port statistics.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let per_lcore: Vec<BridgeCounters> =
            self.bridge_counters.iter().map(|c| c.snapshot()).collect();
        let b = self
            .final_counters
            .unwrap_or_else(|| BridgeCounters::sum(per_lcore.iter()));
        let mut f = FilterSnapshot::default();
        for c in &self.filter_counters {
            f.merge(&c.snapshot());
        }
        let mut out = Snapshot {
            unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            sections: Vec::new(),
        };
        for (side, name) in ["client", "server"].into_iter().enumerate() {
            let port = self.ports.get(side);
            let labels = vec![
                (
                    "port",
                    Cow::Owned(port.map_or(side as u16, |p| p.id()).to_string()),
                ),
                ("side", Cow::Borrowed(name)),
            ];
            let sec = out
                .section_labelled(name, labels)
                .fields(PortCounters::FIELDS, &b.ports[side]);
            // The driver's counters: JSON and Prometheus, not the line.
            if let Some(drv) = port.and_then(|p| p.stats().ok()) {
                for x in stats::DRIVER {
                    sec.value(x.desc, (x.get)(&drv)).show_last(Show::Never);
                }
            }
        }
        let (redirect, bypass): (Vec<_>, Vec<_>) = RedirectCounters::FIELDS
            .iter()
            .partition(|x| !x.desc.key.starts_with("bypass"));
        let sec = out.section("redirect");
        for x in redirect {
            sec.value(x.desc, (x.get)(&b.redirect));
        }
        let sec = out.section("failopen");
        sec.value(stats::BYPASSING, u64::from(b.bypassing));
        for x in bypass {
            sec.value(x.desc, (x.get)(&b.redirect));
        }
        sec.value(stats::DEGRADED, u64::from(self.fail.reason.is_some()))
            .value(stats::DEGRADED_PERIODS, self.fail.periods)
            .value(stats::RESTARTS, self.fail.restarts)
            .value(stats::SAVE_ERRORS, self.fail.save_errors);
        out.section("config")
            .value(stats::RELOADS_OK, self.reload.ok)
            .value(stats::RELOADS_FAILED, self.reload.failed);
        // Frames each forwarding lcore received (both ports): how evenly
        // RSS or the peer spread the traffic.
        let sec = out.section("lcores");
        for (i, c) in per_lcore.iter().enumerate() {
            let rx = c.ports[0].rx_packets + c.ports[1].rx_packets;
            sec.labelled(
                stats::LCORE_RX,
                "rx",
                ("lcore", i.to_string()),
                rx,
                Show::Always,
            );
        }
        let sec = out.section("rules");
        for rule in StaticRule::ALL {
            let hits = f.static_hits(rule);
            sec.labelled(
                stats::RULE_HITS,
                rule.name(),
                ("rule", rule.name()),
                hits,
                Show::Always,
            );
        }
        let dynamic = f.dynamic_total();
        sec.labelled(
            stats::RULE_HITS,
            "transfer-rules",
            ("rule", "transfer"),
            dynamic,
            Show::Always,
        );
        self.slowpath_sections(&mut out);
        out
    }

    /// The slow path's and serving's sections of [`Worker::snapshot`].
    fn slowpath_sections(&self, out: &mut Snapshot) {
        let k = self.logic.counters();
        let store = self.logic.filestore();
        let sec = out.section("transfers");
        sec.value(stats::TRANSFERS_SEEN, k.transfers_seen()).value(
            stats::TRANSFERS_ACTIVE,
            self.logic.active_transfers() as u64,
        );
        sec.fields(stats::TRANSFERS, k).by_reason(
            stats::DISCARDED_ALL,
            stats::DISCARDED,
            "discarded",
            k.discarded.iter().map(|(r, n)| (r.as_str(), n)),
        );
        out.section("files")
            .fields(stats::FILES, k)
            .value(stats::IN_STORE, store.len() as u64)
            .value(stats::VERIFIED, store.verified_count() as u64)
            .value(stats::CORRUPT_REMOVED, store.corrupt_removed())
            .value(stats::EVICTED_FILES, store.removals().evicted_files)
            .value(stats::EVICTED_BYTES, store.removals().evicted_bytes)
            .value(stats::REMOVED_FILES, store.removals().removed_files)
            .value(stats::USED, store.used_bytes())
            .show_last(Show::Never)
            .value(stats::QUOTA, store.quota())
            .show_last(Show::Never);
        out.section("bounds")
            .fields(stats::BOUNDS, &k.bounds_hit())
            .value(stats::CLIENT_SHARE, k.tracker.over_client_share);
        out.section_bare("origin")
            .value(stats::ORIGIN_BYTES, k.origin_bytes);
        let d = &k.defrag;
        let sec = out.section("defrag");
        sec.value(stats::DEFRAG_FRAGMENTS, d.fragments)
            .value(stats::DEFRAG_REASSEMBLED, d.reassembled)
            .by_reason(
                stats::DEFRAG_DROPPED_ALL,
                stats::DEFRAG_DROPPED,
                "defrag",
                d.dropped.iter().map(|(r, n)| (r.name(), n)),
            );
        out.section("persist")
            .fields(stats::PERSIST, &store.persist_counters())
            .value(stats::PUBLISH_FAILED, store.publish_failed());
        out.section_bare("slowpath")
            .fields(stats::SLOWPATH, k)
            .value(stats::SLOWPATH_FRAMES, self.handled)
            .show_last(Show::Never);
        if let Some(f) = &self.fleet {
            let sec = out.section("fleet_member");
            for (d, v) in stats::FLEET_MEMBER.iter().zip(f.values()) {
                sec.value(*d, v);
            }
        }
        let Some(s) = &self.serve else { return };
        out.section("serve")
            .fields(stats::SERVE, s.endpoint().counters())
            .fields(stats::FRAMES, &s.frames)
            .value(stats::AGENT_SKEW, s.agent_skew_ms())
            .value(stats::SERVE_ACTIVE, s.active() as u64)
            .value(stats::REINJECT_DROPS, self.reinject_drops)
            .value(stats::MAPPED_FILES, s.mapped_files() as u64);
        let t = &s.turnaround;
        out.section("turnaround")
            .value(stats::TURNAROUND_SAMPLES, t.samples())
            .value(stats::TURNAROUND_P50, t.quantile_ns(0.5))
            .value(stats::TURNAROUND_P99, t.quantile_ns(0.99))
            .value(stats::TURNAROUND_MAX, t.max_ns())
            .value(stats::YIELD_FALLBACKS, self.yield_fallbacks);
        if let Some(fl) = &s.fleet {
            let live = fl.mirror.is_live(Instant::now());
            out.section("fleet")
                .value(stats::FLEET_LIVE, u64::from(live))
                .value(stats::FLEET_FILES, fl.mirror.files() as u64)
                .value(stats::FLEET_REVISION, fl.mirror.last_revision())
                .fields(stats::MIRROR, &fl.mirror.counters())
                .fields(stats::FLEET, &fl.counters);
        }
        if let Some((c, arp)) = s.endpoint().addressed_counters() {
            out.section("addressed")
                .fields(stats::ADDRESSED, &c)
                .value(stats::FETCHES_ACTIVE, s.endpoint().active_fetches() as u64)
                .fields(stats::ARP, &arp);
        }
    }
}

/// Sets the calling thread's timer slack to 1 ns, so that a 20 us sleep
/// ends after 20 us, not after up to 70 us (the default slack is 50 us). A
/// failure only costs latency: logged, not fatal.
fn low_timer_slack() {
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        log::warn!(
            "slow path: timer slack not lowered ({e}): each idle sleep may last up to 50 us longer"
        );
    }
}

/// Applies one rule change of the tracker or of serving to the filter
/// (published by the caller).
pub(crate) fn apply_update(
    filter: &mut FilterWriter,
    u: FilterUpdate,
) -> Result<(), dataplane::FilterError> {
    match u {
        FilterUpdate::Expect {
            scope,
            server,
            client,
        } => filter.expect(scope, server.into(), client.into()).map(drop),
        FilterUpdate::Pin {
            scope,
            server,
            client,
        } => filter.pin(scope, server.into(), client.into()).map(drop),
        FilterUpdate::Trap {
            scope,
            server,
            client,
        } => {
            let (ip, client) = (std::net::IpAddr::V4(*server.ip()), client.into());
            let res = filter
                .expect(scope, ip, client)
                .and_then(|_| filter.pin(scope, server.into(), client))
                .and_then(|_| filter.set_trap(scope, ip, client, true));
            if res.is_err() {
                filter.remove(scope, ip, client);
            }
            res.map(drop)
        }
        FilterUpdate::Remove {
            scope,
            server,
            client,
        } => {
            filter.remove(scope, server.into(), client.into());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wake-ups while a client takes `rtt` to answer a DATA block.
    fn wakeups(rtt: Duration) -> u32 {
        let mut pace = ServePace::new();
        let (mut slept, mut n) = (Duration::ZERO, 0);
        while slept < rtt {
            slept += pace.empty_pass();
            n += 1;
        }
        pace.frame();
        assert_eq!(pace.empty_pass(), BUSY_SLEEP, "a frame resets the pace");
        n
    }

    #[test]
    fn serving_sleep_doubles_to_its_cap_and_a_frame_resets_it() {
        let mut pace = ServePace::new();
        let us: Vec<u128> = (0..6).map(|_| pace.empty_pass().as_micros()).collect();
        assert_eq!(us, [20, 40, 80, 160, 200, 200]);
        pace.frame();
        assert_eq!(pace.empty_pass(), BUSY_SLEEP);
    }

    #[test]
    fn a_tcg_clients_millisecond_ack_costs_a_few_wake_ups_not_fifty() {
        // iPXE under TCG: about 1 ms from DATA to ACK (dnsmasq's pace).
        // A fixed 20 us sleep woke 50 times per block.
        let ms = Duration::from_millis(1);
        assert_eq!(ms.as_micros() / BUSY_SLEEP.as_micros(), 50);
        assert!(wakeups(ms) <= 8, "{}", wakeups(ms));
        // A fast client (curl on the host) is still polled within 20-40 us.
        assert_eq!(wakeups(Duration::from_micros(30)), 2);
    }
}
