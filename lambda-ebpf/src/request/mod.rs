//! A λ request parsed out of an Ethernet frame, and the in-place reply that turns it into its
//! response.
//!
//! Everything here is `#[inline(always)]` and written so the kernel verifier can follow it: every
//! packet access is preceded by a comparison against `data_end`, loops have constant trip counts,
//! and packet offsets are kept as small bounded integers rather than pointers, because pointers
//! do not survive `bpf_xdp_adjust_tail` or `bpf_xdp_adjust_head`.

use crate::frame::{CSUM_CHUNK, Frame, HelperError, csum_replace, fold, read_at, write_at};
use crate::wire::{HEADER_LEN, LambdaHeader, STATUS_OFFSET, Status};

const ETH_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const IPPROTO_UDP: u8 = 17;
const UDP_LEN: usize = 8;
/// Hop limit / TTL written into every response.
const REPLY_TTL: u8 = 64;

/// The largest response body a reply writes: what fits one 1500-byte-MTU datagram over IPv6
/// (1500 − 40 IPv6 − 8 UDP − 24 λ header), so a reply never needs IP fragmentation.
pub const MAX_BODY: usize = 1428;

/// The longest header stack in front of a body: Ethernet, IPv4 with 40 bytes of options, UDP, λ.
const MAX_HEADERS_LEN: usize = ETH_LEN + 60 + UDP_LEN + HEADER_LEN;

/// Upper bound on the number of [`CSUM_CHUNK`]-byte blocks in one UDP datagram we checksum.
const MAX_CSUM_CHUNKS: usize = (UDP_LEN + HEADER_LEN + MAX_BODY) / CSUM_CHUNK + 1;

/// Whether the IPv4 header at `ip` (frame offset [`ETH_LEN`], its first byte proven inside the
/// packet) sums to all ones. `None`: truncated, or shorter than 20 bytes.
///
/// The fixed 20 bytes are read in place. Options (rare) are copied with one variable-length
/// `bpf_xdp_load_bytes` into a zeroed buffer that is then summed whole: a loop over them that
/// stops at `ihl` would give the kernel verifier one path per possible header length, each
/// walked through the rest of the program. The options branch tests a fresh copy of the
/// length, so the two outcomes differ only in values that are dead where they meet, and the
/// verifier walks what follows once.
#[inline(always)]
fn ipv4_header_checksum_ok<F: Frame>(frame: &F, ip: usize) -> Option<bool> {
    // SAFETY: `read_at` checks against `data_end`.
    let fixed: [u32; 5] = unsafe { read_at(ip, frame.data_end())? };
    let mut sum = 0u64;
    for word in fixed {
        sum += u64::from(word);
    }
    // SAFETY: the caller proved `ip` inside the packet.
    let ihl = usize::from(unsafe { core::ptr::read_volatile(ip as *const u8) } & 0x0f) * 4;
    if ihl > IPV4_MIN_LEN {
        let mut words = [0u64; 40 / 8];
        // Zeroed by single stores rather than a `memset` call: across a call the compiler
        // would spill `ihl`, and the λ-NIC verifier does not carry the check above to the
        // spilled copy that becomes the helper's size.
        for word in &mut words {
            // SAFETY: a valid, aligned pointer to a local.
            unsafe { core::ptr::write_volatile(word, 0) };
        }
        // SAFETY: the u64 array is 40 initialised bytes.
        let bytes: &mut [u8; 40] = unsafe { &mut *words.as_mut_ptr().cast() };
        frame
            .load_bytes(
                (ETH_LEN + IPV4_MIN_LEN) as u32,
                bytes.get_mut(..ihl - IPV4_MIN_LEN)?,
            )
            .ok()?;
        for word in words {
            sum += (word & 0xffff_ffff) + (word >> 32);
        }
    }
    Some(fold(sum) == 0xffff)
}

/// Which lambda ids this lambda answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LambdaMatch {
    /// Every lambda id on the served port.
    Any,
    /// Only this lambda id.
    Id(u32),
}

impl LambdaMatch {
    #[inline(always)]
    fn accepts(self, id: u32) -> bool {
        match self {
            LambdaMatch::Any => true,
            LambdaMatch::Id(want) => want == id,
        }
    }
}

/// The IP version a request came in over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// What the XDP hook should do with the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The packet was turned into the response: send it back out (`XDP_TX`).
    Reply,
    /// Not ours: hand it to the host stack untouched (`XDP_PASS`).
    Pass,
    /// Drop it silently (`XDP_DROP`).
    Drop,
    /// The program failed half-way and the packet is no longer trustworthy (`XDP_ABORTED`,
    /// visible through the `xdp:xdp_exception` tracepoint).
    Aborted,
}

impl Verdict {
    /// The `XDP_*` action value.
    #[inline(always)]
    pub const fn xdp_action(self) -> u32 {
        match self {
            Verdict::Aborted => 0,
            Verdict::Drop => 1,
            Verdict::Pass => 2,
            Verdict::Reply => 3,
        }
    }
}

/// Why a body read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// `offset` lies past the end of the body.
    OutOfRange,
    /// The kernel helper refused the copy.
    Helper(HelperError),
}

/// A parsed λ request: where its parts lie in the frame and the header fields a handler needs.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    ip: IpVersion,
    /// Offset of the UDP header from the start of the frame (14 + IP header length).
    udp_offset: usize,
    /// Body length, from the UDP length field (Ethernet padding is not body).
    body_len: usize,
    lambda_id: u32,
    request_id: u64,
    frag_index: u16,
    frag_count: u16,
}

impl Request {
    /// Parses `frame` as a λ request to UDP port `port` for a lambda id `lambda` accepts.
    ///
    /// Returns `None` for anything that is not such a request — other protocols, other ports,
    /// IPv4 fragments, IPv6 extension headers, truncated packets, wrong magic or version, and λ
    /// *responses* (answering those could make two lambdas ping-pong forever). Those packets
    /// must pass to the host stack untouched.
    #[inline(always)]
    pub fn parse<F: Frame>(frame: &F, port: u16, lambda: LambdaMatch) -> Option<Request> {
        let data = frame.data();
        let end = frame.data_end();
        // SAFETY (all reads below): `read_at` checks each access against `end`.
        let ethertype = u16::from_be(unsafe { read_at::<u16>(data + 12, end)? });
        let (ip, udp_offset) = match ethertype {
            ETH_P_IPV4 => {
                let ip = data + ETH_LEN;
                let version_ihl: u8 = unsafe { read_at(ip, end)? };
                if version_ihl >> 4 != 4 {
                    return None;
                }
                // Re-read the byte for the header length: derived from the byte checked above,
                // the compiler folds the version into the arithmetic and the verifier then
                // bounds the length by 252 instead of 60.
                // SAFETY: `ip` was bounds-checked by the read above.
                let ihl_byte = unsafe { core::ptr::read_volatile(ip as *const u8) };
                let ihl = usize::from(ihl_byte & 0x0f) * 4;
                if ihl < IPV4_MIN_LEN {
                    return None;
                }
                let frag = u16::from_be(unsafe { read_at::<u16>(ip + 6, end)? });
                // MF set or a non-zero fragment offset: only whole datagrams are requests.
                if frag & 0x3fff != 0 {
                    return None;
                }
                let proto: u8 = unsafe { read_at(ip + 9, end)? };
                if proto != IPPROTO_UDP {
                    return None;
                }
                // XDP runs before the stack checks anything: a header with a bad checksum is
                // left to the stack to drop (and count) rather than answered.
                if !ipv4_header_checksum_ok(frame, ip)? {
                    return None;
                }
                (IpVersion::V4, ETH_LEN + ihl)
            }
            ETH_P_IPV6 => {
                let ip = data + ETH_LEN;
                let version: u8 = unsafe { read_at(ip, end)? };
                if version >> 4 != 6 {
                    return None;
                }
                let next_header: u8 = unsafe { read_at(ip + 6, end)? };
                if next_header != IPPROTO_UDP {
                    return None;
                }
                (IpVersion::V6, ETH_LEN + IPV6_LEN)
            }
            _ => return None,
        };
        let udp = data + udp_offset;
        let dest_port = u16::from_be(unsafe { read_at::<u16>(udp + 2, end)? });
        if dest_port != port {
            return None;
        }
        // Read the λ header before validating the UDP length against `end`: the other order lets
        // the compiler drop the header's own bounds check as implied, and the kernel verifier,
        // which does not relate the two, then rejects the header read.
        let header: LambdaHeader = unsafe { read_at(udp + UDP_LEN, end)? };
        if !header.is_valid() || header.is_response() || !lambda.accepts(header.lambda_id()) {
            return None;
        }
        let udp_len = usize::from(u16::from_be(unsafe { read_at::<u16>(udp + 4, end)? }));
        if udp_len < UDP_LEN + HEADER_LEN || udp + udp_len > end {
            return None;
        }
        Some(Request {
            ip,
            udp_offset,
            body_len: udp_len - UDP_LEN - HEADER_LEN,
            lambda_id: header.lambda_id(),
            request_id: header.request_id(),
            frag_index: header.frag_index(),
            frag_count: header.frag_count(),
        })
    }

    /// What the header rewrite reads of a request, rebuilt from values (the NIC build's shared
    /// reply function takes them so): IP version 4 or 6, the UDP header at `udp_offset`, which
    /// must lie where a parsed request's can (at most 14 + 60 bytes in). The offset is masked to
    /// its width first (a no-op for a parsed request's), so that a verifier sees it bounded
    /// whatever it knows of the argument; only the upper bound is checked (the lower one is
    /// not needed, and a range check becomes a subtraction and a comparison of the
    /// difference, which bounds the offset only for a verifier that links the two, as the
    /// kernel and ours now do but older kernels did not).
    #[cfg(all(feature = "nic", any(target_arch = "bpf", test)))]
    #[inline(always)]
    pub(crate) fn for_reply(ip: u32, udp_offset: usize) -> Option<Request> {
        let ip = match ip {
            4 => IpVersion::V4,
            6 => IpVersion::V6,
            _ => return None,
        };
        let udp_offset = udp_offset & 0x7f;
        if udp_offset > ETH_LEN + 60 {
            return None;
        }
        Some(Request {
            ip,
            udp_offset,
            body_len: 0,
            lambda_id: 0,
            request_id: 0,
            frag_index: 0,
            frag_count: 0,
        })
    }

    /// Offset of the UDP header from the start of the frame.
    #[cfg(all(feature = "nic", any(target_arch = "bpf", test)))]
    #[inline(always)]
    pub(crate) fn udp_offset(&self) -> usize {
        self.udp_offset
    }

    #[inline(always)]
    pub fn ip_version(&self) -> IpVersion {
        self.ip
    }
    #[inline(always)]
    pub fn lambda_id(&self) -> u32 {
        self.lambda_id
    }
    #[inline(always)]
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
    #[inline(always)]
    pub fn frag_index(&self) -> u16 {
        self.frag_index
    }
    #[inline(always)]
    pub fn frag_count(&self) -> u16 {
        self.frag_count
    }
    /// Length of the request body in bytes.
    #[inline(always)]
    pub fn body_len(&self) -> usize {
        self.body_len
    }
    /// Offset of the body from the start of the frame.
    #[inline(always)]
    pub fn body_offset(&self) -> usize {
        self.udp_offset + UDP_LEN + HEADER_LEN
    }

    /// The raw status of the response now in `frame`, read back from its λ header (`None`
    /// when the frame is too short to hold it). Only meaningful after a reply.
    #[inline(always)]
    pub(crate) fn response_status<F: Frame>(&self, frame: &F) -> Option<u16> {
        let at = frame.data() + self.udp_offset + UDP_LEN + STATUS_OFFSET;
        // SAFETY: `read_at` checks against `data_end`.
        unsafe { read_at::<u16>(at, frame.data_end()) }.map(u16::from_be)
    }

    /// Copies body bytes starting at `offset` into `dst`, as many as fit and exist, and returns
    /// how many were copied (0 when `offset` is exactly the body length).
    #[inline(always)]
    pub fn read_body<F: Frame>(
        &self,
        frame: &F,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<usize, BodyError> {
        if offset > self.body_len {
            return Err(BodyError::OutOfRange);
        }
        let available = self.body_len - offset;
        let n = if dst.len() < available {
            dst.len()
        } else {
            available
        };
        let Some(dst) = dst.get_mut(..n) else {
            return Err(BodyError::OutOfRange);
        };
        if n == 0 {
            return Ok(0);
        }
        frame
            .load_bytes((self.body_offset() + offset) as u32, dst)
            .map_err(BodyError::Helper)?;
        Ok(n)
    }

    /// Overwrites body bytes starting at `offset` with `src`, inside the current body (a body
    /// never grows here: use [`Request::reply`] for a new body). Returns how many bytes were
    /// written: all of `src`, or `OutOfRange` when it does not fit.
    #[inline(always)]
    pub fn write_body<F: Frame>(
        &self,
        frame: &mut F,
        offset: usize,
        src: &[u8],
    ) -> Result<usize, BodyError> {
        if offset > self.body_len || src.len() > self.body_len - offset {
            return Err(BodyError::OutOfRange);
        }
        if src.is_empty() {
            return Ok(0);
        }
        frame
            .store_bytes((self.body_offset() + offset) as u32, src)
            .map_err(BodyError::Helper)?;
        Ok(src.len())
    }

    /// Turns the request into its response keeping the body that is in the packet now (as
    /// edited with [`Request::write_body`]): an echo costs no copy. Lengths and checksums are
    /// fixed as in [`Request::reply`]; Ethernet padding is dropped.
    #[inline(always)]
    pub fn reply_in_place<F: Frame>(&self, frame: &mut F, status: Status) -> Verdict {
        self.reply_in_place_truncated(frame, status, self.body_len)
    }

    /// As [`Request::reply_in_place`], keeping only the first `body_len` bytes of the body now
    /// in the packet: a lambda that writes a shorter answer over its request (the grayscaler
    /// turns 3 bytes per pixel into 1) shrinks the packet instead of copying. A `body_len`
    /// past the request body is answered `TOO_LARGE` with an empty body.
    #[inline(always)]
    pub fn reply_in_place_truncated<F: Frame>(
        &self,
        frame: &mut F,
        status: Status,
        body_len: usize,
    ) -> Verdict {
        // One rewrite call site: each one is a full inlined copy of the header and checksum code.
        let (status, body_len) = if body_len <= self.body_len
            && body_len <= MAX_BODY
            && self.resize_body(frame, body_len).is_ok()
        {
            (status, body_len)
        } else {
            self.drop_body(frame);
            (Status::TooLarge, 0)
        };
        // As in `stats::serve_counted`: through the frame in the NIC build only.
        #[cfg(feature = "nic")]
        let finished = frame.finish_reply(self, status, body_len);
        #[cfg(not(feature = "nic"))]
        let finished = self.rewrite_headers(frame, status, body_len);
        match finished {
            Some(()) => Verdict::Reply,
            None => Verdict::Aborted,
        }
    }

    /// Turns the request into its response in place and returns [`Verdict::Reply`].
    ///
    /// Swaps MAC and IP addresses and UDP ports, resets TTL/hop limit, sets RESPONSE and
    /// `status` in the λ header (ids and fragment fields are kept), makes `body` the new body
    /// (growing or shrinking the packet with `bpf_xdp_adjust_tail`, dropping any Ethernet
    /// padding), fixes the IP and UDP lengths, updates the IPv4 header checksum and computes a
    /// full UDP checksum.
    ///
    /// A body longer than [`MAX_BODY`], or one the driver has no tailroom for, is answered with
    /// `TOO_LARGE` and an empty body instead. If the packet cannot be rewritten at all the result
    /// is [`Verdict::Aborted`].
    #[inline(always)]
    pub fn reply<F: Frame>(&self, frame: &mut F, status: Status, body: &[u8]) -> Verdict {
        let len = body.len();
        let (status, body_len) = if len <= MAX_BODY && self.resize_body(frame, len).is_ok() {
            // The body is stored here, on the path where it fits, rather than after the two
            // outcomes meet: there `body` would be either the caller's pointer or an empty
            // slice's, which no verifier can tell apart.
            if len > 0 && frame.store_bytes(self.body_offset() as u32, body).is_err() {
                return Verdict::Aborted;
            }
            (status, len)
        } else {
            self.drop_body(frame);
            (Status::TooLarge, 0)
        };
        // As in `stats::serve_counted`: through the frame in the NIC build only.
        #[cfg(feature = "nic")]
        let finished = frame.finish_reply(self, status, body_len);
        #[cfg(not(feature = "nic"))]
        let finished = self.rewrite_headers(frame, status, body_len);
        match finished {
            Some(()) => Verdict::Reply,
            None => Verdict::Aborted,
        }
    }

    /// Shrinks the packet to the headers (the request had them, so this never grows it; a
    /// failure leaves the packet as it was, and the headers still describe an empty body).
    #[inline(always)]
    fn drop_body<F: Frame>(&self, frame: &mut F) {
        let current = (frame.data_end() - frame.data()) as i64;
        let delta = self.body_offset() as i64 - current;
        if delta < 0 {
            let _ = frame.adjust_tail(delta as i32);
        }
    }

    #[inline(always)]
    fn resize_body<F: Frame>(&self, frame: &mut F, body_len: usize) -> Result<(), HelperError> {
        let current = (frame.data_end() - frame.data()) as i64;
        let wanted = (self.body_offset() + body_len) as i64;
        let delta = wanted - current;
        if delta == 0 {
            return Ok(());
        }
        match frame.adjust_tail(delta as i32) {
            Ok(()) => Ok(()),
            Err(error) if delta < 0 => Err(error),
            // Some drivers hand XDP a frame sized to fit, with no tailroom (veth in native mode
            // does); the headroom XDP guarantees (256 bytes) can still grow the packet.
            Err(_) => self.grow_at_head(frame, delta as i32),
        }
    }

    /// Grows the packet by `delta` bytes at its start and moves the headers to the new start,
    /// so the body area behind them is `delta` bytes longer.
    #[inline(always)]
    fn grow_at_head<F: Frame>(&self, frame: &mut F, delta: i32) -> Result<(), HelperError> {
        // Zeroed as words: a byte array would be cleared by a 106-iteration byte loop.
        let mut words = [0u64; MAX_HEADERS_LEN.div_ceil(8)];
        // SAFETY: the u64 array covers at least MAX_HEADERS_LEN initialised bytes.
        let saved: &mut [u8; MAX_HEADERS_LEN] = unsafe { &mut *words.as_mut_ptr().cast() };
        let Some(headers) = saved.get_mut(..self.body_offset()) else {
            return Err(HelperError(-22));
        };
        frame.load_bytes(0, headers)?;
        frame.adjust_head(-delta)?;
        frame.store_bytes(0, headers)
    }

    /// Turns the headers into the response's for a body of `body_len` bytes that is already in
    /// place, and computes the checksums.
    #[inline(always)]
    pub(crate) fn rewrite_headers<F: Frame>(
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
            // Ethernet: swap destination and source MAC.
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
        let check = self.udp_checksum(frame, udp_len)?;
        // SAFETY: checked against `data_end` by `write_at`.
        unsafe { write_at(frame.data() + self.udp_offset + 6, frame.data_end(), check) }
    }

    /// The UDP checksum over the pseudo-header and the whole datagram (whose checksum field is
    /// zero), in memory byte order, ready to store.
    #[inline(always)]
    fn udp_checksum<F: Frame>(&self, frame: &F, udp_len: u16) -> Option<u16> {
        udp_checksum(frame, self.ip, self.udp_offset, udp_len)
    }
}

/// The partial sum of `len` packet bytes (a multiple of 4, at most [`CSUM_CHUNK`]) at frame
/// offset `offset`, read in place after a constant-size bounds check. `None`: past the end.
#[inline(always)]
fn csum_packet<F: Frame>(frame: &F, offset: usize, len: usize) -> Option<u32> {
    let at = frame.data() + offset;
    if at + len > frame.data_end() {
        return None;
    }
    frame.csum_partial(at, len as u32).ok()
}

/// The UDP checksum over the pseudo-header and the whole datagram of `udp_len` bytes at
/// `udp_offset` (whose checksum field must be zero), in memory byte order, ready to store.
/// For lambdas that build a packet of their own (the memcached client); replies get theirs
/// from [`Request::reply`].
#[inline(always)]
pub fn udp_checksum<F: Frame>(
    frame: &F,
    ip_version: IpVersion,
    udp_offset: usize,
    udp_len: u16,
) -> Option<u16> {
    let data = frame.data();
    let end = frame.data_end();
    let ip = data + ETH_LEN;
    // Pseudo-header: both addresses (their order does not change the sum), protocol, length.
    let mut sum = u64::from(u16::from_ne_bytes([0, IPPROTO_UDP])) + u64::from(udp_len.to_be());
    // SAFETY: `read_at` checks against `end`.
    unsafe {
        match ip_version {
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
    // The datagram, `udp_len` bytes: whole chunks through the helper straight from the packet,
    // then 128, 64 and 32 bytes the same way as the length's bits say, then the last bytes
    // (fewer than 32) copied into a zeroed buffer and summed there, padded to whole words (a
    // zero pad byte is what the checksum adds for an odd length). Every branch depends on
    // `udp_len` alone, not on where the packet ends: when the body length is a constant the
    // kernel verifier walks one path, and otherwise one per chunk count and partial chunk,
    // instead of one per 4-byte word of the datagram. Sizes are masked from `udp_len` itself
    // so that the verifier sees their bounds whatever the compiler makes of the arithmetic.
    let len = usize::from(udp_len);
    if len >= MAX_CSUM_CHUNKS * CSUM_CHUNK {
        // Longer than any datagram a lambda sends.
        return None;
    }
    let chunks = len / CSUM_CHUNK;
    let mut offset = udp_offset;
    for i in 0..MAX_CSUM_CHUNKS {
        if i >= chunks {
            break;
        }
        sum += u64::from(csum_packet(frame, offset, CSUM_CHUNK)?);
        offset += CSUM_CHUNK;
    }
    if len & 128 != 0 {
        sum += u64::from(csum_packet(frame, offset, 128)?);
        offset += 128;
    }
    if len & 64 != 0 {
        sum += u64::from(csum_packet(frame, offset, 64)?);
        offset += 64;
    }
    if len & 32 != 0 {
        sum += u64::from(csum_packet(frame, offset, 32)?);
        offset += 32;
    }
    let tail = len & 31;
    if tail > 0 {
        // 40 bytes: the tail rounded up to whole words (at most 34 as the verifier bounds it).
        // Small, as it shares the 512-byte stack with the lambda's own buffers.
        let mut words = [0u64; 5];
        // SAFETY: the u64 array is 40 initialised bytes.
        let buf: &mut [u8; 40] = unsafe { &mut *words.as_mut_ptr().cast() };
        frame.load_bytes(offset as u32, buf.get_mut(..tail)?).ok()?;
        let padded = (tail + 3) & !3;
        sum += u64::from(frame.csum_bytes(buf.get(..padded)?).ok()?);
    }
    let check = !fold(sum);
    // A computed zero is sent as all ones: zero means "no checksum" in UDP over IPv4 and is
    // forbidden over IPv6.
    Some(if check == 0 { 0xffff } else { check })
}

mod filled;

#[cfg(test)]
pub(crate) mod tests;
