//! The edges of `deploy --mode coalesced`, on a real veth pair (skb mode): the verifier
//! limits each lambda was deployed with are kept and used by every later re-coalescing
//! (deploys and undeploys of the others); `--xdp` on an interface that already runs its
//! coalesced program is refused when it conflicts and noted when it changes nothing;
//! `lambdactl stats` lists coalesced lambdas with their own SDK counters and the program's
//! kernel figures once; `lambdactl logs` reads a coalesced lambda's own ring buffer. The same
//! for lambdas deployed behind the tail-call dispatcher, whose dispatcher gets the row.
//!
//! Lambdas: `static-server` (named `ss`, port 9002, deployed with --max-insns 20000) and
//! `hello-log` (named `hl`, port 9000, --max-insns set to exactly its own bound, read from
//! `lambdactl verify`). hello-log alone fits that limit, but the coalesced program of both
//! does not (static-server's path is longer): it is accepted only because static-server's own
//! limit is kept for it.

mod common;

use common::*;
use serde_json::Value;

const TEXT: &str = "hello-log: answered a request";

/// After hl is gone, a request to its port is not answered (the program passes it on).
fn send_requests_expecting_none(pair: &NetnsPair) {
    let script = workspace_root().join("tests/clients/lambda_client.py");
    let out = pair.in_client(
        "python3",
        &[
            script.to_str().unwrap(),
            &pair.server_v4,
            "9000",
            "1",
            "hi",
            "1",
            "--timeout",
            "0.3",
        ],
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("client prints JSON");
    assert_eq!(summary["answered"], 0, "{summary}");
}

fn stats_json(ns: &str, extra: &[&str]) -> Value {
    let out = lambdactl_ok(&[&["-n", ns, "stats", "--json"][..], extra].concat());
    serde_json::from_str(&out).expect("stats --json")
}

#[test]
fn coalesced_lambdas_keep_their_limits_and_show_in_stats_and_logs() {
    if !kernel_tests_enabled("coalesced_lambdas_keep_their_limits_and_show_in_stats_and_logs") {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let (ns, iface) = (pair.server_ns.as_str(), pair.server_if.as_str());
    let ss = lambda_object("static-server");
    let hl = lambda_object("hello-log");
    // hello-log's own bound, so its limit is tight whatever the SDK's code size is today.
    let verified = lambdactl_ok(&["verify", hl.to_str().unwrap()]);
    let hl_bound: u64 = verified
        .split("max instructions executed")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`lambdactl verify` prints the bound: {verified}"));
    let hl_limit = hl_bound.to_string();
    let deploy = |object: &std::path::Path, name: &str, rule: &str, extra: &[&str]| {
        lambdactl(
            &[
                &[
                    "-n",
                    ns,
                    "deploy",
                    object.to_str().unwrap(),
                    "--iface",
                    iface,
                    "--name",
                    name,
                    "--match",
                    rule,
                    "--mode",
                    "coalesced",
                ][..],
                extra,
            ]
            .concat(),
        )
    };

    // The first deploy attaches the program in skb mode.
    let out = deploy(
        &ss,
        "ss",
        "port=9002",
        &["--xdp", "skb", "--max-insns", "20000"],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(first.contains("in skb mode"), "{first}");
    assert!(first.contains("max-insns 20000,"), "{first}");
    assert!(!first.contains("note: --xdp"), "{first}");

    // --xdp drv conflicts with the running skb attachment: refused, nothing changed.
    let out = deploy(
        &hl,
        "hl",
        "port=9000",
        &["--xdp", "drv", "--max-insns", &hl_limit],
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "`{iface}` runs its coalesced program in skb mode, attached by its first deploy; --xdp drv"
        )),
        "{err}"
    );
    let ls: Value =
        serde_json::from_str(&lambdactl_ok(&["-n", ns, "ls", "--json"])).expect("ls --json");
    let names: Vec<&str> = ls
        .as_array()
        .or_else(|| ls["items"].as_array())
        .into_iter()
        .flatten()
        .filter(|v| v["kind"] == "coalesced")
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["ss"], "{ls}");

    // --xdp skb matches: deployed, with a note that it changed nothing. The coalesced program
    // runs static-server's path too, longer than hello-log's own limit: it is verified against
    // the largest limit its lambdas were deployed with, static-server's 20000.
    let out = deploy(
        &hl,
        "hl",
        "port=9000",
        &["--xdp", "skb", "--max-insns", &hl_limit],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        second.contains(&format!(
            "note: --xdp skb changed nothing: {iface} already ran its coalesced program in skb mode"
        )),
        "{second}"
    );
    assert!(second.contains("max-insns 20000,"), "{second}");
    let bound: u64 = second
        .split("our verifier: at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the per-request bound is printed");
    assert!(
        bound > hl_bound,
        "the test needs a bound above hl's own limit: {second}"
    );

    // The records keep each lambda's limits.
    let ls = lambdactl_ok(&["-n", ns, "ls", "--json"]);
    let ls: Value = serde_json::from_str(&ls).expect("ls --json");
    let record = |name: &str| -> Value {
        ls.as_array()
            .or_else(|| ls["items"].as_array())
            .into_iter()
            .flatten()
            .find(|v| v["kind"] == "coalesced" && v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in ls --json: {ls}"))
    };
    assert_eq!(record("ss")["limits"]["max_insns"], 20000, "{ls}");
    assert_eq!(record("hl")["limits"]["max_insns"], hl_bound, "{ls}");

    // Requests to hello-log; its own SDK counters count them, static-server's none.
    send_requests(&pair, 3);
    for extra in [&[][..], &["--iface", iface][..]] {
        let stats = stats_json(ns, extra);
        let rows = stats["lambdas"].as_array().expect("lambdas");
        assert_eq!(rows.len(), 3, "{stats}");
        let program = &rows[0];
        assert_eq!(program["kind"], "coalesced-program", "{stats}");
        assert_eq!(program["iface"], iface, "{stats}");
        assert_eq!(program["lambda"], Value::Null, "{stats}");
        assert_eq!(
            program["lambdas"],
            serde_json::json!(["ss", "hl"]),
            "{stats}"
        );
        assert_eq!(program["sdk"], Value::Null, "{stats}");
        assert!(program["kernel"]["run_count"].is_u64(), "{stats}");
        for (row, name, invoked) in [(&rows[1], "ss", 0), (&rows[2], "hl", 3)] {
            assert_eq!(row["kind"], "coalesced", "{stats}");
            assert_eq!(row["lambda"], name, "{stats}");
            assert_eq!(row["program_id"], program["program_id"], "{stats}");
            // Runs are the program's: not repeated per lambda.
            assert_eq!(row["kernel"], Value::Null, "{stats}");
            assert_eq!(row["sdk"]["invocations"], invoked, "{stats}");
        }
        assert_eq!(rows[2]["sdk"]["statuses"]["OK"], 3, "{stats}");
    }
    let table = lambdactl_ok(&["-n", ns, "stats"]);
    assert!(table.contains("[coalesced program: ss,hl]"), "{table}");
    assert!(table.contains("hl (coalesced)"), "{table}");

    // logs: by name, three lines, then consumed; --iface with two lambdas asks for a name; a
    // lambda that does not log says so.
    let out = lambdactl_ok(&["-n", ns, "logs", "hl", "--json"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("logs --json"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines {
        assert_eq!(line["text"], TEXT, "{line}");
        assert_eq!(line["lambda"], "hl", "{line}");
        assert_eq!(line["iface"], iface, "{line}");
    }
    assert_eq!(lambdactl_ok(&["-n", ns, "logs", "hl"]), "");
    let out = lambdactl(&["-n", ns, "logs", "--iface", iface]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "`{iface}` runs 2 deployed lambdas (hl, ss): name the one"
        )),
        "{}",
        output_text(&out)
    );
    // Each lambda has its own ring buffer: hl's lines are not in static-server's.
    assert_eq!(lambdactl_ok(&["-n", ns, "logs", "ss", "--json"]), "");

    // Undeploying hl rebuilds static-server's program with static-server's recorded limits,
    // not the defaults; then --iface finds the one coalesced lambda's log, and stats lists it
    // alone.
    let out = lambdactl_ok(&["-n", ns, "undeploy", "hl"]);
    assert!(out.contains("undeployed hl (coalesced)"), "{out}");
    assert!(out.contains("max-insns 20000,"), "{out}");
    send_requests_expecting_none(&pair);
    let out = lambdactl_ok(&["-n", ns, "logs", "--iface", iface, "--json"]);
    assert_eq!(out, "", "ss logs only misses");
    let stats = stats_json(ns, &[]);
    assert_eq!(
        stats["lambdas"][0]["lambdas"],
        serde_json::json!(["ss"]),
        "{stats}"
    );
    assert_eq!(stats["lambdas"][1]["sdk"]["invocations"], 0, "{stats}");

    let out = lambdactl_ok(&["-n", ns, "undeploy", "ss"]);
    assert!(out.contains("removed its coalesced program"), "{out}");
    assert!(
        !pair.server_xdp_attached(),
        "nothing attached after the last undeploy"
    );
    let out = lambdactl(&["-n", ns, "stats", "--iface", iface]);
    assert!(!out.status.success(), "{}", output_text(&out));
}

#[test]
fn tail_call_lambdas_show_in_stats_and_logs_with_the_dispatcher_once() {
    if !kernel_tests_enabled("tail_call_lambdas_show_in_stats_and_logs_with_the_dispatcher_once") {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let (ns, iface) = (pair.server_ns.as_str(), pair.server_if.as_str());
    for (object, name, rule) in [
        ("static-server", "ss", "port=9002"),
        ("hello-log", "hl", "port=9000"),
    ] {
        lambdactl_ok(&[
            "-n",
            ns,
            "deploy",
            lambda_object(object).to_str().unwrap(),
            "--iface",
            iface,
            "--name",
            name,
            "--match",
            rule,
            "--mode",
            "skb",
        ]);
    }
    send_requests(&pair, 3);

    let stats = stats_json(ns, &["--iface", iface]);
    let rows = stats["lambdas"].as_array().expect("lambdas");
    assert_eq!(rows.len(), 3, "{stats}");
    assert_eq!(rows[0]["kind"], "dispatcher", "{stats}");
    assert_eq!(
        rows[0]["lambdas"],
        serde_json::json!(["hl", "ss"]),
        "{stats}"
    );
    assert!(rows[0]["kernel"]["run_count"].is_u64(), "{stats}");
    for (row, name, invoked) in [(&rows[1], "hl", 3), (&rows[2], "ss", 0)] {
        assert_eq!(row["kind"], "deployed", "{stats}");
        assert_eq!(row["lambda"], name, "{stats}");
        assert_ne!(row["program_id"], rows[0]["program_id"], "{stats}");
        assert_eq!(row["kernel"], Value::Null, "{stats}");
        assert_eq!(row["sdk"]["invocations"], invoked, "{stats}");
    }
    let table = lambdactl_ok(&["-n", ns, "stats"]);
    assert!(table.contains("[dispatcher: hl,ss]"), "{table}");
    assert!(table.contains("hl (tail call)"), "{table}");

    let out = lambdactl_ok(&["-n", ns, "logs", "hl", "--json"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("logs --json"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines {
        assert_eq!(line["text"], TEXT, "{line}");
        assert_eq!(line["lambda"], "hl", "{line}");
        assert_eq!(line["iface"], iface, "{line}");
    }
    assert_eq!(lambdactl_ok(&["-n", ns, "logs", "hl"]), "");
    let out = lambdactl(&["-n", ns, "logs", "--iface", iface]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "`{iface}` runs 2 deployed lambdas (hl, ss): name the one"
        )),
        "{}",
        output_text(&out)
    );
    lambdactl_ok(&["-n", ns, "undeploy", "--all"]);
    assert!(
        !pair.server_xdp_attached(),
        "nothing attached after undeploy --all"
    );
}
