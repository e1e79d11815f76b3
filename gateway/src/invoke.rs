//! The invocation path: a few UDP sockets shared by every in-flight call. Each call gets a
//! fresh request id, its body is split into λ fragments, and the receive tasks hand every
//! response fragment to the call waiting for that id; a call that hears nothing in time sends
//! its fragments once more, to the function's endpoint as it is *then* (an update may have moved
//! it), before it gives up.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_ebpf::wire::{FLAG_MORE, HEADER_LEN, LambdaHeader, Status};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// Most body bytes per request fragment: the lambdas' own reply limit, which keeps each
/// datagram within a 1500-byte MTU over IPv4 and IPv6.
pub const FRAGMENT_BODY: usize = lambda_ebpf::MAX_BODY;

/// Calls on the wire at once per invoker; more wait (as tasks, not threads) for a turn. A
/// burst of thousands of datagrams would overflow the receive buffers of the lambda's socket
/// (VM) or ours and be lost; this keeps the burst within them. Measured here against one UDP
/// responder with the default buffer: 3,000 calls at once lost answers even after the
/// retransmission without a limit, 256 at once still needed retransmissions now and then.
pub const MAX_IN_FLIGHT: usize = 128;

/// Receive buffer asked for on each socket (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: libc::c_int = 4 << 20;

/// Where a function is served: the UDP address and the lambda id its requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub lambda_id: u32,
}

/// A reassembled response.
#[derive(Debug)]
pub struct Reply {
    /// The first status that is not OK among the fragments, else OK; `None` for a value this
    /// wire version does not define.
    pub status: Option<Status>,
    pub body: Vec<u8>,
    /// Whether the answer came only after the retransmission.
    pub retransmitted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer from the lambda within {waited:?} (sent twice)")]
    Timeout { waited: Duration },
    #[error("body of {len} bytes needs more than 65535 fragments")]
    TooManyFragments { len: usize },
    #[error("cannot send to {addr}: {source}")]
    Send {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// One call waiting for its answer.
struct Pending {
    fragments: Vec<Option<Vec<u8>>>,
    received: usize,
    status: Option<Status>,
    done: Option<oneshot::Sender<(Option<Status>, Vec<u8>)>>,
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

/// The shared client side of every call to the functions of one network namespace.
pub struct Invoker {
    sockets: Vec<Arc<UdpSocket>>,
    pending: PendingMap,
    next_id: AtomicU64,
    next_socket: AtomicUsize,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    turns: tokio::sync::Semaphore,
}

impl Invoker {
    /// Takes over `sockets` (bound, in whichever namespace they were made) and starts one
    /// receive task per socket. Must run inside a tokio runtime.
    pub fn new(sockets: Vec<StdUdpSocket>) -> io::Result<Invoker> {
        let pending: PendingMap = Arc::default();
        let mut shared = Vec::new();
        let mut receivers = Vec::new();
        for socket in sockets {
            socket.set_nonblocking(true)?;
            // Best effort: a larger buffer absorbs answers that arrive together.
            // SAFETY: setsockopt on a socket we own, with a c_int option value.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&RECV_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            receivers.push(tokio::spawn(receive(
                Arc::clone(&socket),
                Arc::clone(&pending),
            )));
            shared.push(socket);
        }
        if shared.is_empty() {
            return Err(io::Error::other("an invoker needs at least one socket"));
        }
        // Request ids start at a per-process random-ish point so that a restarted gateway does
        // not take a late answer meant for its predecessor as its own.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        Ok(Invoker {
            sockets: shared,
            pending,
            next_id: AtomicU64::new(seed),
            next_socket: AtomicUsize::new(0),
            receivers,
            turns: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    /// Binds `count` sockets on the unspecified IPv4 address in the current network namespace.
    pub fn bind_local(count: usize) -> io::Result<Vec<StdUdpSocket>> {
        (0..count.max(1))
            .map(|_| StdUdpSocket::bind("0.0.0.0:0"))
            .collect()
    }

    /// Calls the function whose endpoint `locate` gives (asked again before the retransmission)
    /// with `body`, waiting `timeout` for each of the two attempts.
    pub async fn call(
        &self,
        locate: impl Fn() -> Option<Endpoint>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(FRAGMENT_BODY).collect()
        };
        let count = u16::try_from(chunks.len())
            .map_err(|_| CallError::TooManyFragments { len: body.len() })?;
        // The semaphore is never closed, so this only waits.
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        self.pending.lock().expect("pending map").insert(
            id,
            Pending {
                fragments: Vec::new(),
                received: 0,
                status: None,
                done: Some(tx),
            },
        );
        // Removes the entry however this call ends (answer, timeout, error, cancelled).
        let _guard = Unregister {
            pending: &self.pending,
            id,
        };
        let socket =
            &self.sockets[self.next_socket.fetch_add(1, Ordering::Relaxed) % self.sockets.len()];
        for attempt in 0..2 {
            let Some(endpoint) = locate() else {
                // Removed while the call was in flight.
                return Err(CallError::Timeout {
                    waited: timeout * attempt,
                });
            };
            send_fragments(socket, endpoint, id, &chunks, count).await?;
            if let Ok(Ok((status, body))) = tokio::time::timeout(timeout, &mut rx).await {
                return Ok(Reply {
                    status,
                    body,
                    retransmitted: attempt == 1,
                });
            }
        }
        Err(CallError::Timeout {
            waited: timeout * 2,
        })
    }

    /// Calls now waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().expect("pending map").len()
    }
}

impl Drop for Invoker {
    fn drop(&mut self) {
        for task in &self.receivers {
            task.abort();
        }
    }
}

struct Unregister<'a> {
    pending: &'a PendingMap,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(&self.id);
        }
    }
}

async fn send_fragments(
    socket: &UdpSocket,
    endpoint: Endpoint,
    id: u64,
    chunks: &[&[u8]],
    count: u16,
) -> Result<(), CallError> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + FRAGMENT_BODY);
    for (index, chunk) in chunks.iter().enumerate() {
        let mut header = LambdaHeader::request(endpoint.lambda_id, id);
        header.set_fragment(index as u16, count);
        if index + 1 < chunks.len() {
            header.set_flags(FLAG_MORE);
        }
        datagram.clear();
        datagram.extend_from_slice(header.as_bytes());
        datagram.extend_from_slice(chunk);
        socket
            .send_to(&datagram, endpoint.addr)
            .await
            .map_err(|source| CallError::Send {
                addr: endpoint.addr,
                source,
            })?;
    }
    Ok(())
}

/// One socket's receive loop: every λ response goes to the call that waits for its id;
/// anything else (stray datagrams, late answers to finished calls) is dropped.
async fn receive(socket: Arc<UdpSocket>, pending: PendingMap) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let len = match socket.recv_from(&mut buf).await {
            Ok((len, _)) => len,
            // ICMP errors of earlier sends (a stopped VM) surface here: not this loop's end.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let datagram = &buf[..len];
        let Ok(header) = LambdaHeader::decode(datagram) else {
            continue;
        };
        if !header.is_response() {
            continue;
        }
        let mut map = pending.lock().expect("pending map");
        let Some(call) = map.get_mut(&header.request_id()) else {
            continue;
        };
        if let Some(done) = accept_fragment(call, &header, &datagram[HEADER_LEN..]) {
            let _ = done.0.send((done.1, done.2));
        }
    }
}

type Finished = (
    oneshot::Sender<(Option<Status>, Vec<u8>)>,
    Option<Status>,
    Vec<u8>,
);

/// Files one response fragment; returns the completed answer when it was the last one missing.
fn accept_fragment(call: &mut Pending, header: &LambdaHeader, body: &[u8]) -> Option<Finished> {
    let count = usize::from(header.frag_count().max(1));
    let index = usize::from(header.frag_index());
    if call.fragments.is_empty() {
        call.fragments = vec![None; count];
    }
    // A fragment that disagrees with the first one's count is corrupt or stale: ignore it.
    if call.fragments.len() != count || index >= count || call.fragments[index].is_some() {
        return None;
    }
    call.fragments[index] = Some(body.to_vec());
    call.received += 1;
    let status = header.status();
    if call.status.is_none() || call.status == Some(Status::Ok) {
        call.status = status;
    }
    if call.received < count {
        return None;
    }
    let done = call.done.take()?;
    let body: Vec<u8> = call
        .fragments
        .iter_mut()
        .flat_map(|f| f.take().unwrap_or_default())
        .collect();
    Some((done, call.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: u64, index: u16, count: u16, status: Status) -> LambdaHeader {
        let mut h = LambdaHeader::request(1, id);
        h.set_fragment(index, count);
        h.make_response(status);
        h
    }

    #[test]
    fn fragments_reassemble_in_index_order_and_keep_the_worst_status() {
        let (tx, _rx) = oneshot::channel();
        let mut call = Pending {
            fragments: Vec::new(),
            received: 0,
            status: None,
            done: Some(tx),
        };
        assert!(accept_fragment(&mut call, &response(9, 2, 3, Status::Ok), b"c").is_none());
        assert!(accept_fragment(&mut call, &response(9, 0, 3, Status::TooLarge), b"a").is_none());
        // A duplicate (a retransmission's answer) changes nothing.
        assert!(accept_fragment(&mut call, &response(9, 0, 3, Status::Ok), b"x").is_none());
        // A fragment claiming another count is ignored.
        assert!(accept_fragment(&mut call, &response(9, 1, 4, Status::Ok), b"y").is_none());
        let (_, status, body) =
            accept_fragment(&mut call, &response(9, 1, 3, Status::Ok), b"b").expect("complete");
        assert_eq!(status, Some(Status::TooLarge));
        assert_eq!(body, b"abc");
    }

    #[tokio::test]
    async fn a_call_splits_large_bodies_and_reassembles_the_echoed_fragments() {
        // A plain UDP echo that answers every fragment with its own body, like the lambdas do.
        let server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, peer)) = server.recv_from(&mut buf) {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut h = LambdaHeader::decode(&buf[..len]).unwrap();
                h.make_response(Status::Ok);
                let mut out = h.as_bytes().to_vec();
                out.extend_from_slice(&buf[HEADER_LEN..len]);
                server.send_to(&out, peer).unwrap();
            }
        });
        let invoker = Invoker::new(Invoker::bind_local(2).unwrap()).unwrap();
        let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let endpoint = Endpoint { addr, lambda_id: 3 };
        let reply = invoker
            .call(|| Some(endpoint), &body, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(reply.status, Some(Status::Ok));
        assert_eq!(reply.body, body);
        assert_eq!(
            seen.load(Ordering::Relaxed),
            body.len().div_ceil(FRAGMENT_BODY)
        );
        assert_eq!(invoker.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousands_of_concurrent_calls_share_two_sockets() {
        // A UDP responder that answers each request with its request id as the body, from
        // one thread: every call must get its own answer back, matched by request id.
        let server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((len, peer)) = server.recv_from(&mut buf) {
                let mut h = LambdaHeader::decode(&buf[..len]).unwrap();
                h.make_response(Status::Ok);
                let mut out = h.as_bytes().to_vec();
                out.extend_from_slice(&buf[HEADER_LEN..len]);
                let _ = server.send_to(&out, peer);
            }
        });
        let invoker = Arc::new(Invoker::new(Invoker::bind_local(2).unwrap()).unwrap());
        let endpoint = Endpoint { addr, lambda_id: 1 };
        let calls: Vec<_> = (0..3000u32)
            .map(|i| {
                let invoker = Arc::clone(&invoker);
                tokio::spawn(async move {
                    let body = format!("call {i}");
                    let reply = invoker
                        .call(|| Some(endpoint), body.as_bytes(), Duration::from_secs(5))
                        .await
                        .unwrap();
                    assert_eq!(reply.body, body.as_bytes(), "answers are not mixed up");
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(invoker.in_flight(), 0);
    }

    #[tokio::test]
    async fn silence_is_a_timeout_after_one_retransmission() {
        let server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint {
            addr: server.local_addr().unwrap(),
            lambda_id: 1,
        };
        let invoker = Invoker::new(Invoker::bind_local(1).unwrap()).unwrap();
        let err = invoker
            .call(|| Some(endpoint), b"x", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while server.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, 2, "the request is sent once and retransmitted once");
    }
}
