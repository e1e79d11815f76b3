//! `garbage`: a misbehaving lambda for the isolation tests. It returns an XDP action that does
//! not exist for every packet it is given; the kernel counts that as an exception and drops
//! the packet. Behind a dispatcher it must spoil only its own requests: the other lambdas'
//! answers and maps stay untouched.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    /// Not one of the five XDP actions.
    const NOT_AN_ACTION: u32 = 0x6a72_6b;

    #[xdp]
    pub fn garbage(_ctx: XdpContext) -> u32 {
        NOT_AN_ACTION
    }

    // The SDK supplies the panic handler of every lambda; this one does not call it, so
    // link it explicitly.
    use lambda_ebpf as _;
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("garbage is a lambda: build it with `cargo xtask build-ebpf`");
}
