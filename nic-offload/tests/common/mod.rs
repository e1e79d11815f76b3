//! What the nic-offload integration tests share: the root gate and the sample objects.
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use ebpf_isa::Insn;
use loader::frames::UdpFrame;
use loader::link::{LinkedMap, LinkedProgram};
use nic_offload::{CoalesceInput, MatchRule};

/// Without root the kernel part skips with a reason, except under CI=true, where it must run.
pub fn kernel_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but not running as root; kernel tests must run in CI");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: needs root (CAP_BPF) for BPF_PROG_LOAD and BPF_PROG_TEST_RUN"
    );
    false
}

/// A built lambda object in target/lambdas.
pub fn object(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/lambdas")
        .join(format!("{name}.o"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-ebpf`",
        path.display()
    );
    path
}

/// A sample lambda linked for `rule`, with its seed records.
pub fn sample(name: &str, rule: MatchRule) -> CoalesceInput {
    let bytes = std::fs::read(object(name)).unwrap();
    CoalesceInput::from_object(&bytes, name, rule).unwrap()
}

pub fn rule(port: u16, lambda_id: Option<u32>) -> MatchRule {
    MatchRule { port, lambda_id }
}

/// The Ethernet frame of a λ request (`payload`: header and body) from the client to `port`
/// over IPv4 or IPv6, the addresses every test here uses.
pub fn udp_request_frame(port: u16, v6: bool, payload: Vec<u8>) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = if v6 {
        (
            "[fd00::2]:40000".parse().unwrap(),
            format!("[fd00::1]:{port}").parse().unwrap(),
        )
    } else {
        (
            "10.0.0.2:40000".parse().unwrap(),
            format!("10.0.0.1:{port}").parse().unwrap(),
        )
    };
    UdpFrame {
        src_mac: [2, 0, 0, 0, 0, 2],
        dst_mac: [2, 0, 0, 0, 0, 1],
        src,
        dst,
        payload,
    }
    .encode()
    .unwrap()
}

/// A program (a coalesced or lowered one) as a linked program named `name`, for loading.
pub fn as_linked(name: &str, insns: &[Insn], maps: &[LinkedMap]) -> LinkedProgram {
    LinkedProgram {
        lambda: name.into(),
        program: name.into(),
        section: "xdp".into(),
        insns: insns.to_vec(),
        maps: maps.to_vec(),
        lines: vec![],
    }
}

/// xorshift64*: seeded, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The Ethernet frame of a λ request with `header` and `body` to `port`; `options` bytes of
/// IPv4 options (NOPs, a multiple of 4) when IPv4.
pub fn lambda_request_frame(
    header: &lambda_ebpf::wire::LambdaHeader,
    body: &[u8],
    port: u16,
    v6: bool,
    options: usize,
) -> Vec<u8> {
    let mut payload = header.as_bytes().to_vec();
    payload.extend_from_slice(body);
    let mut frame = udp_request_frame(port, v6, payload);
    if !v6 && options > 0 {
        // Options do not enter the UDP checksum: only the IP header changes.
        frame.splice(34..34, std::iter::repeat_n(1u8, options));
        frame[14] = 0x40 | ((20 + options) / 4) as u8;
        let total = u16::from_be_bytes([frame[16], frame[17]]) + options as u16;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame[24..26].copy_from_slice(&[0, 0]);
        let mut sum = 0u32;
        for pair in frame[14..34 + options].chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        UdpFrame::decode(&frame).expect("the request with options is well formed");
    }
    frame
}
