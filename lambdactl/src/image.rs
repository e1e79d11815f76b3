//! `lambdactl invoke --image`: the grayscale client. Splits an image into the fragments
//! `workloads::grayscale` defines, keeps a window of them in flight, resends the ones whose
//! answer does not come back in time, and reassembles the gray answers into a PNG.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufReader, BufWriter},
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use lambda_ebpf::MAX_BODY;
use lambda_ebpf::wire::{FLAG_MORE, HEADER_LEN, LambdaHeader, Status};
use workloads::grayscale::{BYTES_PER_PIXEL, Dimensions, MAX_SIDE, place_response, request_body};

/// An RGB image in memory, 3 bytes per pixel, row-major.
pub struct RgbImage {
    pub dims: Dimensions,
    pub rgb: Vec<u8>,
}

/// Reads a PNG of any colour type and depth as 8-bit RGB: palettes are expanded, 16-bit
/// samples keep their high byte, grey is copied to R, G and B, alpha is dropped.
pub fn read_png(path: &Path) -> Result<RgbImage> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let (width, height) = (reader.info().width, reader.info().height);
    let dims = Dimensions::new(width, height).map_err(|_| {
        anyhow!(
            "{} is {width}x{height}: images must be 1 to {MAX_SIDE} pixels on each side",
            path.display()
        )
    })?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let samples = &buf[..frame.buffer_size()];
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        // Expanded by the transformation above.
        png::ColorType::Indexed => bail!("{}: palette was not expanded", path.display()),
    };
    let mut rgb = Vec::with_capacity(dims.pixels() * BYTES_PER_PIXEL);
    for row in samples.chunks(frame.line_size).take(height as usize) {
        for pixel in row.chunks_exact(channels).take(width as usize) {
            if channels < 3 {
                rgb.extend_from_slice(&[pixel[0]; 3]);
            } else {
                rgb.extend_from_slice(&pixel[..3]);
            }
        }
    }
    if rgb.len() != dims.pixels() * BYTES_PER_PIXEL {
        bail!(
            "{}: decoded image is shorter than its header says",
            path.display()
        );
    }
    Ok(RgbImage { dims, rgb })
}

/// Writes `gray` (one byte per pixel) as an 8-bit greyscale PNG.
pub fn write_gray_png(path: &Path, dims: Dimensions, gray: &[u8]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), dims.width(), dims.height());
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    // Fast: the default level spends seconds on a 4096 × 4096 result for a few percent.
    encoder.set_compression(png::Compression::Fast);
    let writer = encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(gray).map(|()| w))
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// How the transfer is paced and retried.
pub struct Pacing {
    /// Fragments in flight at once.
    pub window: usize,
    /// How long a fragment may go unanswered before it is sent again.
    pub retransmit_after: Duration,
    /// Sends per fragment, the first included, before giving up.
    pub max_sends: u32,
}

/// What a transfer did.
pub struct Transfer {
    pub gray: Vec<u8>,
    pub fragments: u16,
    pub sent: u64,
    pub retransmitted: u64,
    pub duplicates: u64,
    pub elapsed: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FragState {
    Waiting,
    /// Sent, not answered; the number of the latest send.
    InFlight(u32),
    Done,
}

/// Sends `image` to the grayscale lambda at `addr` and returns the reassembled gray image.
pub fn grayscale(
    socket: &UdpSocket,
    addr: SocketAddr,
    lambda: u32,
    request_id: u64,
    image: &RgbImage,
    pacing: &Pacing,
) -> Result<Transfer> {
    let dims = image.dims;
    let count = dims.fragment_count();
    let window = pacing.window.max(1);
    let mut state = vec![FragState::Waiting; usize::from(count)];
    let mut sends = vec![0u32; usize::from(count)];
    let mut waiting: VecDeque<u16> = (0..count).collect();
    // Sends in order (so deadlines are in order); entries whose fragment was answered or sent
    // again since are skipped when they reach the front.
    let mut timers: VecDeque<(u16, u32, Instant)> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut gray = vec![0u8; dims.pixels()];
    let (mut done, mut sent, mut retransmitted, mut duplicates) = (0usize, 0u64, 0u64, 0u64);
    let mut datagram = vec![0u8; HEADER_LEN + MAX_BODY];
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();

    while done < usize::from(count) {
        // Fill the window.
        while in_flight < window {
            let Some(index) = waiting.pop_front() else {
                break;
            };
            let i = usize::from(index);
            if state[i] == FragState::Done {
                continue;
            }
            if sends[i] >= pacing.max_sends {
                bail!(
                    "fragment {index} of {count} got no answer from {addr} after {} sends, {} ms apart",
                    sends[i],
                    pacing.retransmit_after.as_millis()
                );
            }
            let mut header = LambdaHeader::request(lambda, request_id);
            header.set_fragment(index, count);
            if index + 1 < count {
                header.set_flags(FLAG_MORE);
            }
            datagram[..HEADER_LEN].copy_from_slice(header.as_bytes());
            let len = request_body(dims, &image.rgb, index, &mut datagram[HEADER_LEN..])
                .map_err(|e| anyhow!("cannot build fragment {index}: {e}"))?;
            send(socket, &datagram[..HEADER_LEN + len], addr)?;
            sends[i] += 1;
            sent += 1;
            if sends[i] > 1 {
                retransmitted += 1;
            }
            state[i] = FragState::InFlight(sends[i]);
            in_flight += 1;
            timers.push_back((index, sends[i], Instant::now() + pacing.retransmit_after));
        }

        // Wait for an answer until the oldest send's deadline.
        let now = Instant::now();
        let wait = timers
            .front()
            .map(|&(_, _, deadline)| deadline.saturating_duration_since(now))
            .unwrap_or(pacing.retransmit_after)
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let Ok(header) = LambdaHeader::decode(&buf[..n]) else {
                    continue;
                };
                if !header.is_response()
                    || header.request_id() != request_id
                    || header.frag_count() != count
                    || header.frag_index() >= count
                {
                    continue;
                }
                let index = header.frag_index();
                let i = usize::from(index);
                if header.status() != Some(Status::Ok) {
                    bail!(
                        "{addr} answered fragment {index} of {count} with {}",
                        crate::status_text(&header)
                    );
                }
                match state[i] {
                    FragState::Done => duplicates += 1,
                    previous => {
                        place_response(dims, index, &buf[HEADER_LEN..n], &mut gray)
                            .map_err(|e| anyhow!("bad answer from {addr}: {e}"))?;
                        if matches!(previous, FragState::InFlight(_)) {
                            in_flight -= 1;
                        }
                        state[i] = FragState::Done;
                        done += 1;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => bail!(
                "refused: {addr} answered with ICMP port unreachable (no lambda took the request, and nothing listens there)"
            ),
            Err(e) => return Err(e).with_context(|| format!("receiving from {addr}")),
        }

        // Everything past its deadline goes back to the queue, to be sent again.
        let now = Instant::now();
        while let Some(&(index, send, deadline)) = timers.front() {
            let i = usize::from(index);
            if state[i] != FragState::InFlight(send) {
                timers.pop_front();
                continue;
            }
            if deadline > now {
                break;
            }
            timers.pop_front();
            state[i] = FragState::Waiting;
            in_flight -= 1;
            waiting.push_back(index);
        }
    }
    Ok(Transfer {
        gray,
        fragments: count,
        sent,
        retransmitted,
        duplicates,
        elapsed: start.elapsed(),
    })
}

fn send(socket: &UdpSocket, datagram: &[u8], addr: SocketAddr) -> Result<()> {
    loop {
        match socket.send(datagram) {
            Ok(_) => return Ok(()),
            // A full socket buffer: the window is larger than the kernel queues; retry.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            // A local firewall rule dropped it (netfilter answers the send with EPERM): as
            // lost on the way, the timer resends it.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
            // An earlier datagram's ICMP port unreachable surfaces on the next send.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => bail!(
                "refused: {addr} answered with ICMP port unreachable (no lambda took the request, and nothing listens there)"
            ),
            Err(e) => return Err(e).with_context(|| format!("sending to {addr}")),
        }
    }
}
