//! Owning packet buffers and fixed-size bursts of them.

use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

use crate::error::{Error, Result};
use crate::mempool::Mempool;

/// Packets per rx/tx burst.
pub const BURST_SIZE: usize = 32;

/// An owned single-segment packet buffer; freed (refcount decremented) on drop.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an Mbuf is uniquely owned (or, after `share`, owns one reference of
// an atomic refcount); DPDK mbufs may be passed between lcores.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes a fresh mbuf from `pool`.
    pub fn alloc(pool: &Mempool) -> Result<Mbuf> {
        // SAFETY: the pool is valid for the process lifetime.
        let p = unsafe { dpdk_sys::bc_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(p)
            .map(Mbuf)
            .ok_or_else(|| Error::rte("allocating an mbuf (pool empty)", libc_enobufs()))
    }

    /// Allocates an mbuf holding a copy of `bytes` (tests, the slow path's frames).
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Result<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| Error::rte("frame longer than 65535 bytes", libc_enobufs()))?;
        let dst = m
            .append(len)
            .ok_or_else(|| Error::rte("frame does not fit in one mbuf", libc_enobufs()))?;
        dst.copy_from_slice(bytes);
        Ok(m)
    }

    #[inline(always)]
    fn raw(&self) -> &rte_mbuf {
        // SAFETY: the pointer is non-null and points to a live mbuf we hold a reference to.
        unsafe { self.0.as_ref() }
    }

    /// The frame bytes of the first segment.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off is the start of data_len initialised bytes
        // inside the mbuf's buffer, which lives while we hold a reference.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// The frame bytes, writable, when this is the only reference to them.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        let m = self.raw();
        let (addr, off, len) = (
            m.buf_addr as *mut u8,
            m.data_off as usize,
            m.data_len as usize,
        );
        // SAFETY: as in `data`; refcount 1 and a direct buffer mean no one else
        // can observe the bytes, and &mut self prevents aliasing through us.
        Some(unsafe { std::slice::from_raw_parts_mut(addr.add(off), len) })
    }

    /// Grows the data by `len` bytes at the tail and returns them, if there is
    /// room and the buffer is not shared.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: the mbuf is valid and exclusively ours; append checks tailroom.
        let p = unsafe { dpdk_sys::bc_pktmbuf_append(self.0.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: append returned a pointer to `len` bytes inside our buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len as usize) })
    }

    /// An mbuf of `pool` as the pool keeps it (refcount 1, one segment, no
    /// field reset), for [`CopySource`].
    #[inline(always)]
    fn alloc_unreset(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the process lifetime; a pool's free
        // mbufs have refcount 1, no next segment and one segment, so the
        // result may be dropped (freed) as it is.
        NonNull::new(unsafe { dpdk_sys::bc_mbuf_raw_alloc(pool.as_ptr()) }).map(Mbuf)
    }

    /// [`Mbuf::alloc`] without the error value, for the fast path.
    #[inline(always)]
    fn alloc_raw(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the process lifetime.
        NonNull::new(unsafe { dpdk_sys::bc_pktmbuf_alloc(pool.as_ptr()) }).map(Mbuf)
    }

    /// Hints the CPU to load the first cache line of the frame data.
    #[inline(always)]
    pub fn prefetch_data(&self) {
        let m = self.raw();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and touches no memory semantically;
        // the address is inside the mbuf's buffer anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                (m.buf_addr as *const i8).wrapping_add(m.data_off as usize),
                std::arch::x86_64::_MM_HINT_T0,
            )
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = m;
    }

    /// Total packet length (all segments).
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Number of segments.
    pub fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The port the frame was received on.
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Current reference count.
    pub fn refcount(&self) -> u16 {
        // SAFETY: reads the atomic refcount of a live mbuf.
        unsafe { dpdk_sys::bc_mbuf_refcnt_read(self.0.as_ptr()) }
    }

    fn is_exclusive(&self) -> bool {
        // RTE_MBUF_F_INDIRECT | RTE_MBUF_F_EXTERNAL live in the top bits of ol_flags.
        const ATTACHED: u64 = (1 << 62) | (1 << 61);
        self.refcount() == 1 && self.raw().ol_flags & ATTACHED == 0
    }

    /// A second owner of the same buffer (zero-copy): increments the refcount.
    /// Neither owner can then write the data ([`Mbuf::data_mut`] returns None).
    #[inline]
    pub fn share(&self) -> Mbuf {
        // SAFETY: we hold a reference, so the mbuf is live; the new Mbuf owns
        // the reference we add here and releases it on drop.
        unsafe { dpdk_sys::bc_mbuf_refcnt_update(self.0.as_ptr(), 1) };
        Mbuf(self.0)
    }

    /// Gives up ownership without freeing (the raw pointer now owns the reference).
    pub fn into_raw(self) -> *mut rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Retakes ownership of a raw mbuf pointer.
    ///
    /// # Safety
    /// `p` must be a live mbuf whose reference the caller owns and gives up.
    pub unsafe fn from_raw(p: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own one reference; rte_pktmbuf_free drops it and returns
        // the buffer to its pool when it was the last.
        unsafe { dpdk_sys::bc_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Copies of frames into buffers of one pool, each buffer taken one copy
/// ahead and its two header lines prefetched for writing. The header of a
/// copy's buffer was last read by the core that consumed the copy, so
/// resetting it at once waits for that core to give the lines up (the
/// reset was 1.1% of the forwarding thread on the pcap mix with 1% of
/// frames copied, perf); taken ahead, the wait overlaps the frames
/// forwarded until the next copy.
#[derive(Debug)]
pub struct CopySource {
    pool: Mempool,
    next: Option<Mbuf>,
}

impl CopySource {
    /// Copies into buffers of `pool`.
    pub fn new(pool: Mempool) -> CopySource {
        CopySource { pool, next: None }
    }

    /// A copy of `src`'s frame (first segment) in the buffer taken ahead;
    /// then takes the next one. Its bytes are written with non-temporal
    /// stores (the copy's lines go to memory, not to this core's cache, so
    /// the reader on another core shares no line this core writes again
    /// soon) and not fenced ([`copy_streaming`]): run
    /// [`crate::store_fence`] before handing it to another core. `None`
    /// when the pool is empty or the frame does not fit one of its buffers.
    #[inline]
    pub fn copy(&mut self, src: &Mbuf) -> Option<Mbuf> {
        let data = src.data();
        let len = u16::try_from(data.len()).ok()?;
        let mut m = match self.next.take() {
            Some(m) => {
                // SAFETY: the mbuf is ours alone (taken from the pool, not
                // shared) and has one segment, as rte_pktmbuf_reset needs.
                unsafe { dpdk_sys::bc_pktmbuf_reset(m.0.as_ptr()) };
                m
            }
            None => Mbuf::alloc_raw(&self.pool)?,
        };
        self.next = Mbuf::alloc_unreset(&self.pool);
        if let Some(n) = &self.next {
            let h = n.0.as_ptr() as *const u8;
            crate::prefetch_write(h);
            crate::prefetch_write(h.wrapping_add(64));
        }
        let dst = m.append(len)?;
        copy_streaming(dst, data);
        Some(m)
    }
}

/// Copies `src` into `dst` (as many bytes as the shorter holds) with
/// non-temporal stores where `dst` is 16-byte aligned, without a fence:
/// the caller runs [`crate::store_fence`] before it hands the copy over
/// (a release store, e.g. a ring push). The fence waits
/// until the streaming stores have left the core (hundreds of cycles right
/// after a copy, little a pass later), so the fast path fences once before
/// it publishes a pass's copies instead of after each copy.
#[inline]
pub fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        // Plain stores up to the first 16-byte boundary, streaming stores
        // for the aligned body, plain stores for the tail.
        let head = dst.as_ptr().align_offset(16).min(n);
        let body = (n - head) & !15;
        dst[..head].copy_from_slice(&src[..head]);
        let mut off = head;
        while off < head + body {
            // SAFETY: off + 16 <= head + body <= n, so both 16-byte ranges
            // are inside the slices; the load is unaligned-safe and the
            // destination is 16-byte aligned (head brought it there).
            // SSE2 is part of every x86_64 target.
            unsafe {
                let v = _mm_loadu_si128(src.as_ptr().add(off) as *const __m128i);
                _mm_stream_si128(dst.as_mut_ptr().add(off) as *mut __m128i, v);
            }
            off += 16;
        }
        dst[off..].copy_from_slice(&src[off..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

fn libc_enobufs() -> i32 {
    105 // ENOBUFS on Linux
}

/// Up to [`BURST_SIZE`] owned mbufs in a fixed array: no allocation per burst.
/// Dropping a burst frees what it still holds.
pub struct Burst {
    len: usize,
    pkts: [*mut rte_mbuf; BURST_SIZE],
}

// SAFETY: a Burst owns its mbufs exactly like a [Mbuf; N] would.
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Burst::new()
    }
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Burst {
        Burst {
            len: 0,
            pkts: [std::ptr::null_mut(); BURST_SIZE],
        }
    }

    /// Number of mbufs held.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more mbufs fit.
    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Free slots left.
    #[inline(always)]
    pub fn room(&self) -> usize {
        BURST_SIZE - self.len
    }

    /// The held mbufs.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: slots 0..len hold non-null owned mbuf pointers, and Mbuf is
        // repr(transparent) over NonNull<rte_mbuf>, which has the layout of the pointer.
        unsafe { std::slice::from_raw_parts(self.pkts.as_ptr() as *const Mbuf, self.len) }
    }

    /// Adds an mbuf; gives it back when the burst is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Removes and returns all held mbufs, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        let n = std::mem::replace(&mut self.len, 0);
        self.pkts[..n].iter().map(|&p| {
            // SAFETY: slots 0..n held owned non-null mbufs; len is already 0,
            // so ownership passes to the iterator's items exactly once.
            // (If the iterator is dropped early the rest leak, never double-free.)
            unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) }
        })
    }

    /// Visits the mbufs from index `from` on, in order; those for which `take`
    /// returns true are moved out to `sink`, the rest stay (order kept).
    /// `take` also sees the index of the next mbuf, for prefetching.
    #[inline(always)]
    pub fn extract_from(
        &mut self,
        from: usize,
        mut take: impl FnMut(&Mbuf, Option<&Mbuf>) -> bool,
        mut sink: impl FnMut(Mbuf),
    ) {
        let start = from.min(self.len);
        let mut keep = start;
        for i in start..self.len {
            let slots = self.as_slice();
            let (cur, next) = (&slots[i], slots.get(i + 1));
            if take(cur, next) {
                // SAFETY: slot i holds an owned non-null mbuf; it is moved
                // out exactly once and its slot is overwritten or cut below.
                sink(unsafe { Mbuf::from_raw(NonNull::new_unchecked(self.pkts[i])) });
            } else {
                self.pkts[keep] = self.pkts[i];
                keep += 1;
            }
        }
        self.len = keep;
    }

    /// Frees every held mbuf; returns how many.
    pub fn free_all(&mut self) -> usize {
        let n = std::mem::replace(&mut self.len, 0);
        if n > 0 {
            // SAFETY: slots 0..n hold owned mbufs; len is reset so they are not freed twice.
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), n as u32) };
        }
        n
    }

    /// Raw access for rx: the free tail of the array.
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut rte_mbuf, u16) {
        // SAFETY (of later use): callers write at most `room` pointers there.
        (self.pkts[self.len..].as_mut_ptr(), self.room() as u16)
    }

    /// Records that rx wrote `n` owned mbufs into the spare slots.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_SIZE);
        self.len += n;
    }

    /// Raw access for tx: the held pointers.
    pub(crate) fn held_raw(&mut self) -> (*mut *mut rte_mbuf, u16) {
        (self.pkts.as_mut_ptr(), self.len as u16)
    }

    /// Forgets the first `n` mbufs (tx took ownership); the rest move to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        // The usual case, the driver took everything, moves nothing: no
        // memmove call per burst.
        if n < self.len {
            self.pkts.copy_within(n..self.len, 0);
        }
        self.len -= n;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}
