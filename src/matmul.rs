//! Matrix products on the host, on the `gemm` crate's kernels (the ones
//! Burn's Flex backend uses, AVX-512 or AVX2 picked at run time) with all
//! threads: the one place that calls into `gemm`, with the bounds checks its
//! raw-pointer interface needs. (The hidden layer's backward pass, its
//! forward product in training and inference, and the convolution run on
//! the crate's own kernels, [`crate::kernels`].)

/// A read-only matrix view: values with row and column strides.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    values: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(values: &'a [f32], cols: usize) -> Self {
        Self {
            values,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(values: &'a [f32], cols: usize) -> Self {
        Self {
            values,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Panics unless every element of a `rows × cols` view lies in `values`
    /// (the unsafe calls below rely on it, so the arithmetic is checked too).
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(self.row_stride)
                .and_then(|r| (cols - 1).checked_mul(self.col_stride)?.checked_add(r));
            assert!(
                last.is_some_and(|last| last < self.values.len()),
                "matrix view out of bounds"
            );
        }
    }
}

/// `a·b` for an `m × k` and a `k × n` matrix, as a new row-major `m × n`.
/// (Only flex's dense op needs a new matrix; the host step writes into its own.)
#[cfg(any(feature = "flex", test))]
pub fn matmul(m: usize, k: usize, n: usize, a: Matrix, b: Matrix) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    product(&mut out, m, k, n, a, b, None);
    out
}

/// Slices the long dimension of [`product_split_k`] is cut into. Fixed,
/// not the thread count, so that the sum's order (and so its last bits)
/// is the same on every machine.
#[cfg(any(feature = "flex", test))]
const K_SLICES: usize = 8;

/// Writes `a·b` into the row-major `m × n` matrix `dst`, for row-major
/// `a` (`m × k`) and `b` (`k × n`) with `k` much larger than `m` and `n`,
/// like the hidden layer's 32×20000·20000×128. gemm runs such a product on
/// one thread (it splits the work over `m` and `n`); here `k` is cut into
/// slices whose products run in parallel and are then added in order,
/// which took the product from 2.3 to 0.8 ms on two cores. The Flex op's
/// forward pass (`--engine burn`); the host step's skips the zero features
/// ([`crate::kernels::sparse_product`]).
#[cfg(any(feature = "flex", test))]
pub fn product_split_k(dst: &mut [f32], m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) {
    use rayon::prelude::*;
    assert_eq!((a.len(), b.len()), (m * k, k * n), "operand sizes");
    if m == 0 || n == 0 {
        return;
    }
    let slice = k.div_ceil(K_SLICES).max(1);
    let mut parts = vec![0.0f32; K_SLICES * m * n];
    parts
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(s, part)| {
            let start = (s * slice).min(k);
            let len = slice.min(k - start);
            product_with(
                part,
                m,
                len,
                n,
                Matrix::row_major(&a[start..], k),
                Matrix::row_major(&b[start * n..(start + len) * n], n),
                None,
                gemm::Parallelism::None,
            );
        });
    let (first, rest) = parts.split_at(m * n);
    dst.copy_from_slice(first);
    for part in rest.chunks_exact(m * n) {
        for (d, p) in dst.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// Writes `a·b` into the row-major `m × n` matrix `dst`, or, with
/// `add = Some(scale)`, adds `scale·a·b` to it in place: the SGD update
/// `w -= lr·xᵀg` in one pass over `w`, with no gradient materialised.
pub fn product(
    dst: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    a: Matrix,
    b: Matrix,
    add: Option<f32>,
) {
    product_with(dst, m, k, n, a, b, add, gemm::Parallelism::Rayon(0))
}

#[allow(clippy::too_many_arguments)]
fn product_with(
    dst: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    a: Matrix,
    b: Matrix,
    add: Option<f32>,
    parallelism: gemm::Parallelism,
) {
    a.check(m, k);
    b.check(k, n);
    assert_eq!(dst.len(), m * n, "destination size");
    // SAFETY: `check` proved that every element of both views is in bounds,
    // `dst` holds exactly `m × n` values at the strides given, and `dst` is a
    // unique borrow, so it overlaps neither input. gemm reads `dst` only when
    // `read_dst` is set, and writes only `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            add.is_some(),
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            add.unwrap_or(1.0),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_in_place_updates_match_the_definition() {
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v % 7) as f32 - 3.0).collect();
        let at = |i: usize, j: usize| a[i * k + j];
        let bt = |i: usize, j: usize| b[i * n + j];
        let expected: Vec<f32> = (0..m * n)
            .map(|e| (0..k).map(|t| at(e / n, t) * bt(t, e % n)).sum())
            .collect();
        let got = matmul(m, k, n, Matrix::row_major(&a, k), Matrix::row_major(&b, n));
        assert_eq!(got, expected);
        // aᵀ read through a transposed view of a k × m matrix.
        let a_t: Vec<f32> = (0..k * m).map(|e| at(e % m, e / m)).collect();
        let got = matmul(
            m,
            k,
            n,
            Matrix::transposed(&a_t, m),
            Matrix::row_major(&b, n),
        );
        assert_eq!(got, expected);
        let mut split = vec![0.0f32; m * n];
        product_split_k(&mut split, m, k, n, &a, &b);
        assert_eq!(split, expected);
        let mut dst = vec![1.0f32; m * n];
        product(
            &mut dst,
            m,
            k,
            n,
            Matrix::row_major(&a, k),
            Matrix::row_major(&b, n),
            Some(-0.5),
        );
        let updated: Vec<f32> = expected.iter().map(|v| 1.0 - 0.5 * v).collect();
        assert_eq!(dst, updated);
    }
}
