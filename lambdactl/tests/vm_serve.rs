//! `lambdactl run`: the static-server served by the VM backend (interpreter and JIT) as a plain
//! process on loopback, checked by the independent Python client that knows only the wire
//! format, and — with root — against the kernel's answer to the same request.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{kernel_tests_enabled, lambda_object, lambdactl_ok, workspace_root};

const INDEX_HTML: &str = "<!doctype html>\n<html><head><title>lambda-nic</title></head>\n<body><h1>Hello from a lambda in the XDP path</h1></body></html>\n";

/// A `lambdactl run` child, stopped with SIGINT on drop.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_lambda("static-server", extra)
    }

    /// Serves the sample `lambda` instead of the static-server.
    fn start_lambda(lambda: &str, extra: &[&str]) -> Server {
        let object = lambda_object(lambda);
        let mut args = vec![
            "run",
            object.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lambdactl run");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(
            first.starts_with(&format!("serving {lambda} on udp 127.0.0.1:")),
            "{first}"
        );
        let port = first
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        Server {
            child,
            stdout,
            port,
        }
    }

    /// Sends SIGINT and returns the rest of stdout (with the final counts).
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by its PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        for line in (&mut self.stdout).lines() {
            rest.push_str(&line.unwrap());
            rest.push('\n');
        }
        assert!(
            status.success(),
            "lambdactl run exited with {status}: {rest}"
        );
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(port: u16, body: &str, count: u32) -> serde_json::Value {
    let script = workspace_root().join("tests/clients/lambda_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            "127.0.0.1",
            &port.to_string(),
            "1",
            body,
            &count.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "client failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

fn serves_the_static_server(engine: &[&str]) {
    let server = Server::start(engine);
    let found = client(server.port, "index.html", 500);
    assert_eq!(found["answered"], 500, "{found}");
    assert_eq!(found["ok"], 500, "{found}");
    assert_eq!(found["bodies"][INDEX_HTML], 500, "{found}");
    let missing = client(server.port, "no-such-object", 20);
    assert_eq!(missing["answered"], 20, "{missing}");
    assert_eq!(
        missing["statuses"]["1"], 20,
        "NOT_FOUND expected: {missing}"
    );

    // A datagram that is not a λ request is passed (no host stack behind the VM: not answered).
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
        .send_to(b"not a lambda request at all", ("127.0.0.1", server.port))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "a non-λ datagram got an answer"
    );

    let summary = server.stop();
    assert!(
        summary.contains("521 received, 520 answered, 1 passed"),
        "final counts: {summary}"
    );
    // The SDK's own counters (LNIC_STATS, one copy per worker, summed) agree.
    for expected in [
        "lambda counts (LNIC_STATS): 521 invocations",
        "XDP_PASS 1, XDP_TX 520",
        "OK 500, NOT_FOUND 20",
        "not λ requests 1",
    ] {
        assert!(summary.contains(expected), "{expected:?} in {summary}");
    }
}

#[test]
fn interpreter_serves_the_static_server_over_udp() {
    serves_the_static_server(&[]);
}

#[test]
fn jit_serves_the_static_server_over_udp() {
    serves_the_static_server(&["--jit"]);
}

/// The VM's answer is byte for byte the kernel's: `test-run --backend both` compares action and
/// output frame for a found and a missing object, on both engines.
#[test]
fn vm_and_kernel_give_identical_frames() {
    if !kernel_tests_enabled("vm_and_kernel_give_identical_frames") {
        return;
    }
    let object = lambda_object("static-server");
    for body in ["index.html", "no-such-object", ""] {
        for jit in [false, true] {
            let mut args = vec![
                "test-run",
                object.to_str().unwrap(),
                "--backend",
                "both",
                "--request-body",
                body,
            ];
            if jit {
                args.push("--jit");
            }
            let out = lambdactl_ok(&args);
            assert!(
                out.contains("kernel and vm agree"),
                "body {body:?} jit {jit}: {out}"
            );
        }
    }
}

/// A run longer than its budget is stopped by the interpreter with an error naming the
/// instruction and its Rust source line, instead of running on (a runaway never hangs).
#[test]
fn interpreter_budget_stops_a_run_and_names_the_line() {
    let object = lambda_object("static-server");
    let out = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .args([
            "test-run",
            object.to_str().unwrap(),
            "--backend",
            "vm",
            "--budget",
            "100",
            "--request-body",
            "index.html",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("exceeded its budget of 100 instructions"),
        "{stderr}"
    );
    assert!(stderr.contains(".rs:"), "no source line in {stderr}");
}

/// A contract over the configured limits is refused before anything loads, naming the limit.
#[test]
fn contracts_over_the_limits_are_refused() {
    let object = lambda_object("static-server");
    for (flag, value, expected) in [
        (
            "--max-insns",
            "1000",
            // Not the exact figure: it changes with the SDK.
            &[
                "bound on executed instructions of ",
                " exceeds the limit of 1000",
            ][..],
        ),
        (
            "--max-map-bytes",
            "1000",
            // Not the exact figure: the per-CPU `LNIC_STATS` map counts once per CPU.
            &["map memory in bytes of ", " exceeds the limit of 1000"][..],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args([
                "test-run",
                object.to_str().unwrap(),
                "--backend",
                "vm",
                "--request-body",
                "index.html",
                flag,
                value,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: {out:?}");
        for part in expected {
            assert!(stderr.contains(part), "{flag} {value}: {stderr}");
        }
    }
}

/// Reads the child's stdout up to the `control socket PATH` line and returns the path.
fn control_path(server: &mut Server) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            server.stdout.read_line(&mut line).unwrap() > 0,
            "no control socket line"
        );
        if let Some(path) = line.trim_end().strip_prefix("control socket ") {
            return path.to_owned();
        }
    }
}

/// `maps --vm` and `stats --vm` read and write a `lambdactl run` process's maps and counters
/// through its control socket, with the same typed rendering as for pinned maps; a malformed
/// request gets an error answer and the server goes on serving.
#[test]
fn control_socket_serves_maps_and_stats() {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    let dir = std::env::temp_dir().join(format!("lnic-vm-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctl.sock");
    let sock_arg = sock.to_str().unwrap();
    let mut server = Server::start(&["--control", sock_arg]);
    assert_eq!(control_path(&mut server), sock_arg);

    let dump = lambdactl_ok(&["maps", "--vm", sock_arg, "dump", "static-server/OBJECTS"]);
    assert!(
        dump.contains(r#""index.html" => { len: 126, data: "<!doctype html>"#),
        "{dump}"
    );
    let ls = lambdactl_ok(&["maps", "--vm", sock_arg, "ls"]);
    assert!(
        ls.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.windows(2).any(|w| w == ["OBJECTS", "hash"])
        }),
        "{ls}"
    );

    let set = lambdactl_ok(&[
        "maps",
        "--vm",
        sock_arg,
        "set",
        "static-server/OBJECTS",
        "hello.txt",
        "len=5,data=hello",
    ]);
    assert!(
        set.contains("set static-server/OBJECTS \"hello.txt\""),
        "{set}"
    );
    let hello = client(server.port, "hello.txt", 3);
    assert_eq!(hello["bodies"]["hello"], 3, "{hello}");
    let got = lambdactl_ok(&["maps", "--vm", sock_arg, "get", "OBJECTS", "hello.txt"]);
    assert_eq!(got.trim(), r#"{ len: 5, data: "hello" }"#);

    // Malformed lines are answered with errors on the same connection, which stays usable.
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"garbage\n{\"op\":\"lookup\",\"map\":\"OBJECTS\",\"key\":\"zz\"}\n{\"op\":\"nope\"}\n",
        )
        .unwrap();
    let mut answers = BufReader::new(stream.try_clone().unwrap());
    for expected in ["not a JSON request", "is not hex", "unknown op"] {
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(expected)),
            "{expected:?}: {line}"
        );
    }
    drop(answers);
    drop(stream);

    let stats: serde_json::Value =
        serde_json::from_str(&lambdactl_ok(&["stats", "--vm", sock_arg, "--json"])).unwrap();
    assert_eq!(stats["counters"]["received"], 3, "{stats}");
    assert_eq!(stats["counters"]["answered"], 3, "{stats}");
    assert_eq!(stats["sdk"]["invocations"], 3, "{stats}");
    assert_eq!(stats["sdk"]["statuses"]["OK"], 3, "{stats}");

    // The static-server logs its misses, name included (zero padding not printed).
    let miss = client(server.port, "missing.html", 1);
    assert_eq!(miss["statuses"]["1"], 1, "{miss}");
    let logs = lambdactl_ok(&["logs", "--vm", sock_arg]);
    assert!(
        logs.lines()
            .any(|l| l.ends_with(" static-server not found: missing.html")),
        "{logs}"
    );

    let summary = server.stop();
    assert!(summary.contains("4 received, 4 answered"), "{summary}");
    assert!(!sock.exists(), "the control socket outlived the server");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `logs --vm` drains the VM's ring buffer through the control socket: one line per request,
/// in order, with the lambda's name and a time, each once; `--follow` prints new ones.
#[test]
fn logs_vm_prints_and_consumes_the_ring_buffer() {
    const TEXT: &str = "hello-log: answered a request";
    let dir = std::env::temp_dir().join(format!("lnic-vm-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctl.sock");
    let sock_arg = sock.to_str().unwrap();
    let mut server = Server::start_lambda("hello-log", &["--control", sock_arg]);
    assert_eq!(control_path(&mut server), sock_arg);

    let answered = client(server.port, "hi", 3);
    assert_eq!(answered["statuses"]["0"], 3, "{answered}");
    let out = lambdactl_ok(&["logs", "--vm", sock_arg, "--json"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("logs --json"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut last = 0;
    for line in &lines {
        assert_eq!(line["text"], TEXT, "{line}");
        assert_eq!(line["lambda"], "hello-log", "{line}");
        assert_eq!(line["vm"], sock_arg, "{line}");
        let t = line["ktime_ns"].as_u64().expect("ktime_ns");
        assert!(t >= last, "in order: {out}");
        last = t;
    }
    // Consumed.
    assert_eq!(lambdactl_ok(&["logs", "--vm", sock_arg]), "");

    let mut follow = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .args(["logs", "--vm", sock_arg, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting logs --follow");
    let mut followed = BufReader::new(follow.stdout.take().unwrap()).lines();
    client(server.port, "hi", 1);
    let line = followed.next().expect("a followed line").unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(line.ends_with(&format!(" hello-log {TEXT}")), "{line}");

    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stats --vm --watch` prints the totals, then what each interval added: requests sent
/// during an interval show up in that interval's delta, not in the totals before it.
#[test]
fn stats_vm_watch_reports_what_each_interval_added() {
    let dir = std::env::temp_dir().join(format!("lnic-vm-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("ctl.sock");
    let sock_arg = sock.to_str().unwrap();
    let mut server = Server::start(&["--control", sock_arg]);
    assert_eq!(control_path(&mut server), sock_arg);
    let before = client(server.port, "index.html", 5);
    assert_eq!(before["ok"], 5, "{before}");

    let mut watch = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .args([
            "stats", "--vm", sock_arg, "--watch", "2", "--count", "1", "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stats --watch");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let totals: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(totals["totals"]["sdk"]["invocations"], 5, "{totals}");
    // Within the 2-second interval that has just begun.
    let during = client(server.port, "index.html", 7);
    assert_eq!(during["ok"], 7, "{during}");
    let added: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(added["added"]["sdk"]["invocations"], 7, "{added}");
    assert_eq!(added["added"]["counters"]["answered"], 7, "{added}");
    assert!(watch.wait().unwrap().success());
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `maps put-object` / `del-object` write static-server's objects in the layout its map has:
/// one record (static-server.o) or 56-byte chunks (static-server-nic.o, the NIC build), and a
/// request gets the new content, the replaced content, then NOT_FOUND, the same from both.
#[test]
fn put_object_writes_both_static_server_layouts() {
    let dir = std::env::temp_dir().join(format!("lnic-vm-objects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 300 bytes (six chunks in the NIC layout), then 57 (two): a replacement that shrinks.
    let long: String = (0..300).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let file = dir.join("long.txt");
    std::fs::write(&file, &long).unwrap();
    for lambda in ["static-server", "static-server-nic"] {
        let sock = dir.join(format!("{lambda}.sock"));
        let sock_arg = sock.to_str().unwrap();
        let mut server = Server::start_lambda(lambda, &["--control", sock_arg]);
        assert_eq!(control_path(&mut server), sock_arg);
        let put = |args: &[&str]| {
            let mut all = vec!["maps", "--vm", sock_arg, "put-object", "OBJECTS", "obj.txt"];
            all.extend_from_slice(args);
            lambdactl_ok(&all)
        };
        let stored = put(&["--file", file.to_str().unwrap()]);
        assert!(
            stored.contains(&format!("stored {lambda}/OBJECTS \"obj.txt\": 300 bytes")),
            "{stored}"
        );
        let got = client(server.port, "obj.txt", 3);
        assert_eq!(got["bodies"][long.as_str()], 3, "{lambda}: {got}");
        let short = "x".repeat(57);
        put(&["--text", &short]);
        let got = client(server.port, "obj.txt", 3);
        assert_eq!(got["bodies"][short.as_str()], 3, "{lambda}: {got}");
        // The default page is still there.
        let index = client(server.port, "index.html", 1);
        assert_eq!(index["bodies"][INDEX_HTML], 1, "{lambda}: {index}");
        lambdactl_ok(&["maps", "--vm", sock_arg, "del-object", "OBJECTS", "obj.txt"]);
        let gone = client(server.port, "obj.txt", 2);
        assert_eq!(
            gone["statuses"]["1"], 2,
            "{lambda}: NOT_FOUND expected: {gone}"
        );
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
