//! Differential property test: every sample lambda under BPF_PROG_TEST_RUN (the reference) and
//! in the VM, with the interpreter and with the JIT.
//!
//! For each sample object a seeded generator produces `LNIC_DIFF_PACKETS` frames (default
//! 10,000): valid λ requests (IPv4, IPv4 with options, IPv6; the static server's object names and
//! random ones; bodies up to and past `MAX_BODY`), borderline frames (cut at every header
//! boundary, wrong UDP/IP lengths, bad IPv4 checksum, fragments, wrong magic/version, responses,
//! other ports, truncated λ headers, Ethernet padding, 1514-byte frames and larger ones up to the
//! 3520 bytes both backends hold in one buffer) and garbage (random bytes, bit flips and cuts of
//! valid frames). Every frame runs on the kernel, the interpreter and the JIT; action and output
//! bytes must be identical, and so must the contents of every declared (non-global-data) map,
//! compared every [`MAP_CHECK_EVERY`] frames and at the end.
//!
//! A frame on which any backend differs is written to `tests/regressions/<sample>-<seed>-<index>.bin`
//! (the raw Ethernet frame), and `regressions_replay_on_every_backend` replays every such file on
//! fresh loads of all three backends. Those files are kept: they are the regression suite.
//!
//! Environment:
//! - `LNIC_DIFF_PACKETS`: frames per sample (default 10,000).
//! - `LNIC_DIFF_SEED`: the base seed (decimal or `0x` hex); each sample's seed derives from it and
//!   is printed, with the case index, in every failure message.
//! - `LNIC_DIFF_SAMPLES`: comma-separated sample names to run (default: all).
//!
//! Needs root (BPF_PROG_TEST_RUN) and the objects `cargo xtask build-ebpf` writes to
//! `target/lambdas/`. Without either it prints "skipping: …" and passes, except under `CI=true`,
//! where both are required.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use lambda_ebpf::MAX_BODY;
use lambda_ebpf::wire::{
    DEFAULT_PORT, FLAG_MORE, FLAG_RESPONSE, HEADER_LEN, LambdaHeader, MAGIC, VERSION,
};
use loader::frames::{FrameError, UdpFrame};
use loader::link::LinkedMapKind;
use loader::maps::{MapAccess as _, possible_cpus};
use loader::vm::memory::MAX_PACKET;
use loader::vm::{Engine, VmOptions, VmProgram, Worker};
use loader::{LambdaParams, TestRunner, XdpAction};

/// The sample lambdas, by object name in `target/lambdas/`.
const SAMPLES: [&str; 4] = ["static-server", "echo", "pong", "baseline-raw-pong"];
/// Frames per sample unless `LNIC_DIFF_PACKETS` says otherwise.
const DEFAULT_PACKETS: usize = 10_000;
/// Base seed unless `LNIC_DIFF_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x1a4b_d1ff_2024_0bad;
/// Maps are compared after every this many frames (and after the last).
const MAP_CHECK_EVERY: usize = 500;
/// Regression files written per sample at most (a systematic difference would write thousands).
const MAX_SAVED_PER_SAMPLE: usize = 100;
/// Differences described in full per sample at most.
const MAX_REPORTED_PER_SAMPLE: usize = 10;

/// The shortest frame BPF_PROG_TEST_RUN accepts for XDP (an Ethernet header).
const MIN_FRAME: usize = 14;
/// The longest frame generated: well past a 1514-byte Ethernet frame, up to what both backends
/// take in one linear buffer (the VM's frame holds `MAX_PACKET` bytes; the kernel's test run puts
/// as many, 4096 − 256 headroom − 320 `skb_shared_info`, in its linear part).
const MAX_FRAME: usize = MAX_PACKET;

const ETH_LEN: usize = 14;
const UDP_LEN: usize = 8;
/// Longest object name the static server accepts.
const NAME_MAX: usize = 64;
/// Object names worth asking the static server for: the seeded one and its near misses.
const KNOWN_NAMES: [&[u8]; 10] = [
    b"index.html",
    b"index.html\0",
    b"index.html\0\0\0\0\0\0",
    b"index.htm",
    b"index.htmll",
    b"Index.html",
    b"/index.html",
    b"index.html ",
    b"\0index.html",
    b"i",
];

// ---------------------------------------------------------------------------------------------
// Random numbers and the generator.

/// xorshift64: small, deterministic, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // xorshift never leaves zero.
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// What kind of frame a case is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Valid,
    Borderline,
    Garbage,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Valid => "valid",
            Class::Borderline => "borderline",
            Class::Garbage => "garbage",
        }
    }
}

/// One generated frame.
struct Case {
    class: Class,
    /// How it was made, for failure messages.
    label: String,
    frame: Vec<u8>,
}

/// A request before encoding: everything the generator may vary.
struct Request {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    /// IPv4 options (a multiple of 4 bytes, at most 40); empty for IPv6.
    options: Vec<u8>,
    /// The UDP payload: λ header and body.
    payload: Vec<u8>,
}

/// An encoded request and where its headers lie.
struct Built {
    frame: Vec<u8>,
    v6: bool,
    /// IP header length, options included.
    ip_len: usize,
}

impl Built {
    fn ip(&self) -> usize {
        ETH_LEN
    }
    fn udp(&self) -> usize {
        ETH_LEN + self.ip_len
    }
    fn lambda(&self) -> usize {
        self.udp() + UDP_LEN
    }
    fn body(&self) -> usize {
        self.lambda() + HEADER_LEN
    }
}

/// Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn put_u16(frame: &mut [u8], at: usize, value: u16) {
    if let Some(field) = frame.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

fn get_u16(frame: &[u8], at: usize) -> u16 {
    frame
        .get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// Recomputes the IPv4 header checksum of a frame whose IPv4 header is `ip_len` bytes.
fn fix_ipv4_checksum(frame: &mut [u8], ip_len: usize) {
    if frame.len() < ETH_LEN + ip_len {
        return;
    }
    put_u16(frame, ETH_LEN + 10, 0);
    let sum = checksum(&frame[ETH_LEN..ETH_LEN + ip_len]);
    put_u16(frame, ETH_LEN + 10, sum);
}

fn encode(request: &Request) -> Result<Built, FrameError> {
    let mut frame = UdpFrame {
        src_mac: request.src_mac,
        dst_mac: request.dst_mac,
        src: request.src,
        dst: request.dst,
        payload: request.payload.clone(),
    }
    .encode()?;
    let v6 = request.src.is_ipv6();
    let mut ip_len = if v6 { 40 } else { 20 };
    if !v6 && !request.options.is_empty() {
        let options = &request.options;
        frame.splice(ETH_LEN + 20..ETH_LEN + 20, options.iter().copied());
        ip_len += options.len();
        frame[ETH_LEN] = 0x40 | (ip_len / 4) as u8;
        let total = get_u16(&frame, ETH_LEN + 2) as usize + options.len();
        put_u16(&mut frame, ETH_LEN + 2, total as u16);
        fix_ipv4_checksum(&mut frame, ip_len);
    }
    Ok(Built { frame, v6, ip_len })
}

struct Generator {
    rng: Rng,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
        }
    }

    /// The next case, at least [`MIN_FRAME`] and at most [`MAX_FRAME`] bytes.
    fn case(&mut self) -> Result<Case, FrameError> {
        let roll = self.rng.below(100);
        let mut case = if roll < 40 {
            self.valid()?
        } else if roll < 75 {
            self.borderline()?
        } else {
            self.garbage()?
        };
        if case.frame.len() < MIN_FRAME {
            let missing = MIN_FRAME - case.frame.len();
            let fill = self.rng.bytes(missing);
            case.frame.extend_from_slice(&fill);
        }
        case.frame.truncate(MAX_FRAME);
        Ok(case)
    }

    fn mac(&mut self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.iter_mut().for_each(|b| *b = self.rng.byte());
        mac
    }

    fn lambda_header(&mut self, label: &mut String) -> [u8; HEADER_LEN] {
        let lambda_id = match self.rng.below(4) {
            0 => 0,
            1 => 1,
            2 => u32::MAX,
            _ => self.rng.next() as u32,
        };
        let mut header = LambdaHeader::request(lambda_id, self.rng.next());
        if self.rng.one_in(4) {
            let count = self.rng.range(1, 8) as u16;
            let index = self.rng.below(usize::from(count)) as u16;
            header.set_fragment(index, count);
            if index + 1 < count {
                header.set_flags(FLAG_MORE);
            }
            label.push_str(" frag");
        }
        let mut bytes = *header.as_bytes();
        if self.rng.one_in(8) {
            // Status and reserved are the lambda's to write: random here.
            bytes[20..24].copy_from_slice(&self.rng.bytes(4));
        }
        bytes
    }

    /// A body of at most `max` bytes.
    fn body(&mut self, max: usize, label: &mut String) -> Vec<u8> {
        let mut body = match self.rng.below(20) {
            0..=5 => {
                let name = self.rng.pick(&KNOWN_NAMES);
                let _ = write!(label, " name {:?}", String::from_utf8_lossy(name));
                name.to_vec()
            }
            6..=8 => {
                let len = if self.rng.one_in(5) {
                    self.rng.range(NAME_MAX - 2, NAME_MAX + 16)
                } else {
                    self.rng.range(1, NAME_MAX)
                };
                let _ = write!(label, " random name ({len} B)");
                const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-/";
                (0..len).map(|_| self.rng.pick(CHARS)).collect()
            }
            9..=12 => {
                let len = self.rng.range(0, 200);
                let _ = write!(label, " text ({len} B)");
                (0..len).map(|_| self.rng.range(0x20, 0x7e) as u8).collect()
            }
            13..=16 => {
                let len = self.rng.range(0, MAX_BODY);
                let _ = write!(label, " bytes ({len} B)");
                self.rng.bytes(len)
            }
            17..=18 => {
                let len = self.rng.pick(&[
                    0,
                    1,
                    NAME_MAX - 1,
                    NAME_MAX,
                    NAME_MAX + 1,
                    MAX_BODY - 1,
                    MAX_BODY,
                    MAX_BODY + 1,
                ]);
                let _ = write!(label, " edge body ({len} B)");
                self.rng.bytes(len)
            }
            _ => {
                let len = self.rng.range(MAX_BODY + 1, max.max(MAX_BODY + 1));
                let _ = write!(label, " large body ({len} B)");
                self.rng.bytes(len)
            }
        };
        body.truncate(max);
        body
    }

    fn ipv4_options(&mut self) -> Vec<u8> {
        let len = 4 * self.rng.range(1, 10);
        match self.rng.below(4) {
            0 => vec![1; len],
            1 => {
                let mut options = vec![0; len];
                options[0] = 1;
                options
            }
            2 => {
                // Router alert, then padding.
                let mut options = vec![148, 4, 0, 0];
                options.resize(len, 0);
                options
            }
            _ => self.rng.bytes(len),
        }
    }

    /// A random valid request (before any damage), with its label.
    fn request(&mut self) -> (Request, String) {
        let mut label = String::new();
        let (src_ip, dst_ip, options): (IpAddr, IpAddr, Vec<u8>) = match self.rng.below(10) {
            0..=5 => {
                label.push_str("v4");
                (
                    Ipv4Addr::from(self.rng.next() as u32).into(),
                    Ipv4Addr::from(self.rng.next() as u32).into(),
                    Vec::new(),
                )
            }
            6..=7 => {
                label.push_str("v6");
                let mut a = [0u8; 16];
                let mut b = [0u8; 16];
                a.iter_mut().for_each(|x| *x = self.rng.byte());
                b.iter_mut().for_each(|x| *x = self.rng.byte());
                (
                    Ipv6Addr::from(a).into(),
                    Ipv6Addr::from(b).into(),
                    Vec::new(),
                )
            }
            _ => {
                let options = self.ipv4_options();
                let _ = write!(label, "v4+{}B options", options.len());
                (
                    Ipv4Addr::from(self.rng.next() as u32).into(),
                    Ipv4Addr::from(self.rng.next() as u32).into(),
                    options,
                )
            }
        };
        let ip_len = match (src_ip, options.len()) {
            (IpAddr::V6(_), _) => 40,
            (IpAddr::V4(_), n) => 20 + n,
        };
        let src_port = self.rng.range(1024, 65535) as u16;
        let header = self.lambda_header(&mut label);
        let max_body = MAX_FRAME - ETH_LEN - ip_len - UDP_LEN - HEADER_LEN;
        let body = self.body(max_body, &mut label);
        let mut payload = header.to_vec();
        payload.extend_from_slice(&body);
        let request = Request {
            src_mac: self.mac(),
            dst_mac: self.mac(),
            src: SocketAddr::new(src_ip, src_port),
            dst: SocketAddr::new(dst_ip, DEFAULT_PORT),
            options,
            payload,
        };
        (request, label)
    }

    fn valid(&mut self) -> Result<Case, FrameError> {
        let (request, label) = self.request();
        let built = encode(&request)?;
        Ok(Case {
            class: Class::Valid,
            label,
            frame: built.frame,
        })
    }

    fn borderline(&mut self) -> Result<Case, FrameError> {
        let (mut request, mut label) = self.request();
        let kind = self.rng.below(16);
        // Random values for the tables below, drawn up front.
        let r16 = self.rng.next() as u16;
        let r8 = self.rng.byte();
        // Damage applied before encoding.
        match kind {
            // λ header truncated, lengths consistent.
            0 => {
                let keep = self.rng.range(0, HEADER_LEN - 1);
                request.payload.truncate(keep);
                let _ = write!(label, "; λ header cut to {keep} B");
            }
            // Wrong magic or version.
            1 => {
                if self.rng.one_in(2) {
                    let magic =
                        self.rng
                            .pick(&[0, MAGIC ^ 1, MAGIC ^ 0x100, MAGIC.swap_bytes(), r16]);
                    put_u16(&mut request.payload, 0, magic);
                    let _ = write!(label, "; magic {magic:#06x}");
                } else {
                    let version = self.rng.pick(&[0, VERSION + 1, 0xff, r8]);
                    request.payload[2] = version;
                    let _ = write!(label, "; version {version}");
                }
            }
            // Flags: RESPONSE (must pass), MORE, anything.
            2 => {
                let flags = self.rng.pick(&[
                    FLAG_RESPONSE,
                    FLAG_RESPONSE | FLAG_MORE,
                    FLAG_MORE,
                    0xfe,
                    r8,
                ]);
                request.payload[3] = flags;
                let _ = write!(label, "; flags {flags:#04x}");
            }
            // Other ports.
            3 => {
                let port = self.rng.pick(&[
                    DEFAULT_PORT - 1,
                    DEFAULT_PORT + 1,
                    0,
                    53,
                    DEFAULT_PORT.swap_bytes(),
                    r16,
                ]);
                request.dst.set_port(port);
                if self.rng.one_in(2) {
                    request.src.set_port(DEFAULT_PORT);
                }
                let _ = write!(label, "; dst port {port}");
            }
            // Maximum-size frames: exactly 1514, around it, or up to MAX_FRAME.
            4 => {
                let ip_len = if request.src.is_ipv6() {
                    40
                } else {
                    20 + request.options.len()
                };
                let headers = ETH_LEN + ip_len + UDP_LEN;
                let target =
                    self.rng
                        .pick(&[1513, 1514, 1515, 1518, 2048, 3000, MAX_FRAME - 1, MAX_FRAME]);
                let target = if self.rng.one_in(3) {
                    self.rng.range(1400, MAX_FRAME)
                } else {
                    target
                };
                let payload_len = target.saturating_sub(headers).max(HEADER_LEN);
                let fill = payload_len.saturating_sub(request.payload.len());
                let extra = self.rng.bytes(fill);
                request.payload.extend_from_slice(&extra);
                request.payload.truncate(payload_len);
                let _ = write!(label, "; frame of {} B", headers + payload_len);
            }
            _ => {}
        }
        let mut built = encode(&request)?;
        let udp = built.udp();
        let ip = built.ip();
        let lambda = built.lambda();
        let body = built.body();
        let frame = &mut built.frame;
        match kind {
            0..=4 => {}
            // Cut at a header boundary (headers still claim the full length).
            5 => {
                let (l, b) = (lambda, body);
                let mut cuts = vec![
                    ETH_LEN,
                    ETH_LEN + 1,
                    ETH_LEN + 7,
                    ETH_LEN + 10,
                    ETH_LEN + 20,
                    udp,
                    udp + 2,
                    udp + 4,
                    udp + 6,
                    l,
                    l + 2,
                    l + 3,
                    l + 4,
                    l + 16,
                    l + 20,
                    l + HEADER_LEN - 1,
                    b,
                    b + 1,
                    b + NAME_MAX,
                ];
                if !built.v6 && built.ip_len > 20 {
                    cuts.push(ETH_LEN + built.ip_len - 4);
                }
                let cut = self.rng.pick(&cuts) + self.rng.range(0, 2);
                let cut = cut.saturating_sub(1).max(MIN_FRAME);
                frame.truncate(cut);
                let _ = write!(label, "; cut to {} B", frame.len());
            }
            // Wrong UDP length field.
            6 => {
                let correct = usize::from(get_u16(frame, udp + 4));
                let present = frame.len() - udp;
                let value = self.rng.pick(&[
                    0,
                    7,
                    8,
                    UDP_LEN + HEADER_LEN - 1,
                    UDP_LEN + HEADER_LEN,
                    correct.saturating_sub(1),
                    correct + 1,
                    present + 1,
                    present + 2,
                    0xffff,
                    usize::from(r16),
                ]) as u16;
                put_u16(frame, udp + 4, value);
                let _ = write!(label, "; UDP length {value} (was {correct})");
            }
            // Wrong IP length field (IPv4 total length / IPv6 payload length).
            7 => {
                let at = if built.v6 { ip + 4 } else { ip + 2 };
                let correct = usize::from(get_u16(frame, at));
                let value = self.rng.pick(&[
                    0,
                    19,
                    20,
                    built.ip_len,
                    correct.saturating_sub(1),
                    correct + 1,
                    frame.len() - ETH_LEN + 1,
                    0xffff,
                    usize::from(r16),
                ]) as u16;
                put_u16(frame, at, value);
                if !built.v6 && !self.rng.one_in(4) {
                    fix_ipv4_checksum(frame, built.ip_len);
                }
                let _ = write!(label, "; IP length {value} (was {correct})");
            }
            // Bad IPv4 header checksum (IPv6: a bad UDP checksum instead).
            8 => {
                let at = if built.v6 { udp + 6 } else { ip + 10 };
                let bit = self.rng.below(16);
                let value = get_u16(frame, at) ^ (1 << bit);
                put_u16(frame, at, value);
                label.push_str(if built.v6 {
                    "; bad UDP checksum"
                } else {
                    "; bad IPv4 checksum"
                });
            }
            // Fragments: MF, an offset, or DF (not a fragment).
            9 if !built.v6 => {
                let value =
                    self.rng
                        .pick(&[0x2000, 0x2000 | 0x4000, 0x0001, 0x1fff, 0x4000, 0x8000, r16]);
                put_u16(frame, ip + 6, value);
                fix_ipv4_checksum(frame, built.ip_len);
                let _ = write!(label, "; IPv4 frag field {value:#06x}");
            }
            // IPv6 extension headers and other next headers.
            9 => {
                let next = self.rng.pick(&[0u8, 6, 43, 44, 58, 59, 60, r8]);
                frame[ip + 6] = next;
                let _ = write!(label, "; IPv6 next header {next}");
            }
            // Ethernet padding after the datagram.
            10 => {
                let n = self.rng.range(1, 64);
                let pad = if self.rng.one_in(2) {
                    vec![0; n]
                } else {
                    self.rng.bytes(n)
                };
                frame.extend_from_slice(&pad);
                let _ = write!(label, "; {n} B Ethernet padding");
            }
            // IHL and version nibble.
            11 => {
                let byte = if built.v6 {
                    self.rng.pick(&[0x45, 0x40, 0x70, 0x00, r8])
                } else {
                    self.rng.pick(&[0x40, 0x44, 0x46, 0x4f, 0x65, 0x55, r8])
                };
                frame[ip] = byte;
                if !built.v6 && self.rng.one_in(2) {
                    let ihl = usize::from(byte & 0x0f) * 4;
                    if ihl >= 20 {
                        fix_ipv4_checksum(frame, ihl);
                    }
                }
                let _ = write!(label, "; IP byte 0 {byte:#04x}");
            }
            // Other ethertypes, a VLAN tag, the other IP version's ethertype.
            12 => {
                if self.rng.one_in(3) {
                    let tag = [0x81, 0x00, 0x00, self.rng.byte()];
                    frame.splice(12..12, tag);
                    label.push_str("; VLAN tag");
                } else {
                    let ethertype = if built.v6 {
                        self.rng.pick(&[0x0800, 0x0806, 0x8847, 0x86dc, 0x0000])
                    } else {
                        self.rng.pick(&[0x86dd, 0x0806, 0x0801, 0x0008, 0xffff])
                    };
                    put_u16(frame, 12, ethertype);
                    let _ = write!(label, "; ethertype {ethertype:#06x}");
                }
            }
            // IPv4 protocol other than UDP.
            13 if !built.v6 => {
                let proto = self.rng.pick(&[0u8, 1, 6, 136, 255, r8]);
                frame[ip + 9] = proto;
                fix_ipv4_checksum(frame, built.ip_len);
                let _ = write!(label, "; IP protocol {proto}");
            }
            // UDP checksum zero or damaged (the lambdas do not check it).
            13 | 14 => {
                let value = if self.rng.one_in(2) {
                    0
                } else {
                    self.rng.next() as u16
                };
                put_u16(frame, udp + 6, value);
                let _ = write!(label, "; UDP checksum {value:#06x}");
            }
            // Two damages at once: length fields consistent with a cut frame.
            _ => {
                let cut = self.rng.range(MIN_FRAME, frame.len());
                frame.truncate(cut);
                let udp_len = cut.saturating_sub(udp) as u16;
                put_u16(frame, udp + 4, udp_len);
                if built.v6 {
                    put_u16(frame, ip + 4, udp_len);
                } else {
                    put_u16(frame, ip + 2, (cut.saturating_sub(ETH_LEN)) as u16);
                    fix_ipv4_checksum(frame, built.ip_len);
                }
                let _ = write!(label, "; cut to {cut} B with lengths fixed");
            }
        }
        Ok(Case {
            class: Class::Borderline,
            label,
            frame: built.frame,
        })
    }

    fn garbage(&mut self) -> Result<Case, FrameError> {
        let kind = self.rng.below(6);
        if kind == 0 {
            let len = match self.rng.below(3) {
                0 => self.rng.range(MIN_FRAME, 100),
                1 => self.rng.range(MIN_FRAME, 1514),
                _ => self.rng.range(MIN_FRAME, MAX_FRAME),
            };
            return Ok(Case {
                class: Class::Garbage,
                label: format!("random bytes ({len} B)"),
                frame: self.rng.bytes(len),
            });
        }
        let (request, base) = self.request();
        let mut frame = encode(&request)?.frame;
        let label = match kind {
            1 => {
                let from = self.rng.range(MIN_FRAME, frame.len());
                let tail = frame.len() - from;
                let noise = self.rng.bytes(tail);
                frame[from..].copy_from_slice(&noise);
                format!("{base}; random bytes from {from}")
            }
            2 => {
                let flips = self.rng.range(1, 16);
                for _ in 0..flips {
                    let at = self.rng.below(frame.len());
                    frame[at] ^= 1 << self.rng.below(8);
                }
                format!("{base}; {flips} bit flips")
            }
            3 => {
                let n = self.rng.range(1, 8);
                for _ in 0..n {
                    let at = self.rng.below(frame.len());
                    frame[at] = self.rng.pick(&[0, 0xff, 0x7f, 0x80, 1]);
                }
                format!("{base}; {n} bytes set to edge values")
            }
            4 => {
                let cut = self.rng.range(MIN_FRAME, frame.len());
                frame.truncate(cut);
                if self.rng.one_in(2) {
                    let at = self.rng.below(frame.len());
                    frame[at] ^= 1 << self.rng.below(8);
                }
                format!("{base}; cut to {cut} B")
            }
            _ => {
                let to = self.rng.range(frame.len(), MAX_FRAME);
                let extra = self.rng.bytes(to - frame.len());
                frame.extend_from_slice(&extra);
                format!("{base}; random tail to {to} B")
            }
        };
        Ok(Case {
            class: Class::Garbage,
            label,
            frame,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The backends.

/// What one backend did with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ran {
        action: XdpAction,
        packet: Vec<u8>,
    },
    /// The backend refused or stopped the run (the kernel never does for a loaded program).
    Failed(String),
}

/// Map contents keyed by map name, then key.
type MapState = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// The maps whose contents both backends must agree on: the declared ones, except the log's
/// ring buffer (records are consumed, not iterated) and its scratch record (it holds the
/// time of the last line, which differs by backend by nature).
fn compared(entry: &loader::vm::VmMapEntry) -> bool {
    matches!(entry.kind, LinkedMapKind::Declared)
        && !entry.map.spec().map_type.is_ring_buffer()
        && entry.name != lambda_ebpf::log::SCRATCH_MAP_NAME
}

struct Vm {
    engine: Engine,
    program: Arc<VmProgram>,
    worker: Worker,
    elapsed: Duration,
}

/// One sample loaded into all three backends.
struct Backends {
    kernel: TestRunner,
    kernel_elapsed: Duration,
    vms: Vec<Vm>,
    /// The CPU this thread runs on: the kernel's per-CPU map copy the VM's copy 0 must equal.
    cpu: usize,
}

impl Backends {
    fn load(sample: &str, bytes: &[u8], cpu: usize) -> Result<Backends, String> {
        let params = LambdaParams::default();
        let kernel = TestRunner::load(bytes, sample, &params)
            .map_err(|e| format!("{sample}: kernel load failed: {e}"))?;
        let mut vms = Vec::new();
        for engine in [Engine::Interpreter, Engine::Jit] {
            let options = VmOptions {
                engine,
                params,
                ..VmOptions::default()
            };
            let program = VmProgram::load(bytes, sample, &options)
                .map_err(|e| format!("{sample}: VM ({engine}) load failed: {e}"))?;
            let program = Arc::new(program);
            let worker = Worker::new(Arc::clone(&program), 0)
                .map_err(|e| format!("{sample}: VM ({engine}) worker failed: {e}"))?;
            vms.push(Vm {
                engine,
                program,
                worker,
                elapsed: Duration::ZERO,
            });
        }
        Ok(Backends {
            kernel,
            kernel_elapsed: Duration::ZERO,
            vms,
            cpu,
        })
    }

    fn run_kernel(&mut self, frame: &[u8]) -> Outcome {
        let start = Instant::now();
        let outcome = match self.kernel.run(frame, 1) {
            Ok(o) => Outcome::Ran {
                action: o.action,
                packet: o.packet_out,
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
        self.kernel_elapsed += start.elapsed();
        outcome
    }

    fn run_vm(vm: &mut Vm, frame: &[u8]) -> Outcome {
        let start = Instant::now();
        let outcome = match vm.worker.run(frame) {
            Ok(o) => Outcome::Ran {
                action: o.action,
                packet: o.packet_out,
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
        vm.elapsed += start.elapsed();
        outcome
    }

    /// The declared maps of the kernel's program, read the same way as the VM's.
    fn kernel_maps(&self) -> Result<MapState, String> {
        let mut state = MapState::new();
        // The VM program knows which maps are declared (not global data); both backends load
        // the same object, so the names are the same.
        let Some(vm) = self.vms.first() else {
            return Ok(state);
        };
        for entry in vm.program.maps.iter().filter(|e| compared(e)) {
            let spec = entry.map.spec();
            let entries = self
                .kernel
                .map_entries(&entry.name)
                .map_err(|e| format!("kernel map `{}`: {e}", entry.name))?;
            let stride = spec.value_size.div_ceil(8) as usize * 8;
            let per_cpu = spec.map_type.is_per_cpu();
            let map = entries
                .into_iter()
                .map(|(k, v)| {
                    if per_cpu {
                        let copy = v
                            .get(self.cpu * stride..(self.cpu + 1) * stride)
                            .map(<[u8]>::to_vec)
                            .unwrap_or(v);
                        (k, copy)
                    } else {
                        (k, v)
                    }
                })
                .collect();
            state.insert(entry.name.clone(), map);
        }
        Ok(state)
    }

    fn vm_maps(vm: &Vm) -> Result<MapState, String> {
        let mut state = MapState::new();
        for entry in vm.program.maps.iter().filter(|e| compared(e)) {
            let entries = entry
                .map
                .entries()
                .map_err(|e| format!("VM ({}) map `{}`: {e}", vm.engine, entry.name))?;
            let stride = entry.map.spec().value_size.div_ceil(8) as usize * 8;
            let per_cpu = entry.map.spec().map_type.is_per_cpu();
            let map = entries
                .into_iter()
                .map(|(k, mut v)| {
                    if per_cpu {
                        v.truncate(stride);
                    }
                    (k, v)
                })
                .collect();
            state.insert(entry.name.clone(), map);
        }
        Ok(state)
    }

    /// Compares every declared map of every VM with the kernel's: `None` if all are equal.
    fn compare_maps(&self) -> Option<String> {
        let kernel = match self.kernel_maps() {
            Ok(k) => k,
            Err(e) => return Some(e),
        };
        let mut problems = Vec::new();
        for vm in &self.vms {
            match Self::vm_maps(vm) {
                Ok(state) => {
                    if let Some(d) = describe_map_difference(&kernel, &state) {
                        problems.push(format!("VM ({}) vs kernel: {d}", vm.engine));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// `(name, entries)` of every declared map (from the kernel), for the summary.
    fn map_sizes(&self) -> Vec<(String, usize)> {
        self.kernel_maps()
            .map(|s| s.into_iter().map(|(n, m)| (n, m.len())).collect())
            .unwrap_or_default()
    }
}

fn describe_map_difference(kernel: &MapState, vm: &MapState) -> Option<String> {
    if kernel.keys().ne(vm.keys()) {
        return Some(format!(
            "different maps: kernel {:?}, VM {:?}",
            kernel.keys().collect::<Vec<_>>(),
            vm.keys().collect::<Vec<_>>()
        ));
    }
    for (name, k) in kernel {
        let v = &vm[name];
        for (key, kv) in k {
            match v.get(key) {
                None => {
                    return Some(format!("map `{name}`: key {} only in the kernel", hex(key)));
                }
                Some(vv) if vv != kv => {
                    return Some(format!(
                        "map `{name}`: key {}: {}",
                        hex(key),
                        describe_bytes_difference(kv, vv)
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(key) = v.keys().find(|key| !k.contains_key(*key)) {
            return Some(format!("map `{name}`: key {} only in the VM", hex(key)));
        }
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Where two byte strings first differ, with a little context from both.
fn describe_bytes_difference(kernel: &[u8], vm: &[u8]) -> String {
    let first = kernel
        .iter()
        .zip(vm)
        .position(|(a, b)| a != b)
        .unwrap_or(kernel.len().min(vm.len()));
    let from = first.saturating_sub(8);
    let window = |b: &[u8]| hex(&b[from.min(b.len())..(first + 8).min(b.len())]);
    format!(
        "lengths kernel {} / VM {}, first difference at byte {first}: kernel [{from}..] {} vs VM {}",
        kernel.len(),
        vm.len(),
        window(kernel),
        window(vm)
    )
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ran { action, packet } => format!("{} with {} B", action.name(), packet.len()),
        Outcome::Failed(e) => format!("error: {e}"),
    }
}

/// `None` if the VM did what the kernel did.
fn describe_difference(kernel: &Outcome, vm: &Outcome) -> Option<String> {
    if kernel == vm {
        return None;
    }
    Some(match (kernel, vm) {
        (
            Outcome::Ran {
                action: ka,
                packet: kp,
            },
            Outcome::Ran {
                action: va,
                packet: vp,
            },
        ) if ka == va => format!(
            "same action {}, different bytes: {}",
            ka.name(),
            describe_bytes_difference(kp, vp)
        ),
        _ => format!(
            "kernel {}, VM {}",
            describe_outcome(kernel),
            describe_outcome(vm)
        ),
    })
}

/// Runs one frame on every backend: the differences found (empty when all agree) and the
/// kernel's outcome.
fn run_everywhere(backends: &mut Backends, frame: &[u8]) -> (Vec<String>, Outcome) {
    let kernel = backends.run_kernel(frame);
    let mut vm_outcomes = Vec::new();
    let mut differences = Vec::new();
    for vm in &mut backends.vms {
        let outcome = Backends::run_vm(vm, frame);
        if let Some(d) = describe_difference(&kernel, &outcome) {
            differences.push(format!("{}: {d}", vm.engine));
        }
        vm_outcomes.push(outcome);
    }
    if !differences.is_empty() {
        // Where the engines stand relative to each other hints at the cause: both wrong the
        // same way points at shared code (helpers, loader, context), one wrong at that engine.
        let agree = vm_outcomes.windows(2).all(|w| w[0] == w[1]);
        differences.push(if agree {
            "interpreter and JIT agree with each other (suspect shared VM code: helpers, context, loader)".to_owned()
        } else {
            "interpreter and JIT disagree with each other (suspect the engine that differs)"
                .to_owned()
        });
    }
    (differences, kernel)
}

// ---------------------------------------------------------------------------------------------
// Environment, gating and files.

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether to run: root, or skip (fails instead under `CI=true`).
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = "not root: BPF_PROG_TEST_RUN needs CAP_BPF + CAP_NET_ADMIN";
    assert!(
        !ci(),
        "CI=true and {reason}: this test must run privileged in CI"
    );
    println!("skipping: {reason}");
    false
}

fn lambdas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambdas")
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions")
}

/// The sample objects, or `None` (after printing why) when they are not built.
fn sample_objects(names: &[&str]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut objects = Vec::new();
    for name in names {
        let path = lambdas_dir().join(format!("{name}.o"));
        match std::fs::read(&path) {
            Ok(bytes) => objects.push(((*name).to_owned(), bytes)),
            Err(e) => {
                let reason = format!(
                    "cannot read {}: {e} (build the samples with `cargo xtask build-ebpf`)",
                    path.display()
                );
                assert!(!ci(), "CI=true and {reason}");
                println!("skipping: {reason}");
                return None;
            }
        }
    }
    Some(objects)
}

fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(n) => n,
        Err(e) => panic!("{name}={text:?} is not a number: {e}"),
    }
}

/// FNV-1a, to give each sample its own seed.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Pins the calling thread to the CPU it is on, so the kernel runs every test run (and touches
/// per-CPU map copies) on one CPU. Returns that CPU.
fn pin_to_current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions; cpu_set_t is plain data and the calls get valid
    // pointers and sizes.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return 0;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        cpu as usize
    }
}

thread_local! {
    /// The case being run on this thread: `(regression file, frame, description)`. A backend
    /// that panics, or aborts on a violated `unsafe` precondition (debug builds check those and
    /// abort without unwinding), takes the whole test process down; the panic hook still runs
    /// first and saves the frame, so even that case becomes a regression file.
    static IN_FLIGHT: RefCell<Option<(PathBuf, Vec<u8>, String)>> = const { RefCell::new(None) };
}

/// Installs (once) the panic hook that saves the in-flight case, then defers to the previous
/// hook.
fn save_in_flight_case_on_panic() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let pending = IN_FLIGHT.with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.take()));
            if let Some((path, frame, what)) = pending {
                let saved = std::fs::create_dir_all(regressions_dir())
                    .and_then(|()| std::fs::write(&path, &frame));
                match saved {
                    Ok(()) => eprintln!(
                        "a backend panicked on {what}: saved the frame as {}",
                        path.display()
                    ),
                    Err(e) => eprintln!(
                        "a backend panicked on {what}: could not save the frame as {}: {e}",
                        path.display()
                    ),
                }
            }
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// What one sample's run found.
struct Report {
    sample: String,
    seed: u64,
    packets: usize,
    classes: BTreeMap<Class, usize>,
    actions: BTreeMap<String, usize>,
    statuses: BTreeMap<String, usize>,
    map_checks: usize,
    maps: Vec<(String, usize)>,
    differing_cases: usize,
    saved: Vec<PathBuf>,
    details: Vec<String>,
    generate: Duration,
    kernel: Duration,
    vms: Vec<(Engine, Duration)>,
}

/// The λ status of a reply frame, for the summary.
fn reply_status(packet: &[u8]) -> String {
    match UdpFrame::decode(packet) {
        Ok(frame) => match LambdaHeader::decode(&frame.payload) {
            Ok(header) => header.status().map_or_else(
                || format!("status {}", header.status_raw()),
                |s| s.name().to_owned(),
            ),
            Err(e) => format!("bad λ header ({e})"),
        },
        Err(FrameError::BadChecksum { which, .. }) => format!("reply with a bad {which} checksum"),
        Err(_) => "undecodable reply".to_owned(),
    }
}

fn differential(
    sample: &str,
    bytes: &[u8],
    seed: u64,
    packets: usize,
    cpu: usize,
) -> Result<Report, String> {
    let mut backends = Backends::load(sample, bytes, cpu)?;
    let mut generator = Generator::new(seed);
    let mut report = Report {
        sample: sample.to_owned(),
        seed,
        packets,
        classes: BTreeMap::new(),
        actions: BTreeMap::new(),
        statuses: BTreeMap::new(),
        map_checks: 0,
        maps: Vec::new(),
        differing_cases: 0,
        saved: Vec::new(),
        details: Vec::new(),
        generate: Duration::ZERO,
        kernel: Duration::ZERO,
        vms: Vec::new(),
    };
    if let Some(d) = backends.compare_maps() {
        report.details.push(format!(
            "{sample} seed {seed:#x}: maps differ right after loading: {d}"
        ));
        report.differing_cases += 1;
    }
    let mut maps_differ = false;
    for index in 0..packets {
        let start = Instant::now();
        let case = generator.case().map_err(|e| {
            format!("{sample} seed {seed:#x} case {index}: building a frame failed: {e}")
        })?;
        report.generate += start.elapsed();
        *report.classes.entry(case.class).or_default() += 1;
        let path = regressions_dir().join(format!("{sample}-{seed:016x}-{index}.bin"));
        IN_FLIGHT.with(|c| {
            *c.borrow_mut() = Some((
                path.clone(),
                case.frame.clone(),
                format!(
                    "{sample} seed {seed:#x} case {index} ({} {}, {} B)",
                    case.class.name(),
                    case.label,
                    case.frame.len()
                ),
            ));
        });
        let (differences, kernel) = run_everywhere(&mut backends, &case.frame);
        IN_FLIGHT.with(|c| *c.borrow_mut() = None);
        if let Outcome::Ran { action, packet } = &kernel {
            *report.actions.entry(action.name()).or_default() += 1;
            if *action == XdpAction::Tx {
                *report.statuses.entry(reply_status(packet)).or_default() += 1;
            }
        }
        if !differences.is_empty() {
            report.differing_cases += 1;
            let mut saved = None;
            if report.saved.len() < MAX_SAVED_PER_SAMPLE {
                match std::fs::create_dir_all(regressions_dir())
                    .and_then(|()| std::fs::write(&path, &case.frame))
                {
                    Ok(()) => {
                        saved = Some(path.clone());
                        report.saved.push(path);
                    }
                    Err(e) => report
                        .details
                        .push(format!("cannot write {}: {e}", path.display())),
                }
            }
            if report.details.len() < MAX_REPORTED_PER_SAMPLE {
                report.details.push(format!(
                    "{sample} seed {seed:#x} case {index} ({} {}, {} B; kernel {}){}:\n      {}",
                    case.class.name(),
                    case.label,
                    case.frame.len(),
                    describe_outcome(&kernel),
                    saved
                        .map(|p| format!(", saved as {}", p.display()))
                        .unwrap_or_default(),
                    differences.join("\n      ")
                ));
            }
        }
        let last = index + 1 == packets;
        if !maps_differ && ((index + 1) % MAP_CHECK_EVERY == 0 || last) {
            report.map_checks += 1;
            if let Some(d) = backends.compare_maps() {
                // Once maps differ every later check would too: report the first window only.
                maps_differ = true;
                report.differing_cases += 1;
                let from = (index + 1).saturating_sub(MAP_CHECK_EVERY);
                report.details.push(format!(
                    "{sample} seed {seed:#x}: maps differ after case {index} (first seen in cases {from}..={index}): {d}"
                ));
            }
        }
    }
    report.maps = backends.map_sizes();
    report.kernel = backends.kernel_elapsed;
    report.vms = backends
        .vms
        .iter()
        .map(|vm| (vm.engine, vm.elapsed))
        .collect();
    Ok(report)
}

fn per_packet(total: Duration, packets: usize) -> String {
    let us = total.as_secs_f64() * 1e6 / packets.max(1) as f64;
    format!("{us:.1} µs/packet ({:.2} s)", total.as_secs_f64())
}

fn print_report(r: &Report) {
    let histogram = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let classes = r
        .classes
        .iter()
        .map(|(c, n)| format!("{} {n}", c.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut actions = BTreeMap::new();
    for name in ["XDP_TX", "XDP_PASS", "XDP_DROP", "XDP_ABORTED"] {
        actions.insert(name.to_owned(), 0);
    }
    for (k, v) in &r.actions {
        actions.insert(k.clone(), *v);
    }
    let maps = if r.maps.is_empty() {
        "none declared".to_owned()
    } else {
        r.maps
            .iter()
            .map(|(n, e)| format!("{n} ({e} entries)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{}: seed {:#018x}, {} packets ({classes})",
        r.sample, r.seed, r.packets
    );
    println!("  actions (kernel): {}", histogram(&actions));
    if !r.statuses.is_empty() {
        println!("  replies by status: {}", histogram(&r.statuses));
    }
    println!("  maps compared {} times: {maps}", r.map_checks);
    println!(
        "  time: generate {}, kernel {}",
        per_packet(r.generate, r.packets),
        per_packet(r.kernel, r.packets)
    );
    for (engine, elapsed) in &r.vms {
        println!("        VM {engine} {}", per_packet(*elapsed, r.packets));
    }
    println!("  differences = {}", r.differing_cases);
    if r.differing_cases > r.saved.len() && !r.saved.is_empty() {
        println!(
            "  ({} differing cases, the first {} saved)",
            r.differing_cases,
            r.saved.len()
        );
    }
}

#[test]
fn vm_matches_kernel_on_generated_packets() {
    if !privileged() {
        return;
    }
    let only = std::env::var("LNIC_DIFF_SAMPLES").ok();
    let names: Vec<&str> = SAMPLES
        .iter()
        .copied()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x.trim() == *s))
        })
        .collect();
    assert!(
        !names.is_empty(),
        "LNIC_DIFF_SAMPLES={only:?} names none of {SAMPLES:?}"
    );
    let Some(objects) = sample_objects(&names) else {
        return;
    };
    let packets = env_number("LNIC_DIFF_PACKETS", DEFAULT_PACKETS as u64) as usize;
    let base = env_number("LNIC_DIFF_SEED", DEFAULT_SEED);
    let cpu = pin_to_current_cpu();
    save_in_flight_case_on_panic();
    println!(
        "differential test: {packets} packets per sample, base seed {base:#x} (LNIC_DIFF_SEED), pinned to CPU {cpu} of {}",
        possible_cpus().unwrap_or(0)
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    for (name, bytes) in &objects {
        let seed = base ^ fnv(name);
        match differential(name, bytes, seed, packets, cpu) {
            Ok(report) => {
                print_report(&report);
                if report.differing_cases > 0 {
                    failures.push(format!(
                        "{name} (seed {seed:#x}): {} differing cases; regression files: {:?}\n    {}",
                        report.differing_cases,
                        report.saved,
                        report.details.join("\n    ")
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "the VM differs from the kernel (reproduce with LNIC_DIFF_SEED={base:#x} LNIC_DIFF_PACKETS={packets}):\n  {}",
        failures.join("\n  ")
    );
}

/// `static-server-00ab…-42.bin` → `static-server`.
fn sample_of(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".bin")?;
    let mut parts = stem.rsplitn(3, '-');
    let _index = parts.next()?.parse::<usize>().ok()?;
    let _seed = u64::from_str_radix(parts.next()?, 16).ok()?;
    parts.next()
}

#[test]
fn regressions_replay_on_every_backend() {
    if !privileged() {
        return;
    }
    let dir = regressions_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    files.sort();
    if files.is_empty() {
        println!("no regression files in {}", dir.display());
        return;
    }
    let Some(objects) = sample_objects(&SAMPLES) else {
        return;
    };
    let cpu = pin_to_current_cpu();
    let mut failures = Vec::new();
    for path in &files {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(sample) = sample_of(&file_name) else {
            failures.push(format!(
                "{file_name}: not named <sample>-<seed hex>-<index>.bin"
            ));
            continue;
        };
        let Some((_, bytes)) = objects.iter().find(|(n, _)| n == sample) else {
            failures.push(format!("{file_name}: no sample lambda `{sample}`"));
            continue;
        };
        let frame = match std::fs::read(path) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{file_name}: {e}"));
                continue;
            }
        };
        if !(MIN_FRAME..=MAX_PACKET).contains(&frame.len()) {
            failures.push(format!(
                "{file_name}: {} B is outside {MIN_FRAME}..={MAX_PACKET}",
                frame.len()
            ));
            continue;
        }
        // A fresh load per file: map state from other files cannot hide or cause a difference.
        let mut backends = match Backends::load(sample, bytes, cpu) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{file_name}: {e}"));
                continue;
            }
        };
        let (differences, kernel) = run_everywhere(&mut backends, &frame);
        let maps = backends.compare_maps();
        println!(
            "{file_name}: kernel {}, {}",
            describe_outcome(&kernel),
            if differences.is_empty() && maps.is_none() {
                "VM interpreter and JIT agree"
            } else {
                "DIFFERENT"
            }
        );
        if !differences.is_empty() {
            failures.push(format!("{file_name}: {}", differences.join("; ")));
        }
        if let Some(d) = maps {
            failures.push(format!("{file_name}: maps: {d}"));
        }
    }
    println!(
        "replayed {} regression files, {} differences",
        files.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "regression files still differ between the kernel and the VM:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn generator_is_deterministic_and_respects_frame_limits() {
    let mut a = Generator::new(42);
    let mut b = Generator::new(42);
    for index in 0..2_000 {
        let (x, y) = match (a.case(), b.case()) {
            (Ok(x), Ok(y)) => (x, y),
            (x, y) => panic!(
                "seed 42 case {index}: generation failed: {:?} / {:?}",
                x.err(),
                y.err()
            ),
        };
        assert_eq!(x.frame, y.frame, "seed 42 case {index}: not deterministic");
        assert!(
            (MIN_FRAME..=MAX_FRAME).contains(&x.frame.len()),
            "seed 42 case {index} ({}): {} B",
            x.label,
            x.frame.len()
        );
    }
    assert_eq!(
        sample_of("baseline-raw-pong-00000000000000ff-12.bin"),
        Some("baseline-raw-pong")
    );
    assert_eq!(sample_of("echo-zz-1.bin"), None);
}

#[test]
fn comparison_flags_every_kind_of_difference() {
    let ran = |action, packet: &[u8]| Outcome::Ran {
        action,
        packet: packet.to_vec(),
    };
    let tx = ran(XdpAction::Tx, b"abcdef");
    assert_eq!(describe_difference(&tx, &tx.clone()), None);
    assert!(describe_difference(&tx, &ran(XdpAction::Pass, b"abcdef")).is_some());
    let bytes = describe_difference(&tx, &ran(XdpAction::Tx, b"abcdEf"));
    assert!(
        bytes.as_deref().is_some_and(|d| d.contains("byte 4")),
        "{bytes:?}"
    );
    assert!(describe_difference(&tx, &ran(XdpAction::Tx, b"abcde")).is_some());
    assert!(describe_difference(&tx, &Outcome::Failed("out of bounds".into())).is_some());
    let map = |entries: &[(&[u8], &[u8])]| -> MapState {
        let m = entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        [("M".to_owned(), m)].into_iter().collect()
    };
    let a = map(&[(b"k", b"v")]);
    assert_eq!(describe_map_difference(&a, &a.clone()), None);
    assert!(describe_map_difference(&a, &map(&[(b"k", b"w")])).is_some());
    assert!(describe_map_difference(&a, &map(&[])).is_some());
    assert!(describe_map_difference(&map(&[]), &a).is_some());
}
