//! The main job for now: the static-server on a veth pair in a namespace of its own, invoked
//! from a second namespace with `lambdactl invoke`.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl};

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
