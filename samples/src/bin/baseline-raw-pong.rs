//! `baseline-raw-pong`: what `pong` does, written by hand without the SDK.
//!
//! The yardstick for the SDK's overhead (`cargo xtask bench spine` reports pong / baseline):
//! the common case the way an experienced eBPF author writes it — raw pointer arithmetic on
//! `data`/`data_end`, one bounds check up front, IPv4 without options only, UDP destination
//! port 9000 fixed at build time, λ magic/version check, then the reply in place. It skips what
//! the SDK does for the general case: IPv6, IPv4 options, IPv4 header checksum verification,
//! TTL reset, the UDP-length check against the frame, and growing at the head when the tail
//! has no room (it passes the packet instead).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
    use aya_ebpf::helpers::generated::bpf_xdp_adjust_tail;
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use lambda_ebpf::wire::{DEFAULT_PORT, FLAG_RESPONSE, HEADER_LEN, MAGIC, VERSION};

    const ETH_LEN: usize = 14;
    const IP_LEN: usize = 20;
    const UDP_LEN: usize = 8;
    const BODY: [u8; 4] = *b"pong";
    /// Offsets from the start of the frame.
    const IP: usize = ETH_LEN;
    const UDP: usize = IP + IP_LEN;
    const LNIC: usize = UDP + UDP_LEN;
    /// The reply's UDP length and whole frame length.
    const REPLY_UDP_LEN: u16 = (UDP_LEN + HEADER_LEN + BODY.len()) as u16;
    const REPLY_LEN: usize = LNIC + HEADER_LEN + BODY.len();

    /// Reads a `T` at packet address `at`.
    ///
    /// # Safety
    /// `at + size_of::<T>()` must have been checked against `data_end`. Packet memory has no
    /// alignment guarantee, so the read is unaligned (as the SDK's are: a fair comparison).
    #[inline(always)]
    unsafe fn load<T: Copy>(at: usize) -> T {
        unsafe { core::ptr::read_unaligned(at as *const T) }
    }

    /// Writes a `T` at packet address `at`; the same contract as [`load`].
    #[inline(always)]
    unsafe fn store<T>(at: usize, value: T) {
        unsafe { core::ptr::write_unaligned(at as *mut T, value) }
    }

    /// RFC 1624 incremental update of a ones'-complement checksum for one 16-bit word.
    #[inline(always)]
    fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
        let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
        let sum = (sum & 0xffff) + (sum >> 16);
        !((sum & 0xffff) + (sum >> 16)) as u16
    }

    #[xdp]
    pub fn baseline_raw_pong(ctx: XdpContext) -> u32 {
        // SAFETY: every packet access in `pong` follows a check against data_end.
        unsafe { pong(&ctx) }
    }

    #[inline(always)]
    unsafe fn pong(ctx: &XdpContext) -> u32 {
        let data = ctx.data();
        let end = ctx.data_end();
        // One check covers Ethernet, IPv4 without options, UDP and the λ header.
        if data + LNIC + HEADER_LEN > end {
            return XDP_PASS;
        }
        unsafe {
            if load::<u16>(data + 12) != 0x0800u16.to_be()
                || load::<u8>(data + IP) != 0x45
                || load::<u8>(data + IP + 9) != 17
                // MF set or a fragment offset: not a whole datagram.
                || load::<u16>(data + IP + 6) & 0x3fffu16.to_be() != 0
                || load::<u16>(data + UDP + 2) != DEFAULT_PORT.to_be()
                || load::<u16>(data + LNIC) != MAGIC.to_be()
                || load::<u8>(data + LNIC + 2) != VERSION
                // Never answer a response (two lambdas would ping-pong forever).
                || load::<u8>(data + LNIC + 3) & FLAG_RESPONSE != 0
            {
                return XDP_PASS;
            }
        }
        // SAFETY: bounds checked above.
        let old_total_len: u16 = unsafe { load(data + IP + 2) };

        // Make the frame exactly the reply's size (packet pointers die here).
        let delta = REPLY_LEN as i32 - (end - data) as i32;
        // SAFETY: a kernel helper on our own context.
        if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return XDP_PASS;
        }
        let data = ctx.data();
        let end = ctx.data_end();
        if data + REPLY_LEN > end {
            // Cannot happen after a successful resize; the packet is no longer the request.
            return XDP_DROP;
        }

        // SAFETY (all accesses below): `data + REPLY_LEN <= end` checked above.
        unsafe {
            // Ethernet: swap the MACs as 4 + 2 and 2 + 4 bytes.
            let dst_hi: u32 = load(data);
            let dst_lo: u16 = load(data + 4);
            let src_hi: u16 = load(data + 6);
            let src_lo: u32 = load(data + 8);
            store(data, src_hi);
            store(data + 2, src_lo);
            store(data + 6, dst_hi);
            store(data + 10, dst_lo);

            // IPv4: swap addresses, new total length, incremental header checksum.
            let saddr: u32 = load(data + IP + 12);
            let daddr: u32 = load(data + IP + 16);
            store(data + IP + 12, daddr);
            store(data + IP + 16, saddr);
            let new_total_len = (IP_LEN as u16 + REPLY_UDP_LEN).to_be();
            let check: u16 = load(data + IP + 10);
            store(data + IP + 2, new_total_len);
            store(
                data + IP + 10,
                csum_replace(check, old_total_len, new_total_len),
            );

            // UDP: swap ports, new length, checksum zero while summing.
            let sport: u16 = load(data + UDP);
            let dport: u16 = load(data + UDP + 2);
            store(data + UDP, dport);
            store(data + UDP + 2, sport);
            store(data + UDP + 4, REPLY_UDP_LEN.to_be());
            store(data + UDP + 6, 0u16);

            // λ header: RESPONSE, status OK (0) and reserved (0) in one word; then the body.
            let flags: u8 = load(data + LNIC + 3);
            store(data + LNIC + 3, flags | FLAG_RESPONSE);
            store(data + LNIC + 20, 0u32);
            store(data + LNIC + HEADER_LEN, u32::from_ne_bytes(BODY));

            // UDP checksum over the pseudo-header and the 36-byte datagram, summed in memory
            // byte order as 32-bit words (ones'-complement sums do not care about byte order).
            let mut sum = u64::from(saddr)
                + u64::from(daddr)
                + u64::from(u16::from_ne_bytes([0, 17]))
                + u64::from(REPLY_UDP_LEN.to_be());
            let mut at = data + UDP;
            for _ in 0..usize::from(REPLY_UDP_LEN) / 4 {
                sum += u64::from(load::<u32>(at));
                at += 4;
            }
            sum = (sum & 0xffff_ffff) + (sum >> 32);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            let udp_check = !(sum as u16);
            // A computed zero goes out as all ones (zero means "no checksum").
            store(
                data + UDP + 6,
                if udp_check == 0 { 0xffff } else { udp_check },
            );
        }
        XDP_TX
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("baseline-raw-pong is a lambda: build it with `cargo xtask build-ebpf`");
}
