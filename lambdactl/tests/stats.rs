//! `lambdactl stats` against a real attachment: the static-server on a veth pair answers a
//! known mix of requests (found, not found) and plain datagrams to its port, and the SDK's
//! counters and the kernel's run count show exactly that mix, with a run time measured while
//! `stats --watch` held BPF statistics on.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::Value;

const FOUND: u64 = 23;
const NOT_FOUND: u64 = 11;
const PLAIN: u64 = 5;

/// Runs the independent Python client in the client namespace and returns its JSON summary.
fn python_client(pair: &NetnsPair, body: &str, count: u64) -> Value {
    let script = workspace_root().join("tests/clients/lambda_client.py");
    let out = pair.in_client(
        "python3",
        &[
            script.to_str().unwrap(),
            &pair.server_v4,
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

/// Silences the link: no IPv6 (router and neighbour solicitations, MLD) and static ARP
/// entries, so the only packets the lambda sees are the test's own.
fn quiet(pair: &NetnsPair) {
    let server_mac = mac(&pair.server_ns, &pair.server_if);
    let client_mac = mac(&pair.client_ns, &pair.client_if);
    for (ns, dev, peer_ip, peer_mac) in [
        (
            &pair.server_ns,
            &pair.server_if,
            &pair.client_v4,
            &client_mac,
        ),
        (
            &pair.client_ns,
            &pair.client_if,
            &pair.server_v4,
            &server_mac,
        ),
    ] {
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ],
        );
        run_ok(
            "ip",
            &[
                "-n",
                ns,
                "neigh",
                "replace",
                peer_ip,
                "lladdr",
                peer_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        );
    }
}

fn mac(ns: &str, dev: &str) -> String {
    let out = run_ok("ip", &["-n", ns, "-j", "link", "show", "dev", dev]);
    let links: Value = serde_json::from_str(&out).expect("ip -j link");
    links[0]["address"].as_str().expect("a MAC").to_owned()
}

fn stats_json(pair: &NetnsPair) -> Value {
    let out = lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "stats",
        "--iface",
        &pair.server_if,
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).expect("stats --json");
    let lambdas = report["lambdas"].as_array().expect("lambdas");
    assert_eq!(lambdas.len(), 1, "{report}");
    lambdas[0].clone()
}

/// `after − before` of the number at `path` in two lambda reports.
fn delta(after: &Value, before: &Value, path: &[&str]) -> u64 {
    let get = |v: &Value| {
        path.iter()
            .fold(v, |v, key| &v[*key])
            .as_u64()
            .unwrap_or_else(|| panic!("{path:?} in {v}"))
    };
    get(after) - get(before)
}

/// Kills the `stats --watch` child this test started, also when an assertion fails.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stats_count_actions_statuses_and_run_time() {
    if !kernel_tests_enabled("stats_count_actions_statuses_and_run_time") {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    quiet(&pair);
    let object = lambda_object("static-server");
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        "skb",
    ]);

    // `--watch` turns BPF statistics on before its first report (the totals so far).
    let mut watch = Watch(
        Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args([
                "-n",
                &pair.server_ns,
                "stats",
                "--iface",
                &pair.server_if,
                "--watch",
                "0.3",
                "--json",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting stats --watch"),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("a first report").unwrap()).unwrap();
    assert_eq!(first["kind"], "totals", "{first}");
    let before = stats_json(&pair);

    let found = python_client(&pair, "index.html", FOUND);
    assert_eq!(found["statuses"]["0"], FOUND, "{found}");
    let missing = python_client(&pair, "no-such-object", NOT_FOUND);
    assert_eq!(missing["statuses"]["1"], NOT_FOUND, "{missing}");
    // Datagrams to the lambda's port that are not λ requests: passed to the host stack.
    let send_plain = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range({PLAIN}): s.sendto(b'not a lambda request', ('{}', 9000))",
        pair.server_v4
    );
    let out = pair.in_client("python3", &["-c", &send_plain]);
    assert!(out.status.success(), "{out:?}");
    // The requests were answered, so they have been counted; the plain datagrams went out
    // right away but may still be on their way through the veth.
    let mut after = stats_json(&pair);
    for _ in 0..50 {
        if delta(&after, &before, &["sdk", "not_requests"]) >= PLAIN {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        after = stats_json(&pair);
    }

    let answered = FOUND + NOT_FOUND;
    let d = |path: &[&str]| delta(&after, &before, path);
    assert_eq!(d(&["sdk", "invocations"]), answered + PLAIN, "{after}");
    assert_eq!(d(&["sdk", "actions", "XDP_TX"]), answered, "{after}");
    assert_eq!(d(&["sdk", "actions", "XDP_PASS"]), PLAIN, "{after}");
    for action in ["XDP_DROP", "XDP_ABORTED", "XDP_REDIRECT"] {
        assert_eq!(d(&["sdk", "actions", action]), 0, "{action}: {after}");
    }
    assert_eq!(d(&["sdk", "statuses", "OK"]), FOUND, "{after}");
    assert_eq!(d(&["sdk", "statuses", "NOT_FOUND"]), NOT_FOUND, "{after}");
    for status in ["BAD_REQUEST", "TOO_LARGE", "UNAVAILABLE", "INTERNAL"] {
        assert_eq!(d(&["sdk", "statuses", status]), 0, "{status}: {after}");
    }
    assert_eq!(d(&["sdk", "not_requests"]), PLAIN, "{after}");
    // Statistics were on for the whole load: the kernel ran the program once per packet.
    assert_eq!(d(&["kernel", "run_count"]), answered + PLAIN, "{after}");
    assert!(d(&["kernel", "run_time_ns"]) > 0, "{after}");

    // The watch's interval reports add up to the same figures.
    let mut tx = 0;
    let mut runs = 0;
    while tx < answered || runs < answered + PLAIN {
        let line = lines.next().expect("stats --watch goes on").unwrap();
        let report: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(report["kind"], "interval", "{report}");
        let lambda = &report["lambdas"][0];
        tx += lambda["sdk"]["actions"]["XDP_TX"].as_u64().unwrap();
        runs += lambda["kernel"]["run_count"].as_u64().unwrap();
        assert!(lambda["per_second"].as_f64().is_some(), "{report}");
    }
    assert_eq!((tx, runs), (answered, answered + PLAIN));
    drop(watch);

    // The table shows the same columns by name.
    let table = lambdactl_ok(&["-n", &pair.server_ns, "stats"]);
    for column in [
        "INVOKED",
        "RUNS",
        "NS/RUN",
        "TX",
        "OK",
        "NOT_FOUND",
        "NOT_λ",
    ] {
        assert!(table.contains(column), "{column}: {table}");
    }

    // A lambda written without the SDK has only the kernel's figures.
    lambdactl_ok(&["-n", &pair.server_ns, "detach", "--iface", &pair.server_if]);
    let raw = lambda_object("baseline-raw-pong");
    lambdactl_ok(&[
        "-n",
        &pair.server_ns,
        "attach",
        raw.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        "skb",
    ]);
    let raw_stats = stats_json(&pair);
    assert!(raw_stats["sdk"].is_null(), "{raw_stats}");
    assert!(raw_stats["kernel"]["run_count"].is_u64(), "{raw_stats}");
}

#[test]
fn stats_of_an_unknown_interface_is_a_clear_error() {
    if !kernel_tests_enabled("stats_of_an_unknown_interface_is_a_clear_error") {
        return;
    }
    let out = lambdactl(&["stats", "--iface", "lnic-nosuch0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("lambdactl: error: ") && stderr.contains("no λ-NIC attachment"),
        "{stderr}"
    );
}
