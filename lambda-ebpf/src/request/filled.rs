//! Replies whose body the lambda writes straight into the packet, piece by piece, rather than
//! handing [`Request::reply`] one contiguous slice: for content that lives in several map
//! values (the NIC build of `static-server` keeps an object in 56-byte chunks, the NFP's
//! largest map element) and is longer than a stack buffer or one store of the NIC frame.

use super::{MAX_BODY, Request, Verdict};
use crate::frame::Frame;
use crate::wire::Status;

impl Request {
    /// Turns the request into its response with a body of `len` bytes that `fill` writes: the
    /// packet is first resized to hold exactly that body, then `fill(frame, body_offset)`
    /// stores it (through [`Frame::store_bytes`] at frame offsets from `body_offset`), then
    /// the headers and checksums are fixed as in [`Request::reply`].
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
        match self.rewrite_headers(frame, status, body_len) {
            Some(()) => Verdict::Reply,
            None => Verdict::Aborted,
        }
    }
}
