//! The image grayscaler: an RGB image split across fragments, each fragment turned into 8-bit
//! gray on its own.
//!
//! # Request
//!
//! One λ request per image, `frag_count` fragments with the same request id (the λ header's
//! `frag_index`/`frag_count`; MORE set on all but the last). Pixels are 8-bit R, G, B triples in
//! row-major order, top row first, and are numbered 0 .. width × height.
//!
//! - Fragment 0's body starts with the image header, [`IMAGE_HEADER_LEN`] bytes: width then
//!   height, each a big-endian `u16`, each 1 ..= [`MAX_SIDE`].
//! - Fragment `i` then carries pixels `i × P ..` where `P` = [`PIXELS_PER_FRAGMENT`] (474): every
//!   fragment but the last carries exactly `P` whole pixels, the last carries the 1 ..= `P` that
//!   remain. A pixel never straddles two fragments, so each fragment converts on its own, and
//!   the lambda needs no state across fragments.
//! - `frag_count` = ⌈width × height / P⌉: 35,395 fragments for 4096 × 4096, inside the `u16`
//!   field. `P` is the most pixels fragment 0 can carry beside the header within
//!   [`MAX_BODY`] (4 + 3 × 474 = 1426 ≤ 1428), so no datagram needs IP fragmentation.
//!
//! # Response
//!
//! One response per request fragment, with its `frag_index`/`frag_count`. With status OK the
//! body is that fragment's gray bytes, one per pixel in the same order; fragment 0's response
//! body first echoes the 4-byte image header (so the response to fragment 0 alone tells the
//! image's size). A fragment that breaks the layout is answered with an empty body and
//! `BAD_REQUEST` (no header, zero side, pixel bytes not a whole number of pixels, wrong pixel
//! count for its place, `frag_count` not matching the header, index out of range) or
//! `TOO_LARGE` (a side over [`MAX_SIDE`], more than `P` pixels, or more fragments than a
//! 4096 × 4096 image needs).
//!
//! # The pixel formula
//!
//! ITU-R BT.601 luma with the weights scaled to 256 and rounded (0.299, 0.587, 0.114 →
//! 77, 150, 29, which sum to 256), rounded to nearest with halves up:
//!
//! `Y = (77 R + 150 G + 29 B + 128) >> 8`
//!
//! computed exactly in 32-bit integers; white stays 255 and black 0 (see [`gray`]).

use core::ops::Range;

use lambda_ebpf::{MAX_BODY, Status};

/// Bytes of the image header at the start of fragment 0's body: width, height, big-endian u16.
pub const IMAGE_HEADER_LEN: usize = 4;
/// Bytes per pixel in a request: R, G, B.
pub const BYTES_PER_PIXEL: usize = 3;
/// Largest width or height.
pub const MAX_SIDE: u16 = 4096;
/// Pixels in every fragment but the last.
pub const PIXELS_PER_FRAGMENT: usize = (MAX_BODY - IMAGE_HEADER_LEN) / BYTES_PER_PIXEL;
/// Fragments of the largest image.
pub const MAX_FRAGMENTS: usize =
    (MAX_SIDE as usize * MAX_SIDE as usize).div_ceil(PIXELS_PER_FRAGMENT);

const _: () = assert!(PIXELS_PER_FRAGMENT == 474);
const _: () = assert!(MAX_FRAGMENTS <= u16::MAX as usize, "frag_count is a u16");
const _: () = assert!(IMAGE_HEADER_LEN + PIXELS_PER_FRAGMENT * BYTES_PER_PIXEL <= MAX_BODY);

/// The BT.601 8-bit luma of one pixel: `(77 R + 150 G + 29 B + 128) >> 8`.
///
/// ```
/// use workloads::grayscale::gray;
/// assert_eq!(gray(255, 255, 255), 255);
/// assert_eq!(gray(0, 0, 0), 0);
/// assert_eq!(gray(255, 0, 0), 77); // 19635 + 128 = 19763; >> 8 = 77
/// assert_eq!(gray(0, 255, 0), 149); // 38250 + 128 = 38378; >> 8 = 149
/// ```
#[inline(always)]
pub const fn gray(r: u8, g: u8, b: u8) -> u8 {
    // At most 255 × 256 + 128 = 65408: the shift leaves at most 255, the cast loses nothing.
    ((77 * r as u32 + 150 * g as u32 + 29 * b as u32 + 128) >> 8) as u8
}

/// Converts `rgb` (3 bytes per pixel) into `out` (1 byte per pixel), as many pixels as both
/// hold. Returns the number of pixels converted.
#[inline(always)]
pub fn convert(rgb: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (pixel, y) in rgb.chunks_exact(BYTES_PER_PIXEL).zip(out.iter_mut()) {
        *y = gray(pixel[0], pixel[1], pixel[2]);
        n += 1;
    }
    n
}

/// An image's size, checked against the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dimensions {
    width: u16,
    height: u16,
}

impl Dimensions {
    /// `width` × `height`: `BAD_REQUEST` for a zero side, `TOO_LARGE` over [`MAX_SIDE`].
    #[inline(always)]
    pub fn new(width: u32, height: u32) -> Result<Dimensions, Status> {
        if width == 0 || height == 0 {
            return Err(Status::BadRequest);
        }
        if width > MAX_SIDE as u32 || height > MAX_SIDE as u32 {
            return Err(Status::TooLarge);
        }
        Ok(Dimensions {
            width: width as u16,
            height: height as u16,
        })
    }

    /// Decodes the image header at the start of fragment 0's body.
    #[inline(always)]
    pub fn decode(header: [u8; IMAGE_HEADER_LEN]) -> Result<Dimensions, Status> {
        Dimensions::new(
            u32::from(u16::from_be_bytes([header[0], header[1]])),
            u32::from(u16::from_be_bytes([header[2], header[3]])),
        )
    }

    /// The image header's wire bytes.
    pub fn encode(&self) -> [u8; IMAGE_HEADER_LEN] {
        let [w0, w1] = self.width.to_be_bytes();
        let [h0, h1] = self.height.to_be_bytes();
        [w0, w1, h0, h1]
    }

    pub fn width(&self) -> u32 {
        u32::from(self.width)
    }

    pub fn height(&self) -> u32 {
        u32::from(self.height)
    }

    /// width × height.
    #[inline(always)]
    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// How many fragments the image travels in.
    #[inline(always)]
    pub fn fragment_count(&self) -> u16 {
        // At most MAX_FRAGMENTS, asserted above to fit a u16.
        self.pixels().div_ceil(PIXELS_PER_FRAGMENT) as u16
    }

    /// The pixel numbers fragment `index` carries (empty past the last fragment).
    pub fn fragment_pixels(&self, index: u16) -> Range<usize> {
        let start = (index as usize * PIXELS_PER_FRAGMENT).min(self.pixels());
        start..(start + PIXELS_PER_FRAGMENT).min(self.pixels())
    }
}

/// Where a request fragment's pixels lie in its body, once [`check_fragment`] accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Body offset of the first pixel: [`IMAGE_HEADER_LEN`] in fragment 0, else 0.
    pub pixels_at: usize,
    /// Whole pixels in the fragment, 1 ..= [`PIXELS_PER_FRAGMENT`].
    pub pixels: usize,
}

impl Layout {
    /// Length of the OK response body: the echoed header (fragment 0) and one byte per pixel.
    #[inline(always)]
    pub fn response_len(&self) -> usize {
        self.pixels_at + self.pixels
    }
}

/// Checks one request fragment against the layout: `header` is the first
/// [`IMAGE_HEADER_LEN`] body bytes when the body has that many (only fragment 0's are used).
/// This is the whole of the validation the lambda and the baseline do; it needs nothing from
/// other fragments.
#[inline(always)]
pub fn check_fragment(
    frag_index: u16,
    frag_count: u16,
    body_len: usize,
    header: Option<[u8; IMAGE_HEADER_LEN]>,
) -> Result<Layout, Status> {
    if frag_count == 0 || frag_index >= frag_count {
        return Err(Status::BadRequest);
    }
    if frag_count as usize > MAX_FRAGMENTS {
        return Err(Status::TooLarge);
    }
    let last = frag_index == frag_count - 1;
    let (pixels_at, expected) = if frag_index == 0 {
        let dims = Dimensions::decode(header.ok_or(Status::BadRequest)?)?;
        if dims.fragment_count() != frag_count {
            return Err(Status::BadRequest);
        }
        (IMAGE_HEADER_LEN, dims.fragment_pixels(0).len())
    } else if last {
        // The last fragment carries what remains; without the header it can only be bounded.
        (0, 0)
    } else {
        (0, PIXELS_PER_FRAGMENT)
    };
    if body_len < pixels_at {
        return Err(Status::BadRequest);
    }
    let pixel_bytes = body_len - pixels_at;
    if pixel_bytes > PIXELS_PER_FRAGMENT * BYTES_PER_PIXEL {
        return Err(Status::TooLarge);
    }
    if pixel_bytes == 0 || !pixel_bytes.is_multiple_of(BYTES_PER_PIXEL) {
        return Err(Status::BadRequest);
    }
    let pixels = pixel_bytes / BYTES_PER_PIXEL;
    if expected != 0 && pixels != expected {
        return Err(Status::BadRequest);
    }
    Ok(Layout { pixels_at, pixels })
}

/// [`check_fragment`] without a division or a multiply wider than 32 bits, for the NFP (whose
/// offload has neither, see the verifier's `nfp` profile): the same answer for every input.
/// The fragment count test becomes `(count − 1) × P < pixels ≤ count × P`, and the pixel count
/// a multiply by the reciprocal of 3 that is exact below 2^16 bytes.
#[inline(always)]
pub fn check_fragment_without_division(
    frag_index: u16,
    frag_count: u16,
    body_len: usize,
    header: Option<[u8; IMAGE_HEADER_LEN]>,
) -> Result<Layout, Status> {
    if frag_count == 0 || frag_index >= frag_count {
        return Err(Status::BadRequest);
    }
    if frag_count as usize > MAX_FRAGMENTS {
        return Err(Status::TooLarge);
    }
    let last = frag_index == frag_count - 1;
    let (pixels_at, expected) = if frag_index == 0 {
        let dims = Dimensions::decode(header.ok_or(Status::BadRequest)?)?;
        // Both at most 2^24 (4096 × 4096; 35,395 × 474): 32-bit products.
        let pixels = dims.width() * dims.height();
        let count = u32::from(frag_count);
        let per = PIXELS_PER_FRAGMENT as u32;
        if pixels <= (count - 1) * per || pixels > count * per {
            return Err(Status::BadRequest);
        }
        let first = if pixels < per { pixels } else { per };
        (IMAGE_HEADER_LEN, first as usize)
    } else if last {
        (0, 0)
    } else {
        (0, PIXELS_PER_FRAGMENT)
    };
    if body_len < pixels_at {
        return Err(Status::BadRequest);
    }
    let pixel_bytes = body_len - pixels_at;
    if pixel_bytes > PIXELS_PER_FRAGMENT * BYTES_PER_PIXEL {
        return Err(Status::TooLarge);
    }
    // ⌊x / 3⌋ = (x × 0xAAAB) >> 17 for every x below 2^16 (the test checks them all); x is at
    // most 1422 here, so the product fits 32 bits. In `u32` throughout, so that every operand
    // of a multiply is known to fit 32 bits.
    let bytes = pixel_bytes as u32;
    let pixels = bytes.wrapping_mul(0xAAAB) >> 17;
    if bytes == 0 || pixels.wrapping_mul(BYTES_PER_PIXEL as u32) != bytes {
        return Err(Status::BadRequest);
    }
    let pixels = pixels as usize;
    if expected != 0 && pixels != expected {
        return Err(Status::BadRequest);
    }
    Ok(Layout { pixels_at, pixels })
}

/// The whole work for one request fragment, as the native baseline does it: validates `body`
/// and writes the response body into `out` (at least [`MAX_BODY`] bytes). Returns its length,
/// or the status of an empty error response.
pub fn respond(
    frag_index: u16,
    frag_count: u16,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, Status> {
    let header = body
        .get(..IMAGE_HEADER_LEN)
        .map(|h| [h[0], h[1], h[2], h[3]]);
    let layout = check_fragment(frag_index, frag_count, body.len(), header)?;
    let out = out
        .get_mut(..layout.response_len())
        .ok_or(Status::Internal)?;
    let (echo, gray_out) = out.split_at_mut(layout.pixels_at);
    echo.copy_from_slice(&body[..layout.pixels_at]);
    convert(&body[layout.pixels_at..], gray_out);
    Ok(layout.response_len())
}

/// Why the client could not build or place a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The RGB buffer does not hold width × height pixels.
    RgbLength { expected: usize, found: usize },
    /// The gray buffer does not hold width × height pixels.
    GrayLength { expected: usize, found: usize },
    /// A fragment index past the image's fragments.
    FragmentIndex { index: u16, count: u16 },
    /// A response body whose length does not fit its fragment.
    ResponseLength {
        index: u16,
        expected: usize,
        found: usize,
    },
    /// Fragment 0's response echoes another image header.
    HeaderMismatch,
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FormatError::RgbLength { expected, found } => {
                write!(
                    f,
                    "RGB buffer holds {found} bytes, the image needs {expected}"
                )
            }
            FormatError::GrayLength { expected, found } => {
                write!(
                    f,
                    "gray buffer holds {found} bytes, the image needs {expected}"
                )
            }
            FormatError::FragmentIndex { index, count } => {
                write!(f, "fragment {index} is past the image's {count} fragments")
            }
            FormatError::ResponseLength {
                index,
                expected,
                found,
            } => write!(
                f,
                "response to fragment {index} has a {found}-byte body, expected {expected}"
            ),
            FormatError::HeaderMismatch => {
                write!(f, "response to fragment 0 echoes another image size")
            }
        }
    }
}

impl core::error::Error for FormatError {}

/// Writes the request body of fragment `index` of the image `rgb` (width × height × 3 bytes)
/// into `out` (at least [`MAX_BODY`] bytes) and returns its length.
pub fn request_body(
    dims: Dimensions,
    rgb: &[u8],
    index: u16,
    out: &mut [u8],
) -> Result<usize, FormatError> {
    let expected = dims.pixels() * BYTES_PER_PIXEL;
    if rgb.len() != expected {
        return Err(FormatError::RgbLength {
            expected,
            found: rgb.len(),
        });
    }
    let count = dims.fragment_count();
    if index >= count {
        return Err(FormatError::FragmentIndex { index, count });
    }
    let pixels = dims.fragment_pixels(index);
    let bytes = &rgb[pixels.start * BYTES_PER_PIXEL..pixels.end * BYTES_PER_PIXEL];
    let at = if index == 0 { IMAGE_HEADER_LEN } else { 0 };
    let len = at + bytes.len();
    if out.len() < len {
        return Err(FormatError::ResponseLength {
            index,
            expected: len,
            found: out.len(),
        });
    }
    if index == 0 {
        out[..IMAGE_HEADER_LEN].copy_from_slice(&dims.encode());
    }
    out[at..len].copy_from_slice(bytes);
    Ok(len)
}

/// Copies the OK response body of fragment `index` into its place in `gray` (width × height
/// bytes), checking its length and, for fragment 0, the echoed header.
pub fn place_response(
    dims: Dimensions,
    index: u16,
    body: &[u8],
    gray: &mut [u8],
) -> Result<(), FormatError> {
    if gray.len() != dims.pixels() {
        return Err(FormatError::GrayLength {
            expected: dims.pixels(),
            found: gray.len(),
        });
    }
    let count = dims.fragment_count();
    if index >= count {
        return Err(FormatError::FragmentIndex { index, count });
    }
    let pixels = dims.fragment_pixels(index);
    let at = if index == 0 { IMAGE_HEADER_LEN } else { 0 };
    if body.len() != at + pixels.len() {
        return Err(FormatError::ResponseLength {
            index,
            expected: at + pixels.len(),
            found: body.len(),
        });
    }
    if index == 0 && body[..IMAGE_HEADER_LEN] != dims.encode() {
        return Err(FormatError::HeaderMismatch);
    }
    gray[pixels].copy_from_slice(&body[at..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn formula_is_the_rounded_bt601_weights() {
        // Against the real-valued BT.601 weights: the 8-bit weights are within one step.
        for (r, g, b) in [
            (255, 0, 0),
            (0, 255, 0),
            (0, 0, 255),
            (12, 200, 99),
            (128, 128, 128),
        ] {
            let exact = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
            let y = f64::from(gray(r, g, b));
            assert!((y - exact).abs() <= 1.0, "{r},{g},{b}: {y} vs {exact}");
        }
        // Greys map to themselves: the weights sum to 256 and the rounding adds one half.
        for v in 0..=255u8 {
            assert_eq!(gray(v, v, v), v);
        }
        // To nearest: 77 + 300 + 29 = 406 = 1.59 × 256 → 2; 154 + 58 = 212 = 0.83 × 256 → 1.
        assert_eq!(gray(1, 2, 1), 2);
        assert_eq!(gray(2, 0, 2), 1);
        let half = (0..=255u32)
            .flat_map(|r| (0..=255u32).map(move |b| (r, b)))
            .find(|&(r, b)| (77 * r + 29 * b) % 256 == 128)
            .expect("some weighted sum is an exact half");
        let (r, b) = half;
        assert_eq!(
            u32::from(gray(r as u8, 0, b as u8)),
            (77 * r + 29 * b) / 256 + 1,
            "an exact half rounds up"
        );
    }

    #[test]
    fn dimensions_check_limits() {
        assert_eq!(Dimensions::new(0, 5), Err(Status::BadRequest));
        assert_eq!(Dimensions::new(4097, 1), Err(Status::TooLarge));
        let d = Dimensions::new(4096, 4096).unwrap();
        assert_eq!(d.fragment_count() as usize, MAX_FRAGMENTS);
        assert_eq!(Dimensions::decode(d.encode()), Ok(d));
        assert_eq!(d.encode(), [0x10, 0, 0x10, 0]);
    }

    /// Splits an image, answers each fragment with `respond`, reassembles.
    fn round_trip(width: u32, height: u32) {
        let dims = Dimensions::new(width, height).unwrap();
        let rgb: Vec<u8> = (0..dims.pixels() * 3)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut gray_out = vec![0u8; dims.pixels()];
        let mut body = [0u8; MAX_BODY];
        let mut reply = [0u8; MAX_BODY];
        let count = dims.fragment_count();
        for index in 0..count {
            let len = request_body(dims, &rgb, index, &mut body).unwrap();
            let n = respond(index, count, &body[..len], &mut reply).unwrap();
            place_response(dims, index, &reply[..n], &mut gray_out).unwrap();
        }
        let expected: Vec<u8> = rgb.chunks(3).map(|p| gray(p[0], p[1], p[2])).collect();
        assert_eq!(gray_out, expected, "{width}x{height}");
    }

    #[test]
    fn split_respond_reassemble() {
        for (w, h) in [(1, 1), (474, 1), (475, 1), (1, 948), (31, 17), (640, 480)] {
            round_trip(w, h);
        }
    }

    #[test]
    fn bad_fragments_are_refused() {
        let header = Dimensions::new(100, 10).unwrap().encode(); // 1000 pixels: 3 fragments
        let full = IMAGE_HEADER_LEN + 474 * 3;
        assert!(check_fragment(0, 3, full, Some(header)).is_ok());
        assert_eq!(check_fragment(0, 3, 3, None), Err(Status::BadRequest));
        assert_eq!(
            check_fragment(0, 2, full, Some(header)),
            Err(Status::BadRequest)
        );
        assert_eq!(
            check_fragment(0, 3, full - 1, Some(header)),
            Err(Status::BadRequest)
        );
        assert_eq!(
            check_fragment(0, 1, 7, Some([0x10, 1, 0, 1])),
            Err(Status::TooLarge)
        );
        assert_eq!(check_fragment(1, 3, 473 * 3, None), Err(Status::BadRequest));
        assert_eq!(
            check_fragment(2, 3, 52 * 3 + 1, None),
            Err(Status::BadRequest)
        );
        assert_eq!(check_fragment(2, 3, 475 * 3, None), Err(Status::TooLarge));
        assert_eq!(check_fragment(3, 3, 3, None), Err(Status::BadRequest));
        assert_eq!(check_fragment(1, u16::MAX, 3, None), Err(Status::TooLarge));
        assert_eq!(
            check_fragment(2, 3, 52 * 3, None),
            Ok(Layout {
                pixels_at: 0,
                pixels: 52
            })
        );
    }

    #[test]
    fn place_response_checks_lengths_and_header() {
        let dims = Dimensions::new(10, 10).unwrap();
        let mut out = vec![0u8; 100];
        let mut body = dims.encode().to_vec();
        body.extend_from_slice(&[7; 99]);
        assert_eq!(
            place_response(dims, 0, &body, &mut out),
            Err(FormatError::ResponseLength {
                index: 0,
                expected: 104,
                found: 103
            })
        );
        body.push(7);
        body[1] = 11;
        assert_eq!(
            place_response(dims, 0, &body, &mut out),
            Err(FormatError::HeaderMismatch)
        );
    }

    #[test]
    fn the_division_free_check_agrees_with_check_fragment() {
        for x in 0..=u16::MAX as u32 {
            assert_eq!((x * 0xAAAB) >> 17, x / 3, "{x}");
        }
        let mut headers = vec![None, Some([0, 0, 0, 1]), Some([0x10, 1, 0, 1])];
        for (w, h) in [
            (1, 1),
            (474, 1),
            (475, 1),
            (1, 948),
            (31, 17),
            (640, 480),
            (4096, 4096),
            (4095, 4096),
            (237, 2),
            (100, 10),
        ] {
            headers.push(Some(Dimensions::new(w, h).unwrap().encode()));
        }
        let counts = [0u16, 1, 2, 3, 4, 5, 648, 649, 35394, 35395, 35396, u16::MAX];
        let mut lens: Vec<usize> = (0..16).collect();
        lens.extend([
            155, 156, 157, 1419, 1420, 1421, 1422, 1423, 1424, 1425, 1426, 1427, 1428,
        ]);
        lens.extend([1429, 2000, 474 * 3 - 3, 474 * 3 + 4, 36 * 3 + 4]);
        let mut compared = 0;
        for &count in &counts {
            for index in [0u16, 1, 2, 3, 647, 648, 35393, 35394, 35395, u16::MAX] {
                for &len in &lens {
                    for &header in &headers {
                        let header = if index == 0 { header } else { None };
                        assert_eq!(
                            check_fragment_without_division(index, count, len, header),
                            check_fragment(index, count, len, header),
                            "{index}/{count} {len} {header:?}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        // Every length a fragment 0 and a middle fragment can have, with a header that fits.
        let header = Some(Dimensions::new(640, 480).unwrap().encode());
        for len in 0..=MAX_BODY + 2 {
            for (index, count) in [(0, 649), (1, 649), (648, 649)] {
                let h = if index == 0 { header } else { None };
                assert_eq!(
                    check_fragment_without_division(index, count, len, h),
                    check_fragment(index, count, len, h),
                    "{index}/{count} {len}"
                );
                compared += 1;
            }
        }
        // Every fragment count for every height of a one-pixel-wide ... 4096-wide image.
        for w in [1u32, 7, 474, 4096] {
            for hgt in (1..=4096u32).step_by(37) {
                let d = Dimensions::new(w, hgt).unwrap();
                let c = d.fragment_count();
                for count in [c - 1, c, c + 1] {
                    let len = IMAGE_HEADER_LEN + d.fragment_pixels(0).len() * 3;
                    assert_eq!(
                        check_fragment_without_division(0, count, len, Some(d.encode())),
                        check_fragment(0, count, len, Some(d.encode())),
                        "{w}x{hgt} {count}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 30_000);
    }
}
