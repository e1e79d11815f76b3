//! `lambdactl maps` against a real attachment: the static-server's `OBJECTS` map is dumped with
//! readable keys and values, and `maps set`/`maps del` change what the next real UDP request
//! gets, with no redeploy.

mod common;

use std::process::Output;

use common::*;

/// Runs the independent Python client in the client namespace and returns its JSON summary.
fn python_client(pair: &NetnsPair, body: &str, count: usize) -> serde_json::Value {
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

/// Runs `lambdactl -n <server ns> maps <args…>`, expecting failure, and returns stderr.
fn maps_err(pair: &NetnsPair, args: &[&str]) -> String {
    let mut full = vec!["-n", &pair.server_ns, "maps"];
    full.extend_from_slice(args);
    let out: Output = lambdactl(&full);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "lambdactl {full:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("lambdactl: error: ") && !stderr.contains("panicked"),
        "a clear one-line error, not a panic: {stderr}"
    );
    stderr
}

fn maps_ok(pair: &NetnsPair, args: &[&str]) -> String {
    let mut full = vec!["-n", &pair.server_ns, "maps"];
    full.extend_from_slice(args);
    lambdactl_ok(&full)
}

#[test]
fn maps_dump_set_and_del_change_what_requests_get() {
    if !kernel_tests_enabled("maps_dump_set_and_del_change_what_requests_get") {
        return;
    }
    let pair = NetnsPair::create();
    let object = lambda_object("static-server");
    pair.checksums_in_software();
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

    // `maps ls` lists the pinned map with its BTF types and the seeded entry.
    let listing: serde_json::Value =
        serde_json::from_str(&maps_ok(&pair, &["ls", "--json"])).expect("maps ls --json");
    let objects = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["map"] == "OBJECTS")
        .unwrap_or_else(|| panic!("OBJECTS listed: {listing}"));
    assert_eq!(objects["lambda"], "static-server", "{objects}");
    assert_eq!(objects["iface"], pair.server_if.as_str(), "{objects}");
    assert_eq!(objects["type"], "hash", "{objects}");
    assert_eq!(
        (objects["key_size"].as_u64(), objects["value_size"].as_u64()),
        (Some(64), Some(4 + lambda_ebpf::MAX_BODY as u64)),
        "{objects}"
    );
    assert_eq!(objects["max_entries"], 256, "{objects}");
    assert_eq!(objects["entries"], 1, "{objects}");
    assert_eq!(objects["key_type"], "ObjectName", "{objects}");
    assert_eq!(objects["value_type"], "Object", "{objects}");
    let table = maps_ok(&pair, &["ls"]);
    assert!(
        table.contains("OBJECTS") && table.contains("ObjectName"),
        "{table}"
    );

    // The dump reads as text: the key is the object's name, the value its fields.
    let dump = maps_ok(&pair, &["dump", "static-server/OBJECTS"]);
    assert!(
        dump.contains("\"index.html\" => { len: ")
            && dump.contains("data: \"<!doctype html>")
            && dump.contains("Hello from a lambda in the XDP path"),
        "{dump}"
    );
    let dump: serde_json::Value = serde_json::from_str(&maps_ok(
        &pair,
        &["dump", "static-server/OBJECTS", "--json"],
    ))
    .expect("dump --json");
    let entries = dump["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{dump}");
    assert_eq!(entries[0]["key"], "index.html", "{dump}");
    let data = entries[0]["value"]["data"].as_str().unwrap();
    assert!(data.starts_with("<!doctype html>"), "{data}");
    assert_eq!(entries[0]["value"]["len"].as_u64(), Some(data.len() as u64));

    // A new object, typed by its fields, served to the next real request.
    maps_ok(
        &pair,
        &[
            "set",
            "static-server/OBJECTS",
            "hello.txt",
            "len=5,data=hello",
        ],
    );
    let got = python_client(&pair, "hello.txt", 3);
    assert_eq!(got["statuses"]["0"], 3, "{got}");
    assert_eq!(got["bodies"]["hello"], 3, "{got}");
    // The interface names the lambda too; get reads back what set wrote.
    let value = maps_ok(
        &pair,
        &["get", &format!("{}/OBJECTS", pair.server_if), "hello.txt"],
    );
    assert_eq!(value.trim(), "{ len: 5, data: \"hello\" }");
    // A JSON object works as well, and --flags exist only updates.
    maps_ok(
        &pair,
        &[
            "set",
            "static-server/OBJECTS",
            "hello.txt",
            r#"{"len": 3, "data": "hey"}"#,
            "--flags",
            "exist",
        ],
    );
    let got = python_client(&pair, "hello.txt", 2);
    assert_eq!(got["bodies"]["hey"], 2, "{got}");
    let err = maps_err(
        &pair,
        &[
            "set",
            "static-server/OBJECTS",
            "hello.txt",
            "len=1,data=x",
            "--flags",
            "noexist",
        ],
    );
    assert!(err.contains("exists"), "{err}");

    // Deleted: NOT_FOUND.
    maps_ok(&pair, &["del", "static-server/OBJECTS", "hello.txt"]);
    let gone = python_client(&pair, "hello.txt", 3);
    assert_eq!(gone["statuses"]["1"], 3, "NOT_FOUND once deleted: {gone}");
    let err = maps_err(&pair, &["del", "static-server/OBJECTS", "hello.txt"]);
    assert!(err.contains("no key \"hello.txt\""), "{err}");

    // Wrong sizes are refused, naming the expected and the actual size.
    let long_name = "n".repeat(70);
    let err = maps_err(
        &pair,
        &["set", "static-server/OBJECTS", &long_name, "len=1,data=x"],
    );
    assert!(err.contains("70 bytes") && err.contains("64"), "{err}");
    let err = maps_err(&pair, &["set", "static-server/OBJECTS", "a", "hex:0011"]);
    assert!(
        err.contains("2 bytes") && err.contains("1432 bytes"),
        "{err}"
    );
    let too_long = format!("len=1,data={}", "d".repeat(1500));
    let err = maps_err(&pair, &["set", "static-server/OBJECTS", "a", &too_long]);
    assert!(
        err.contains("`data`") && err.contains("1500 bytes") && err.contains("1428"),
        "{err}"
    );
    // Bad syntax names the fields; unknown names list what exists.
    let err = maps_err(&pair, &["set", "static-server/OBJECTS", "a", "len=1"]);
    assert!(err.contains("missing data"), "{err}");
    let err = maps_err(
        &pair,
        &["set", "static-server/OBJECTS", "a", "len=x,data=y"],
    );
    assert!(err.contains("`len`") && err.contains("integer"), "{err}");
    let err = maps_err(&pair, &["dump", "static-server/NOPE"]);
    assert!(err.contains("its maps: OBJECTS"), "{err}");
    let err = maps_err(&pair, &["dump", "no-such-lambda/OBJECTS"]);
    assert!(err.contains("there are: static-server on"), "{err}");
    let err = maps_err(&pair, &["dump", "static-server"]);
    assert!(err.contains("LAMBDA/MAP"), "{err}");

    // Nothing above touched index.html.
    let index = python_client(&pair, "index.html", 1);
    assert_eq!(index["statuses"]["0"], 1, "{index}");
}

/// `maps put-object`/`del-object` on a real attachment of the NIC build (static-server-nic.o,
/// objects as 56-byte chunks keyed by name hash): what the next real UDP request gets changes
/// with no redeploy, as `maps set` does for the normal build.
#[test]
fn put_object_changes_what_the_nic_build_serves() {
    if !kernel_tests_enabled("put_object_changes_what_the_nic_build_serves") {
        return;
    }
    let pair = NetnsPair::create();
    let object = lambda_object("static-server-nic");
    pair.checksums_in_software();
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
    // The seeded page: five seed records (two head chunks, three of content).
    let index = python_client(&pair, "index.html", 2);
    assert_eq!(index["statuses"]["0"], 2, "{index}");
    let target = "static-server-nic/OBJECTS";
    // 150 bytes, three content chunks (a reply much longer than its request can be TOO_LARGE
    // in skb mode on a veth, for either build: the packet grows into limited room).
    let long: String = (0..150).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    let stored = maps_ok(&pair, &["put-object", target, "page.txt", "--text", &long]);
    assert!(stored.contains("150 bytes in 5 chunks of 56"), "{stored}"); // 3 + the head
    let got = python_client(&pair, "page.txt", 3);
    assert_eq!(got["bodies"][long.as_str()], 3, "{got}");
    maps_ok(&pair, &["put-object", target, "page.txt", "--text", "v2"]);
    let got = python_client(&pair, "page.txt", 2);
    assert_eq!(got["bodies"]["v2"], 2, "{got}");
    // Head and one chunk of the new generation remain, beside index.html's five.
    let listing = maps_ok(&pair, &["dump", target]);
    assert!(listing.contains("8 of 1280 entries"), "{listing}");
    maps_ok(&pair, &["del-object", target, "page.txt"]);
    let gone = python_client(&pair, "page.txt", 2);
    assert_eq!(gone["statuses"]["1"], 2, "NOT_FOUND expected: {gone}");
    let err = maps_err(&pair, &["del-object", target, "page.txt"]);
    assert!(err.contains("no object \"page.txt\""), "{err}");
    let err = maps_err(
        &pair,
        &["put-object", target, "big", "--text", &"x".repeat(1429)],
    );
    assert!(err.contains("at most 1428 content bytes"), "{err}");
}
