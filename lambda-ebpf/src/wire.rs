//! The λ wire format, version 1: the 24-byte header every request and response starts with.
//!
//! This is the one definition of the header. Lambdas overlay [`LambdaHeader`] on packet memory;
//! userspace (the CLI client, the loader's VM backend, the gateway, the baselines) encodes and
//! decodes it through the same type. All fields are big-endian on the wire and every field is a
//! byte array, so the struct has alignment 1 and can sit at any packet offset.

/// `"LN"`: the first two bytes of every λ datagram.
pub const MAGIC: u16 = 0x4C4E;
/// The only wire version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of [`LambdaHeader`] on the wire.
pub const HEADER_LEN: usize = 24;
/// The UDP port lambdas serve unless told otherwise.
pub const DEFAULT_PORT: u16 = 9000;

/// Header flag: set by the lambda on every response.
pub const FLAG_RESPONSE: u8 = 1 << 0;
/// Header flag: more fragments of this request or response follow.
pub const FLAG_MORE: u8 = 1 << 1;

/// Response status carried in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadRequest = 2,
    TooLarge = 3,
    Unavailable = 4,
    Internal = 5,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::NotFound,
        Status::BadRequest,
        Status::TooLarge,
        Status::Unavailable,
        Status::Internal,
    ];

    /// The status for a wire value, or `None` for a value this version does not define.
    pub const fn from_wire(value: u16) -> Option<Status> {
        match value {
            0 => Some(Status::Ok),
            1 => Some(Status::NotFound),
            2 => Some(Status::BadRequest),
            3 => Some(Status::TooLarge),
            4 => Some(Status::Unavailable),
            5 => Some(Status::Internal),
            _ => None,
        }
    }

    /// The wire value.
    pub const fn to_wire(self) -> u16 {
        self as u16
    }

    /// The upper-case name used by the CLI and logs (`OK`, `NOT_FOUND`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::BadRequest => "BAD_REQUEST",
            Status::TooLarge => "TOO_LARGE",
            Status::Unavailable => "UNAVAILABLE",
            Status::Internal => "INTERNAL",
        }
    }
}

/// Why a byte string is not a λ header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer than [`HEADER_LEN`] bytes.
    TooShort { len: usize },
    /// The first two bytes are not [`MAGIC`].
    BadMagic { found: u16 },
    /// A version other than [`VERSION`].
    UnsupportedVersion { found: u8 },
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::TooShort { len } => write!(
                f,
                "datagram of {len} bytes is shorter than the {HEADER_LEN}-byte λ header"
            ),
            WireError::BadMagic { found } => {
                write!(f, "bad λ magic {found:#06x} (expected {MAGIC:#06x})")
            }
            WireError::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported λ version {found} (this build speaks {VERSION})"
                )
            }
        }
    }
}

impl core::error::Error for WireError {}

/// The λ header exactly as it lies on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct LambdaHeader {
    magic: [u8; 2],
    version: u8,
    flags: u8,
    lambda_id: [u8; 4],
    request_id: [u8; 8],
    frag_index: [u8; 2],
    frag_count: [u8; 2],
    status: [u8; 2],
    reserved: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<LambdaHeader>() == HEADER_LEN);
const _: () = assert!(core::mem::align_of::<LambdaHeader>() == 1);

/// Offset of the big-endian status field in the header.
pub const STATUS_OFFSET: usize = core::mem::offset_of!(LambdaHeader, status);
const _: () = assert!(STATUS_OFFSET == 20);

impl LambdaHeader {
    /// A single-fragment request for `lambda_id`.
    pub const fn request(lambda_id: u32, request_id: u64) -> LambdaHeader {
        LambdaHeader {
            magic: MAGIC.to_be_bytes(),
            version: VERSION,
            flags: 0,
            lambda_id: lambda_id.to_be_bytes(),
            request_id: request_id.to_be_bytes(),
            frag_index: 0u16.to_be_bytes(),
            frag_count: 1u16.to_be_bytes(),
            status: 0u16.to_be_bytes(),
            reserved: [0; 2],
        }
    }

    /// Checks magic and version of a header that lies in packet memory.
    #[inline(always)]
    pub fn is_valid(&self) -> bool {
        // Compare byte by byte: the header may sit at any alignment and the kernel verifier is
        // happiest with single-byte loads.
        self.magic[0] == (MAGIC >> 8) as u8
            && self.magic[1] == MAGIC as u8
            && self.version == VERSION
    }

    /// Decodes the header at the start of `bytes`, checking length, magic and version.
    pub fn decode(bytes: &[u8]) -> Result<LambdaHeader, WireError> {
        let Some(raw) = bytes.get(..HEADER_LEN) else {
            return Err(WireError::TooShort { len: bytes.len() });
        };
        let mut header = LambdaHeader::request(0, 0);
        header.as_bytes_mut().copy_from_slice(raw);
        let magic = u16::from_be_bytes(header.magic);
        if magic != MAGIC {
            return Err(WireError::BadMagic { found: magic });
        }
        if header.version != VERSION {
            return Err(WireError::UnsupportedVersion {
                found: header.version,
            });
        }
        Ok(header)
    }

    /// The header's wire bytes.
    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        // SAFETY: repr(C), all fields are byte arrays: no padding, size asserted above.
        unsafe { &*(self as *const LambdaHeader as *const [u8; HEADER_LEN]) }
    }

    fn as_bytes_mut(&mut self) -> &mut [u8; HEADER_LEN] {
        // SAFETY: as in `as_bytes`; every byte pattern is a valid LambdaHeader.
        unsafe { &mut *(self as *mut LambdaHeader as *mut [u8; HEADER_LEN]) }
    }

    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.flags
    }
    #[inline(always)]
    pub fn set_flags(&mut self, flags: u8) {
        self.flags = flags;
    }
    #[inline(always)]
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    #[inline(always)]
    pub fn lambda_id(&self) -> u32 {
        u32::from_be_bytes(self.lambda_id)
    }
    #[inline(always)]
    pub fn set_lambda_id(&mut self, id: u32) {
        self.lambda_id = id.to_be_bytes();
    }
    #[inline(always)]
    pub fn request_id(&self) -> u64 {
        u64::from_be_bytes(self.request_id)
    }
    #[inline(always)]
    pub fn set_request_id(&mut self, id: u64) {
        self.request_id = id.to_be_bytes();
    }
    #[inline(always)]
    pub fn frag_index(&self) -> u16 {
        u16::from_be_bytes(self.frag_index)
    }
    #[inline(always)]
    pub fn frag_count(&self) -> u16 {
        u16::from_be_bytes(self.frag_count)
    }
    #[inline(always)]
    pub fn set_fragment(&mut self, index: u16, count: u16) {
        self.frag_index = index.to_be_bytes();
        self.frag_count = count.to_be_bytes();
    }
    /// The raw status value; see [`Status::from_wire`].
    #[inline(always)]
    pub fn status_raw(&self) -> u16 {
        u16::from_be_bytes(self.status)
    }
    #[inline(always)]
    pub fn status(&self) -> Option<Status> {
        Status::from_wire(self.status_raw())
    }
    #[inline(always)]
    pub fn set_status(&mut self, status: Status) {
        self.status = status.to_wire().to_be_bytes();
    }
    /// Turns a request header into its response: sets RESPONSE and the status, keeps the ids and
    /// fragment fields, clears the reserved bytes.
    #[inline(always)]
    pub fn make_response(&mut self, status: Status) {
        self.flags |= FLAG_RESPONSE;
        self.set_status(status);
        self.reserved = [0; 2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encodes_big_endian_fields_at_their_offsets() {
        let h = LambdaHeader::request(0x0102_0304, 0x1122_3344_5566_7788);
        let b = h.as_bytes();
        assert_eq!(&b[0..2], &[0x4C, 0x4E]);
        assert_eq!(b[2], 1);
        assert_eq!(b[3], 0);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..16], &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        assert_eq!(&b[16..18], &[0, 0]);
        assert_eq!(&b[18..20], &[0, 1]);
        assert_eq!(&b[20..24], &[0, 0, 0, 0]);
    }

    #[test]
    fn decode_round_trips_and_reads_fields() {
        let mut h = LambdaHeader::request(1, 2);
        h.set_lambda_id(7);
        h.set_request_id(42);
        h.set_flags(FLAG_MORE);
        h.set_fragment(3, 9);
        h.make_response(Status::TooLarge);
        let mut datagram = h.as_bytes().to_vec();
        datagram.extend_from_slice(b"body");
        let d = LambdaHeader::decode(&datagram).unwrap();
        assert_eq!(d, h);
        assert_eq!(d.lambda_id(), 7);
        assert_eq!(d.request_id(), 42);
        assert_eq!((d.frag_index(), d.frag_count()), (3, 9));
        assert!(d.is_response());
        assert_eq!(
            d.flags(),
            FLAG_MORE | FLAG_RESPONSE,
            "make_response keeps MORE"
        );
        assert_eq!(d.status(), Some(Status::TooLarge));
        assert!(d.is_valid());
    }

    #[test]
    fn decode_rejects_short_bad_magic_and_bad_version() {
        let good = *LambdaHeader::request(1, 1).as_bytes();
        assert_eq!(
            LambdaHeader::decode(&good[..23]),
            Err(WireError::TooShort { len: 23 })
        );
        assert_eq!(
            LambdaHeader::decode(&[]),
            Err(WireError::TooShort { len: 0 })
        );
        let mut bad = good;
        bad[0] = 0x4D;
        assert_eq!(
            LambdaHeader::decode(&bad),
            Err(WireError::BadMagic { found: 0x4D4E })
        );
        let mut bad = good;
        bad[2] = 2;
        assert_eq!(
            LambdaHeader::decode(&bad),
            Err(WireError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn status_round_trips_and_rejects_unknown_values() {
        for s in Status::ALL {
            assert_eq!(Status::from_wire(s.to_wire()), Some(s));
        }
        assert_eq!(Status::from_wire(6), None);
        assert_eq!(Status::NotFound.name(), "NOT_FOUND");
    }
}
