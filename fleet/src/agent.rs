//! The agent's fleet I/O beyond the table (issue 14 items 2–4): the
//! coordinator thread that uploads changed and directed files into the
//! Object Store and directs outdated bridges to refresh, and what the
//! `bootcache-agent fleet` and `cache` commands read and write.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use crate::coord::{Action, CoordCounters, Coordinator};
use crate::doc::{self, Buckets, Directive};
use crate::nats::{
    backoff, check_config, connect, ensure_fleet, ensure_objects, ensure_presence, js_err, lost,
    runtime, wall_ms, FleetError, NatsConfig, Worker,
};
use crate::publish::Published;
use crate::report::{self, Entries, FleetReport};

/// The coordinator thread; stopped when dropped.
pub struct CoordinatorHandle {
    counters: Arc<ArcSwap<CoordCounters>>,
    failed: std::sync::mpsc::Receiver<(String, String)>,
    _worker: Worker,
}

impl std::fmt::Debug for CoordinatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorHandle").finish_non_exhaustive()
    }
}

impl CoordinatorHandle {
    /// Counters.
    pub fn counters(&self) -> CoordCounters {
        **self.counters.load()
    }

    /// Files bridges gave up since the last call: (directive id, file).
    pub fn failed(&self) -> Vec<(String, String)> {
        self.failed.try_iter().collect()
    }
}

/// Starts the coordinator: files under `root` go into the Object Store
/// when bridges need them (outdated copies, cache directives), checked
/// against `snapshot`'s table.
pub fn spawn_coordinator<F>(
    c: NatsConfig,
    key: &[u8],
    root: PathBuf,
    snapshot: F,
) -> Result<CoordinatorHandle, FleetError>
where
    F: Fn() -> HashMap<String, Published> + Send + 'static,
{
    check_config(&c)?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ArcSwap::from_pointee(CoordCounters::default()));
    let rt = runtime()?;
    let buckets = Buckets::of(&c.bucket);
    let mut coord = Coordinator::new(key, &buckets.fleet);
    let (stop2, counters2) = (Arc::clone(&stop), Arc::clone(&counters));
    let (failed_tx, failed) = std::sync::mpsc::sync_channel(crate::coord::MAX_FAILED);
    let thread = std::thread::Builder::new()
        .name("fleet-coord".into())
        .spawn(move || {
            rt.block_on(async {
                let mut attempt = 0;
                while !stop2.load(Ordering::Relaxed) {
                    let r = coord_session(
                        &c,
                        &buckets,
                        &mut coord,
                        (&root, &snapshot),
                        (&stop2, &counters2, &failed_tx),
                        &mut attempt,
                    )
                    .await;
                    match r {
                        Ok(()) => break,
                        Err(e) if attempt == 0 => log::warn!("fleet: coordinator: {e}; retrying"),
                        Err(e) => log::debug!("fleet: coordinator: {e}"),
                    }
                    backoff(&mut attempt).await;
                }
            })
        })?;
    Ok(CoordinatorHandle {
        counters,
        failed,
        _worker: Worker {
            stop,
            thread: Some(thread),
        },
    })
}

async fn coord_session<F>(
    c: &NatsConfig,
    b: &Buckets,
    coord: &mut Coordinator,
    (root, snapshot): (&std::path::Path, &F),
    (stop, counters, failed): (
        &AtomicBool,
        &ArcSwap<CoordCounters>,
        &std::sync::mpsc::SyncSender<(String, String)>,
    ),
    attempt: &mut u32,
) -> Result<(), FleetError>
where
    F: Fn() -> HashMap<String, Published>,
{
    let (client, mut events) = connect(c, "bootcache-agent coordinator").await?;
    let js = crate::nats::js(c, client);
    let fleet = ensure_fleet(&js, b).await?;
    let presence = ensure_presence(&js, b).await?;
    let objects = ensure_objects(&js, &b.objects).await?;
    let mut watch = fleet
        .watch_with_history(">")
        .await
        .map_err(|e| js_err("watching the fleet bucket")(e.to_string()))?;
    let mut present = presence
        .watch_with_history(">")
        .await
        .map_err(|e| js_err("watching presence")(e.to_string()))?;
    log::info!("fleet: coordinating through {} and {}", b.fleet, b.objects);
    *attempt = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            ev = events.recv() => if let Some(why) = lost(ev) {
                return Err(FleetError::Lost(why));
            },
            e = watch.next() => match e {
                Some(Ok(e)) => {
                    let value = matches!(e.operation, kv::Operation::Put).then_some(&e.value[..]);
                    coord.observe(&e.key, value);
                    for f in coord.take_failed() {
                        // Full: the agent's loop is behind; the directive
                        // stays failed in the listing.
                        let _ = failed.try_send(f);
                    }
                }
                Some(Err(e)) => return Err(FleetError::Lost(format!("watch: {e}"))),
                None => return Err(FleetError::Lost("watch ended".into())),
            },
            e = present.next() => match e {
                Some(Ok(e)) => {
                    if matches!(e.operation, kv::Operation::Put) {
                        coord.observe_presence(&e.key, &e.value);
                    }
                }
                Some(Err(e)) => return Err(FleetError::Lost(format!("presence: {e}"))),
                None => return Err(FleetError::Lost("presence watch ended".into())),
            },
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let table = snapshot();
                let now = wall_ms();
                for a in coord.step(now, random(), &table) {
                    match a {
                        Action::Upload { name, sha256 } => {
                            let r = upload(&objects, root, &name, &sha256).await;
                            coord.uploaded(wall_ms(), &name, r.then_some(sha256));
                        }
                        Action::Direct(d) => {
                            let k = doc::directive_key(&d.id);
                            let v = doc::sign(&d, coord.key(), &b.fleet, &k);
                            fleet.put(&k, v.into()).await.map_err(|e| js_err("putting a directive")(e.to_string()))?;
                        }
                    }
                }
            },
        }
        if **counters.load() != coord.counters() {
            counters.store(Arc::new(coord.counters()));
        }
    }
}

/// A random number for ids (not secret: ids need only be unique).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// URL-safe base64 with padding, as the Object Store writes digests.
fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Object Store's digest of content hashing to `sha256`.
fn digest_of(sha256: &[u8; 32]) -> String {
    format!("SHA-256={}", base64_url(sha256))
}

/// Puts `root/name` into the Object Store unless it holds that version
/// already; true when the store now has exactly the table's bytes.
async fn upload(
    objects: &jetstream::object_store::ObjectStore,
    root: &std::path::Path,
    name: &str,
    sha256: &[u8; 32],
) -> bool {
    let want = digest_of(sha256);
    if let Ok(info) = objects.info(name).await {
        if !info.deleted && info.digest.as_deref() == Some(want.as_str()) {
            return true;
        }
    }
    let path = root.join(name);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            log::warn!("fleet: {}: {e}", path.display());
            return false;
        }
    };
    let started = std::time::Instant::now();
    match objects.put(name, &mut file).await {
        Ok(info) if info.digest.as_deref() == Some(want.as_str()) => {
            log::info!(
                "fleet: {name}: {} bytes into the Object Store in {:.0} ms",
                info.size,
                started.elapsed().as_secs_f64() * 1e3
            );
            true
        }
        Ok(_) => {
            log::info!("fleet: {name} changed while it was uploaded: again when the table has it");
            false
        }
        Err(e) => {
            log::warn!("fleet: {name}: upload: {e}");
            false
        }
    }
}

/// Reads every live entry of a KV bucket (none if it does not exist).
async fn read_kv(js: &jetstream::Context, bucket: &str) -> Result<Entries, FleetError> {
    let Ok(store) = js.get_key_value(bucket).await else {
        return Ok(Vec::new());
    };
    let mut stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| js_err("reading a bucket's state")(e.to_string()))?;
    let info = stream
        .info()
        .await
        .map_err(|e| js_err("reading a bucket's state")(e.to_string()))?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    // What the bucket held when it was asked: the read ends there, also
    // while bridges keep putting (presence every 2 s) and the watch's
    // pending count never reaches 0 (seen hanging CI's fleet test).
    let last = info.state.last_sequence;
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| js_err("reading a bucket")(e.to_string()))?;
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    loop {
        // Entries expire (presence): a watch whose last entry went away
        // meanwhile ends on the timeout.
        match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
            Ok(Some(Ok(e))) => {
                match e.operation {
                    kv::Operation::Put => {
                        out.insert(e.key.clone(), e.value.to_vec());
                    }
                    _ => {
                        out.remove(&e.key);
                    }
                }
                if e.delta == 0 || e.revision >= last {
                    break;
                }
            }
            Ok(Some(Err(e))) => return Err(js_err("reading a bucket")(e.to_string())),
            Ok(None) | Err(_) => break,
        }
    }
    let mut v: Entries = out.into_iter().collect();
    v.sort();
    Ok(v)
}

/// How long `bootcache-agent fleet` may take to read the buckets before it
/// gives up with an error instead of waiting on the engine forever.
const REPORT_DEADLINE: Duration = Duration::from_secs(30);

/// `bootcache-agent fleet`: reads the table, presence and fleet buckets
/// and builds the listing.
pub fn read_report(c: &NatsConfig, key: &[u8]) -> Result<FleetReport, FleetError> {
    check_config(c)?;
    let b = Buckets::of(&c.bucket);
    let read = async {
        let (client, _events) = connect(c, "bootcache-agent fleet").await?;
        let js = crate::nats::js(c, client);
        let table = read_kv(&js, &b.table).await?;
        let presence = read_kv(&js, &b.presence).await?;
        let fleet = read_kv(&js, &b.fleet).await?;
        Ok(report::build(key, &c.bucket, &table, &presence, &fleet))
    };
    runtime()?.block_on(async {
        tokio::time::timeout(REPORT_DEADLINE, read)
            .await
            .unwrap_or_else(|_| {
                Err(js_err("reading the fleet's buckets")(format!(
                    "no complete answer within {REPORT_DEADLINE:?}"
                )))
            })
    })
}

/// `bootcache-agent cache`: puts a signed directive.
pub fn put_directive(c: &NatsConfig, key: &[u8], d: &Directive) -> Result<(), FleetError> {
    check_config(c)?;
    let b = Buckets::of(&c.bucket);
    runtime()?.block_on(async {
        let (client, _events) = connect(c, "bootcache-agent cache").await?;
        let js = crate::nats::js(c, client);
        let fleet = ensure_fleet(&js, &b).await?;
        let k = doc::directive_key(&d.id);
        fleet
            .put(&k, doc::sign(d, key, &b.fleet, &k).into())
            .await
            .map_err(|e| js_err("putting the directive")(e.to_string()))?;
        Ok(())
    })
}

/// A new directive id: the issue time (ms, fixed width: ids sort by age)
/// and a random part.
pub fn new_directive_id() -> String {
    format!("{:013}-{:08x}", wall_ms(), random() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_written_as_the_object_store_writes_them() {
        // RFC 4648 test vectors, URL-safe alphabet with padding.
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg==");
        assert_eq!(base64_url(b"fo"), "Zm8=");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(b"foob"), "Zm9vYg==");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8=");
        // SHA-256 of "" as NATS writes it.
        let empty = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        assert_eq!(
            digest_of(&empty),
            "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
