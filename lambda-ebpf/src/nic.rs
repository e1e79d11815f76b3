//! The byte copies and checksums of the NIC flavour of the SDK (feature `nic`), in code.
//!
//! The NFP's offload has no `bpf_xdp_load_bytes`, `bpf_xdp_store_bytes` or `bpf_csum_diff`
//! (see `nic-offload/src/model.rs`), so under the `nic` feature the XDP [`Frame`] does their
//! work with direct packet access: each load or store follows its own comparison against
//! `data_end`, which is what both the kernel verifier and ours prove accesses safe with.
//!
//! Cost for the verifiers: the request code calls these with lengths that are constants in a
//! lambda whose reply body has a constant length (the UDP checksum's chunks and tail, the body
//! store), so each loop below is walked once per call site; the variable lengths (IPv4
//! options, the headers saved when a packet grows at its head) are bounded by 40 and 106
//! bytes. Sums go a 32-bit word at a time, copies a byte at a time; each is a subprogram, so
//! its loop is in the code once however many call sites it has.
//!
//! The functions are plain code over addresses, so host tests run them over a buffer.
//!
//! [`Frame`]: crate::frame::Frame

use crate::frame::HelperError;

/// `-EFAULT`: what the helpers answer for an access past the packet.
const EFAULT: i64 = -14;

/// Folds a 64-bit sum of 32-bit words into 32 bits with end-around carry, as `bpf_csum_diff`
/// returns it.
#[inline(always)]
fn fold32(mut sum: u64) -> u32 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as u32
}

/// The most bytes one [`load`] or [`store`] moves: the longest header stack (106 bytes) the
/// request code saves when a packet grows at its head, rounded up.
pub const MAX_COPY: usize = 128;

/// The longest source [`store`] writes in line rather than through its subprogram.
const INLINE_STORE: usize = 16;

/// `n` through memory the compiler cannot see into: it then cannot turn the loops below,
/// which count up to a constant and test the length inside, into loops that count down to
/// the length and stop on equality, which a verifier that knows only the length's range
/// cannot follow to their end.
#[inline(always)]
fn opaque(n: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&n) }
}

/// `at` when the byte there lies before `end`. The check is `at + 1 > end` with the 1 hidden
/// from the compiler, which would otherwise test `at >= end`: the kernel verifier learns
/// nothing from that comparison at offset 0 (`find_good_pkt_pointers`), only from a pointer
/// one past the byte.
#[inline(always)]
fn byte_at(at: usize, end: usize) -> Option<usize> {
    if at + opaque(1) > end { None } else { Some(at) }
}

/// Copies `dst.len()` (at most [`MAX_COPY`]) bytes from `data + offset` (what
/// `bpf_xdp_load_bytes` does). The loop is a subprogram: one copy serves every call site.
///
/// # Safety
/// `data..end` must be readable memory.
#[inline(always)]
pub unsafe fn load(
    data: usize,
    end: usize,
    offset: usize,
    dst: &mut [u8],
) -> Result<(), HelperError> {
    // SAFETY: passed on from the caller.
    match unsafe { load_at(data + offset, end, dst) } {
        0 => Ok(()),
        error => Err(HelperError(error)),
    }
}

/// [`load`] from address `at`, as a subprogram (its result in a register: 0 or `-EFAULT`).
///
/// # Safety
/// As for [`load`].
#[inline(never)]
unsafe fn load_at(at: usize, end: usize, dst: &mut [u8]) -> i64 {
    if dst.len() > MAX_COPY {
        return EFAULT;
    }
    for i in 0..MAX_COPY {
        if i >= opaque(dst.len()) {
            break;
        }
        let Some(from) = byte_at(at + i, end) else {
            return EFAULT;
        };
        if let Some(slot) = dst.get_mut(i) {
            // SAFETY: `byte_at` checked the byte against `end`.
            *slot = unsafe { core::ptr::read_volatile(from as *const u8) };
        }
    }
    0
}

/// Copies `src` (at most [`MAX_COPY`] bytes) to `data + offset` (what `bpf_xdp_store_bytes`
/// does).
///
/// # Safety
/// `data..end` must be writable memory.
#[inline(always)]
pub unsafe fn store(data: usize, end: usize, offset: usize, src: &[u8]) -> Result<(), HelperError> {
    let at = data + offset;
    if src.len() <= INLINE_STORE {
        // Short sources are stored in line: a constant body (`b"pong"`) then reaches the
        // packet as loads at constant offsets of `.rodata`, which the NIC lowering folds into
        // the code; handed to a subprogram, its address would escape, and the NIC has no
        // read-only global data.
        for i in 0..INLINE_STORE {
            if let Some(&byte) = src.get(i) {
                // `byte_at`, not `write_at`: the compiler turns the latter's check into
                // `at + i >= end`, from which the kernel verifier learns nothing at offset 0.
                let to = byte_at(at + i, end).ok_or(HelperError(EFAULT))?;
                // SAFETY: `byte_at` checked the byte against `end`.
                unsafe { core::ptr::write_volatile(to as *mut u8, byte) };
            }
        }
        return Ok(());
    }
    // SAFETY: passed on from the caller.
    match unsafe { store_at(at, end, src) } {
        0 => Ok(()),
        error => Err(HelperError(error)),
    }
}

/// [`store`] to address `at`, as a subprogram (its result in a register: 0 or `-EFAULT`).
///
/// # Safety
/// As for [`store`].
#[inline(never)]
unsafe fn store_at(at: usize, end: usize, src: &[u8]) -> i64 {
    if src.len() > MAX_COPY {
        return EFAULT;
    }
    for i in 0..MAX_COPY {
        if i >= opaque(src.len()) {
            break;
        }
        if let Some(&byte) = src.get(i) {
            let Some(to) = byte_at(at + i, end) else {
                return EFAULT;
            };
            // SAFETY: `byte_at` checked the byte against `end`.
            unsafe { core::ptr::write_volatile(to as *mut u8, byte) };
        }
    }
    0
}

/// The ones'-complement partial sum of the `len` bytes (a multiple of 4) at packet address
/// `addr`, read as 32-bit words in memory order (what `bpf_csum_diff` returns for them).
///
/// # Safety
/// `addr..end` must be readable memory.
#[inline(always)]
pub unsafe fn sum_packet(addr: usize, end: usize, len: usize) -> Result<u32, HelperError> {
    // SAFETY: passed on from the caller.
    let sum = unsafe { sum_packet_at(addr, end, len) };
    if sum < 0 {
        Err(HelperError(sum))
    } else {
        Ok(sum as u32)
    }
}

/// [`sum_packet`] as a subprogram: the sum, or `-EFAULT`, in one register.
///
/// # Safety
/// As for [`sum_packet`].
#[inline(never)]
unsafe fn sum_packet_at(addr: usize, end: usize, len: usize) -> i64 {
    // One bounds check for the whole block: every call site passes a constant length, so the
    // verifiers, which walk a subprogram once per call, know `addr + len` exactly. (A check
    // per word would be rewritten by the compiler into arithmetic on `data_end`, which no
    // verifier allows.)
    let len = opaque(len);
    if len > crate::frame::CSUM_CHUNK || addr + len > end {
        return EFAULT;
    }
    let mut sum = 0u64;
    for i in 0..crate::frame::CSUM_CHUNK / 4 {
        if 4 * i + 4 > len {
            break;
        }
        // SAFETY: `addr + 4 * i + 4 <= addr + len <= end`.
        let word = unsafe { core::ptr::read_unaligned((addr + 4 * i) as *const u32) };
        sum += u64::from(word);
    }
    i64::from(fold32(sum))
}

/// The same sum over `bytes` in the program's memory (a multiple of 4 long, at most
/// [`CSUM_CHUNK`](crate::frame::CSUM_CHUNK)).
#[inline(never)]
pub fn sum_bytes(bytes: &[u8]) -> u32 {
    let mut sum = 0u64;
    for i in 0..crate::frame::CSUM_CHUNK / 4 {
        if 4 * i >= opaque(bytes.len()) {
            break;
        }
        if let Some(word) = bytes.get(4 * i..4 * i + 4) {
            sum += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
        }
    }
    fold32(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::fold;
    use std::vec::Vec;

    /// The ones'-complement sum of `bytes` as 16-bit words in memory order, the reference.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum = 0u64;
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_ne_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        fold(sum)
    }

    fn seeded(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sums_agree_with_the_16_bit_reference() {
        for (len, seed) in [
            (0, 1),
            (4, 2),
            (32, 3),
            (256, 4),
            (256, 5),
            (4, 0xffff_ffff),
        ] {
            let bytes = seeded(len, seed);
            let range = bytes.as_ptr_range();
            let in_packet =
                unsafe { sum_packet(range.start as usize, range.end as usize, len) }.unwrap();
            assert_eq!(fold(u64::from(in_packet)), reference(&bytes), "len {len}");
            assert_eq!(
                fold(u64::from(sum_bytes(&bytes))),
                reference(&bytes),
                "len {len}"
            );
        }
        let ones = [0xffu8; 64];
        assert_eq!(fold(u64::from(sum_bytes(&ones))), 0xffff);
    }

    #[test]
    fn copies_round_trip_and_refuse_past_the_end() {
        for len in [0, 1, 7, 8, 9, 44, 106] {
            let mut packet = seeded(128, len as u32 + 7);
            let range = packet.as_mut_ptr_range();
            let (data, end) = (range.start as usize, range.end as usize);
            let mut copy = std::vec![0u8; len];
            unsafe { load(data, end, 3, &mut copy) }.unwrap();
            assert_eq!(copy, packet[3..3 + len]);
            let fresh = seeded(len, 99);
            unsafe { store(data, end, 5, &fresh) }.unwrap();
            assert_eq!(packet[5..5 + len], fresh[..]);
        }
        let mut packet = [0u8; 16];
        let range = packet.as_mut_ptr_range();
        let (data, end) = (range.start as usize, range.end as usize);
        let mut dst = [0u8; 9];
        assert_eq!(
            unsafe { load(data, end, 8, &mut dst) },
            Err(HelperError(EFAULT))
        );
        assert_eq!(
            unsafe { store(data, end, 15, &[1, 2]) },
            Err(HelperError(EFAULT))
        );
        assert_eq!(
            unsafe { sum_packet(data + 8, end, 12) },
            Err(HelperError(EFAULT))
        );
    }
}
