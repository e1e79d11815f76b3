//! `lambdactl watchdog` (fork per request) and `lambdactl handle`, on loopback with a real
//! HTTP/1.1 client over TCP: the three workloads through the watchdog (memcached against a real
//! memcached, checked over memcached's own TCP protocol), and the watchdog's own rules: a
//! non-zero exit is a 500 with the handler's stderr, a slow handler is killed (504), a large
//! body is refused (413) without forking, the request is passed in Http_* variables, and
//! concurrent requests each get their own process. No root needed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use workloads::grayscale::{Dimensions, gray, request_body};
use workloads::static_content::{INDEX_HTML, INDEX_NAME};

const LAMBDACTL: &str = env!("CARGO_BIN_EXE_lambdactl");

/// A child process killed by its PID on drop.
struct Background {
    child: Child,
    /// Kept open: a server that prints more would die of SIGPIPE on a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A watchdog on a free loopback port forking `handler`; returns it and its address.
fn watchdog(options: &[&str], handler: &[&str]) -> (Background, SocketAddr) {
    let mut child = Command::new(LAMBDACTL)
        .args(["watchdog", "--listen", "127.0.0.1:0"])
        .args(options)
        .arg("--")
        .args(handler)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting lambdactl watchdog");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let server = Background {
        child,
        _stdout: Some(stdout),
    };
    // `serving watchdog on http 127.0.0.1:PORT: forks `…` per request`
    let addr = first
        .strip_prefix("serving watchdog on http ")
        .and_then(|rest| rest.split(": ").next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    (server, addr.parse().expect("listen address"))
}

/// One HTTP/1.1 exchange: (status, headers as lowercase text, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to the watchdog");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A refused large body may be answered before all of it is sent.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {path}: no end of headers in {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn post(addr: SocketAddr, body: &[u8]) -> Answer {
    http(addr, "POST", "/", &[], body)
}

#[test]
fn static_server_through_the_watchdog() {
    let (_wd, addr) = watchdog(&[], &[LAMBDACTL, "handle", "static-server"]);
    let ok = post(addr, INDEX_NAME);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.body, INDEX_HTML);
    assert!(
        ok.head.contains("content-type: application/octet-stream"),
        "{}",
        ok.head
    );
    let missing = post(addr, b"nothing-here.html");
    assert_eq!(missing.status, 500);
    assert!(
        missing.text().contains("NOT_FOUND") && missing.text().contains("nothing-here.html"),
        "{}",
        missing.text()
    );
    // A GET forks the handler too (as the classic watchdog does), here with an empty body.
    let empty = http(addr, "GET", "/", &[], b"");
    assert_eq!(empty.status, 500);
    assert!(empty.text().contains("BAD_REQUEST"), "{}", empty.text());
    // The health check answers without a handler.
    let health = http(addr, "GET", "/_/health", &[], b"");
    assert_eq!((health.status, health.text().trim()), (200, "OK"));
}

#[test]
fn grayscale_through_the_watchdog() {
    let (_wd, addr) = watchdog(&[], &[LAMBDACTL, "handle", "grayscale"]);
    let (w, h) = (20u16, 3u16);
    let rgb: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    let mut body = vec![0u8; lambda_ebpf::MAX_BODY];
    let len = request_body(
        Dimensions::new(w.into(), h.into()).unwrap(),
        &rgb,
        0,
        &mut body,
    )
    .unwrap();
    let answer = post(addr, &body[..len]);
    assert_eq!(answer.status, 200, "{}", answer.text());
    // The image header echoed, then one gray byte per pixel.
    let mut expected = vec![(w >> 8) as u8, w as u8, (h >> 8) as u8, h as u8];
    expected.extend(rgb.chunks(3).map(|p| gray(p[0], p[1], p[2])));
    assert_eq!(answer.body, expected);
    // Half a pixel: refused with the reason.
    let bad = post(addr, &body[..len - 1]);
    assert_eq!(bad.status, 500);
    assert!(bad.text().contains("BAD_REQUEST"), "{}", bad.text());
}

/// memcached on a free loopback port (UDP for the handler, TCP for checking), killed on drop.
fn memcached() -> Option<(Background, u16)> {
    if Command::new("memcached").arg("-h").output().is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but memcached is not installed (.ci/run installs it)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "skipping the memcached watchdog test: memcached is not installed"
        );
        return None;
    }
    // A port free for both TCP and UDP right now.
    let port = loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let p = port.to_string();
    let mut command = Command::new("memcached");
    command.args(["-U", &p, "-p", &p, "-l", "127.0.0.1", "-t", "1", "-m", "16"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.args(["-u", "root"]);
    }
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .expect("starting memcached");
    let server = Background {
        child,
        _stdout: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, port))
}

/// `get key` over memcached's TCP text protocol: the value, if stored.
fn tcp_get(port: u16, key: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(format!("get {key}\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.starts_with("END") {
        return None;
    }
    assert!(line.starts_with(&format!("VALUE {key} ")), "{line:?}");
    let mut value = String::new();
    reader.read_line(&mut value).unwrap();
    Some(value.trim_end_matches("\r\n").to_owned())
}

#[test]
fn memcached_through_the_watchdog() {
    let Some((memcached_server, port)) = memcached() else {
        return;
    };
    let server = format!("127.0.0.1:{port}");
    let (_wd, addr) = watchdog(
        &[],
        &[LAMBDACTL, "handle", "memcached", "--memcached", &server],
    );
    let key = format!("wd-{}", std::process::id());
    let miss = post(addr, format!("get {key}").as_bytes());
    assert_eq!(miss.status, 500);
    assert!(miss.text().contains("NOT_FOUND"), "{}", miss.text());
    let value = "a value from the watchdog";
    let set = post(addr, format!("set {key} {value}").as_bytes());
    assert_eq!((set.status, set.text()), (200, String::new()));
    assert_eq!(tcp_get(port, &key).as_deref(), Some(value));
    let hit = post(addr, format!("get {key}").as_bytes());
    assert_eq!((hit.status, hit.text()), (200, value.to_owned()));
    let bad = post(addr, b"delete everything");
    assert_eq!(bad.status, 500);
    assert!(bad.text().contains("BAD_REQUEST"), "{}", bad.text());
    // memcached gone: the handler says so.
    drop(memcached_server);
    let down = post(addr, format!("get {key}").as_bytes());
    assert_eq!(down.status, 500);
    assert!(down.text().contains("UNAVAILABLE"), "{}", down.text());
}

#[test]
fn watchdog_rules() {
    // The request reaches the handler in Http_* variables, the body on stdin.
    let script = "printf '%s %s %s %s|' \"$Http_Method\" \"$Http_Path\" \"$Http_Query\" \
                  \"$Http_X_Call_Id\"; cat";
    let (_wd, addr) = watchdog(&["--content-type", "text/plain"], &["sh", "-c", script]);
    let answer = http(
        addr,
        "PUT",
        "/some/path?a=1&b=2",
        &["X-Call-Id: 77"],
        b"the body",
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "PUT /some/path a=1&b=2 77|the body");
    assert!(answer.head.contains("content-type: text/plain"));

    // Each concurrent request gets its own process: 8 at once, each its own answer.
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| s.spawn(move || post(addr, format!("request {i}").as_bytes()).text()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, a) in answers.iter().enumerate() {
        // No query, no X-Call-Id: two empty fields.
        assert_eq!(a, &format!("POST /  |request {i}"));
    }

    // A failing handler: 500 with its stderr, or the exit status when it printed nothing.
    let (_wd, addr) = watchdog(&[], &["sh", "-c", "echo broken >&2; exit 3"]);
    let answer = post(addr, b"x");
    assert_eq!((answer.status, answer.text()), (500, "broken\n".to_owned()));
    // It exits without reading its stdin: the watchdog's write fails (EPIPE), and it goes on.
    let (_wd, addr) = watchdog(&[], &["sh", "-c", "exit 4"]);
    let answer = post(addr, &vec![b'x'; 1 << 20]);
    assert_eq!(answer.status, 500);
    assert!(
        answer.text().contains("exit status: 4"),
        "{}",
        answer.text()
    );
    let (_wd, addr) = watchdog(&[], &["/nonexistent/handler"]);
    let answer = post(addr, b"x");
    assert_eq!(answer.status, 500);
    assert!(
        answer
            .text()
            .contains("cannot start the handler /nonexistent/handler"),
        "{}",
        answer.text()
    );

    // A body over --max-body: 413, and the handler never runs (it would have answered 200).
    let (_wd, addr) = watchdog(&["--max-body", "16"], &["cat"]);
    assert_eq!(post(addr, &[b'a'; 16]).status, 200);
    // Announced with `Expect: 100-continue`, as curl does for large bodies: refused on its
    // Content-Length, before the client sends a byte of it (so nothing is read, and the
    // closing connection cannot reset an answer still in flight).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 17\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).unwrap();
    assert!(first.starts_with("HTTP/1.1 413"), "{first:?}");

    // A handler over --timeout-ms: 504, and it is killed, not left running.
    let (wd, addr) = watchdog(&["--timeout-ms", "300"], &["sleep", "30"]);
    let slow = post(addr, b"");
    assert_eq!(slow.status, 504, "{}", slow.text());
    let watchdog_pid = wd.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !children_of(watchdog_pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the timed-out handler is still running: {:?}",
            children_of(watchdog_pid)
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PIDs whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

#[test]
fn handle_refuses_bad_input_clearly() {
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(LAMBDACTL)
            .arg("handle")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // The handler may stop reading early (a refused large body): a broken pipe is fine.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ok = run(&["static-server"], INDEX_NAME);
    assert!(ok.status.success());
    assert_eq!(ok.stdout, INDEX_HTML);
    let big = run(&["static-server"], &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(big.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("request body too large"),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );
    let bad = run(&["grayscale", "--fragment", "3/3"], b"");
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("below a non-zero count"));
}
