//! Upgrades under load: `lambdactl upgrade` and `rollback` swap the counter lambda's versions
//! on a veth in a network namespace while a real UDP client in another namespace keeps sending
//! requests; every request must be answered and the pinned count must match the answers.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};
use loader::maps::{KernelMap, MapAccess as _};

/// Upgrades done while the load runs (alternating counter-v2 / counter), plus one rollback.
const UPGRADES: usize = 20;
/// How long the client waits for an answer before it counts the attempt lost and resends.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// What the load client saw.
#[derive(Debug, Default)]
struct LoadReport {
    /// Datagrams sent, retries included.
    attempts: u64,
    /// Requests answered (each request is counted once, however many attempts it took).
    answered: u64,
    /// Attempts that got no answer within the timeout (then resent).
    lost: u64,
    /// Answers from `counter` (`count=N`) and from `counter-v2` (`v2 count=N`).
    from_v1: u64,
    from_v2: u64,
    /// Answers whose count was not the one expected (the previous answer's + 1).
    out_of_sequence: Vec<(u64, u64)>,
    /// The last count seen in an answer.
    last_count: u64,
}

/// Sends requests one after another until `stop`, each resent until answered; checks that each
/// answer's count is the previous one's plus one (one client, so nothing else counts).
fn load(socket: &UdpSocket, target: &str, stop: &AtomicBool) -> LoadReport {
    socket.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    let mut report = LoadReport::default();
    let mut request_id: u64 = 0;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        request_id += 1;
        let mut request = LambdaHeader::request(1, request_id).as_bytes().to_vec();
        request.extend_from_slice(b"tick");
        'attempts: loop {
            report.attempts += 1;
            socket.send_to(&request, target).expect("send");
            loop {
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        report.lost += 1;
                        continue 'attempts;
                    }
                    Err(e) => panic!("recv: {e}"),
                };
                let header = LambdaHeader::decode(&buf[..n]).expect("a λ response");
                if header.request_id() != request_id {
                    // A late answer to an attempt already given up on: the one we wait for
                    // may still come.
                    continue;
                }
                assert_eq!(header.status(), Some(Status::Ok), "status");
                let body = std::str::from_utf8(&buf[HEADER_LEN..n]).expect("text body");
                let count: u64 = if let Some(n) = body.strip_prefix("v2 count=") {
                    report.from_v2 += 1;
                    n.parse().expect("v2 count")
                } else if let Some(n) = body.strip_prefix("count=") {
                    report.from_v1 += 1;
                    n.parse().expect("count")
                } else {
                    panic!("unexpected body {body:?}");
                };
                if count != report.last_count + 1 {
                    report.out_of_sequence.push((report.last_count + 1, count));
                }
                report.last_count = count;
                report.answered += 1;
                break 'attempts;
            }
        }
    }
    report
}

/// The attachment of the server interface as `ls --json` shows it.
fn attachment(pair: &NetnsPair) -> serde_json::Value {
    let listing = lambdactl_ok(&["-n", &pair.server_ns, "ls", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&listing).expect("ls --json prints JSON");
    all.as_array()
        .expect("an array")
        .iter()
        .find(|e| e["iface"] == pair.server_if.as_str())
        .cloned()
        .expect("the attachment is listed")
}

/// The u64 at index 0 of the pinned `COUNTS` map.
fn pinned_count(entry: &serde_json::Value) -> u64 {
    let pin = entry["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "COUNTS")
        .expect("COUNTS is pinned")["pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let map = KernelMap::from_pin(&pin).expect("open the pinned map");
    let value = map
        .lookup(&0u32.to_ne_bytes())
        .expect("lookup")
        .expect("index 0 exists");
    u64::from_ne_bytes(value[..8].try_into().unwrap())
}

fn attach_counter(pair: &NetnsPair) {
    pair.checksums_in_software();
    let object = lambda_object("counter");
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
}

#[test]
fn upgrades_under_load_keep_every_request_and_the_count() {
    if !kernel_tests_enabled("upgrades_under_load_keep_every_request_and_the_count") {
        return;
    }
    let pair = NetnsPair::create();
    attach_counter(&pair);
    let v1 = lambda_object("counter");
    let v2 = lambda_object("counter-v2");
    let first_program = attachment(&pair)["program_id"].as_u64().unwrap();

    let socket = NetnsPair::within(&pair.client_ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    let target = format!("{}:9000", pair.server_v4);
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || load(&socket, &target, &stop))
    };
    // Let the load get going before the first swap.
    std::thread::sleep(Duration::from_millis(200));

    let mut upgrades = 0;
    let mut rollbacks = 0;
    let mut programs = vec![first_program];
    for i in 0..UPGRADES {
        let object = if i % 2 == 0 { &v2 } else { &v1 };
        let out = lambdactl_ok(&[
            "-n",
            &pair.server_ns,
            "upgrade",
            object.to_str().unwrap(),
            "--iface",
            &pair.server_if,
        ]);
        assert!(out.contains("swapped atomically"), "{out}");
        assert!(out.contains("reused, contents kept"), "{out}");
        upgrades += 1;
        programs.push(attachment(&pair)["program_id"].as_u64().unwrap());
        if i == UPGRADES / 2 {
            // Roll back to the version this upgrade replaced: the very program that ran
            // before, not a reload of it.
            let out = lambdactl_ok(&[
                "-n",
                &pair.server_ns,
                "rollback",
                "--iface",
                &pair.server_if,
            ]);
            assert!(out.contains("rolled back"), "{out}");
            rollbacks += 1;
            let now = attachment(&pair)["program_id"].as_u64().unwrap();
            assert_eq!(
                now,
                programs[programs.len() - 2],
                "rollback restores the program"
            );
            programs.push(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let report = client.join().expect("load client");

    let entry = attachment(&pair);
    let count = pinned_count(&entry);
    let unanswered = report.lost;
    eprintln!(
        "upgrade under load: requests {} (attempts {}), answered {}, unanswered {unanswered}, \
         counter {count}, upgrades {upgrades}, rollbacks {rollbacks}, answers from counter {} \
         and counter-v2 {}",
        report.answered, report.attempts, report.answered, report.from_v1, report.from_v2
    );
    assert_eq!(entry["liveness"]["state"], "live", "{entry}");
    assert_eq!(
        unanswered, 0,
        "every request answered at its first attempt: {report:?}"
    );
    assert!(
        report.out_of_sequence.is_empty(),
        "every answer's count is the previous one + 1: {report:?}"
    );
    assert_eq!(
        count, report.answered,
        "the pinned count equals the answered requests (no lost or duplicated state): {report:?}"
    );
    assert!(
        report.from_v1 > 0 && report.from_v2 > 0,
        "answers came from both versions: {report:?}"
    );
    assert!(report.answered > 100, "the load ran throughout: {report:?}");
}

#[test]
fn incompatible_upgrade_is_refused_and_changes_nothing() {
    if !kernel_tests_enabled("incompatible_upgrade_is_refused_and_changes_nothing") {
        return;
    }
    let pair = NetnsPair::create();
    attach_counter(&pair);
    let before = attachment(&pair);
    let program = before["program_id"].as_u64().unwrap();

    let wide = lambda_object("counter-wide");
    let out = lambdactl(&[
        "-n",
        &pair.server_ns,
        "upgrade",
        wide.to_str().unwrap(),
        "--iface",
        &pair.server_if,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("map COUNTS: value size 8 in the running lambda, 16 in the new object"),
        "names the map and the difference: {stderr}"
    );
    // Refused before loading: no verifier summary, nothing swapped.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{out:?}"
    );

    let after = attachment(&pair);
    assert_eq!(after["program_id"].as_u64().unwrap(), program, "{after}");
    assert_eq!(after["liveness"]["state"], "live", "{after}");
    assert!(
        after.get("previous").is_none(),
        "no history written: {after}"
    );

    // The running lambda still answers, with its state.
    let target = format!("{}:9000", pair.server_v4);
    let answer = lambdactl_ok(&[
        "-n",
        &pair.client_ns,
        "invoke",
        &target,
        "--lambda",
        "1",
        "--body",
        "still there?",
    ]);
    assert!(
        answer.contains("count=00000000000000000001"),
        "the counter answers: {answer}"
    );
    assert_eq!(pinned_count(&after), 1);

    // And there is nothing to roll back to.
    let out = lambdactl(&[
        "-n",
        &pair.server_ns,
        "rollback",
        "--iface",
        &pair.server_if,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no previous version"),
        "{out:?}"
    );
}
