//! The memcached lambda's NIC build (`memcached-nic.o`, feature `nic`): the same λ protocol
//! and the same answers, in the shape the NFP offload takes — array and hash maps of at most
//! 64-byte elements, no per-CPU map used as memory, no direct store into a map value, and
//! only the helpers the NIC has (map lookup/update/delete, `bpf_xdp_adjust_head`/`_tail`).
//!
//! What it gives up against the normal build, and how it does the rest:
//!
//! - **No hot-key cache**: every GET goes to memcached (`CONFIG.flags` bit 0 is ignored; the
//!   cache's 1,664-byte values could not be held anyway).
//! - **No scratch map**: the request is parsed and rebuilt in the packet itself. A GET's
//!   `get <key>` moves 2 bytes towards the packet's start to make room for its `\r\n`; a SET's
//!   `set <key>` moves 12 bytes and its value 2, with ` 0 0 NNNN\r\n` (the byte count as four
//!   digits, which memcached reads like any decimal) written between them; the packet's start
//!   then moves past what the λ header left over (`bpf_xdp_adjust_head`). memcached's reply is
//!   turned around the same way: the value stays where it is and the packet's start moves to
//!   just before it, where the new headers are written.
//! - **Pending requests in a plain hash** of 40-byte elements, keyed by the memcached request
//!   id, with room for every id ([`IDS`]), so it is never full. The id comes from one shared
//!   counter advanced by an atomic add; two cores can read the same value, so each entry is
//!   inserted only where none is (`BPF_NOEXIST`) and the next id is tried when one is. The
//!   last of [`ID_TRIES`] tries overwrites: an entry left by a reply that never came is then
//!   reclaimed (the LRU map of the normal build evicts the oldest instead). A request that gets
//!   no id is answered UNAVAILABLE.
//! - **IPv4 without options only, refusals included**: a refusal (BAD_REQUEST, TOO_LARGE,
//!   UNAVAILABLE) is built as the answers are ([`refuse`]), with a fresh IPv4 header (IP id 0
//!   where the SDK's reply keeps the request's; λ header and body as the SDK's). A request over
//!   IPv6 or with IPv4 options, which the normal build answers UNAVAILABLE, is passed to the
//!   host: the SDK's reply code, which handles those, does not fit one NIC core beside this.
//! - `MC_COUNTS` and the SDK's counters stay per-CPU counter increments, which the NIC
//!   lowering turns into atomic adds on shared arrays.
//!
//! The shape of the code is the verifiers' as much as the NIC's: the request's checks are one
//! subprogram ([`decide`]) answering one number, so that the many ways a request is refused
//! meet in one state; every packet built ends in [`emit`] (headers, then one checksum loop);
//! lengths a parser stopped at go through [`forget`]; bytes are read through small
//! subprograms ([`text_byte`], [`text_word_at`]) because each read is a bounds check, and
//! the program must fit 2,800 slots (README, **The memcached NIC build**, has the figures).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray};
use aya_ebpf::{macros::map, macros::xdp, programs::XdpContext};
use lambda_ebpf::frame::{Frame, read_at, write_at};
use lambda_ebpf::inplace::{MAX_OFFSET, forget, move_front, read_byte, udp4_checksum};
use lambda_ebpf::wire::{FLAG_RESPONSE, HEADER_LEN};
use lambda_ebpf::xdp::{XdpFrame, record, serve};
use lambda_ebpf::{IpVersion, LambdaHeader, MAX_BODY, Request, Status, Verdict};
use workloads::memcached::{
    self, Command, FRAME_HEADER_LEN, FrameHeader, KEY_OFFSET, Parsed, Reply, Text,
};

use super::common::*;

/// memcached request ids handed out: 14 bits, and `PENDING` has room for each.
const IDS: u32 = 1 << 14;
/// Ids tried for one request before it is answered UNAVAILABLE; the last try overwrites.
const ID_TRIES: u32 = 4;
/// A SET's ` 0 0 NNNN\r\n`: the byte count as four digits (a value is at most 1,400 bytes).
const SET_TAIL: &[u8; 5] = b" 0 0 ";
const SET_TAIL_LEN: usize = SET_TAIL.len() + COUNT_DIGITS + 2;
const COUNT_DIGITS: usize = 4;
/// Where a GET's `get <key>` goes: 2 bytes before the λ body, room for its `\r\n`.
const GET_TEXT_AT: usize = BODY_AT - 2;
/// Where a SET's `set <key>` goes: its value moves 2 bytes forward, and ` 0 0 NNNN\r\n`
/// replaces the space in front of it.
const SET_TEXT_AT: usize = BODY_AT - 2 - (SET_TAIL_LEN - 1);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// Who asked, by memcached request id (see the module's notes).
#[map]
static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(IDS, 0);
/// Index 0: the next memcached request id (its low 14 bits), advanced by atomic adds.
#[map]
static NEXT_ID: Array<u64> = Array::with_max_entries(1, 0);
/// Per CPU: requests forwarded, replies answered, replies matching no pending request,
/// malformed replies (and two slots the normal build's cache uses, always 0 here).
#[map]
static MC_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_SLOTS, 0);

#[xdp]
pub fn memcached(ctx: XdpContext) -> u32 {
    let mut frame = XdpFrame::new(&ctx);
    if let Some((verdict, status)) = from_server(&mut frame) {
        record(verdict, status);
        return verdict.xdp_action();
    }
    serve(&ctx, handle)
}

#[inline(never)]
fn count(slot: u32) {
    if let Some(n) = MC_COUNTS.get_ptr_mut(slot) {
        // SAFETY: this CPU's own copy (on the NIC, the lowering makes this an atomic add).
        unsafe { *n += 1 };
    }
}

/// Text in the packet: the `len` bytes at address `at`, which run to the packet's end
/// ([`PacketText::rest`] makes it so), each read after its own bounds check against that end.
/// That one check is also the check against the text's length: half the branches the
/// verifiers walk per byte read.
#[derive(Clone, Copy)]
struct PacketText {
    at: usize,
    end: usize,
    len: usize,
}

impl PacketText {
    /// The `len` bytes at packet offset `offset` (which lie in the packet), after the packet
    /// is cut to end with them (dropping Ethernet padding, if any).
    #[inline(always)]
    fn rest(frame: &mut XdpFrame<'_>, offset: usize, len: usize) -> Option<PacketText> {
        let surplus = (frame.data_end() - frame.data()) as i64 - (offset + len) as i64;
        if surplus < 0 {
            return None;
        }
        // Also when there is nothing to cut: one path on, not two (one with the packet's
        // pointers invalidated by the helper, one without) for the verifiers to walk apart.
        frame.adjust_tail(-(surplus as i32)).ok()?;
        Some(PacketText {
            at: frame.data() + offset,
            end: frame.data_end(),
            len,
        })
    }
}

impl Text for PacketText {
    #[inline(always)]
    fn len(self) -> usize {
        self.len
    }
    #[inline(always)]
    fn at(self, i: usize) -> Option<u8> {
        let byte = text_byte(self.at, self.end, i);
        if byte < 0 { None } else { Some(byte as u8) }
    }
    /// Eight bytes at a time, each word compared with a constant the compiler packs from
    /// `bytes`: a byte at a time, the classifier's 80-odd constant bytes were as many calls.
    #[inline(always)]
    fn has_at<const N: usize>(self, at: usize, bytes: &[u8; N]) -> bool {
        for chunk in 0..N.div_ceil(8) {
            let mut want = 0u64;
            let mut n = 0;
            for i in 0..8 {
                if let Some(&b) = bytes.get(8 * chunk + i) {
                    want |= u64::from(b) << (8 * i);
                    n += 1;
                }
            }
            if text_word(self, at + 8 * chunk, n) != Some(want) {
                return false;
            }
        }
        true
    }
    /// Only the whole text: the reads are bounded by the packet's end, which is the text's.
    /// (The classifier asks for no other prefix: it passes the length through `forget`.)
    #[inline(always)]
    fn prefix(self, len: usize) -> Option<PacketText> {
        if len != self.len {
            return None;
        }
        Some(self)
    }
}

/// Byte `i` of the text at packet address `at`, which runs to `end`, or -1 past it.
///
/// A subprogram: the parsers read a byte in some hundred places (every prefix they compare
/// is unrolled), and a call is a few instructions where the bounds checks are a dozen.
#[inline(never)]
fn text_byte(at: usize, end: usize, i: usize) -> i32 {
    // Re-read and bounded by a constant right here, for the verifiers: the compiler would
    // otherwise check one copy of `i` and add another to the address.
    // SAFETY: a read of a local.
    let i = unsafe { core::ptr::read_volatile(&i) };
    if i >= TEXT_MAX {
        return -1;
    }
    // SAFETY: `read_byte` checks against `end`.
    match unsafe { read_byte(at + i, end) } {
        Some(byte) => i32::from(byte),
        None => -1,
    }
}

/// The `n` (at most 8) bytes of `text` at `i`, packed little-endian; `None` past its end.
#[inline(always)]
fn text_word(text: PacketText, i: usize, n: usize) -> Option<u64> {
    let word = text_word_at(text.at, text.end, i, n);
    if word < 0 { None } else { Some(word as u64) }
}

/// [`text_word`] as a subprogram (see [`text_byte`]): the word, or -1. The bytes are 7-bit
/// (the constants compared are ASCII), so a word never reads as negative; a byte with the
/// top bit set in the 8th place makes it negative, which compares unequal as it should.
#[inline(never)]
fn text_word_at(at: usize, end: usize, i: usize, n: usize) -> i64 {
    // SAFETY: reads of locals (re-read so the checks below bound the copies used).
    let (i, n) = unsafe { (core::ptr::read_volatile(&i), core::ptr::read_volatile(&n)) };
    if i >= TEXT_MAX || n > 8 {
        return -1;
    }
    let mut word = 0u64;
    // Counted up to `n` itself: a loop to the constant 8 would be unrolled, eight copies of
    // its body in the program.
    for j in 0..n {
        // SAFETY: `read_byte` checks against `end`.
        match unsafe { read_byte(at + i + j, end) } {
            Some(byte) => word |= u64::from(byte) << (8 * j),
            None => return -1,
        }
    }
    word as i64
}

/// A request [`decide`] found to forward: the parse, forgotten, and its memcached id. Plain
/// numbers, in the caller's frame.
#[repr(C)]
struct Job {
    key_len: usize,
    value_len: usize,
    /// 1 for a SET, 0 for a GET.
    set: u32,
    id: u32,
}

/// The start of a packet this lambda builds: Ethernet, IPv4 and UDP headers, then a memcached
/// frame header (8 bytes) or a λ header (24). One block so that [`emit`] writes it with one
/// copy of a length above what the SDK stores in line.
#[repr(C)]
struct Block {
    headers: Headers,
    after: [u8; HEADER_LEN],
}

impl Block {
    /// All zero, written where it lies (built field by field, it was built aside and then
    /// copied a byte at a time).
    #[inline(always)]
    fn zeroed() -> Block {
        // SAFETY: plain bytes: all zero is a valid `Block`.
        unsafe { core::mem::zeroed() }
    }

    #[inline(always)]
    fn as_bytes(&self) -> &[u8; BODY_AT] {
        const { assert!(core::mem::size_of::<Block>() == BODY_AT) };
        // SAFETY: `Block` is plain bytes, exactly BODY_AT of them.
        unsafe { &*(self as *const Block).cast() }
    }

    #[inline(always)]
    fn as_bytes_mut(&mut self) -> &mut [u8; BODY_AT] {
        // SAFETY: as in `as_bytes`.
        unsafe { &mut *(self as *mut Block).cast() }
    }
}

/// What [`decide`] answers when the request is to be forwarded (every other answer is the
/// wire status of the refusal).
const FORWARD: u32 = 0xffff;

/// A λ request: refuse it at once, or forward it to memcached.
///
/// The checks are a subprogram of their own, [`decide`], that answers one number: the many
/// paths by which a request is refused (each with registers of other kinds) then meet in one
/// state before [`refuse`], and the verifiers walk the refusal once instead of once per path.
/// Not inlined: the SDK's `serve` calls its handler from two places.
#[inline(never)]
fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
    let mut job = Job {
        key_len: 0,
        value_len: 0,
        set: 0,
        id: 0,
    };
    let decided = decide(frame, request, &mut job);
    if decided != FORWARD {
        let status = Status::from_wire(decided as u16).unwrap_or(Status::Internal);
        return refuse(frame, request, status);
    }
    if forward(frame, &job) {
        count(COUNT_FORWARDED);
        return Verdict::Reply;
    }
    let _ = PENDING.remove(&job.id);
    // The packet was half rebuilt: it is no request anymore.
    Verdict::Aborted
}

/// Checks and parses the request and claims a memcached id for it: [`FORWARD`] with `job`
/// filled in, or the wire status to refuse it with.
#[inline(never)]
fn decide(frame: &mut XdpFrame<'_>, request: &Request, job: &mut Job) -> u32 {
    let parsed = match check_request(frame, request) {
        Ok(parsed) => parsed,
        Err(status) => return u32::from(status.to_wire()),
    };
    let claimed = claim(frame, request);
    if claimed >> 16 != 0 {
        return u32::from(Status::Unavailable.to_wire());
    }
    job.key_len = parsed.key_len;
    job.value_len = parsed.value_len;
    job.set = u32::from(parsed.command == Command::Set);
    job.id = claimed;
    FORWARD
}

/// Answers the request with `status` and no body: the response's headers are built as the
/// replies from memcached are (a fresh IPv4 header, with the SDK's reply the IP id and TOS
/// would be kept; the λ header and body are the same), through [`emit`], whose one copy of
/// the checksum code serves all three. A request over IPv6 or with IPv4 options, which the
/// 20-byte header here cannot answer, is passed to the host (the normal build answers it
/// UNAVAILABLE with the SDK's reply, whose code would not fit the NIC's budget beside this).
#[inline(never)]
fn refuse(frame: &mut XdpFrame<'_>, request: &Request, status: Status) -> Verdict {
    if request.ip_version() != IpVersion::V4 || request.body_offset() != BODY_AT {
        return Verdict::Pass;
    }
    // Headers and λ header in one copy.
    let mut block = Block::zeroed();
    if frame.load_bytes(0, block.as_bytes_mut()).is_err() {
        return Verdict::Aborted;
    }
    let Block {
        headers,
        after: lambda,
    } = &mut block;
    let (our_mac, our_ip, our_port) = headers.destination();
    let (mac, ip, port) = headers.source();
    // What `LambdaHeader::make_response` does: RESPONSE set, the status, reserved cleared.
    lambda[3] |= FLAG_RESPONSE;
    lambda[20..22].copy_from_slice(&status.to_wire().to_be_bytes());
    lambda[22..24].copy_from_slice(&[0, 0]);
    let udp_len = UDP_LEN + HEADER_LEN;
    headers.fill((mac, our_mac), (our_ip, ip), (our_port, port), udp_len);
    if resize_to(frame, BODY_AT).is_none() || !emit(frame, &block, HEADER_LEN, udp_len) {
        return Verdict::Aborted;
    }
    Verdict::Reply
}

/// Checks the request and parses its body where it lies, in the packet.
#[inline(always)]
fn check_request(frame: &mut XdpFrame<'_>, request: &Request) -> Result<Parsed, Status> {
    let config = CONFIG.get(0).ok_or(Status::Internal)?;
    if config.server_port == [0, 0] {
        return Err(Status::Unavailable);
    }
    if request.ip_version() != IpVersion::V4 || request.body_offset() != BODY_AT {
        return Err(Status::Unavailable);
    }
    if request.frag_count() != 1 {
        return Err(Status::BadRequest);
    }
    let body_len = request.body_len();
    if body_len > TEXT_MAX {
        return Err(Status::TooLarge);
    }
    let body = PacketText::rest(frame, BODY_AT, body_len).ok_or(Status::Internal)?;
    let parsed = memcached::parse_request_in(body).map_err(|e| e.status())?;
    // Each key length the parser can stop at would be a verifier state walking all the code
    // that follows: forget them; `forward` checks the bounds again.
    Ok(Parsed {
        command: parsed.command,
        key_len: forget(parsed.key_len),
        value_len: forget(parsed.value_len),
    })
}

/// Remembers who asked under a fresh memcached request id (see the module's notes): the id,
/// or 1 << 16 when none could be had or the request could not be read.
///
/// Not inlined, and its answer one number: its stack frame is then apart from the paths that
/// follow it, and `r0` a scalar.
#[inline(never)]
fn claim(frame: &XdpFrame<'_>, request: &Request) -> u32 {
    // Through memory: otherwise the compiler hands this function the context's 32-bit `data`
    // and `data_end` instead of the frame, widened with shifts, which no verifier takes for
    // packet pointers.
    // SAFETY: a read of a local.
    let frame = unsafe { core::ptr::read_volatile(&frame) };
    match claim_in(frame, request) {
        Ok(id) => u32::from(id),
        Err(()) => 1 << 16,
    }
}

#[inline(always)]
fn claim_in(frame: &XdpFrame<'_>, request: &Request) -> Result<u16, ()> {
    // The request's headers in one copy (a copy is a loop the verifiers walk per call site).
    let mut headers = Headers::zeroed();
    frame
        .load_bytes(0, headers.as_bytes_mut())
        .map_err(|_| ())?;
    let (client_mac, client_ip, client_port) = headers.source();
    let pending = Pending {
        client_mac,
        client_port,
        client_ip,
        lambda_id: request.lambda_id(),
        request_id: request.request_id(),
        fill_cache: 0,
        _reserved: 0,
    };
    let next = NEXT_ID.get_ptr_mut(0).ok_or(())?;
    // The count read volatile, so that the loop stays one copy of its body.
    let tries = ID_TRIES;
    // SAFETY: a read of a local.
    let tries = unsafe { core::ptr::read_volatile(&tries) };
    for attempt in 0..tries {
        // SAFETY: the map value is 8-byte aligned and alive while the program runs; every
        // core touches it only through atomic adds and reads.
        let n = unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(next, 1);
            core::ptr::read_volatile(next)
        };
        let id = (n as u32) % IDS;
        let flags = if attempt + 1 < tries {
            BPF_NOEXIST
        } else {
            BPF_ANY
        };
        if PENDING.insert(&id, &pending, u64::from(flags)).is_ok() {
            return Ok(id as u16);
        }
    }
    Err(())
}

/// Rebuilds the request, in place, into the memcached request (see the module's notes).
///
/// Not inlined: its stack frame is then apart from the SDK's reply code, which the refusals
/// take; together they would exceed 512 bytes.
#[inline(never)]
fn forward(frame: &mut XdpFrame<'_>, job: &Job) -> bool {
    forward_in(frame, job).is_some()
}

#[inline(always)]
fn forward_in(frame: &mut XdpFrame<'_>, job: &Job) -> Option<()> {
    let config = CONFIG.get(0)?;
    let id = job.id as u16;
    // The request's headers, for the addresses it came to.
    let mut block = Block::zeroed();
    frame.load_bytes(0, block.headers.as_bytes_mut()).ok()?;
    let (mac, ip, port) = block.headers.destination();
    // SAFETY: reads of the caller's locals, volatile so that the checks below bound the very
    // copies used.
    let (key_len, value_len) = unsafe {
        (
            core::ptr::read_volatile(&job.key_len),
            core::ptr::read_volatile(&job.value_len),
        )
    };
    if key_len > memcached::MAX_KEY || value_len > MAX_BODY {
        return None;
    }
    let head = KEY_OFFSET + key_len;
    let data = frame.data();
    let end = frame.data_end();
    let (text_at, text_len) = match job.set {
        0 => {
            // SAFETY: `move_front` checks every access against `end`.
            unsafe { move_front(data, end, BODY_AT, GET_TEXT_AT, head) }.ok()?;
            put(frame, GET_TEXT_AT + head, *b"\r\n")?;
            (GET_TEXT_AT, head + 2)
        }
        _ => {
            let value_at = BODY_AT + head + 1;
            // SAFETY: as above.
            unsafe { move_front(data, end, BODY_AT, SET_TEXT_AT, head) }.ok()?;
            let mut tail = [0u8; SET_TAIL_LEN];
            tail[..SET_TAIL.len()].copy_from_slice(SET_TAIL);
            tail[SET_TAIL.len()..SET_TAIL.len() + COUNT_DIGITS]
                .copy_from_slice(&count_digits(value_len).to_le_bytes());
            tail[SET_TAIL_LEN - 2..].copy_from_slice(b"\r\n");
            put(frame, SET_TEXT_AT + head, tail)?;
            // SAFETY: as above.
            unsafe { move_front(data, end, value_at, value_at - 2, value_len) }.ok()?;
            put(frame, value_at - 2 + value_len, *b"\r\n")?;
            (SET_TEXT_AT, head + SET_TAIL_LEN + value_len + 2)
        }
    };
    let udp_len = UDP_LEN + FRAME_HEADER_LEN + text_len;
    if udp_len > MAX_UDP {
        return None;
    }
    // The text stays where it is: the packet starts its headers' length before it.
    frame
        .adjust_head((text_at - (MC_AT + FRAME_HEADER_LEN)) as i32)
        .ok()?;
    resize_to(frame, UDP_AT + udp_len)?;
    block.headers.fill(
        (config.server_mac, mac),
        (ip, config.server_ip),
        (port, config.server_port),
        udp_len,
    );
    block.after[..FRAME_HEADER_LEN].copy_from_slice(&FrameHeader::request(id).to_bytes());
    emit(frame, &block, FRAME_HEADER_LEN, udp_len).then_some(())
}

/// Writes the headers of `block` and the first `after_len` bytes after them (a memcached
/// frame header or a λ header) at the start of the packet, whose UDP datagram is `udp_len`
/// bytes, and its UDP checksum (`lambda_ebpf::inplace::udp4_checksum`): the end of every
/// packet built, one copy of the checksum code for all.
#[inline(never)]
fn emit(frame: &mut XdpFrame<'_>, block: &Block, after_len: usize, udp_len: usize) -> bool {
    // SAFETY: reads of locals (re-read so the checks below bound the copies used).
    let (after_len, udp_len) = unsafe {
        (
            core::ptr::read_volatile(&after_len),
            core::ptr::read_volatile(&udp_len),
        )
    };
    if after_len > HEADER_LEN || udp_len > MAX_UDP {
        return false;
    }
    if !block
        .as_bytes()
        .get(..MC_AT + after_len)
        .is_some_and(|bytes| frame.store_bytes(0, bytes).is_ok())
    {
        return false;
    }
    let data = frame.data();
    let end = frame.data_end();
    // SAFETY: `udp4_checksum` and `write_at` check against `end`.
    unsafe {
        let check = udp4_checksum(data + ETH_LEN + 12, data + UDP_AT, end, udp_len);
        check >= 0 && write_at(data + UDP_AT + 6, end, check as u16).is_some()
    }
}

/// Stores `bytes` at packet offset `at`, which is re-read volatile and bounded right here:
/// the compiler would otherwise bound one copy of it and add another, spilled before the
/// check, to the packet's address. One bounds check for the whole array, its bytes stored in
/// line.
#[inline(always)]
fn put<const N: usize>(frame: &mut XdpFrame<'_>, at: usize, bytes: [u8; N]) -> Option<()> {
    // SAFETY: a read of a local.
    let at = unsafe { core::ptr::read_volatile(&at) };
    if at > MAX_OFFSET {
        return None;
    }
    // SAFETY: `write_at` checks against `data_end`.
    unsafe { write_at(frame.data() + at, frame.data_end(), bytes) }
}

/// `n` (at most [`MAX_BODY`]) as four decimal digits, the first in the lowest byte, with the
/// samples' multiply-free division by 10 (see `decimal.rs`), in a loop counted to a volatile
/// 4 so that its body is in the program once.
#[inline(always)]
fn count_digits(n: usize) -> u32 {
    let mut n = n as u64;
    let mut digits = 0u32;
    let count = COUNT_DIGITS;
    // SAFETY: a read of a local.
    let count = unsafe { core::ptr::read_volatile(&count) };
    for _ in 0..count {
        let (q, r) = super::decimal::divmod10(n);
        digits = (digits << 8) | (u32::from(b'0') + r as u32);
        n = q;
    }
    digits
}

/// A packet from the configured server is memcached's reply: `Some(verdict, status of the
/// λ response sent)`. Anything else (`None`) goes on to the λ request path.
#[inline(always)]
fn from_server(frame: &mut XdpFrame<'_>) -> Option<(Verdict, Option<Status>)> {
    let config = CONFIG.get(0)?;
    if !is_from(frame, config)? {
        return None;
    }
    // `answer` hands its outcome back packed in one number: the verifiers want a subprogram's
    // `r0` to be a scalar on every path, and an aggregate would come back through memory.
    let packed = answer(frame);
    let verdict = match packed & 0xff {
        1 => Verdict::Drop,
        3 => Verdict::Reply,
        _ => Verdict::Aborted,
    };
    Some((verdict, Status::from_wire((packed >> 8) as u16)))
}

/// [`answer_in`] as a subprogram (its stack frame apart from the request path's), its
/// outcome packed as `action | wire status << 8`, with status 0xff when no response was sent.
#[inline(never)]
fn answer(frame: &mut XdpFrame<'_>) -> u32 {
    match answer_in(frame) {
        Ok((verdict, status)) => {
            let status = status.map_or(0xff, |s| u32::from(s.to_wire()));
            verdict.xdp_action() | status << 8
        }
        Err(()) => Verdict::Aborted.xdp_action() | 0xff << 8,
    }
}

/// Whether the packet is an unfragmented IPv4 UDP datagram without options from the server.
#[inline(always)]
fn is_from(frame: &XdpFrame<'_>, config: &Config) -> Option<bool> {
    let data = frame.data();
    let end = frame.data_end();
    // SAFETY (reads): `read_at` checks against `end`.
    let ethertype: [u8; 2] = unsafe { read_at(data + 12, end)? };
    let ip_head: [u8; 2] = unsafe { read_at(data + ETH_LEN, end)? };
    let frag: [u8; 2] = unsafe { read_at(data + ETH_LEN + 6, end)? };
    let proto: u8 = unsafe { read_at(data + ETH_LEN + 9, end)? };
    let src: [u8; 4] = unsafe { read_at(data + ETH_LEN + 12, end)? };
    let src_port: [u8; 2] = unsafe { read_at(data + UDP_AT, end)? };
    Some(
        ethertype == [0x08, 0x00]
            && ip_head[0] == 0x45
            && u16::from_be_bytes(frag) & 0x3fff == 0
            && proto == 17
            && src == config.server_ip
            && src_port == config.server_port,
    )
}

/// Turns memcached's reply into the λ response for whoever asked, in place.
#[inline(always)]
fn answer_in(frame: &mut XdpFrame<'_>) -> Result<(Verdict, Option<Status>), ()> {
    let data = frame.data();
    let end = frame.data_end();
    // SAFETY (reads): `read_at` checks against `end`.
    let udp_len: [u8; 2] = unsafe { read_at(data + UDP_AT + 4, end) }.ok_or(())?;
    let udp_len = usize::from(u16::from_be_bytes(udp_len));
    let mc: [u8; FRAME_HEADER_LEN] = unsafe { read_at(data + MC_AT, end) }.ok_or(())?;
    if udp_len < UDP_LEN + FRAME_HEADER_LEN || data + UDP_AT + udp_len > end {
        count(COUNT_MALFORMED);
        return Ok((Verdict::Drop, None));
    }
    let mc = FrameHeader::from_bytes(mc);
    let key = u32::from(mc.request_id);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
        count(COUNT_UNMATCHED);
        return Ok((Verdict::Drop, None));
    };
    let _ = PENDING.remove(&key);
    let macs: [[u8; 6]; 2] = unsafe { read_at(data, end) }.ok_or(())?;
    let dst: [u8; 4] = unsafe { read_at(data + ETH_LEN + 16, end) }.ok_or(())?;
    let dst_port: [u8; 2] = unsafe { read_at(data + UDP_AT + 2, end) }.ok_or(())?;

    let text_len = udp_len - UDP_LEN - FRAME_HEADER_LEN;
    let (status, value_at, value_len) = if mc.sequence != 0 || mc.count != 1 {
        // Split over several datagrams: the size rule keeps our own items out of this.
        count(COUNT_MALFORMED);
        (Status::TooLarge, 0, 0)
    } else if text_len > TEXT_MAX {
        (Status::TooLarge, 0, 0)
    } else {
        let text = PacketText::rest(frame, TEXT_AT, text_len).ok_or(())?;
        match memcached::classify_reply_in(text, forget) {
            Reply::Value { offset, len } if offset <= FROM_MAX => {
                if len > MAX_BODY {
                    (Status::TooLarge, 0, 0)
                } else {
                    (Status::Ok, offset, len)
                }
            }
            Reply::Value { .. } => (Status::Internal, 0, 0),
            reply => (reply.status(), 0, 0),
        }
    };
    // One verifier state per place the reply parser can stop is too many (as in `check_request`).
    let value_at = forget(value_at);
    let value_len = forget(value_len);
    if value_len > MAX_BODY || value_at > FROM_MAX {
        return Err(());
    }
    if value_len > 0 {
        // The value stays where it is: the packet starts the response's headers before it.
        frame
            .adjust_head((TEXT_AT + value_at) as i32 - BODY_AT as i32)
            .map_err(|_| ())?;
    }
    let udp_len = UDP_LEN + HEADER_LEN + value_len;
    resize_to(frame, UDP_AT + udp_len).ok_or(())?;
    let mut block = Block::zeroed();
    block.headers.fill(
        (pending.client_mac, macs[0]),
        (dst, pending.client_ip),
        (dst_port, pending.client_port),
        udp_len,
    );
    // Built where it goes: a copy would be 24 byte loads and stores.
    // SAFETY: `LambdaHeader` is plain bytes (alignment 1), exactly HEADER_LEN of them.
    let lambda = unsafe { &mut *block.after.as_mut_ptr().cast::<LambdaHeader>() };
    *lambda = LambdaHeader::request(pending.lambda_id, pending.request_id);
    lambda.make_response(status);
    if !emit(frame, &block, HEADER_LEN, udp_len) {
        return Err(());
    }
    count(COUNT_ANSWERED);
    Ok((Verdict::Reply, Some(status)))
}
