//! The match+lambda model in the VM backend: one `lambdactl run` serves several lambdas on one
//! UDP socket, routed by the same rules as the kernel's dispatcher. No root needed.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

/// A `lambdactl run` child, killed on drop.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lambdactl run` with `lambdas` and returns it with the port it serves.
fn start(lambdas: &[String]) -> (Run, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .arg("run")
        .args(lambdas)
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lambdactl run");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut port = None;
    let mut seen = String::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if port.is_none()
            && let Some(rest) = line.split("127.0.0.1:").nth(1)
        {
            port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
        }
        if line == "Ctrl-C stops" {
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("no port in {seen}"));
    (Run(child), port)
}

fn ask(socket: &UdpSocket, lambda_id: u32, request_id: u64, body: &[u8]) -> (Status, String) {
    let mut packet = LambdaHeader::request(lambda_id, request_id)
        .as_bytes()
        .to_vec();
    packet.extend_from_slice(body);
    socket.send(&packet).unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("an answer");
    let header = LambdaHeader::decode(&buf[..n]).unwrap();
    assert_eq!(header.request_id(), request_id);
    (
        header.status().unwrap(),
        String::from_utf8_lossy(&buf[HEADER_LEN..n]).into_owned(),
    )
}

#[test]
fn one_vm_process_routes_by_the_dispatchers_rules() {
    let whoami = lambda_object("whoami").display().to_string();
    let web = lambda_object("static-server").display().to_string();
    let (_run, port) = start(&[format!("{whoami}@id=1"), format!("{whoami}@id=2"), web]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let whoami = |id: u32, calls: u64| format!("lambda={id:010} calls={calls:020}");
    // Each whoami answers its own id with its own count: two lambdas, two maps.
    assert_eq!(ask(&socket, 1, 1, b"x"), (Status::Ok, whoami(1, 1)));
    assert_eq!(ask(&socket, 1, 2, b"x"), (Status::Ok, whoami(1, 2)));
    assert_eq!(ask(&socket, 2, 3, b"x"), (Status::Ok, whoami(2, 1)));
    // Any other id goes to the any-id lambda, the static-server.
    let (status, body) = ask(&socket, 3, 4, b"index.html");
    assert_eq!(status, Status::Ok);
    assert!(body.contains("Hello from a lambda"), "{body}");
    assert_eq!(ask(&socket, 77, 5, b"nothing").0, Status::NotFound);
}

#[test]
fn conflicting_or_foreign_rules_are_refused() {
    let whoami = lambda_object("whoami").display().to_string();
    let run = |lambdas: &[String]| {
        Command::new(env!("CARGO_BIN_EXE_lambdactl"))
            .arg("run")
            .args(lambdas)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    let twice = run(&[format!("{whoami}@id=4"), format!("{whoami}@id=4")]);
    assert!(!twice.status.success());
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("already held by whoami"), "{err}");
    let other_port = run(&[format!("{whoami}@port=1,id=4")]);
    let err = String::from_utf8_lossy(&other_port.stderr);
    assert!(err.contains("serves UDP port"), "{err}");
    let bad = run(&[format!("{whoami}@id=x")]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("bad match rule"), "{err}");
}
