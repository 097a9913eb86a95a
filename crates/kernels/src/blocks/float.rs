//! Plain float rows: F32, F16 and BF16 weights. Their dot products take activations in the
//! same format (ggml's `vec_dot_type`), so F16 weights multiply f16-rounded activations, and
//! accumulate as ggml's scalar code does: each product in f32, summed in f64.
//! Spec: ggml `ggml-impl.h` (`ggml_compute_fp32_to_bf16`), `ggml-cpu/vec.cpp`
//! (`ggml_vec_dot_f32`, `ggml_vec_dot_f16`, `ggml_vec_dot_bf16`).

use half::f16;

/// f32 to bf16 bits as ggml rounds: to nearest even, NaNs made quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline]
fn f16_at(b: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

#[inline]
fn bf16_at(b: &[u8]) -> f32 {
    bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

#[inline]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn check_row(what: &str, elem_bytes: usize, bytes: usize, n: usize) {
    assert!(
        Some(bytes) == n.checked_mul(elem_bytes),
        "{what}: {bytes} bytes do not hold {n} values"
    );
}

pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    check_row("dequantize F32", 4, src.len(), dst.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *y = f32_at(b);
    }
}

pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    check_row("dequantize F16", 2, src.len(), dst.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = f16_at(b);
    }
}

pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    check_row("dequantize BF16", 2, src.len(), dst.len());
    for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *y = bf16_at(b);
    }
}

/// F32 activations are stored as they are (little-endian).
pub fn quantize_row_f32(x: &[f32], out: &mut [u8]) {
    check_row("quantize F32", 4, out.len(), x.len());
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// f32 to f16, rounding to nearest even (as F16C and ggml do).
pub fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
    check_row("quantize F16", 2, out.len(), x.len());
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    }
}

pub fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    check_row("quantize BF16", 2, out.len(), x.len());
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
    }
}

pub fn vec_dot_f32_ref(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        sum += (f32_at(x) * f32_at(y)) as f64;
    }
    sum as f32
}

pub fn vec_dot_f16_ref(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        sum += (f16_at(x) * f16_at(y)) as f64;
    }
    sum as f32
}

pub fn vec_dot_bf16_ref(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        sum += (bf16_at(x) * bf16_at(y)) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway too: ties to even (up).
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        // A signalling NaN becomes quiet.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        // The largest finite f32 rounds up to infinity.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(bf16_to_f32(0x4049), f32::from_bits(0x4049_0000));
    }

    #[test]
    fn float_rows_round_trip() {
        let x = [1.5f32, -2.25, 0.0, 65504.0, 1e-7];
        let mut b = vec![0u8; 10];
        let mut y = [0f32; 5];
        quantize_row_f16(&x, &mut b);
        dequantize_row_f16(&b, &mut y);
        assert_eq!(&y[..4], &x[..4]);
        assert_eq!(y[4], f16::from_f32(1e-7).to_f32());
        quantize_row_bf16(&x[..3], &mut b[..6]);
        dequantize_row_bf16(&b[..6], &mut y[..3]);
        assert_eq!(&y[..3], &x[..3]);
        let mut b = vec![0u8; 20];
        quantize_row_f32(&x, &mut b);
        dequantize_row_f32(&b, &mut y);
        assert_eq!(y, x);
        let want: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        assert_eq!(vec_dot_f32_ref(&b, &b), want as f32);
    }
}
