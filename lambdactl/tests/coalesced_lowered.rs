//! `deploy --mode coalesced --lower`: the host runs exactly the program a NIC would get.
//!
//! Two veth pairs in drv mode. On the first, the SDK's NIC builds (`whoami-nic` twice,
//! `pong-nic`, `counter-nic`, from `cargo xtask build-ebpf`) are deployed coalesced AND
//! lowered for the NFP-4000 (logs no-ops, `.rodata` folded, per-CPU counters made atomic adds
//! on plain arrays); on the second the same objects coalesced as written. Every lambda gets
//! the same requests on both pairs, interleaved, over IPv4 and IPv6, and the answers must be
//! byte for byte the same; `lambdactl stats` must count on the lowered pair (plain arrays)
//! exactly what it counts on the other (per-CPU arrays summed), and what was answered.
//!
//! Then, on the lowered pair: the normal build refused by the lowering with the helper names
//! and nothing changed; mixing lowered and unlowered lambdas refused both ways; a replace
//! lowered again as deployed (the call count goes on); an undeploy rebuilt lowered; and
//! nothing left behind by `undeploy --all`.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::client::Client;
use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};
use serde_json::Value;

const NIC: &str = "nfp-4000";
const REQUESTS: u64 = 9;

struct Lambda {
    name: &'static str,
    object: PathBuf,
    port: u16,
    id: Option<u32>,
}

impl Lambda {
    fn rule(&self) -> String {
        match self.id {
            Some(id) => format!("port={},id={id}", self.port),
            None => format!("port={}", self.port),
        }
    }
}

fn lambdas() -> Vec<Lambda> {
    let lambda = |name, object: &str, port, id| Lambda {
        name,
        object: lambda_object(object),
        port,
        id,
    };
    vec![
        lambda("w1", "whoami-nic", 9100, Some(1)),
        lambda("w2", "whoami-nic", 9100, Some(2)),
        lambda("pong", "pong-nic", 9000, None),
        lambda("counter", "counter-nic", 9200, None),
    ]
}

fn deploy(pair: &NetnsPair, lambda: &Lambda, extra: &[&str]) -> Output {
    let rule = lambda.rule();
    let args = [
        &[
            "-n",
            &pair.server_ns,
            "deploy",
            lambda.object.to_str().unwrap(),
            "--iface",
            &pair.server_if,
            "--name",
            lambda.name,
            "--match",
            &rule,
            "--mode",
            "coalesced",
            "--xdp",
            "drv",
        ][..],
        extra,
    ]
    .concat();
    lambdactl(&args)
}

/// Request `n` for `lambda`: its id (any-id lambdas get varying ids), a request id unique over
/// the test, a body whose length and bytes vary with `n` (printable, up to 63 bytes).
fn request(lambda: &Lambda, k: usize, n: u64) -> Vec<u8> {
    let id = lambda.id.unwrap_or(1 + (n as u32 * 97) % 1000);
    let header = LambdaHeader::request(id, 0x6c6f_7700_0000_0000 + (k as u64) * 1000 + n);
    let len = ((n * 23 + k as u64 * 5) % 64) as usize;
    let body: Vec<u8> = (0..len)
        .map(|i| 0x21 + ((i as u64 * 13 + n * 7) % 94) as u8)
        .collect();
    [&header.as_bytes()[..], &body].concat()
}

fn ls_json(pair: &NetnsPair) -> Vec<Value> {
    let out = lambdactl_ok(&["-n", &pair.server_ns, "ls", "--json"]);
    serde_json::from_str::<Value>(&out)
        .expect("ls --json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn record<'a>(ls: &'a [Value], name: &str) -> &'a Value {
    ls.iter()
        .find(|v| v["kind"] == "coalesced" && v["name"] == name)
        .unwrap_or_else(|| panic!("{name} in ls --json: {ls:?}"))
}

/// `lambda -> sdk counters` from `stats --json`.
fn sdk_counters(pair: &NetnsPair) -> Vec<(String, Value)> {
    let out = lambdactl_ok(&["-n", &pair.server_ns, "stats", "--json"]);
    let stats: Value = serde_json::from_str(&out).expect("stats --json");
    stats["lambdas"]
        .as_array()
        .expect("lambdas")
        .iter()
        .filter(|row| row["kind"] == "coalesced")
        .map(|row| {
            (
                row["lambda"].as_str().unwrap().to_owned(),
                row["sdk"].clone(),
            )
        })
        .collect()
}

fn whoami_calls(answer: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(&answer[HEADER_LEN..]).into_owned();
    text.rsplit("calls=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn lowered_coalesced_program_answers_as_the_unlowered_one_and_stats_count_right() {
    if !kernel_tests_enabled(
        "lowered_coalesced_program_answers_as_the_unlowered_one_and_stats_count_right",
    ) {
        return;
    }
    let lowered_pair = prepared_pair();
    let plain_pair = prepared_pair();
    let all = lambdas();
    for lambda in &all {
        let out = deploy(&lowered_pair, lambda, &["--lower", "--nic", NIC]);
        assert!(
            out.status.success(),
            "{}: {}",
            lambda.name,
            output_text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("lowered {} for {NIC}: ", lambda.name)),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("accepted for {NIC}")), "{stdout}");
        assert!(
            stdout.contains(&format!("its lambdas are lowered for {NIC}")),
            "{stdout}"
        );
        let out = deploy(&plain_pair, lambda, &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            lambda.name,
            output_text(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("lowered"));
    }

    // The records: lowered ones keep the model, their counters are a plain array.
    let ls = ls_json(&lowered_pair);
    let plain_ls = ls_json(&plain_pair);
    for lambda in &all {
        let stats_type = |ls: &[Value]| -> String {
            record(ls, lambda.name)["maps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "LNIC_STATS")
                .map(|m| m["map_type"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("{}: no LNIC_STATS: {ls:?}", lambda.name))
        };
        assert_eq!(record(&ls, lambda.name)["lower"], NIC);
        assert_eq!(record(&ls, lambda.name)["program_lowered_for"], NIC);
        assert_eq!(stats_type(&ls), "array");
        assert_eq!(record(&plain_ls, lambda.name)["lower"], Value::Null);
        assert_eq!(
            record(&plain_ls, lambda.name)["program_lowered_for"],
            Value::Null
        );
        assert_eq!(stats_type(&plain_ls), "percpu_array");
    }

    // The same requests to both, interleaved: the same answers.
    let lowered = Client::new(&lowered_pair);
    let plain = Client::new(&plain_pair);
    let mut answered = vec![0u64; all.len()];
    let mut ok = vec![0u64; all.len()];
    for n in 0..REQUESTS {
        for (k, lambda) in all.iter().enumerate() {
            let request = request(lambda, k, n);
            let v6 = n % 3 == 2;
            let a = lowered.call_on(v6, lambda.port, &request, 3);
            let b = plain.call_on(v6, lambda.port, &request, 3);
            assert_eq!(
                a, b,
                "{} request {n} (IPv6 {v6}): lowered and unlowered answer differently",
                lambda.name
            );
            let answer = a.unwrap_or_else(|| panic!("{}: request {n} unanswered", lambda.name));
            let header = LambdaHeader::decode(&answer).unwrap();
            assert!(header.is_response());
            answered[k] += 1;
            if header.status() == Some(Status::Ok) {
                ok[k] += 1;
            }
        }
    }
    for (k, lambda) in all.iter().enumerate() {
        assert!(ok[k] > 0, "{}: nothing answered OK", lambda.name);
    }
    // The counters' answers went on: whoami's CALLS and counter's count are state too.
    let last = lowered
        .call(9100, &request(&all[0], 0, REQUESTS), 3)
        .expect("w1 answers");
    assert_eq!(whoami_calls(&last), REQUESTS + 1);
    answered[0] += 1;
    ok[0] += 1;
    plain
        .call(9100, &request(&all[0], 0, REQUESTS), 3)
        .expect("w1 answers on the unlowered pair");

    // stats: the lowered counters (atomic adds on a plain array) read as the per-CPU ones
    // summed, and both count what was answered.
    let lowered_stats = sdk_counters(&lowered_pair);
    let plain_stats = sdk_counters(&plain_pair);
    assert_eq!(lowered_stats, plain_stats);
    for (k, lambda) in all.iter().enumerate() {
        let (_, sdk) = lowered_stats
            .iter()
            .find(|(name, _)| name == lambda.name)
            .unwrap_or_else(|| panic!("{} in stats: {lowered_stats:?}", lambda.name));
        assert_eq!(
            sdk["actions"]["XDP_TX"], answered[k],
            "{}: {sdk}",
            lambda.name
        );
        assert_eq!(sdk["statuses"]["OK"], ok[k], "{}: {sdk}", lambda.name);
        assert_eq!(sdk["invocations"], answered[k], "{}: {sdk}", lambda.name);
    }
    // And the table's CALLS column.
    let table = lambdactl_ok(&["-n", &lowered_pair.server_ns, "ls"]);
    let w1_row = table
        .lines()
        .find(|l| l.starts_with("w1 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(w1_row.contains(&format!("(lowered: {NIC})")), "{w1_row}");
    assert!(
        w1_row
            .split_whitespace()
            .any(|c| c == answered[0].to_string()),
        "{w1_row}"
    );

    // No log: the lowering makes log lines no-ops, and `logs` says so.
    let out = lambdactl(&["-n", &lowered_pair.server_ns, "logs", "w1"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "lambda `w1` on `{}` runs lowered for {NIC}, which leaves it no log",
            lowered_pair.server_if
        )),
        "{}",
        output_text(&out)
    );

    // Refusals change nothing: the running program stays.
    let program_id = |pair: &NetnsPair| record(&ls_json(pair), "w1")["program_id"].clone();
    let running = program_id(&lowered_pair);
    let normal = Lambda {
        name: "normal",
        object: lambda_object("whoami"),
        port: 9300,
        id: None,
    };
    let out = deploy(&lowered_pair, &normal, &["--lower", "--nic", NIC]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "`normal` is refused for {NIC} before anything is loaded: the NFP lowering pass cannot make it fit"
        )),
        "{err}"
    );
    for helper in ["bpf_xdp_load_bytes", "bpf_xdp_store_bytes", "bpf_csum_diff"] {
        assert!(
            err.contains(&format!("helper {helper} at instruction")),
            "{err}"
        );
    }
    let out = deploy(&lowered_pair, &normal, &[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "`{}` runs a coalesced program lowered for {NIC}; this deploy is not lowered",
            lowered_pair.server_if
        )),
        "{err}"
    );
    let nic_pong = Lambda {
        name: "pong2",
        object: lambda_object("pong-nic"),
        port: 9301,
        id: None,
    };
    let out = deploy(&plain_pair, &nic_pong, &["--lower", "--nic", NIC]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "`{}` runs a coalesced program not lowered; this deploy is lowered for {NIC}",
            plain_pair.server_if
        )),
        "{err}"
    );
    let out = lambdactl(&[
        "-n",
        &lowered_pair.server_ns,
        "deploy",
        nic_pong.object.to_str().unwrap(),
        "--iface",
        &lowered_pair.server_if,
        "--name",
        "pong2",
        "--match",
        "port=9301",
        "--lower",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--lower is for --mode coalesced"),
        "{}",
        output_text(&out)
    );
    assert_eq!(program_id(&lowered_pair), running);
    let names: Vec<String> = ls_json(&lowered_pair)
        .iter()
        .filter(|v| v["kind"] == "coalesced")
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), all.len(), "{names:?}");

    // Replace w1: lowered again as deployed, its calls go on.
    let out = lambdactl(&[
        "-n",
        &lowered_pair.server_ns,
        "deploy",
        all[0].object.to_str().unwrap(),
        "--name",
        "w1",
        "--replace",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lowered as it was deployed"), "{stdout}");
    assert!(
        stdout.contains(&format!("its lambdas are lowered for {NIC}")),
        "{stdout}"
    );
    assert_ne!(program_id(&lowered_pair), running);
    assert_eq!(record(&ls_json(&lowered_pair), "w1")["lower"], NIC);
    let answer = lowered
        .call(9100, &request(&all[0], 0, REQUESTS + 1), 3)
        .expect("w1 answers after the replace");
    assert_eq!(whoami_calls(&answer), REQUESTS + 2);

    // Undeploy pong: rebuilt lowered, the others answer, pong no longer does.
    let out = lambdactl_ok(&["-n", &lowered_pair.server_ns, "undeploy", "pong"]);
    assert!(
        out.contains(&format!("its lambdas are lowered for {NIC}")),
        "{out}"
    );
    let answer = lowered
        .call(9100, &request(&all[1], 1, REQUESTS), 3)
        .expect("w2 answers after pong went");
    assert_eq!(whoami_calls(&answer), REQUESTS + 1);
    assert!(
        lowered
            .call(9000, &request(&all[2], 2, REQUESTS), 1)
            .is_none()
    );

    // Nothing left behind.
    for pair in [&lowered_pair, &plain_pair] {
        lambdactl_ok(&["-n", &pair.server_ns, "undeploy", "--all"]);
        assert!(!pair.server_xdp_attached(), "a program is left");
        let ls = lambdactl_ok(&["-n", &pair.server_ns, "ls", "--json"]);
        assert_eq!(ls.trim(), "[]", "{ls}");
    }
}
