//! A λ client in a pair's client namespace: IPv4 and IPv6 sockets aimed at the server,
//! answers matched by request id (the coalesced tests compare two deployments with it).

use std::net::UdpSocket;
use std::time::Duration;

use lambda_ebpf::wire::LambdaHeader;

use super::NetnsPair;

/// Client sockets (IPv4 and IPv6) in a pair's client namespace, aimed at its server.
pub struct Client {
    socket: UdpSocket,
    server: String,
    socket6: UdpSocket,
    server6: String,
}

impl Client {
    pub fn new(pair: &NetnsPair) -> Client {
        let bind = format!("{}:0", pair.client_v4);
        let bind6 = format!("[{}]:0", pair.client_v6);
        // A socket belongs to the namespace it was created in, whichever thread uses it.
        let (socket, socket6) = NetnsPair::within(&pair.client_ns, || {
            (
                UdpSocket::bind(&bind).unwrap(),
                UdpSocket::bind(&bind6).unwrap(),
            )
        });
        for s in [&socket, &socket6] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        Client {
            socket,
            server: pair.server_v4.clone(),
            socket6,
            server6: pair.server_v6.clone(),
        }
    }

    /// Sends `request` to `port` over IPv4 and returns the answer's payload (matched by request
    /// id), or `None` when nothing answered after `tries` sends.
    pub fn call(&self, port: u16, request: &[u8], tries: usize) -> Option<Vec<u8>> {
        self.call_on(false, port, request, tries)
    }

    /// [`Client::call`] over IPv6 when `v6`.
    pub fn call_on(&self, v6: bool, port: u16, request: &[u8], tries: usize) -> Option<Vec<u8>> {
        let id = LambdaHeader::decode(request).unwrap().request_id();
        let mut buf = [0u8; 2048];
        let (socket, server) = if v6 {
            (&self.socket6, self.server6.as_str())
        } else {
            (&self.socket, self.server.as_str())
        };
        for _ in 0..tries {
            socket.send_to(request, (server, port)).unwrap();
            while let Ok(n) = socket.recv(&mut buf) {
                if let Ok(h) = LambdaHeader::decode(&buf[..n])
                    && h.request_id() == id
                {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        None
    }
}
