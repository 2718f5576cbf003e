//! EAL initialisation: once per process.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Set by the first init attempt; DPDK cannot initialise twice (nor retry).
static EAL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is initialised in this process.
///
/// Dropping it does not clean up the EAL: call [`Eal::cleanup`] at exit.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

/// What [`Eal::init`] leaves for the application.
#[derive(Debug)]
pub struct EalArgs {
    /// The EAL handle.
    pub eal: Eal,
    /// The program name followed by the arguments after `--`.
    pub app_args: Vec<String>,
}

impl Eal {
    /// Initialises the EAL from a full argv (program name first). Arguments
    /// after `--` are returned for the application.
    ///
    /// A second call in the same process returns [`Error::AlreadyInitialised`].
    pub fn init<I, S>(args: I) -> Result<EalArgs>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let cstrings = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| Error::NulInArgument(a.clone())))
            .collect::<Result<Vec<_>>>()?;
        if EAL_CLAIMED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialised);
        }
        // The EAL keeps pointers into argv (and may permute it): leak both the
        // strings and the array so they live as long as the process.
        let argv: &'static mut [*mut c_char] = Box::leak(
            cstrings
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let argc = argv.len() as c_int;
        // SAFETY: argv holds argc valid NUL-terminated strings that are never
        // freed; the EAL has not been initialised in this process (checked above).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::last("EAL initialisation"));
        }
        let consumed = ret as usize;
        let app_args = argv[consumed.min(argv.len())..]
            .iter()
            // SAFETY: each pointer is one of the strings leaked above (the EAL
            // only permutes the array, and sets argv[ret] to the program name).
            .map(|&p| {
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>();
        let app_args = if app_args.is_empty() {
            vec![args.first().cloned().unwrap_or_default()]
        } else {
            app_args
        };
        Ok(EalArgs {
            eal: Eal { _private: () },
            app_args,
        })
    }

    /// Releases EAL resources (hugepage files, telemetry socket). Ports should be
    /// stopped and closed first.
    pub fn cleanup(self) -> Result<()> {
        // SAFETY: called once (consumes the handle) after the app is done with DPDK.
        let ret = unsafe { dpdk_sys::rte_eal_cleanup() };
        crate::error::check(|| "EAL cleanup".into(), ret)
    }
}
