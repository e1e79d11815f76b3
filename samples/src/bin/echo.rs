//! `echo`: answers each request with its own body, the first 64 bytes upper-cased — the SDK's
//! in-place path (`read_body`, `write_body`, `reply_in_place`), with no copy of the rest.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{Request, Status, Verdict};

    /// How much of the body is upper-cased.
    const SHOUT_MAX: usize = 64;

    #[xdp]
    pub fn echo(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        let mut head = [0u8; SHOUT_MAX];
        let status = match request.read_body(frame, 0, &mut head) {
            Ok(n) => match head.get_mut(..n) {
                Some(head) => {
                    head.make_ascii_uppercase();
                    match request.write_body(frame, 0, head) {
                        Ok(_) => Status::Ok,
                        Err(_) => Status::Internal,
                    }
                }
                None => Status::Internal,
            },
            Err(_) => Status::Internal,
        };
        request.reply_in_place(frame, status)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("echo is a lambda: build it with `cargo xtask build-ebpf`");
}
