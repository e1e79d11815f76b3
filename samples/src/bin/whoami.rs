//! `whoami`: answers every request with its own identity and how often it was called:
//! `lambda=<id> calls=<n>`, where `<id>` is the lambda id it was deployed for (10 digits, or
//! `any` padded with spaces when it answers every id) and `<n>` counts this lambda's own calls
//! (20 digits) in its own `CALLS` map.
//!
//! The density tests deploy a thousand of these behind one dispatcher, each with its own id:
//! an answer names the lambda that gave it, and the call counts show that no lambda sees
//! another's map.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// Atomic add on the map value, as in `counter` (see there).
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

#[cfg(target_arch = "bpf")]
#[path = "../shared/decimal.rs"]
mod decimal;

#[cfg(target_arch = "bpf")]
mod lambda {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};

    use aya_ebpf::{macros::map, macros::xdp, maps::Array, programs::XdpContext};
    use lambda_ebpf::request::LambdaMatch;
    use lambda_ebpf::xdp::{XdpFrame, lambda_match, serve};
    use lambda_ebpf::{Request, Status, Verdict};

    const PREFIX: &[u8; 7] = b"lambda=";
    const ID_DIGITS: usize = 10;
    const MIDDLE: &[u8; 7] = b" calls=";
    const CALL_DIGITS: usize = 20;
    const BODY: usize = PREFIX.len() + ID_DIGITS + MIDDLE.len() + CALL_DIGITS;

    /// Index 0: this lambda's calls so far.
    #[map]
    static CALLS: Array<u64> = Array::with_max_entries(1, 0);

    #[xdp]
    pub fn whoami(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        // Spaces as words: a byte array filled with a non-zero byte becomes a `memset` call,
        // whose byte loop the kernel verifier walks byte by byte.
        let mut words = [u64::from_ne_bytes([b' '; 8]); BODY.div_ceil(8)];
        // SAFETY: the u64 array covers at least BODY initialised bytes.
        let body: &mut [u8; BODY] = unsafe { &mut *words.as_mut_ptr().cast() };
        body[..PREFIX.len()].copy_from_slice(PREFIX);
        match lambda_match() {
            LambdaMatch::Id(id) => {
                super::decimal::write_padded::<BODY, ID_DIGITS>(body, PREFIX.len(), id.into())
            }
            LambdaMatch::Any => body[PREFIX.len()..PREFIX.len() + 3].copy_from_slice(b"any"),
        }
        let at = PREFIX.len() + ID_DIGITS;
        body[at..at + MIDDLE.len()].copy_from_slice(MIDDLE);
        let status = match CALLS.get_ptr_mut(0) {
            Some(slot) => {
                // SAFETY: the map value is 8-byte aligned and alive while the program runs;
                // other CPUs touch it only through atomic adds as well.
                let calls = unsafe {
                    atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1);
                    core::ptr::read_volatile(slot)
                };
                super::decimal::write_padded::<BODY, CALL_DIGITS>(body, at + MIDDLE.len(), calls);
                Status::Ok
            }
            None => Status::Internal,
        };
        request.reply(frame, status, body)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("whoami is a lambda: build it with `cargo xtask build-ebpf`");
}
