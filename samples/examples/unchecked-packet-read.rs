//! A lambda the kernel verifier must reject: it reads the packet without checking `data_end`.
//! `cargo xtask build-ebpf` builds it into `target/lambdas/rejected/`; the tests use it to show
//! that a rejection names the Rust source line. Never attach it anywhere.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    #[xdp]
    pub fn unchecked_packet_read(ctx: XdpContext) -> u32 {
        // SAFETY: none — this read is unchecked on purpose; the verifier refuses the program.
        let first_byte = unsafe { *(ctx.data() as *const u8) };
        if first_byte == 0 { 1 } else { 2 }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: no panic path exists in this program.
        unsafe { core::hint::unreachable_unchecked() }
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "unchecked-packet-read is a must-fail lambda: build it with `cargo xtask build-ebpf`"
    );
}
