//! `lambdactl`: the λ-NIC command-line tool. A thin layer over the `loader` crate.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lambda_ebpf::wire::{self, LambdaHeader};
use loader::{AttachMode, Host, KernelError, LambdaParams, Liveness};

mod conformance;
mod gateway_cmd;
mod inspect;
mod invoke;
mod logs_cmd;
mod maps_cmd;
mod serve;
mod stats_cmd;
mod test_run;
mod upgrade;
mod verify;
mod vm_control;

#[derive(Parser)]
#[command(
    name = "lambdactl",
    version,
    about = "λ-NIC: attach eBPF lambdas to interfaces, invoke them, test-run them",
    long_about = "λ-NIC: attach eBPF lambdas to interfaces, invoke them, test-run them.\n\n\
        A lambda is an eBPF ELF object with an XDP program that answers UDP λ requests in place \
        (XDP_TX). `attach` loads it and pins it under bpffs so it keeps running after lambdactl \
        exits; `detach` removes it. attach, detach and test-run need root (CAP_BPF + \
        CAP_NET_ADMIN, or CAP_SYS_ADMIN).",
    after_help = "Environment:\n  LNIC_BPFFS       bpffs mount point for pins (default /sys/fs/bpf; mounted if it is not bpffs)\n  LNIC_STATE_DIR   directory for attachment records (default /run/lnic)"
)]
struct Cli {
    /// Run inside the network namespace NAME (the one `ip netns add NAME` made, /run/netns/NAME).
    ///
    /// Only the network namespace is entered: the mount namespace, and with it the bpffs that
    /// holds the pins, stays shared. (Do not wrap lambdactl in `ip netns exec`, which gives a
    /// private /sys and loses the pins.)
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    netns: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a lambda object and attach its XDP program to an interface.
    ///
    /// The link and the maps are pinned under <bpffs>/lnic/<netns-inode>/<iface>/ so the lambda
    /// stays attached after lambdactl exits. Maps that are already pinned there are reused (their
    /// contents kept); new maps get the object's seed records.
    Attach(AttachArgs),
    /// Replace the lambda on an interface with a new version, keeping its state.
    ///
    /// Every map the new object shares (by name) with the pinned ones must have the same type,
    /// key and value size and at least as many entries, else nothing is loaded. The new program
    /// reuses the pinned maps (new maps are created and seeded) and takes over the pinned link
    /// in one atomic swap: every packet meets either the old or the new program. The old one
    /// stays loaded for `rollback`; maps the new version no longer uses are kept unless --prune.
    Upgrade(upgrade::UpgradeArgs),
    /// Swap the version the last upgrade replaced back in (one level of history).
    Rollback(upgrade::RollbackArgs),
    /// Detach the lambda from an interface and remove its pins and record.
    Detach {
        /// The interface to clear.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// List the lambdas attached in this network namespace, checked against the kernel.
    Ls {
        /// Print JSON (one array of records with a `liveness` field) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send λ requests over UDP and print the answers.
    #[command(
        after_help = "Exit status:\n  0  every request got a response with status OK\n  1  the requests could not be sent (bad address, socket error, …)\n  2  bad command line\n  3  at least one request got no response (timeout, or ICMP port unreachable)\n  4  every request was answered, but at least one status was not OK"
    )]
    Invoke(InvokeArgs),
    /// Run a lambda once (or N times) on a packet with BPF_PROG_TEST_RUN, without attaching it.
    ///
    /// The program is loaded with the given port and lambda id, its maps get the object's seed
    /// records, and the kernel runs it on the packet. Prints the XDP action, the time per run,
    /// the output packet, and the decoded λ response if there is one.
    TestRun(TestRunArgs),
    /// Serve a lambda from this process with the userspace VM: no root, no XDP.
    ///
    /// Receives λ datagrams on a UDP socket, wraps each in the Ethernet/IP/UDP headers the
    /// lambda expects, runs it in the VM (several worker threads, one per-CPU map copy each),
    /// and sends the answer when the lambda returns XDP_TX. Ctrl-C stops it and prints counts.
    Run(RunArgs),
    /// Prove a lambda safe and bounded with the λ-NIC verifier, and print its contract.
    ///
    /// The contract: the most instructions any run can execute, the stack over the deepest call
    /// chain, the memory of every map, the helpers used, and which backends (kernel, nfp, vm)
    /// accept the program — or, for a refusal, the instruction in context, the abstract state of
    /// its registers and the Rust source line. attach, run and test-run make the same check
    /// before loading (--skip-verify to bypass).
    Verify(verify::VerifyArgs),
    /// Show what a lambda object holds, without loading it: programs (with the source line each
    /// starts at), maps, globals, seed records, BTF and line info.
    Inspect {
        /// The lambda object.
        object: PathBuf,
    },
    /// Run a bpf_conformance suite against the kernel, the VM interpreter and the VM JIT.
    ///
    /// Counts per backend: pass, wrong answer, should-have-errored, errored, refused by the VM
    /// (an instruction it lacks: not a wrong answer), rejected by the kernel verifier. Exit
    /// status 1 if the VM gives any wrong answer.
    Conformance(conformance::ConformanceArgs),
    /// List, dump, read and write the pinned maps of attached lambdas, typed by their BTF.
    ///
    /// `maps ls` lists every map; `maps dump|get|set|del LAMBDA/MAP …` (or IFACE/MAP) work on
    /// one, with keys and values shown and parsed as their struct fields, integers and strings.
    Maps(maps_cmd::MapsArgs),
    /// Per attached lambda: invocations, kernel run count and mean run time, and the SDK's
    /// counts per XDP action and λ status.
    ///
    /// The kernel times runs only while BPF statistics are on: --watch turns them on while it
    /// runs (BPF_ENABLE_STATS) and prints what each interval added; a one-shot `stats` shows
    /// what was counted while they were on. Lambdas built without the SDK have only the
    /// kernel's figures.
    Stats(stats_cmd::StatsArgs),
    /// Print what a lambda logged through the SDK (`lambda_ebpf::log`), one line per record:
    /// `<time> <lambda> <text>`. The lambda is named (`logs hello-log`), or given by its
    /// interface (`--iface IF`), or served by `lambdactl run` (`--vm SOCKET|vm:<name>`).
    ///
    /// The time is the record's `bpf_ktime_get_ns` (CLOCK_MONOTONIC) converted to UTC wall
    /// clock with the current offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    ///
    /// Reading consumes: a ring buffer has one reader position, so a line is printed once, by
    /// whichever `lambdactl logs` reads it first. The ring holds 64 KiB (about 430 lines); while
    /// it is full, new lines are dropped.
    Logs(logs_cmd::LogsArgs),
    /// Serve the OpenFaaS gateway API over HTTP: deploy lambdas with POST /system/functions
    /// (faas-cli works), call them with POST|GET /function/NAME.
    ///
    /// Functions run on XDP (veth pairs in network namespaces the gateway creates and removes,
    /// needs root) or in the VM (`lambdactl run` children on loopback ports). The deployment's
    /// `image` is a lambda object path or a built sample's name; the annotations
    /// lambda-nic.backend (drv|skb|vm), lambda-nic.iface and lambda-nic.match (port=P,id=N)
    /// choose where and how it is served. /system/* needs basic auth unless --no-auth.
    Gateway(gateway_cmd::GatewayArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Native (driver) mode, falling back to generic mode if the driver refuses.
    Auto,
    /// Native (driver) mode only.
    Drv,
    /// Generic (skb) mode only; works on every interface.
    Skb,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// BPF_PROG_TEST_RUN in the kernel (needs root).
    Kernel,
    /// The userspace VM (interpreter, or rbpf's JIT with --jit).
    Vm,
    /// Both, compared.
    Both,
}

#[derive(Args)]
struct LambdaArgs {
    /// UDP port the lambda serves.
    #[arg(long, default_value_t = wire::DEFAULT_PORT, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Answer only this lambda id (default: answer any lambda id).
    #[arg(long, value_name = "ID")]
    lambda_id: Option<u32>,
}

impl LambdaArgs {
    fn params(&self) -> LambdaParams {
        LambdaParams {
            port: self.port,
            lambda_id: self.lambda_id,
        }
    }
}

#[derive(Args)]
struct AttachArgs {
    /// The lambda object (an eBPF ELF file, e.g. target/lambdas/static-server.o).
    object: PathBuf,
    /// The interface to attach to.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    mode: ModeArg,
    #[command(flatten)]
    lambda: LambdaArgs,
    /// On verifier rejection, print the kernel's whole log instead of its last lines.
    #[arg(long)]
    full_verifier_log: bool,
    /// Do not run the λ-NIC verifier first (the kernel's verifier still checks the program).
    #[arg(long)]
    skip_verify: bool,
    #[command(flatten)]
    limits: verify::LimitsArgs,
}

#[derive(Args)]
struct InvokeArgs {
    /// Where the lambda is served: IPv4 `10.0.0.1:9000`, IPv6 `[fd00::1]:9000`, or `host:port`.
    target: String,
    /// The lambda id to put in the request header.
    #[arg(long, value_name = "ID")]
    lambda: u32,
    /// Request body, as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body, read from a file.
    #[arg(long, value_name = "F")]
    body_file: Option<PathBuf>,
    /// Send N requests one after the other and print round-trip statistics.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// How long to wait for each response, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout_ms: u64,
}

#[derive(Args)]
struct RunArgs {
    /// The lambda object.
    object: PathBuf,
    /// UDP address to serve on, e.g. 127.0.0.1:9000 or [::]:9000 (port 0 picks a free one; the
    /// lambda is told the bound port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: std::net::SocketAddr,
    /// Use rbpf's JIT instead of the interpreter.
    #[arg(long)]
    jit: bool,
    /// Answer only this lambda id (default: any).
    #[arg(long, value_name = "ID")]
    lambda_id: Option<u32>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Instructions one run may execute in the interpreter before it is stopped (the JIT
    /// refuses programs whose proven bound exceeds it).
    #[arg(long, default_value_t = loader::vm::DEFAULT_BUDGET, value_name = "N")]
    budget: u64,
    /// Do not run the λ-NIC verifier first (interpreter only: it checks memory accesses and
    /// counts instructions at run time; the JIT always needs the verifier).
    #[arg(long)]
    skip_verify: bool,
    /// Where to open the control socket that `lambdactl maps --vm` and `stats --vm` use
    /// (default: `<state dir>/vm/<name>-<pid>.sock`, else under $XDG_RUNTIME_DIR or /tmp).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    #[command(flatten)]
    limits: verify::LimitsArgs,
}

#[derive(Args)]
struct TestRunArgs {
    /// The lambda object.
    object: PathBuf,
    /// The input packet: a raw Ethernet frame, as bytes.
    #[arg(long, value_name = "F", required_unless_present = "request_body")]
    packet_file: Option<PathBuf>,
    /// Instead of --packet-file: build an Ethernet/IPv4/UDP λ request with this body
    /// (10.0.0.2:40000 → 10.0.0.1:PORT, lambda id from --lambda-id or 1).
    #[arg(long, value_name = "TEXT", conflicts_with = "packet_file")]
    request_body: Option<String>,
    /// Run the program N times, each on the original packet; shows the mean (and, in the
    /// kernel, minimum) time per run.
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat: u32,
    /// Where to run it: the kernel (BPF_PROG_TEST_RUN, root), the userspace VM (no root), or
    /// both, comparing action and output bytes (exit status 5 on a difference).
    #[arg(long, value_enum, default_value = "kernel")]
    backend: BackendArg,
    /// With the VM backend: use rbpf's JIT instead of the interpreter.
    #[arg(long)]
    jit: bool,
    /// With the VM interpreter: instructions one run may execute before it is stopped.
    #[arg(long, default_value_t = loader::vm::DEFAULT_BUDGET, value_name = "N")]
    budget: u64,
    /// Do not run the λ-NIC verifier first (the kernel's verifier, or the VM interpreter's
    /// run-time checks, still apply; the JIT always needs the verifier).
    #[arg(long)]
    skip_verify: bool,
    #[command(flatten)]
    limits: verify::LimitsArgs,
    #[command(flatten)]
    lambda: LambdaArgs,
    /// On verifier rejection, print the kernel's whole log instead of its last lines.
    #[arg(long)]
    full_verifier_log: bool,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`lambdactl ls | head`) instead of panicking in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let full_log = match &cli.command {
        Command::Attach(a) => a.full_verifier_log,
        Command::TestRun(t) => t.full_verifier_log,
        _ => false,
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if let Some(KernelError::VerifierRejected { program, log, .. }) =
                err.downcast_ref::<KernelError>()
            {
                eprintln!("lambdactl: error: kernel verifier rejected program `{program}`");
                if full_log {
                    eprintln!("{}", log.full().trim_end());
                } else {
                    eprintln!("{log}");
                    eprintln!("(last lines of the verifier log; --full-verifier-log prints all)");
                }
            } else {
                eprintln!("lambdactl: error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(name) = &cli.netns {
        enter_netns(name)?;
    }
    match cli.command {
        Command::Attach(args) => attach(args),
        Command::Detach { iface } => detach(&iface),
        Command::Upgrade(args) => upgrade::upgrade(args),
        Command::Rollback(args) => upgrade::rollback(args),
        Command::Ls { json } => ls(json),
        Command::Invoke(args) => invoke::invoke(args),
        Command::TestRun(args) => test_run::test_run(args),
        Command::Run(args) => serve::run(args),
        Command::Inspect { object } => inspect::inspect(&object),
        Command::Verify(args) => verify::verify(args),
        Command::Conformance(args) => conformance::run(args),
        Command::Maps(args) => maps_cmd::run(args),
        Command::Stats(args) => stats_cmd::run(args),
        Command::Logs(args) => logs_cmd::run(args),
        Command::Gateway(args) => gateway_cmd::run(args),
    }
}

/// Enters the network namespace `/run/netns/NAME` (network only, unlike `ip netns exec`).
fn enter_netns(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("invalid network namespace name `{name}`");
    }
    let path = Path::new("/run/netns").join(name);
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!(
            "no such network namespace `{name}` ({} does not exist; see `ip netns list`)",
            path.display()
        ),
        _ => anyhow!("cannot open {}: {e}", path.display()),
    })?;
    // SAFETY: a valid fd; CLONE_NEWNET only switches this thread's network namespace, and we
    // are still single-threaded.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM)) {
            bail!(
                "cannot enter network namespace `{name}`: permission denied (needs CAP_SYS_ADMIN; run as root)"
            );
        }
        bail!("cannot enter network namespace `{name}`: {e}");
    }
    Ok(())
}

fn attach(args: AttachArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let mode = match args.mode {
        ModeArg::Auto => AttachMode::Auto,
        ModeArg::Drv => AttachMode::Drv,
        ModeArg::Skb => AttachMode::Skb,
    };
    if !args.skip_verify {
        let contract = verify::check_before_load(
            &args.object,
            &args.lambda.params(),
            verifier::Backend::Kernel,
            &args.limits,
        )?;
        println!("{}", verify::summary(&contract));
    }
    let attached = host.attach(&args.object, &args.iface, mode, &args.lambda.params())?;
    for note in &attached.notes {
        println!("note: {note}");
    }
    if let Some(reason) = &attached.drv_fallback {
        println!("note: native (drv) mode failed, using generic (skb) mode: {reason}");
    }
    let r = &attached.record;
    println!(
        "attached {} ({}) to {} (ifindex {}) in {} mode",
        r.lambda, r.program, r.iface, r.ifindex, r.mode
    );
    println!("  program id {}, link id {}", r.program_id, r.link_id);
    println!(
        "  serves UDP port {}, lambda id {}",
        r.port,
        lambda_id_text(r.lambda_id)
    );
    println!("  link pinned at {}", r.link_pin.display());
    for m in &r.maps {
        let state = if m.reused {
            "reused, contents kept".to_owned()
        } else if m.seeded > 0 {
            format!("new, seeded {} record{}", m.seeded, plural(m.seeded))
        } else {
            "new".to_owned()
        };
        println!(
            "  map {} ({}) pinned at {} ({state})",
            m.name,
            m.map_type,
            m.pin.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn detach(iface: &str) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let detached = host.detach(iface)?;
    match &detached.record {
        Some(r) => println!(
            "detached {} (program id {}) from {}",
            r.lambda, r.program_id, detached.iface
        ),
        None => println!(
            "detached from {} (there was no record, only pins)",
            detached.iface
        ),
    }
    for path in &detached.removed {
        println!("  removed {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn ls(json: bool) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let listed = host.list()?;
    if json {
        let items: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(&l.record).expect("record serializes");
                let (state, detail) = match &l.liveness {
                    Liveness::Live { .. } => ("live", None),
                    Liveness::Replaced { program_id } => (
                        "replaced",
                        Some(format!("link now runs program {program_id}")),
                    ),
                    Liveness::Stale { reason } => ("stale", Some(reason.clone())),
                    Liveness::Unknown { reason } => ("unknown", Some(reason.clone())),
                };
                v["liveness"] = serde_json::json!({ "state": state, "detail": detail });
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        println!("no lambdas attached in this network namespace");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 8]> = listed
        .iter()
        .map(|l| {
            let r = &l.record;
            let maps: Vec<&str> = r.maps.iter().map(|m| m.name.as_str()).collect();
            [
                r.iface.clone(),
                r.mode.to_string(),
                r.program_id.to_string(),
                r.lambda.clone(),
                r.port.to_string(),
                lambda_id_text(r.lambda_id),
                if maps.is_empty() {
                    "-".into()
                } else {
                    maps.join(",")
                },
                match &l.liveness {
                    Liveness::Live { .. } => "live".into(),
                    Liveness::Replaced { program_id } => format!("replaced (prog {program_id})"),
                    Liveness::Stale { reason } => format!("STALE: {reason}"),
                    Liveness::Unknown { reason } => format!("unknown: {reason}"),
                },
            ]
        })
        .collect();
    let header = [
        "IFACE", "MODE", "PROG", "LAMBDA", "PORT", "ID", "MAPS", "STATE",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header.map(String::from));
    for row in &rows {
        print(row);
    }
    Ok(ExitCode::SUCCESS)
}

fn lambda_id_text(id: Option<u32>) -> String {
    id.map(|i| i.to_string()).unwrap_or_else(|| "any".into())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn status_text(h: &LambdaHeader) -> String {
    match h.status() {
        Some(s) => s.name().to_owned(),
        None => format!("status {} (unknown)", h.status_raw()),
    }
}

fn print_body(body: &[u8]) {
    if body.is_empty() {
        return;
    }
    match std::str::from_utf8(body) {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
        Err(_) => print!("{}", hexdump(body)),
    }
}

fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:04x}  {:<47}  |{ascii}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_has_offsets_and_ascii() {
        let dump = hexdump(b"ABCDEFGHIJKLMNOPQ");
        assert_eq!(dump.lines().count(), 2);
        assert!(dump.starts_with("0000  41 42"));
        assert!(dump.lines().nth(1).unwrap().starts_with("0010  51"));
        assert!(dump.contains("|ABCDEFGHIJKLMNOP|"));
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
