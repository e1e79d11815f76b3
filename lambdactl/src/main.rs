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

mod baseline;
mod conformance;
mod deploy_cmd;
mod gateway_cmd;
mod handle;
mod image;
mod inspect;
mod invoke;
mod logs_cmd;
mod maps_cmd;
mod objects;
mod offload_cmd;
mod serve;
mod stats_cmd;
mod test_run;
mod upgrade;
mod verify;
mod vm_control;
mod watchdog;

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
    /// Deploy a lambda behind an interface's dispatcher, next to the lambdas already there.
    ///
    /// The dispatcher (one XDP program per interface, installed by the first deploy) matches
    /// each UDP datagram's destination port and λ lambda id against the rules and tail-calls
    /// the lambda's slot. Deploy verifies the object (and bounds dispatcher plus lambda), loads
    /// it with the rule's port and id, pins its own maps under its name, fills its slot and
    /// only then adds its rule, so no packet meets an empty slot. Conflicting rules are
    /// refused with the name of the lambda that holds the rule.
    ///
    /// With --mode coalesced the interface instead runs one program of all its coalesced
    /// lambdas (no tail calls), rebuilt, verified and swapped in atomically on every change,
    /// each lambda's maps kept across rebuilds; with --lower, each lambda lowered for a NIC
    /// model first, so the host runs the program that NIC would get.
    Deploy(deploy_cmd::DeployArgs),
    /// Remove a deployed lambda: its rule, then its slot, then its pins. The others keep
    /// running; the last one on an interface takes the dispatcher with it. A coalesced lambda:
    /// its interface's program is rebuilt without it and swapped in, then its pins go.
    Undeploy(deploy_cmd::UndeployArgs),
    /// Detach the lambda from an interface and remove its pins and record.
    Detach {
        /// The interface to clear.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// List the lambdas attached or deployed in this network namespace, checked against the
    /// kernel: mode, program id, rule, maps, calls.
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
    /// Serve lambdas from this process with the userspace VM: no root, no XDP.
    ///
    /// Receives λ datagrams on a UDP socket, picks the lambda by the same match rules as
    /// `deploy` (`a.o@id=7 b.o`: the exact id first, else the any-id lambda), wraps each in
    /// the Ethernet/IP/UDP headers the lambda expects, runs it in the VM (several worker
    /// threads, one per-CPU map copy each), and sends the answer when the lambda returns
    /// XDP_TX. Ctrl-C stops it and prints counts.
    Run(RunArgs),
    /// Prove a lambda safe and bounded with the λ-NIC verifier, and print its contract.
    ///
    /// The contract: the most instructions any run can execute, the stack over the deepest call
    /// chain, the memory of every map, the helpers used, and which backends (kernel, nfp, vm)
    /// accept the program — or, for a refusal, the instruction in context, the abstract state of
    /// its registers and the Rust source line. attach, run and test-run make the same check
    /// before loading (--skip-verify to bypass).
    Verify(verify::VerifyArgs),
    /// Plan a NIC offload without the NIC: whether a set of lambdas fits a model, how many
    /// cores one copy of the set takes, and each lambda's worst-case cycles per request.
    ///
    /// Uses the verifier's contracts (instructions executed, code size, stack, maps) with the
    /// nfp profile and the model's limits. Lambdas sharing a core are counted as one coalesced
    /// program with a dispatch prologue (first-fit by decreasing size). Cycles are
    /// max instructions executed × the model's cycles per instruction + map call sites × its
    /// cycles per map call: the instruction bound is sound, the per-instruction costs are
    /// planning estimates. Exit status 1 when the set does not fit.
    Plan(offload_cmd::PlanArgs),
    /// Probe whether an interface can offload XDP programs: its driver and hw-tc-offload
    /// feature, and the conclusive test — loading a trivial program bound to it (never
    /// attached, closed at once). Exit status 1 when it cannot.
    Probe(offload_cmd::ProbeArgs),
    /// Coalesce lambdas into one program without tail calls (the workload optimizer) and
    /// report: instruction slots before and after, merged functions, removed code, merged
    /// maps, what our verifier says (kernel and nfp profiles), and how the lambdas split over
    /// the NIC model's cores: each core's own coalesced program within its instruction budget
    /// (functions the lambdas share counted once), judged by the nfp profile and, with
    /// `--kernel`, loaded into the kernel. Nothing is attached (the dispatcher's `deploy --mode
    /// coalesced` does that). Exit status 1 when our verifier rejects the coalesced program.
    Coalesce(offload_cmd::CoalesceArgs),
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
    /// kernel's figures. Deployed lambdas (behind a dispatcher, or in a coalesced program) have
    /// their own SDK counts; the kernel's figures are their interface's program's, on a row of
    /// its own (`[dispatcher: …]`, `[coalesced program: …]`): the kernel counts runs of the
    /// program a packet enters, not of tail-call targets or functions.
    Stats(stats_cmd::StatsArgs),
    /// Print what a lambda logged through the SDK (`lambda_ebpf::log`), one line per record:
    /// `<time> <lambda> <text>`. The lambda is named (`logs hello-log`, or a deployed lambda's
    /// --name), or given by its interface (`--iface IF`), or served by `lambdactl run`
    /// (`--vm SOCKET|vm:<name>`).
    ///
    /// The time is the record's `bpf_ktime_get_ns` (CLOCK_MONOTONIC) converted to UTC wall
    /// clock with the current offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    ///
    /// Reading consumes: a ring buffer has one reader position, so a line is printed once, by
    /// whichever `lambdactl logs` reads it first. The ring holds 64 KiB (about 430 lines); while
    /// it is full, new lines are dropped.
    Logs(logs_cmd::LogsArgs),
    /// Serve a workload as a plain native UDP server: the benchmarks' baseline.
    ///
    /// Same wire format and the same protocol code as the workload's lambda, with ordinary
    /// sockets: `static-server` answers `index.html` with the lambda's default page;
    /// `memcached` forwards `get <key>` / `set <key> <value>` to a memcached server over UDP;
    /// `grayscale` converts each image fragment as the grayscale lambda does. Runs until killed.
    Baseline(baseline::BaselineArgs),
    /// Serve HTTP like an OpenFaaS-classic watchdog: fork the handler command for EVERY
    /// request, its stdin the request body, its stdout the answer (200), its stderr the
    /// answer when it exits non-zero (500). The benchmarks' container column runs
    /// `watchdog -- lambdactl handle WORKLOAD` in a container, the path the paper's 45 ms
    /// container figure measured.
    ///
    /// The handler gets Http_Method, Http_Path, Http_Query and Http_<Header> variables;
    /// GET /_/health answers without forking. A body over --max-body is refused (413), a
    /// handler over --timeout-ms is killed (504).
    Watchdog(watchdog::WatchdogArgs),
    /// Handle ONE request of a workload as a process: the body on stdin, the answer on
    /// stdout; the handler `lambdactl watchdog` forks.
    ///
    /// The work is the native baseline's, with the same shared protocol code: `static-server`
    /// answers the object named by the body; `memcached` sends `get KEY` / `set KEY VALUE` to a
    /// memcached server over UDP and prints the value (or STORED's empty answer);
    /// `grayscale` converts one image fragment. Any other answer than OK: a line on stderr
    /// naming the status and why, exit status 1.
    Handle(handle::HandleArgs),
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
    /// hw, then drv, then skb: the first that works, saying why each earlier one fell through.
    Auto,
    /// Offloaded to the NIC (XDP_FLAGS_HW_MODE): the object is first lowered for the --nic
    /// model (the NFP lowering pass of `coalesce --lower`: log lines become no-ops, .rodata
    /// is folded into the code, per-CPU counters become atomic adds on plain maps) and the
    /// lowered program checked with the verifier's nfp profile and the model's rules, then
    /// the device is probed; refused before loading anything when any says no. The lowered
    /// program is what is loaded (prog_ifindex), with its maps as the lowering left them
    /// (map_ifindex).
    Hw,
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
    /// The NIC model `--mode hw|auto` lowers the program for and checks it against (see
    /// `lambdactl plan --help`).
    #[arg(long, value_name = "MODEL", default_value = "agilio-cx")]
    nic: String,
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
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["body_file", "image"])]
    body: Option<String>,
    /// Request body, read from a file.
    #[arg(long, value_name = "F", conflicts_with = "image")]
    body_file: Option<PathBuf>,
    /// Send this PNG to the grayscale lambda, split into fragments (resent when unanswered),
    /// and write the gray result to --out. Up to 4096 × 4096; alpha is ignored.
    #[arg(long, value_name = "PNG", requires = "out", conflicts_with = "count")]
    image: Option<PathBuf>,
    /// With --image: where to write the gray PNG.
    #[arg(long, value_name = "PNG", requires = "image")]
    out: Option<PathBuf>,
    /// With --image: fragments in flight at once.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    window: u32,
    /// With --image: resend a fragment unanswered after this many milliseconds.
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    retransmit_ms: u64,
    /// With --image: give up on a fragment after this many sends.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_sends: u32,
    /// Send N requests one after the other and print round-trip statistics.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// How long to wait for each response, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout_ms: u64,
}

#[derive(Args)]
struct RunArgs {
    /// The lambda objects, each `PATH` (every lambda id) or `PATH@id=N` (one id): several
    /// lambdas behind the same match rules as `deploy` uses, routed by the λ lambda id; the
    /// exact rule wins over an any-id one.
    #[arg(required = true, value_name = "OBJECT[@id=N]")]
    objects: Vec<String>,
    /// UDP address to serve on, e.g. 127.0.0.1:9000 or [::]:9000 (port 0 picks a free one; the
    /// lambda is told the bound port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: std::net::SocketAddr,
    /// Use rbpf's JIT instead of the interpreter.
    #[arg(long)]
    jit: bool,
    /// With one lambda: answer only this lambda id (default: any; same as OBJECT@id=ID).
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
        Command::Deploy(args) => deploy_cmd::deploy(args),
        Command::Undeploy(args) => deploy_cmd::undeploy(args),
        Command::Plan(args) => offload_cmd::plan(args),
        Command::Probe(args) => offload_cmd::probe(args),
        Command::Coalesce(args) => offload_cmd::coalesce(args),
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
        Command::Baseline(args) => baseline::run(args),
        Command::Watchdog(args) => watchdog::run(args),
        Command::Handle(args) => handle::run(args),
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
        ModeArg::Hw => AttachMode::Drv,
        ModeArg::Drv => AttachMode::Drv,
        ModeArg::Skb => AttachMode::Skb,
    };
    let model = offload_cmd::nic_model(&args.nic)?;
    if matches!(args.mode, ModeArg::Hw) {
        // Lowered for the NIC first, then our verifier's nfp profile (it also runs the
        // kernel's) on the lowered program: the one that is loaded.
        let outcome =
            offload_cmd::attach_hw(&host, &args, model, nic_offload::CheckOrder::VerifyFirst)?;
        print_attached(&outcome);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.skip_verify {
        let contract = verify::check_before_load(
            &args.object,
            &args.lambda.params(),
            verifier::Backend::Kernel,
            &args.limits,
        )?;
        println!("{}", verify::summary(&contract));
    }
    if matches!(args.mode, ModeArg::Auto) {
        match offload_cmd::attach_hw(&host, &args, model, nic_offload::CheckOrder::ProbeFirst) {
            Ok(outcome) => {
                print_attached(&outcome);
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if e.falls_through() => {
                println!("note: hw offload not used, trying drv: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let attached = host.attach(&args.object, &args.iface, mode, &args.lambda.params())?;
    print_attached(&attached);
    Ok(ExitCode::SUCCESS)
}

fn print_attached(attached: &loader::Attached) {
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
        let mut items: Vec<serde_json::Value> = listed
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
                v["kind"] = "attached".into();
                v["liveness"] = serde_json::json!({ "state": state, "detail": detail });
                v
            })
            .collect();
        items.extend(deploy_cmd::deployed_json(&host)?);
        items.extend(deploy_cmd::coalesced_json(&host)?);
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !listed.is_empty() {
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|l| {
                let r = &l.record;
                let maps: Vec<&str> = r.maps.iter().map(|m| m.name.as_str()).collect();
                vec![
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
                        Liveness::Replaced { program_id } => {
                            format!("replaced (prog {program_id})")
                        }
                        Liveness::Stale { reason } => format!("STALE: {reason}"),
                        Liveness::Unknown { reason } => format!("unknown: {reason}"),
                    },
                ]
            })
            .collect();
        print_table(
            &[
                "IFACE", "MODE", "PROG", "LAMBDA", "PORT", "ID", "MAPS", "STATE",
            ],
            &rows,
        );
    }
    let deployed = deploy_cmd::print_deployed(&host)? + deploy_cmd::print_coalesced_ls(&host)?;
    if listed.is_empty() && deployed == 0 {
        println!("no lambdas attached or deployed in this network namespace");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `rows` under `header`, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&mut header.iter().copied());
    for row in rows {
        print(&mut row.iter().map(String::as_str));
    }
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
