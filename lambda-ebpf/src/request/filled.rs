//! Replies for lambdas whose response body has a length known only at run time, built for
//! the NIC (feature `nic`, though the code is plain and host tests run it over a buffer):
//!
//! - [`Request::reply_filled`]: the lambda writes the body straight into the packet, piece by
//!   piece, rather than handing [`Request::reply`] one slice (the NIC build of
//!   `static-server` keeps an object in 56-byte chunks, the NFP's largest map element, and a
//!   reply longer than a stack buffer or one store of the NIC frame);
//! - [`Request::reply_in_place_shrunk`]: [`Request::reply_in_place_truncated`] for a body
//!   that only shrinks (the NIC build of `grayscale`).
//!
//! Both finish through [`Frame::finish_reply`]: in the NIC build that is the SDK's one shared
//! reply function, which computes the UDP checksum with [`sum_datagram`] (for every NIC reply,
//! [`Request::reply`]'s too), one subprogram that sums the datagram
//! in 32-byte blocks, then words, then the last bytes. [`Request::reply`]'s checksum branches
//! on the length's bits so that a constant length is one path; with a length known only as a
//! range that is ~50 paths, each summing its chunks and copying its tail through the NIC
//! frame's byte loops, and the kernel's verifier gives up past its million instructions. Here
//! the verifiers walk one loop per call, whatever the length.
//!
//! The header rewrite is [`Request::rewrite_headers`]'s, repeated rather than shared: moving
//! that code into a function of its own changes the compiled code of the normal builds.

// The checksum and the header rewrite below are what the NIC build's shared reply function
// runs (`crate::xdp::shared`, BPF with feature `nic` only); other builds keep them for their
// tests and do not call them.
#![cfg_attr(not(all(feature = "nic", target_arch = "bpf")), allow(dead_code))]

use super::{
    ETH_LEN, HEADER_LEN, IPPROTO_UDP, IpVersion, MAX_BODY, REPLY_TTL, Request, UDP_LEN, Verdict,
};
use crate::frame::{Frame, HelperError, csum_replace, fold, read_at, write_at};
use crate::wire::{LambdaHeader, Status};

/// The longest datagram [`sum_datagram`] sums: UDP and λ headers and the longest body.
const MAX_DATAGRAM: usize = UDP_LEN + HEADER_LEN + MAX_BODY;

/// Bytes summed per comparison with `data_end` in [`sum_datagram`].
const BLOCK: usize = 32;

/// `n` through memory the compiler cannot see into: it keeps the loops below counting up to
/// their constants, and keeps offsets it would otherwise fold into a comparison (then reading
/// at negative offsets from the compared pointer, which the kernel's verifier refuses).
#[inline(always)]
fn opaque(n: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&n) }
}

/// The ones'-complement sum of the `len` bytes (32 or more) at packet address `addr`, as
/// 16-bit words in memory order (a last odd byte zero-padded), folded to 32 bits; -1 when
/// `len` is out of range or the bytes pass `end`. A subprogram: its result is one register,
/// so its many exits meet again in the caller.
///
/// The last `len % 32` bytes go first, without a branch: the 32 bytes that end the datagram
/// are read under one comparison with `end`, and those before the last `len % 32` masked out.
/// Then whole 32-byte blocks from the start, each under its own comparison; whichever block
/// the loop stops after, what follows is the fold, so the verifiers' paths stay short.
///
/// # Safety
/// `addr..end` must be readable memory.
#[inline(never)]
pub unsafe fn sum_datagram(addr: usize, end: usize, len: usize) -> i64 {
    let len = opaque(len);
    if !(BLOCK..=MAX_DATAGRAM).contains(&len) {
        return -1;
    }
    let mut sum = 0u64;
    // The window [len − 32, len): byte j is past the whole blocks when j + len % 32 ≥ 32,
    // and sits at an odd datagram offset (the high byte of its 16-bit word) when j + len is
    // odd.
    let back = opaque(len - BLOCK);
    if back > MAX_DATAGRAM {
        return -1;
    }
    let window = addr + back;
    if window + opaque(BLOCK) > end {
        return -1;
    }
    let rest = (len % BLOCK) as u64;
    let odd = (len & 1) as u64;
    for j in 0..BLOCK {
        // SAFETY: `window + BLOCK <= end` above.
        let byte = u64::from(unsafe { core::ptr::read_volatile((window + j) as *const u8) });
        let new = ((j as u64 + rest) >> 5) & 1;
        let high = (j as u64 + odd) & 1;
        sum += (byte * new) << (8 * high);
    }
    let mut block = 0;
    while block < MAX_DATAGRAM / BLOCK {
        if BLOCK * block + BLOCK > len {
            break;
        }
        // SAFETY: `read_at` checks against `end`.
        let Some(words) = (unsafe { read_at::<[u32; BLOCK / 4]>(addr + BLOCK * block, end) })
        else {
            return -1;
        };
        for word in words {
            sum += u64::from(word);
        }
        block += 1;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as i64
}

impl Request {
    /// Turns the request into its response with a body of `len` bytes that `fill` writes: the
    /// packet is first resized to hold exactly that body (growing into the headroom when the
    /// driver leaves no tailroom, as [`Request::reply`] does), then `fill(frame, body_offset)`
    /// stores it (at frame offsets from `body_offset`), then the headers and checksums are
    /// fixed as in [`Request::reply`].
    ///
    /// A `len` over [`MAX_BODY`], or one the driver has no room for, is answered `TOO_LARGE`
    /// with an empty body; when `fill` fails with a status the answer is that status with an
    /// empty body (bytes it already wrote are cut off).
    #[inline(always)]
    pub fn reply_filled<F, W>(&self, frame: &mut F, status: Status, len: usize, fill: W) -> Verdict
    where
        F: Frame,
        W: FnOnce(&mut F, usize) -> Result<(), Status>,
    {
        let (status, body_len) = if len <= MAX_BODY && self.resize_body(frame, len).is_ok() {
            match fill(frame, self.body_offset()) {
                Ok(()) => (status, len),
                Err(failed) => {
                    self.drop_body(frame);
                    (failed, 0)
                }
            }
        } else {
            self.drop_body(frame);
            (Status::TooLarge, 0)
        };
        match frame.finish_reply(self, status, body_len) {
            Some(()) => Verdict::Reply,
            None => Verdict::Aborted,
        }
    }

    /// [`Request::reply_in_place_truncated`] for a body that only shrinks: keeps the first
    /// `body_len` bytes of the body now in the packet. A `body_len` past the request body (or
    /// a packet that cannot shrink) is answered `TOO_LARGE` with an empty body, as there.
    #[inline(always)]
    pub fn reply_in_place_shrunk<F: Frame>(
        &self,
        frame: &mut F,
        status: Status,
        body_len: usize,
    ) -> Verdict {
        let (status, body_len) = if body_len <= self.body_len
            && body_len <= MAX_BODY
            && self.shrink_body(frame, body_len).is_ok()
        {
            (status, body_len)
        } else {
            self.drop_body(frame);
            (Status::TooLarge, 0)
        };
        match frame.finish_reply(self, status, body_len) {
            Some(()) => Verdict::Reply,
            None => Verdict::Aborted,
        }
    }

    /// The packet cut to the headers and `body_len` body bytes; never grown.
    #[inline(always)]
    fn shrink_body<F: Frame>(&self, frame: &mut F, body_len: usize) -> Result<(), HelperError> {
        let current = (frame.data_end() - frame.data()) as i64;
        let delta = (self.body_offset() + body_len) as i64 - current;
        if delta == 0 {
            return Ok(());
        }
        if delta > 0 {
            return Err(HelperError(-22));
        }
        frame.adjust_tail(delta as i32)
    }

    /// [`Request::rewrite_headers`] with the UDP checksum from [`sum_datagram`]: what the NIC
    /// build's one shared reply function (`lambda_ebpf::xdp::shared::finish_reply`) runs for
    /// every reply, whatever its length.
    #[inline(always)]
    pub(crate) fn rewrite_summed<F: Frame>(
        &self,
        frame: &mut F,
        status: Status,
        body_len: usize,
    ) -> Option<()> {
        let data = frame.data();
        let end = frame.data_end();
        let udp_len = (UDP_LEN + HEADER_LEN + body_len) as u16;
        // SAFETY (all packet accesses below): `read_at`/`write_at` check against `end`.
        unsafe {
            let macs: [[u8; 6]; 2] = read_at(data, end)?;
            write_at(data, end, [macs[1], macs[0]])?;
            let ip = data + ETH_LEN;
            match self.ip {
                IpVersion::V4 => {
                    let addrs: [[u8; 4]; 2] = read_at(ip + 12, end)?;
                    write_at(ip + 12, end, [addrs[1], addrs[0]])?;
                    let check: u16 = read_at(ip + 10, end)?;
                    let old_len: u16 = read_at(ip + 2, end)?;
                    let new_len = ((self.udp_offset - ETH_LEN) as u16 + udp_len).to_be();
                    let old_ttl_proto: u16 = read_at(ip + 8, end)?;
                    let new_ttl_proto = u16::from_ne_bytes([REPLY_TTL, IPPROTO_UDP]);
                    let check = csum_replace(check, old_len, new_len);
                    let check = csum_replace(check, old_ttl_proto, new_ttl_proto);
                    write_at(ip + 2, end, new_len)?;
                    write_at(ip + 8, end, new_ttl_proto)?;
                    write_at(ip + 10, end, check)?;
                }
                IpVersion::V6 => {
                    let addrs: [[u8; 16]; 2] = read_at(ip + 8, end)?;
                    write_at(ip + 8, end, [addrs[1], addrs[0]])?;
                    write_at(ip + 4, end, udp_len.to_be())?;
                    write_at(ip + 7, end, REPLY_TTL)?;
                }
            }
            let udp = data + self.udp_offset;
            let ports: [u16; 2] = read_at(udp, end)?;
            write_at(udp, end, [ports[1], ports[0], udp_len.to_be(), 0])?;
            let mut header: LambdaHeader = read_at(udp + UDP_LEN, end)?;
            header.make_response(status);
            write_at(udp + UDP_LEN, end, header)?;
        }
        let check = self.summed_udp_checksum(frame, udp_len)?;
        // SAFETY: checked against `data_end` by `write_at`.
        unsafe { write_at(frame.data() + self.udp_offset + 6, frame.data_end(), check) }
    }

    /// The UDP checksum over the pseudo-header and the whole datagram (whose checksum field is
    /// zero), in memory byte order, ready to store.
    #[inline(always)]
    fn summed_udp_checksum<F: Frame>(&self, frame: &F, udp_len: u16) -> Option<u16> {
        let data = frame.data();
        let end = frame.data_end();
        let ip = data + ETH_LEN;
        let mut sum = u64::from(u16::from_ne_bytes([0, IPPROTO_UDP])) + u64::from(udp_len.to_be());
        // SAFETY: `read_at` checks against `end`.
        unsafe {
            match self.ip {
                IpVersion::V4 => {
                    let addrs: [u32; 2] = read_at(ip + 12, end)?;
                    sum += u64::from(addrs[0]) + u64::from(addrs[1]);
                }
                IpVersion::V6 => {
                    let addrs: [u64; 4] = read_at(ip + 8, end)?;
                    for word in addrs {
                        sum += (word & 0xffff_ffff) + (word >> 32);
                    }
                }
            }
        }
        // SAFETY: `data..end` is the packet.
        let datagram = unsafe { sum_datagram(data + self.udp_offset, end, usize::from(udp_len)) };
        if datagram < 0 {
            return None;
        }
        sum += datagram as u64;
        let check = !fold(sum);
        Some(if check == 0 { 0xffff } else { check })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// The ones'-complement sum of `bytes` as 16-bit words in memory order, the reference.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum = 0u64;
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_ne_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        fold(sum)
    }

    #[test]
    fn sum_datagram_agrees_with_the_16_bit_reference_at_every_length() {
        let mut x = 0x2545_f491_u32;
        let bytes: Vec<u8> = (0..MAX_DATAGRAM + 8)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in BLOCK..=MAX_DATAGRAM {
            let range = bytes[..len].as_ptr_range();
            let sum = unsafe { sum_datagram(range.start as usize, range.end as usize, len) };
            assert!(sum >= 0, "len {len}");
            assert_eq!(fold(sum as u64), reference(&bytes[..len]), "len {len}");
        }
        let range = bytes[..40].as_ptr_range();
        let (start, end) = (range.start as usize, range.end as usize);
        assert_eq!(unsafe { sum_datagram(start, end, 41) }, -1, "past the end");
        assert_eq!(
            unsafe { sum_datagram(start, end, 31) },
            -1,
            "shorter than a block"
        );
        assert_eq!(unsafe { sum_datagram(start, end, MAX_DATAGRAM + 1) }, -1);
    }

    /// The frame's current bytes.
    fn bytes<F: Frame>(frame: &F) -> Vec<u8> {
        // SAFETY: `data..data_end` is the frame's buffer.
        unsafe {
            std::slice::from_raw_parts(frame.data() as *const u8, frame.data_end() - frame.data())
        }
        .to_vec()
    }

    #[test]
    fn reply_filled_and_shrunk_answer_as_reply_and_truncated() {
        use crate::request::LambdaMatch;
        use crate::request::tests::{BufFrame, ipv4_packet, udp_payload};
        let body: Vec<u8> = (0..=MAX_BODY).map(|i| (i * 7 + 3) as u8).collect();
        let request_body: Vec<u8> = (0..600).map(|i| (i * 13 + 1) as u8).collect();
        let packet = ipv4_packet(9000, &udp_payload(7, 0xfeed_beef, &request_body));
        let request = Request::parse(&BufFrame::new(&packet, 0), 9000, LambdaMatch::Any).unwrap();
        // Grown at the tail (tailroom) and at the head (none), and shrunk.
        for tailroom in [2048, 0] {
            // Up to one past the longest body, which is TOO_LARGE both ways.
            for len in (0..=MAX_BODY).step_by(7).chain([MAX_BODY, MAX_BODY + 1]) {
                let piece = &body[..len];
                let mut expected = BufFrame::new(&packet, tailroom);
                let want = request.reply(&mut expected, Status::Ok, piece);
                let mut actual = BufFrame::new(&packet, tailroom);
                let got = request.reply_filled(&mut actual, Status::Ok, len, |frame, at| {
                    frame
                        .store_bytes(at as u32, piece)
                        .map_err(|_| Status::Internal)
                });
                assert_eq!(got, want, "len {len} tailroom {tailroom}");
                assert_eq!(
                    bytes(&actual),
                    bytes(&expected),
                    "len {len} tailroom {tailroom}"
                );
            }
        }
        // A failing fill: its status, no body.
        let mut expected = BufFrame::new(&packet, 0);
        request.reply(&mut expected, Status::Internal, &[]);
        let mut actual = BufFrame::new(&packet, 0);
        request.reply_filled(&mut actual, Status::Ok, 10, |_, _| Err(Status::Internal));
        assert_eq!(bytes(&actual), bytes(&expected));
        for len in [0, 1, 2, 3, 4, 5, 31, 32, 33, 100, 599, 600, 601, 2000] {
            let mut expected = BufFrame::new(&packet, 0);
            let want = request.reply_in_place_truncated(&mut expected, Status::Ok, len);
            let mut actual = BufFrame::new(&packet, 0);
            let got = request.reply_in_place_shrunk(&mut actual, Status::Ok, len);
            assert_eq!(got, want, "len {len}");
            assert_eq!(bytes(&actual), bytes(&expected), "len {len}");
        }
    }
}
