//! The memcached baseline: the same request and reply code as the lambda
//! (`workloads::memcached`), over an ordinary UDP socket connected to memcached. One request
//! at a time: the process is the baseline, not a proxy built for throughput.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context as _, Result};
use lambda_ebpf::{LambdaHeader, Status};
use workloads::memcached::{self, FRAME_HEADER_LEN, FrameHeader, Reply};

use super::Handler;

/// How long to wait for memcached's reply before answering UNAVAILABLE.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) struct Memcached {
    socket: UdpSocket,
    next_id: u16,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl Memcached {
    pub(crate) fn connect(server: SocketAddr) -> Result<Memcached> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(bind).context("cannot open a UDP socket")?;
        socket
            .connect(server)
            .with_context(|| format!("cannot address memcached at {server}"))?;
        socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Memcached {
            socket,
            next_id: 0,
            request: vec![0; 2048],
            reply: vec![0; 65_536],
        })
    }
}

impl Handler for Memcached {
    fn handle(&mut self, header: &LambdaHeader, body: &[u8], out: &mut Vec<u8>) -> Status {
        if let Err(status) = super::single_fragment(header) {
            return status;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let len = match memcached::encode_request(id, body, &mut self.request) {
            Ok(len) => len,
            Err(e) => return e.status(),
        };
        if self.socket.send(&self.request[..len]).is_err() {
            return Status::Unavailable;
        }
        loop {
            let n = match self.socket.recv(&mut self.reply) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Timeout, or memcached not listening (ICMP port unreachable).
                Err(_) => return Status::Unavailable,
            };
            let Some(head) = self.reply.get(..FRAME_HEADER_LEN) else {
                continue;
            };
            let mut frame = [0u8; FRAME_HEADER_LEN];
            frame.copy_from_slice(head);
            let frame = FrameHeader::from_bytes(frame);
            // A late reply to an earlier request that timed out: not this one's.
            if frame.request_id != id {
                continue;
            }
            if frame.sequence != 0 || frame.count != 1 {
                return Status::TooLarge;
            }
            let text = &self.reply[FRAME_HEADER_LEN..n];
            return match memcached::classify_reply(text) {
                Reply::Value { offset, len } => {
                    out.extend_from_slice(&text[offset..offset + len]);
                    Status::Ok
                }
                reply => reply.status(),
            };
        }
    }
}
