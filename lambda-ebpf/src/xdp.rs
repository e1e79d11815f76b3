//! The glue between the XDP hook and the SDK: [`Frame`] over the XDP context, the attach-time
//! configuration, and [`serve`], which is all a lambda's entry point needs to call.

#[cfg(not(feature = "nic"))]
use aya_ebpf::helpers::generated::{bpf_csum_diff, bpf_xdp_load_bytes, bpf_xdp_store_bytes};
use aya_ebpf::helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail};
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::XdpContext;

use crate::frame::{Frame, HelperError};
use crate::request::{LambdaMatch, Request, Verdict};
use crate::stats::{self, Counters};
#[cfg(feature = "nic")]
use crate::wire::Status;

// Attach-time configuration. These live in `.rodata`; the loader overwrites them before the
// program is loaded (`EbpfLoader::set_global`), and the kernel then treats them as constants.
// They are read volatile so the compiler cannot fold the defaults into the code.

/// The UDP port this lambda serves.
#[unsafe(no_mangle)]
static LNIC_PORT: u16 = crate::wire::DEFAULT_PORT;
/// The λ lambda id this lambda answers when `LNIC_MATCH_ANY_ID` is 0.
#[unsafe(no_mangle)]
static LNIC_LAMBDA_ID: u32 = 0;
/// 1: answer every lambda id on the port; 0: only `LNIC_LAMBDA_ID`.
#[unsafe(no_mangle)]
static LNIC_MATCH_ANY_ID: u8 = 1;

/// The SDK's counters ([`stats`] gives the slots), bumped by [`serve`] on every invocation.
/// Per-CPU: each CPU adds to its own copy, so no atomics; userspace sums them.
#[map]
static LNIC_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::SLOTS, 0);

/// [`Counters`] over [`LNIC_STATS`].
struct MapCounters;

impl Counters for MapCounters {
    #[inline(never)]
    fn bump(&self, slot: u32) {
        if let Some(count) = LNIC_STATS.get_ptr_mut(slot) {
            // SAFETY: the map value is this CPU's own u64, alive while the program runs; only
            // this CPU's invocation (which cannot be preempted by itself in XDP) touches it.
            unsafe { *count += 1 };
        }
    }
}

/// The UDP port this lambda was attached to serve.
#[inline(always)]
pub fn served_port() -> u16 {
    // SAFETY: reading a static.
    unsafe { core::ptr::read_volatile(&raw const LNIC_PORT) }
}

/// The lambda ids this lambda was attached to answer.
#[inline(always)]
pub fn lambda_match() -> LambdaMatch {
    // SAFETY: reading statics.
    let any = unsafe { core::ptr::read_volatile(&raw const LNIC_MATCH_ANY_ID) };
    if any != 0 {
        LambdaMatch::Any
    } else {
        LambdaMatch::Id(unsafe { core::ptr::read_volatile(&raw const LNIC_LAMBDA_ID) })
    }
}

/// [`Frame`] over the XDP context.
pub struct XdpFrame<'a> {
    ctx: &'a XdpContext,
}

impl<'a> XdpFrame<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        XdpFrame { ctx }
    }
}

#[inline(always)]
fn check(ret: i64) -> Result<(), HelperError> {
    if ret < 0 {
        Err(HelperError(ret))
    } else {
        Ok(())
    }
}

#[cfg(not(feature = "nic"))]
impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        self.ctx.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.ctx.data_end()
    }
    #[inline(always)]
    fn adjust_tail(&mut self, delta: i32) -> Result<(), HelperError> {
        // SAFETY: a kernel helper on our own context.
        check(unsafe { bpf_xdp_adjust_tail(self.ctx.ctx, delta) })
    }
    #[inline(always)]
    fn adjust_head(&mut self, delta: i32) -> Result<(), HelperError> {
        // SAFETY: a kernel helper on our own context.
        check(unsafe { bpf_xdp_adjust_head(self.ctx.ctx, delta) })
    }
    #[inline(always)]
    fn load_bytes(&self, offset: u32, dst: &mut [u8]) -> Result<(), HelperError> {
        // SAFETY: the helper writes at most `dst.len()` bytes into `dst`.
        check(unsafe {
            bpf_xdp_load_bytes(
                self.ctx.ctx,
                offset,
                dst.as_mut_ptr().cast(),
                dst.len() as u32,
            )
        })
    }
    #[inline(always)]
    fn store_bytes(&mut self, offset: u32, src: &[u8]) -> Result<(), HelperError> {
        // SAFETY: the helper reads `src.len()` bytes from `src` (it does not write through it).
        check(unsafe {
            bpf_xdp_store_bytes(
                self.ctx.ctx,
                offset,
                src.as_ptr() as *mut _,
                src.len() as u32,
            )
        })
    }
    #[inline(always)]
    fn csum_partial(&self, addr: usize, len: u32) -> Result<u32, HelperError> {
        // SAFETY: the caller proved `addr..addr + len` inside the packet; `from` is empty.
        let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, addr as *mut _, len, 0) };
        check(sum)?;
        Ok(sum as u32)
    }
    #[inline(always)]
    fn csum_bytes(&self, bytes: &[u8]) -> Result<u32, HelperError> {
        // SAFETY: the helper only reads `bytes.len()` bytes of `bytes`; `from` is empty.
        let sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                bytes.as_ptr() as *mut _,
                bytes.len() as u32,
                0,
            )
        };
        check(sum)?;
        Ok(sum as u32)
    }
}

/// The NIC flavour (feature `nic`): the same frame with no helper but the two the NFP has
/// (`bpf_xdp_adjust_head`/`_tail`). Bytes are copied and summed in code through direct packet
/// access, every access after its own comparison against `data_end`. See [`crate::nic`].
#[cfg(feature = "nic")]
impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        self.ctx.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.ctx.data_end()
    }
    #[inline(always)]
    fn adjust_tail(&mut self, delta: i32) -> Result<(), HelperError> {
        // SAFETY: a kernel helper on our own context.
        check(unsafe { bpf_xdp_adjust_tail(self.ctx.ctx, delta) })
    }
    #[inline(always)]
    fn adjust_head(&mut self, delta: i32) -> Result<(), HelperError> {
        // SAFETY: a kernel helper on our own context.
        check(unsafe { bpf_xdp_adjust_head(self.ctx.ctx, delta) })
    }
    #[inline(always)]
    fn load_bytes(&self, offset: u32, dst: &mut [u8]) -> Result<(), HelperError> {
        // SAFETY: `data..data_end` is the packet.
        unsafe { crate::nic::load(self.data(), self.data_end(), offset as usize, dst) }
    }
    #[inline(always)]
    fn store_bytes(&mut self, offset: u32, src: &[u8]) -> Result<(), HelperError> {
        // SAFETY: `data..data_end` is the packet.
        unsafe { crate::nic::store(self.data(), self.data_end(), offset as usize, src) }
    }
    #[inline(always)]
    fn csum_partial(&self, addr: usize, len: u32) -> Result<u32, HelperError> {
        // SAFETY: `addr..data_end` lies in the packet.
        unsafe { crate::nic::sum_packet(addr, self.data_end(), len as usize) }
    }
    #[inline(always)]
    fn csum_bytes(&self, bytes: &[u8]) -> Result<u32, HelperError> {
        Ok(crate::nic::sum_bytes(bytes))
    }
    #[inline(always)]
    fn finish_reply(&mut self, request: &Request, status: Status, body_len: usize) -> Option<()> {
        let ip = match request.ip_version() {
            crate::IpVersion::V4 => 4,
            crate::IpVersion::V6 => 6,
        };
        // SAFETY: our own context.
        let done = unsafe {
            shared::finish_reply(
                self.ctx.ctx,
                ip,
                request.udp_offset() as u32,
                u32::from(status.to_wire()),
                body_len as u32,
            )
        };
        (done != 0).then_some(())
    }
}

/// The part of every reply that does not depend on the lambda, out of line (NIC build): the
/// header rewrite and the UDP checksum (`Request::rewrite_summed`, one loop over the
/// datagram whatever its length). Its arguments are all it reads (no map, no `.rodata`), so
/// the same SDK compiles it to the same code in every lambda, and the coalescer, which merges
/// identical functions, keeps one copy per program: on a NIC core, whose instruction store
/// holds 2,800 instructions, it is paid once rather than once per lambda.
///
/// (The parser could be shared the same way, and was: the cores a set of `whoami` lambdas
/// needs went from 18 to 11, but the kernel's verifier then walked a lambda's handler once
/// per way out of the parser, each with its exact offsets, and accepting the static-server's
/// NIC build took it 981,835 of its million instructions. Inline, the parser costs each
/// lambda about 300 slots and the kernel 624,672 for that lambda.)
#[cfg(feature = "nic")]
mod shared {
    use aya_ebpf::bindings::xdp_md;
    use aya_ebpf::programs::XdpContext;

    use super::XdpFrame;
    use crate::request::Request;
    use crate::wire::Status;

    /// The header rewrite and checksums of a reply whose `body_len`-byte body is in place, for
    /// a request over IP version `ip` (4 or 6) with its UDP header at `udp_offset`: 1 when
    /// done, 0 when the packet could not be rewritten. The request's parts come as values, not
    /// through a pointer into the caller's stack, which a verifier may not see into.
    ///
    /// # Safety
    /// `ctx` is the program's XDP context.
    #[inline(never)]
    pub(super) unsafe fn finish_reply(
        ctx: *mut xdp_md,
        ip: u32,
        udp_offset: u32,
        status: u32,
        body_len: u32,
    ) -> u32 {
        let ctx = XdpContext::new(ctx);
        let mut frame = XdpFrame::new(&ctx);
        let status = Status::from_wire(status as u16).unwrap_or(Status::Internal);
        let Some(request) = Request::for_reply(ip, udp_offset as usize) else {
            return 0;
        };
        match request.rewrite_summed(&mut frame, status, body_len as usize) {
            Some(()) => 1,
            None => 0,
        }
    }
}

/// Runs `handler` for each λ request addressed to this lambda; passes everything else.
/// Counts every invocation in `LNIC_STATS` (see [`stats`]).
///
/// A lambda's whole entry point is usually one call:
///
/// ```ignore
/// #[xdp]
/// pub fn my_lambda(ctx: XdpContext) -> u32 {
///     lambda_ebpf::xdp::serve(&ctx, |frame, request| request.reply(frame, Status::Ok, b"hi"))
/// }
/// ```
#[inline(always)]
pub fn serve<H>(ctx: &XdpContext, handler: H) -> u32
where
    H: FnOnce(&mut XdpFrame<'_>, &Request) -> Verdict,
{
    let mut frame = XdpFrame::new(ctx);
    stats::serve_counted(
        &mut frame,
        served_port(),
        lambda_match(),
        &MapCounters,
        handler,
    )
}

/// Counts in `LNIC_STATS` an invocation that [`serve`] did not handle: its XDP action and,
/// when it sent a λ response, that response's status. For lambdas that also answer packets of
/// their own (the memcached client turns memcached's replies into λ responses), so that
/// `lambdactl stats` still sees every invocation.
#[inline(always)]
pub fn record(verdict: Verdict, response: Option<crate::Status>) {
    if let Some(status) = response {
        stats::record_status(&MapCounters, status.to_wire());
    }
    stats::record_action(&MapCounters, verdict.xdp_action());
}

/// Every lambda links this SDK, so it supplies the panic handler `no_std` needs: lambdas do
/// not write their own. It is never reached: the kernel verifier rejects any program in which
/// a panic path is reachable, and the compiler removes the branches to it.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: unreachable in a loaded program (see above).
    unsafe { core::hint::unreachable_unchecked() }
}
