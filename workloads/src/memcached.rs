//! The memcached workload: a λ request body in memcached's own text form (`get <key>` or
//! `set <key> <value>`) becomes a memcached UDP request (the 8-byte frame header, then the
//! text protocol), and memcached's reply becomes the λ response.
//!
//! Everything here runs inside the lambda too: loops have constant bounds, slices are read
//! with `get`, and no `memcmp` is called (the BPF target has none), so the verifier can follow
//! it. Positions are returned rather than sub-slices so the lambda can copy straight between
//! its scratch buffer and the packet.

use lambda_ebpf::Status;

/// memcached's own UDP port.
pub const DEFAULT_PORT: u16 = 11211;
/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;
/// The memcached UDP frame header: request id, sequence number, datagram count, reserved.
pub const FRAME_HEADER_LEN: usize = 8;
/// The most bytes memcached puts in one UDP datagram (its `UDP_MAX_PAYLOAD_SIZE`, frame header
/// included); a longer reply would be split over several datagrams, which the lambda cannot
/// reassemble. A value whose `get` reply would not fit is refused with `TOO_LARGE`.
pub const MAX_DATAGRAM: usize = 1400;
/// Where the key starts in a λ body (`get ` and `set ` are both 4 bytes).
pub const KEY_OFFSET: usize = 4;
/// The longest `VALUE <key> <flags> <bytes>\r\n` line a reply can start with.
pub const MAX_VALUE_LINE: usize = 6 + MAX_KEY + 1 + 10 + 1 + 10 + 2;
/// The longest set tail (` 0 0 <bytes>\r\n`) [`set_tail`] writes.
pub const SET_TAIL_MAX: usize = 5 + 10 + 2;
/// What ends a `get` hit after the data.
pub const VALUE_END: &[u8; 7] = b"\r\nEND\r\n";

/// The two commands a λ body may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Get,
    Set,
}

/// A valid λ body: the key is at [`KEY_OFFSET`], a set's value at [`Parsed::value_offset`]
/// (to the end of the body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub command: Command,
    pub key_len: usize,
    pub value_len: usize,
}

impl Parsed {
    /// Where a set's value starts in the body.
    #[inline(always)]
    pub fn value_offset(&self) -> usize {
        KEY_OFFSET + self.key_len + 1
    }

    /// The length of the memcached text request: `get <key>\r\n`, or
    /// `set <key> 0 0 <bytes>\r\n<value>\r\n`.
    #[inline(always)]
    pub fn text_len(&self) -> usize {
        match self.command {
            Command::Get => KEY_OFFSET + self.key_len + 2,
            Command::Set => {
                KEY_OFFSET + self.key_len + 5 + digits(self.value_len) + 2 + self.value_len + 2
            }
        }
    }
}

/// Why a λ body is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not `get <key>` / `set <key> <value>` with a valid key.
    BadRequest,
    /// A value too large for the reply to fit one memcached datagram.
    TooLarge,
}

impl ParseError {
    pub fn status(self) -> Status {
        match self {
            ParseError::BadRequest => Status::BadRequest,
            ParseError::TooLarge => Status::TooLarge,
        }
    }
}

/// Whether `b` may appear in a key: printable ASCII without space (memcached refuses control
/// characters and whitespace).
#[inline(always)]
pub fn is_key_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Decimal digits of `n` (at least 1). Bounded: 20 rounds cover any u64.
#[inline(always)]
pub fn digits(n: usize) -> usize {
    let mut n = n as u64;
    let mut d = 1;
    for _ in 0..19 {
        n /= 10;
        if n == 0 {
            break;
        }
        d += 1;
    }
    d
}

/// The size of memcached's UDP reply to a `get` hit on an item stored by this workload
/// (flags 0): frame header, `VALUE <key> 0 <bytes>\r\n`, the data, `\r\nEND\r\n`.
#[inline(always)]
pub fn hit_reply_len(key_len: usize, value_len: usize) -> usize {
    FRAME_HEADER_LEN + 6 + key_len + 3 + digits(value_len) + 2 + value_len + VALUE_END.len()
}

/// Whether a value of `value_len` bytes under a key of `key_len` bytes can be stored and read
/// back in single datagrams.
#[inline(always)]
pub fn value_fits(key_len: usize, value_len: usize) -> bool {
    hit_reply_len(key_len, value_len) <= MAX_DATAGRAM
}

/// The bytes the parsers below read: a slice, or, in a lambda built for the NIC (which has no
/// scratch map to copy a packet into), the packet itself, each byte read after its own bounds
/// check.
pub trait Text: Copy {
    /// How many bytes there are.
    fn len(self) -> usize;
    /// Whether there are none.
    #[inline(always)]
    fn is_empty(self) -> bool {
        self.len() == 0
    }
    /// The byte at `i`; `None` past the end.
    fn at(self, i: usize) -> Option<u8>;
    /// The first `len` bytes; `None` when there are fewer.
    fn prefix(self, len: usize) -> Option<Self>;
    /// Whether `bytes` is what the text holds at `at` (a text may compare several bytes at
    /// once; the reply classifier's prefixes and trailer are compared this way).
    #[inline(always)]
    fn has_at<const N: usize>(self, at: usize, bytes: &[u8; N]) -> bool {
        for (i, &b) in bytes.iter().enumerate() {
            if self.at(at + i) != Some(b) {
                return false;
            }
        }
        true
    }
}

impl Text for &[u8] {
    #[inline(always)]
    fn len(self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn at(self, i: usize) -> Option<u8> {
        self.get(i).copied()
    }
    #[inline(always)]
    fn prefix(self, len: usize) -> Option<Self> {
        self.get(..len)
    }
}

#[inline(always)]
fn starts_with_slice<const N: usize>(text: &[u8], prefix: &[u8; N]) -> bool {
    for (i, b) in prefix.iter().enumerate() {
        if text.get(i) != Some(b) {
            return false;
        }
    }
    true
}

/// Parses a λ body: `get <key>` or `set <key> <value>` (key: 1–[`MAX_KEY`] bytes of printable
/// ASCII without spaces; value: the rest of the body, possibly empty, any bytes).
#[inline(always)]
pub fn parse_request(body: &[u8]) -> Result<Parsed, ParseError> {
    parse_request_in::<&[u8]>(body)
}

/// [`parse_request`] over any [`Text`].
#[inline(always)]
pub fn parse_request_in<T: Text>(body: T) -> Result<Parsed, ParseError> {
    let command = if body.has_at(0, b"get ") {
        Command::Get
    } else if body.has_at(0, b"set ") {
        Command::Set
    } else {
        return Err(ParseError::BadRequest);
    };
    // The key ends at the end of the body (get) or at the first space (set).
    let mut key_len = MAX_KEY + 1;
    let mut ended_by_space = false;
    for i in 0..=MAX_KEY {
        match body.at(KEY_OFFSET + i) {
            None => {
                key_len = i;
                break;
            }
            Some(b' ') => {
                key_len = i;
                ended_by_space = true;
                break;
            }
            Some(b) if is_key_byte(b) => {}
            Some(_) => return Err(ParseError::BadRequest),
        }
    }
    if key_len == 0 || key_len > MAX_KEY {
        return Err(ParseError::BadRequest);
    }
    match command {
        Command::Get if ended_by_space => Err(ParseError::BadRequest),
        Command::Get => Ok(Parsed {
            command,
            key_len,
            value_len: 0,
        }),
        Command::Set if !ended_by_space => Err(ParseError::BadRequest),
        Command::Set => {
            let value_len = body.len() - (KEY_OFFSET + key_len + 1);
            if !value_fits(key_len, value_len) {
                return Err(ParseError::TooLarge);
            }
            Ok(Parsed {
                command,
                key_len,
                value_len,
            })
        }
    }
}

/// The memcached UDP frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub request_id: u16,
    pub sequence: u16,
    pub count: u16,
}

impl FrameHeader {
    /// The header of a request that fits one datagram.
    #[inline(always)]
    pub fn request(request_id: u16) -> FrameHeader {
        FrameHeader {
            request_id,
            sequence: 0,
            count: 1,
        }
    }

    #[inline(always)]
    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let [a, b] = self.request_id.to_be_bytes();
        let [c, d] = self.sequence.to_be_bytes();
        let [e, f] = self.count.to_be_bytes();
        [a, b, c, d, e, f, 0, 0]
    }

    #[inline(always)]
    pub fn from_bytes(bytes: [u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            request_id: u16::from_be_bytes([bytes[0], bytes[1]]),
            sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
            count: u16::from_be_bytes([bytes[4], bytes[5]]),
        }
    }
}

/// Writes a set's ` 0 0 <bytes>\r\n` (flags 0, no expiry) into `out` and returns its length,
/// or `None` when `out` is shorter than [`SET_TAIL_MAX`].
#[inline(always)]
pub fn set_tail(value_len: usize, out: &mut [u8]) -> Option<usize> {
    if out.len() < SET_TAIL_MAX {
        return None;
    }
    let d = digits(value_len);
    for (i, &b) in b" 0 0 ".iter().enumerate() {
        *out.get_mut(i)? = b;
    }
    let mut n = value_len;
    for i in 0..10 {
        if i >= d {
            break;
        }
        *out.get_mut(5 + d - 1 - i)? = b'0' + (n % 10) as u8;
        n /= 10;
    }
    *out.get_mut(5 + d)? = b'\r';
    *out.get_mut(5 + d + 1)? = b'\n';
    Some(5 + d + 2)
}

/// Writes the whole memcached UDP request for λ body `body` (frame header and text) into
/// `out` and returns its length. The native baseline's encoder; the lambda writes the same
/// pieces straight into the packet.
pub fn encode_request(request_id: u16, body: &[u8], out: &mut [u8]) -> Result<usize, ParseError> {
    let parsed = parse_request(body)?;
    let total = FRAME_HEADER_LEN + parsed.text_len();
    let out = out.get_mut(..total).ok_or(ParseError::TooLarge)?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&FrameHeader::request(request_id).to_bytes());
    let mut at = FRAME_HEADER_LEN;
    let head = KEY_OFFSET + parsed.key_len;
    out[at..at + head].copy_from_slice(&body[..head]);
    at += head;
    if parsed.command == Command::Set {
        let mut tail = [0u8; SET_TAIL_MAX];
        let n = set_tail(parsed.value_len, &mut tail).ok_or(ParseError::TooLarge)?;
        out[at..at + n].copy_from_slice(&tail[..n]);
        at += n;
        let value = &body[parsed.value_offset()..];
        out[at..at + value.len()].copy_from_slice(value);
        at += value.len();
    }
    out[at..at + 2].copy_from_slice(b"\r\n");
    Ok(at + 2)
}

/// What memcached answered, after the frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A `get` hit: the data is `len` bytes at `offset` in the reply text.
    Value { offset: usize, len: usize },
    /// `END` alone: a `get` miss.
    NotFound,
    /// `STORED`: a `set` done.
    Stored,
    /// Anything else, with the λ status it maps to.
    Error(Status),
}

impl Reply {
    /// The λ status of the response this reply becomes.
    #[inline(always)]
    pub fn status(self) -> Status {
        match self {
            Reply::Value { .. } | Reply::Stored => Status::Ok,
            Reply::NotFound => Status::NotFound,
            Reply::Error(status) => status,
        }
    }
}

/// Classifies memcached's reply text (the datagram after its frame header): `VALUE … END` →
/// the value, `END` → miss, `STORED` → done; `CLIENT_ERROR` → BAD_REQUEST, `SERVER_ERROR
/// object too large` → TOO_LARGE, another `SERVER_ERROR` → UNAVAILABLE, anything else (and a
/// malformed `VALUE`) → INTERNAL.
#[inline(always)]
pub fn classify_reply(text: &[u8]) -> Reply {
    classify_reply_via(text, |x| x)
}

/// [`classify_reply`], passing the position of the `VALUE` line's end and the text's length
/// through `forget` before the rest of the reply is read. A lambda passes a function that hides
/// values from the kernel verifier, which otherwise walks everything after the line scan once
/// per place the line can end (each also knows the text to be longer than that place). The
/// result is the same for any `forget` that returns its argument.
#[inline(always)]
pub fn classify_reply_via(text: &[u8], mut forget: impl FnMut(usize) -> usize) -> Reply {
    if text.len() == 5 && starts_with_slice(text, b"END\r\n") {
        return Reply::NotFound;
    }
    if text.len() == 8 && starts_with_slice(text, b"STORED\r\n") {
        return Reply::Stored;
    }
    if starts_with_slice(text, b"VALUE ") {
        let found = value_line_end(text).and_then(|newline| {
            let newline = forget(newline);
            let text = text.get(..forget(text.len()))?;
            value_reply(text, newline)
        });
        return match found {
            Some(reply) => reply,
            None => Reply::Error(Status::Internal),
        };
    }
    if starts_with_slice(text, b"CLIENT_ERROR") {
        Reply::Error(Status::BadRequest)
    } else if starts_with_slice(text, b"SERVER_ERROR object too large") {
        Reply::Error(Status::TooLarge)
    } else if starts_with_slice(text, b"SERVER_ERROR") {
        Reply::Error(Status::Unavailable)
    } else {
        Reply::Error(Status::Internal)
    }
}

/// Where the first line of `VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n` ends: the
/// position of its `\n`.
#[inline(always)]
fn value_line_end(text: &[u8]) -> Option<usize> {
    // The end of the first line. Only its position is carried out of the loop: in the kernel
    // verifier every distinct value live at a loop exit is one more path through what follows.
    let mut newline = 0;
    for i in 6..MAX_VALUE_LINE {
        match text.get(i) {
            Some(&b'\n') => {
                newline = i;
                break;
            }
            Some(_) => {}
            None => return None,
        }
    }
    if newline == 0 {
        return None;
    }
    Some(newline)
}

/// The data's position in `VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n` whose first line
/// ends at `newline`, checked against the byte count and the trailer.
#[inline(always)]
fn value_reply(text: &[u8], newline: usize) -> Option<Reply> {
    // Bounded again: `newline` may come back from the lambda's `forget` as any number.
    if newline == 0 || newline >= MAX_VALUE_LINE || text.get(newline - 1) != Some(&b'\r') {
        return None;
    }
    // The byte count is the last field: digits backwards from the `\r` to a space. The index
    // wraps instead of stopping at 0, so the slice's own bounds check (which the verifiers see)
    // refuses it.
    let mut len = 0usize;
    let mut scale = 1usize;
    let mut saw_space = false;
    for i in 0..11 {
        // Re-read volatile: otherwise the compiler walks a pointer back from `text + newline`,
        // and with `newline` unknown to the verifier (see `classify_reply_via`) that pointer's
        // bounds are not the ones the checks below establish on `at`.
        // SAFETY: a read of a local.
        let at = unsafe { core::ptr::read_volatile(&newline.wrapping_sub(2 + i)) };
        // Implied by the bounds check below, but a constant bound is one every verifier uses.
        if at >= MAX_VALUE_LINE {
            return None;
        }
        match *text.get(at)? {
            b' ' if i > 0 => {
                saw_space = true;
                break;
            }
            b @ b'0'..=b'9' if i < 10 => {
                len += usize::from(b - b'0') * scale;
                scale *= 10;
            }
            _ => return None,
        }
    }
    if !saw_space {
        return None;
    }
    // One datagram holds at most MAX_DATAGRAM bytes; the constant bound also tells the
    // verifier how far the trailer check below can reach. Re-read volatile so the compiler
    // cannot hand the check and the accesses below different copies of `len`.
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len > MAX_DATAGRAM {
        return None;
    }
    let offset = newline + 1;
    if offset + len + VALUE_END.len() != text.len() {
        return None;
    }
    for (i, &b) in VALUE_END.iter().enumerate() {
        if text.get(offset + len + i) != Some(&b) {
            return None;
        }
    }
    Some(Reply::Value { offset, len })
}

/// [`classify_reply_via`] over any [`Text`] (the NIC lambda reads the reply in the packet).
///
/// A copy of the slice version and its two parts rather than their generic form: made
/// generic, the slice version compiles to different code in the normal memcached lambda,
/// whose object must not change. `tests::generic_and_slice_classifiers_agree` keeps the two
/// in step.
#[inline(always)]
pub fn classify_reply_in<T: Text>(text: T, mut forget: impl FnMut(usize) -> usize) -> Reply {
    if text.len() == 5 && text.has_at(0, b"END\r\n") {
        return Reply::NotFound;
    }
    if text.len() == 8 && text.has_at(0, b"STORED\r\n") {
        return Reply::Stored;
    }
    if text.has_at(0, b"VALUE ") {
        let found = value_line_end_in(text).and_then(|newline| {
            let newline = forget(newline);
            let text = text.prefix(forget(text.len()))?;
            value_reply_in(text, newline)
        });
        return match found {
            Some(reply) => reply,
            None => Reply::Error(Status::Internal),
        };
    }
    if text.has_at(0, b"CLIENT_ERROR") {
        Reply::Error(Status::BadRequest)
    } else if text.has_at(0, b"SERVER_ERROR") {
        // The prefix once: each comparison is code in the lambda.
        if text.has_at(12, b" object too large") {
            Reply::Error(Status::TooLarge)
        } else {
            Reply::Error(Status::Unavailable)
        }
    } else {
        Reply::Error(Status::Internal)
    }
}

/// Where the first line of `VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n` ends: the
/// position of its `\n`.
#[inline(always)]
fn value_line_end_in<T: Text>(text: T) -> Option<usize> {
    // The end of the first line. Only its position is carried out of the loop: in the kernel
    // verifier every distinct value live at a loop exit is one more path through what follows.
    let mut newline = 0;
    for i in 6..MAX_VALUE_LINE {
        match text.at(i) {
            Some(b'\n') => {
                newline = i;
                break;
            }
            Some(_) => {}
            None => return None,
        }
    }
    if newline == 0 {
        return None;
    }
    Some(newline)
}

/// The data's position in `VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n` whose first line
/// ends at `newline`, checked against the byte count and the trailer.
#[inline(always)]
fn value_reply_in<T: Text>(text: T, newline: usize) -> Option<Reply> {
    // Bounded again: `newline` may come back from the lambda's `forget` as any number.
    if newline == 0 || newline >= MAX_VALUE_LINE || text.at(newline - 1) != Some(b'\r') {
        return None;
    }
    // The byte count is the last field: digits backwards from the `\r` to a space. The index
    // wraps instead of stopping at 0, so the slice's own bounds check (which the verifiers see)
    // refuses it.
    let mut len = 0usize;
    let mut scale = 1usize;
    let mut saw_space = false;
    // Unlike the slice version, the count is not summed past six digits: a non-zero digit
    // there makes it too large for a datagram (refused below just the same), and the sums
    // and scales stay within 32 bits, the widest multiply the NFP has.
    let mut too_large = false;
    for i in 0..11 {
        // Re-read volatile: otherwise the compiler walks a pointer back from `text + newline`,
        // and with `newline` unknown to the verifier (see `classify_reply_via`) that pointer's
        // bounds are not the ones the checks below establish on `at`.
        // SAFETY: a read of a local.
        let at = unsafe { core::ptr::read_volatile(&newline.wrapping_sub(2 + i)) };
        // Implied by the bounds check below, but a constant bound is one every verifier uses.
        if at >= MAX_VALUE_LINE {
            return None;
        }
        match text.at(at)? {
            b' ' if i > 0 => {
                saw_space = true;
                break;
            }
            b @ b'0'..=b'9' if i < 10 => {
                if scale > 100_000 {
                    too_large |= b != b'0';
                } else {
                    len += usize::from(b - b'0') * scale;
                    scale *= 10;
                }
            }
            _ => return None,
        }
    }
    if !saw_space || too_large {
        return None;
    }
    // One datagram holds at most MAX_DATAGRAM bytes; the constant bound also tells the
    // verifier how far the trailer check below can reach. Re-read volatile so the compiler
    // cannot hand the check and the accesses below different copies of `len`.
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len > MAX_DATAGRAM {
        return None;
    }
    let offset = newline + 1;
    if offset + len + VALUE_END.len() != text.len() {
        return None;
    }
    if !text.has_at(offset + len, VALUE_END) {
        return None;
    }
    Some(Reply::Value { offset, len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn encode(id: u16, body: &[u8]) -> Result<Vec<u8>, ParseError> {
        let mut out = [0u8; 2048];
        let n = encode_request(id, body, &mut out)?;
        Ok(out[..n].to_vec())
    }

    #[test]
    fn gets_and_sets_become_text_requests() {
        assert_eq!(
            encode(0x0102, b"get foo").unwrap(),
            b"\x01\x02\0\0\0\x01\0\0get foo\r\n"
        );
        assert_eq!(
            encode(7, b"set foo hello world").unwrap(),
            b"\0\x07\0\0\0\x01\0\0set foo 0 0 11\r\nhello world\r\n"
        );
        // An empty value is a value.
        assert_eq!(
            encode(7, b"set k ").unwrap(),
            b"\0\x07\0\0\0\x01\0\0set k 0 0 0\r\n\r\n"
        );
        // The value is any bytes, spaces and line ends included.
        assert_eq!(
            &encode(7, b"set k a b\r\nc").unwrap()[8..],
            b"set k 0 0 6\r\na b\r\nc\r\n"
        );
        let p = parse_request(b"set key value").unwrap();
        assert_eq!(p.value_offset(), 8);
        assert_eq!(
            FRAME_HEADER_LEN + p.text_len(),
            encode(1, b"set key value").unwrap().len()
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let long_key = [b'k'; MAX_KEY + 1];
        let mut too_long = b"get ".to_vec();
        too_long.extend_from_slice(&long_key);
        let mut longest = b"get ".to_vec();
        longest.extend_from_slice(&long_key[..MAX_KEY]);
        assert!(parse_request(&longest).is_ok());
        for body in [
            &b""[..],
            b"get",
            b"get ",
            b"get a b",
            b"get a ",
            b"GET a",
            b"delete a",
            b"set a",
            b"set  a",
            b"set ",
            b"get \x01x",
            b"get caf\xc3\xa9",
            b"get a\tb",
            &too_long,
        ] {
            assert_eq!(
                parse_request(body),
                Err(ParseError::BadRequest),
                "{:?}",
                std::string::String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn values_too_large_for_one_datagram_are_refused() {
        // The largest value whose get reply fits 1400 bytes, for a 3-byte key.
        let fits = (0..MAX_DATAGRAM).rev().find(|&v| value_fits(3, v)).unwrap();
        assert_eq!(hit_reply_len(3, fits), MAX_DATAGRAM);
        let mut body = b"set abc ".to_vec();
        body.resize(body.len() + fits, b'v');
        assert!(parse_request(&body).is_ok());
        body.push(b'v');
        assert_eq!(parse_request(&body), Err(ParseError::TooLarge));
        assert_eq!(ParseError::TooLarge.status(), Status::TooLarge);
    }

    #[test]
    fn digits_and_set_tails() {
        for (n, d) in [
            (0, 1),
            (9, 1),
            (10, 2),
            (999, 3),
            (1000, 4),
            (usize::MAX, 20),
        ] {
            assert_eq!(digits(n), d, "{n}");
        }
        let mut out = [0u8; SET_TAIL_MAX];
        let n = set_tail(1234, &mut out).unwrap();
        assert_eq!(&out[..n], b" 0 0 1234\r\n");
        assert_eq!(set_tail(1, &mut [0u8; 4]), None);
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(classify_reply(b"END\r\n"), Reply::NotFound);
        assert_eq!(classify_reply(b"STORED\r\n"), Reply::Stored);
        let hit = b"VALUE foo 0 5\r\nhello\r\nEND\r\n";
        assert_eq!(classify_reply(hit), Reply::Value { offset: 15, len: 5 });
        // Any flags; data containing line ends; an empty value.
        let hit = b"VALUE k 4294967295 4\r\na\r\nb\r\nEND\r\n";
        assert_eq!(classify_reply(hit), Reply::Value { offset: 22, len: 4 });
        assert_eq!(
            classify_reply(b"VALUE k 0 0\r\n\r\nEND\r\n"),
            Reply::Value { offset: 13, len: 0 }
        );
        for (text, status) in [
            (&b"VALUE foo 0 6\r\nhello\r\nEND\r\n"[..], Status::Internal),
            (b"VALUE foo 0 5\r\nhello\r\nEN", Status::Internal),
            (b"VALUE foo 0 x\r\n", Status::Internal),
            (b"VALUE foo 0 5\n", Status::Internal),
            (b"ERROR\r\n", Status::Internal),
            (b"END\r\nEND\r\n", Status::Internal),
            (b"", Status::Internal),
            (b"CLIENT_ERROR bad data chunk\r\n", Status::BadRequest),
            (
                b"SERVER_ERROR object too large for cache\r\n",
                Status::TooLarge,
            ),
            (
                b"SERVER_ERROR out of memory storing object\r\n",
                Status::Unavailable,
            ),
        ] {
            assert_eq!(classify_reply(text), Reply::Error(status), "{text:?}");
        }
        assert_eq!(Reply::Stored.status(), Status::Ok);
        assert_eq!(Reply::NotFound.status(), Status::NotFound);
    }

    #[test]
    fn generic_and_slice_classifiers_agree() {
        let mut texts: Vec<Vec<u8>> = [
            &b"END\r\n"[..],
            b"STORED\r\n",
            b"VALUE foo 0 5\r\nhello\r\nEND\r\n",
            b"VALUE k 4294967295 4\r\na\r\nb\r\nEND\r\n",
            b"VALUE k 0 0\r\n\r\nEND\r\n",
            b"VALUE foo 0 6\r\nhello\r\nEND\r\n",
            b"VALUE foo 0 5\r\nhello\r\nEN",
            b"VALUE foo 0 x\r\n",
            b"VALUE foo 0 5\n",
            b"VALUE  0 5\r\nhello\r\nEND\r\n",
            b"VALUE foo 0 12345678901\r\n",
            b"VALUE foo 0 0000001400\r\n",
            b"VALUE foo 0 1000000005\r\nhello\r\nEND\r\n",
            b"VALUE foo 0 0000000005\r\nhello\r\nEND\r\n",
            b"VALUE foo 0 100005\r\nhello\r\nEND\r\n",
            b"ERROR\r\n",
            b"END\r\nEND\r\n",
            b"",
            b"CLIENT_ERROR bad data chunk\r\n",
            b"SERVER_ERROR object too large for cache\r\n",
            b"SERVER_ERROR out of memory storing object\r\n",
        ]
        .iter()
        .map(|t| t.to_vec())
        .collect();
        // Every prefix of a long hit, and the hit with each byte changed.
        let mut hit = b"VALUE ".to_vec();
        hit.extend_from_slice(&[b'k'; MAX_KEY]);
        hit.extend_from_slice(b" 7 300\r\n");
        hit.extend_from_slice(&[b'v'; 300]);
        hit.extend_from_slice(VALUE_END);
        for n in 0..=hit.len() {
            texts.push(hit[..n].to_vec());
        }
        for i in 0..hit.len() {
            let mut t = hit.clone();
            t[i] = if t[i] == b' ' { b'x' } else { b' ' };
            texts.push(t);
        }
        for text in &texts {
            assert_eq!(
                classify_reply_in(&text[..], |x| x),
                classify_reply(text),
                "{:?}",
                std::string::String::from_utf8_lossy(text)
            );
        }
        let mut bodies: Vec<Vec<u8>> = std::vec![b"get a".to_vec(), b"set k v".to_vec()];
        for n in 0..40 {
            bodies.push([b"set k ", &std::vec![b'v'; n * 40][..]].concat());
        }
        for body in &bodies {
            assert_eq!(parse_request_in(&body[..]), parse_request(body));
        }
    }

    #[test]
    fn frame_headers_round_trip() {
        let h = FrameHeader::request(0xbeef);
        assert_eq!(h.to_bytes(), [0xbe, 0xef, 0, 0, 0, 1, 0, 0]);
        assert_eq!(FrameHeader::from_bytes(h.to_bytes()), h);
    }
}
