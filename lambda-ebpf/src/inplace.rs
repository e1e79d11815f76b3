//! Rebuilding a packet in place, with direct packet access and no scratch map: byte reads,
//! moving bytes towards the packet's start, an IPv4 UDP checksum in one loop, and [`forget`].
//!
//! For a lambda that turns a request into another packet where it lies (the memcached
//! client's NIC build, which has neither the per-CPU scratch map its normal build copies
//! through nor `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes`). Everything here is plain code over
//! addresses, so host tests run it over a buffer; every packet access follows its own
//! comparison against `end`, which is how both the kernel's verifier and ours prove it safe.

/// `-EFAULT`, what a failed move answers (as the helpers do).
const EFAULT: i64 = -14;

/// The most bytes one [`move_front`] moves: a 1500-byte frame's worth, rounded up to words.
pub const MAX_MOVE: usize = 1504;

/// The furthest into the packet [`move_front`] starts or ends a move.
pub const MAX_OFFSET: usize = 1536;

/// `n` through memory the compiler cannot see into (see `nic.rs`): it then keeps the loops
/// below as written, counting up to a constant and testing the length inside, which a
/// verifier that knows the length only as a range can follow to their end.
#[inline(always)]
fn opaque(n: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&n) }
}

/// Whether the `width` bytes at address `at` lie before `end`. The width is hidden from the
/// compiler, which would otherwise rewrite the comparison into one the kernel's verifier
/// learns nothing from (see `nic.rs`).
#[inline(always)]
fn fits(at: usize, width: usize, end: usize) -> bool {
    at + opaque(width) <= end
}

/// The byte at address `at`, when it lies before `end`.
///
/// # Safety
/// `at..end` must be readable memory (the packet).
#[inline(always)]
pub unsafe fn read_byte(at: usize, end: usize) -> Option<u8> {
    if !fits(at, 1, end) {
        return None;
    }
    // SAFETY: checked against `end` above.
    Some(unsafe { core::ptr::read_volatile(at as *const u8) })
}

/// `x`, as a number the verifiers know nothing about: its bytes are stored one at a time
/// and read back as one word. The kernel's verifier tracks a register spilled whole to the
/// stack, but a word assembled from byte stores is just a number to it. A lambda passes
/// through here a length that a loop stopped at (each stopping place is otherwise one more
/// path through all the code that follows) and checks its bounds again after.
#[inline(always)]
pub fn forget(x: usize) -> usize {
    let mut word = 0u64;
    let bytes = (x as u64).to_le_bytes();
    let at = (&raw mut word).cast::<u8>();
    for (i, byte) in bytes.into_iter().enumerate() {
        // SAFETY: `i < 8`, inside the local word.
        unsafe { core::ptr::write_volatile(at.add(i), byte) };
    }
    // SAFETY: a read of the local word.
    unsafe { core::ptr::read_volatile(&word) as usize }
}

/// Moves the `len` bytes at packet offset `from` to offset `to`, towards the packet's start
/// (`to <= from`; the two ranges may overlap): 8-byte words first, in ascending order (a word
/// is read before any store reaches it, since stores land `from - to` bytes lower), then the
/// last bytes one at a time. `data..end` is the packet. `Err` (nothing or part moved) when
/// `to > from`, `len` is over [`MAX_MOVE`], an offset over [`MAX_OFFSET`], or a byte lies
/// past `end`.
///
/// # Safety
/// `data..end` must be readable and writable memory.
#[inline(always)]
pub unsafe fn move_front(
    data: usize,
    end: usize,
    from: usize,
    to: usize,
    len: usize,
) -> Result<(), i64> {
    // SAFETY: passed on from the caller.
    match unsafe { move_front_at(data, end, from, to, len) } {
        0 => Ok(()),
        error => Err(error),
    }
}

/// [`move_front`] as a subprogram: one copy of its loops in the program, walked by the
/// verifiers once per call site, and its result (0 or `-EFAULT`) in one register.
///
/// # Safety
/// As for [`move_front`].
#[inline(never)]
unsafe fn move_front_at(data: usize, end: usize, from: usize, to: usize, len: usize) -> i64 {
    // Re-read and checked right here: the compiler would otherwise drop checks that its
    // callers' arguments make redundant, and the verifiers need the bounds on these copies.
    let (from, to, len) = (opaque(from), opaque(to), opaque(len));
    if len > MAX_MOVE || from > MAX_OFFSET || to > MAX_OFFSET || to > from {
        return EFAULT;
    }
    let words = len / 8;
    for i in 0..MAX_MOVE / 8 {
        if i >= opaque(words) {
            break;
        }
        let src = data + from + 8 * i;
        let dst = data + to + 8 * i;
        if !fits(src, 8, end) || !fits(dst, 8, end) {
            return EFAULT;
        }
        // SAFETY: both words checked against `end` above; packet memory has no alignment.
        unsafe {
            let word = core::ptr::read_unaligned(src as *const u64);
            core::ptr::write_unaligned(dst as *mut u64, word);
        }
    }
    let done = len & !7;
    for i in 0..7 {
        if i >= opaque(len & 7) {
            break;
        }
        let src = data + from + done + i;
        let dst = data + to + done + i;
        if !fits(src, 1, end) || !fits(dst, 1, end) {
            return EFAULT;
        }
        // SAFETY: both bytes checked against `end` above.
        unsafe {
            core::ptr::write_volatile(dst as *mut u8, core::ptr::read_volatile(src as *const u8))
        };
    }
    0
}

/// The UDP checksum of an IPv4 datagram of `udp_len` bytes at address `udp` (its checksum
/// field zero), with the pseudo-header's addresses the 8 bytes at address `addrs` (the IPv4
/// header's source and destination), in memory byte order ready to store (0 sent as 0xffff);
/// -1 when a byte lies past `end` or the length is below 8 or over [`MAX_MOVE`].
///
/// One loop over the datagram, 8 bytes at a time, then the last bytes one at a time: the
/// kernel's verifier walks it once per path into it, where the SDK's chunked sum (for the NIC:
/// a subprogram per chunk) is walked once per chunk count, partial chunk and tail length, which
/// for a datagram whose length it knows only as a range is some hundred thousand instructions.
///
/// # Safety
/// `addrs..addrs + 8` and `udp..end` must be readable memory.
#[inline(never)]
pub unsafe fn udp4_checksum(addrs: usize, udp: usize, end: usize, udp_len: usize) -> i64 {
    let len = opaque(udp_len);
    if !(8..=MAX_MOVE).contains(&len) || !fits(addrs, 8, end) {
        return -1;
    }
    // SAFETY: checked against `end` above.
    let [a, b] = unsafe { core::ptr::read_unaligned(addrs as *const [u32; 2]) };
    // Pseudo-header: both addresses, protocol 17, the length, as 16-bit words in memory order.
    let mut sum = u64::from(a)
        + u64::from(b)
        + u64::from(u16::from_ne_bytes([0, 17]))
        + u64::from((len as u16).to_be());
    let words = len / 8;
    for i in 0..MAX_MOVE / 8 {
        if i >= opaque(words) {
            break;
        }
        let at = udp + 8 * i;
        if !fits(at, 8, end) {
            return -1;
        }
        // SAFETY: checked against `end` above; packet memory has no alignment.
        let word = unsafe { core::ptr::read_unaligned(at as *const u64) };
        sum += (word & 0xffff_ffff) + (word >> 32);
    }
    // The last bytes in their places in a word (a missing byte is the zero pad of an odd
    // length), summed as the words were.
    let done = len & !7;
    let mut tail = 0u64;
    for j in 0..7 {
        if j >= opaque(len & 7) {
            break;
        }
        // SAFETY: `read_byte` checks against `end`.
        match unsafe { read_byte(udp + done + j, end) } {
            Some(byte) => tail |= u64::from(byte) << (8 * j),
            None => return -1,
        }
    }
    sum += (tail & 0xffff_ffff) + (tail >> 32);
    let check = !crate::frame::fold(sum);
    i64::from(if check == 0 { 0xffff } else { check })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

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
    fn moves_agree_with_copy_within_for_every_shift_and_length() {
        for shift in [0, 1, 2, 7, 8, 9, 12, 16, 100] {
            for len in [0, 1, 5, 7, 8, 9, 15, 16, 17, 254, 255, 1000, 1400, MAX_MOVE] {
                let from = 100 + shift;
                let mut packet = seeded(from + len + 3, (shift * 7919 + len) as u32);
                let mut expected = packet.clone();
                expected.copy_within(from..from + len, 100);
                let range = packet.as_mut_ptr_range();
                let (data, end) = (range.start as usize, range.end as usize);
                assert_eq!(
                    unsafe { move_front(data, end, from, 100, len) },
                    Ok(()),
                    "shift {shift} len {len}"
                );
                assert_eq!(packet, expected, "shift {shift} len {len}");
            }
        }
    }

    #[test]
    fn moves_refuse_past_the_end_backwards_and_too_long() {
        let mut packet = seeded(64, 3);
        let range = packet.as_mut_ptr_range();
        let (data, end) = (range.start as usize, range.end as usize);
        assert_eq!(unsafe { move_front(data, end, 10, 2, 55) }, Err(EFAULT));
        assert_eq!(unsafe { move_front(data, end, 10, 2, 60) }, Err(EFAULT));
        assert_eq!(unsafe { move_front(data, end, 2, 10, 4) }, Err(EFAULT));
        assert_eq!(
            unsafe { move_front(data, end, 2, 1, MAX_MOVE + 1) },
            Err(EFAULT)
        );
        assert_eq!(unsafe { read_byte(data + 63, end) }, Some(packet[63]));
        assert_eq!(unsafe { read_byte(data + 64, end) }, None);
    }

    /// The UDP checksum the textbook way: big-endian 16-bit words of pseudo-header and
    /// datagram, odd byte padded, folded, complemented, 0 sent as 0xffff.
    fn reference(addrs: &[u8], udp: &[u8]) -> u16 {
        let mut sum = 17u64 + udp.len() as u64;
        for pair in addrs.chunks(2).chain(udp.chunks(2)) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        match !(sum as u16) {
            0 => 0xffff,
            c => c,
        }
    }

    #[test]
    fn udp_checksums_agree_with_the_textbook_for_every_length() {
        for len in (8..=MAX_MOVE).step_by(1).filter(|l| l % 37 < 12 || *l < 40) {
            let mut packet = seeded(8 + len, len as u32 * 31 + 5);
            packet[8 + 6] = 0;
            packet[8 + 7] = 0;
            let range = packet.as_ptr_range();
            let (start, end) = (range.start as usize, range.end as usize);
            let check = unsafe { udp4_checksum(start, start + 8, end, len) };
            assert!(check >= 0, "len {len}");
            let stored = (check as u16).to_ne_bytes();
            assert_eq!(
                u16::from_be_bytes(stored),
                reference(&packet[..8], &packet[8..]),
                "len {len}"
            );
        }
        let packet = seeded(40, 9);
        let range = packet.as_ptr_range();
        let (start, end) = (range.start as usize, range.end as usize);
        assert_eq!(unsafe { udp4_checksum(start, start + 8, end, 33) }, -1);
        assert_eq!(unsafe { udp4_checksum(start, start + 8, end, 7) }, -1);
    }

    #[test]
    fn forget_returns_its_argument() {
        for x in [0, 1, 255, 256, 0xdead_beef, usize::MAX] {
            assert_eq!(forget(x), x);
        }
    }
}
