//! `lambdactl gateway`: the OpenFaaS-compatible HTTP gateway (the `gateway` crate), started
//! with this very binary as the one its backends run.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use gateway::{BackendChoice, BackendKind, Config, Credentials, Gateway};

/// The samples `--deploy-samples` deploys, each under its own name, when built.
const SAMPLES: [&str; 4] = ["static-server", "echo", "counter", "grayscale"];

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// XDP in native mode when root (generic mode if no peer helper), else the VM.
    Auto,
    /// XDP, native (driver) mode, on veth pairs in namespaces the gateway creates.
    Drv,
    /// XDP, generic (skb) mode, likewise.
    Skb,
    /// XDP, each interface's functions in one coalesced program (`deploy --mode coalesced`;
    /// native mode with the peer helper, else generic), likewise.
    Coalesced,
    /// `lambdactl run` children on loopback ports: no root needed.
    Vm,
    /// `lambdactl baseline` children on loopback ports: each workload as a plain native UDP
    /// server (static-server, memcached, grayscale), the benchmarks' bare-metal column.
    Native,
}

#[derive(Args)]
pub(crate) struct GatewayArgs {
    /// HTTP address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Deploy the built samples (static-server, echo, counter, grayscale: those that exist)
    /// at start, each under its own name.
    #[arg(long)]
    deploy_samples: bool,
    /// Deploy this built sample at start (repeatable).
    #[arg(long, value_name = "NAME")]
    deploy: Vec<String>,
    /// The default backend for functions whose deployment does not name one with the
    /// `lambda-nic.backend` annotation.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Serve /system/* without basic auth.
    #[arg(long, conflicts_with = "auth_file")]
    no_auth: bool,
    /// Basic-auth credentials: a file with one line `user:password` (default: the
    /// LNIC_GATEWAY_USER and LNIC_GATEWAY_PASSWORD environment variables).
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Where built samples are found by name (default: target/lambdas beside this binary's
    /// target directory).
    #[arg(long, value_name = "DIR")]
    samples_dir: Option<PathBuf>,
    /// How long a call waits for the lambda's answer before its one retransmission (and
    /// again after it), in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Largest invocation body, in bytes (larger: 413).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_body: usize,
    /// Worker threads of each VM-served function.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    vm_workers: u64,
    /// The memcached server (its UDP address, memcached `-U PORT`) the memcached workload
    /// calls, on every backend: the VM's and XDP lambdas get it in their `CONFIG` map (XDP
    /// through a relay the gateway runs in its client namespace, where the lambda's `XDP_TX`
    /// requests arrive), the native baseline as `--memcached`. Without it, deploying the
    /// memcached function fails with an error saying so.
    #[arg(long, value_name = "ADDR:PORT")]
    memcached: Option<std::net::SocketAddrV4>,
}

pub(crate) fn run(args: GatewayArgs) -> Result<ExitCode> {
    let lambdactl = std::env::current_exe().context("cannot find this executable")?;
    let credentials = if args.no_auth {
        None
    } else if let Some(file) = &args.auth_file {
        Some(Credentials::from_file(file)?)
    } else {
        Some(Credentials::from_env()?)
    };
    let samples_dir = args.samples_dir.clone().or_else(|| {
        // target/<profile>/lambdactl → target/lambdas
        let dir = lambdactl.parent()?.parent()?.join("lambdas");
        dir.is_dir().then_some(dir)
    });
    let mut deploy = args.deploy.clone();
    if args.deploy_samples {
        let Some(dir) = &samples_dir else {
            bail!(
                "--deploy-samples: no samples directory (build them with `cargo xtask build-ebpf`, or give --samples-dir)"
            );
        };
        for name in SAMPLES {
            if dir.join(format!("{name}.o")).is_file() && !deploy.iter().any(|d| d == name) {
                deploy.push(name.to_owned());
            }
        }
    }
    let mut config = Config::new(args.listen, lambdactl);
    config.samples_dir = samples_dir;
    config.backend = match args.backend {
        BackendArg::Auto => BackendChoice::Auto,
        BackendArg::Drv => BackendChoice::Fixed(BackendKind::Drv),
        BackendArg::Skb => BackendChoice::Fixed(BackendKind::Skb),
        BackendArg::Coalesced => BackendChoice::Fixed(BackendKind::Coalesced),
        BackendArg::Vm => BackendChoice::Fixed(BackendKind::Vm),
        BackendArg::Native => BackendChoice::Fixed(BackendKind::Native),
    };
    config.credentials = credentials;
    config.call_timeout = std::time::Duration::from_millis(args.timeout_ms);
    config.max_body = args.max_body;
    config.deploy = deploy;
    config.vm_workers = args.vm_workers as usize;
    config.memcached = args.memcached;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let gateway = Gateway::start(config).await?;
        println!(
            "gateway listening on http://{} (default backend {})",
            gateway.local_addr(),
            gateway.default_backend()
        );
        for (name, kind, addr) in gateway.functions() {
            println!("  function {name} on {kind} at udp {addr}");
        }
        println!("Ctrl-C stops (and removes every function)");
        std::io::stdout().flush()?;
        gateway.serve(shutdown_signal()).await?;
        println!("gateway stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
