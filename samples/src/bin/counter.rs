//! `counter`: counts every λ request it answers and replies with the count (`count=N`, N zero-padded
//! to 20 digits).
//!
//! The count lives in the one-entry ARRAY map `COUNTS` and is bumped with an atomic add, so it
//! is one global figure however many CPUs serve requests. Its twin `counter-v2` shares the map
//! but answers `v2 count=N`: the upgrade tests swap the two under load and check that the count
//! goes on with no gap and no repeat.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The BPF target has no compare-and-swap, so core leaves `AtomicU64::fetch_add` out; the
// intrinsic underneath lowers to the BPF atomic add. (The eBPF build already runs with
// RUSTC_BOOTSTRAP=1 for `-Z build-std`.)
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};

    use aya_ebpf::{macros::map, macros::xdp, maps::Array, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{Request, Status, Verdict};

    /// What the answer starts with; the number follows.
    const PREFIX: &[u8] = b"count=";
    /// Decimal digits of the largest u64.
    const DIGITS: usize = 20;

    /// Index 0: requests answered so far.
    #[map]
    static COUNTS: Array<u64> = Array::with_max_entries(1, 0);

    #[xdp]
    pub fn counter(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        let mut body = [0u8; PREFIX.len() + DIGITS];
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
                (Status::Ok, render(&mut body, count))
            }
            None => (Status::Internal, 0),
        };
        // Decide the answer first and reply once: every `reply` is a full inlined copy of the
        // header rewrite and checksum code.
        request.reply(frame, status, body.get(..len).unwrap_or(&[]))
    }

    /// Writes `PREFIX` then `count` in decimal, zero-padded to `DIGITS` digits, into `out`;
    /// returns the length (always the whole buffer).
    ///
    /// Fixed width on purpose: a length that depends on the number of digits makes the kernel
    /// verifier walk the reply's copy and checksum code once per possible length (over its
    /// 1M-instruction limit), and a start offset that depends on it is a stack access with a
    /// variable offset, which ours refuses. Here every store is at a constant offset.
    #[inline(always)]
    fn render(out: &mut [u8; PREFIX.len() + DIGITS], count: u64) -> usize {
        out[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut n = count;
        for i in (0..DIGITS).rev() {
            out[PREFIX.len() + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.len()
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("counter is a lambda: build it with `cargo xtask build-ebpf`");
}
