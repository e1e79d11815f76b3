//! The gateway end to end: `lambdactl gateway` as a child process, driven over real HTTP the
//! way `faas-cli deploy/list/invoke/remove` drive OpenFaaS, on the VM backend (no root) and on
//! XDP (root; under CI=true they must run).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{kernel_tests_enabled, lambda_object, lambdactl_ok, run_ok, workspace_root};

const USER: &str = "admin";
const PASSWORD: &str = "lambda-nic-test";
/// The `--max-body` the tests give the gateway, so oversize bodies stay cheap to send.
const MAX_BODY: usize = 64 * 1024;

/// A running `lambdactl gateway`; stopped with SIGTERM (it removes its functions) on drop, and
/// its namespaces removed even if it died.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl GatewayProcess {
    fn start(backend: &str, tag: &str) -> GatewayProcess {
        GatewayProcess::start_with(backend, tag, &[])
    }

    fn start_with(backend: &str, tag: &str, extra: &[&str]) -> GatewayProcess {
        // Built samples must exist (cargo xtask build-ebpf); this asserts it with a hint.
        lambda_object("static-server");
        let dir = std::env::temp_dir().join(format!("lnic-gw-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = dir.join("credentials");
        std::fs::write(&auth, format!("{USER}:{PASSWORD}\n")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .args([
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                backend,
                "--auth-file",
                auth.to_str().unwrap(),
                "--samples-dir",
                workspace_root().join("target/lambdas").to_str().unwrap(),
                "--max-body",
                &MAX_BODY.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting lambdactl gateway");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(addr) = first
            .strip_prefix("gateway listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not start: {first:?}");
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        GatewayProcess {
            child,
            addr,
            _dir: TempDir(dir),
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SAFETY: signalling our own, unreaped child by its PID.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What a gateway killed before its own cleanup would leave (nothing when it stopped).
        for side in ["s", "c"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("lnic-gw-{pid}-{side}")])
                .output();
        }
    }
}

/// An HTTP answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn basic() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// Sends raw bytes, half-closes, and reads the answer until the server closes: a request the
/// client cut short.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Option<Answer> {
    exchange(addr, bytes, true)
}

/// Sends raw bytes and reads until the server closes; `half_close` also ends the client's
/// side first (the server then sees the request end early, as with a dropped client).
fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer (413) and close before it read everything: a failed write is
    // fine, the answer is what counts.
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse(&out)
}

fn parse(out: &[u8]) -> Option<Answer> {
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&out[..split]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: out[split + 4..].to_vec(),
    })
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
fn http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    exchange(addr, &bytes, false).unwrap_or_else(|| panic!("no HTTP answer to {method} {path}"))
}

fn deployment(service: &str, image: &str) -> Vec<u8> {
    serde_json::json!({
        "service": service,
        "image": image,
        "envProcess": "",
        "labels": { "com.openfaas.scale.min": "1" },
        "annotations": {},
    })
    .to_string()
    .into_bytes()
}

/// `faas-cli deploy`: PUT (update), and POST when the function does not exist yet.
fn faas_deploy(addr: SocketAddr, service: &str, image: &str) {
    let auth = basic();
    let put = http(
        addr,
        "PUT",
        "/system/functions",
        Some(&auth),
        &deployment(service, image),
    );
    let answer = if put.status == 404 {
        http(
            addr,
            "POST",
            "/system/functions",
            Some(&auth),
            &deployment(service, image),
        )
    } else {
        put
    };
    assert_eq!(answer.status, 202, "deploy {service}: {}", answer.text());
}

fn lifecycle(backend: &str) {
    let gw = GatewayProcess::start(backend, &format!("life-{backend}"));
    let addr = gw.addr;
    let auth = basic();

    let info = http(addr, "GET", "/system/info", Some(&auth), b"");
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(info["provider"]["provider"], "lambda-nic");

    faas_deploy(addr, "static-server", "static-server");
    faas_deploy(addr, "grayscale", "grayscale");
    // echo shows fragments split and reassembled (a grayscale body spans fragments only on
    // its own 474-pixel boundaries, which `lambdactl invoke --image` keeps).
    faas_deploy(addr, "echo", lambda_object("echo").to_str().unwrap());

    // faas-cli list
    let list = http(addr, "GET", "/system/functions", Some(&auth), b"");
    assert_eq!(list.status, 200);
    let list: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "grayscale", "static-server"]);
    assert_eq!(list[0]["availableReplicas"], 1);
    assert_eq!(list[0]["invocationCount"], 0);

    // faas-cli invoke
    let page = http(addr, "POST", "/function/static-server", None, b"index.html");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("Hello from a lambda"),
        "{}",
        page.text()
    );
    let by_path = http(addr, "GET", "/function/static-server/index.html", None, b"");
    assert_eq!(by_path.body, page.body);
    let by_query = http(addr, "GET", "/function/static-server?index.html", None, b"");
    assert_eq!(by_query.body, page.body);
    let missing = http(
        addr,
        "POST",
        "/function/static-server",
        None,
        b"nothing.html",
    );
    assert_eq!(missing.status, 404, "NOT_FOUND maps to 404");
    let bad = http(addr, "POST", "/function/static-server", None, &[b'x'; 65]);
    assert_eq!(bad.status, 400, "BAD_REQUEST maps to 400");

    // A 10 × 5 image in one fragment: width and height, then RGB; the answer echoes the
    // dimensions, then one gray byte per pixel (Y = (77 R + 150 G + 29 B + 128) >> 8).
    let mut image = vec![0, 10, 0, 5];
    let pixels: Vec<[u8; 3]> = (0..50u32)
        .map(|i| [(i * 5) as u8, (255 - i * 3) as u8, (i * 11 % 256) as u8])
        .collect();
    image.extend(pixels.iter().flatten());
    let gray = http(addr, "POST", "/function/grayscale", None, &image);
    assert_eq!(gray.status, 200, "{}", gray.text());
    let mut expected = vec![0, 10, 0, 5];
    expected.extend(pixels.iter().map(|[r, g, b]| {
        ((77 * u32::from(*r) + 150 * u32::from(*g) + 29 * u32::from(*b) + 128) >> 8) as u8
    }));
    assert_eq!(gray.body, expected);

    // A body of several fragments: echo upper-cases the first 64 bytes of each one.
    let body: Vec<u8> = (0..5000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    let echoed = http(addr, "POST", "/function/echo", None, &body);
    assert_eq!(echoed.status, 200);
    let mut expected = Vec::new();
    for fragment in body.chunks(1428) {
        let mut f = fragment.to_vec();
        let head = 64.min(f.len());
        f[..head].make_ascii_uppercase();
        expected.extend_from_slice(&f);
    }
    assert_eq!(echoed.body, expected, "fragments reassembled in order");

    let one = http(
        addr,
        "GET",
        "/system/function/static-server",
        Some(&auth),
        b"",
    );
    assert_eq!(one.status, 200);
    let one: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(one["invocationCount"], 5);
    assert_eq!(one["image"], "static-server");

    let scale = http(
        addr,
        "POST",
        "/system/scale-function/echo",
        Some(&auth),
        br#"{"serviceName":"echo","replicas":3}"#,
    );
    assert_eq!(scale.status, 202);

    let metrics = http(addr, "GET", "/metrics", None, b"").text();
    assert!(
        metrics.contains(
            "gateway_function_invocation_total{code=\"200\",function_name=\"static-server\"} 3"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "gateway_function_invocation_total{code=\"404\",function_name=\"static-server\"} 1"
    ));
    assert!(
        metrics.contains("gateway_functions_seconds_count{code=\"200\",function_name=\"echo\"} 1")
    );
    assert!(metrics.contains("gateway_service_count{function_name=\"echo\"} 3"));

    // faas-cli remove
    for name in ["static-server", "grayscale", "echo"] {
        let body = format!("{{\"functionName\":\"{name}\"}}");
        let removed = http(
            addr,
            "DELETE",
            "/system/functions",
            Some(&auth),
            body.as_bytes(),
        );
        assert_eq!(removed.status, 202, "{}", removed.text());
        let gone = http(
            addr,
            "POST",
            &format!("/function/{name}"),
            None,
            b"index.html",
        );
        assert_eq!(gone.status, 404);
    }
    let again = http(
        addr,
        "DELETE",
        "/system/functions",
        Some(&auth),
        br#"{"functionName":"echo"}"#,
    );
    assert_eq!(again.status, 404);
    let list = http(addr, "GET", "/system/functions", Some(&auth), b"");
    assert_eq!(list.text(), "[]");

    // A lambda our verifier refuses is the client's error, with the verifier's reason.
    let rejected = workspace_root().join("target/lambdas/rejected/unchecked-packet-read.o");
    if rejected.is_file() {
        let refused = http(
            addr,
            "POST",
            "/system/functions",
            Some(&auth),
            &deployment("bad", rejected.to_str().unwrap()),
        );
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(refused.text().contains("verifier"), "{}", refused.text());
        let list = http(addr, "GET", "/system/functions", Some(&auth), b"");
        assert_eq!(list.text(), "[]", "a refused deploy leaves nothing behind");
    }
}

/// Calls `counter` from several threads while it is upgraded to `counter-v2`; no call may
/// fail. Returns (calls, answers seen after the update, the last count).
fn put_under_load(backend: &str) -> (u64, Vec<String>) {
    let gw = GatewayProcess::start(backend, &format!("load-{backend}"));
    let addr = gw.addr;
    faas_deploy(addr, "counter", "counter");
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut last = String::new();
                while !stop.load(Ordering::Relaxed) {
                    let a = http(addr, "POST", "/function/counter", None, b"");
                    calls.fetch_add(1, Ordering::Relaxed);
                    if a.status != 200 {
                        failures.push(format!("{} {}", a.status, a.text()));
                    }
                    last = a.text();
                }
                (failures, last)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let before = calls.load(Ordering::Relaxed);
    let put = http(
        addr,
        "PUT",
        "/system/functions",
        Some(&basic()),
        &deployment("counter", "counter-v2"),
    );
    assert_eq!(put.status, 202, "{}", put.text());
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut lasts = Vec::new();
    for w in workers {
        let (failures, last) = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "failed calls during the update: {failures:?}"
        );
        lasts.push(last);
    }
    let total = calls.load(Ordering::Relaxed);
    assert!(
        before > 0 && total > before,
        "calls ran before and after: {before} / {total}"
    );
    (total, lasts)
}

/// Calls static-server from 4 threads while another function is deployed and removed 4 times;
/// no call may fail.
fn churn(backend: &str) {
    let gw = GatewayProcess::start(backend, &format!("churn-{backend}"));
    let addr = gw.addr;
    faas_deploy(addr, "static-server", "static-server");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let a = http(addr, "POST", "/function/static-server", None, b"index.html");
                    if a.status == 200 && a.text().contains("Hello") {
                        ok += 1;
                    } else {
                        failed.push(format!("{} {}", a.status, a.text()));
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let auth = basic();
    for round in 0..4 {
        faas_deploy(addr, "echo", "echo");
        let a = http(
            addr,
            "POST",
            "/function/echo",
            None,
            format!("round {round}").as_bytes(),
        );
        assert_eq!((a.status, a.text()), (200, format!("ROUND {round}")));
        let removed = http(
            addr,
            "DELETE",
            "/system/functions",
            Some(&auth),
            br#"{"functionName":"echo"}"#,
        );
        assert_eq!(removed.status, 202, "{}", removed.text());
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.join().unwrap();
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        total += ok;
    }
    assert!(total > 0, "calls ran during the churn");
}

#[test]
fn serving_goes_on_while_functions_come_and_go_on_vm() {
    churn("vm");
}

#[test]
fn serving_goes_on_while_functions_come_and_go_on_xdp() {
    if kernel_tests_enabled("serving_goes_on_while_functions_come_and_go_on_xdp") {
        churn("drv");
    }
}

fn malformed(backend: &str) {
    let mut gw = GatewayProcess::start(backend, &format!("bad-{backend}"));
    let addr = gw.addr;
    let auth = basic();
    faas_deploy(addr, "echo", "echo");
    // A seeded generator (xorshift), so a failure names a case that reproduces.
    let mut seed: u64 = 0x5eed_1a4b_d00d_f00d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let oversize = vec![b'z'; MAX_BODY + 1];
    let mut counts = [0u32; 12];
    for i in 0..1000 {
        let kind = (next() % 12) as usize;
        counts[kind] += 1;
        let n = next();
        let (expected, answer) = match kind {
            0 => {
                // Bad JSON of many shapes.
                let shapes: [&[u8]; 5] = [b"{", b"[]", b"{\"service\":1}", b"null", b"\xff\xfe"];
                let body = shapes[(n % 5) as usize];
                (
                    400,
                    http(addr, "POST", "/system/functions", Some(&auth), body),
                )
            }
            1 => (
                400,
                http(
                    addr,
                    "DELETE",
                    "/system/functions",
                    Some(&auth),
                    b"{\"name\":\"x\"}",
                ),
            ),
            2 => (413, http(addr, "POST", "/function/echo", None, &oversize)),
            3 => {
                let big = vec![b' '; 64 * 1024 + 1];
                (
                    413,
                    http(addr, "POST", "/system/functions", Some(&auth), &big),
                )
            }
            4 => (
                404,
                http(addr, "POST", &format!("/function/nope-{n}"), None, b"x"),
            ),
            5 => {
                let wrong = [
                    None,
                    Some("Basic YWRtaW46d3Jvbmc=".to_owned()), // admin:wrong
                    Some("Basic %%%".to_owned()),
                    Some(format!("Bearer {n}")),
                ];
                let a = wrong[(n % 4) as usize].as_deref();
                (401, http(addr, "GET", "/system/functions", a, b""))
            }
            6 => {
                // Truncated body: Content-Length promises more than arrives.
                let r = format!(
                    "POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nabc",
                    100 + n % 1000
                );
                (
                    400,
                    raw(addr, r.as_bytes()).expect("an answer to a truncated body"),
                )
            }
            7 => (
                400,
                raw(addr, b"GARBAGE\r\n\r\n").expect("an answer to garbage"),
            ),
            8 => {
                let r = b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
                (400, raw(addr, r).expect("an answer to a truncated chunk"))
            }
            9 => {
                let bodies: [&str; 4] = [
                    r#"{"service":"Bad_Name","image":"echo"}"#,
                    r#"{"service":"x","image":"/no/such/object.o"}"#,
                    r#"{"service":"x","image":"echo","annotations":{"lambda-nic.backend":"gpu"}}"#,
                    r#"{"service":"x","image":"echo","annotations":{"lambda-nic.match":"port=0"}}"#,
                ];
                let body = bodies[(n % 4) as usize];
                (
                    400,
                    http(
                        addr,
                        "POST",
                        "/system/functions",
                        Some(&auth),
                        body.as_bytes(),
                    ),
                )
            }
            10 => (
                404,
                http(
                    addr,
                    "GET",
                    &format!("/system/function/none-{n}"),
                    Some(&auth),
                    b"",
                ),
            ),
            _ => (
                404,
                http(addr, "GET", &format!("/no/such/path/{n}"), None, b""),
            ),
        };
        assert_eq!(
            answer.status,
            expected,
            "case {i} (kind {kind}): {}",
            answer.text()
        );
    }
    assert!(
        counts.iter().all(|&c| c > 0),
        "every kind was tried: {counts:?}"
    );
    // A request cut inside its headers cannot be answered; the connection closes, no harm done.
    assert!(raw(addr, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nConte").is_none());
    assert!(gw.alive(), "the gateway died");
    assert_eq!(http(addr, "GET", "/healthz", None, b"").status, 200);
    let ok = http(addr, "POST", "/function/echo", None, b"still here");
    assert_eq!((ok.status, ok.text().as_str()), (200, "STILL HERE"));
}

/// The PIDs of the gateway's `lambdactl run` children serving `object`.
fn vm_children(gateway: u32, object: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{gateway}/task"))
        .unwrap()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(" run ") && cmdline.contains(object) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn a_function_that_stopped_answering_is_a_504_and_can_be_removed() {
    let mut gw = GatewayProcess::start_with("vm", "silent", &["--timeout-ms", "200"]);
    let addr = gw.addr;
    faas_deploy(addr, "echo", "echo");
    assert_eq!(
        http(addr, "POST", "/function/echo", None, b"hi").status,
        200
    );
    let children = vm_children(gw.child.id(), "echo.o");
    assert_eq!(children.len(), 1, "one lambdactl run serves echo");
    // The VM dies under the gateway (the lambda's process, which this test started through
    // the gateway): calls time out, once retransmitted.
    // SAFETY: killing a process of this test's own process tree, by its PID.
    unsafe {
        libc::kill(children[0] as libc::pid_t, libc::SIGKILL);
    }
    let started = Instant::now();
    let silent = http(addr, "POST", "/function/echo", None, b"anyone?");
    assert_eq!(silent.status, 504, "{}", silent.text());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "two tries of 200 ms"
    );
    let metrics = http(addr, "GET", "/metrics", None, b"").text();
    assert!(
        metrics
            .contains("gateway_function_invocation_total{code=\"504\",function_name=\"echo\"} 1")
    );
    let removed = http(
        addr,
        "DELETE",
        "/system/functions",
        Some(&basic()),
        br#"{"functionName":"echo"}"#,
    );
    assert_eq!(removed.status, 202, "{}", removed.text());
    assert!(gw.alive());
}

#[test]
fn a_killed_gateway_leaves_no_vm_behind() {
    let mut gw = GatewayProcess::start("vm", "killed");
    faas_deploy(gw.addr, "echo", "echo");
    let children = vm_children(gw.child.id(), "echo.o");
    assert_eq!(children.len(), 1);
    gw.child.kill().unwrap(); // SIGKILL: no cleanup of its own
    gw.child.wait().unwrap();
    // The child was started with PR_SET_PDEATHSIG: it gets SIGTERM and stops by itself.
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(children[0]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gone(children[0]),
        "lambdactl run {} outlived its gateway",
        children[0]
    );
}

#[test]
fn faas_cli_lifecycle_on_vm() {
    lifecycle("vm");
}

#[test]
fn faas_cli_lifecycle_on_xdp() {
    if kernel_tests_enabled("faas_cli_lifecycle_on_xdp") {
        lifecycle("drv");
    }
}

/// The count lives in the lambda's map, which the update carries over (pinned maps on XDP, a
/// copy through the control socket while calls are held in the VM): the last answers count
/// every call made, before and after the swap.
fn assert_count_kept(total: u64, lasts: &[String]) {
    let highest = lasts
        .iter()
        .map(|l| {
            assert!(l.starts_with("v2 count="), "{l}");
            l["v2 count=".len()..].parse::<u64>().unwrap()
        })
        .max()
        .unwrap();
    println!("{total} calls, the last count {highest}");
    assert!(
        // Each thread's last answer is within the last 8 calls; a retransmission that both
        // copies answered counts twice.
        highest + 8 >= total && highest <= total + 64,
        "count {highest} after {total} calls"
    );
}

#[test]
fn put_under_load_fails_no_call_and_keeps_state_on_vm() {
    let (total, lasts) = put_under_load("vm");
    assert_count_kept(total, &lasts);
}

#[test]
fn put_under_load_fails_no_call_and_keeps_state_on_xdp() {
    if !kernel_tests_enabled("put_under_load_fails_no_call_and_keeps_state_on_xdp") {
        return;
    }
    let (total, lasts) = put_under_load("drv");
    assert_count_kept(total, &lasts);
}

#[test]
fn malformed_requests_get_4xx_on_vm() {
    malformed("vm");
}

#[test]
fn malformed_requests_get_4xx_on_xdp() {
    if kernel_tests_enabled("malformed_requests_get_4xx_on_xdp") {
        malformed("drv");
    }
}

#[test]
fn the_native_backend_serves_the_baselines_behind_the_same_api() {
    let gw = GatewayProcess::start("native", "native");
    let addr = gw.addr;
    faas_deploy(addr, "static-server", "static-server");
    let page = http(addr, "POST", "/function/static-server", None, b"index.html");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("Hello from a lambda"),
        "{}",
        page.text()
    );
    let missing = http(
        addr,
        "GET",
        "/function/static-server/nothing.html",
        None,
        b"",
    );
    assert_eq!(missing.status, 404);
    // A lambda with no native twin is the request's fault, with the reason.
    let refused = http(
        addr,
        "POST",
        "/system/functions",
        Some(&basic()),
        &deployment("echo", "echo"),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("no native baseline"),
        "{}",
        refused.text()
    );
}

/// A deployment with the `lambda-nic.backend` annotation.
fn annotated(service: &str, image: &str, backend: &str) -> Vec<u8> {
    serde_json::json!({
        "service": service,
        "image": image,
        "annotations": { "lambda-nic.backend": backend },
    })
    .to_string()
    .into_bytes()
}

/// The count in a `counter` or `counter-v2` answer (`count=N`, `v2 count=N`).
fn count_of(answer: &Answer) -> u64 {
    let text = answer.text();
    text.rsplit('=')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a count: {text:?}"))
}

#[test]
fn the_coalesced_backend_deploys_updates_and_removes_through_deploy_mode_coalesced() {
    if !kernel_tests_enabled(
        "the_coalesced_backend_deploys_updates_and_removes_through_deploy_mode_coalesced",
    ) {
        return;
    }
    let gw = GatewayProcess::start("drv", "coalesced");
    let (addr, auth) = (gw.addr, basic());
    let server_ns = format!("lnic-gw-{}-s", gw.child.id());
    let post = |body: &[u8]| http(addr, "POST", "/system/functions", Some(&auth), body);
    for (service, image) in [("web", "static-server"), ("count", "counter")] {
        let a = post(&annotated(service, image, "coalesced"));
        assert_eq!(a.status, 202, "{service}: {}", a.text());
    }
    // Without the annotation: the gateway's default backend (drv, behind a dispatcher).
    assert_eq!(post(&deployment("echo", "echo")).status, 202);

    // The two annotated functions are lambdas of ONE coalesced program on one interface.
    let ls = run_ok("ip", &["netns", "list"]);
    assert!(ls.contains(&server_ns), "{ls}");
    let ls = lambdactl_ok(&["-n", &server_ns, "ls", "--json"]);
    let items: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let of_kind = |kind: &str| -> Vec<(String, String)> {
        items
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == kind)
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_owned(),
                    v["iface"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let coalesced = of_kind("coalesced");
    assert_eq!(coalesced.len(), 2, "{ls}");
    assert_eq!(coalesced[0].0, "count", "{ls}");
    assert_eq!(coalesced[1].0, "web", "{ls}");
    assert_eq!(coalesced[0].1, coalesced[1].1, "one interface: {ls}");
    let deployed = of_kind("deployed");
    assert_eq!(deployed.len(), 1, "{ls}");
    assert_ne!(
        deployed[0].1, coalesced[0].1,
        "echo is on another pair: {ls}"
    );
    let program_ids: Vec<&serde_json::Value> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "coalesced")
        .map(|v| &v["program_id"])
        .collect();
    assert_eq!(program_ids[0], program_ids[1], "{ls}");
    // The gateway has the peer helper: native mode.
    for v in items
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "coalesced")
    {
        assert_eq!(v["xdp_mode"], "drv", "{ls}");
    }

    // faas-cli invoke, through the coalesced program.
    let page = http(addr, "POST", "/function/web", None, b"index.html");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("Hello from a lambda"),
        "{}",
        page.text()
    );
    assert_eq!(
        http(addr, "POST", "/function/web", None, b"nothing.html").status,
        404
    );
    let counts: Vec<u64> = (0..3)
        .map(|_| {
            let a = http(addr, "POST", "/function/count", None, b"");
            assert_eq!(a.status, 200, "{}", a.text());
            assert!(a.text().starts_with("count="), "{}", a.text());
            count_of(&a)
        })
        .collect();
    assert_eq!(counts, [1, 2, 3]);
    let echoed = http(addr, "POST", "/function/echo", None, b"abc");
    assert_eq!(echoed.text(), "ABC");

    // faas-cli deploy of a new version: `deploy --replace` re-coalesces; the count is kept.
    let put = http(
        addr,
        "PUT",
        "/system/functions",
        Some(&auth),
        &annotated("count", "counter-v2", "coalesced"),
    );
    assert_eq!(put.status, 202, "{}", put.text());
    let a = http(addr, "POST", "/function/count", None, b"");
    assert!(a.text().starts_with("v2 count="), "{}", a.text());
    assert_eq!(count_of(&a), 4, "the count survives the re-coalescing");

    // The stats of the coalesced lambdas: count's own SDK counters, the program's row once.
    let stats = lambdactl_ok(&["-n", &server_ns, "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let rows = stats["lambdas"].as_array().unwrap();
    let program = rows
        .iter()
        .find(|r| r["kind"] == "coalesced-program")
        .unwrap_or_else(|| panic!("a coalesced program row: {stats}"));
    assert_eq!(
        program["lambdas"],
        serde_json::json!(["web", "count"]),
        "{stats}"
    );
    let count = rows
        .iter()
        .find(|r| r["kind"] == "coalesced" && r["lambda"] == "count")
        .unwrap_or_else(|| panic!("count's row: {stats}"));
    assert_eq!(count["sdk"]["invocations"], 4, "{stats}");

    // faas-cli remove: web goes, count keeps answering from the rebuilt program.
    let removed = http(
        addr,
        "DELETE",
        "/system/functions",
        Some(&auth),
        br#"{"functionName":"web"}"#,
    );
    assert_eq!(removed.status, 202, "{}", removed.text());
    assert_eq!(
        http(addr, "POST", "/function/web", None, b"index.html").status,
        404
    );
    let a = http(addr, "POST", "/function/count", None, b"");
    assert_eq!(count_of(&a), 5, "{}", a.text());
    let ls = lambdactl_ok(&["-n", &server_ns, "ls", "--json"]);
    let items: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let names: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "coalesced")
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["count"], "{ls}");

    // An unknown backend names the choices, coalesced among them.
    let bad = post(&annotated("x", "echo", "gpu"));
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("drv, skb, coalesced, vm, native"),
        "{}",
        bad.text()
    );
}

/// A memcached server on a free loopback port (UDP and TCP), stopped by its PID on drop.
struct MemcachedServer {
    child: Child,
    port: u16,
}

impl MemcachedServer {
    /// `None` (with the reason printed) when memcached is not installed, outside CI.
    fn start(test: &str) -> Option<MemcachedServer> {
        if Command::new("memcached").arg("-h").output().is_err() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but memcached is not installed (.ci/run installs it)");
            }
            println!("skipping {test}: memcached is not installed (apt-get install memcached)");
            return None;
        }
        // A port free for both protocols right now.
        let port = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let port_text = port.to_string();
        let mut command = Command::new("memcached");
        command.args([
            "-U",
            &port_text,
            "-p",
            &port_text,
            "-l",
            "127.0.0.1",
            "-t",
            "1",
            "-m",
            "16",
        ]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "root"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting memcached");
        let server = MemcachedServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `get KEY` over memcached's own TCP text protocol: the value it holds, if any.
    fn tcp_get(&self, key: &str) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("get {key}\r\n").as_bytes())
            .unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(b"END\r\n") {
            let n = stream.read(&mut buf).expect("memcached TCP reply");
            assert!(n > 0, "memcached closed the TCP connection");
            reply.extend_from_slice(&buf[..n]);
        }
        let line_end = reply.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = String::from_utf8_lossy(&reply[..line_end]).into_owned();
        if !line.starts_with("VALUE ") {
            return None;
        }
        let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
        Some(reply[line_end + 2..line_end + 2 + len].to_vec())
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own, unreaped child by its PID.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// SET then GET through /function/memcached on `backend`, against a real memcached given with
/// `--memcached`; the value is then read back from memcached itself over TCP.
fn memcached_through_the_gateway(backend: &str, memcached: &MemcachedServer) {
    let gw = GatewayProcess::start_with(
        backend,
        &format!("mc-{backend}"),
        &["--memcached", &memcached.addr()],
    );
    let addr = gw.addr;
    faas_deploy(addr, "memcached", "memcached");
    let key = format!("gw-{backend}-{}", std::process::id());
    let value = format!("value-through-{backend}");
    let missing = http(
        addr,
        "POST",
        "/function/memcached",
        None,
        format!("get {key}").as_bytes(),
    );
    assert_eq!(
        missing.status,
        404,
        "{backend}: get before set: {}",
        missing.text()
    );
    let set = http(
        addr,
        "POST",
        "/function/memcached",
        None,
        format!("set {key} {value}").as_bytes(),
    );
    assert_eq!(set.status, 200, "{backend}: set: {}", set.text());
    assert_eq!(
        memcached.tcp_get(&key).as_deref(),
        Some(value.as_bytes()),
        "{backend}: memcached itself holds the value"
    );
    let get = http(
        addr,
        "POST",
        "/function/memcached",
        None,
        format!("get {key}").as_bytes(),
    );
    assert_eq!(get.status, 200, "{backend}: get: {}", get.text());
    assert_eq!(get.text(), value, "{backend}: get");
    println!("{backend}: set then get of {key} through the gateway");
}

#[test]
fn memcached_set_then_get_through_the_gateway_on_every_backend() {
    let test = "memcached_set_then_get_through_the_gateway_on_every_backend";
    let Some(memcached) = MemcachedServer::start(test) else {
        return;
    };
    memcached_through_the_gateway("vm", &memcached);
    memcached_through_the_gateway("native", &memcached);
    if kernel_tests_enabled(test) {
        for backend in ["drv", "skb", "coalesced"] {
            memcached_through_the_gateway(backend, &memcached);
        }
    }
}

#[test]
fn deploying_memcached_without_a_memcached_server_is_a_clear_400() {
    let gw = GatewayProcess::start("vm", "mc-none");
    let refused = http(
        gw.addr,
        "POST",
        "/system/functions",
        Some(&basic()),
        &deployment("memcached", "memcached"),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("--memcached"), "{}", refused.text());
}
