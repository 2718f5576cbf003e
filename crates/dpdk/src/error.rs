//! Typed errors carrying rte_errno's text.

use std::ffi::CStr;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to DPDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The EAL was already initialised (or an init was attempted) in this process.
    #[error("the DPDK EAL is already initialised in this process")]
    AlreadyInitialised,
    /// An argument for the EAL contained a NUL byte.
    #[error("EAL argument contains a NUL byte: {0:?}")]
    NulInArgument(String),
    /// A DPDK call failed; `errno` is the (positive) DPDK/libc error number.
    #[error("{op}: {msg}")]
    Rte {
        /// What we were doing.
        op: String,
        /// The error number DPDK reported.
        errno: i32,
        /// rte_strerror's text for it.
        msg: String,
    },
    /// A port id that DPDK does not know.
    #[error("no DPDK port {0} (ports available: {1})")]
    NoSuchPort(u16, u16),
    /// An lcore that is not an enabled worker of this process.
    #[error("lcore {0} is not an enabled worker lcore")]
    NotAWorker(u32),
    /// A name (pool, ring) that is not valid for DPDK.
    #[error("invalid DPDK object name {0:?}")]
    InvalidName(String),
}

impl Error {
    /// Builds an error from a DPDK error number (positive or negative).
    pub(crate) fn rte(op: impl Into<String>, errno: i32) -> Error {
        let errno = errno.abs();
        Error::Rte {
            op: op.into(),
            errno,
            msg: strerror(errno),
        }
    }

    /// Builds an error from the calling thread's current `rte_errno`.
    pub(crate) fn last(op: impl Into<String>) -> Error {
        Error::rte(op, rte_errno())
    }
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: rte_errno is a per-thread variable; reading it has no preconditions.
    unsafe { dpdk_sys::bc_errno() }
}

/// rte_strerror's text for an error number.
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string that
    // stays valid at least until the next call on this thread; we copy it now.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// Converts a DPDK "0 or negative errno" return into a Result.
pub(crate) fn check(op: impl FnOnce() -> String, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(Error::rte(op(), ret))
    } else {
        Ok(())
    }
}
