//! The main job for now: the static-server on a veth pair in a namespace of its own, invoked
//! from a second namespace with `lambdactl invoke`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Two namespaces joined by a veth pair, deleted on drop (also on error).
struct Namespaces {
    lambdactl: PathBuf,
    server: String,
    client: String,
    server_if: String,
    client_if: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Pins live in the host's bpffs: detach before the interfaces disappear.
        for (ns, dev) in [
            (&self.server, &self.server_if),
            (&self.client, &self.client_if),
        ] {
            let _ = Command::new(&self.lambdactl)
                .args(["-n", ns, "detach", "--iface", dev])
                .output();
        }
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build_lambdactl(root: &Path) -> Result<PathBuf> {
    let status = Command::new(super::cargo())
        .current_dir(root)
        .args(["build", "--release", "--quiet", "--package", "lambdactl"])
        .status()
        .context("building lambdactl")?;
    if !status.success() {
        bail!("building lambdactl failed ({status})");
    }
    Ok(root.join("target/release/lambdactl"))
}

pub fn run(root: &Path, count: u32, mode: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo creates network namespaces and attaches XDP programs: run it as root \
             (it needs CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF)"
        );
    }
    let lambdactl_path = build_lambdactl(root)?;
    let object = super::lambdas_dir(root).join("static-server.o");
    let lambdactl = lambdactl_path
        .to_str()
        .context("non-UTF-8 path")?
        .to_owned();
    let lambdactl = lambdactl.as_str();
    let object = object.to_str().context("non-UTF-8 path")?;

    let pid = std::process::id();
    let ns = Namespaces {
        lambdactl: lambdactl_path.clone(),
        server: format!("lnic-demo-{pid}-s"),
        client: format!("lnic-demo-{pid}-c"),
        server_if: format!("lds{pid}"),
        client_if: format!("ldc{pid}"),
    };
    let (server_if, client_if) = (ns.server_if.clone(), ns.client_if.clone());
    println!(
        "==> creating namespaces {} and {} joined by a veth pair",
        ns.server, ns.client
    );
    sh("ip", &["netns", "add", &ns.server])?;
    sh("ip", &["netns", "add", &ns.client])?;
    sh(
        "ip",
        &[
            "link", "add", &server_if, "netns", &ns.server, "type", "veth", "peer", "name",
            &client_if, "netns", &ns.client,
        ],
    )?;
    for (netns, dev, addr) in [
        (&ns.server, &server_if, "10.214.0.1/24"),
        (&ns.client, &client_if, "10.214.0.2/24"),
    ] {
        sh("ip", &["-n", netns, "addr", "add", addr, "dev", dev])?;
        sh("ip", &["-n", netns, "link", "set", dev, "up"])?;
    }
    if mode == "drv" {
        // Native-mode XDP_TX on a veth delivers into the peer's XDP receive queue, which exists
        // only while the peer has an XDP program: give it the static-server on an unused port
        // (it passes everything else).
        sh(
            lambdactl,
            &[
                "-n", &ns.client, "attach", object, "--iface", &client_if, "--mode", "drv",
                "--port", "1",
            ],
        )?;
    }

    println!("==> lambdactl attach {object} --iface {server_if} --mode {mode}");
    print!(
        "{}",
        sh(
            lambdactl,
            &[
                "-n", &ns.server, "attach", object, "--iface", &server_if, "--mode", mode
            ]
        )?
    );
    println!("==> lambdactl ls");
    print!("{}", sh(lambdactl, &["-n", &ns.server, "ls"])?);

    println!("==> lambdactl invoke 10.214.0.1:9000 --lambda 1 --body index.html");
    print!(
        "{}",
        sh(
            lambdactl,
            &[
                "-n",
                &ns.client,
                "invoke",
                "10.214.0.1:9000",
                "--lambda",
                "1",
                "--body",
                "index.html"
            ]
        )?
    );
    let count = count.to_string();
    println!("==> lambdactl invoke … --count {count}");
    print!(
        "{}",
        sh(
            lambdactl,
            &[
                "-n",
                &ns.client,
                "invoke",
                "10.214.0.1:9000",
                "--lambda",
                "1",
                "--body",
                "index.html",
                "--count",
                &count,
            ]
        )?
    );
    println!("==> lambdactl detach --iface {server_if}");
    print!(
        "{}",
        sh(
            lambdactl,
            &["-n", &ns.server, "detach", "--iface", &server_if]
        )?
    );
    Ok(())
}
