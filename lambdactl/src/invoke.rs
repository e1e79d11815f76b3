//! `lambdactl invoke`: a λ client over UDP with round-trip statistics.

use std::{
    fs, io,
    net::{SocketAddr, ToSocketAddrs as _, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

use crate::{InvokeArgs, print_body, status_text};

/// Exit status when at least one request got no valid response (timeout or refused).
const EXIT_UNANSWERED: u8 = 3;
/// Exit status when every request was answered but at least one status was not OK.
const EXIT_NOT_OK: u8 = 4;

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 8 {
        // getrandom cannot really fail here; fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(buf)
}

/// What came back for one request.
enum Answer {
    Response {
        header: LambdaHeader,
        body: Vec<u8>,
        rtt: Duration,
    },
    Timeout,
    Refused,
}

pub(crate) fn invoke(args: InvokeArgs) -> Result<ExitCode> {
    let addr: SocketAddr = args
        .target
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "bad target `{}` (want ADDR:PORT, e.g. 10.0.0.1:9000 or [fd00::1]:9000)",
                args.target
            )
        })?
        .next()
        .ok_or_else(|| anyhow!("`{}` resolves to no address", args.target))?;
    if let Some(image) = &args.image {
        return invoke_image(&args, addr, image);
    }
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(path)) => {
            fs::read(path).with_context(|| format!("cannot read body file {}", path.display()))?
        }
        (None, None) => Vec::new(),
    };
    // A request is one datagram and lambdas see only whole ones: a datagram the IP layer
    // would fragment on a 1500-byte MTU passes the XDP hook as fragments and is never answered.
    let ip_and_udp = if addr.is_ipv4() { 20 + 8 } else { 40 + 8 };
    let fits_one_frame = 1500 - ip_and_udp - HEADER_LEN;
    if body.len() > fits_one_frame {
        bail!(
            "a {}-byte body does not fit one 1500-byte-MTU datagram ({fits_one_frame} bytes at most over {}): lambdas only see whole datagrams",
            body.len(),
            if addr.is_ipv4() { "IPv4" } else { "IPv6" }
        );
    }
    let socket = connected_socket(addr)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));

    let mut rtts = Vec::new();
    let (mut unanswered, mut not_ok, mut ignored) = (0u32, 0u32, 0u32);
    let mut buf = vec![0u8; 65536];
    for _ in 0..args.count {
        let request_id = random_u64();
        let mut datagram = LambdaHeader::request(args.lambda, request_id)
            .as_bytes()
            .to_vec();
        datagram.extend_from_slice(&body);
        let (answer, skipped) = exchange(&socket, &datagram, request_id, timeout, &mut buf)
            .with_context(|| format!("request to {addr} failed"))?;
        ignored += skipped;
        match answer {
            Answer::Response { header, body, rtt } => {
                rtts.push(rtt);
                let ok = header.status() == Some(Status::Ok);
                if !ok {
                    not_ok += 1;
                }
                if args.count == 1 {
                    println!(
                        "{} from {addr} in {} µs ({} byte body)",
                        status_text(&header),
                        rtt.as_micros(),
                        body.len()
                    );
                    print_body(&body);
                }
            }
            Answer::Timeout => {
                unanswered += 1;
                if args.count == 1 {
                    println!("no response from {addr} within {} ms", timeout.as_millis());
                }
            }
            Answer::Refused => {
                unanswered += 1;
                if args.count == 1 {
                    println!(
                        "refused: {addr} answered with ICMP port unreachable (no lambda took the request, and nothing listens there)"
                    );
                }
            }
        }
    }
    if args.count > 1 {
        println!(
            "{} requests to {addr}: {} answered ({} not OK), {} unanswered, {} other datagrams ignored",
            args.count,
            rtts.len(),
            not_ok,
            unanswered,
            ignored
        );
        if !rtts.is_empty() {
            rtts.sort();
            let pct = |p: f64| {
                let i = ((rtts.len() as f64 - 1.0) * p).round() as usize;
                rtts[i].as_secs_f64() * 1e6
            };
            println!(
                "round trip µs: min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                pct(0.0),
                pct(0.5),
                pct(0.9),
                pct(0.99),
                pct(1.0)
            );
        }
    } else if ignored > 0 {
        println!("({ignored} unrelated datagrams ignored)");
    }
    Ok(if unanswered > 0 {
        ExitCode::from(EXIT_UNANSWERED)
    } else if not_ok > 0 {
        ExitCode::from(EXIT_NOT_OK)
    } else {
        ExitCode::SUCCESS
    })
}

/// `invoke --image`: the whole image as one fragmented request to the grayscale lambda.
fn invoke_image(args: &InvokeArgs, addr: SocketAddr, path: &std::path::Path) -> Result<ExitCode> {
    let out = args
        .out
        .as_deref()
        .ok_or_else(|| anyhow!("--image needs --out"))?;
    let image = crate::image::read_png(path)?;
    let socket = connected_socket(addr)?;
    let pacing = crate::image::Pacing {
        window: args.window as usize,
        retransmit_after: Duration::from_millis(args.retransmit_ms),
        max_sends: args.max_sends,
    };
    let request_id = random_u64();
    let transfer =
        crate::image::grayscale(&socket, addr, args.lambda, request_id, &image, &pacing)?;
    crate::image::write_gray_png(out, image.dims, &transfer.gray)?;
    let secs = transfer.elapsed.as_secs_f64();
    println!(
        "{}x{} image: {} fragments, {} sent, {} retransmitted, {} duplicate answers, in {:.1} ms ({:.1} MB/s of RGB)",
        image.dims.width(),
        image.dims.height(),
        transfer.fragments,
        transfer.sent,
        transfer.retransmitted,
        transfer.duplicates,
        secs * 1e3,
        image.rgb.len() as f64 / secs.max(1e-9) / 1e6
    );
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// A UDP socket connected to `addr`, so only its datagrams (and ICMP errors) reach it.
fn connected_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).context("cannot open a UDP socket")?;
    socket
        .connect(addr)
        .with_context(|| format!("cannot reach {addr}"))?;
    Ok(socket)
}

/// Sends one request and waits for the response with its request id. Returns the answer and
/// how many other datagrams were skipped.
fn exchange(
    socket: &UdpSocket,
    datagram: &[u8],
    request_id: u64,
    timeout: Duration,
    buf: &mut [u8],
) -> io::Result<(Answer, u32)> {
    let start = Instant::now();
    let deadline = start + timeout;
    socket.send(datagram)?;
    let mut ignored = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok((Answer::Timeout, ignored));
        }
        socket.set_read_timeout(Some(deadline - now))?;
        match socket.recv(buf) {
            Ok(n) => {
                let rtt = start.elapsed();
                match LambdaHeader::decode(&buf[..n]) {
                    Ok(h) if h.request_id() == request_id && h.is_response() => {
                        return Ok((
                            Answer::Response {
                                header: h,
                                body: buf[HEADER_LEN..n].to_vec(),
                                rtt,
                            },
                            ignored,
                        ));
                    }
                    _ => ignored += 1,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok((Answer::Timeout, ignored));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Ok((Answer::Refused, ignored));
            }
            Err(e) => return Err(e),
        }
    }
}
