//! `lambdactl logs` against a real attachment: the `hello-log` sample, which logs one line per
//! request through the SDK's ring buffer, answers requests from the client namespace and
//! `logs` shows exactly one line per request, with time and lambda name; `--follow` prints new
//! lines as they come; the lambda's name finds its interface unless it is ambiguous. The VM
//! backend shows the same line in `test-run` (and `vm_serve.rs` covers `logs --vm`).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::Value;

const TEXT: &str = "hello-log: answered a request";

/// Kills the `logs --follow` child this test started, also when an assertion fails.
struct Follow(Child);

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_show_one_line_per_request_and_are_consumed() {
    if !kernel_tests_enabled("logs_show_one_line_per_request_and_are_consumed") {
        return;
    }
    let pair = NetnsPair::create();
    pair.checksums_in_software();
    let object = lambda_object("hello-log");
    let (ns, iface) = (pair.server_ns.as_str(), pair.server_if.as_str());
    lambdactl_ok(&[
        "-n",
        ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        iface,
        "--mode",
        "skb",
    ]);

    send_requests(&pair, 3);
    // The lambda logged before it answered, so every line is in the ring buffer by now.
    let out = lambdactl_ok(&["-n", ns, "logs", "--iface", iface, "--json"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("logs --json"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut last = 0;
    for line in &lines {
        assert_eq!(line["text"], TEXT, "{line}");
        assert_eq!(line["lambda"], "hello-log", "{line}");
        assert_eq!(line["iface"], iface, "{line}");
        let t = line["ktime_ns"].as_u64().expect("ktime_ns");
        assert!(t >= last, "in order: {out}");
        last = t;
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    // Reading consumed them (and the lambda's name finds its interface).
    assert_eq!(lambdactl_ok(&["-n", ns, "logs", "hello-log"]), "");

    // The text form, and --follow printing a line that arrives while it waits.
    let mut follow = Follow(
        Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args(["-n", ns, "logs", "hello-log", "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting logs --follow"),
    );
    let mut lines = BufReader::new(follow.0.stdout.take().unwrap()).lines();
    send_requests(&pair, 1);
    let line = lines.next().expect("a followed line").unwrap();
    assert!(line.ends_with(&format!(" hello-log {TEXT}")), "{line}");
    drop(follow);

    // A name attached on two interfaces is ambiguous: the error lists both.
    let dummy = "lnlogdummy0";
    let ip = |args: &[&str]| {
        let out = run("ip", &[&["-n", ns][..], args].concat());
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    // A veth pair inside the namespace (a `dummy` device needs a module not every kernel has).
    ip(&[
        "link",
        "add",
        dummy,
        "type",
        "veth",
        "peer",
        "name",
        "lnlogdummy1",
    ]);
    ip(&["link", "set", dummy, "up"]);
    lambdactl_ok(&[
        "-n",
        ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        dummy,
        "--mode",
        "skb",
    ]);
    let out = lambdactl(&["-n", ns, "logs", "hello-log"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("several interfaces") && stderr.contains(iface) && stderr.contains(dummy),
        "{stderr}"
    );
    lambdactl_ok(&["-n", ns, "detach", "--iface", dummy]);
    ip(&["link", "del", dummy]); // and its peer
    // An unknown name is an error naming what is attached.
    let out = lambdactl(&["-n", ns, "logs", "nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no lambda `nosuch`") && stderr.contains("hello-log on"),
        "{stderr}"
    );

    // A lambda that does not log says so.
    lambdactl_ok(&["-n", ns, "detach", "--iface", iface]);
    let pong = lambda_object("pong");
    lambdactl_ok(&[
        "-n",
        ns,
        "attach",
        pong.to_str().unwrap(),
        "--iface",
        iface,
        "--mode",
        "skb",
    ]);
    let out = lambdactl(&["-n", ns, "logs", "--iface", iface]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not log"), "{stderr}");
}

#[test]
fn vm_test_run_prints_the_log_line() {
    // The VM needs no privileges; the sample must be built.
    let object = lambda_object("hello-log");
    for jit in [false, true] {
        let mut args = vec![
            "test-run",
            "--backend",
            "vm",
            "--request-body",
            "hi",
            object.to_str().unwrap(),
        ];
        if jit {
            args.push("--jit");
        }
        let out = lambdactl_ok(&args);
        let logged: Vec<&str> = out.lines().filter(|l| l.contains(TEXT)).collect();
        assert_eq!(logged, [format!("[vm] log: {TEXT}")], "{out}");
        assert!(out.contains("status OK"), "{out}");
    }
}
