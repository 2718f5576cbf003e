//! Packet-buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A DPDK packet-mbuf pool. Pools live as long as the process (mbufs hold a
/// pointer to their pool, so freeing one safely would need every mbuf back).
#[derive(Debug, Clone, Copy)]
pub struct Mempool(NonNull<dpdk_sys::rte_mempool>);

// SAFETY: rte_mempool is designed for concurrent use from many lcores
// (lock-free ring plus per-lcore caches); the handle is just a pointer.
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations through a shared handle are thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (including
    /// headroom), a per-lcore cache of `cache` mbufs, on `socket` (-1: any).
    pub fn create(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| Error::InvalidName(name.into()))?;
        // SAFETY: cname is a valid C string for the duration of the call; the
        // EAL must be initialised, which every DPDK call here assumes and which
        // DPDK reports as an error (E_RTE_NO_CONFIG) otherwise.
        let p = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket)
        };
        NonNull::new(p)
            .map(Mempool)
            .ok_or_else(|| Error::last(format!("creating mbuf pool {name:?} ({n} mbufs)")))
    }

    /// The raw pool pointer (for the `dpdk` crate's own use).
    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.0.as_ptr()
    }

    /// Mbufs currently free in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool pointer is valid for the process lifetime.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.0.as_ptr()) }
    }

    /// Mbufs currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool pointer is valid for the process lifetime.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.0.as_ptr()) }
    }
}
