//! The memcached workload against a real memcached server in a network namespace: the same
//! seeded 10,000 random GET/SET operations (hits and misses, values of many lengths, some too
//! large for one datagram, some malformed requests) through the memcached lambda in XDP `drv`
//! and `skb` mode (and in `drv` mode with the lambda's hot-key cache on), through the VM
//! backend (`lambdactl run`, JIT and interpreter) and through the native baseline
//! (`lambdactl baseline memcached`). Every answer is compared with a reference model
//! kept here, written from memcached's protocol rather than from `workloads`; the model itself
//! is checked afterwards against memcached over its own TCP text protocol.
//!
//! Topology: the client and memcached share the client namespace; the lambda (or the VM, or the
//! baseline) serves on the server end of the veth pair. In XDP the lambda sends its memcached
//! request back out of the interface it came in on (`XDP_TX`), so memcached must sit behind it.

mod common;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

const OPS: usize = 10_000;
const SEED: u64 = 0x6d65_6d63_6163_6865;
const LAMBDA_PORT: u16 = 9000;
/// Keys in the pool: few enough that gets hit often. Sets use only the first
/// [`SET_KEYS`], so gets of the rest always miss.
const KEYS: usize = 64;
const SET_KEYS: usize = 48;
/// The longest λ body one 1500-byte-MTU IPv4 datagram carries.
const MAX_REQUEST_BODY: usize = 1500 - 20 - 8 - HEADER_LEN;
/// memcached's largest UDP datagram (its UDP_MAX_PAYLOAD_SIZE).
const MEMCACHED_DATAGRAM: usize = 1400;

/// One generated operation: the λ body and what kind of request it is.
#[derive(Clone)]
enum Op {
    Get(Vec<u8>),
    Set(Vec<u8>, Vec<u8>),
    Malformed(Vec<u8>),
}

impl Op {
    fn body(&self) -> Vec<u8> {
        match self {
            Op::Get(key) => [b"get ", &key[..]].concat(),
            Op::Set(key, value) => [b"set ", &key[..], b" ", &value[..]].concat(),
            Op::Malformed(body) => body.clone(),
        }
    }
}

/// Key pool: lengths from 1 to memcached's 250, printable bytes without spaces.
fn key_pool(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => 250,
                _ => 1 + rng.below(if i % 4 == 0 { 250 } else { 24 }),
            };
            let mut key: Vec<u8> = (0..len).map(|_| 0x21 + rng.below(94) as u8).collect();
            // Distinct keys: the index in the first bytes.
            let tag = format!("{i:02}");
            for (k, t) in key.iter_mut().zip(tag.bytes()) {
                *k = t;
            }
            key
        })
        .collect()
}

fn operations() -> (Vec<Vec<u8>>, Vec<Op>) {
    let mut rng = Rng(SEED);
    let keys = key_pool(&mut rng);
    let ops = (0..OPS)
        .map(|_| {
            let key = keys[rng.below(keys.len())].clone();
            match rng.below(100) {
                0..=44 => Op::Get(key),
                45..=94 => {
                    let key = keys[rng.below(SET_KEYS)].clone();
                    let room = MAX_REQUEST_BODY - 5 - key.len();
                    let len = match rng.below(10) {
                        0..=5 => rng.below(64),
                        6..=8 => rng.below(room.min(1100)),
                        // Near and over the single-datagram limit: TOO_LARGE.
                        _ => room - rng.below(300.min(room)),
                    };
                    let value = rng.text(len);
                    Op::Set(key, value)
                }
                _ => Op::Malformed(match rng.below(7) {
                    0 => b"get".to_vec(),
                    1 => [b"get ", &key[..], b" extra"].concat(),
                    2 => [b"set ", &key[..]].concat(),
                    3 => [b"delete ", &key[..]].concat(),
                    4 => [b"get ", &[b'k'; 251][..]].concat(),
                    5 => b"get bad\x01key".to_vec(),
                    _ => b"".to_vec(),
                }),
            }
        })
        .collect();
    (keys, ops)
}

/// The reference: what memcached's protocol says each operation answers, given the items
/// stored so far. A value is refused when memcached's `get` reply for it would not fit one
/// datagram.
#[derive(Default)]
struct Model(HashMap<Vec<u8>, Vec<u8>>);

impl Model {
    fn apply(&mut self, op: &Op) -> (Status, Vec<u8>) {
        match op {
            Op::Get(key) => match self.0.get(key) {
                Some(value) => (Status::Ok, value.clone()),
                None => (Status::NotFound, Vec::new()),
            },
            Op::Set(key, value) => {
                let line = format!(
                    "VALUE {} 0 {}\r\n",
                    String::from_utf8_lossy(key),
                    value.len()
                );
                if 8 + line.len() + value.len() + b"\r\nEND\r\n".len() > MEMCACHED_DATAGRAM {
                    (Status::TooLarge, Vec::new())
                } else {
                    self.0.insert(key.clone(), value.clone());
                    (Status::Ok, Vec::new())
                }
            }
            Op::Malformed(_) => (Status::BadRequest, Vec::new()),
        }
    }
}

/// A background process (memcached, `lambdactl run`, a baseline), killed by its PID on drop.
struct Background {
    child: Child,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl Background {
    fn spawn(what: &str, program: &str, args: &[&str]) -> Background {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Background {
            child,
            stdout,
            what: what.to_owned(),
        }
    }

    /// Reads stdout up to a line starting with `prefix`; returns that line.
    fn wait_for_line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{} ended before printing {prefix:?}", self.what);
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// memcached's own TCP text protocol: `get` for each key, from inside the client namespace.
fn tcp_get(pair: &NetnsPair, keys: &[Vec<u8>]) -> HashMap<Vec<u8>, Vec<u8>> {
    let addr = format!("{}:{}", pair.client_v4, memcached::PORT);
    NetnsPair::within(&pair.client_ns, || {
        let mut stream = TcpStream::connect(&addr).expect("memcached TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut found = HashMap::new();
        for key in keys {
            stream
                .write_all(&[b"get ", &key[..], b"\r\n"].concat())
                .unwrap();
            // Read up to the END line; values are printable, so the reply is text.
            let mut reply = Vec::new();
            let mut buf = [0u8; 4096];
            while !reply.ends_with(b"END\r\n") {
                let n = stream.read(&mut buf).expect("memcached TCP reply");
                assert!(n > 0, "memcached closed the TCP connection");
                reply.extend_from_slice(&buf[..n]);
            }
            if reply.starts_with(b"VALUE ") {
                let line_end = reply.windows(2).position(|w| w == b"\r\n").unwrap();
                let line = String::from_utf8_lossy(&reply[..line_end]).into_owned();
                let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                let value = reply[line_end + 2..line_end + 2 + len].to_vec();
                found.insert(key.clone(), value);
            } else {
                assert_eq!(reply, b"END\r\n", "memcached TCP reply");
            }
        }
        found
    })
}

/// Udp InCsumErrors of the client namespace.
fn client_checksum_errors(pair: &NetnsPair) -> u64 {
    let out = pair.in_client("cat", &["/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    let at = names.iter().position(|n| *n == "InCsumErrors").unwrap();
    values[at].parse().unwrap()
}

/// Runs every operation from the client namespace against `server_v4:9000`, one at a time,
/// comparing each answer with the model. Returns the model (for the TCP check) and how many
/// answers of each status came.
fn run_operations(pair: &NetnsPair, backend: &str) -> (Model, HashMap<Status, usize>) {
    let (_, ops) = operations();
    let target = format!("{}:{LAMBDA_PORT}", pair.server_v4);
    let bind = format!("{}:0", pair.client_v4);
    NetnsPair::within(&pair.client_ns, || {
        let socket = UdpSocket::bind(&bind).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut model = Model::default();
        let mut resent = 0;
        let mut statuses: HashMap<Status, usize> = HashMap::new();
        let mut buf = [0u8; 2048];
        let started = Instant::now();
        for (i, op) in ops.iter().enumerate() {
            let request_id = 0x4d43_0000_0000 + i as u64;
            let body = op.body();
            let request = [
                &LambdaHeader::request(7, request_id).as_bytes()[..],
                &body[..],
            ]
            .concat();
            let (want_status, want_body) = model.apply(op);
            let mut attempts = 0;
            let (status, got_body) = 'answer: loop {
                attempts += 1;
                assert!(
                    attempts <= 4,
                    "{backend}: op {i} ({:?}…): no answer after {} tries",
                    String::from_utf8_lossy(&body[..body.len().min(40)]),
                    attempts - 1
                );
                if attempts > 1 {
                    resent += 1;
                }
                socket.send_to(&request, &target).unwrap();
                loop {
                    let n = match socket.recv(&mut buf) {
                        Ok(n) => n,
                        Err(_) => continue 'answer,
                    };
                    let header = LambdaHeader::decode(&buf[..n]).expect("a λ response");
                    // A late answer to an earlier try of an earlier request: skip it.
                    if header.request_id() != request_id {
                        continue;
                    }
                    assert!(header.is_response());
                    assert_eq!(header.lambda_id(), 7);
                    let status = header.status().expect("a known status");
                    break 'answer (status, buf[HEADER_LEN..n].to_vec());
                }
            };
            assert_eq!(
                (status, got_body.len()),
                (want_status, want_body.len()),
                "{backend}: op {i}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            );
            assert!(got_body == want_body, "{backend}: op {i}: wrong value");
            *statuses.entry(status).or_default() += 1;
        }
        // The mix must exercise every answer: hits, misses, stores, refusals.
        for status in [
            Status::Ok,
            Status::NotFound,
            Status::TooLarge,
            Status::BadRequest,
        ] {
            assert!(
                statuses.get(&status).copied().unwrap_or(0) >= 50,
                "{backend}: too few {} answers: {statuses:?}",
                status.name()
            );
        }
        let elapsed = started.elapsed();
        let _ = writeln!(
            std::io::stderr(),
            "{backend}: {OPS} operations in {elapsed:.2?} ({resent} resent), answers {statuses:?}"
        );
        (model, statuses)
    })
}

/// The model against memcached itself, over TCP, for every key in the pool (present and
/// absent ones alike).
fn check_model_against_memcached(pair: &NetnsPair, model: &Model, backend: &str) {
    let (keys, _) = operations();
    let direct = tcp_get(pair, &keys);
    assert!(
        !direct.is_empty() && direct.len() < keys.len(),
        "{backend}: the run should leave some keys set and some never set ({} of {})",
        direct.len(),
        keys.len()
    );
    for key in &keys {
        assert_eq!(
            direct.get(key),
            model.0.get(key),
            "{backend}: memcached and the model disagree on key {:?}",
            String::from_utf8_lossy(key)
        );
    }
}

fn through_xdp(mode: &str, cache: bool) {
    let test = format!("memcached_lambda_in_{mode}_mode_matches_memcached (cache {cache})");
    if !memcached::available(&test) {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let memcached = memcached::start(&pair);
    if mode == "drv" {
        pair.give_client_a_drv_peer_program();
    }
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        lambda_object("memcached").to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        mode,
    ]);
    memcached::configure(&pair, &pair.server_if, cache);
    let errors_before = client_checksum_errors(&pair);
    let (model, statuses) = run_operations(&pair, mode);
    assert_eq!(
        client_checksum_errors(&pair),
        errors_before,
        "UDP checksum errors"
    );
    check_model_against_memcached(&pair, &model, mode);

    // A reply that matches no pending request is dropped and counted. memcached is stopped
    // first so its address and port are free to forge one from.
    drop(memcached);
    let counts = |pair: &NetnsPair| -> serde_json::Value {
        let dump = lambdactl_ok(&[
            "-n",
            &pair.server_ns,
            "maps",
            "dump",
            &format!("{}/MC_COUNTS", pair.server_if),
            "--json",
        ]);
        serde_json::from_str(&dump).unwrap()
    };
    memcached::assert_no_pending(&pair, &pair.server_if, mode);
    let before = counts(&pair);
    assert_eq!(
        slot_total(&before, 0),
        slot_total(&before, 1),
        "{mode}: every forwarded request was answered"
    );
    let (hits, misses) = (slot_total(&before, 4), slot_total(&before, 5));
    // Every operation was refused at once, answered from the cache, or forwarded.
    let refused = statuses.get(&Status::BadRequest).copied().unwrap_or(0)
        + statuses.get(&Status::TooLarge).copied().unwrap_or(0);
    assert_eq!(
        slot_total(&before, 0) + hits + refused as u64,
        OPS as u64,
        "{mode}: {before}"
    );
    if cache {
        // Answered from the cache, never forwarded: the forwarded count falls short of the
        // requests by exactly the hits.
        let _ = writeln!(
            std::io::stderr(),
            "{mode}: cache hits {hits}, misses {misses} ({:.0} % hit rate)",
            100.0 * hits as f64 / (hits + misses).max(1) as f64
        );
        // Half the operations are SETs, each invalidating its key, and values much longer
        // than their request are not answered from the cache: about a fifth of the GETs hit.
        assert!(
            hits > 500,
            "{mode}: the cache answered too few GETs: {before}"
        );
        assert!(misses > 0, "{mode}: {before}");
    } else {
        assert_eq!((hits, misses), (0, 0), "{mode}: the cache is off");
    }
    let forged_from = format!("{}:{}", pair.client_v4, memcached::PORT);
    let target = format!("{}:{LAMBDA_PORT}", pair.server_v4);
    let answered = NetnsPair::within(&pair.client_ns, || {
        let socket = UdpSocket::bind(&forged_from).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // A request id well away from any handed out (the CPU sits in its top bits).
        socket
            .send_to(b"\xff\xff\x00\x00\x00\x01\x00\x00END\r\n", &target)
            .unwrap();
        socket.recv(&mut [0u8; 64]).is_ok()
    });
    assert!(!answered, "{mode}: an unmatched reply was answered");

    // `lambdactl stats` sees every answer with its status, and the unmatched reply as a drop.
    let stats = lambdactl_ok(&["-n", &pair.server_ns, "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let sdk = stats["lambdas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["iface"] == pair.server_if.as_str())
        .map(|l| l["sdk"].clone())
        .expect("stats for the memcached lambda");
    for (status, n) in &statuses {
        assert_eq!(
            sdk["statuses"][status.name()].as_u64(),
            Some(*n as u64),
            "{mode}: stats count of {}: {sdk}",
            status.name()
        );
    }
    assert_eq!(
        sdk["actions"]["XDP_DROP"].as_u64(),
        Some(1),
        "{mode}: {sdk}"
    );
    let after = counts(&pair);
    assert_eq!(
        slot_total(&after, 2),
        slot_total(&before, 2) + 1,
        "{mode}: the unmatched reply is counted: {after}"
    );
}

/// The total over CPUs of slot `slot` in a `maps dump --json` of a per-CPU array.
fn slot_total(dump: &serde_json::Value, slot: u64) -> u64 {
    dump["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["key"] == slot)
        .and_then(|e| e["values"].as_array())
        .map(|values| values.iter().map(|v| v.as_u64().unwrap()).sum())
        .unwrap_or_else(|| panic!("no slot {slot} in {dump}"))
}

#[test]
fn memcached_lambda_in_skb_mode_matches_memcached() {
    through_xdp("skb", false);
}

#[test]
fn memcached_lambda_in_drv_mode_matches_memcached() {
    through_xdp("drv", false);
}

/// The same operations with the hot-key cache on: GET hits answered by the lambda alone, SETs
/// invalidating, and still exactly memcached's answers.
#[test]
fn memcached_lambda_with_its_hot_key_cache_matches_memcached() {
    through_xdp("drv", true);
}

#[test]
fn memcached_lambda_in_the_vm_matches_memcached() {
    through_vm(true);
}

#[test]
fn memcached_lambda_in_the_vm_interpreter_matches_memcached() {
    through_vm(false);
}

fn through_vm(jit: bool) {
    let backend = if jit { "vm-jit" } else { "vm-interpreter" };
    if !memcached::available(&format!(
        "memcached_lambda_in_the_{backend}_matches_memcached"
    )) {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let _memcached = memcached::start(&pair);
    let sock = std::env::temp_dir().join(format!(
        "lnic-memcached-{backend}-{}.sock",
        std::process::id()
    ));
    let listen = format!("{}:{LAMBDA_PORT}", pair.server_v4);
    let object = lambda_object("memcached");
    let mut args = vec![
        "-n",
        &pair.server_ns,
        "run",
        object.to_str().unwrap(),
        "--listen",
        &listen,
        "--workers",
        "2",
        "--control",
        sock.to_str().unwrap(),
    ];
    if jit {
        args.push("--jit");
    }
    let mut vm = Background::spawn("lambdactl run", env!("CARGO_BIN_EXE_lambdactl"), &args);
    vm.wait_for_line("control socket");
    lambdactl_ok(&[
        "maps",
        "--vm",
        sock.to_str().unwrap(),
        "set",
        "CONFIG",
        "0",
        &memcached::config_value(&pair, false),
    ]);
    let (model, _) = run_operations(&pair, backend);
    check_model_against_memcached(&pair, &model, backend);
}

#[test]
fn memcached_baseline_matches_memcached() {
    if !memcached::available("memcached_baseline_matches_memcached") {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let _memcached = memcached::start(&pair);
    let listen = format!("{}:{LAMBDA_PORT}", pair.server_v4);
    let server = format!("{}:{}", pair.client_v4, memcached::PORT);
    let mut baseline = Background::spawn(
        "lambdactl baseline",
        env!("CARGO_BIN_EXE_lambdactl"),
        &[
            "-n",
            &pair.server_ns,
            "baseline",
            "memcached",
            "--listen",
            &listen,
            "--memcached",
            &server,
        ],
    );
    baseline.wait_for_line("serving baseline memcached");
    let (model, _) = run_operations(&pair, "baseline");
    check_model_against_memcached(&pair, &model, "baseline");
}
