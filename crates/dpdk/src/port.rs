//! Ethernet ports (ethdev): configuration, bursts, link, MAC, statistics.

use std::ffi::c_char;

use crate::error::{check, Error, Result};
use crate::mbuf::Burst;
use crate::mempool::Mempool;

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Receive queues.
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Descriptors per receive queue.
    pub rx_desc: u16,
    /// Descriptors per transmit queue.
    pub tx_desc: u16,
    /// MTU to set, if any (the driver default otherwise).
    pub mtu: Option<u16>,
    /// Receive frames for every destination MAC (a bridge must).
    pub promiscuous: bool,
    /// With several receive queues: spread frames by a symmetric Toeplitz
    /// hash of these header fields (`RSS_*` bits, masked by what the device
    /// offers), so both directions of a conversation meet on one queue.
    /// 0: no RSS (the peer or the device decides the queue).
    pub rss_hf: u64,
}

/// RSS on the IPv4/IPv6 address pair only (`RTE_ETH_RSS_IP`): ports are left
/// out so that a TFTP server's fresh TID hashes like its read request.
pub const RSS_IP: u64 =
    (1 << 2) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 15);

/// The RSS key that makes Toeplitz symmetric (Woo and Park): 0x6d5a
/// repeated, so hash(a, b) == hash(b, a).
const SYMMETRIC_RSS_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// What a device can do, from `rte_eth_dev_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The driver's name (e.g. `net_null`).
    pub driver: String,
    /// Most receive queues.
    pub max_rx_queues: u16,
    /// Most transmit queues.
    pub max_tx_queues: u16,
    /// RSS hash fields the device supports (0: no RSS).
    pub rss_offloads: u64,
    /// Largest frame the device receives, in bytes.
    pub max_rx_pktlen: u32,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            promiscuous: true,
            rss_hf: 0,
        }
    }
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (None when the driver does not know).
    pub speed_mbps: Option<u32>,
    /// Full duplex.
    pub full_duplex: bool,
}

/// The driver's port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames the hardware dropped (rx queue full).
    pub rx_missed: u64,
    /// Erroneous frames received.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// A DPDK ethdev port, by id. Cheap to copy; the device lives in the EAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

impl Port {
    /// Number of ports the EAL found (devices and `--vdev`s).
    pub fn count() -> u16 {
        // SAFETY: reads ethdev state; no preconditions.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// The port with this id, if it exists.
    pub fn new(id: u16) -> Result<Port> {
        // SAFETY: validity check on an id; no preconditions.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 1 {
            Ok(Port { id })
        } else {
            Err(Error::NoSuchPort(id, Port::count()))
        }
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name (e.g. `net_virtio_user0`).
    pub fn name(&self) -> String {
        let mut buf = [0 as c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: buf is RTE_ETH_NAME_MAX_LEN bytes, as the API requires.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr()) };
        if ret != 0 {
            return format!("port{}", self.id);
        }
        // SAFETY: on success the buffer holds a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// NUMA socket of the device (-1 when unknown, e.g. virtual devices).
    pub fn socket(&self) -> i32 {
        // SAFETY: valid port id.
        unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) }
    }

    /// What the device can do (queues, RSS, frame size).
    pub fn info(&self) -> Result<PortInfo> {
        let id = self.id;
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-parameter.
        check(|| format!("port {id}: device info"), unsafe {
            dpdk_sys::rte_eth_dev_info_get(id, &mut info)
        })?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: on success driver_name points at the driver's static NUL-terminated name.
            unsafe { std::ffi::CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            max_rx_pktlen: info.max_rx_pktlen,
        })
    }

    /// Configures queues, descriptors, RSS, MTU and promiscuous mode. Every
    /// rx queue takes its buffers from `pool`. The port must be stopped.
    pub fn configure(&self, cfg: &PortConfig, pool: &Mempool) -> Result<()> {
        let id = self.id;
        let info = self.info()?;
        let mut conf = dpdk_sys::rte_eth_conf::default();
        // DPDK copies the key during configure.
        let mut key = SYMMETRIC_RSS_KEY;
        let hf = cfg.rss_hf & info.rss_offloads;
        if cfg.rx_queues > 1 && hf != 0 {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
            conf.rx_adv_conf.rss_conf.rss_hf = hf;
        }
        // SAFETY: conf is a valid, zeroed (all-defaults) configuration.
        check(|| format!("port {id}: configure"), unsafe {
            dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf)
        })?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid port id.
            check(|| format!("port {id}: set MTU {mtu}"), unsafe {
                dpdk_sys::rte_eth_dev_set_mtu(id, mtu)
            })?;
        }
        let socket = self.socket().max(0) as u32;
        for q in 0..cfg.rx_queues {
            // SAFETY: default rxconf (null), a live pool; queue index < configured count.
            check(|| format!("port {id}: rx queue {q} setup"), unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    cfg.rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: default txconf (null); queue index < configured count.
            check(|| format!("port {id}: tx queue {q} setup"), unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, cfg.tx_desc, socket, std::ptr::null())
            })?;
        }
        if cfg.promiscuous {
            // SAFETY: valid port id.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
            // Some virtual devices cannot toggle promiscuity; they pass every frame anyway.
            if ret < 0 && ret != -95 {
                check(|| format!("port {id}: promiscuous mode"), ret)?;
            }
        }
        Ok(())
    }

    /// Starts the port.
    pub fn start(&self) -> Result<()> {
        // SAFETY: valid port id; configured by the caller.
        check(|| format!("port {}: start", self.id), unsafe {
            dpdk_sys::rte_eth_dev_start(self.id)
        })
    }

    /// Stops the port.
    pub fn stop(&self) -> Result<()> {
        // SAFETY: valid port id.
        check(|| format!("port {}: stop", self.id), unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id)
        })
    }

    /// Closes the port (after stop); frees its queues.
    pub fn close(&self) -> Result<()> {
        // SAFETY: valid port id; no lcore uses it any more (caller's duty, not memory safety).
        check(|| format!("port {}: close", self.id), unsafe {
            dpdk_sys::rte_eth_dev_close(self.id)
        })
    }

    /// Current MTU.
    pub fn mtu(&self) -> Result<u16> {
        let mut mtu = 0u16;
        // SAFETY: mtu is a valid out-parameter.
        check(|| format!("port {}: get MTU", self.id), unsafe {
            dpdk_sys::rte_eth_dev_get_mtu(self.id, &mut mtu)
        })?;
        Ok(mtu)
    }

    /// Whether promiscuous mode is on.
    pub fn promiscuous(&self) -> bool {
        // SAFETY: valid port id.
        unsafe { dpdk_sys::rte_eth_promiscuous_get(self.id) == 1 }
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: addr is a valid out-parameter.
        check(|| format!("port {}: MAC address", self.id), unsafe {
            dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr)
        })?;
        Ok(addr.addr_bytes)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<Link> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: link is a valid out-parameter.
        check(|| format!("port {}: link status", self.id), unsafe {
            dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link)
        })?;
        let speed = link.link_speed;
        Ok(Link {
            up: link.link_status() == dpdk_sys::RTE_ETH_LINK_UP as u16,
            speed_mbps: (speed != 0 && speed != u32::MAX).then_some(speed),
            full_duplex: link.link_duplex() == dpdk_sys::RTE_ETH_LINK_FULL_DUPLEX as u16,
        })
    }

    /// The driver's counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: s is a valid out-parameter.
        check(|| format!("port {}: statistics", self.id), unsafe {
            dpdk_sys::rte_eth_stats_get(self.id, &mut s)
        })?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Resets the driver's counters.
    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: valid port id.
        check(|| format!("port {}: reset statistics", self.id), unsafe {
            dpdk_sys::rte_eth_stats_reset(self.id)
        })
    }

    /// This port's fast-path entry, `rte_eth_fp_ops[id]`: the receive and
    /// transmit functions and queue data that DPDK's inline
    /// `rte_eth_rx_burst`/`rte_eth_tx_burst` read. Reading it here instead
    /// of calling those inlines through the C shim saves a call level per
    /// burst.
    #[inline(always)]
    fn fp_ops(&self) -> &'static dpdk_sys::rte_eth_fp_ops {
        // SAFETY: `rte_eth_fp_ops` is ethdev's static array of
        // RTE_MAX_ETHPORTS entries, live for the whole process; `id` passed
        // `rte_eth_dev_is_valid_port`, so it is below RTE_MAX_ETHPORTS. The
        // entry is only rewritten (start/stop) while no lcore polls the port.
        unsafe {
            &*std::ptr::addr_of!(dpdk_sys::rte_eth_fp_ops)
                .cast::<dpdk_sys::rte_eth_fp_ops>()
                .add(usize::from(self.id))
        }
    }

    /// Receives into the free slots of `burst`; returns how many arrived.
    /// A queue may be polled by one thread at a time (DPDK's rule).
    ///
    /// What `rte_eth_rx_burst` does (DPDK 22.11, built without
    /// `RTE_ETHDEV_DEBUG_RX`): the driver's function on the queue's data,
    /// then the queue's rx callbacks if any were added. bootcache adds none;
    /// should a queue have one, the burst goes through the C shim (the
    /// inline itself) instead.
    #[inline(always)]
    pub fn rx_burst(&self, queue: u16, burst: &mut Burst) -> usize {
        let (slots, room) = burst.spare_raw();
        let ops = self.fp_ops();
        let (qd, cb) = queue_entry(&ops.rxq, queue);
        let n = match ops.rx_pkt_burst {
            // SAFETY: the driver's receive function for this queue's data;
            // `slots` has room for `room` pointers, and the driver writes at
            // most that many owned mbufs, which the burst takes via commit().
            Some(rx) if cb.is_null() => unsafe { rx(qd, slots, room) },
            // SAFETY: as above, through DPDK's own inline.
            _ => unsafe { dpdk_sys::bc_eth_rx_burst(self.id, queue, slots, room) },
        };
        burst.commit(usize::from(n));
        usize::from(n)
    }

    /// Transmits from the front of `burst`; returns how many the driver took.
    /// What it did not take stays in `burst`, owned by the caller.
    ///
    /// Like [`Port::rx_burst`]: the driver's function directly unless the
    /// queue has tx callbacks (bootcache adds none).
    #[inline(always)]
    pub fn tx_burst(&self, queue: u16, burst: &mut Burst) -> usize {
        let (pkts, len) = burst.held_raw();
        if len == 0 {
            return 0;
        }
        let ops = self.fp_ops();
        let (qd, cb) = queue_entry(&ops.txq, queue);
        let n = match ops.tx_pkt_burst {
            // SAFETY: `pkts` holds `len` owned mbufs; the driver takes
            // ownership of the first n it returns, which the burst forgets.
            Some(tx) if cb.is_null() => unsafe { tx(qd, pkts, len) },
            // SAFETY: as above, through DPDK's own inline.
            _ => unsafe { dpdk_sys::bc_eth_tx_burst(self.id, queue, pkts, len) },
        };
        burst.consume_front(usize::from(n));
        usize::from(n)
    }
}

/// A queue's data and its first rx/tx callback (null: none) from one side
/// of a port's `rte_eth_fp_ops` entry.
#[inline(always)]
fn queue_entry(
    qdata: &dpdk_sys::rte_ethdev_qdata,
    queue: u16,
) -> (*mut std::ffi::c_void, *mut std::ffi::c_void) {
    let q = usize::from(queue);
    // SAFETY: `data` and `clbk` are ethdev's arrays of
    // RTE_MAX_QUEUES_PER_PORT entries for this port, and `queue` is a queue
    // the port was set up with (the caller's contract, as for DPDK's
    // inline); the callback slot is read atomically, as the inline does,
    // since another thread may add one.
    unsafe {
        (
            *qdata.data.add(q),
            (*qdata
                .clbk
                .add(q)
                .cast::<std::sync::atomic::AtomicPtr<std::ffi::c_void>>())
            .load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}
