//! `counter-wide`: a deliberately incompatible version of `counter`, for the upgrade tests.
//!
//! Its map has the same name, `COUNTS`, but a 16-byte value (two u64s) instead of one u64: the
//! running counter's pinned map cannot hold that, so `lambdactl upgrade` must refuse it before
//! loading anything, naming the map and the difference.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// No `AtomicU64::fetch_add` on the BPF target (no compare-and-swap): use the intrinsic.
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};

    use aya_ebpf::{macros::map, macros::xdp, maps::Array, programs::XdpContext};
    use lambda_ebpf::Status;
    use lambda_ebpf::xdp::serve;

    /// Index 0: `[requests answered, bytes of request bodies]`.
    #[map]
    static COUNTS: Array<[u64; 2]> = Array::with_max_entries(1, 0);

    #[xdp]
    pub fn counter_wide(ctx: XdpContext) -> u32 {
        serve(&ctx, |frame, request| {
            if let Some(slot) = COUNTS.get_ptr_mut(0) {
                let slot = slot.cast::<u64>();
                // SAFETY: the map value (two u64s) is alive while the program runs and 8-byte
                // aligned; other CPUs touch it only atomically too.
                unsafe {
                    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1);
                    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                        slot.add(1),
                        request.body_len() as u64,
                    );
                }
            }
            request.reply(frame, Status::Ok, b"wide")
        })
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("counter-wide is a lambda: build it with `cargo xtask build-ebpf`");
}
