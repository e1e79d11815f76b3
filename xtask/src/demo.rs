//! The main job. By default (`--backend vm`, no root, no NIC): the static-server served by the
//! userspace VM on loopback, interpreter then JIT, invoked with `lambdactl invoke`. With
//! `--backend xdp` (root): the static-server attached with XDP to a veth pair in a namespace of
//! its own, invoked from a second namespace.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};

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
        "(`cargo xtask demo --backend xdp`, as root, runs the same lambda in the kernel's XDP path)"
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
