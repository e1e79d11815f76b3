//! The packet a lambda sees, and the few kernel helpers it needs, behind one small trait.
//!
//! In a lambda, [`Frame`] is implemented over the XDP context (see `crate::xdp`). In host unit
//! tests it is implemented over a byte buffer, so the parsing and reply code that runs in the
//! kernel is the same code the tests exercise.

use crate::request::Request;
use crate::wire::Status;

/// A helper call failed (the kernel helper returned a negative errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperError(pub i64);

/// A contiguous packet in memory plus the helpers that reshape and read it.
///
/// Addresses are raw `usize` values: in the kernel they are packet pointers whose every use must
/// follow a comparison against [`Frame::data_end`], which is how the kernel verifier proves the
/// access safe.
pub trait Frame {
    /// Address of the first byte of the packet (the Ethernet header).
    fn data(&self) -> usize;
    /// Address one past the last byte of the packet.
    fn data_end(&self) -> usize;
    /// Grows (`delta > 0`) or shrinks the packet at its tail (`bpf_xdp_adjust_tail`). Invalidates
    /// every address obtained before the call.
    fn adjust_tail(&mut self, delta: i32) -> Result<(), HelperError>;
    /// Moves the start of the packet: `delta < 0` prepends `-delta` bytes of headroom to the
    /// packet (`bpf_xdp_adjust_head`). Invalidates every address obtained before the call.
    fn adjust_head(&mut self, delta: i32) -> Result<(), HelperError>;
    /// Copies `dst.len()` bytes from packet offset `offset` (`bpf_xdp_load_bytes`).
    fn load_bytes(&self, offset: u32, dst: &mut [u8]) -> Result<(), HelperError>;
    /// Copies `src` into the packet at `offset` (`bpf_xdp_store_bytes`).
    fn store_bytes(&mut self, offset: u32, src: &[u8]) -> Result<(), HelperError>;
    /// The 32-bit ones'-complement partial sum of `len` packet bytes at address `addr`, read as
    /// 16-bit words in memory order (`bpf_csum_diff`). `len` is a multiple of 4, at most
    /// [`CSUM_CHUNK`], and `addr + len` has been checked against `data_end`.
    fn csum_partial(&self, addr: usize, len: u32) -> Result<u32, HelperError>;
    /// The same partial sum over `bytes` in the program's own memory (a stack buffer), whose
    /// length is a multiple of 4 and at most [`CSUM_CHUNK`] (`bpf_csum_diff`). The length may
    /// vary at run time: the kernel verifier checks the buffer against its largest value.
    fn csum_bytes(&self, bytes: &[u8]) -> Result<u32, HelperError>;

    /// Turns the headers into the response's for a body of `body_len` bytes already in place,
    /// checksums included (the last step of every reply). The NIC build's XDP frame overrides it
    /// with one out-of-line function that every lambda shares, so a coalesced program holds one
    /// copy of it instead of one per lambda.
    #[inline(always)]
    fn finish_reply(&mut self, request: &Request, status: Status, body_len: usize) -> Option<()>
    where
        Self: Sized,
    {
        request.rewrite_headers(self, status, body_len)
    }
}

/// The largest block summed by one [`Frame::csum_partial`] call.
pub const CSUM_CHUNK: usize = 256;

/// Reads a `T` at `addr` after proving `addr + size_of::<T>() <= end`.
///
/// # Safety
/// `addr..end` must be readable memory (the packet).
#[inline(always)]
pub unsafe fn read_at<T: Copy>(addr: usize, end: usize) -> Option<T> {
    if addr + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked above; packet memory has no alignment guarantee.
    Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Writes a `T` at `addr` after proving `addr + size_of::<T>() <= end`.
///
/// # Safety
/// `addr..end` must be writable memory (the packet).
#[inline(always)]
pub unsafe fn write_at<T: Copy>(addr: usize, end: usize, value: T) -> Option<()> {
    if addr + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked above; packet memory has no alignment guarantee.
    unsafe { core::ptr::write_unaligned(addr as *mut T, value) };
    Some(())
}

/// Folds a wide ones'-complement sum to 16 bits (not complemented).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    // Four fixed rounds are always enough for a 64-bit accumulator; a fixed count keeps the
    // kernel verifier from seeing a data-dependent loop.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Updates a ones'-complement checksum after one 16-bit word changed from `old` to `new`
/// (RFC 1624, eqn. 3). Works in whatever byte order the words were read in, as long as it is
/// the same for all three values.
#[inline(always)]
pub fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(sum)
}
