//! The registry's entries for counters declared outside a crate that uses
//! `counters!` (the slow path's, serving's, the fleet's, the driver's) and
//! for values the worker computes: each described once here, read by
//! `Worker::snapshot` into the stats line, `--stats-json` and Prometheus.
//!
//! Serving's structs (`bootcache_serve::endpoint`, `src/serve.rs`) are
//! read through `fields!` tables (an adapter); they could declare
//! themselves with `counters!` in their crate and these tables go.

use bootcache_metrics::{fields, Desc, Field, Unit};

use bootcache_serve::endpoint::{AddressedCounters, ServeCounters};

use crate::serve::{FleetCounters, FrameCounters};

// Ports: the bridge's own counters are `dataplane::PortCounters::FIELDS`.

/// The driver's statistics of a port (JSON and Prometheus, not the line).
pub(crate) static DRIVER: &[Field<dpdk::PortStats>] = fields!(dpdk::PortStats {
    rx_bytes: Counter Bytes "port_rx" "rx_bytes" "Bytes the driver received on the port",
    tx_bytes: Counter Bytes "port_tx" "tx_bytes" "Bytes the driver sent on the port",
    rx_missed: Counter None "port_rx_missed_frames" "rx_missed" "Frames the NIC dropped: no room in its RX queue",
    rx_errors: Counter None "port_rx_errors" "rx_errors" "Erroneous frames the driver received",
    tx_errors: Counter None "port_tx_errors" "tx_errors" "Frames the driver failed to send",
    rx_nombuf: Counter None "port_rx_nombuf" "rx_nombuf" "Receive buffer allocation failures",
});

pub(crate) const BYPASSING: Desc = Desc::gauge(
    "failopen_bypassing",
    "bypassing",
    "1 while the fast path forwards only (the slow path is late or asked it)",
);
pub(crate) const DEGRADED: Desc = Desc::gauge(
    "failopen_degraded",
    "degraded",
    "1 while the cache is unusable and the bridge forwards only",
);
pub(crate) const DEGRADED_PERIODS: Desc = Desc::counter(
    "failopen_degraded_periods",
    "degraded_periods",
    "Times the cache became unusable",
);
pub(crate) const RESTARTS: Desc = Desc::counter(
    "slowpath_restarts",
    "restarts",
    "Slow-path panics caught (the cache was reopened after each)",
);
pub(crate) const SAVE_ERRORS: Desc = Desc::counter(
    "imagemap_save_errors",
    "save_errors",
    "Image map saves that failed",
);
pub(crate) const RELOADS_OK: Desc = Desc::counter(
    "config_reloads",
    "reloads",
    "Configuration reloads (SIGHUP), by result",
)
.label("result", "ok");
pub(crate) const RELOADS_FAILED: Desc = Desc::counter(
    "config_reloads",
    "reloads_failed",
    "Configuration reloads (SIGHUP), by result",
)
.label("result", "failed");
pub(crate) const LCORE_RX: Desc = Desc::counter(
    "lcore_rx_frames",
    "rx",
    "Frames each forwarding lcore received (both ports)",
);
pub(crate) const RULE_HITS: Desc = Desc::counter(
    "filter_rule_hits",
    "hits",
    "Frames the header filter matched, by rule (static rules, and all transfer rules as rule=\"transfer\")",
);

pub(crate) const TRANSFERS_SEEN: Desc = Desc::counter(
    "transfers_seen",
    "seen",
    "TFTP transfers followed from their read request",
);
pub(crate) const TRANSFERS_ACTIVE: Desc = Desc::gauge(
    "transfers_active",
    "active",
    "TFTP transfers being followed now",
);
pub(crate) static TRANSFERS: &[Field<slowpath::Counters>] = fields!(slowpath::Counters {
    transfers_completed: Counter None "transfers_completed" "completed" "Transfers that completed, verified and were published (or refreshed an entry)",
    size_probes: Counter None "transfers_size_probes" "size_probes" "UEFI-style size probes followed",
});
pub(crate) const DISCARDED_ALL: Desc = Desc::counter(
    "transfers_discarded_all",
    "discarded",
    "Transfers discarded (the sum of transfers_discarded)",
);
pub(crate) const DISCARDED: Desc = Desc::counter(
    "transfers_discarded",
    "discarded",
    "Transfers discarded, by reason",
);

pub(crate) static FILES: &[Field<slowpath::Counters>] = fields!(slowpath::Counters {
    files_cached: Counter None "cache_files_added" "cached" "Files newly cached",
    files_refreshed: Counter None "cache_files_refreshed" "refreshed" "Completed transfers identical to the cached file",
    files_replaced: Counter None "cache_files_replaced" "replaced" "Cached files replaced by changed content",
    bytes_cached: Counter Bytes "cache_written" "bytes_cached" "Bytes written into the cache",
});
pub(crate) const IN_STORE: Desc = Desc::gauge("cache_files", "in_store", "Files in the cache");
pub(crate) const VERIFIED: Desc = Desc::gauge(
    "cache_verified_files",
    "verified",
    "Cached files hashed again since the cache was opened",
);
pub(crate) const CORRUPT_REMOVED: Desc = Desc::counter(
    "cache_corrupt_removed_files",
    "corrupt_removed",
    "Cached files removed because their hash no longer matched",
);
pub(crate) const EVICTED_FILES: Desc = Desc::counter(
    "cache_evicted_files",
    "evicted",
    "Cached files evicted (least recently used) to make room for new ones",
);
pub(crate) const EVICTED_BYTES: Desc = Desc::counter(
    "cache_evicted",
    "evicted_bytes",
    "Bytes of cached files evicted to make room for new ones",
)
.unit(Unit::Bytes);
pub(crate) const REMOVED_FILES: Desc = Desc::counter(
    "cache_operator_removed_files",
    "removed",
    "Cached files removed by the operator (bootcache cache rm, purge)",
);
pub(crate) const USED: Desc =
    Desc::gauge("cache_used", "used_bytes", "Bytes of files in the cache").unit(Unit::Bytes);
pub(crate) const QUOTA: Desc = Desc::gauge(
    "cache_quota",
    "quota_bytes",
    "The cache's quota ([limits] cache_quota)",
)
.unit(Unit::Bytes);

pub(crate) static BOUNDS: &[Field<slowpath::BoundsHit>] = fields!(slowpath::BoundsHit {
    transfers: Counter None {"reason" = "transfers"} "bounds_hit" "transfers" "Times a bound was hit, by bound",
    file_size: Counter None {"reason" = "file_size"} "bounds_hit" "file_size" "Times a bound was hit, by bound",
    quota: Counter None {"reason" = "quota"} "bounds_hit" "quota" "Times a bound was hit, by bound",
});
pub(crate) const CLIENT_SHARE: Desc = Desc::counter(
    "bounds_hit",
    "client_share",
    "Times a bound was hit, by bound",
)
.label("reason", "client_share");

pub(crate) const ORIGIN_BYTES: Desc = Desc::counter(
    "origin_served",
    "origin_bytes",
    "File bytes of completed transfers from a boot server (the origin's traffic)",
)
.unit(Unit::Bytes);

pub(crate) const DEFRAG_FRAGMENTS: Desc = Desc::counter(
    "defrag_fragments",
    "fragments",
    "IPv4 fragments of UDP to or from a boot server",
);
pub(crate) const DEFRAG_REASSEMBLED: Desc = Desc::counter(
    "defrag_reassembled",
    "reassembled",
    "Datagrams reassembled from fragments",
);
pub(crate) const DEFRAG_DROPPED_ALL: Desc = Desc::counter(
    "defrag_dropped_all",
    "dropped",
    "Fragments and datagrams dropped (the sum of defrag_dropped)",
);
pub(crate) const DEFRAG_DROPPED: Desc = Desc::counter(
    "defrag_dropped",
    "dropped",
    "Fragments and datagrams dropped, by reason",
);

pub(crate) static PERSIST: &[Field<slowpath::writer::PersistCounters>] = fields!(slowpath::writer::PersistCounters {
    queued: Gauge None "persist_queued_jobs" "queued" "Jobs waiting for the cache's writer thread",
    deferred: Counter None "persist_deferred_jobs" "deferred" "Jobs deferred because the writer's queue was full",
    errors: Counter None "persist_errors" "errors" "Writes of the cache's writer thread that failed",
    records: Counter None "persist_journal_records" "records" "Journal records written",
    compactions: Counter None "persist_compactions" "compactions" "Journal compactions",
    verified_files: Counter None "persist_rehashed_files" "rehashed_files" "Files hashed again by the writer thread",
    scrubbed_files: Counter None "scrub_files" "scrubbed_files" "Files the background scrub checked",
    scrubbed_bytes: Counter Bytes "scrub" "scrubbed_bytes" "Bytes the background scrub read",
});
pub(crate) const PUBLISH_FAILED: Desc = Desc::counter(
    "persist_publish_failed",
    "publish_failed",
    "Files that could not be published into the cache",
);

pub(crate) static SLOWPATH: &[Field<slowpath::Counters>] = fields!(slowpath::Counters {
    dhcp_messages: Counter None "dhcp_messages" "dhcp" "DHCP/BOOTP/PXE messages handed to the image map",
    bad_checksum: Counter None "bad_checksum_frames" "bad_checksum" "Frames whose UDP checksum or headers did not verify",
    wrong_side: Counter None "wrong_side_frames" "wrong_side" "Frames that came in on the wrong side for what they claim to be (ignored)",
});
pub(crate) const SLOWPATH_FRAMES: Desc = Desc::counter(
    "slowpath_frames",
    "frames",
    "Frames the slow path handled (copied and trapped)",
);

pub(crate) static SERVE: &[Field<ServeCounters>] = fields!(ServeCounters {
    hits: Counter None {"result" = "hit"} "serve_requests" "hits" "Read requests seen while serving, by result",
    misses: Counter None {"result" = "miss"} "serve_requests" "misses" "Read requests seen while serving, by result",
    stale: Counter None {"result" = "stale"} "serve_requests" "stale" "Read requests seen while serving, by result",
    validated_current: Counter None {"result" = "current"} "agent_validations" "validated_current" "Validations with the boot server's agent, by result",
    agent_unreachable: Counter None {"result" = "unreachable"} "agent_validations" "agent_unreachable" "Validations with the boot server's agent, by result",
    completed: Counter None {"result" = "completed"} "serve_sessions_ended" "completed" "Serving sessions ended, by result",
    size_probes: Counter None {"result" = "size_probe"} "serve_sessions_ended" "size_probes" "Serving sessions ended, by result",
    client_errors: Counter None {"result" = "client_error"} "serve_sessions_ended" "client_errors" "Serving sessions ended, by result",
    timeouts: Counter None {"result" = "timeout"} "serve_sessions_ended" "timeouts" "Serving sessions ended, by result",
    aborted: Counter None {"result" = "aborted"} "serve_sessions_ended" "aborted" "Serving sessions ended, by result",
    served_bytes: Counter Bytes "cache_served" "served_bytes" "File bytes delivered from the cache (acknowledged by clients)",
    retransmits: Counter None "serve_retransmits" "retransmits" "DATA and OACK packets sent again",
    sessions_refused: Counter None {"reason" = "sessions"} "serve_refused" "sessions_refused" "Requests sent to the origin because a serving table was full, by table",
    held_refused: Counter None {"reason" = "held"} "serve_refused" "held_refused" "Requests sent to the origin because a serving table was full, by table",
    validations_refused: Counter None {"reason" = "validations"} "serve_refused" "validations_refused" "Requests sent to the origin because a serving table was full, by table",
    filter_refused: Counter None {"reason" = "filter"} "serve_refused" "filter_refused" "Requests sent to the origin because a serving table was full, by table",
    rehashed: Counter None "serve_unverified_forwarded" "rehashed" "Hits sent to the origin while the cached file is hashed again",
});
pub(crate) static FRAMES: &[Field<FrameCounters>] = fields!(FrameCounters {
    frames: Counter None "serve_frames" "frames" "Frames serving built and handed to the fast path",
    frame_drops: Counter None "serve_dropped_frames" "frame_drops" "Frames serving lost: no buffer or no ring slot",
});
pub(crate) const AGENT_SKEW: Desc = Desc::gauge(
    "agent_clock_skew",
    "agent_skew_ms",
    "The agent's clock against ours",
)
.unit(Unit::Milliseconds);
pub(crate) const SERVE_ACTIVE: Desc = Desc::gauge(
    "serve_sessions_active",
    "active",
    "Serving sessions in progress",
);
pub(crate) const REINJECT_DROPS: Desc = Desc::counter(
    "reinject_dropped_frames",
    "reinject_drops",
    "Trapped frames that could not be handed back to the fast path",
);
pub(crate) const MAPPED_FILES: Desc = Desc::gauge(
    "serve_mapped_files",
    "mapped_files",
    "Cached files mapped for serving",
);

pub(crate) const TURNAROUND_SAMPLES: Desc = Desc::counter(
    "serve_turnaround_samples",
    "samples",
    "ACK-to-next-DATA turnarounds measured",
);
const TURNAROUND: Desc = Desc::gauge(
    "serve_turnaround",
    "",
    "ACK-to-next-DATA turnaround of serving, by quantile",
)
.unit(Unit::Nanoseconds);
pub(crate) const TURNAROUND_P50: Desc = Desc {
    key: "p50_ns",
    ..TURNAROUND.label("quantile", "0.5")
};
pub(crate) const TURNAROUND_P99: Desc = Desc {
    key: "p99_ns",
    ..TURNAROUND.label("quantile", "0.99")
};
pub(crate) const TURNAROUND_MAX: Desc = Desc {
    key: "max_ns",
    ..TURNAROUND.label("quantile", "1")
};
pub(crate) const YIELD_FALLBACKS: Desc = Desc::counter(
    "slowpath_yield_fallbacks",
    "yield_fallbacks",
    "Yields that took over 200 us (the slow path slept instead for a while)",
);

pub(crate) const FLEET_LIVE: Desc =
    Desc::gauge("fleet_live", "live", "1 while the fleet's mirror is live");
pub(crate) const FLEET_FILES: Desc =
    Desc::gauge("fleet_files", "files", "Files the fleet's mirror holds");
pub(crate) const FLEET_REVISION: Desc = Desc::gauge(
    "fleet_revision",
    "revision",
    "The last bucket revision the mirror applied",
);
pub(crate) static MIRROR: &[Field<bootcache_fleet::MirrorCounters>] = fields!(bootcache_fleet::MirrorCounters {
    applied: Counter None "fleet_applied_records" "applied" "Signed file records applied",
    heartbeats: Counter None "fleet_heartbeats" "heartbeats" "Signed heartbeats accepted",
    bad_signature: Counter None {"reason" = "bad_signature"} "fleet_ignored_records" "bad_signature" "Bucket values ignored, by reason",
    malformed: Counter None {"reason" = "malformed"} "fleet_ignored_records" "malformed" "Bucket values ignored, by reason",
    replayed: Counter None {"reason" = "replayed"} "fleet_ignored_records" "replayed" "Bucket values ignored, by reason",
    duplicates: Counter None {"reason" = "duplicate"} "fleet_ignored_records" "duplicates" "Bucket values ignored, by reason",
    deletes: Counter None "fleet_deletes" "deletes" "Keys deleted or purged in the bucket",
    refused: Counter None "fleet_refused_files" "refused" "New files refused past max_files",
    resets: Counter None "fleet_resets" "resets" "Times the mirror started over",
    watches: Counter None "fleet_watches" "watches" "Watches of the bucket started",
    policies: Counter None "fleet_policies" "policies" "Signed serving policies applied",
});
pub(crate) static FLEET: &[Field<FleetCounters>] = fields!(FleetCounters {
    current: Counter None {"result" = "current"} "fleet_decisions" "current" "Hits decided by the fleet's mirror, by result",
    stale: Counter None {"result" = "stale"} "fleet_decisions" "stale" "Hits decided by the fleet's mirror, by result",
    fallbacks: Counter None {"result" = "fallback"} "fleet_decisions" "fallbacks" "Hits decided by the fleet's mirror, by result",
    policy_serve: Counter None {"result" = "serve"} "fleet_policy_decisions" "policy_serve" "Hits decided by the serving policy, by result",
    policy_origin: Counter None {"result" = "origin"} "fleet_policy_decisions" "policy_origin" "Hits decided by the serving policy, by result",
});

pub(crate) static ADDRESSED: &[Field<AddressedCounters>] = fields!(AddressedCounters {
    requests: Counter None "addressed_requests" "requests" "Read requests sent to bootcache's address",
    fetches: Counter None "addressed_fetches_started" "fetches" "Origin fetches started",
    fetch_joins: Counter None "addressed_fetch_joins" "fetch_joins" "Requests that joined a fetch under way",
    fetches_completed: Counter None {"result" = "completed"} "addressed_fetches" "fetches_completed" "Origin fetches ended, by result",
    fetches_failed: Counter None {"result" = "failed"} "addressed_fetches" "fetches_failed" "Origin fetches ended, by result",
    fetches_refused: Counter None "addressed_fetches_refused" "fetches_refused" "Requests answered busy: max_fetches under way",
    fetched_bytes: Counter Bytes "addressed_fetched" "fetched_bytes" "Bytes fetched from the origin",
    streamed: Counter None "addressed_streamed_requests" "streamed" "Requests served from a fetch while it was under way",
    errors_sent: Counter None "addressed_errors_sent" "errors_sent" "TFTP ERROR answers sent to clients",
    pings: Counter None "addressed_pings" "pings" "Echo requests answered",
    dropped: Counter None "addressed_dropped_frames" "dropped" "Frames to the address that nothing answers",
});

/// The fleet member's counters, in the order of `FleetMember::values`.
pub(crate) const FLEET_MEMBER: [Desc; 16] = [
    Desc::gauge(
        "fleet_member_connected",
        "member_connected",
        "1 while the bridge is connected to the fleet's engine",
    ),
    Desc::counter(
        "fleet_presence_puts",
        "presence_puts",
        "Presence entries put",
    ),
    Desc::counter("fleet_holding_puts", "holding_puts", "Holdings entries put"),
    Desc::counter(
        "fleet_holding_deletes",
        "holding_deletes",
        "Holdings entries deleted",
    ),
    Desc::counter(
        "fleet_directives",
        "directives",
        "Directives accepted, by result",
    )
    .label("result", "accepted"),
    Desc::counter(
        "fleet_directives",
        "directives_ignored",
        "Directives accepted, by result",
    )
    .label("result", "ignored"),
    Desc::counter(
        "fleet_directives",
        "directives_refused",
        "Directives accepted, by result",
    )
    .label("result", "refused"),
    Desc::counter(
        "fleet_pushed_fetched_files",
        "fetched",
        "Directed files fetched (Object Store or origin)",
    ),
    Desc::counter(
        "fleet_pushed_held_files",
        "held",
        "Directed files already held",
    ),
    Desc::counter(
        "fleet_pushed_fetch_errors",
        "fetch_errors",
        "Object Store fetches that failed",
    ),
    Desc::counter("fleet_pushed_failed", "failed", "Directives given up"),
    Desc::counter(
        "fleet_pushed_published_files",
        "published",
        "Pushed files published into the cache",
    ),
    Desc::counter(
        "fleet_pushed_publish_refused",
        "publish_refused",
        "Pushed files the cache refused",
    ),
    Desc::counter(
        "fleet_bad_directives",
        "bad_directives",
        "Directives or documents whose signature did not verify",
    ),
    Desc::counter(
        "fleet_pushed_published",
        "published_bytes",
        "Bytes of pushed files (from the Object Store or the origin) published into the cache",
    )
    .unit(Unit::Bytes),
    Desc::counter(
        "fleet_pushed_from_origin_files",
        "from_origin",
        "Directed files read by TFTP from the origin (the Object Store lacked them)",
    ),
];
pub(crate) const FETCHES_ACTIVE: Desc = Desc::gauge(
    "addressed_fetches_active",
    "fetches_active",
    "Origin fetches under way",
);
pub(crate) static ARP: &[Field<bootcache_serve::arp::ArpCounters>] = fields!(bootcache_serve::arp::ArpCounters {
    requests_answered: Counter None "arp_answered" "arp_answered" "ARP requests for the own address answered",
    requests_sent: Counter None "arp_requests_sent" "arp_requests" "ARP requests sent",
    failed: Counter None "arp_failed" "arp_failed" "ARP resolutions that gave up",
    wrong_side: Counter None "arp_wrong_side" "wrong_side" "ARP frames ignored: a pinned address from the other side",
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name is a valid Prometheus name, help is one line, and a
    /// family's kind and unit agree wherever it is declared.
    #[test]
    fn descriptions_are_consistent() {
        let mut all: Vec<Desc> = Vec::new();
        all.extend(DRIVER.iter().map(|f| f.desc));
        all.extend(TRANSFERS.iter().map(|f| f.desc));
        all.extend(FILES.iter().map(|f| f.desc));
        all.extend(BOUNDS.iter().map(|f| f.desc));
        all.extend(PERSIST.iter().map(|f| f.desc));
        all.extend(SLOWPATH.iter().map(|f| f.desc));
        all.extend(SERVE.iter().map(|f| f.desc));
        all.extend(MIRROR.iter().map(|f| f.desc));
        all.extend(FLEET.iter().map(|f| f.desc));
        all.extend(ADDRESSED.iter().map(|f| f.desc));
        all.extend(FRAMES.iter().map(|f| f.desc));
        all.extend(FLEET_MEMBER);
        all.extend(ARP.iter().map(|f| f.desc));
        all.extend(dataplane::PortCounters::FIELDS.iter().map(|f| f.desc));
        all.extend(dataplane::RedirectCounters::FIELDS.iter().map(|f| f.desc));
        all.extend([
            CLIENT_SHARE,
            TURNAROUND_P50,
            TURNAROUND_P99,
            TURNAROUND_MAX,
            DISCARDED,
            DEFRAG_DROPPED,
            RELOADS_OK,
            RELOADS_FAILED,
        ]);
        for d in &all {
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{d:?}"
            );
            assert!(
                !d.name.ends_with("_total") && !d.name.ends_with("_bytes"),
                "{d:?}"
            );
            assert!(!d.help.contains('\n') && !d.help.trim().is_empty(), "{d:?}");
            for e in all.iter().filter(|e| e.name == d.name) {
                assert_eq!((e.kind, e.unit), (d.kind, d.unit), "{d:?} vs {e:?}");
                assert_eq!(e.label.map(|l| l.0), d.label.map(|l| l.0), "{d:?} vs {e:?}");
            }
        }
    }
}
