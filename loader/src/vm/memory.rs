//! Packet memory the lambda can address through 32-bit context fields.
//!
//! An XDP program reads `data`, `data_end` and `data_meta` as 32-bit fields of `struct xdp_md`
//! and uses them as pointers (the kernel's verifier rewrites those loads into 64-bit pointer
//! loads). Neither rbpf's JIT nor a faithful interpreter can rewrite them without type analysis,
//! so the VM keeps each packet frame in memory whose addresses fit 32 bits: the zero-extended
//! field *is* the pointer, and the unchanged program runs as it would in the kernel.

use std::io;
use std::ptr::NonNull;

/// Bytes in one frame, as in the kernel's XDP test run (one page).
pub const FRAME_SIZE: usize = 4096;
/// `XDP_PACKET_HEADROOM`: where the packet starts in its frame.
pub const HEADROOM: usize = 256;
/// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on x86_64: the tail the kernel reserves at
/// the end of the frame, which `bpf_xdp_adjust_tail` cannot grow into.
pub const TAILROOM_RESERVED: usize = 320;
/// `sizeof(struct xdp_frame)`: the part of the headroom `bpf_xdp_adjust_head` cannot grow into.
pub const XDP_FRAME_HEADER: usize = 40;
/// The largest packet a frame holds.
pub const MAX_PACKET: usize = FRAME_SIZE - HEADROOM - TAILROOM_RESERVED;

/// One page-sized frame mapped below 4 GiB, owned by one worker.
pub struct LowFrame {
    base: NonNull<u8>,
    /// Bytes from the frame's start that may hold something other than zero.
    dirty: usize,
}

// SAFETY: the frame is plain memory owned by this value; moving it to another thread is fine.
unsafe impl Send for LowFrame {}

impl LowFrame {
    /// Maps a zeroed frame whose addresses fit in 32 bits.
    pub fn new() -> io::Result<LowFrame> {
        let base = map_low(FRAME_SIZE)?;
        Ok(LowFrame {
            base,
            dirty: FRAME_SIZE,
        })
    }

    /// Address of the frame's first byte (`data_hard_start`).
    pub fn start(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Address one past the last byte `data_end` may reach.
    pub fn hard_end(&self) -> u64 {
        self.start() + (FRAME_SIZE - TAILROOM_RESERVED) as u64
    }

    /// Copies `packet` to the standard headroom offset with zeroes around it, as in a fresh
    /// kernel test-run buffer, and returns the packet's start address. Only what the last run
    /// may have dirtied is cleared (see [`LowFrame::ran_up_to`]). The caller has checked
    /// `packet.len() <= MAX_PACKET`.
    pub fn load(&mut self, packet: &[u8]) -> u64 {
        debug_assert!(packet.len() <= MAX_PACKET);
        let end = HEADROOM + packet.len();
        let dirty = self.dirty;
        let frame = self.bytes_mut();
        frame[..HEADROOM].fill(0);
        frame[HEADROOM..end].copy_from_slice(packet);
        if dirty > end {
            frame[end..dirty].fill(0);
        }
        self.dirty = end;
        self.start() + HEADROOM as u64
    }

    /// Records that a run may have written up to address `high` (its highest `data_end`).
    pub fn ran_up_to(&mut self, high: u64) {
        let offset = high.saturating_sub(self.start()) as usize;
        self.dirty = self.dirty.max(offset.min(FRAME_SIZE));
    }

    /// The bytes between two addresses inside the frame (the packet after the run).
    pub fn slice(&self, from: u64, to: u64) -> Option<&[u8]> {
        let start = from.checked_sub(self.start())? as usize;
        let end = to.checked_sub(self.start())? as usize;
        if start > end || end > FRAME_SIZE {
            return None;
        }
        // SAFETY: in bounds of the mapping, checked above.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), end - start) })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is FRAME_SIZE bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), FRAME_SIZE) }
    }
}

impl Drop for LowFrame {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map_low` mapped.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), FRAME_SIZE);
        }
    }
}

/// Maps `len` bytes of zeroed memory below 4 GiB.
fn map_low(len: usize) -> io::Result<NonNull<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        // MAP_32BIT places the mapping in the first 2 GiB.
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        check_low(ptr.cast(), len)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No MAP_32BIT: ask for free addresses in low memory, one hint after another.
        const HINT_START: usize = 0x1000_0000;
        const HINT_STEP: usize = 0x0100_0000;
        for hint in (HINT_START..0xf000_0000).step_by(HINT_STEP) {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
            let ptr = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                return check_low(ptr.cast(), len);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "no free address range below 4 GiB for a packet frame",
        ))
    }
}

fn check_low(ptr: *mut u8, len: usize) -> io::Result<NonNull<u8>> {
    let end = ptr as u64 + len as u64;
    if end > u64::from(u32::MAX) {
        // SAFETY: unmapping what was just mapped.
        unsafe {
            libc::munmap(ptr.cast(), len);
        }
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("the kernel placed a packet frame at {ptr:p}, above 4 GiB"),
        ));
    }
    NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_32_bit_context_fields() {
        let mut frame = LowFrame::new().unwrap();
        assert!(frame.hard_end() <= u64::from(u32::MAX));
        let data = frame.load(&[1, 2, 3]);
        assert_eq!(data, frame.start() + HEADROOM as u64);
        assert_eq!(frame.slice(data, data + 3), Some(&[1u8, 2, 3][..]));
        assert_eq!(frame.slice(data + 3, data), None);
        assert_eq!(
            frame.slice(frame.start(), frame.start() + FRAME_SIZE as u64 + 1),
            None
        );
    }
}
