//! `pong`: the smallest useful lambda, written with the SDK.
//!
//! Answers every λ request on its port with status OK and the body `pong`. Together with
//! `baseline-raw-pong` (the same behaviour written by hand, without the SDK) it measures what
//! the SDK costs: `cargo xtask bench spine` runs both under `BPF_PROG_TEST_RUN`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use lambda_ebpf::Status;
    use lambda_ebpf::xdp::serve;

    #[xdp]
    pub fn pong(ctx: XdpContext) -> u32 {
        serve(&ctx, |frame, request| {
            request.reply(frame, Status::Ok, b"pong")
        })
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("pong is a lambda: build it with `cargo xtask build-ebpf`");
}
