//! End to end on real interfaces: `lambdactl attach` puts the static-server on one end of a
//! veth pair in a network namespace; real UDP sockets in another namespace talk to it.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

const REQUESTS: usize = 1_000;

/// Runs the independent Python client in the client namespace and returns its JSON summary.
fn python_client(pair: &NetnsPair, host: &str, body: &str, count: usize) -> serde_json::Value {
    let script = workspace_root().join("tests/clients/lambda_client.py");
    let out = pair.in_client(
        "python3",
        &[
            script.to_str().unwrap(),
            host,
            "9000",
            "1",
            body,
            &count.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

/// Reads one counter from /proc/net/snmp (or snmp6) inside the client namespace.
fn snmp_counter(pair: &NetnsPair, file: &str, table: &str, field: &str) -> u64 {
    let out = pair.in_client("cat", &[file]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if file.ends_with("snmp6") {
        // "Udp6InCsumErrors   0"
        let key = format!("{table}{field}");
        return text
            .lines()
            .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{key} not in {file}"));
    }
    // "Udp: InDatagrams NoPorts …" then "Udp: 12 0 …"
    let mut rows = text.lines().filter(|l| l.starts_with(&format!("{table}:")));
    let names: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    let at = names.iter().position(|n| *n == field).unwrap();
    values[at].parse().unwrap()
}

/// `bpftool map <command…> key hex … [value hex …]`.
fn bpftool_map(command: &[&str], fields: &[(&str, &[u8])]) {
    let mut args: Vec<String> = std::iter::once("map")
        .chain(command.iter().copied())
        .map(str::to_owned)
        .collect();
    for (name, bytes) in fields {
        args.push((*name).to_owned());
        args.push("hex".to_owned());
        args.extend(bytes.iter().map(|b| format!("{b:02x}")));
    }
    run_ok(
        "bpftool",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

fn attached_entry(pair: &NetnsPair) -> Option<serde_json::Value> {
    let listing = lambdactl_ok(&["-n", &pair.server_ns, "ls", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&listing).expect("ls --json prints JSON");
    all.as_array()
        .expect("ls --json prints an array")
        .iter()
        .find(|e| e["iface"] == pair.server_if.as_str())
        .cloned()
}

fn serve_on_veth(mode: &str) {
    let pair = NetnsPair::create();
    let object = lambda_object("static-server");

    pair.checksums_in_software();
    if mode == "drv" {
        // GRO on the peer is not enough on this kernel: it needs an XDP program.
        pair.give_client_a_drv_peer_program();
    }

    let attached = lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        mode,
    ]);
    assert!(
        attached.contains(mode),
        "attach output names the mode: {attached}"
    );

    // `attach` has exited; the program must still be there, and `ls` must say so.
    assert!(
        pair.server_xdp_attached(),
        "XDP program on the interface after attach exited"
    );
    let entry = attached_entry(&pair).expect("ls lists the attachment");
    assert_eq!(entry["mode"], mode);
    assert_eq!(entry["lambda"], "static-server");
    assert!(entry["program_id"].as_u64().unwrap() > 0);

    let checksum_errors_before = snmp_counter(&pair, "/proc/net/snmp", "Udp", "InCsumErrors");

    // 1,000 requests over IPv4 from a client that shares no code with us.
    let v4 = python_client(&pair, &pair.server_v4, "index.html", REQUESTS);
    assert_eq!(v4["sent"], REQUESTS, "{v4}");
    assert_eq!(v4["answered"], REQUESTS, "every request answered: {v4}");
    assert_eq!(v4["ok"], REQUESTS, "every answer well-formed: {v4}");
    assert_eq!(v4["statuses"]["0"], REQUESTS, "all OK: {v4}");
    let bodies = v4["bodies"].as_object().unwrap();
    assert_eq!(bodies.len(), 1, "one body for one object: {v4}");
    let (body, _) = bodies.iter().next().unwrap();
    assert!(
        body.starts_with("<!doctype html>") && body.contains("Hello from a lambda"),
        "{body}"
    );

    // IPv6, and an object that does not exist.
    let v6 = python_client(&pair, &pair.server_v6, "index.html", 100);
    assert_eq!(v6["ok"], 100, "{v6}");
    assert_eq!(v6["statuses"]["0"], 100, "{v6}");
    let missing = python_client(&pair, &pair.server_v4, "no-such-object", 10);
    assert_eq!(missing["statuses"]["1"], 10, "NOT_FOUND: {missing}");
    assert_eq!(missing["bodies"][""], 10, "empty body: {missing}");

    // The receiving kernel verified every checksum (a bad one is dropped and counted).
    let checksum_errors = snmp_counter(&pair, "/proc/net/snmp", "Udp", "InCsumErrors");
    assert_eq!(
        checksum_errors, checksum_errors_before,
        "UDP checksum errors in the client"
    );
    assert_eq!(
        snmp_counter(&pair, "/proc/net/snmp6", "Udp6", "InCsumErrors"),
        0
    );

    // Traffic that is not a λ request still reaches the host stack: a socket on another port
    // in the server namespace, and a datagram to 9000 that is not a λ request.
    let server = NetnsPair::within(&pair.server_ns, || {
        let s = UdpSocket::bind("0.0.0.0:9001").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let plain = NetnsPair::within(&pair.server_ns, || {
        let s = UdpSocket::bind("0.0.0.0:9000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    });
    let client = NetnsPair::within(&pair.client_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    client
        .send_to(b"plain datagram", format!("{}:9001", pair.server_v4))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("non-λ traffic passes to the stack");
    assert_eq!(&buf[..n], b"plain datagram");
    client
        .send_to(b"LN but not a header", format!("{}:9000", pair.server_v4))
        .unwrap();
    let (n, _) = plain
        .recv_from(&mut buf)
        .expect("a short payload on 9000 passes");
    assert_eq!(&buf[..n], b"LN but not a header");

    // Our own client, from the client namespace.
    let invoked = lambdactl_ok(&[
        "-n",
        &pair.client_ns,
        "invoke",
        &format!("{}:9000", pair.server_v4),
        "--lambda",
        "1",
        "--body",
        "index.html",
        "--count",
        "200",
    ]);
    assert!(
        invoked.contains("p50") && invoked.contains("p99"),
        "{invoked}"
    );

    // One request through a raw socket check, not just the kernel's: the answer's header.
    let answer = NetnsPair::within(&pair.client_ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = LambdaHeader::request(99, 0xabcdef).as_bytes().to_vec();
        request.extend_from_slice(b"index.html");
        s.send_to(&request, format!("{}:9000", pair.server_v4))
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).expect("answer");
        assert_eq!(from.port(), 9000, "answer comes from the served port");
        buf[..n].to_vec()
    });
    let header = LambdaHeader::decode(&answer).unwrap();
    assert!(header.is_response());
    assert_eq!(header.lambda_id(), 99);
    assert_eq!(header.request_id(), 0xabcdef);
    assert_eq!(header.status(), Some(Status::Ok));
    assert!(answer.len() > HEADER_LEN);

    // Contents change at runtime, without redeploying: write the pinned map with bpftool.
    let pin = entry["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "OBJECTS")
        .expect("OBJECTS is pinned")["pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut key = b"index.html".to_vec();
    key.resize(64, 0);
    let fresh = b"<p>changed at runtime</p>";
    let mut value = (fresh.len() as u32).to_ne_bytes().to_vec();
    value.extend_from_slice(fresh);
    value.resize(4 + lambda_ebpf::MAX_BODY, 0);
    bpftool_map(
        &["update", "pinned", &pin],
        &[("key", &key), ("value", &value)],
    );
    let changed = python_client(&pair, &pair.server_v4, "index.html", 5);
    assert_eq!(
        changed["bodies"]["<p>changed at runtime</p>"], 5,
        "{changed}"
    );
    bpftool_map(&["delete", "pinned", &pin], &[("key", &key)]);
    let gone = python_client(&pair, &pair.server_v4, "index.html", 5);
    assert_eq!(gone["statuses"]["1"], 5, "NOT_FOUND once deleted: {gone}");

    // Another process holding the link open must not keep the program attached.
    let held_link =
        loader::kernel::open_pinned(std::path::Path::new(entry["link_pin"].as_str().unwrap()))
            .expect("BPF_OBJ_GET on the pinned link");
    lambdactl_ok(&["-n", &pair.server_ns, "detach", "--iface", &pair.server_if]);
    assert!(!pair.server_xdp_attached(), "interface clean after detach");
    drop(held_link);
    let link_pin = std::path::Path::new(entry["link_pin"].as_str().unwrap());
    assert!(!link_pin.exists(), "link pin removed");
    assert!(
        !link_pin.parent().unwrap().exists(),
        "the attachment's pin directory removed"
    );
    assert!(attached_entry(&pair).is_none(), "ls no longer lists it");
    // After detach, λ requests reach the stack: nothing answers them.
    let after = python_client(&pair, &pair.server_v4, "index.html", 3);
    assert_eq!(after["answered"], 0, "{after}");
}

#[test]
fn static_server_in_skb_mode_answers_real_udp() {
    if kernel_tests_enabled("static_server_in_skb_mode_answers_real_udp") {
        serve_on_veth("skb");
    }
}

#[test]
fn static_server_in_drv_mode_answers_real_udp() {
    if kernel_tests_enabled("static_server_in_drv_mode_answers_real_udp") {
        serve_on_veth("drv");
    }
}

#[test]
fn auto_mode_falls_back_to_skb_and_says_why() {
    if !kernel_tests_enabled("auto_mode_falls_back_to_skb_and_says_why") {
        return;
    }
    // A bridge has no native XDP support: the driver refuses drv mode.
    let ns = format!("lnic-test-{}-auto", std::process::id());
    run_ok("ip", &["netns", "add", &ns]);
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = lambdactl(&["-n", &self.0, "detach", "--iface", "br0"]);
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    run_ok("ip", &["-n", &ns, "link", "add", "br0", "type", "bridge"]);
    run_ok("ip", &["-n", &ns, "link", "set", "br0", "up"]);
    let object = lambda_object("static-server");
    let object = object.to_str().unwrap();

    let refused = lambdactl(&[
        "-n", &ns, "attach", object, "--iface", "br0", "--mode", "drv",
    ]);
    assert!(!refused.status.success(), "drv mode on a bridge must fail");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("br0") && err.contains("drv"), "{err}");

    let out = lambdactl(&[
        "-n", &ns, "attach", object, "--iface", "br0", "--mode", "auto",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("skb mode"), "{all}");
    assert!(
        all.contains("native (drv) mode failed"),
        "says why it fell back: {all}"
    );
    assert!(
        all.contains("not supported"),
        "with the kernel's reason: {all}"
    );
}
