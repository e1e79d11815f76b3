//! `grayscale`: the paper's image grayscaler, one fragment at a time.
//!
//! Each request fragment carries whole RGB pixels (fragment 0 after the 4-byte image header;
//! the layout is `workloads::grayscale`'s). The lambda converts them, writes the gray bytes
//! over the start of the fragment's pixels, and shrinks the packet to them (no copy of the
//! headers, `reply_in_place_truncated`):
//! fragment 0's response is the echoed image header and its gray bytes. Fragments that break
//! the layout are answered BAD_REQUEST or TOO_LARGE, empty. No state is kept across fragments,
//! so lost fragments are simply resent by the client.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(all(target_arch = "bpf", not(feature = "nic")))]
mod lambda {
    use aya_ebpf::{macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{MAX_BODY, Request, Status, Verdict};
    use workloads::grayscale::{
        BYTES_PER_PIXEL, IMAGE_HEADER_LEN, PIXELS_PER_FRAGMENT, check_fragment, gray,
    };

    /// Where the pixels start in [`Scratch::body`], whichever fragment it holds.
    const PIXELS_AT: usize = IMAGE_HEADER_LEN;

    /// Room for one fragment, both ways. A fragment (up to 1428 bytes) does not fit the
    /// 512-byte BPF stack, so it is copied into this per-CPU value in one helper call,
    /// converted there, and the gray bytes are copied back in one more.
    #[repr(C)]
    pub struct Scratch {
        /// The request body, placed so its pixels start at [`PIXELS_AT`]: fragment 0 (which
        /// starts with the image header) at 0, every other fragment at 4.
        body: [u8; PIXELS_AT + MAX_BODY],
        gray: [u8; PIXELS_PER_FRAGMENT],
    }

    #[map]
    static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

    #[xdp]
    pub fn grayscale(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        // Decide status and length first and reply once (each reply site is a full inlined
        // copy of the rewrite and checksum code).
        let (status, len) = match answer(frame, request) {
            Ok(len) => (Status::Ok, len),
            Err(status) => (status, 0),
        };
        request.reply_in_place_truncated(frame, status, len)
    }

    /// Converts the fragment and writes the gray bytes over the start of its pixels (the
    /// echoed image header in fragment 0 stays where it is); returns the response body length.
    ///
    /// The order is the kernel verifier's: it walks the 474-pixel loop once per distinct
    /// state that reaches it, so the loop comes before the layout checks, whose every branch
    /// would otherwise be a separate walk (that order went past its 1M-instruction limit).
    #[inline(always)]
    fn answer(frame: &mut XdpFrame<'_>, request: &Request) -> Result<usize, Status> {
        let body_len = request.body_len();
        if body_len > MAX_BODY {
            return Err(Status::TooLarge);
        }
        if body_len == 0 {
            return Err(Status::BadRequest);
        }
        // SAFETY: a per-CPU value is this program run's alone while it runs.
        let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(Status::Internal)? };
        // Fragment 0 lands at 0, any other at PIXELS_AT, computed without a branch: a branch
        // here would be two states reaching the loop, each walked in full by the verifier.
        // (index − 1) >> 31 is 1 for index 0 and 0 for 1 ..= 65535; `black_box` keeps the
        // compiler from turning it back into a comparison.
        let index = core::hint::black_box(u32::from(request.frag_index()));
        let at = PIXELS_AT - IMAGE_HEADER_LEN * (index.wrapping_sub(1) >> 31) as usize;
        let first = at == 0;
        let dst = scratch
            .body
            .get_mut(at..at + body_len)
            .ok_or(Status::Internal)?;
        request
            .read_body(frame, 0, dst)
            .map_err(|_| Status::Internal)?;
        // Always every pixel a fragment can hold, whatever this one holds: a constant trip
        // count with no data-dependent exit is one path for the verifier. Bytes past the
        // fragment's pixels are stale and never sent.
        let pixels = &scratch.body[PIXELS_AT..PIXELS_AT + PIXELS_PER_FRAGMENT * BYTES_PER_PIXEL];
        for (y, pixel) in scratch
            .gray
            .iter_mut()
            .zip(pixels.chunks_exact(BYTES_PER_PIXEL))
        {
            *y = gray(pixel[0], pixel[1], pixel[2]);
        }
        let header = if first && body_len >= IMAGE_HEADER_LEN {
            let h = &scratch.body;
            Some([h[0], h[1], h[2], h[3]])
        } else {
            None
        };
        let layout = check_fragment(request.frag_index(), request.frag_count(), body_len, header)?;
        // `check_fragment` bounds the count by a division, which the compiler sees through but
        // our verifier's ranges (for the multiply the division becomes) do not: hide it from
        // the compiler so the slice check stays in the program.
        let gray_bytes = scratch
            .gray
            .get(..core::hint::black_box(layout.pixels))
            .ok_or(Status::Internal)?;
        request
            .write_body(frame, layout.pixels_at, gray_bytes)
            .map_err(|_| Status::Internal)?;
        Ok(layout.response_len())
    }
}

/// The NIC build (`grayscale-nic.o`, feature `nic`): no scratch map (the NFP holds 64-byte
/// elements, and a per-CPU one not at all). The layout is checked first, from the header
/// read in place; then the pixels are converted in the packet itself, gray byte `i` written
/// over byte `i` of the fragment's pixels after pixel `i` (bytes `3i .. 3i + 3`) was read, so
/// no pixel is overwritten before it is read; then the packet is cut to the answer.
#[cfg(all(target_arch = "bpf", feature = "nic"))]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use lambda_ebpf::frame::{Frame as _, read_at};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{MAX_BODY, Request, Status, Verdict};
    use workloads::grayscale::{
        IMAGE_HEADER_LEN, PIXELS_PER_FRAGMENT, check_fragment_without_division, gray,
    };

    #[xdp]
    pub fn grayscale(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        let (status, len) = match answer(frame, request) {
            Ok(len) => (Status::Ok, len),
            Err(status) => (status, 0),
        };
        // The body only shrinks; the checksum of a length known as a range is one walk.
        request.reply_in_place_shrunk(frame, status, len)
    }

    /// Checks the fragment, converts its pixels in place; returns the response body length.
    #[inline(always)]
    fn answer(frame: &mut XdpFrame<'_>, request: &Request) -> Result<usize, Status> {
        let body_len = request.body_len();
        if body_len > MAX_BODY {
            return Err(Status::TooLarge);
        }
        if body_len == 0 {
            return Err(Status::BadRequest);
        }
        let body = frame.data() + request.body_offset();
        let header = if request.frag_index() == 0 && body_len >= IMAGE_HEADER_LEN {
            // SAFETY: `read_at` checks against `data_end`.
            Some(
                unsafe { read_at::<[u8; IMAGE_HEADER_LEN]>(body, frame.data_end()) }
                    .ok_or(Status::Internal)?,
            )
        } else {
            None
        };
        // The NFP divides by constants only and multiplies 32 bits: the same checks without.
        let layout = check_fragment_without_division(
            request.frag_index(),
            request.frag_count(),
            body_len,
            header,
        )?;
        // Divided by an opaque 1: the kernel's verifier does not follow a division, so every
        // path through the checks above reaches the conversion with the same range here,
        // and walks it once, instead of once per path (past its million instructions).
        let pixels = layout.pixels / opaque(1);
        if pixels > PIXELS_PER_FRAGMENT {
            return Err(Status::Internal);
        }
        let at = frame.data() + request.body_offset() + layout.pixels_at;
        // SAFETY: `at..data_end` is packet memory.
        match unsafe { convert_at(at, frame.data_end(), pixels) } {
            0 => Ok(layout.response_len()),
            _ => Err(Status::Internal),
        }
    }

    /// `n` through memory the compiler cannot see into, so that the loop below keeps counting
    /// up to its constant and tests `n` inside (see `lambda_ebpf::nic`).
    #[inline(always)]
    fn opaque(n: usize) -> usize {
        // SAFETY: a read of a local.
        unsafe { core::ptr::read_volatile(&n) }
    }

    /// Pixels converted per bounds check in [`convert_at`].
    const BLOCK: usize = 8;

    /// Converts `pixels` RGB pixels at packet address `at` into gray bytes at `at ..`, as a
    /// subprogram whose result is one register (0, or 1 when the packet is short): the
    /// verifiers walk its loops once per call, and its exits meet again in the caller.
    ///
    /// Whole blocks of [`BLOCK`] pixels go under one comparison with `end` (which covers the
    /// gray bytes too: they lie before the block's pixels), then the last pixels one at a
    /// time: a comparison per pixel would be one more branch per pixel for the verifiers.
    ///
    /// # Safety
    /// `at..end` must be writable packet memory.
    #[inline(never)]
    unsafe fn convert_at(at: usize, end: usize, pixels: usize) -> i64 {
        let mut block = 0;
        while block < PIXELS_PER_FRAGMENT / BLOCK {
            let first = block * BLOCK;
            if first + BLOCK > opaque(pixels) {
                break;
            }
            let rgb = at + 3 * first;
            // SAFETY: `read_at` checks against `end`.
            let Some(bytes) = (unsafe { read_at::<[u8; 3 * BLOCK]>(rgb, end) }) else {
                return 1;
            };
            for i in 0..BLOCK {
                let y = gray(bytes[3 * i], bytes[3 * i + 1], bytes[3 * i + 2]);
                // SAFETY: `at + first + i < rgb + 3 * BLOCK <= end`.
                unsafe { core::ptr::write_volatile((at + first + i) as *mut u8, y) };
            }
            block += 1;
        }
        let done = block * BLOCK;
        for i in 0..BLOCK {
            let pixel = done + i;
            if pixel >= opaque(pixels) {
                break;
            }
            // SAFETY: `read_at` checks against `end`.
            let Some([r, g, b]) = (unsafe { read_at::<[u8; 3]>(at + 3 * pixel, end) }) else {
                return 1;
            };
            // Its own comparison: `done` is not one value here, so the verifiers cannot relate
            // this pointer to the one just checked.
            let y = at + pixel;
            if y + opaque(1) > end {
                return 1;
            }
            // SAFETY: checked against `end` just above.
            unsafe { core::ptr::write_volatile(y as *mut u8, gray(r, g, b)) };
        }
        0
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("grayscale is a lambda: build it with `cargo xtask build-ebpf`");
}
