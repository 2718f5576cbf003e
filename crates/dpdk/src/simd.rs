//! Four 32-bit lanes compared at once, for the fast path's first stage
//! over four frames (SSE2, part of every x86_64 target; plain arrays
//! elsewhere), and eight at once with AVX2 where the CPU has it
//! ([`Avx2`], [`U32x8`]; x86_64 only). Safe to use: every operation is
//! defined for every value, and an AVX2 value exists only on a CPU that
//! runs AVX2.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m128i, _mm_and_si128, _mm_andnot_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_cmpgt_epi32,
    _mm_loadu_si128, _mm_movemask_ps, _mm_or_si128, _mm_set1_epi32, _mm_set_epi32, _mm_srli_epi32,
    _mm_unpackhi_epi32, _mm_unpackhi_epi64, _mm_unpacklo_epi32, _mm_unpacklo_epi64,
};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256i, _mm256_and_si256, _mm256_andnot_si256, _mm256_castsi256_ps, _mm256_cmpeq_epi32,
    _mm256_cmpgt_epi32, _mm256_movemask_ps, _mm256_or_si256, _mm256_set1_epi32, _mm256_set_m128i,
    _mm256_srli_epi32, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32,
    _mm256_unpacklo_epi64,
};

/// Lane-wise operations that [`U32x4`] and [`U32x8`] share, so that one
/// generic computation serves both widths. Values are made by each type's
/// own constructors (an AVX2 one needs an [`Avx2`]).
pub trait Lanes: Copy {
    /// Lane-wise `self & o`.
    fn and(self, o: Self) -> Self;
    /// Lane-wise `self | o`.
    fn or(self, o: Self) -> Self;
    /// Lane-wise `o & !self`.
    fn and_not(self, o: Self) -> Self;
    /// Lane-wise `self == o`: all ones where equal.
    fn eq(self, o: Self) -> Self;
    /// Lane-wise `self > o` as signed 32-bit integers: all ones where
    /// greater.
    fn gt_signed(self, o: Self) -> Self;
    /// Lane-wise logical `self >> N`.
    fn shr<const N: i32>(self) -> Self;
    /// The top bit of each lane, lane `i` in bit `i`.
    fn mask(self) -> u32;
}

impl Lanes for U32x4 {
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        U32x4::and(self, o)
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        U32x4::or(self, o)
    }
    #[inline(always)]
    fn and_not(self, o: Self) -> Self {
        U32x4::and_not(self, o)
    }
    #[inline(always)]
    fn eq(self, o: Self) -> Self {
        U32x4::eq(self, o)
    }
    #[inline(always)]
    fn gt_signed(self, o: Self) -> Self {
        U32x4::gt_signed(self, o)
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        U32x4::shr::<N>(self)
    }
    #[inline(always)]
    fn mask(self) -> u32 {
        U32x4::mask(self)
    }
}

/// Proof that this CPU runs AVX2: only [`Avx2::detect`] makes one, so
/// whoever holds one may use [`U32x8`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU runs AVX2 (always `None` off x86_64). Asks
    /// once per call (a cached flag): call it when a table is built, not
    /// per frame.
    pub fn detect() -> Option<Avx2> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Avx2(()));
        }
        None
    }

    /// Calls `f` from a function compiled with AVX2 enabled, so that what
    /// `f` inlines ([`U32x8`]'s operations, all `#[inline(always)]`)
    /// becomes AVX2 instructions in that one body: a function per
    /// operation, not inlined into code compiled without AVX2, would cost
    /// a call each. Give it a closure marked `#[inline(always)]` that
    /// calls `#[inline(always)]` functions and closures only (a large
    /// closure is otherwise left out of line, compiled without AVX2, and
    /// calls every operation): then `run` costs one call, not one per
    /// operation (check with `objdump -d`: no `call` to a `core_arch`
    /// function).
    #[inline(always)]
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: `self` exists only where `detect` found AVX2, so the
            // CPU runs the code `with_avx2` is compiled to.
            unsafe { with_avx2(f) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        f()
    }
}

/// Eight `u32` lanes in two 128-bit halves (AVX2); a comparison gives all
/// ones or all zeros per lane. Only made with an [`Avx2`], so every value
/// proves the CPU runs AVX2 and its operations take none. Fast only inside
/// [`Avx2::run`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct U32x8(__m256i);

#[cfg(target_arch = "x86_64")]
impl std::fmt::Debug for U32x8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("U32x8").field(&self.to_array()).finish()
    }
}

// SAFETY (every `unsafe` block below): a `U32x8` or an `Avx2` exists only
// where `Avx2::detect` found AVX2, and every method takes one of them, so
// the CPU runs these AVX2 (and AVX) intrinsics; they only compute on
// registers: no memory is read or written (but in `load2`, see there).
#[cfg(target_arch = "x86_64")]
impl U32x8 {
    /// Lanes 0–3 from `lo` and 4–7 from `hi`, each lane a little-endian
    /// `u32` (two unaligned 16-byte loads, the second into the upper
    /// half).
    #[inline(always)]
    pub fn load2(_: Avx2, lo: &[u8; 16], hi: &[u8; 16]) -> U32x8 {
        // SAFETY: as above; `lo` and `hi` are 16 readable bytes each, and
        // `_mm_loadu_si128` takes any alignment.
        U32x8(unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(hi.as_ptr().cast::<__m128i>()),
                _mm_loadu_si128(lo.as_ptr().cast::<__m128i>()),
            )
        })
    }

    /// `v` in every lane.
    #[inline(always)]
    pub fn splat(_: Avx2, v: u32) -> U32x8 {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_set1_epi32(v as i32) })
    }

    /// [`U32x4::transpose`] in each half: lane `j` of result `i` is lane
    /// `i` of `rows[j]`, and lane `4 + j` lane `4 + i` (four rows that each
    /// hold two frames' words, one per half, become one register per word
    /// of eight frames, frame `j` of the low halves in lane `j`, of the
    /// high halves in lane `4 + j`).
    #[inline(always)]
    pub fn transpose(rows: [U32x8; 4]) -> [U32x8; 4] {
        let [a, b, c, d] = rows.map(|r| r.0);
        // SAFETY: see above.
        unsafe {
            let (ab_lo, cd_lo) = (_mm256_unpacklo_epi32(a, b), _mm256_unpacklo_epi32(c, d));
            let (ab_hi, cd_hi) = (_mm256_unpackhi_epi32(a, b), _mm256_unpackhi_epi32(c, d));
            [
                U32x8(_mm256_unpacklo_epi64(ab_lo, cd_lo)),
                U32x8(_mm256_unpackhi_epi64(ab_lo, cd_lo)),
                U32x8(_mm256_unpacklo_epi64(ab_hi, cd_hi)),
                U32x8(_mm256_unpackhi_epi64(ab_hi, cd_hi)),
            ]
        }
    }

    /// The lanes as an array (tests, debugging).
    pub fn to_array(self) -> [u32; 8] {
        // SAFETY: __m256i and [u32; 8] have the same size, and every bit
        // pattern is a valid value of both.
        unsafe { std::mem::transmute::<__m256i, [u32; 8]>(self.0) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for U32x8 {
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_and_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_or_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn and_not(self, o: Self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_andnot_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn eq(self, o: Self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_cmpeq_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn gt_signed(self, o: Self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_cmpgt_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        // SAFETY: see above.
        U32x8(unsafe { _mm256_srli_epi32::<N>(self.0) })
    }
    #[inline(always)]
    fn mask(self) -> u32 {
        // SAFETY: see above.
        (unsafe { _mm256_movemask_ps(_mm256_castsi256_ps(self.0)) }) as u32
    }
}

/// Four `u32` lanes; a comparison gives all ones or all zeros per lane.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct U32x4(
    #[cfg(target_arch = "x86_64")] __m128i,
    #[cfg(not(target_arch = "x86_64"))] [u32; 4],
);

impl std::fmt::Debug for U32x4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("U32x4").field(&self.to_array()).finish()
    }
}

// SAFETY (every `unsafe` block below): the intrinsics are SSE2, which every
// x86_64 CPU has (the target's baseline), and they only compute on
// registers: no memory is read or written (but in `load`, see there).
#[cfg(target_arch = "x86_64")]
impl U32x4 {
    /// Lanes from 16 bytes, each lane a little-endian `u32` (one unaligned
    /// load).
    #[inline(always)]
    pub fn load(b: &[u8; 16]) -> U32x4 {
        // SAFETY: SSE2 as above; `b` is 16 readable bytes, and
        // `_mm_loadu_si128` takes any alignment.
        U32x4(unsafe { _mm_loadu_si128(b.as_ptr().cast::<__m128i>()) })
    }

    /// The 4×4 transpose: lane `j` of result `i` is lane `i` of `rows[j]`
    /// (four frames' words loaded whole become one register per word; 8
    /// unpacks, fewer when some results are unused).
    #[inline(always)]
    pub fn transpose(rows: [U32x4; 4]) -> [U32x4; 4] {
        let [a, b, c, d] = rows.map(|r| r.0);
        // SAFETY: see above.
        unsafe {
            let (ab_lo, cd_lo) = (_mm_unpacklo_epi32(a, b), _mm_unpacklo_epi32(c, d));
            let (ab_hi, cd_hi) = (_mm_unpackhi_epi32(a, b), _mm_unpackhi_epi32(c, d));
            [
                U32x4(_mm_unpacklo_epi64(ab_lo, cd_lo)),
                U32x4(_mm_unpackhi_epi64(ab_lo, cd_lo)),
                U32x4(_mm_unpacklo_epi64(ab_hi, cd_hi)),
                U32x4(_mm_unpackhi_epi64(ab_hi, cd_hi)),
            ]
        }
    }

    /// Lanes `[a[0], a[1], a[2], a[3]]`.
    #[inline(always)]
    pub fn new(a: [u32; 4]) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_set_epi32(a[3] as i32, a[2] as i32, a[1] as i32, a[0] as i32) })
    }

    /// `v` in every lane.
    #[inline(always)]
    pub fn splat(v: u32) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_set1_epi32(v as i32) })
    }

    /// Lane-wise `self & o`.
    #[inline(always)]
    pub fn and(self, o: U32x4) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_and_si128(self.0, o.0) })
    }

    /// Lane-wise `self | o`.
    #[inline(always)]
    pub fn or(self, o: U32x4) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_or_si128(self.0, o.0) })
    }

    /// Lane-wise `o & !self`.
    #[inline(always)]
    pub fn and_not(self, o: U32x4) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_andnot_si128(self.0, o.0) })
    }

    /// Lane-wise `self == o`: all ones where equal.
    #[inline(always)]
    pub fn eq(self, o: U32x4) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_cmpeq_epi32(self.0, o.0) })
    }

    /// Lane-wise `self > o` as signed 32-bit integers: all ones where
    /// greater (callers keep both below 2^31 to compare unsigned values).
    #[inline(always)]
    pub fn gt_signed(self, o: U32x4) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_cmpgt_epi32(self.0, o.0) })
    }

    /// Lane-wise logical `self >> N`.
    #[inline(always)]
    pub fn shr<const N: i32>(self) -> U32x4 {
        // SAFETY: see above.
        U32x4(unsafe { _mm_srli_epi32::<N>(self.0) })
    }

    /// The top bit of each lane, lane `i` in bit `i`: for a comparison's
    /// result, which lanes are true.
    #[inline(always)]
    pub fn mask(self) -> u32 {
        // SAFETY: see above.
        (unsafe { _mm_movemask_ps(_mm_castsi128_ps(self.0)) }) as u32
    }

    /// The lanes as an array (tests, debugging).
    pub fn to_array(self) -> [u32; 4] {
        // SAFETY: __m128i and [u32; 4] have the same size, and every bit
        // pattern is a valid value of both.
        unsafe { std::mem::transmute::<__m128i, [u32; 4]>(self.0) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl U32x4 {
    /// Lanes from 16 bytes, each lane a little-endian `u32`.
    #[inline(always)]
    pub fn load(b: &[u8; 16]) -> U32x4 {
        U32x4(std::array::from_fn(|i| {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        }))
    }

    /// The 4×4 transpose: lane `j` of result `i` is lane `i` of `rows[j]`.
    #[inline(always)]
    pub fn transpose(rows: [U32x4; 4]) -> [U32x4; 4] {
        std::array::from_fn(|i| U32x4(std::array::from_fn(|j| rows[j].0[i])))
    }

    /// Lanes `[a[0], a[1], a[2], a[3]]`.
    #[inline(always)]
    pub fn new(a: [u32; 4]) -> U32x4 {
        U32x4(a)
    }

    /// `v` in every lane.
    #[inline(always)]
    pub fn splat(v: u32) -> U32x4 {
        U32x4([v; 4])
    }

    #[inline(always)]
    fn map2(self, o: U32x4, f: impl Fn(u32, u32) -> u32) -> U32x4 {
        U32x4(std::array::from_fn(|i| f(self.0[i], o.0[i])))
    }

    /// Lane-wise `self & o`.
    #[inline(always)]
    pub fn and(self, o: U32x4) -> U32x4 {
        self.map2(o, |a, b| a & b)
    }

    /// Lane-wise `self | o`.
    #[inline(always)]
    pub fn or(self, o: U32x4) -> U32x4 {
        self.map2(o, |a, b| a | b)
    }

    /// Lane-wise `o & !self`.
    #[inline(always)]
    pub fn and_not(self, o: U32x4) -> U32x4 {
        self.map2(o, |a, b| !a & b)
    }

    /// Lane-wise `self == o`: all ones where equal.
    #[inline(always)]
    pub fn eq(self, o: U32x4) -> U32x4 {
        self.map2(o, |a, b| if a == b { u32::MAX } else { 0 })
    }

    /// Lane-wise `self > o` as signed 32-bit integers: all ones where greater.
    #[inline(always)]
    pub fn gt_signed(self, o: U32x4) -> U32x4 {
        self.map2(o, |a, b| if (a as i32) > (b as i32) { u32::MAX } else { 0 })
    }

    /// Lane-wise logical `self >> N`.
    #[inline(always)]
    pub fn shr<const N: i32>(self) -> U32x4 {
        U32x4(self.0.map(|a| a >> N))
    }

    /// The top bit of each lane, lane `i` in bit `i`.
    #[inline(always)]
    pub fn mask(self) -> u32 {
        (0..4).fold(0, |m, i| m | (self.0[i] >> 31) << i)
    }

    /// The lanes as an array.
    pub fn to_array(self) -> [u32; 4] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::{Lanes, U32x4};

    /// Each half of a `U32x8` computes what a `U32x4` of the same lanes
    /// does: loads, the in-lane transpose, every operation and the mask
    /// (lane `4 + i` in bit `4 + i`). Fails where the CPU has no AVX2
    /// rather than passing untested.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn eight_lanes_compute_like_two_fours() {
        use super::{Avx2, U32x8};
        let avx2 = Avx2::detect().expect("this CPU has no AVX2: U32x8 is untested here");
        let bytes: [[u8; 16]; 8] = std::array::from_fn(|k| {
            std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ (k as u8 * 16))
        });
        let eight = avx2.run(
            #[inline(always)]
            || {
                U32x8::transpose(std::array::from_fn(|r| {
                    U32x8::load2(avx2, &bytes[r], &bytes[r + 4])
                }))
            },
        );
        let lo = U32x4::transpose(std::array::from_fn(|r| U32x4::load(&bytes[r])));
        let hi = U32x4::transpose(std::array::from_fn(|r| U32x4::load(&bytes[r + 4])));
        let halves = |v: U32x8| {
            let a = v.to_array();
            ([a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]])
        };
        for i in 0..4 {
            assert_eq!(halves(eight[i]), (lo[i].to_array(), hi[i].to_array()));
        }
        let (a8, b8) = (eight[0], eight[1].or(U32x8::splat(avx2, 0x8000_0000)));
        let (a4, b4) = (
            [lo[0], hi[0]],
            [lo[1], hi[1]].map(|v| v.or(U32x4::splat(0x8000_0000))),
        );
        let both = |f: &dyn Fn(U32x8, U32x8) -> U32x8, g: &dyn Fn(U32x4, U32x4) -> U32x4| {
            assert_eq!(
                halves(f(a8, b8)),
                (g(a4[0], b4[0]).to_array(), g(a4[1], b4[1]).to_array())
            );
        };
        both(&|x, y| x.and(y), &|x, y| x.and(y));
        both(&|x, y| x.or(y), &|x, y| x.or(y));
        both(&|x, y| x.and_not(y), &|x, y| x.and_not(y));
        both(&|x, y| x.eq(y), &|x, y| x.eq(y));
        both(&|x, y| x.gt_signed(y), &|x, y| x.gt_signed(y));
        both(&|x, _| x.shr::<26>(), &|x, _| x.shr::<26>());
        let m8 = a8.gt_signed(b8);
        let (m4lo, m4hi) = (a4[0].gt_signed(b4[0]).mask(), a4[1].gt_signed(b4[1]).mask());
        assert_eq!(m8.mask(), m4lo | m4hi << 4);
    }

    #[test]
    fn lanes_compute_like_scalars() {
        let vals = [
            0u32,
            1,
            5,
            6,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
            0x0045_0008,
        ];
        for &a0 in &vals {
            for &b0 in &vals {
                let a = U32x4::new([a0, b0, a0 ^ 1, 7]);
                let b = U32x4::new([b0, b0, a0, 7]);
                let want = |f: &dyn Fn(u32, u32) -> u32| {
                    let (x, y) = (a.to_array(), b.to_array());
                    [f(x[0], y[0]), f(x[1], y[1]), f(x[2], y[2]), f(x[3], y[3])]
                };
                let t = |c: bool| if c { u32::MAX } else { 0 };
                assert_eq!(a.and(b).to_array(), want(&|x, y| x & y));
                assert_eq!(a.or(b).to_array(), want(&|x, y| x | y));
                assert_eq!(a.and_not(b).to_array(), want(&|x, y| !x & y));
                assert_eq!(a.eq(b).to_array(), want(&|x, y| t(x == y)));
                assert_eq!(
                    a.gt_signed(b).to_array(),
                    want(&|x, y| t(x as i32 > y as i32))
                );
                assert_eq!(a.shr::<26>().to_array(), want(&|x, _| x >> 26));
                let m = a.eq(b).mask();
                let e = a.eq(b).to_array();
                assert_eq!(m, (0..4).fold(0, |m, i| m | (e[i] >> 31) << i));
            }
        }
        assert_eq!(U32x4::splat(9).to_array(), [9; 4]);
        let bytes: [u8; 16] = std::array::from_fn(|i| i as u8);
        let row = |k: u8| U32x4::load(&bytes.map(|b| b.wrapping_add(16 * k)));
        assert_eq!(row(0).to_array()[1], u32::from_le_bytes([4, 5, 6, 7]));
        let rows = [row(0), row(1), row(2), row(3)];
        let t = U32x4::transpose(rows);
        for (i, col) in t.iter().enumerate() {
            for (j, row) in rows.iter().enumerate() {
                assert_eq!(col.to_array()[j], row.to_array()[i]);
            }
        }
        assert_eq!(U32x4::new([1, 2, 3, 4]).to_array(), [1, 2, 3, 4]);
    }
}
