//! Fixed-width decimal numbers for lambda replies, shared by the samples that print numbers.
//!
//! Fixed width on purpose: a length that depends on the number of digits makes the kernel
//! verifier walk the reply's copy and checksum code once per possible length (over its
//! 1M-instruction limit), and a start offset that depends on it is a stack access with a
//! variable offset, which ours refuses. Here every store is at a constant offset.

/// Writes `n` in decimal, zero-padded to `D` digits, into `out[at..at + D]` (the top digits
/// are lost if `n` has more than `D`).
#[inline(always)]
pub fn write_padded<const N: usize, const D: usize>(out: &mut [u8; N], at: usize, n: u64) {
    let mut n = n;
    for i in (0..D).rev() {
        if let Some(byte) = out.get_mut(at + i) {
            *byte = b'0' + (n % 10) as u8;
        }
        n /= 10;
    }
}
