//! The counter lambdas' code, shared by `counter` and `counter-v2` (they differ only in the
//! reply's prefix, and must share the `COUNTS` map exactly for an upgrade to keep the count).
//! Included by each with `#[path]`: every lambda is its own binary.
//!
//! The count lives in the one-entry ARRAY map `COUNTS` and is bumped with an atomic add, so it
//! is one global figure however many CPUs serve requests.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{macros::map, maps::Array, programs::XdpContext};
use lambda_ebpf::xdp::{XdpFrame, serve};
use lambda_ebpf::{Request, Status, Verdict};

/// Decimal digits of the largest u64.
const DIGITS: usize = 20;
/// Room for the longest prefix and the digits.
const BODY: usize = 32;

/// Index 0: requests answered so far.
#[map]
static COUNTS: Array<u64> = Array::with_max_entries(1, 0);

/// Serves a request: bumps the count and answers `<prefix><count>` (the count zero-padded to
/// [`DIGITS`] digits).
#[inline(always)]
pub fn serve_count<const P: usize>(ctx: &XdpContext, prefix: &[u8; P]) -> u32 {
    serve(ctx, |frame, request| handle(frame, request, prefix))
}

#[inline(always)]
fn handle<const P: usize>(
    frame: &mut XdpFrame<'_>,
    request: &Request,
    prefix: &[u8; P],
) -> Verdict {
    let mut body = [0u8; BODY];
    let (status, len) = match COUNTS.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: the pointer is the map value's, 8-byte aligned and alive while the
            // program runs; other CPUs touch it only through atomic adds as well.
            let count = unsafe {
                // The add's own result (fetch-and-add) needs BPF ISA v3, and the lambdas
                // are built for the generic CPU: add, then read. With concurrent requests
                // on other CPUs the count read may include theirs; the map total is exact.
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1);
                core::ptr::read_volatile(slot)
            };
            (Status::Ok, render(&mut body, prefix, count))
        }
        None => (Status::Internal, 0),
    };
    // Decide the answer first and reply once: every `reply` is a full inlined copy of the
    // header rewrite and checksum code.
    request.reply(frame, status, body.get(..len).unwrap_or(&[]))
}

/// Writes `prefix` then `count` in decimal, zero-padded to `DIGITS` digits, into `out`; returns
/// the length (a constant for each prefix, see `decimal`).
#[inline(always)]
fn render<const P: usize>(out: &mut [u8; BODY], prefix: &[u8; P], count: u64) -> usize {
    const { assert!(P + DIGITS <= BODY, "the prefix is too long for the body") };
    out[..P].copy_from_slice(prefix);
    super::decimal::write_padded::<BODY, DIGITS>(out, P, count);
    P + DIGITS
}
