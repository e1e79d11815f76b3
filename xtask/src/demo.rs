//! The main job. By default: `lambdactl gateway` with the samples deployed on the best backend
//! this machine allows (XDP in namespaces of its own when root, else the userspace VM), called
//! over HTTP with curl (or a built-in client when curl is missing), then stopped.
//!
//! With `--udp`, the λ protocol without the gateway: the static-server served by the VM on
//! loopback (`--backend vm`, interpreter then JIT) or attached with XDP to a veth pair
//! (`--backend xdp`, root), invoked with `lambdactl invoke`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::gateway::{GatewayChild, http};
use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};

/// The gateway demo: the samples behind the OpenFaaS API, called with curl.
pub fn run_gateway(root: &Path, backend: &str) -> Result<()> {
    let lambdactl = build_lambdactl(root)?;
    let dir = std::env::temp_dir().join(format!("lnic-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        // Basic auth as OpenFaaS has it: a throwaway password for this run.
        let password = format!(
            "demo-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                % 0xffff_ffff
        );
        let auth_file = dir.join("credentials");
        std::fs::write(&auth_file, format!("admin:{password}\n"))?;
        let auth_file = auth_file.to_str().context("non-UTF-8 path")?;
        let args = [
            "--deploy-samples",
            "--backend",
            backend,
            "--auth-file",
            auth_file,
        ];
        println!(
            "==> lambdactl gateway --listen 127.0.0.1:0 {}",
            args.join(" ")
        );
        let gateway = GatewayChild::start(&lambdactl, &args)?;
        for line in &gateway.banner {
            println!("{line}");
        }
        let base = format!("http://{}", gateway.addr);
        let user = format!("admin:{password}");
        let curl = Command::new("curl").arg("--version").output().is_ok();
        let call = |method: &str, path: &str, body: &str, auth: bool| -> Result<()> {
            let url = format!("{base}{path}");
            let mut shown = vec!["curl", "-s"];
            if auth {
                shown.extend_from_slice(&["-u", "admin:…"]);
            }
            if method != "GET" && method != "POST" {
                shown.extend_from_slice(&["-X", method]);
            }
            let quoted = format!("'{body}'");
            if !body.is_empty() {
                shown.extend_from_slice(&["-d", if body.contains(' ') { &quoted } else { body }]);
            }
            shown.push(&url);
            println!("==> {}", shown.join(" "));
            let (status, text) = if curl {
                let mut args = vec!["-s", "-w", "\n%{http_code}"];
                if auth {
                    args.extend_from_slice(&["-u", &user]);
                }
                if method != "GET" && method != "POST" {
                    args.extend_from_slice(&["-X", method]);
                }
                if !body.is_empty() {
                    args.extend_from_slice(&["-d", body]);
                }
                args.push(&url);
                let out = sh(Path::new("curl"), &args)?;
                let (text, code) = out.rsplit_once('\n').unwrap_or(("", &out));
                (code.trim().parse().unwrap_or(0), text.to_owned())
            } else {
                let header = format!("Basic {}", base64(user.as_bytes()));
                http(
                    gateway.addr,
                    method,
                    path,
                    auth.then_some(header.as_str()),
                    body.as_bytes(),
                )?
            };
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            println!("    (HTTP {status})");
            Ok(())
        };
        call("GET", "/system/functions", "", true)?;
        call("POST", "/function/static-server", "index.html", false)?;
        call("POST", "/function/static-server", "missing.html", false)?;
        call("POST", "/function/echo", "hello, lambda", false)?;
        call("POST", "/function/counter", "", false)?;
        call("POST", "/function/counter", "", false)?;
        call("GET", "/system/function/counter", "", true)?;
        println!("(and once without credentials: /system/* needs basic auth)");
        call("GET", "/system/functions", "", false)?;
        println!("==> stopping the gateway (it removes every function it deployed)");
        drop(gateway);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Standard base64, for the Authorization header of the built-in client.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The VM demo: no privileges needed.
pub fn run_vm(root: &Path, count: u32) -> Result<()> {
    let lambdactl = build_lambdactl(root)?;
    let object = super::lambdas_dir(root).join("static-server.o");
    let object = object.to_str().context("non-UTF-8 path")?;
    for engine in ["interpreter", "jit"] {
        let mut args = vec!["run", object, "--listen", "127.0.0.1:0", "--workers", "2"];
        if engine == "jit" {
            args.push("--jit");
        }
        println!("==> lambdactl {}", args.join(" "));
        let mut child = Command::new(&lambdactl)
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting lambdactl run")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        print!("{first}");
        let Some(port) = first
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("lambdactl run did not say where it listens: {first:?}");
        };
        let target = format!("127.0.0.1:{port}");
        let result = (|| -> Result<()> {
            println!("==> lambdactl invoke {target} --lambda 1 --body index.html");
            let invoke = ["invoke", &target, "--lambda", "1", "--body", "index.html"];
            print!("{}", sh(&lambdactl, &invoke)?);
            let count = count.to_string();
            println!("==> lambdactl invoke {target} … --count {count}");
            let mut counted = invoke.to_vec();
            counted.extend_from_slice(&["--count", &count]);
            print!("{}", sh(&lambdactl, &counted)?);
            Ok(())
        })();
        // SAFETY: signalling the child we started, by its PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        child.wait()?;
        for line in stdout.lines() {
            let line = line?;
            if line.starts_with("stopped:") {
                println!("{line}");
            }
        }
        result?;
    }
    println!(
        "(`cargo xtask demo --udp --backend xdp`, as root, runs the same lambda in the kernel's XDP path)"
    );
    Ok(())
}

/// The XDP demo: root, veth pair in network namespaces.
pub fn run(root: &Path, count: u32, mode: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo creates network namespaces and attaches XDP programs: run it as root \
             (it needs CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF)"
        );
    }
    let lambdactl = build_lambdactl(root)?;
    let object = super::lambdas_dir(root).join("static-server.o");
    let object = object.to_str().context("non-UTF-8 path")?;

    let pair = VethPair::create(&lambdactl, "demo", "")?;
    println!(
        "==> namespaces {} ({SERVER_ADDR}) and {} joined by a veth pair",
        pair.server, pair.client
    );
    println!(
        "==> lambdactl attach {object} --iface {} --mode {mode}",
        pair.server_if
    );
    print!("{}", pair.attach_server(object, mode)?);
    println!("==> lambdactl ls");
    print!("{}", pair.lambdactl_in(&pair.server, &["ls"])?);

    let target = format!("{SERVER_ADDR}:9000");
    let invoke = ["invoke", &target, "--lambda", "1", "--body", "index.html"];
    println!("==> lambdactl invoke {target} --lambda 1 --body index.html");
    print!("{}", pair.lambdactl_in(&pair.client, &invoke)?);
    let count = count.to_string();
    println!("==> lambdactl invoke … --count {count}");
    let mut counted = invoke.to_vec();
    counted.extend_from_slice(&["--count", &count]);
    print!("{}", pair.lambdactl_in(&pair.client, &counted)?);

    println!("==> lambdactl detach --iface {}", pair.server_if);
    print!(
        "{}",
        pair.lambdactl_in(&pair.server, &["detach", "--iface", &pair.server_if])?
    );
    Ok(())
}
