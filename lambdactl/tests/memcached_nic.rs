//! The memcached lambda's NIC build (`memcached-nic.o`) against its normal build
//! (`memcached.o`), over real UDP on a veth pair with a real memcached: both attached the
//! normal way (`lambdactl attach`, then `maps set IF/CONFIG` with the same value), each in a
//! fresh pair of namespaces with a fresh memcached, answer the same seeded sequence —
//! requests before the server is configured, GET hits and misses, SETs of many sizes
//! (some too large for one datagram), malformed bodies, and GETs of items stored over
//! memcached's TCP protocol whose replies memcached splits over several datagrams or which
//! carry flags — with byte-identical λ responses (the whole UDP payload: header and body), in
//! XDP `skb` and `drv` mode.
//!
//! Over IPv4 only: the NIC build passes a request over IPv6 (or with IPv4 options) to the host
//! where the normal build answers it UNAVAILABLE (see `samples/src/shared/memcached_nic.rs`).

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

const SEED: u64 = 0x6e69_636d_6361_6368;
const OPS: usize = 1500;
const LAMBDA_PORT: u16 = 9000;
/// The longest λ body one 1500-byte-MTU IPv4 datagram carries.
const MAX_REQUEST_BODY: usize = 1500 - 20 - 8 - HEADER_LEN;

/// Items stored over TCP before the run: (key, flags, value length). memcached splits the
/// UDP reply to a GET of the long ones over several datagrams (TOO_LARGE from the lambda); the
/// others come back whole with their flags.
const STORED_OVER_TCP: &[(&str, u32, usize)] = &[
    ("tcp-split-2k", 0, 2000),
    ("tcp-split-9k", 3, 9000),
    ("tcp-flags", 4_294_967_295, 40),
    ("tcp-fits", 7, 1300),
];

/// The λ bodies, in order.
fn bodies() -> Vec<Vec<u8>> {
    let mut rng = Rng(SEED);
    let keys: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let len = match i {
                0 => 1,
                1 => 250,
                _ => 1 + rng.below(if i % 5 == 0 { 250 } else { 20 }),
            };
            let mut key: Vec<u8> = (0..len).map(|_| 0x21 + rng.below(94) as u8).collect();
            for (k, t) in key.iter_mut().zip(format!("{i:02}").bytes()) {
                *k = t;
            }
            key
        })
        .collect();
    let mut out = Vec::new();
    for (key, _, _) in STORED_OVER_TCP {
        out.push(format!("get {key}").into_bytes());
    }
    for _ in 0..OPS {
        let key = &keys[rng.below(keys.len())];
        let body = match rng.below(100) {
            0..=44 => [b"get ", &key[..]].concat(),
            45..=89 => {
                // Only the first 30 keys are ever set: gets of the rest miss.
                let key = &keys[rng.below(30)];
                let room = MAX_REQUEST_BODY - 5 - key.len();
                let len = match rng.below(10) {
                    0..=5 => rng.below(64),
                    6..=8 => rng.below(room.min(1100)),
                    _ => room - rng.below(300.min(room)),
                };
                let value: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                [b"set ", &key[..], b" ", &value[..]].concat()
            }
            90..=94 => {
                let (key, _, _) = STORED_OVER_TCP[rng.below(STORED_OVER_TCP.len())];
                format!("get {key}").into_bytes()
            }
            _ => match rng.below(7) {
                0 => b"get".to_vec(),
                1 => [b"get ", &key[..], b" extra"].concat(),
                2 => [b"set ", &key[..]].concat(),
                3 => [b"delete ", &key[..]].concat(),
                4 => [b"get ", &[b'k'; 251][..]].concat(),
                5 => b"get bad\x01key".to_vec(),
                _ => Vec::new(),
            },
        };
        out.push(body);
    }
    out
}

/// Stores [`STORED_OVER_TCP`] with memcached's TCP text protocol.
fn store_over_tcp(pair: &NetnsPair) {
    let addr = format!("{}:{}", pair.client_v4, memcached::PORT);
    NetnsPair::within(&pair.client_ns, || {
        let mut stream = TcpStream::connect(&addr).expect("memcached TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for (key, flags, len) in STORED_OVER_TCP {
            let value: Vec<u8> = (0..*len).map(|i| b'a' + (i % 26) as u8).collect();
            let command = format!("set {key} {flags} 0 {len}\r\n");
            stream
                .write_all(&[command.as_bytes(), &value, b"\r\n"].concat())
                .unwrap();
            let mut reply = [0u8; 8];
            stream.read_exact(&mut reply).expect("memcached TCP reply");
            assert_eq!(&reply, b"STORED\r\n", "storing {key}");
        }
    });
}

/// Sends each body (λ id 7, request id from its index) from the client namespace and returns
/// each answer's whole UDP payload, resending up to three times after 500 ms.
fn answers(pair: &NetnsPair, what: &str, bodies: &[Vec<u8>], id_base: u64) -> Vec<Vec<u8>> {
    let target = format!("{}:{LAMBDA_PORT}", pair.server_v4);
    let bind = format!("{}:0", pair.client_v4);
    NetnsPair::within(&pair.client_ns, || {
        let socket = UdpSocket::bind(&bind).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut out = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.iter().enumerate() {
            let request_id = id_base + i as u64;
            let request = [
                &LambdaHeader::request(7, request_id).as_bytes()[..],
                &body[..],
            ]
            .concat();
            let mut answer = None;
            'tries: for _ in 0..4 {
                socket.send_to(&request, &target).unwrap();
                while let Ok(n) = socket.recv(&mut buf) {
                    let header = LambdaHeader::decode(&buf[..n]).expect("a λ response");
                    // A late answer to an earlier try of an earlier request: skip it.
                    if header.request_id() == request_id {
                        answer = Some(buf[..n].to_vec());
                        break 'tries;
                    }
                }
            }
            out.push(answer.unwrap_or_else(|| {
                panic!(
                    "{what}: no answer to request {i} ({:?}…)",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                )
            }));
        }
        out
    })
}

/// Runs the whole sequence against `object` in XDP `mode`, in a fresh pair with a fresh
/// memcached: the answers before configuration, then after.
fn run_object(object: &str, mode: &str, bodies: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let _memcached = memcached::start(&pair);
    if mode == "drv" {
        pair.give_client_a_drv_peer_program();
    }
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        lambda_object(object).to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        mode,
    ]);
    let what = format!("{object} ({mode})");
    let unconfigured = answers(&pair, &what, &bodies[..8], 0x1_0000_0000);
    memcached::configure(&pair, &pair.server_if, false);
    store_over_tcp(&pair);
    let configured = answers(&pair, &what, bodies, 0x2_0000_0000);
    memcached::assert_no_pending(&pair, &pair.server_if, &what);
    (unconfigured, configured)
}

fn status_of(answer: &[u8]) -> Status {
    LambdaHeader::decode(answer)
        .ok()
        .and_then(|h| h.status())
        .expect("a known status")
}

fn differential(mode: &str) {
    let test = format!("memcached_nic_answers_as_the_normal_build_in_{mode}_mode");
    if !memcached::available(&test) {
        return;
    }
    let bodies = bodies();
    let normal = run_object("memcached", mode, &bodies);
    let nic = run_object("memcached-nic", mode, &bodies);

    for (i, (a, b)) in normal.0.iter().zip(&nic.0).enumerate() {
        assert_eq!(status_of(a), Status::Unavailable, "unconfigured {i}");
        assert_eq!(a, b, "{mode}: unconfigured request {i}");
    }
    let mut statuses: HashMap<Status, usize> = HashMap::new();
    let mut values = 0;
    for (i, (a, b)) in normal.1.iter().zip(&nic.1).enumerate() {
        assert!(
            a == b,
            "{mode}: request {i} ({:?}…): normal {:?} {} B, nic {:?} {} B",
            String::from_utf8_lossy(&bodies[i][..bodies[i].len().min(40)]),
            status_of(a),
            a.len(),
            status_of(b),
            b.len()
        );
        *statuses.entry(status_of(a)).or_default() += 1;
        values += usize::from(a.len() > HEADER_LEN);
    }
    // The mix exercised every kind of answer.
    for status in [
        Status::Ok,
        Status::NotFound,
        Status::BadRequest,
        Status::TooLarge,
    ] {
        assert!(
            statuses.get(&status).copied().unwrap_or(0) >= 20,
            "{mode}: too few {} answers: {statuses:?}",
            status.name()
        );
    }
    assert!(values >= 100, "{mode}: only {values} GET hits");
    // The items memcached split (and the ones it did not) answered as expected.
    for (i, (key, _, len)) in STORED_OVER_TCP.iter().enumerate() {
        let want = if *len > 1400 {
            Status::TooLarge
        } else {
            Status::Ok
        };
        assert_eq!(status_of(&nic.1[i]), want, "{mode}: get {key}");
        if want == Status::Ok {
            assert_eq!(nic.1[i].len(), HEADER_LEN + len, "{mode}: get {key}");
        }
    }
    eprintln!(
        "{mode}: {} requests answered byte for byte alike by memcached.o and memcached-nic.o \
         ({} before CONFIG, {values} GET hits), statuses {statuses:?}",
        nic.0.len() + nic.1.len(),
        nic.0.len()
    );
}

#[test]
fn memcached_nic_answers_as_the_normal_build_in_skb_mode() {
    differential("skb");
}

#[test]
fn memcached_nic_answers_as_the_normal_build_in_drv_mode() {
    differential("drv");
}
