//! A real memcached in a test pair's client namespace, and the memcached lambda's `CONFIG`
//! value that points at it, and its maps: shared by the memcached and coalesced tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{NetnsPair, kernel_tests_enabled, lambdactl_ok, run_ok};

/// memcached's UDP and TCP port in the tests.
pub const PORT: u16 = 11211;

/// Whether the test can run here: root (see [`kernel_tests_enabled`]) and memcached
/// installed; skips with a printed reason otherwise, except under CI=true, where it fails.
pub fn available(test: &str) -> bool {
    if !kernel_tests_enabled(test) {
        return false;
    }
    if Command::new("memcached").arg("-h").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but memcached is not installed (.ci/run installs it)");
    }
    eprintln!("skipping {test}: memcached is not installed (apt-get install memcached)");
    false
}

/// memcached in the client namespace, killed by its PID on drop.
pub struct Memcached(Child);

impl Drop for Memcached {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts memcached in `pair`'s client namespace on the client address (UDP and TCP), and
/// waits until its TCP port accepts.
pub fn start(pair: &NetnsPair) -> Memcached {
    let port = PORT.to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &pair.client_ns, "memcached"])
        .args(["-U", &port, "-p", &port, "-l", &pair.client_v4])
        .args(["-u", "root", "-t", "2", "-m", "64"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting memcached");
    let server = Memcached(child);
    let addr = format!("{}:{port}", pair.client_v4);
    let deadline = Instant::now() + Duration::from_secs(10);
    NetnsPair::within(&pair.client_ns, || {
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    server
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = run_ok("ip", &["-n", ns, "link", "show", "dev", dev]);
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The memcached lambda's `CONFIG` value for the server [`start`] runs: server IPv4 address,
/// MAC, UDP port (network order), flags (bit 0: the hot-key cache) and 3 reserved bytes, as
/// `hex:`.
pub fn config_value(pair: &NetnsPair, cache: bool) -> String {
    let ip: std::net::Ipv4Addr = pair.client_v4.parse().unwrap();
    let mut bytes = ip.octets().to_vec();
    bytes.extend_from_slice(&mac_of(&pair.client_ns, &pair.client_if));
    bytes.extend_from_slice(&PORT.to_be_bytes());
    bytes.extend_from_slice(&[u8::from(cache), 0, 0, 0]);
    format!(
        "hex:{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Points the memcached lambda that owns `owner/CONFIG` (an interface it is attached to, or
/// the name it was deployed under) at the memcached [`start`] runs in `pair`'s client
/// namespace, with the hot-key cache on or off.
pub fn configure(pair: &NetnsPair, owner: &str, cache: bool) {
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "maps",
        "set",
        &format!("{owner}/CONFIG"),
        "0",
        &config_value(pair, cache),
    ]);
}

/// Asserts that `owner/PENDING` is empty: every memcached reply matched its pending request
/// and removed it.
pub fn assert_no_pending(pair: &NetnsPair, owner: &str, what: &str) {
    let pending = lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "maps",
        "dump",
        &format!("{owner}/PENDING"),
        "--json",
    ]);
    let pending: serde_json::Value = serde_json::from_str(&pending).unwrap();
    assert_eq!(
        pending["entries"].as_array().map(Vec::len),
        Some(0),
        "{what}: pending requests left behind"
    );
}
