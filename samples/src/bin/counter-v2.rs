//! `counter-v2`: the second version of `counter`, for the upgrade tests: the same `COUNTS` map
//! (same name, type and sizes, so an upgrade reuses the pinned map and the count carries on),
//! but it answers `v2 count=N`, so a client can tell which version answered.
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
#[path = "../shared/decimal.rs"]
mod decimal;

#[cfg(target_arch = "bpf")]
#[path = "../shared/counter.rs"]
mod counter;

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    #[xdp]
    pub fn counter_v2(ctx: XdpContext) -> u32 {
        super::counter::serve_count(&ctx, b"v2 count=")
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("counter-v2 is a lambda: build it with `cargo xtask build-ebpf`");
}
