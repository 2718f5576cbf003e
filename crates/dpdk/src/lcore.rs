//! Running work on EAL lcores.

use std::ffi::{c_int, c_void};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

/// The id of the calling lcore, or None on a thread the EAL does not manage.
pub fn current() -> Option<u32> {
    // SAFETY: reads a per-thread variable.
    let id = unsafe { dpdk_sys::bc_lcore_id() };
    (id != dpdk_sys::LCORE_ID_ANY).then_some(id)
}

/// The main lcore (the thread that ran EAL init).
pub fn main_lcore() -> u32 {
    // SAFETY: reads EAL configuration.
    unsafe { dpdk_sys::rte_get_main_lcore() }
}

/// Enabled worker lcores (all lcores but the main one), in order.
pub fn workers() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: rte_get_next_lcore iterates EAL configuration; start from -1
    // (u32::MAX) as RTE_LCORE_FOREACH_WORKER does.
    let mut i = unsafe { dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0) };
    while i < dpdk_sys::RTE_MAX_LCORE {
        out.push(i);
        // SAFETY: as above.
        i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
    }
    out
}

/// A job running on a worker lcore; [`Running::wait`] returns its result.
#[derive(Debug)]
#[must_use = "wait for the lcore, or it keeps running"]
pub struct Running {
    lcore: u32,
}

impl Running {
    /// The lcore the job runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Blocks until the job returns; gives its return value.
    pub fn wait(self) -> i32 {
        // SAFETY: the lcore was launched by us and is waited for once (self is consumed).
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) }
    }
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, handed to exactly one run.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    // Unwinding across the C frame would be undefined behaviour: stop it here.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        Ok(v) => v,
        Err(_) => {
            log::error!("lcore job panicked");
            -1
        }
    }
}

/// Runs `job` on worker `lcore`, which must be idle.
pub fn launch<F>(lcore: u32, job: F) -> Result<Running>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    if !workers().contains(&lcore) {
        return Err(Error::NotAWorker(lcore));
    }
    let arg = Box::into_raw(Box::new(Box::new(job) as Job)) as *mut c_void;
    // SAFETY: trampoline has the lcore_function_t signature and takes ownership
    // of `arg`; if the launch fails we take it back below.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret != 0 {
        // SAFETY: the launch failed, so the trampoline never received `arg`.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(Error::rte(format!("launching on lcore {lcore}"), ret));
    }
    Ok(Running { lcore })
}
