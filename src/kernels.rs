//! The hidden layer's backward pass and its forward product (over the
//! nonzero features only, in training and inference alike), and
//! the first block's convolution, on micro-kernels written for their
//! shapes; and the machine's own peak rate to measure every product
//! against.
//!
//! The layer's weights `W` are 20,000 × 128 and a training batch is 32
//! images, so the input gradient `g·Wᵀ` and the update `W -= lr·Xᵀ·g` run
//! over 20,000 rows of `W` with only 32 or 128 in the other dimensions. Here
//! they share one pass over `W`: a block of rows gives its part of the input
//! gradient from the old values, then its rows of the weight gradient while
//! still in cache, applied at once (plain SGD) or stored for an optimiser.
//! Every element's sum runs in an order fixed by the shapes alone, never by
//! the threads, so the results are the same on any number of cores.
//!
//! The forward product takes only the rows of `W` whose feature is not
//! zero: after ReLU about half of the features are, in training and
//! inference alike. One kernel does both, in tiles of a few images × the
//! columns, a tile taking each row of `W` that any of its images needs
//! (zeros for the others add nothing). Inference multiplies the features a
//! slice at a time as they are made, while in cache, in tiles of 2-3
//! images, whose zeros mostly coincide (the background of the digits; the
//! caller gives images of similar ink side by side;
//! [`accumulate_product`]). Training takes one image at a time, since
//! dropout makes the images' zeros unrelated, and cuts the depth into
//! slices for the threads ([`sparse_product`]). The
//! convolution ([`conv_row`]) takes several
//! positions at once, so that its chains of nine dependent multiply-adds
//! overlap.
//!
//! Each kernel is written once over [`Vector`] and compiled for AVX-512,
//! AVX2 + FMA and a portable vector of four lanes (which LLVM maps to SSE2 or
//! NEON), picked at run time ([`Isa`]). `MNIST_CNN_SIMD` can ask for a
//! narrower one than the CPU has, to measure or test it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::arch::{FILTERS, KERNEL, TAPS};

/// Rows of `W` that each task of [`backward_and_update`] takes: 40 tasks
/// for the hidden layer, enough to share among the threads, each holding
/// its slice of the input gradient (512 × 32 floats at a batch of 32) in
/// L2 until it is copied out.
const UPDATE_ROWS: usize = 512;

/// The most images (of a batch of at most 64) a row of `W` may have a
/// nonzero input in for [`backward_and_update`] to take it alone, in one
/// pass over its weights ([`sparse_row`]), rather than in a tile that
/// multiplies every image. With AVX2 kernels this took 5-8% off a training
/// epoch on a Zen 1 and 7% on a Xeon (8 was as fast as 12 or 16, or
/// faster); with AVX-512's, whose tiles do more per load, it neither gained
/// nor lost on that Xeon (nor did 4).
const SPARSE_IMAGES: usize = 8;

/// Rows of `w` that [`accumulate_product`] takes at a time: 64 × 128
/// floats (32 kB) stay mostly in the L1 cache (48 kB here), else in L2,
/// while every tile of rows of `x` passes over them. (32 and 48 measured
/// the same, 96 slower.)
const PRODUCT_DEPTH: usize = 64;

/// Floats in a 64-byte cache line, the stride at which the backward pass
/// and the product ask for rows of `W` ahead of their use.
const CACHE_LINE_FLOATS: usize = 16;

/// The vector instruction sets the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Four lanes of plain Rust arithmetic (SSE2 on x86-64, NEON on ARM).
    Portable,
    /// 8 lanes with fused multiply-add.
    Avx2,
    /// 16 lanes with fused multiply-add (with the `avx512` feature).
    Avx512,
}

impl Isa {
    /// All of them, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `MNIST_CNN_SIMD` takes and `bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// How people write it.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Portable => "portable SIMD",
            Isa::Avx2 => "AVX2",
            Isa::Avx512 => "AVX-512",
        }
    }

    /// The widest this CPU and this build have.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU and build can run it: each instruction set's own
    /// features are asked for (a hypervisor may hide FMA and not AVX-512F).
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The instruction set `MNIST_CNN_SIMD` names (`None` or empty: the best
    /// there is), or why it cannot be used.
    pub fn from_setting(setting: Option<&str>) -> Result<Isa, SimdError> {
        let Some(setting) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Isa::best());
        };
        let isa = Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(setting))
            .ok_or_else(|| SimdError::Unknown(setting.to_string()))?;
        if isa.available() {
            Ok(isa)
        } else {
            Err(SimdError::Unavailable {
                asked: isa,
                best: Isa::best(),
            })
        }
    }
}

/// Why `MNIST_CNN_SIMD` cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimdError {
    #[error(
        "MNIST_CNN_SIMD={0} is not an instruction set this tool knows: use one of portable, avx2, avx512, or unset it"
    )]
    Unknown(String),
    #[error(
        "MNIST_CNN_SIMD={}, but this CPU or build has only {}: use that or something narrower, or unset it",
        asked.name(),
        best.name()
    )]
    Unavailable { asked: Isa, best: Isa },
}

static CHOSEN: OnceLock<Isa> = OnceLock::new();

/// The instruction set the kernels run on: the one [`choose`] set, or else
/// the best this CPU and build have.
pub(crate) fn isa() -> Isa {
    *CHOSEN.get_or_init(Isa::best)
}

/// Makes the kernels run on `isa` from now on. Only the first choice
/// counts, and only before any kernel has run: returns whether this one
/// took effect.
pub fn choose(isa: Isa) -> bool {
    assert!(isa.available(), "{} is not available here", isa.label());
    *CHOSEN.get_or_init(|| isa) == isa
}

/// A vector of `LANES` floats: what the kernels are written in.
///
/// # Safety
/// An implementation's functions may use instructions the CPU must have:
/// they are only called from functions compiled for them (the modules
/// `instruction_set!` makes) after [`Isa::available`] said so.
trait Vector: Copy {
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self;
    /// Reads `LANES` floats from `p` (no alignment needed).
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self·b + c`, fused where the instruction set has it.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self + b`, lane by lane.
    unsafe fn add(self, b: Self) -> Self;
    /// Asks for the cache line holding `p` to be brought into L1 ahead of
    /// its use; a hint, which may do nothing (the portable vector's does
    /// nothing) and never faults.
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
    /// One bit per lane of the `LANES` floats at `p`, lane `l` in bit `l`,
    /// set where the float is not zero (NaN included, as `!= 0.0` says).
    #[inline(always)]
    unsafe fn nonzero_bits(p: *const f32) -> u64 {
        let mut bits = 0;
        for lane in 0..Self::LANES {
            bits |= u64::from(unsafe { *p.add(lane) } != 0.0) << lane;
        }
        bits
    }
    /// The sum of the lanes, in order of lane (a dot product's last step,
    /// once per image and row of the backward pass's sparse rows; the
    /// peak's check sum).
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        const { assert!(Self::LANES <= 16, "the lanes fit the buffer") };
        let mut lanes = [0.0f32; 16];
        unsafe { self.store(lanes.as_mut_ptr()) };
        lanes[..Self::LANES].iter().sum()
    }
    /// Writes the transpose of the 8 × 8 block at `src` (rows `src_row`
    /// apart) to `dst` (rows `dst_row` apart) where the block at `keep`
    /// (laid out as `dst`) is not zero, and +0 where it is:
    /// `dst[i][j] = if keep[i][j] != 0 { src[j][i] } else { 0 }`.
    #[inline(always)]
    unsafe fn transpose_8x8_where(
        src: *const f32,
        src_row: usize,
        dst: *mut f32,
        dst_row: usize,
        keep: *const f32,
    ) {
        for i in 0..8 {
            for j in 0..8 {
                unsafe {
                    let kept = *keep.add(i * dst_row + j) != 0.0;
                    *dst.add(i * dst_row + j) = if kept { *src.add(j * src_row + i) } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use std::arch::x86_64::*;

    /// A [`Vector`] over one register type, through its intrinsics.
    macro_rules! register {
        ($name:ident, $register:ty, $lanes:literal, $splat:ident, $load:ident, $store:ident, $fma:ident, $add:ident, |$p:ident| $nonzero_bits:block) => {
            #[derive(Clone, Copy)]
            pub struct $name($register);

            impl Vector for $name {
                const LANES: usize = $lanes;
                #[inline(always)]
                unsafe fn splat(v: f32) -> Self {
                    $name(unsafe { $splat(v) })
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    $name(unsafe { $load(p) })
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) {
                    unsafe { $store(p, self.0) }
                }
                #[inline(always)]
                unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                    $name(unsafe { $fma(self.0, b.0, c.0) })
                }
                #[inline(always)]
                unsafe fn add(self, b: Self) -> Self {
                    $name(unsafe { $add(self.0, b.0) })
                }
                #[inline(always)]
                unsafe fn prefetch(p: *const f32) {
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
                }
                #[inline(always)]
                unsafe fn nonzero_bits($p: *const f32) -> u64 {
                    unsafe { $nonzero_bits }
                }
                #[inline(always)]
                unsafe fn transpose_8x8_where(
                    src: *const f32,
                    src_row: usize,
                    dst: *mut f32,
                    dst_row: usize,
                    keep: *const f32,
                ) {
                    unsafe { transpose_8x8_avx(src, src_row, dst, dst_row, keep) }
                }
            }
        };
    }

    /// [`Vector::transpose_8x8_where`] in eight AVX registers (AVX-512 has
    /// them too): pairs of rows interleaved, then pairs of pairs, then
    /// halves, each row then anded with its mask of `keep`'s nonzeros
    /// (unordered "not equal", so that NaN counts as not zero, as `!=` has it).
    #[inline(always)]
    unsafe fn transpose_8x8_avx(
        src: *const f32,
        src_row: usize,
        dst: *mut f32,
        dst_row: usize,
        keep: *const f32,
    ) {
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(j * src_row)));
            let t: [__m256; 8] = std::array::from_fn(|j| {
                let (a, b) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
                if j % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            // t[0..4] hold rows 0-3, t[4..8] rows 4-7, per 128-bit half.
            let u: [__m256; 8] = std::array::from_fn(|j| {
                let (a, b) = (t[j / 4 * 4 + j % 4 / 2], t[j / 4 * 4 + j % 4 / 2 + 2]);
                if j % 2 == 0 {
                    _mm256_shuffle_ps::<0b01_00_01_00>(a, b)
                } else {
                    _mm256_shuffle_ps::<0b11_10_11_10>(a, b)
                }
            });
            let masked = |row: usize, v: __m256| {
                let k = _mm256_loadu_ps(keep.add(row * dst_row));
                let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(k, _mm256_setzero_ps());
                _mm256_storeu_ps(dst.add(row * dst_row), _mm256_and_ps(v, nonzero));
            };
            for i in 0..4 {
                masked(i, _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]));
                masked(i + 4, _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]));
            }
        }
    }

    register!(
        Avx2,
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        // Unordered "not equal", so that NaN counts as not zero.
        |p| {
            let lanes = _mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(p), _mm256_setzero_ps());
            u64::from(_mm256_movemask_ps(lanes) as u8)
        }
    );
    #[cfg(feature = "avx512")]
    register!(
        Avx512,
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        |p| {
            u64::from(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(
                _mm512_loadu_ps(p),
                _mm512_setzero_ps(),
            ))
        }
    );
}

/// Four lanes of plain arithmetic, which LLVM turns into one SSE2 or NEON
/// register. Multiply and add stay two roundings where FMA is not part of
/// the baseline (x86-64), and are fused on ARM, where it is.
#[derive(Clone, Copy)]
struct Portable([f32; 4]);

impl Vector for Portable {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        let mut out = [0.0; 4];
        for (o, ((a, b), c)) in out.iter_mut().zip(self.0.iter().zip(b.0).zip(c.0)) {
            *o = if cfg!(target_arch = "aarch64") {
                a.mul_add(b, c)
            } else {
                a * b + c
            };
        }
        Portable(out)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        let mut out = self.0;
        for (o, b) in out.iter_mut().zip(b.0) {
            *o += b;
        }
        Portable(out)
    }
}

/// Columns of `W` that its width `o` must be a multiple of on `isa`: the
/// width of that instruction set's update tile (vectors × lanes), which
/// `backward_generic` asserts again. (The product kernels take any whole
/// number of vectors; their callers still ask for column blocks.) The
/// hidden layer's 128 fits all three.
pub(crate) fn column_block(isa: Isa) -> usize {
    match isa {
        Isa::Portable => 16,
        Isa::Avx2 => 32,
        Isa::Avx512 => 128,
    }
}

/// Raw pointers that may cross threads: each task writes elements no other
/// task touches (said at each use).
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: see the type's comment.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The operands of [`backward_block`]: one block of `rows` rows of `w`,
/// from row `first`.
#[derive(Clone, Copy)]
struct Backward {
    w: *mut f32,
    /// The block's rows of the gradient of `w`, or null: update `w` instead.
    grad_w: *mut f32,
    x: *const f32,
    /// `g` transposed, `o × padded` (zeros past `n`).
    gt: *const f32,
    g: *const f32,
    dx: *mut f32,
    /// The block's input gradient, transposed (`rows × padded`), which its
    /// tiles fill with whole vectors before it is copied into `dx`. Where
    /// an input is zero its entry may be left from before (the skipped
    /// rows', the one-row pass's other images'): the copy zeroes `dx` there.
    dxt: *mut f32,
    n: usize,
    padded: usize,
    k: usize,
    o: usize,
    first: usize,
    rows: usize,
    lr: f32,
}

/// The kernels compiled for one instruction set (with the attributes
/// given, its target features), with its tiles: rows × vectors of
/// accumulators, leaving registers for the operands (AVX-512 has 32, AVX2
/// 16, the portable vector's SSE2 or NEON 16 or 32).
macro_rules! instruction_set {
    ($name:ident, [$($attr:meta)*], $v:ty, gradient $g:tt, update $u:tt, product $p:tt, training $t:tt, conv $c:tt) => {
        mod $name {
            use super::*;

            $(#[$attr])*
            pub(super) unsafe fn backward(a: Backward) {
                unsafe { backward_generic::<$v, { $g.0 }, { $g.1 }, { $u.0 }, { $u.1 }>(a) }
            }

            $(#[$attr])*
            pub(super) unsafe fn conv_row(a: ConvOperands) {
                unsafe { conv_row_generic::<$v, { $c.0 }, { $c.1 }>(a) }
            }

            $(#[$attr])*
            pub(super) unsafe fn accumulate(a: Accumulate) {
                unsafe { accumulate_generic::<$v, { $p.0 }, { $p.1 }>(a) }
            }

            $(#[$attr])*
            pub(super) unsafe fn training(a: Accumulate) {
                unsafe { accumulate_generic::<$v, { $t.0 }, { $t.1 }>(a) }
            }

            /// Images in each tile of [`accumulate_product`].
            pub(super) fn product_rows() -> usize {
                $p.0
            }

            $(#[$attr])*
            pub(super) unsafe fn peak(iterations: usize) -> f32 {
                unsafe { fma_loop::<$v>(iterations) }
            }
        }
    };
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
instruction_set!(
    avx512,
    [target_feature(enable = "avx512f")],
    x86::Avx512,
    gradient(8, 2),
    update(3, 8),
    product(3, 8),
    training(1, 8),
    conv(8, 2)
);
#[cfg(target_arch = "x86_64")]
instruction_set!(
    avx2,
    [target_feature(enable = "avx2,fma")],
    x86::Avx2,
    gradient(6, 2),
    update(3, 4),
    product(2, 4),
    training(1, 8),
    conv(2, 4)
);
instruction_set!(
    portable,
    [],
    Portable,
    gradient(4, 2),
    update(2, 4),
    product(2, 4),
    training(1, 8),
    conv(1, 8)
);

/// Calls `$kernel` of the module [`instruction_set!`] made for `$isa`,
/// which the caller has checked is available.
macro_rules! on_isa {
    ($isa:expr, $kernel:ident($($arg:expr),*)) => {
        match $isa {
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::Avx512 => avx512::$kernel($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::$kernel($($arg),*),
            _ => portable::$kernel($($arg),*),
        }
    };
}

/// How many rows of `x` each tile of [`accumulate_product`] takes on the
/// kernels in use: a tile computes every step that one of its rows has a
/// nonzero input at, so rows with zeros in the same places, given side by
/// side, waste less (see `HostNet::logits`).
pub(crate) fn product_rows() -> usize {
    on_isa!(isa(), product_rows())
}

/// Calls `$tile::<V, R, C>` with the rows left, `$rows` (at most the
/// tile's height, and at most 8, the tallest tile's), as the constant `R`.
macro_rules! with_rows {
    ($rows:expr, $tile:ident, $v:ty, $c:tt, $args:expr) => {
        match $rows {
            1 => $tile::<$v, 1, $c>($args),
            2 => $tile::<$v, 2, $c>($args),
            3 => $tile::<$v, 3, $c>($args),
            4 => $tile::<$v, 4, $c>($args),
            5 => $tile::<$v, 5, $c>($args),
            6 => $tile::<$v, 6, $c>($args),
            7 => $tile::<$v, 7, $c>($args),
            8 => $tile::<$v, 8, $c>($args),
            rows => unreachable!("a tile of {rows} rows"),
        }
    };
}

/// One tile's operands: where its output and the left operand start (row 0,
/// the tile's rows being picked by `rows`), where its columns of the right
/// one start, and how far the sum runs.
#[derive(Clone, Copy)]
struct Tile {
    out: *mut f32,
    left: *const f32,
    right: *const f32,
    /// The tile's rows, at least as many as it has: its row `r` is row
    /// `rows[r]` of the left operand and of the output
    /// ([`ROWS_IN_ORDER`] for a tile of consecutive rows).
    rows: *const u32,
    /// Distances in the left operand between rows and between steps of the
    /// sum: element `(r, d)` is at `left + rows[r]·left_row + d·left_step`.
    left_row: usize,
    left_step: usize,
    /// Distance between the right operand's rows (and the output's).
    right_stride: usize,
    depth: usize,
}

/// [`Tile::rows`] for a tile of consecutive rows.
static ROWS_IN_ORDER: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

impl Tile {
    /// Which row of the operands each of the tile's `R` rows is, read once
    /// at the tile's start (the output's stores could otherwise make the
    /// compiler read them again).
    ///
    /// # Safety
    /// `R` is the tile's number of rows.
    #[inline(always)]
    unsafe fn rows<const R: usize>(&self) -> [usize; R] {
        std::array::from_fn(|r| unsafe { *self.rows.add(r) as usize })
    }
}

/// What [`backward_and_update`] does with the weight gradient.
pub(crate) enum WeightGradient<'a> {
    /// `w -= lr·gradient`, without the gradient ever being stored.
    Apply { learning_rate: f32 },
    /// Writes it here (`k × o`) for an optimiser to use; `w` is unchanged.
    Into(&'a mut [f32]),
}

/// A dense layer's input gradient and weight gradient in one pass over its
/// weights, for row-major `x` (`n × k`), `w` (`k × o`), `g` (`n × o`, the
/// gradient of the layer's output) and `dx` (`n × k`): `dx = g·wᵀ` from
/// the weights as they were, then `xᵀ·g` applied to `w` or stored, except
/// that `dx` is zero wherever `x` is (for inputs that ReLU or dropout
/// made, which pass no gradient back through a zero; see below). Blocks of
/// [`UPDATE_ROWS`] rows of `w` are taken in parallel; in each, a tile of a
/// few rows gives its slice of `dx`'s columns and then its rows of the
/// weight gradient while still in the L1 cache, so that `w` is read from
/// memory once. The slice is gathered transposed, with
/// whole vectors, and copied into `dx` a cache line at a time at the end of
/// the block (stored straight from the tiles, a few floats to each of 32
/// lines, it took a fifth of the pass on a Zen 3). Rows of `w` whose input
/// is zero in all `n` rows of `x` are skipped: their weight gradient is
/// zero (stored as zeros, or leaving `w` as it is) and so is their column
/// of `dx`, because the callers' inputs are features that ReLU or dropout
/// made zero there, and those pass no gradient back (6-7% off the step on
/// a Zen 1; 5-13% of the features are zero in a whole batch of 32 while
/// training). In a batch of at most 64, a row whose input is nonzero in at
/// most [`SPARSE_IMAGES`] images (a fifth of the live rows early in
/// training, nearly a third by its third epoch) is done alone, in one pass
/// over its weights for just those images, which is why `dx` is zero where
/// `x` is: that pass computes nothing for the others, and the tiles'
/// values there are then zeroed to match. The weight update has the same
/// bits either way (for finite `g`, but for the sign of a zero: see
/// [`sparse_row`]). Needs `o` to be a multiple of [`column_block`] (128
/// is, on every instruction set).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_and_update(
    w: &mut [f32],
    x: &[f32],
    g: &[f32],
    dx: &mut [f32],
    n: usize,
    k: usize,
    o: usize,
    weight_gradient: WeightGradient,
) {
    backward_and_update_on(isa(), w, x, g, dx, n, k, o, weight_gradient)
}

/// [`backward_and_update`] on the kernels of `isa`.
#[allow(clippy::too_many_arguments)]
fn backward_and_update_on(
    isa: Isa,
    w: &mut [f32],
    x: &[f32],
    g: &[f32],
    dx: &mut [f32],
    n: usize,
    k: usize,
    o: usize,
    weight_gradient: WeightGradient,
) {
    use rayon::prelude::*;
    let size = |a: usize, b: usize| a.checked_mul(b).expect("operand sizes overflow");
    assert_eq!(
        (w.len(), x.len(), g.len(), dx.len()),
        (size(k, o), size(n, k), size(n, o), size(n, k)),
        "operand sizes"
    );
    assert!(
        isa.available() && o > 0 && o.is_multiple_of(column_block(isa)),
        "{o} columns do not fit the {} kernels",
        isa.label()
    );
    let (grad_w, lr) = match weight_gradient {
        WeightGradient::Apply { learning_rate } => (None, learning_rate),
        WeightGradient::Into(grad) => {
            assert_eq!(grad.len(), k * o, "weight gradient size");
            (Some(grad), 0.0)
        }
    };
    if n == 0 || k == 0 {
        if let Some(grad) = grad_w {
            grad.fill(0.0);
        }
        return;
    }
    // g transposed, its columns padded with zeros to whole tiles of images
    // (32, the widest tile, is a multiple of every instruction set's).
    let padded = n.next_multiple_of(32);
    let mut gt = vec![0.0f32; o * padded];
    for (i, g_row) in g.chunks_exact(o).enumerate() {
        for (c, &v) in g_row.iter().enumerate() {
            gt[c * padded + i] = v;
        }
    }
    let dx = Shared(dx.as_mut_ptr());
    let grad_w = Shared(grad_w.map_or(std::ptr::null_mut(), |g| g.as_mut_ptr()));
    w.par_chunks_mut(UPDATE_ROWS * o)
        .enumerate()
        .for_each(|(block, w_rows)| {
            let first = block * UPDATE_ROWS;
            let rows = w_rows.len() / o;
            DX_BLOCK.with_borrow_mut(|dxt| {
                dxt.resize(rows * padded, 0.0);
                let a = Backward {
                    w: w_rows.as_mut_ptr(),
                    grad_w: if grad_w.get().is_null() {
                        grad_w.get()
                    } else {
                        // SAFETY: the gradient is k × o like w: these are this
                        // block's rows, which no other block writes.
                        unsafe { grad_w.get().add(first * o) }
                    },
                    x: x.as_ptr(),
                    gt: gt.as_ptr(),
                    g: g.as_ptr(),
                    dx: dx.get(),
                    dxt: dxt.as_mut_ptr(),
                    n,
                    padded,
                    k,
                    o,
                    first,
                    rows,
                    lr,
                };
                // SAFETY: this block's rows of w are w_rows (rows × o). Of dx it
                // writes only columns first..first + rows (below k) of each of
                // the n rows, which no other block writes, and nothing reads dx
                // meanwhile; x is read at those columns, gt and g whole, all
                // shared borrows of the sizes checked above; dxt is this
                // thread's own buffer of rows × padded floats, which the
                // tiles (at most padded images each) stay within. isa is
                // available.
                unsafe { backward_block(isa, a) }
            });
        });
}

thread_local! {
    /// Each thread's [`Backward::dxt`].
    static DX_BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The operands of [`accumulate_generic`], as [`accumulate_product`] or
/// [`sparse_product`] checked them.
#[derive(Clone, Copy)]
struct Accumulate {
    out: *mut f32,
    x: *const f32,
    /// The distance between rows of `x`: `depth`, or more for a slice of
    /// wider rows.
    x_stride: usize,
    w: *const f32,
    rows: usize,
    depth: usize,
    o: usize,
}

/// `out += x·w` on the calling thread, for row-major `x` (`rows × depth`),
/// `w` (`depth × o`) and `out` (`rows × o`), skipping the inputs that are
/// zero: a dense layer's forward product, a slice of its inputs at a time,
/// for a caller that makes each slice just before (the host's inference
/// makes the features a pooled row at a time, so that they are multiplied
/// while still in cache). A tile of a few rows takes each row of `w` that
/// one of them needs: at evaluation 54% of a trained network's features
/// are zero, and 42% (36%) are zero in all of a tile's two (three) images
/// taken in batch order, which took 15-30% off evaluation's time on a
/// Zen 5 (README, Speed); 47% of two taken by similar ink, as the host's
/// inference gives them.
/// Each element's sum runs in order over `depth`, added to `out` once
/// every [`PRODUCT_DEPTH`] values (skipping a zero changes no sum while `w`
/// is finite: a dense product's 0·∞ would be NaN), so that, where `w` is
/// finite, a row's result depends on neither the other rows given with it
/// nor the threads. Needs `o` to be a multiple of [`column_block`].
pub(crate) fn accumulate_product(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    depth: usize,
    o: usize,
) {
    accumulate_product_on(isa(), out, x, w, rows, depth, o)
}

/// What [`accumulate_product`] and [`sparse_product`] need of their
/// operands, which their kernels read and write without bounds checks:
/// `isa` available, `o` whole column blocks of it, and the sizes that
/// `rows`, `depth` and `o` say (without overflow).
fn check_product(isa: Isa, out: &[f32], x: &[f32], w: &[f32], rows: usize, depth: usize, o: usize) {
    assert!(
        isa.available() && o > 0 && o.is_multiple_of(column_block(isa)),
        "{o} columns do not fit the {} kernels",
        isa.label()
    );
    let size = |a: usize, b: usize| a.checked_mul(b).expect("operand sizes overflow");
    assert_eq!(
        (out.len(), x.len(), w.len()),
        (size(rows, o), size(rows, depth), size(depth, o)),
        "operand sizes"
    );
}

/// [`accumulate_product`] on the kernels of `isa`.
fn accumulate_product_on(
    isa: Isa,
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    depth: usize,
    o: usize,
) {
    check_product(isa, out, x, w, rows, depth, o);
    if rows == 0 || depth == 0 {
        return;
    }
    let a = Accumulate {
        out: out.as_mut_ptr(),
        x: x.as_ptr(),
        x_stride: depth,
        w: w.as_ptr(),
        rows,
        depth,
        o,
    };
    // SAFETY: the sizes are checked above, and `out` is a unique borrow;
    // isa is available.
    unsafe { on_isa!(isa, accumulate(a)) }
}

/// Slices of the depth that [`sparse_product`] takes in parallel: a
/// constant, not the thread count, so that its sums run in the same order
/// on every machine.
const SPARSE_SLICES: usize = 8;

/// `out = x·w` for row-major `x` (`rows × depth`), `w` (`depth × o`) and
/// `out` (`rows × o`), skipping the inputs that are zero: training's
/// forward product through the hidden layer, whose features are zero
/// wherever ReLU (before the pooling) or dropout made them, about half of
/// them. Each image's row takes only the rows of `w` its nonzero features
/// pick (dropout makes the images' zeros unrelated; tiles of several
/// images, each image's nonzeros taken in turn, measured slower; tiles over
/// the union of their images' nonzeros, as inference's, are untried here),
/// so this does about half of a dense product's
/// multiply-adds: on a Zen 5 it took 20% off gemm's time on AVX-512 and
/// half of it on AVX2 (`kernels` A/B in the step, README, Speed). The
/// depth is cut into [`SPARSE_SLICES`] slices taken in parallel, each
/// summed as [`accumulate_product`] sums it, then added in order of
/// slice: the results depend on neither the threads nor the other rows.
/// Needs `o` to be a multiple of [`column_block`].
pub(crate) fn sparse_product(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    depth: usize,
    o: usize,
) {
    sparse_product_on(isa(), out, x, w, rows, depth, o)
}

/// The depth of each of [`sparse_product`]'s slices: whole blocks of
/// [`PRODUCT_DEPTH`], so that a slice's blocks are those of one pass over
/// the whole depth.
fn sparse_slice(depth: usize) -> usize {
    depth
        .div_ceil(SPARSE_SLICES)
        .next_multiple_of(PRODUCT_DEPTH)
}

/// [`sparse_product`] on the kernels of `isa`.
fn sparse_product_on(
    isa: Isa,
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    depth: usize,
    o: usize,
) {
    use rayon::prelude::*;
    check_product(isa, out, x, w, rows, depth, o);
    out.fill(0.0);
    if rows == 0 || depth == 0 {
        return;
    }
    let slice = sparse_slice(depth);
    let mut parts = vec![0.0f32; SPARSE_SLICES * rows * o];
    parts
        .par_chunks_mut(rows * o)
        .enumerate()
        .for_each(|(s, part)| {
            let start = (s * slice).min(depth);
            // start is at most depth: within x's first row and w's rows,
            // or just past their end, with nothing read.
            let a = Accumulate {
                out: part.as_mut_ptr(),
                x: x[start..].as_ptr(),
                x_stride: depth,
                w: w[start * o..].as_ptr(),
                rows,
                depth: slice.min(depth - start),
                o,
            };
            // SAFETY: this slice reads columns start..start + a.depth of
            // x's rows and those rows of w, within the sizes checked above,
            // and writes only its own part; isa is available.
            unsafe { on_isa!(isa, training(a)) }
        });
    for part in parts.chunks_exact(rows * o) {
        for (d, p) in out.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// [`accumulate_product`] and each slice of [`sparse_product`] on vectors
/// `V`, in tiles of `R` rows of `x` × `C` vectors of columns,
/// [`PRODUCT_DEPTH`] rows of `w` at a time, of which a tile takes only
/// those where one of its rows has an input that is not zero (found a
/// vector at a time, then taken a set bit at a time). Each element's sum
/// runs in order of depth and is added to `out` once a block: the terms
/// skipped are zero, and those kept for another row's sake add exact
/// zeros, so where `w` is finite the sums are a dense product's and a
/// row's do not depend on the rows beside it. Columns past the last whole
/// tile, a vector at a time (never at the hidden layer's 128 columns; only
/// in training's tiles on AVX2 and the portable vector, at widths of an odd
/// number of column blocks).
#[inline(always)]
unsafe fn accumulate_generic<V: Vector, const R: usize, const C: usize>(a: Accumulate) {
    const { assert!(PRODUCT_DEPTH <= 64, "a block's inputs fit a u64") };
    assert!(a.o.is_multiple_of(V::LANES), "columns fit whole vectors");
    let whole_tiles = a.o - a.o % (C * V::LANES);
    unsafe {
        for start in (0..a.depth).step_by(PRODUCT_DEPTH) {
            let depth = PRODUCT_DEPTH.min(a.depth - start);
            // The next block of rows of `w` is asked for a share at a time,
            // one share with each tile of rows of `x`, so that it is on its
            // way into the cache (L1 as far as it fits beside this block)
            // when this block is done: 2.6-5.6% off evaluation on a Zen 5, on
            // AVX-512 and AVX2 alike (best, median and mean of alternate
            // batches), 13-17% off training's product.
            let next = start + depth;
            let next_depth = PRODUCT_DEPTH.min(a.depth - next);
            let mut row = 0;
            while row < a.rows {
                let height = R.min(a.rows - row);
                let share = row * next_depth / a.rows..(row + height) * next_depth / a.rows;
                prefetch_rows::<V>(a.w, a.o, next + share.start..next + share.end);
                let x = a.x.add(row * a.x_stride + start);
                let mut nonzero = 0;
                for r in 0..height {
                    nonzero |= nonzero_mask::<V>(x.add(r * a.x_stride), depth);
                }
                let mut col = 0;
                while col < a.o {
                    let tile = Tile {
                        out: a.out.add(row * a.o + col),
                        left: x,
                        right: a.w.add(start * a.o + col),
                        rows: ROWS_IN_ORDER.as_ptr(),
                        left_row: a.x_stride,
                        left_step: 1,
                        right_stride: a.o,
                        depth,
                    };
                    if col < whole_tiles {
                        with_rows!(height, accumulate_tile, V, C, (tile, nonzero));
                        col += C * V::LANES;
                    } else {
                        with_rows!(height, accumulate_tile, V, 1, (tile, nonzero));
                        col += V::LANES;
                    }
                }
                row += height;
            }
        }
    }
}

/// One bit per float of the `len` (at most 64) at `x`, bit `d` for
/// `x[d]`, set where it is not zero: a vector at a time, then the rest.
#[inline(always)]
unsafe fn nonzero_mask<V: Vector>(x: *const f32, len: usize) -> u64 {
    let whole = len - len % V::LANES;
    let mut nonzero = 0u64;
    unsafe {
        for d in (0..whole).step_by(V::LANES) {
            nonzero |= V::nonzero_bits(x.add(d)) << d;
        }
        for d in whole..len {
            nonzero |= u64::from(*x.add(d) != 0.0) << d;
        }
    }
    nonzero
}

/// Asks for `rows` of `w` (`o` floats a row) ahead of their use, one
/// [`Vector::prefetch`] per cache line.
///
/// # Safety
/// The rows are within `w`'s allocation.
#[inline(always)]
unsafe fn prefetch_rows<V: Vector>(w: *const f32, o: usize, rows: std::ops::Range<usize>) {
    for r in rows {
        for c in (0..o).step_by(CACHE_LINE_FLOATS) {
            unsafe { V::prefetch(w.add(r * o + c)) };
        }
    }
}

/// # Safety
/// As [`backward_and_update`] says at its call.
unsafe fn backward_block(isa: Isa, a: Backward) {
    unsafe { on_isa!(isa, backward(a)) }
}

/// One block of [`backward_and_update`] on vectors `V`: the input gradient
/// in tiles of `GR` rows of `w` × `GC` vectors of images, then the weight
/// gradient in tiles of `UR` rows × `UC` vectors of columns.
#[inline(always)]
unsafe fn backward_generic<
    V: Vector,
    const GR: usize,
    const GC: usize,
    const UR: usize,
    const UC: usize,
>(
    a: Backward,
) {
    // What the buffers below were sized for: the tile's images divide the
    // 32 that the images are padded to, so that the input-gradient tiles
    // stay within each row of `dxt`; the update's columns divide `o`
    // (checked against `column_block` by the caller, asserted here).
    const { assert!(GC * V::LANES <= 32 && 32 % (GC * V::LANES) == 0) };
    assert!(
        a.o.is_multiple_of(UC * V::LANES),
        "columns fit the update tile"
    );
    unsafe {
        let images = GC * V::LANES;
        let cols = UC * V::LANES;
        let lr = a.grad_w.is_null().then_some(a.lr);
        let mut live = [0u32; UPDATE_ROWS];
        let mut sparse = [(0u32, 0u64); UPDATE_ROWS];
        let (count, sparse_count) = live_rows::<V>(&a, &mut live, &mut sparse);
        let live = &live[..count];
        let sparse = &sparse[..sparse_count];
        let mut first = 0;
        while first < count {
            // A tile of rows' input gradient from their old values, then
            // their update while they are still in the L1 cache.
            let height = GR.min(count - first);
            // The rows of `w` of the tile after next, asked for now so that
            // they arrive while this tile and the next are computed: on a
            // Zen 5 the pass took 4-12% less in the step on AVX-512 and 3-6%
            // on AVX2 (medians of alternate steps), the most while the
            // machine was busiest, nothing at its quietest. (Four tiles
            // ahead measured the same; `x`'s next lines too, no better.)
            let ahead = (first + 2 * GR).min(count);
            for &r in &live[ahead..(ahead + GR).min(count)] {
                prefetch_rows::<V>(a.w, a.o, r as usize..r as usize + 1);
            }
            for image in (0..a.n).step_by(images) {
                let tile = Tile {
                    out: a.dxt.add(image),
                    left: a.w,
                    right: a.gt.add(image),
                    rows: live[first..].as_ptr(),
                    left_row: a.o,
                    left_step: 1,
                    right_stride: a.padded,
                    depth: a.o,
                };
                with_rows!(height, gradient_tile, V, GC, tile);
            }
            let mut sub = first;
            while sub < first + height {
                let sub_height = UR.min(first + height - sub);
                for col in (0..a.o).step_by(cols) {
                    let tile = Tile {
                        out: if a.grad_w.is_null() {
                            a.w.add(col)
                        } else {
                            a.grad_w.add(col)
                        },
                        left: a.x.add(a.first),
                        right: a.g.add(col),
                        rows: live[sub..].as_ptr(),
                        left_row: 1,
                        left_step: a.k,
                        right_stride: a.o,
                        depth: a.n,
                    };
                    with_rows!(sub_height, update_tile, V, UC, (tile, lr));
                }
                sub += sub_height;
            }
            first += height;
        }
        for (s, &(r, images)) in sparse.iter().enumerate() {
            if let Some(&(ahead, _)) = sparse.get(s + 2) {
                prefetch_rows::<V>(a.w, a.o, ahead as usize..ahead as usize + 1);
            }
            let r = r as usize;
            const { assert!(SPARSE_IMAGES <= 8, "an arm below for every count") };
            match images.count_ones() {
                1 => sparse_row::<V, 1>(&a, r, images, lr),
                2 => sparse_row::<V, 2>(&a, r, images, lr),
                3 => sparse_row::<V, 3>(&a, r, images, lr),
                4 => sparse_row::<V, 4>(&a, r, images, lr),
                5 => sparse_row::<V, 5>(&a, r, images, lr),
                6 => sparse_row::<V, 6>(&a, r, images, lr),
                7 => sparse_row::<V, 7>(&a, r, images, lr),
                8 => sparse_row::<V, 8>(&a, r, images, lr),
                live => unreachable!("a sparse row of {live} images"),
            }
        }
        // Into dx 16 rows (a cache line of each image's row) at a time, so
        // that those rows of dxt stay in L1 while every image takes them;
        // whole 8 × 8 blocks transposed in registers (copied one float at
        // a time, this took a tenth of the pass on a Zen 3). Zero where the
        // input is zero: there dxt holds the tiles' values, or, in the
        // skipped rows and the one-row passes' other images, whatever it
        // held before. (Done as a second pass over dx, a select that the
        // compiler made masked stores of, `vmaskmovps`, which AMD's cores
        // do slowly: 6% of this pass's samples on a Zen 3, and the pass 3%
        // slower than with the zeros put in here.)
        let copy = |image: usize, r: usize| {
            let at = image * a.k + a.first + r;
            *a.dx.add(at) = if *a.x.add(at) != 0.0 {
                *a.dxt.add(r * a.padded + image)
            } else {
                0.0
            };
        };
        for start in (0..a.rows).step_by(16) {
            let end = (start + 16).min(a.rows);
            let mut image = 0;
            while image + 8 <= a.n {
                let mut r = start;
                while r + 8 <= end {
                    V::transpose_8x8_where(
                        a.dxt.add(r * a.padded + image),
                        a.padded,
                        a.dx.add(image * a.k + a.first + r),
                        a.k,
                        a.x.add(image * a.k + a.first + r),
                    );
                    r += 8;
                }
                for r in r..end {
                    (image..image + 8).for_each(|image| copy(image, r));
                }
                image += 8;
            }
            for image in image..a.n {
                (start..end).for_each(|r| copy(image, r));
            }
        }
    }
}

/// The rows of [`backward_generic`]'s block whose input is not zero in
/// every image, in order: into `sparse` with the images it is not zero in,
/// where those are at most [`SPARSE_IMAGES`] (of a batch of at most 64,
/// the images a mask holds), else into `live`; returns how many of each.
/// The others (5-13% of them while training, where ReLU or dropout zeroed a
/// feature in the whole batch) have a weight gradient of zeros, which would
/// leave their row of `w` as it is, and their input gradient goes back
/// through features that are zero, which pass none back: they are skipped
/// (their rows of the weight gradient, when it is stored, set to zero).
///
/// # Safety
/// As [`backward_and_update`] says at its call.
#[inline(always)]
unsafe fn live_rows<V: Vector>(
    a: &Backward,
    live: &mut [u32; UPDATE_ROWS],
    sparse: &mut [(u32, u64); UPDATE_ROWS],
) -> (usize, usize) {
    let (mut count, mut sparse_count) = (0, 0);
    let few_images = a.n <= 64;
    unsafe {
        for start in (0..a.rows).step_by(64) {
            let len = 64.min(a.rows - start);
            // Bit r of image i's mask: its input at row start + r is not zero.
            let mut masks = [0u64; 64];
            let mut any = 0u64;
            for image in 0..a.n {
                let mask = nonzero_mask::<V>(a.x.add(image * a.k + a.first + start), len);
                if let Some(slot) = masks.get_mut(image) {
                    *slot = mask; // used only if few_images
                }
                any |= mask;
            }
            // Now bit i of row r's: its input in image i is not zero.
            if few_images {
                transpose_bits(&mut masks);
            }
            let mut bits = any;
            while bits != 0 {
                let r = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let images = masks[r];
                if few_images && images.count_ones() as usize <= SPARSE_IMAGES {
                    sparse[sparse_count] = ((start + r) as u32, images);
                    sparse_count += 1;
                } else {
                    live[count] = (start + r) as u32;
                    count += 1;
                }
            }
            let mut dead = !any & (u64::MAX >> (64 - len));
            while !a.grad_w.is_null() && dead != 0 {
                let r = start + dead.trailing_zeros() as usize;
                dead &= dead - 1;
                std::ptr::write_bytes(a.grad_w.add(r * a.o), 0, a.o);
            }
        }
    }
    (count, sparse_count)
}

/// Transposes a 64 × 64 matrix of bits, row `i` in `m[i]`, column `j` in
/// its bit `j`: swaps the two off-diagonal 32 × 32 blocks, then within
/// each block the 16 × 16 ones, and so on down to single bits.
#[inline(always)]
fn transpose_bits(m: &mut [u64; 64]) {
    let mut width = 32;
    let mut low = 0x0000_0000_FFFF_FFFFu64;
    while width != 0 {
        let mut i = 0;
        while i < 64 {
            let t = ((m[i] >> width) ^ m[i + width]) & low;
            m[i + width] ^= t;
            m[i] ^= t << width;
            i = (i + width + 1) & !width;
        }
        width >>= 1;
        low ^= low << width;
    }
}

/// Row `r` of the block, whose input is not zero in exactly the `P` images
/// set in `images`, in one pass over its weights: its input gradient for
/// those images, `dxt[r][i] = Σ_c w[r][c]·g[i][c]` from the weights as they
/// were (each a vector's sums, then its lanes; the other images' entries
/// are left as they are), and its weight gradient `Σ_i x[i][r]·g[i][..]`
/// over those images in order, applied with `lr` or stored: the same bits
/// as [`update_tile`] gives, which adds the other images' zeros (but for
/// the sign of a zero: a product under half the least subnormal rounds a
/// fused sum to −0, which a later +0 of the tile's would make +0). Where a
/// row's input is zero in all but a few images (while training, a fifth
/// to a third of the live rows), this does those images' work alone, where
/// a tile does every image's.
///
/// # Safety
/// As [`backward_and_update`] says at its call; `images` has `P` bits
/// set, all below `a.n`.
#[inline(always)]
unsafe fn sparse_row<V: Vector, const P: usize>(
    a: &Backward,
    r: usize,
    images: u64,
    lr: Option<f32>,
) {
    unsafe {
        let mut bits = images;
        let image: [usize; P] = std::array::from_fn(|_| {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            i
        });
        let x: [V; P] = std::array::from_fn(|p| V::splat(*a.x.add(image[p] * a.k + a.first + r)));
        let g: [*const f32; P] = std::array::from_fn(|p| a.g.add(image[p] * a.o));
        let w = a.w.add(r * a.o);
        let out = if a.grad_w.is_null() {
            w
        } else {
            a.grad_w.add(r * a.o)
        };
        let mut dot = [V::splat(0.0); P];
        for c in (0..a.o).step_by(V::LANES) {
            let old = V::load(w.add(c));
            let mut sum = V::splat(0.0);
            for p in 0..P {
                let right = V::load(g[p].add(c));
                dot[p] = old.mul_add(right, dot[p]);
                sum = x[p].mul_add(right, sum);
            }
            match lr {
                Some(lr) => V::splat(-lr).mul_add(sum, old).store(out.add(c)),
                None => sum.store(out.add(c)),
            }
        }
        let row = a.dxt.add(r * a.padded);
        for p in 0..P {
            *row.add(image[p]) = dot[p].sum();
        }
    }
}

/// The input gradient of `R` rows of `w` for `C` vectors of images:
/// `dxt[r][i] = Σ_c w[r][c]·g[i][c]`, in order of `c` (`dxt`, the tile's
/// `out`, has the same row stride as `gt`).
#[inline(always)]
unsafe fn gradient_tile<V: Vector, const R: usize, const C: usize>(t: Tile) {
    unsafe {
        let rows = t.rows::<R>();
        let mut acc = [[V::splat(0.0); C]; R];
        for d in 0..t.depth {
            let mut right = [V::splat(0.0); C];
            for (c, right) in right.iter_mut().enumerate() {
                *right = V::load(t.right.add(d * t.right_stride + c * V::LANES));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let b = V::splat(*t.left.add(rows[r] * t.left_row + d * t.left_step));
                for (acc, &right) in acc.iter_mut().zip(&right) {
                    *acc = b.mul_add(right, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, acc) in acc.iter().enumerate() {
                acc.store(t.out.add(rows[r] * t.right_stride + c * V::LANES));
            }
        }
    }
}

/// The sums of one tile, `Σ_d left[r][d]·right[d][..]` for its `R` rows
/// and `C` vectors of columns, in order of `d`.
#[inline(always)]
unsafe fn tile_sums<V: Vector, const R: usize, const C: usize>(
    t: &Tile,
    rows: &[usize; R],
) -> [[V; C]; R] {
    unsafe {
        let mut acc = [[V::splat(0.0); C]; R];
        for d in 0..t.depth {
            tile_step(t, rows, d, &mut acc);
        }
        acc
    }
}

/// Step `d` of a tile's sums: `acc[r][..] += left[r][d]·right[d][..]` for
/// its `R` rows (`rows`, as [`Tile::rows`] gave them) and `C` vectors of
/// columns.
#[inline(always)]
unsafe fn tile_step<V: Vector, const R: usize, const C: usize>(
    t: &Tile,
    rows: &[usize; R],
    d: usize,
    acc: &mut [[V; C]; R],
) {
    unsafe {
        let mut b = [V::splat(0.0); R];
        for (r, b) in b.iter_mut().enumerate() {
            *b = V::splat(*t.left.add(rows[r] * t.left_row + d * t.left_step));
        }
        let row = t.right.add(d * t.right_stride);
        for c in 0..C {
            let right = V::load(row.add(c * V::LANES));
            for (acc, b) in acc.iter_mut().zip(&b) {
                acc[c] = b.mul_add(right, acc[c]);
            }
        }
    }
}

/// `R` rows × `C` vectors of the weight gradient `Σ_i x[i][r]·g[i][..]`,
/// in order of `i`: with `lr`, applied as `w -= lr·gradient` to `out`
/// (rows of `w`), else written to `out`.
#[inline(always)]
unsafe fn update_tile<V: Vector, const R: usize, const C: usize>((t, lr): (Tile, Option<f32>)) {
    unsafe {
        let rows = t.rows::<R>();
        let acc = tile_sums::<V, R, C>(&t, &rows);
        for (r, acc) in acc.iter().enumerate() {
            for (c, acc) in acc.iter().enumerate() {
                let out = t.out.add(rows[r] * t.right_stride + c * V::LANES);
                match lr {
                    Some(lr) => V::splat(-lr).mul_add(*acc, V::load(out)).store(out),
                    None => acc.store(out),
                }
            }
        }
    }
}

/// `R` rows × `C` vectors of a product's sums over the steps `d` set in
/// `nonzero`, in order, added to `out` (the same row stride as `right`).
#[inline(always)]
unsafe fn accumulate_tile<V: Vector, const R: usize, const C: usize>((t, nonzero): (Tile, u64)) {
    unsafe {
        let rows = t.rows::<R>();
        let mut acc = [[V::splat(0.0); C]; R];
        let mut left = nonzero;
        while left != 0 {
            let d = left.trailing_zeros() as usize;
            left &= left - 1;
            tile_step(&t, &rows, d, &mut acc);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (c, acc) in acc.iter().enumerate() {
                let out = t.out.add(rows[r] * t.right_stride + c * V::LANES);
                V::load(out).add(*acc).store(out);
            }
        }
    }
}

/// The operands of [`conv_row_generic`], as [`conv_row`] checked them.
#[derive(Clone, Copy)]
struct ConvOperands {
    image: *const f32,
    width: usize,
    y: usize,
    weight: *const f32,
    out: *mut f32,
    positions: usize,
}

/// Row `y` of the first block's 3×3 valid convolution of one image
/// (`width` pixels a row), without bias: `out[x][f] = Σ_t weight[t][f] ·
/// pixel(y + t / 3, x + t % 3)`, each sum in order of the tap `t` from
/// zero, fused where the instruction set has it, so the same numbers as
/// one position at a time. Each output's nine taps are a chain of
/// dependent multiply-adds; several positions at once give the chains to
/// hide their latency (8 × 2 vectors of accumulators on AVX-512, 2 × 4 on
/// AVX2), which a compiler left to itself did not find.
pub(crate) fn conv_row(
    image: &[f32],
    width: usize,
    y: usize,
    weight: &[[f32; FILTERS]; TAPS],
    out: &mut [[f32; FILTERS]],
) {
    conv_row_on(isa(), image, width, y, weight, out)
}

/// [`conv_row`] on the kernels of `isa`.
fn conv_row_on(
    isa: Isa,
    image: &[f32],
    width: usize,
    y: usize,
    weight: &[[f32; FILTERS]; TAPS],
    out: &mut [[f32; FILTERS]],
) {
    assert!(isa.available(), "{} is not available here", isa.label());
    assert!(width >= KERNEL, "an image {width} pixels wide");
    let positions = width - KERNEL + 1;
    assert_eq!(out.len(), positions, "one output per position");
    assert!(
        y.checked_add(KERNEL)
            .and_then(|rows| rows.checked_mul(width))
            .is_some_and(|end| end <= image.len()),
        "row {y} lies in the image"
    );
    let a = ConvOperands {
        image: image.as_ptr(),
        width,
        y,
        weight: weight.as_ptr().cast(),
        out: out.as_mut_ptr().cast(),
        positions,
    };
    // SAFETY: rows y..y + 3 of the image are in it (asserted), each read
    // at columns below positions + 2 = width; weight is TAPS × FILTERS and
    // out positions × FILTERS, a unique borrow; isa is available.
    unsafe { on_isa!(isa, conv_row(a)) }
}

/// [`conv_row`] on vectors `V`, `P` positions of `F` vectors (the 32
/// filters) at a time, then one at a time for the rest.
#[inline(always)]
unsafe fn conv_row_generic<V: Vector, const P: usize, const F: usize>(a: ConvOperands) {
    const {
        assert!(
            F * V::LANES == FILTERS && P >= 1,
            "F vectors hold the filters"
        )
    };
    unsafe {
        let (start, end) = inked_positions::<V>(a);
        let out = std::slice::from_raw_parts_mut(a.out, a.positions * FILTERS);
        out[..start * FILTERS].fill(0.0);
        out[end * FILTERS..].fill(0.0);
        let mut x = start;
        while x + P <= end {
            conv_positions::<V, P, F>(a, x);
            x += P;
        }
        while x < end {
            conv_positions::<V, 1, F>(a, x);
            x += 1;
        }
    }
}

/// The positions `start..end` of [`conv_row`] whose windows can hold a
/// pixel that is not zero: those between the first and the last such
/// column of the three rows (all of them where the row is wider than a
/// mask). Every other position's sum is +0 exactly, each tap adding
/// `k · 0 = ±0` to +0, so it is stored as that without being computed
/// (the same bits, where the weights are finite, as training keeps them:
/// an infinite or NaN weight would have made those sums NaN): MNIST's
/// digits leave about half the positions blank.
#[inline(always)]
unsafe fn inked_positions<V: Vector>(a: ConvOperands) -> (usize, usize) {
    if a.width > 64 {
        return (0, a.positions);
    }
    let mut ink = 0u64;
    for r in 0..KERNEL {
        ink |= unsafe { nonzero_mask::<V>(a.image.add((a.y + r) * a.width), a.width) };
    }
    if ink == 0 {
        return (0, 0);
    }
    let first = ink.trailing_zeros() as usize;
    let last = 63 - ink.leading_zeros() as usize;
    (
        first.saturating_sub(KERNEL - 1),
        (last + 1).min(a.positions),
    )
}

/// Positions `x..x + P` of [`conv_row`].
#[inline(always)]
unsafe fn conv_positions<V: Vector, const P: usize, const F: usize>(a: ConvOperands, x: usize) {
    unsafe {
        let mut acc = [[V::splat(0.0); F]; P];
        for t in 0..TAPS {
            let mut k = [V::splat(0.0); F];
            for (f, k) in k.iter_mut().enumerate() {
                *k = V::load(a.weight.add(t * FILTERS + f * V::LANES));
            }
            let pixels = a.image.add((a.y + t / KERNEL) * a.width + x + t % KERNEL);
            for (j, acc) in acc.iter_mut().enumerate() {
                let p = V::splat(*pixels.add(j));
                for (acc, k) in acc.iter_mut().zip(&k) {
                    *acc = k.mul_add(p, *acc);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (f, acc) in acc.iter().enumerate() {
                acc.store(a.out.add((x + j) * FILTERS + f * V::LANES));
            }
        }
    }
}

/// `iterations` rounds of 12 independent fused multiply-adds on vectors
/// `V` (enough to keep two FMA units busy through their latency), for
/// [`peak_gflops`]. Returns a sum of the results, so that none is elided.
#[inline(always)]
unsafe fn fma_loop<V: Vector>(iterations: usize) -> f32 {
    const { assert!(V::LANES <= 16, "the lanes buffer below") };
    unsafe {
        // Start values and factors the compiler cannot see, so that it can
        // neither fold the loop nor find a fixed point.
        let mut acc = [V::splat(std::hint::black_box(0.5)); 12];
        let (a, b) = (
            V::splat(std::hint::black_box(0.999_999)),
            V::splat(std::hint::black_box(1e-6)),
        );
        for _ in 0..iterations {
            for acc in &mut acc {
                *acc = acc.mul_add(a, b);
            }
        }
        let mut total = 0.0;
        for acc in acc {
            total += acc.sum();
        }
        total
    }
}

/// Single-precision operations per second the machine's cores can do at
/// most with `isa`, in GFLOP/s: fused multiply-adds (two operations each)
/// on independent registers, on every thread of the pool at once, the best
/// of five rounds of the same number of operations (about 20 ms with
/// AVX-512). On x86-64 the portable vector multiplies and adds apart (still
/// two operations). The yardstick `bench` holds the products to: no kernel
/// can beat it.
pub(crate) fn peak_gflops(isa: Isa) -> f64 {
    assert!(isa.available(), "{} is not available here", isa.label());
    let lanes = match isa {
        Isa::Portable => 4,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
    };
    let iterations = 4_000_000 * 16 / lanes;
    let round = || {
        let started = Instant::now();
        let sums = rayon::broadcast(|_| {
            // SAFETY: isa is available (asserted above).
            unsafe { on_isa!(isa, peak(iterations)) }
        });
        let elapsed = started.elapsed();
        std::hint::black_box(sums);
        elapsed
    };
    round(); // the vector units may need waking
    let best = (0..5).map(|_| round()).min().unwrap_or(Duration::MAX);
    let operations = rayon::current_num_threads() * iterations * 12 * lanes * 2;
    operations as f64 / best.as_secs_f64() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that make every product's last bits depend on the order of
    /// its sum, and are easy to write by hand.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// `a·b` by the definition, in f64.
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        (0..m * n)
            .map(|e| {
                (0..k)
                    .map(|t| a(e / n, t) as f64 * b(t, e % n) as f64)
                    .sum()
            })
            .collect()
    }

    fn assert_near(got: &[f32], expected: &[f64], what: &str) {
        assert_eq!(got.len(), expected.len(), "{what}: lengths");
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let tolerance = 1e-5 * (1.0 + e.abs()) * 50.0;
            assert!(
                (g as f64 - e).abs() <= tolerance,
                "{what}[{i}]: {g} against {e}"
            );
        }
    }

    /// Shapes with every remainder: images not a multiple of any tile's
    /// height or width, sums not a multiple of a chunk or of the slices.
    const SHAPES: [(usize, usize); 5] = [(1, 1), (5, 300), (32, 1100), (37, 2053), (128, 20)];

    /// [`backward_and_update_on`] both ways, on copies of `w`: the gradient
    /// applied with `lr` (the updated `w` and `dx`), then stored (the
    /// gradient), which must leave `w` as it is and give the same `dx`.
    fn both_ways(
        isa: Isa,
        w: &[f32],
        x: &[f32],
        g: &[f32],
        (n, k, o): (usize, usize, usize),
        lr: f32,
        what: &str,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut updated, mut dx) = (w.to_vec(), vec![f32::NAN; n * k]);
        let apply = WeightGradient::Apply { learning_rate: lr };
        backward_and_update_on(isa, &mut updated, x, g, &mut dx, n, k, o, apply);
        let (mut same, mut dx2) = (w.to_vec(), vec![f32::NAN; n * k]);
        let mut grad = vec![f32::NAN; k * o];
        let into = WeightGradient::Into(&mut grad);
        backward_and_update_on(isa, &mut same, x, g, &mut dx2, n, k, o, into);
        assert!(same == w, "{what}: the gradient alone leaves w as it is");
        assert!(dx2 == dx, "{what}: the same input gradient either way");
        (updated, dx, grad)
    }

    #[test]
    fn backward_and_update_equal_the_definition_on_every_instruction_set() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            for o in [column_block(isa), 2 * column_block(isa), 128] {
                for (n, k) in SHAPES.into_iter().chain([(3, 1500), (0, 40), (5, 0)]) {
                    let what = format!("{} {n}×{k}×{o}", isa.name());
                    let (x, g, w) = (values(n * k, 3), values(n * o, 4), values(k * o, 5));
                    let mut expected_dx =
                        reference(n, o, k, |i, c| g[i * o + c], |c, t| w[t * o + c]);
                    for (e, &x) in expected_dx.iter_mut().zip(&x) {
                        if x == 0.0 {
                            *e = 0.0; // no gradient back through a zero
                        }
                    }
                    let gradient = reference(k, n, o, |t, i| x[i * k + t], |i, c| g[i * o + c]);
                    let lr = 0.25;
                    let expected_w: Vec<f64> = w
                        .iter()
                        .zip(&gradient)
                        .map(|(&w, g)| w as f64 - lr * g)
                        .collect();

                    let (updated, dx, grad) =
                        both_ways(isa, &w, &x, &g, (n, k, o), lr as f32, &what);
                    assert_near(&dx, &expected_dx, &format!("{what} input gradient"));
                    assert_near(&updated, &expected_w, &format!("{what} update"));
                    assert_near(&grad, &gradient, &format!("{what} weight gradient"));
                }
            }
        }
    }

    /// Columns of `x` that are zero in every row (the features ReLU or
    /// dropout zeroed in the whole batch) are skipped: their input gradient
    /// is zero and their rows of `w` are left as they are (their stored
    /// gradient zero), even where those rows are infinite (which a product
    /// that took them would show), and the other columns and rows get the
    /// same bits as with those rows finite. The zero columns lie within a
    /// block of rows, across a 64-row mask and a block boundary (512), and
    /// at the end of a last, short block.
    #[test]
    fn backward_and_update_skip_the_inputs_zero_in_every_row() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            for o in [column_block(isa), 128] {
                for (n, k) in [(32, 1100), (5, 600), (37, 2053)] {
                    let what = format!("{} {n}×{k}×{o}", isa.name());
                    let bands = [70..101, 500..530, k - 40..k];
                    let mut x = values(n * k, 3);
                    for (j, v) in x.iter_mut().enumerate() {
                        if *v < 0.1 || bands.iter().any(|band| band.contains(&(j % k))) {
                            *v = 0.0;
                        }
                    }
                    let g = values(n * o, 4);
                    let finite = values(k * o, 5);
                    let dead = |t: usize| (0..n).all(|i| x[i * k + t] == 0.0);
                    assert!(bands.iter().all(|band| band.clone().all(dead)) && !(0..k).all(dead));
                    let mut infinite = finite.clone();
                    for (j, v) in infinite.iter_mut().enumerate() {
                        if dead(j / o) {
                            *v = f32::INFINITY;
                        }
                    }
                    let gradient = reference(k, n, o, |t, i| x[i * k + t], |i, c| g[i * o + c]);
                    let expected_dx =
                        reference(n, o, k, |i, c| g[i * o + c], |c, t| finite[t * o + c]);
                    let near = |got: f32, e: f64| (got as f64 - e).abs() <= 5e-4 * (1.0 + e.abs());
                    let run = |w: &[f32]| both_ways(isa, w, &x, &g, (n, k, o), 0.25, &what);
                    let (w_finite, dx_finite, _) = run(&finite);
                    let (w_infinite, dx_infinite, grad) = run(&infinite);
                    for (j, &v) in dx_infinite.iter().enumerate() {
                        if x[j] == 0.0 {
                            assert_eq!(v.to_bits(), 0, "{what}: dx[{j}] of a zero input");
                        } else {
                            let e = expected_dx[j];
                            assert!(near(v, e), "{what}: dx[{j}] {v} against {e}");
                        }
                    }
                    assert!(
                        dx_infinite == dx_finite,
                        "{what}: dx depends on the skipped rows"
                    );
                    for (j, (&a, &b)) in w_infinite.iter().zip(&w_finite).enumerate() {
                        if dead(j / o) {
                            assert_eq!(a, infinite[j], "{what}: a skipped row of w changed");
                            assert_eq!(b, finite[j], "{what}: a skipped row of w changed");
                        } else {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{what}: w[{j}] depends on the skipped rows"
                            );
                        }
                    }
                    for (j, &v) in grad.iter().enumerate() {
                        if dead(j / o) {
                            assert_eq!(v.to_bits(), 0, "{what}: gradient[{j}] of a skipped row");
                        } else {
                            let e = gradient[j];
                            assert!(near(v, e), "{what}: gradient[{j}] {v} against {e}");
                        }
                    }
                }
            }
        }
    }

    /// Whether image `i` of `n` has a nonzero input at row `t`, in the tests
    /// of rows with few images: row `t` in `min(t % 13, n)` of them.
    fn few_live(n: usize, i: usize, t: usize) -> bool {
        (i + 3 * t) % n < t % 13
    }

    /// Rows of `w` whose input is nonzero in only a few images, 0 to 12 of
    /// them (a row per count, over and over, so across 64-row masks and the
    /// 512-row block), in batches of 5, 32, 64 and 65 images (the last too
    /// many for the one-row pass): every row of the updated `w` and of the
    /// stored gradient has the bits of the dense tiles' sum, in order of
    /// image over all images, fused where the instruction set's
    /// multiply-add is, and `dx` is the definition where `x` is not zero
    /// and zero where it is.
    #[test]
    fn backward_and_update_give_rows_with_few_images_the_dense_bits() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let fused = isa != Isa::Portable || cfg!(target_arch = "aarch64");
            let fma = |a: f32, b: f32, c: f32| if fused { a.mul_add(b, c) } else { a * b + c };
            for o in [column_block(isa), 128] {
                for (n, k) in [(32, 1100), (5, 600), (1, 600), (64, 700), (65, 600)] {
                    let what = format!("{} {n}×{k}×{o}", isa.name());
                    let live = |i: usize, t: usize| few_live(n, i, t);
                    let x: Vec<f32> = values(n * k, 3)
                        .into_iter()
                        .enumerate()
                        .map(|(j, v)| match live(j / k, j % k) {
                            true if v == 0.0 => 0.5,
                            true => v,
                            false if j % 3 == 0 => -0.0,
                            false => 0.0,
                        })
                        .collect();
                    let (g, w) = (values(n * o, 4), values(k * o, 5));
                    let lr = 0.25f32;
                    let sum = |t: usize, c: usize| {
                        (0..n).fold(0.0f32, |acc, i| fma(x[i * k + t], g[i * o + c], acc))
                    };
                    let dx_expected = reference(n, o, k, |i, c| g[i * o + c], |c, t| w[t * o + c]);

                    let (updated, dx, grad) = both_ways(isa, &w, &x, &g, (n, k, o), lr, &what);
                    for j in 0..k * o {
                        let (t, c) = (j / o, j % o);
                        let expected = if (0..n).any(|i| live(i, t)) {
                            fma(-lr, sum(t, c), w[j])
                        } else {
                            w[j]
                        };
                        let count = (0..n).filter(|&i| live(i, t)).count();
                        assert_eq!(
                            updated[j].to_bits(),
                            expected.to_bits(),
                            "{what}: w[{t}][{c}] of a row of {count} images"
                        );
                        assert_eq!(
                            grad[j].to_bits(),
                            sum(t, c).to_bits(),
                            "{what}: gradient[{t}][{c}] of a row of {count} images"
                        );
                    }
                    for (j, &v) in dx.iter().enumerate() {
                        if x[j] == 0.0 {
                            assert_eq!(v.to_bits(), 0, "{what}: dx[{j}] of a zero input");
                        } else {
                            let e = dx_expected[j];
                            let near = (v as f64 - e).abs() <= 5e-4 * (1.0 + e.abs());
                            assert!(near, "{what}: dx[{j}] {v} against {e}");
                        }
                    }
                }
            }
        }
    }

    /// [`live_rows`] against the definition: a block of 500 rows (its last
    /// 64-row mask short) starting at column 37 of `x`, rows whose input is
    /// nonzero in 0 to 12 images (zeros of either sign), in batches of 1, 5,
    /// 63, 64 and 65 (the last too many for the one-row pass): the rows in
    /// none go nowhere (their stored gradient zeroed), those in at most
    /// [`SPARSE_IMAGES`] to `sparse` with their images, the others to
    /// `live`, each list in order.
    #[test]
    fn live_rows_sort_the_rows_by_their_images() {
        let (k, first, rows, o) = (600, 37, 500, 16);
        for n in [1, 5, 63, 64, 65] {
            let live = |i: usize, t: usize| few_live(n, i, t);
            let x: Vec<f32> = (0..n * k)
                .map(|j| match live(j / k, j % k) {
                    true => 1.0 + (j % 7) as f32,
                    false if j % 3 == 0 => -0.0,
                    false => 0.0,
                })
                .collect();
            let mut grad_w = vec![f32::NAN; rows * o];
            let a = Backward {
                w: std::ptr::null_mut(),
                grad_w: grad_w.as_mut_ptr(),
                x: x.as_ptr(),
                gt: std::ptr::null(),
                g: std::ptr::null(),
                dx: std::ptr::null_mut(),
                dxt: std::ptr::null_mut(),
                n,
                padded: n.next_multiple_of(32),
                k,
                o,
                first,
                rows,
                lr: 0.0,
            };
            let (mut dense, mut sparse) = ([0u32; UPDATE_ROWS], [(0u32, 0u64); UPDATE_ROWS]);
            // SAFETY: x is n × k with first + rows <= k, grad_w rows × o, and
            // live_rows reads or writes nothing else.
            let (count, sparse_count) =
                unsafe { live_rows::<Portable>(&a, &mut dense, &mut sparse) };
            let (mut expected_dense, mut expected_sparse) = (vec![], vec![]);
            for r in 0..rows {
                let images: u64 = (0..n)
                    .filter(|&i| x[i * k + first + r] != 0.0)
                    .map(|i| 1u64.checked_shl(i as u32).unwrap_or(0))
                    .fold(0, |m, b| m | b);
                let count = (0..n).filter(|&i| live(i, first + r)).count();
                let dead = count == 0;
                let gradient = &grad_w[r * o..(r + 1) * o];
                assert!(
                    gradient
                        .iter()
                        .all(|v| if dead { v.to_bits() == 0 } else { v.is_nan() }),
                    "{n} images: row {r}'s stored gradient"
                );
                match count {
                    0 => {}
                    _ if n <= 64 && count <= SPARSE_IMAGES => {
                        expected_sparse.push((r as u32, images))
                    }
                    _ => expected_dense.push(r as u32),
                }
            }
            assert_eq!(
                &dense[..count],
                &expected_dense[..],
                "{n} images: the tiles' rows"
            );
            assert_eq!(
                &sparse[..sparse_count],
                &expected_sparse[..],
                "{n} images: one-row passes"
            );
            assert!(sparse_count > 0 || n > 64, "{n} images: some rows go alone");
        }
    }

    /// [`transpose_bits`] against the definition, on a matrix of no pattern.
    #[test]
    fn transpose_bits_is_the_transpose() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let m: [u64; 64] = std::array::from_fn(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        });
        let mut t = m;
        transpose_bits(&mut t);
        for (i, row) in t.iter().enumerate() {
            for (j, column) in m.iter().enumerate() {
                assert_eq!(row >> j & 1, column >> i & 1, "bit {j} of row {i}");
            }
        }
    }

    /// Depths at which [`sparse_inputs`] are zero in every row: a band
    /// aligned neither to a block of [`PRODUCT_DEPTH`] nor to a vector, so
    /// that the blocks around it have nonzero inputs too.
    const ZERO_BAND: std::ops::Range<usize> = 70..101;

    /// Inputs mostly zero, as after ReLU and dropout, with a row and the
    /// depths of [`ZERO_BAND`] of nothing but zeros.
    fn sparse_inputs(rows: usize, depth: usize, seed: usize) -> Vec<f32> {
        let mut x = values(rows * depth, seed);
        for (i, v) in x.iter_mut().enumerate() {
            let (row, d) = (i / depth, i % depth);
            if *v < 0.1 || row == 2 || ZERO_BAND.contains(&d) {
                *v = 0.0;
            }
        }
        x
    }

    /// `w` with the rows of [`ZERO_BAND`] infinite, where
    /// [`sparse_inputs`] are all zero: a product that took them would be
    /// NaN.
    fn infinite_where_zero(w: &[f32], o: usize) -> Vec<f32> {
        let mut w = w.to_vec();
        w.iter_mut()
            .skip(ZERO_BAND.start * o)
            .take(ZERO_BAND.len() * o)
            .for_each(|v| *v = f32::INFINITY);
        w
    }

    /// The bits the products promise for one element, those of a dense
    /// product: `init` plus, block of [`PRODUCT_DEPTH`] by block over
    /// `depths` (whole blocks from its start), the block's sum in order,
    /// fused where `isa`'s multiply-add is.
    fn blocked_sum(
        isa: Isa,
        init: f32,
        x: impl Fn(usize) -> f32,
        w: impl Fn(usize) -> f32,
        depths: std::ops::Range<usize>,
    ) -> f32 {
        let fused = isa != Isa::Portable || cfg!(target_arch = "aarch64");
        let mut total = init;
        for start in depths.clone().step_by(PRODUCT_DEPTH) {
            let mut acc = 0.0f32;
            for d in start..(start + PRODUCT_DEPTH).min(depths.end) {
                let (x, w) = (x(d), w(d));
                acc = if fused {
                    x.mul_add(w, acc)
                } else {
                    x * w + acc
                };
            }
            total += acc;
        }
        total
    }

    #[test]
    fn accumulated_products_skip_only_zeros_and_each_row_stands_alone() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            for o in [column_block(isa), 2 * column_block(isa), 128] {
                for (rows, depth) in SHAPES.into_iter().chain([(13, 800), (0, 5), (4, 0)]) {
                    let what = format!("{} {rows}×{depth}×{o}", isa.name());
                    let (x, w, start) = (
                        sparse_inputs(rows, depth, 1),
                        values(depth * o, 2),
                        values(rows * o, 3),
                    );
                    let mut out = start.clone();
                    let infinite = infinite_where_zero(&w, o);
                    accumulate_product_on(isa, &mut out, &x, &infinite, rows, depth, o);
                    let mut finite = start.clone();
                    accumulate_product_on(isa, &mut finite, &x, &w, rows, depth, o);
                    assert_eq!(out, finite, "{what}: zeros not skipped");

                    let product =
                        reference(rows, depth, o, |i, t| x[i * depth + t], |t, c| w[t * o + c]);
                    let expected: Vec<f64> = start
                        .iter()
                        .zip(&product)
                        .map(|(&s, p)| s as f64 + p)
                        .collect();
                    assert_near(&out, &expected, &what);
                    let bits: Vec<f32> = (0..rows * o)
                        .map(|e| {
                            let (r, c) = (e / o, e % o);
                            let x = |d| x[r * depth + d];
                            blocked_sum(isa, start[e], x, |d| w[d * o + c], 0..depth)
                        })
                        .collect();
                    assert_eq!(out, bits, "{what}: a dense sum's bits");

                    // Each row alone gives the same bits as with the others,
                    // and a NaN input is not skipped.
                    for r in 0..rows {
                        let mut alone = start[r * o..(r + 1) * o].to_vec();
                        let x_row = &x[r * depth..(r + 1) * depth];
                        accumulate_product_on(isa, &mut alone, x_row, &w, 1, depth, o);
                        assert_eq!(alone, out[r * o..(r + 1) * o], "{what}: row {r} alone");
                    }
                    if rows > 0 && depth > 0 {
                        let mut with_nan = x[..depth].to_vec();
                        with_nan[depth / 2] = f32::NAN;
                        let mut alone = start[..o].to_vec();
                        accumulate_product_on(isa, &mut alone, &with_nan, &w, 1, depth, o);
                        assert!(alone.iter().all(|v| v.is_nan()), "{what}: NaN skipped");
                    }
                }
            }
        }
    }

    #[test]
    fn sparse_products_skip_only_zeros_and_each_row_stands_alone() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            // Three column blocks: on AVX2 and the portable vector, whole
            // tiles and then a remainder.
            let mut widths = vec![column_block(isa), 3 * column_block(isa), 128];
            widths.sort();
            widths.dedup();
            for o in widths {
                for (rows, depth) in SHAPES.into_iter().chain([(32, 20_000), (0, 5), (4, 0)]) {
                    let what = format!("{} {rows}×{depth}×{o}", isa.name());
                    let x = sparse_inputs(rows, depth, 4);
                    let w = values(depth * o, 5);
                    let mut out = vec![f32::NAN; rows * o];
                    let infinite = infinite_where_zero(&w, o);
                    sparse_product_on(isa, &mut out, &x, &infinite, rows, depth, o);
                    let mut finite = vec![f32::NAN; rows * o];
                    sparse_product_on(isa, &mut finite, &x, &w, rows, depth, o);
                    assert_eq!(out, finite, "{what}: zeros not skipped");
                    let product =
                        reference(rows, depth, o, |i, t| x[i * depth + t], |t, c| w[t * o + c]);
                    assert_near(&out, &product, &what);

                    // The bits: each slice of the depth summed block by
                    // block, the slices added in order.
                    let slice = sparse_slice(depth);
                    let bits: Vec<f32> = (0..rows * o)
                        .map(|e| {
                            let (r, c) = (e / o, e % o);
                            let (x, w) = (|d| x[r * depth + d], |d| w[d * o + c]);
                            (0..depth).step_by(slice.max(1)).fold(0.0, |total, start| {
                                let end = (start + slice).min(depth);
                                total + blocked_sum(isa, 0.0, x, w, start..end)
                            })
                        })
                        .collect();
                    assert_eq!(out, bits, "{what}: the slices' dense sums");

                    if rows > 0 && depth > 0 {
                        // A row alone gives the same bits, and a NaN input
                        // is not skipped.
                        let r = rows - 1;
                        let mut alone = vec![0.0; o];
                        let x_row = &x[r * depth..(r + 1) * depth];
                        sparse_product_on(isa, &mut alone, x_row, &w, 1, depth, o);
                        assert_eq!(alone, out[r * o..], "{what}: the last row alone");
                        let mut with_nan = x_row.to_vec();
                        with_nan[depth / 2] = f32::NAN;
                        sparse_product_on(isa, &mut alone, &with_nan, &w, 1, depth, o);
                        assert!(alone.iter().all(|v| v.is_nan()), "{what}: NaN skipped");
                    }
                }
            }
        }
    }

    #[test]
    fn the_convolution_row_is_the_definition_bit_for_bit_on_every_instruction_set() {
        let weight: [[f32; FILTERS]; TAPS] =
            std::array::from_fn(|t| std::array::from_fn(|f| values(1, t * FILTERS + f)[0]));
        // Positions: 26 and 27 (whole blocks of 8 or 2 and a remainder, or
        // none), 10, and one.
        // With ink everywhere, then zero but for a few columns (70 is wider
        // than an ink mask): a band of three in row 0, one pixel inside row
        // 2 (the conv rows 1 and 2 see only it, so their ink ends inside
        // the row), rows 3-5 blank (conv row 3 has no ink at all), one
        // pixel at the right edge of row 6: each blank window's +0 is the
        // definition's too.
        for (width, inked) in [28, 29, 12, 3, 70]
            .into_iter()
            .flat_map(|w| [(w, false), (w, true)])
        {
            let mut image = values(width * 8, width);
            if inked {
                for (i, p) in image.iter_mut().enumerate() {
                    let (y, x) = (i / width, i % width);
                    let ink = match y {
                        0 => (width / 3..width / 3 + 3).contains(&x),
                        2 => x == width / 2,
                        6 => x == width - 1,
                        _ => false,
                    };
                    if !ink {
                        *p = 0.0;
                    }
                }
            }
            let expected = |y: usize, x: usize, fused: bool| -> [f32; FILTERS] {
                std::array::from_fn(|f| {
                    (0..TAPS).fold(0.0f32, |acc, t| {
                        let (k, p) = (weight[t][f], image[(y + t / 3) * width + x + t % 3]);
                        if fused {
                            k.mul_add(p, acc)
                        } else {
                            k * p + acc
                        }
                    })
                })
            };
            // The two roundings differ somewhere, so the check below tells them apart.
            assert!(
                (0..6)
                    .any(|y| (0..width - 2).any(|x| expected(y, x, true) != expected(y, x, false))),
                "width {width}"
            );
            for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
                // Fused where the instruction set has FMA, in order of taps.
                let fused = isa != Isa::Portable || cfg!(target_arch = "aarch64");
                for y in 0..6 {
                    let mut out = vec![[f32::NAN; FILTERS]; width - 2];
                    conv_row_on(isa, &image, width, y, &weight, &mut out);
                    for (x, got) in out.iter().enumerate() {
                        let what = format!("{} width {width} row {y} position {x}", isa.name());
                        let bits = |v: &[f32; FILTERS]| v.map(f32::to_bits);
                        assert_eq!(bits(got), bits(&expected(y, x, fused)), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_threads() {
        let (n, k, o) = (32, 5000, 128);
        let (x, g, w) = (values(n * k, 6), values(n * o, 7), values(k * o, 8));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut w, mut dx) = (w.clone(), vec![0.0; n * k]);
                backward_and_update(
                    &mut w,
                    &x,
                    &g,
                    &mut dx,
                    n,
                    k,
                    o,
                    WeightGradient::Apply { learning_rate: 0.1 },
                );
                (dx, w)
            })
        };
        assert!(run(1) == run(3), "one thread and three give other bits");
        let sparse = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let x: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
            pool.install(|| {
                let mut out = vec![0.0; n * o];
                sparse_product(&mut out, &x, &w, n, k, o);
                out
            })
        };
        assert!(
            sparse(1) == sparse(3),
            "the sparse product on one thread and on three gives other bits"
        );
    }

    #[test]
    fn the_setting_names_an_instruction_set_this_machine_has() {
        assert_eq!(Isa::from_setting(None), Ok(Isa::best()));
        assert_eq!(Isa::from_setting(Some(" ")), Ok(Isa::best()));
        assert_eq!(Isa::from_setting(Some("Portable")), Ok(Isa::Portable));
        let unknown = Isa::from_setting(Some("sse9")).unwrap_err().to_string();
        assert!(unknown.contains("portable, avx2, avx512"), "{unknown}");
        for isa in Isa::ALL.into_iter().filter(|isa| !isa.available()) {
            let refused = Isa::from_setting(Some(isa.name())).unwrap_err().to_string();
            assert!(refused.contains(Isa::best().name()), "{refused}");
        }
        assert!(Isa::best().available());
    }

    #[test]
    fn the_peak_is_measured_on_every_instruction_set_this_machine_has() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let peak = peak_gflops(isa);
            assert!(peak > 0.1 && peak.is_finite(), "{}: {peak}", isa.name());
        }
    }
}
