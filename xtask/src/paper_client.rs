//! The load clients of `bench paper`: λ requests over UDP (one blocking socket per thread,
//! request ids matched, every answer checked against the expected bytes) and HTTP calls to the
//! gateway (keep-alive, answers checked too), with per-request latencies.
//!
//! A client thread enters the client's network namespace itself (`setns` on the thread) and pins
//! itself to a CPU, so the bench needs no helper process and the timing is in-process.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lambda_ebpf::{LambdaHeader, Status};

/// One kind of request and the answer it must get.
#[derive(Clone, Debug)]
pub struct Call {
    pub target: SocketAddr,
    pub lambda_id: u32,
    pub body: Vec<u8>,
    /// The body of the OK answer.
    pub expected: Vec<u8>,
}

/// What a run of requests measured.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Round-trip time of each answered request, in microseconds, in send order.
    pub us: Vec<f64>,
    /// Answers with another status or other bytes than expected.
    pub wrong: u64,
    /// Requests unanswered within the timeout (each resent with a new id, up to `RETRIES`).
    pub lost: u64,
    /// The first wrong answer, for the report.
    pub first_wrong: Option<String>,
}

impl Samples {
    pub fn merge(&mut self, other: Samples) {
        self.us.extend(other.us);
        self.wrong += other.wrong;
        self.lost += other.lost;
        if self.first_wrong.is_none() {
            self.first_wrong = other.first_wrong;
        }
    }
}

const TIMEOUT: Duration = Duration::from_millis(500);
const RETRIES: u32 = 5;

/// Runs `f` on a new thread inside network namespace `netns` (`None`: this one), pinned to
/// `cpu` (`None`: unpinned).
pub fn on_thread<T: Send + 'static>(
    netns: Option<String>,
    cpu: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            enter_netns(&ns)?;
        }
        if let Some(cpu) = cpu {
            crate::bench_vm::pin_to_cpu(cpu)?;
        }
        f()
    })
}

/// Moves the calling thread into `/run/netns/<name>` (network namespace only).
fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd; it changes only this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering network namespace {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A blocking UDP client socket; request ids are unique per socket.
pub struct UdpClient {
    socket: UdpSocket,
    next_id: u64,
    buf: Vec<u8>,
}

impl UdpClient {
    pub fn new(seed: u64) -> Result<UdpClient> {
        let socket = UdpSocket::bind("0.0.0.0:0").context("binding a UDP client socket")?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(UdpClient {
            socket,
            next_id: seed << 40,
            buf: vec![0; 65_536],
        })
    }

    /// Sends `call` until answered (or `RETRIES` timeouts) and checks the answer; adds the
    /// figure to `samples`.
    pub fn call(&mut self, call: &Call, samples: &mut Samples) -> Result<()> {
        for _ in 0..RETRIES {
            self.next_id += 1;
            let id = self.next_id;
            let mut datagram = LambdaHeader::request(call.lambda_id, id)
                .as_bytes()
                .to_vec();
            datagram.extend_from_slice(&call.body);
            let started = Instant::now();
            self.socket
                .send_to(&datagram, call.target)
                .with_context(|| format!("sending to {}", call.target))?;
            loop {
                let n = match self.socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        samples.lost += 1;
                        break;
                    }
                    Err(e) => return Err(e).context("receiving an answer"),
                };
                let Ok(header) = LambdaHeader::decode(&self.buf[..n]) else {
                    continue;
                };
                if header.request_id() != id {
                    // A late answer to a request given up on.
                    continue;
                }
                samples.us.push(started.elapsed().as_secs_f64() * 1e6);
                let body = &self.buf[lambda_ebpf::wire::HEADER_LEN..n];
                let ok = header.status() == Some(Status::Ok) && body == call.expected.as_slice();
                if !ok {
                    samples.wrong += 1;
                    if samples.first_wrong.is_none() {
                        samples.first_wrong = Some(format!(
                            "status {:?}, {} bytes {:?}… (expected OK, {} bytes)",
                            header.status(),
                            body.len(),
                            String::from_utf8_lossy(&body[..body.len().min(40)]),
                            call.expected.len()
                        ));
                    }
                }
                return Ok(());
            }
        }
        bail!(
            "{} got no answer in {RETRIES} tries of {TIMEOUT:?}",
            call.target
        )
    }
}

/// A request over either transport: a λ datagram, or an HTTP call (the watchdog, the gateway).
#[derive(Clone, Debug)]
pub enum Target {
    Udp(Call),
    Http(HttpCall),
}

/// One client thread's connection state for either transport.
struct Caller {
    udp: Option<UdpClient>,
    /// One keep-alive connection per server address.
    http: std::collections::HashMap<SocketAddr, Option<TcpStream>>,
    seed: u64,
}

impl Caller {
    fn new(seed: u64) -> Caller {
        Caller {
            udp: None,
            http: std::collections::HashMap::new(),
            seed,
        }
    }

    fn call(&mut self, target: &Target, samples: &mut Samples) -> Result<()> {
        match target {
            Target::Udp(call) => {
                let client = match &mut self.udp {
                    Some(c) => c,
                    None => self.udp.insert(UdpClient::new(self.seed)?),
                };
                client.call(call, samples)
            }
            Target::Http(call) => http_call(self.http.entry(call.addr).or_default(), call, samples),
        }
    }
}

/// `count` requests of `target`, one after the other, after `warmup` unmeasured ones, on a
/// thread in `netns` (`None`: this one) pinned to `cpu`.
pub fn latency(
    netns: Option<&str>,
    cpu: usize,
    target: &Target,
    warmup: u32,
    count: u32,
) -> Result<Samples> {
    let target = target.clone();
    on_thread(netns.map(str::to_owned), Some(cpu), move || {
        let mut client = Caller::new(1);
        let mut warm = Samples::default();
        for _ in 0..warmup {
            client.call(&target, &mut warm)?;
        }
        let mut samples = Samples {
            wrong: warm.wrong,
            first_wrong: warm.first_wrong,
            ..Samples::default()
        };
        for _ in 0..count {
            client.call(&target, &mut samples)?;
        }
        Ok(samples)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// Requests of `target` one after the other for `duration` (after `warmup` unmeasured ones), on
/// a thread in `netns` pinned to `cpu`: the load under which Table 3 samples the host.
pub fn run_for(
    netns: &str,
    cpu: usize,
    target: &Target,
    warmup: u32,
    duration: Duration,
    on_start: impl FnOnce() + Send + 'static,
) -> Result<(Duration, Samples)> {
    let target = target.clone();
    on_thread(Some(netns.to_owned()), Some(cpu), move || {
        let mut client = Caller::new(1 << 20);
        let mut samples = Samples::default();
        for _ in 0..warmup {
            client.call(&target, &mut samples)?;
        }
        samples.us.clear();
        on_start();
        let started = Instant::now();
        while started.elapsed() < duration {
            client.call(&target, &mut samples)?;
        }
        Ok((started.elapsed(), samples))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// `total` requests spread over `threads` client threads (each its own socket, requests in
/// turn from `calls`), all pinned to `cpu`; returns the wall time until the last answer and the
/// merged samples.
pub fn completion(
    netns: &str,
    cpu: usize,
    calls: &[Target],
    threads: u32,
    total: u32,
) -> Result<(Duration, Samples)> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads as usize + 1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = total / threads + u32::from(t < total % threads);
        let calls = calls.to_vec();
        let barrier = barrier.clone();
        handles.push(on_thread(Some(netns.to_owned()), Some(cpu), move || {
            let mut client = Caller::new(u64::from(t) + 2);
            let mut samples = Samples::default();
            barrier.wait();
            for i in 0..share {
                let call = &calls[(i as usize + t as usize) % calls.len()];
                client.call(call, &mut samples)?;
            }
            Ok(samples)
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut merged = Samples::default();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => merged.merge(s),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => first_error = first_error.or(Some(anyhow::anyhow!("client panicked"))),
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok((elapsed, merged))
}

/// One HTTP call to the gateway and the body it must answer with.
#[derive(Clone, Debug)]
pub struct HttpCall {
    pub addr: SocketAddr,
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
    pub expected: Vec<u8>,
}

fn http_call(conn: &mut Option<TcpStream>, call: &HttpCall, samples: &mut Samples) -> Result<()> {
    let started = Instant::now();
    let (status, body, keep) = match conn.as_mut().map(|s| http_exchange(s, call)) {
        Some(Ok(answer)) => answer,
        // No connection yet, or the kept one was closed by the server: open a new one.
        _ => {
            let stream = TcpStream::connect(call.addr).context("connecting to the gateway")?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let stream = conn.insert(stream);
            http_exchange(stream, call)?
        }
    };
    samples.us.push(started.elapsed().as_secs_f64() * 1e6);
    if status != 200 || body != call.expected {
        samples.wrong += 1;
        if samples.first_wrong.is_none() {
            samples.first_wrong = Some(format!(
                "HTTP {status}, {} bytes {:?}…",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(40)])
            ));
        }
    }
    if !keep {
        *conn = None;
    }
    Ok(())
}

/// Writes one request and reads one response (Content-Length framed); returns the status,
/// the body and whether the connection stays open.
fn http_exchange(stream: &mut TcpStream, call: &HttpCall) -> Result<(u16, Vec<u8>, bool)> {
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        call.method,
        call.path,
        call.addr,
        call.body.len()
    );
    let mut out = request.into_bytes();
    out.extend_from_slice(&call.body);
    stream.write_all(&out)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Content-Length in the gateway's response")?;
    let keep = !head.contains("connection: close");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed inside a response body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec(), keep))
}

/// avg, standard deviation, p50, p99 of `us`.
pub fn summary(us: &[f64]) -> (f64, f64, f64, f64) {
    if us.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let n = us.len() as f64;
    let avg = us.iter().sum::<f64>() / n;
    let var = us.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n;
    let mut sorted = us.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        avg,
        var.sqrt(),
        quantile(&sorted, 0.50),
        quantile(&sorted, 0.99),
    )
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_values() {
        let us: Vec<f64> = (1..=100).map(f64::from).collect();
        let (avg, std, p50, p99) = summary(&us);
        assert!((avg - 50.5).abs() < 1e-9);
        assert!((std - 28.866_070_047_722_12).abs() < 1e-9);
        assert_eq!((p50, p99), (50.0, 99.0));
        assert!(summary(&[]).0.is_nan());
    }

    #[test]
    fn udp_client_checks_answers() {
        // A loopback echo-ish server that answers OK with "yes" and, for id 3, wrong bytes.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for i in 0..3 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let mut header = LambdaHeader::decode(&buf[..n]).unwrap();
                header.make_response(Status::Ok);
                let mut out = header.as_bytes().to_vec();
                out.extend_from_slice(if i == 2 { b"no!" } else { b"yes" });
                server.send_to(&out, from).unwrap();
            }
        });
        let call = Call {
            target: addr,
            lambda_id: 1,
            body: b"q".to_vec(),
            expected: b"yes".to_vec(),
        };
        let mut client = UdpClient::new(9).unwrap();
        let mut samples = Samples::default();
        for _ in 0..3 {
            client.call(&call, &mut samples).unwrap();
        }
        handle.join().unwrap();
        assert_eq!(samples.us.len(), 3);
        assert_eq!(samples.wrong, 1);
        assert!(samples.first_wrong.unwrap().contains("no!"));
    }

    /// A keep-alive HTTP server on loopback answering every request with `answer`.
    fn http_server(answer: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        // Requests here have no body: one request per blank line.
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                                answer.len()
                            );
                            stream.write_all(head.as_bytes()).unwrap();
                            stream.write_all(answer).unwrap();
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn http_calls_keep_one_connection_per_server() {
        let targets: Vec<Target> = [b"first" as &[u8], b"second"]
            .iter()
            .map(|answer| {
                Target::Http(HttpCall {
                    addr: http_server(answer),
                    method: "GET",
                    path: "/".to_owned(),
                    body: Vec::new(),
                    expected: answer.to_vec(),
                })
            })
            .collect();
        let mut caller = Caller::new(1);
        let mut samples = Samples::default();
        for i in 0..10 {
            caller.call(&targets[i % 2], &mut samples).unwrap();
        }
        assert_eq!(samples.us.len(), 10);
        assert_eq!(samples.wrong, 0, "{:?}", samples.first_wrong);
        assert_eq!(caller.http.len(), 2);
        // A wrong answer is counted, not hidden.
        let Target::Http(mut wrong) = targets[0].clone() else {
            unreachable!()
        };
        wrong.expected = b"other".to_vec();
        caller.call(&Target::Http(wrong), &mut samples).unwrap();
        assert_eq!(samples.wrong, 1);
    }
}
