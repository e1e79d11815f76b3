//! The grayscaler as a plain UDP server: per datagram, the very check and conversion the
//! lambda runs (`workloads::grayscale::respond`).

use lambda_ebpf::MAX_BODY;
use lambda_ebpf::{LambdaHeader, Status};
use workloads::grayscale::respond;

use super::Handler;

/// Stateless: every fragment is converted on its own, as the lambda does.
pub(crate) struct Grayscale;

impl Handler for Grayscale {
    fn handle(&mut self, header: &LambdaHeader, body: &[u8], out: &mut Vec<u8>) -> Status {
        if body.len() > MAX_BODY {
            return Status::TooLarge;
        }
        out.resize(MAX_BODY, 0);
        match respond(header.frag_index(), header.frag_count(), body, out) {
            Ok(len) => {
                out.truncate(len);
                Status::Ok
            }
            Err(status) => {
                out.clear();
                status
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use workloads::grayscale::{Dimensions, gray, request_body};

    #[test]
    fn answers_like_the_lambda() {
        let dims = Dimensions::new(3, 1).unwrap();
        let rgb = [255, 0, 0, 0, 255, 0, 10, 20, 30];
        let header = LambdaHeader::request(7, 42);
        let mut body = [0u8; MAX_BODY];
        let len = request_body(dims, &rgb, 0, &mut body).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            Grayscale.handle(&header, &body[..len], &mut out),
            Status::Ok
        );
        assert_eq!(
            out,
            [
                0,
                3,
                0,
                1,
                gray(255, 0, 0),
                gray(0, 255, 0),
                gray(10, 20, 30)
            ]
        );
        // A fragment without its header: BAD_REQUEST, empty.
        let mut out = Vec::new();
        assert_eq!(
            Grayscale.handle(&LambdaHeader::request(7, 43), &[1, 2], &mut out),
            Status::BadRequest
        );
        assert!(out.is_empty());
    }
}
