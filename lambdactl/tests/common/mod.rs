//! Fixtures for the kernel tests: privilege checks, network-namespace pairs joined by a veth
//! pair, and running the real `lambdactl` binary.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod client;
pub mod memcached;

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// True when kernel tests can run here. Without root they skip with a printed reason, except
/// under `CI=true`, where skipping would hide a broken CI setup, so they fail instead.
pub fn kernel_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but not running as root; kernel tests must run in CI");
    }
    // Straight to stderr: the test harness captures `eprintln!` of passing tests, and a skip
    // must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) for XDP and netns"
    );
    false
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A lambda object built by `cargo xtask build-ebpf`.
pub fn lambda_object(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/lambdas")
        .join(format!("{name}.o"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-ebpf` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// Runs `lambdactl` with `args`; the pins and state records go where the test says.
pub fn lambdactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .args(args)
        .output()
        .expect("running lambdactl")
}

/// A command's stdout and stderr, labelled, for assertion messages and output checks.
pub fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `lambdactl`, asserting success, and returns its stdout.
pub fn lambdactl_ok(args: &[&str]) -> String {
    let out = lambdactl(args);
    assert!(
        out.status.success(),
        "lambdactl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two network namespaces, `server` and `client`, joined by a veth pair with IPv4 and IPv6
/// addresses. Names are unique per process and per pair; everything is deleted on drop, also
/// when the test fails (deleting a namespace deletes its end of the veth pair).
pub struct NetnsPair {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    pub server_v4: String,
    pub client_v4: String,
    pub server_v6: String,
    pub client_v6: String,
}

static PAIRS: AtomicU32 = AtomicU32::new(0);

impl NetnsPair {
    pub fn create() -> NetnsPair {
        let n = PAIRS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id());
        // Interface names have at most 15 bytes: pid (≤ 7 digits) + counter + 2-byte prefix.
        let subnet = (std::process::id() % 200 + n * 7) % 250 + 1;
        let pair = NetnsPair {
            server_ns: format!("lnic-test-{id}-s"),
            client_ns: format!("lnic-test-{id}-c"),
            server_if: format!("ls{id}"),
            client_if: format!("lc{id}"),
            server_v4: format!("10.213.{subnet}.1"),
            client_v4: format!("10.213.{subnet}.2"),
            server_v6: format!("fd00:213:{subnet:x}::1"),
            client_v6: format!("fd00:213:{subnet:x}::2"),
        };
        // Build inside the value that cleans up, so a failure half-way still tears down.
        run_ok("ip", &["netns", "add", &pair.server_ns]);
        run_ok("ip", &["netns", "add", &pair.client_ns]);
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &pair.server_if,
                "netns",
                &pair.server_ns,
                "type",
                "veth",
                "peer",
                "name",
                &pair.client_if,
                "netns",
                &pair.client_ns,
            ],
        );
        for (ns, dev, v4, v6) in [
            (
                &pair.server_ns,
                &pair.server_if,
                &pair.server_v4,
                &pair.server_v6,
            ),
            (
                &pair.client_ns,
                &pair.client_if,
                &pair.client_v4,
                &pair.client_v6,
            ),
        ] {
            run_ok(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            run_ok(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    /// Runs `program args…` inside the client namespace.
    pub fn in_client(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.client_ns, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens live there.
    pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(format!("/run/netns/{ns}")).expect("netns file");
                    // SAFETY: setns on this thread only, with a namespace fd we hold open.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns({ns}): {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("netns thread panicked")
        })
    }

    /// Makes the client's kernel check every UDP checksum in software: with TX checksum
    /// offload on, veth would hand an `XDP_TX`'d answer back still marked CHECKSUM_PARTIAL,
    /// trusted, and a wrong checksum from a lambda would go unnoticed.
    pub fn checksums_in_software(&self) {
        let out = self.in_client("ethtool", &["-K", &self.client_if, "tx", "off"]);
        assert!(
            out.status.success(),
            "ethtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Gives the client end an XDP program, which native-mode `XDP_TX` on a veth needs on the
    /// peer (its XDP receive queue exists only while the peer has one): the static-server on
    /// port 1 passes everything the tests send.
    pub fn give_client_a_drv_peer_program(&self) {
        let object = lambda_object("static-server");
        lambdactl_ok(&[
            "-n",
            &self.client_ns,
            "attach",
            object.to_str().unwrap(),
            "--iface",
            &self.client_if,
            "--mode",
            "drv",
            "--port",
            "1",
        ]);
    }

    /// Whether an XDP program is attached to the server interface (`ip -d link`).
    pub fn server_xdp_attached(&self) -> bool {
        let out = run_ok(
            "ip",
            &[
                "-n",
                &self.server_ns,
                "-d",
                "link",
                "show",
                "dev",
                &self.server_if,
            ],
        );
        // `ip` prints `prog/xdp id N` for any attached XDP program (skb or drv mode).
        out.contains("prog/xdp id")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Detach first (pins live in the host's bpffs and would outlive the namespaces), also
        // when the test failed half-way; "nothing attached" errors are expected and ignored.
        for (ns, dev) in [
            (&self.server_ns, &self.server_if),
            (&self.client_ns, &self.client_if),
        ] {
            let _ = lambdactl(&["-n", ns, "undeploy", "--all"]);
            let _ = lambdactl(&["-n", ns, "detach", "--iface", dev]);
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A pair ready for drv-mode XDP_TX: software checksums on the client, a peer program.
pub fn prepared_pair() -> NetnsPair {
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    pair.give_client_a_drv_peer_program();
    pair
}

/// Internet checksum over big-endian words; a correct packet region sums to 0xffff.
pub fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += (u64::from(pair[0]) << 8) | pair.get(1).copied().map(u64::from).unwrap_or(0);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Sends `count` λ requests (lambda 1, body "hi") to port 9000 of `pair`'s server with the
/// independent Python client, and checks every one was answered OK.
pub fn send_requests(pair: &NetnsPair, count: u64) {
    let script = workspace_root().join("tests/clients/lambda_client.py");
    let out = pair.in_client(
        "python3",
        &[
            script.to_str().unwrap(),
            &pair.server_v4,
            "9000",
            "1",
            "hi",
            &count.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("client prints JSON");
    assert_eq!(summary["statuses"]["0"], count, "{summary}");
}

/// xorshift64*: a small seeded generator, so a failure reproduces exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` printable ASCII bytes, no space (`!` to `~`).
    pub fn printable(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| 0x21 + self.below(94) as u8).collect()
    }

    /// `len` printable ASCII bytes, space included.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| 0x20 + self.below(95) as u8).collect()
    }
}
