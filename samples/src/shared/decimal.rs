//! Fixed-width decimal numbers for lambda replies, shared by the samples that print numbers.
//!
//! Fixed width on purpose: a length that depends on the number of digits makes the kernel
//! verifier walk the reply's copy and checksum code once per possible length (over its
//! 1M-instruction limit), and a start offset that depends on it is a stack access with a
//! variable offset, which ours refuses. Here every store is at a constant offset.

/// Writes `n` in decimal, zero-padded to `D` digits, into `out[at..at + D]` (the top digits
/// are lost if `n` has more than `D`).
#[cfg(not(feature = "nic"))]
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

/// The NIC build's [`write_padded`]: the same digits with shifts and adds only, since the NFP
/// multiplies 32-bit operands at most and the compiler divides a `u64` by 10 with a 64-bit
/// multiply.
///
/// The digits are written by one out-of-line loop ([`write_digits`]) rather than unrolled per
/// digit: on a NIC core, whose instruction store holds 2,800 instructions, the 30 digits of
/// `whoami` unrolled took some 600 of them, and the loop is in the code once for every call
/// site (and, coalesced, for every lambda built with this SDK).
#[cfg(feature = "nic")]
#[inline(always)]
pub fn write_padded<const N: usize, const D: usize>(out: &mut [u8; N], at: usize, n: u64) {
    if let Some(digits) = out.get_mut(at..at + D) {
        // The result is kept (in a volatile local) so that the compiler cannot drop it from
        // the function: the kernel refuses a subprogram that exits with a stack pointer left
        // in r0, and an unused result leaves r0 to whatever the loop last held there.
        let mut lost = 0u64;
        // SAFETY: a write to a local.
        unsafe { core::ptr::write_volatile(&mut lost, write_digits(digits, n)) };
    }
}

/// The most digits [`write_digits`] writes: all of a `u64`'s.
#[cfg(feature = "nic")]
const MAX_DIGITS: usize = 20;

/// Writes `n` in decimal, zero-padded, into all of `out` (at most [`MAX_DIGITS`] bytes) and
/// returns what did not fit (`n` without its `out.len()` lowest digits; 0 when all fit). The
/// length is read through memory the compiler cannot see into, so that it keeps the loop
/// rather than unrolling it for each caller.
#[cfg(feature = "nic")]
#[inline(never)]
fn write_digits(out: &mut [u8], n: u64) -> u64 {
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&out.len()) };
    let mut n = n;
    for k in 0..MAX_DIGITS {
        if k >= len {
            break;
        }
        let (q, r) = divmod10(n);
        if let Some(byte) = out.get_mut(len - 1 - k) {
            *byte = b'0' + r as u8;
        }
        n = q;
    }
    n
}

/// `(n / 10, n % 10)` without multiply or divide (Hacker's Delight, `divu10`): `q` estimates
/// `n * 0.8` by shifts and then `/ 8`, off by at most one, which the branch-free correction
/// from the remainder fixes.
#[cfg(feature = "nic")]
#[inline(always)]
pub fn divmod10(n: u64) -> (u64, u64) {
    let mut q = (n >> 1) + (n >> 2);
    q += q >> 4;
    q += q >> 8;
    q += q >> 16;
    q += q >> 32;
    q >>= 3;
    let r = n - ((q << 3) + (q << 1));
    // r is in 0..20: one more ten when r >= 10, i.e. when r + 6 reaches 16. The mask changes
    // nothing but tells the verifiers the carry is 0 or 1: the compiler turns the shifts
    // below back into a multiply, which the NFP takes only on operands of 32 bits.
    let carry = ((r + 6) >> 4) & 1;
    (q + carry, r - ((carry << 3) + (carry << 1)))
}
