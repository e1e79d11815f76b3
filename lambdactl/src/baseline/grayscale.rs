//! The grayscaler as a plain UDP server: per datagram, the very check and conversion the
//! lambda runs (`workloads::grayscale::respond`), answered to the sender.

use std::{
    io::{self, Write as _},
    net::{SocketAddr, UdpSocket},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use lambda_ebpf::MAX_BODY;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};
use workloads::grayscale::respond;

/// Serves until the process is stopped. Datagrams that are not λ requests are ignored, as the
/// lambda passes them to the stack.
pub fn serve(listen: SocketAddr) -> Result<ExitCode> {
    let socket =
        UdpSocket::bind(listen).with_context(|| format!("cannot listen on UDP {listen}"))?;
    let local = socket.local_addr()?;
    println!("baseline grayscale on udp {local}");
    io::stdout().flush()?;
    let mut request = vec![0u8; 65536];
    let mut response = vec![0u8; HEADER_LEN + MAX_BODY];
    loop {
        let (n, from) = match socket.recv_from(&mut request) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving"),
        };
        let Some(len) = answer(&request[..n], &mut response) else {
            continue;
        };
        // A full send buffer or an unreachable client loses this answer; the client resends.
        if let Err(e) = socket.send_to(&response[..len], from) {
            eprintln!("baseline grayscale: answer to {from} not sent: {e}");
        }
    }
}

/// The response datagram for `datagram` in `out`, or `None` when it is not a λ request.
fn answer(datagram: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut header = LambdaHeader::decode(datagram).ok()?;
    if header.is_response() {
        return None;
    }
    let body = &datagram[HEADER_LEN..];
    let (status, len) = if body.len() > MAX_BODY {
        (Status::TooLarge, 0)
    } else {
        match respond(
            header.frag_index(),
            header.frag_count(),
            body,
            &mut out[HEADER_LEN..],
        ) {
            Ok(len) => (Status::Ok, len),
            Err(status) => (status, 0),
        }
    };
    header.make_response(status);
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    Some(HEADER_LEN + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use workloads::grayscale::{Dimensions, gray, request_body};

    #[test]
    fn answers_like_the_lambda() {
        let dims = Dimensions::new(3, 1).unwrap();
        let rgb = [255, 0, 0, 0, 255, 0, 10, 20, 30];
        let mut request = LambdaHeader::request(7, 42).as_bytes().to_vec();
        let mut body = [0u8; MAX_BODY];
        let len = request_body(dims, &rgb, 0, &mut body).unwrap();
        request.extend_from_slice(&body[..len]);
        let mut out = [0u8; HEADER_LEN + MAX_BODY];
        let n = answer(&request, &mut out).unwrap();
        let header = LambdaHeader::decode(&out[..n]).unwrap();
        assert!(header.is_response());
        assert_eq!((header.lambda_id(), header.request_id()), (7, 42));
        assert_eq!(header.status(), Some(Status::Ok));
        assert_eq!(
            &out[HEADER_LEN..n],
            &[
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
        let mut bad = LambdaHeader::request(7, 43).as_bytes().to_vec();
        bad.extend_from_slice(&[1, 2]);
        let n = answer(&bad, &mut out).unwrap();
        assert_eq!(n, HEADER_LEN);
        assert_eq!(
            LambdaHeader::decode(&out[..n]).unwrap().status(),
            Some(Status::BadRequest)
        );
        // Not λ: ignored.
        assert_eq!(answer(b"hello", &mut out), None);
    }
}
