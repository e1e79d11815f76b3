//! Two network namespaces joined by a veth pair, for the demo and the benchmarks, and the
//! `lambdactl` binary they drive.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Address of the server end of every pair (each pair is in namespaces of its own).
pub const SERVER_ADDR: &str = "10.215.0.1";
/// Address of the client end.
pub const CLIENT_ADDR: &str = "10.215.0.2";

/// Builds `lambdactl` in release mode and returns its path.
pub fn build_lambdactl(root: &Path) -> Result<PathBuf> {
    println!("==> building lambdactl (release)");
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

/// Runs a command and returns its stdout; fails with its stderr.
pub fn sh(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {} (is it installed?)", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Path::new("ip"), args)
}

/// `server` and `client` namespaces joined by a veth pair with [`SERVER_ADDR`] and
/// [`CLIENT_ADDR`]. Dropping it detaches any lambdas (their pins live in the host's bpffs) and
/// deletes the namespaces it created, also when a step failed half-way.
pub struct VethPair {
    lambdactl: PathBuf,
    pub server: String,
    pub client: String,
    pub server_if: String,
    pub client_if: String,
    /// Namespaces actually created, so drop deletes only ours.
    created: Vec<String>,
}

impl VethPair {
    /// Creates a pair named after `purpose` (e.g. `demo`), this process and `tag`, which keeps
    /// several pairs of one run apart.
    pub fn create(lambdactl: &Path, purpose: &str, tag: &str) -> Result<VethPair> {
        let pid = std::process::id();
        let initial = purpose.chars().next().unwrap_or('x');
        let mut pair = VethPair {
            lambdactl: lambdactl.to_path_buf(),
            server: format!("lnic-{purpose}-{pid}{tag}-s"),
            client: format!("lnic-{purpose}-{pid}{tag}-c"),
            // "l" + initial + pid (≤ 7 digits) + tag + s/c: interface names have ≤ 15 bytes.
            server_if: format!("l{initial}{pid}{tag}s"),
            client_if: format!("l{initial}{pid}{tag}c"),
            created: Vec::new(),
        };
        if pair.server_if.len() > 15 {
            bail!("interface name {} is too long", pair.server_if);
        }
        for ns in [pair.server.clone(), pair.client.clone()] {
            ip(&["netns", "add", &ns])?;
            pair.created.push(ns);
        }
        ip(&[
            "link",
            "add",
            &pair.server_if,
            "netns",
            &pair.server,
            "type",
            "veth",
            "peer",
            "name",
            &pair.client_if,
            "netns",
            &pair.client,
        ])?;
        for (ns, dev, addr) in [
            (&pair.server, &pair.server_if, SERVER_ADDR),
            (&pair.client, &pair.client_if, CLIENT_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// Runs `lambdactl -n <ns> args…`.
    pub fn lambdactl_in(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        sh(&self.lambdactl, &full)
    }

    /// Attaches `object` to the server end in `mode`; returns lambdactl's report.
    pub fn attach_server(&self, object: &str, mode: &str) -> Result<String> {
        if mode == "drv" {
            // Native-mode XDP_TX on a veth delivers into the peer's XDP receive queue, which
            // exists only while the peer has an XDP program: give the client the static-server
            // on an unused port (it passes everything else).
            let helper = Path::new(object).with_file_name("static-server.o");
            let helper = helper.to_str().context("non-UTF-8 path")?;
            self.lambdactl_in(
                &self.client,
                &[
                    "attach",
                    helper,
                    "--iface",
                    &self.client_if,
                    "--mode",
                    "drv",
                    "--port",
                    "1",
                ],
            )?;
        }
        self.lambdactl_in(
            &self.server,
            &["attach", object, "--iface", &self.server_if, "--mode", mode],
        )
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        if self.created.len() == 2 {
            for (ns, dev) in [
                (&self.server, &self.server_if),
                (&self.client, &self.client_if),
            ] {
                let _ = Command::new(&self.lambdactl)
                    .args(["-n", ns, "undeploy", "--all"])
                    .output();
                let _ = Command::new(&self.lambdactl)
                    .args(["-n", ns, "detach", "--iface", dev])
                    .output();
            }
        }
        for ns in &self.created {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
