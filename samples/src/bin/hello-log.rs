//! `hello-log`: answers every request with `hello` and logs one line per request through the
//! SDK's ring buffer (`lambda_ebpf::log`), the sample `lambdactl logs` is shown and tested on.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{Request, Status, Verdict};

    lambda_ebpf::declare_log!();

    #[xdp]
    pub fn hello_log(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        log_line(b"hello-log: answered a request");
        request.reply(frame, Status::Ok, b"hello")
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("hello-log is a lambda: build it with `cargo xtask build-ebpf`");
}
