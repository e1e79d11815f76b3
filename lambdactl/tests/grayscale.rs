//! The grayscale workload end to end: seeded RGB images written as PNG, sent with
//! `lambdactl invoke --image` through every backend — XDP in `skb` and `drv` mode on a veth
//! pair, the VM (`lambdactl run`) and the native baseline (`lambdactl baseline grayscale`) —
//! with 1% of datagrams dropped each way by an nftables `numgen random` rule in the client's
//! namespace, and every result compared bit for bit with a reference computed here from the
//! decoded PNG.

mod common;

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{NetnsPair, kernel_tests_enabled, lambda_object, lambdactl_ok, run, run_ok};
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

/// Seed of every image; change it to see other pixels, print it on failure to reproduce.
const SEED: u64 = 0x6772_6179_7363_616c;

/// Sizes for every backend: single pixel, odd sizes, exactly one fragment (474 pixels), one
/// pixel past it, sizes that end mid-fragment, and a few mid sizes.
const SIZES: &[(u32, u32)] = &[
    (1, 1),
    (7, 3),
    (474, 1),
    (475, 1),
    (31, 17),
    (101, 97),
    (640, 480),
    (1023, 769),
];

/// The largest image the lambda takes; sent through the backends where it stays fast.
const BIG: (u32, u32) = (4096, 4096);

/// splitmix64: a small seeded generator, so an image is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A seeded RGB image: noise over a gradient, so every byte value and smooth runs both occur.
fn make_rgb(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ (u64::from(width) << 32) ^ u64::from(height));
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let noise = rng.next();
            if noise & 1 == 0 {
                rgb.extend_from_slice(&[
                    (noise >> 8) as u8,
                    (noise >> 16) as u8,
                    (noise >> 24) as u8,
                ]);
            } else {
                rgb.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]);
            }
        }
    }
    rgb
}

fn write_rgb_png(path: &Path, width: u32, height: u32, rgb: &[u8]) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Noise does not compress: spend no time trying.
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(rgb).unwrap();
    writer.finish().unwrap();
}

/// Decodes a PNG (the library does that part) into its samples, colour type and size.
fn decode_png(path: &Path) -> (Vec<u8>, png::ColorType, u32, u32) {
    let decoder = png::Decoder::new(BufReader::new(File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (buf, info.color_type, info.width, info.height)
}

/// The reference: BT.601 with 8-bit weights, rounded to nearest, halves up, as documented in
/// workloads::grayscale — written out again here rather than called.
fn reference_gray(input: &Path) -> (Vec<u8>, u32, u32) {
    let (rgb, color, width, height) = decode_png(input);
    assert_eq!(color, png::ColorType::Rgb);
    let gray = rgb
        .chunks_exact(3)
        .map(|p| {
            ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) / 256)
                as u8
        })
        .collect();
    (gray, width, height)
}

/// One test image on disk with its reference answer.
struct Case {
    width: u32,
    height: u32,
    input: PathBuf,
    expected: Vec<u8>,
}

fn make_case(dir: &Path, width: u32, height: u32) -> Case {
    let input = dir.join(format!("in-{width}x{height}.png"));
    write_rgb_png(&input, width, height, &make_rgb(width, height, SEED));
    let (expected, w, h) = reference_gray(&input);
    assert_eq!((w, h), (width, height));
    Case {
        width,
        height,
        input,
        expected,
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lnic-grayscale-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Drops 1% of λ requests leaving the namespace and 1% of λ responses arriving in it.
fn add_loss(ns: &str, port: u16) {
    let rules = format!(
        "table inet lnic_loss {{\n\
           chain out {{ type filter hook output priority 0; policy accept; udp dport {port} numgen random mod 100 < 1 counter drop; }}\n\
           chain in {{ type filter hook input priority 0; policy accept; udp sport {port} numgen random mod 100 < 1 counter drop; }}\n\
         }}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft rules in {ns}");
}

/// Datagrams the loss rules dropped so far, from their counters.
fn dropped(ns: &str) -> u64 {
    let out = run_ok(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "inet",
            "lnic_loss",
        ],
    );
    out.split("packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `case` with `invoke --image` from `ns` to `target`, checks the output bit for bit,
/// and returns how many fragments were retransmitted.
fn send_image(ns: &str, target: &str, case: &Case, dir: &Path, backend: &str) -> u64 {
    let out_path = dir.join(format!("out-{backend}-{}x{}.png", case.width, case.height));
    let started = Instant::now();
    let stdout = lambdactl_ok(&[
        "-n",
        ns,
        "invoke",
        target,
        "--lambda",
        "1",
        "--image",
        case.input.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
        "--window",
        "64",
        "--retransmit-ms",
        "30",
    ]);
    let (gray, color, width, height) = decode_png(&out_path);
    assert_eq!(color, png::ColorType::Grayscale, "{backend}");
    assert_eq!((width, height), (case.width, case.height), "{backend}");
    if gray != case.expected {
        let first = gray
            .iter()
            .zip(&case.expected)
            .position(|(a, b)| a != b)
            .unwrap();
        panic!(
            "{backend}: {}x{} (seed {SEED:#x}) differs from the reference first at pixel {first}: {} vs {}",
            case.width, case.height, gray[first], case.expected[first]
        );
    }
    eprintln!(
        "{backend} {}x{}: {} [{:.2} s]",
        case.width,
        case.height,
        stdout.lines().next().unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
    stdout
        .split(" retransmitted")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retransmission count in {stdout:?}"))
}

/// The whole image set through one backend; the big image too when `big`.
fn send_all(ns: &str, target: &str, cases: &[Case], big: Option<&Case>, dir: &Path, backend: &str) {
    let dropped_before = dropped(ns);
    for case in cases {
        send_image(ns, target, case, dir, backend);
    }
    if let Some(big) = big {
        let retransmitted = send_image(ns, target, big, dir, backend);
        assert!(
            retransmitted > 0,
            "{backend}: 1% loss on {} fragments and nothing was retransmitted",
            big.expected.len().div_ceil(474)
        );
    }
    let lost = dropped(ns) - dropped_before;
    eprintln!("{backend}: the loss rule dropped {lost} datagrams");
    if big.is_some() {
        assert!(lost > 0, "{backend}: the loss rule dropped nothing");
    }
}

/// Malformed fragments get an empty BAD_REQUEST or TOO_LARGE, not silence or a conversion.
fn check_bad_fragments(ns: &str, target: &str, backend: &str) {
    let answers = NetnsPair::within(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut answers = Vec::new();
        // (fragment index, count, body, expected status)
        let cases: [(u16, u16, Vec<u8>, Status); 4] = [
            (0, 1, vec![0, 1], Status::BadRequest), // no header
            (0, 1, vec![0x14, 0, 0, 1, 1, 2, 3], Status::TooLarge), // width 5120
            (0, 1, vec![0, 2, 0, 1, 1, 2, 3, 4], Status::BadRequest), // 1⅓ pixels for 2
            (1, 2, vec![9; 475 * 3], Status::TooLarge), // 475 pixels
        ];
        for (round, (index, count, body, want)) in cases.into_iter().enumerate() {
            let mut request = LambdaHeader::request(1, 0x6261_6400 + round as u64);
            request.set_fragment(index, count);
            let mut datagram = request.as_bytes().to_vec();
            datagram.extend_from_slice(&body);
            // The loss rule is on: try a few times.
            let mut got = None;
            for _ in 0..10 {
                // The loss rule drops on output too, and netfilter answers such a send with
                // EPERM: that is a lost datagram, so try again like any other loss.
                match s.send_to(&datagram, target) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
                    Err(e) => panic!("{backend}: send: {e}"),
                }
                let mut buf = [0u8; 2048];
                if let Ok(n) = s.recv(&mut buf) {
                    got = Some(buf[..n].to_vec());
                    break;
                }
            }
            answers.push((want, got));
        }
        answers
    });
    for (want, got) in answers {
        let got = got.unwrap_or_else(|| panic!("{backend}: no answer (want {want:?})"));
        let header = LambdaHeader::decode(&got).unwrap();
        assert!(header.is_response(), "{backend}");
        assert_eq!(header.status(), Some(want), "{backend}");
        assert_eq!(got.len(), HEADER_LEN, "{backend}: error answers are empty");
    }
}

/// A long-running `lambdactl` child (the VM or the baseline), killed by its PID on drop.
struct Server(Child);

impl Server {
    fn start(args: &[&str], ready: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lambdactl");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.contains(ready), "{args:?}: {first}");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    SIZES.iter().map(|&(w, h)| make_case(dir, w, h)).collect()
}

fn xdp(mode: &str) {
    let dir = TempDir::new(mode);
    let pair = NetnsPair::create();
    let object = lambda_object("grayscale");
    // The client's kernel checks every UDP checksum of the answers in software (see
    // netns_e2e.rs), and in drv mode the client end needs an XDP program for XDP_TX to land.
    pair.checksums_in_software();
    if mode == "drv" {
        pair.give_client_a_drv_peer_program();
    }
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        mode,
    ]);
    add_loss(&pair.client_ns, 9000);
    let target = format!("{}:9000", pair.server_v4);
    check_bad_fragments(&pair.client_ns, &target, mode);
    let big = make_case(&dir.0, BIG.0, BIG.1);
    send_all(
        &pair.client_ns,
        &target,
        &cases(&dir.0),
        Some(&big),
        &dir.0,
        mode,
    );
    // IPv6 as well, one mid-size image.
    let v6 = format!("[{}]:9000", pair.server_v6);
    send_image(
        &pair.client_ns,
        &v6,
        &make_case(&dir.0, 333, 77),
        &dir.0,
        &format!("{mode}-v6"),
    );
    let errors = run_ok(
        "ip",
        &["netns", "exec", &pair.client_ns, "cat", "/proc/net/snmp"],
    );
    let udp: Vec<&str> = errors.lines().filter(|l| l.starts_with("Udp:")).collect();
    let column = udp[0]
        .split_whitespace()
        .position(|f| f == "InCsumErrors")
        .unwrap();
    assert_eq!(
        udp[1].split_whitespace().nth(column),
        Some("0"),
        "UDP checksum errors"
    );
}

#[test]
fn grayscale_xdp_skb_matches_the_reference_under_loss() {
    if !kernel_tests_enabled("grayscale_xdp_skb_matches_the_reference_under_loss") {
        return;
    }
    xdp("skb");
}

#[test]
fn grayscale_xdp_drv_matches_the_reference_under_loss() {
    if !kernel_tests_enabled("grayscale_xdp_drv_matches_the_reference_under_loss") {
        return;
    }
    xdp("drv");
}

/// A namespace of its own with only loopback, for the userspace servers: the loss rule then
/// applies to their traffic without touching the host's.
struct LoopbackNs(String);

impl LoopbackNs {
    fn create(tag: &str) -> LoopbackNs {
        let name = format!("lnic-gs-{tag}-{}", std::process::id());
        let ns = LoopbackNs(name);
        run_ok("ip", &["netns", "add", &ns.0]);
        run_ok("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for LoopbackNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

#[test]
fn grayscale_vm_matches_the_reference_under_loss() {
    if !kernel_tests_enabled("grayscale_vm_matches_the_reference_under_loss") {
        return;
    }
    let dir = TempDir::new("vm");
    let ns = LoopbackNs::create("vm");
    let object = lambda_object("grayscale");
    let _server = Server::start(
        &[
            "-n",
            &ns.0,
            "run",
            object.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9000",
            "--workers",
            "2",
        ],
        "serving grayscale on udp 127.0.0.1:9000",
    );
    add_loss(&ns.0, 9000);
    check_bad_fragments(&ns.0, "127.0.0.1:9000", "vm");
    let big = make_case(&dir.0, BIG.0, BIG.1);
    send_all(
        &ns.0,
        "127.0.0.1:9000",
        &cases(&dir.0),
        Some(&big),
        &dir.0,
        "vm",
    );
}

#[test]
fn grayscale_baseline_matches_the_reference_under_loss() {
    if !kernel_tests_enabled("grayscale_baseline_matches_the_reference_under_loss") {
        return;
    }
    let dir = TempDir::new("baseline");
    let ns = LoopbackNs::create("bl");
    let _server = Server::start(
        &[
            "-n",
            &ns.0,
            "baseline",
            "grayscale",
            "--listen",
            "127.0.0.1:9000",
        ],
        "baseline grayscale on udp 127.0.0.1:9000",
    );
    add_loss(&ns.0, 9000);
    check_bad_fragments(&ns.0, "127.0.0.1:9000", "baseline");
    let big = make_case(&dir.0, BIG.0, BIG.1);
    send_all(
        &ns.0,
        "127.0.0.1:9000",
        &cases(&dir.0),
        Some(&big),
        &dir.0,
        "baseline",
    );
}

/// Bad input to the client is a clear error, not a panic.
#[test]
fn invoke_image_refuses_bad_input() {
    let dir = TempDir::new("bad");
    let not_png = dir.0.join("not.png");
    std::fs::write(&not_png, b"not a png").unwrap();
    let out = common::lambdactl(&[
        "invoke",
        "127.0.0.1:9",
        "--lambda",
        "1",
        "--image",
        not_png.to_str().unwrap(),
        "--out",
        dir.0.join("o.png").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a readable PNG"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let wide = dir.0.join("wide.png");
    write_rgb_png(&wide, 4097, 1, &make_rgb(4097, 1, SEED));
    let out = common::lambdactl(&[
        "invoke",
        "127.0.0.1:9",
        "--lambda",
        "1",
        "--image",
        wide.to_str().unwrap(),
        "--out",
        dir.0.join("o.png").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("1 to 4096 pixels"), "{stderr}");
    // A server that never answers: bounded resends, then an error naming the fragment.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let small = dir.0.join("small.png");
    write_rgb_png(&small, 5, 5, &make_rgb(5, 5, SEED));
    let started = Instant::now();
    let out = common::lambdactl(&[
        "invoke",
        &silent.local_addr().unwrap().to_string(),
        "--lambda",
        "1",
        "--image",
        small.to_str().unwrap(),
        "--out",
        dir.0.join("o.png").to_str().unwrap(),
        "--max-sends",
        "3",
        "--retransmit-ms",
        "20",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("fragment 0 of 1 got no answer") && stderr.contains("after 3 sends"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut buf = [0u8; 2048];
    silent.set_nonblocking(true).unwrap();
    let mut received = 0;
    while silent.recv(&mut buf).is_ok() {
        received += 1;
    }
    assert_eq!(received, 3, "the fragment was sent exactly 3 times");
}
