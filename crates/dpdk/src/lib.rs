//! A small safe layer over the system DPDK (via `dpdk-sys`): EAL
//! initialisation, mempools, owning mbufs and fixed-size bursts, ethdev ports,
//! launching work on lcores, and the TSC.
//!
//! This crate and `dpdk-sys` are the only places in bootcache that contain
//! `unsafe`; every block says why it is sound.
#![warn(missing_docs, unreachable_pub)]

mod eal;
mod error;
pub mod flow;
pub mod lcore;
mod mapped;
mod mbuf;
mod mempool;
mod port;
pub mod simd;
pub mod spsc;

pub use eal::{Eal, EalArgs};
pub use error::{Error, Result};
pub use mapped::MappedFile;
pub use mbuf::{copy_streaming, Burst, CopySource, Mbuf, BURST_SIZE};
pub use mempool::Mempool;
pub use port::{Link, Port, PortConfig, PortInfo, PortStats, RSS_IP};

/// Current value of the time-stamp counter (cycles).
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC reads a counter; no memory is touched. Inlined here, it
    // saves a call into the shim on every loop iteration.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the TSC; no memory is touched.
    unsafe {
        dpdk_sys::bc_get_tsc_cycles()
    }
}

/// Asks for the cache line holding `p` in the exclusive state
/// (`prefetchw`), so that a store to it later does not wait for another
/// core to give the line up: for lines the fast path writes rarely and
/// another core reads in between (a ring slot, a copy buffer's header).
#[inline(always)]
pub fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and changes no
    // memory or flags; PREFETCHW (0F 0D /1) is a no-op on a CPU without it.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Orders every earlier store, streaming ones included, before every later
/// store (`sfence`): what makes a copy written by [`copy_streaming`]
/// visible to another core before the release store that hands it over.
#[inline(always)]
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a store fence touches no memory; SSE is part of every x86_64
    // target.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// TSC frequency in Hz, as measured by the EAL (0 before EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init; no preconditions.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// The DPDK version string of the linked library, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(dpdk_sys::rte_version()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
