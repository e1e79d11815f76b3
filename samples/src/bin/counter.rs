//! `counter`: counts every λ request it answers and replies with the count (`count=N`, N
//! zero-padded to 20 digits). Its twin `counter-v2` shares the map but answers `v2 count=N`: the
//! upgrade tests swap the two under load and check that the count goes on with no gap and no
//! repeat. The code is in `samples/src/shared/counter.rs`.
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
    pub fn counter(ctx: XdpContext) -> u32 {
        super::counter::serve_count(&ctx, b"count=")
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("counter is a lambda: build it with `cargo xtask build-ebpf`");
}
