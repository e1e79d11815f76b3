//! `lambdactl run`: a lambda served by the VM backend as a plain process. Each λ datagram that
//! arrives on the UDP socket is wrapped in the Ethernet/IP/UDP headers the lambda expects, run
//! in the VM, and, when the lambda returns `XDP_TX`, the datagram it built is sent where its
//! headers say (the client, for every lambda that answers in place).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use lambda_ebpf::wire::LambdaHeader;
use loader::XdpAction;
use loader::dispatch::MatchRule;
use loader::frames::UdpFrame;
use loader::vm::{Engine, VmOptions, VmProgram, Worker, memory::MAX_PACKET};

use crate::RunArgs;

/// Set by SIGINT/SIGTERM; workers poll it between datagrams.
static STOP: AtomicBool = AtomicBool::new(false);

/// How often an idle worker looks at [`STOP`].
const POLL: Duration = Duration::from_millis(100);

/// Fixed MAC addresses for the frames built around datagrams (the lambda swaps them).
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Counters shared by the workers (and read by the control socket's `stats`).
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    answered: AtomicU64,
    passed: AtomicU64,
    dropped: AtomicU64,
    aborted: AtomicU64,
    too_large: AtomicU64,
    faults: AtomicU64,
    send_errors: AtomicU64,
}

impl Counters {
    /// Every counter by name, for the control socket.
    fn to_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "received": get(&self.received),
            "answered": get(&self.answered),
            "passed": get(&self.passed),
            "dropped": get(&self.dropped),
            "aborted": get(&self.aborted),
            "too_large": get(&self.too_large),
            "faults": get(&self.faults),
            "send_errors": get(&self.send_errors),
        })
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One lambda of a `run`: its object, the rule that routes datagrams to it, and the program.
struct Served {
    object: std::path::PathBuf,
    rule: MatchRule,
    program: Arc<VmProgram>,
}

/// `PATH`, `PATH@id=N` or `PATH@port=P,id=N|any`: an object and its match rule. The port, when
/// given, must be the one served (`port`): a VM process serves one UDP socket.
fn parse_lambda(
    text: &str,
    port: u16,
    default_id: Option<u32>,
) -> Result<(std::path::PathBuf, MatchRule)> {
    let Some((path, rule_text)) = text.rsplit_once('@') else {
        return Ok((
            text.into(),
            MatchRule {
                port,
                lambda_id: default_id,
            },
        ));
    };
    let with_port = if rule_text.contains("port=") {
        rule_text.to_owned()
    } else {
        format!("port={port},{rule_text}")
    };
    let rule: MatchRule = with_port
        .parse()
        .with_context(|| format!("`{text}`: bad match rule `{rule_text}`"))?;
    if rule.port != port {
        bail!(
            "`{text}`: this process serves UDP port {port} only, not {}",
            rule.port
        );
    }
    Ok((path.into(), rule))
}

pub(crate) fn run(args: RunArgs) -> Result<ExitCode> {
    // First of all, so a Ctrl-C during loading is not lost (a background job may start with
    // SIGINT ignored).
    // SAFETY: installing async-signal-safe handlers (they only store to an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if args.objects.len() > 1 && args.control.is_some() {
        bail!("--control names one socket: with several lambdas, each opens its own default one");
    }
    if args.objects.len() > 1 && args.lambda_id.is_some() {
        bail!("--lambda-id is for one lambda: give each of several its rule, e.g. a.o@id=7");
    }
    let socket = UdpSocket::bind(args.listen)
        .with_context(|| format!("cannot listen on UDP {}", args.listen))?;
    let local = socket.local_addr()?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    let engine = if args.jit {
        Engine::Jit
    } else {
        Engine::Interpreter
    };
    let mut served: Vec<Served> = Vec::with_capacity(args.objects.len());
    for text in &args.objects {
        let (object, rule) = parse_lambda(text, local.port(), args.lambda_id)?;
        if let Some(other) = served.iter().find(|s| s.rule == rule) {
            bail!(
                "match rule {rule} of {} is already held by {}",
                object.display(),
                other.program.name
            );
        }
        let bytes =
            std::fs::read(&object).with_context(|| format!("cannot read {}", object.display()))?;
        let stem = object.file_stem().map_or_else(
            || object.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        // Two copies of one object get distinct names (their maps and control sockets).
        let mut name = stem.clone();
        let mut n = 2;
        while served.iter().any(|s| s.program.name == name) {
            name = format!("{stem}-{n}");
            n += 1;
        }
        let options = VmOptions {
            engine,
            verify: !args.skip_verify,
            limits: args.limits.limits(),
            budget: args.budget,
            workers,
            params: rule.params(),
        };
        let program = Arc::new(
            VmProgram::load(&bytes, &name, &options)
                .map_err(|e| anyhow::anyhow!("VM backend: {name}: {e}"))?,
        );
        served.push(Served {
            object,
            rule,
            program,
        });
    }
    let rules: Arc<Vec<MatchRule>> = Arc::new(served.iter().map(|s| s.rule).collect());

    socket.set_read_timeout(Some(POLL))?;
    let counters = Arc::new(Counters::default());
    let mut handles = Vec::with_capacity(workers);
    // A worker is built on its own thread (the JIT's compiled code is not `Send`); each
    // reports whether it is ready before the server says it is serving.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for cpu in 0..workers {
        let programs: Vec<Arc<VmProgram>> = served.iter().map(|s| Arc::clone(&s.program)).collect();
        let rules = Arc::clone(&rules);
        let socket = socket.try_clone()?;
        let counters = Arc::clone(&counters);
        let ready = ready_tx.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("lambda-{cpu}"))
                .spawn(move || {
                    let built: Result<Vec<Worker>, _> = programs
                        .into_iter()
                        .map(|program| Worker::new(program, cpu))
                        .collect();
                    match built {
                        Ok(workers) => {
                            let _ = ready.send(Ok(()));
                            serve(workers, &rules, &socket, local, &counters)
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            Ok(())
                        }
                    }
                })?,
        );
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                STOP.store(true, Ordering::SeqCst);
                bail!("VM backend: {e}");
            }
            Err(_) => bail!("a worker thread ended before it was ready"),
        }
    }
    for s in &served {
        println!(
            "serving {} on udp {local} with {workers} worker{} ({engine}{}), lambda id {}",
            s.program.name,
            if workers == 1 { "" } else { "s" },
            if engine == Engine::Interpreter {
                format!(", budget {} instructions per run", args.budget)
            } else {
                String::new()
            },
            s.rule
                .lambda_id
                .map_or_else(|| "any".to_owned(), |id| id.to_string()),
        );
        if let Some(contract) = &s.program.contract {
            println!("{}", crate::verify::summary(contract));
        }
        for (map, n) in &s.program.seeded {
            println!(
                "seeded {map} ({n} record{})",
                if *n == 1 { "" } else { "s" }
            );
        }
    }
    // After the workers are ready, so a client never sees a half-loaded lambda; dropped (and
    // the sockets removed) when this function returns, after the workers stopped.
    let mut controls = Vec::new();
    for s in &served {
        let counters = Arc::clone(&counters);
        let control = crate::vm_control::ControlSocket::start(
            args.control.as_deref(),
            Arc::clone(&s.program),
            std::path::absolute(&s.object).unwrap_or_else(|_| s.object.clone()),
            Box::new(move || counters.to_json()),
            &STOP,
        );
        match control {
            Ok(c) => {
                if served.len() == 1 {
                    println!("control socket {}", c.path().display());
                } else {
                    println!(
                        "control socket of {}: {}",
                        s.program.name,
                        c.path().display()
                    );
                }
                controls.push(c);
            }
            Err(e) => {
                STOP.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
    }
    println!("Ctrl-C stops");
    use std::io::Write as _;
    std::io::stdout().flush()?;

    let mut failed = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(io::Error::other("a worker thread panicked")),
        }
    }
    drop(controls);
    let c = &*counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "stopped: {} received, {} answered, {} passed, {} dropped, {} aborted, {} too large, {} faults, {} send errors",
        get(&c.received),
        get(&c.answered),
        get(&c.passed),
        get(&c.dropped),
        get(&c.aborted),
        get(&c.too_large),
        get(&c.faults),
        get(&c.send_errors)
    );
    for s in &served {
        print_sdk_counts(&s.program);
    }
    if let Some(e) = failed {
        bail!("a worker failed: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The SDK's per-action and per-status counts (`LNIC_STATS`, one copy per worker), as
/// `lambdactl stats` shows them for an attached lambda; nothing for a lambda without the SDK.
fn print_sdk_counts(program: &VmProgram) {
    let Some(map) = program.map(lambda_ebpf::stats::MAP_NAME) else {
        return;
    };
    match loader::kernel::sum_slots(map.as_ref()) {
        Ok(snapshot) => {
            let actions: Vec<String> = lambda_ebpf::stats::ACTION_NAMES
                .iter()
                .zip(snapshot.actions)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            let statuses: Vec<String> = lambda_ebpf::wire::Status::ALL
                .iter()
                .zip(snapshot.statuses)
                .map(|(status, n)| format!("{} {n}", status.name()))
                .collect();
            println!(
                "lambda counts ({}): {} invocations; {}; responses: {}; not λ requests {}",
                lambda_ebpf::stats::MAP_NAME,
                snapshot.invocations,
                actions.join(", "),
                statuses.join(", "),
                snapshot.not_requests
            );
        }
        Err(e) => eprintln!(
            "lambdactl: cannot read {}: {e}",
            lambda_ebpf::stats::MAP_NAME
        ),
    }
}

/// One worker's loop: receive, pick the lambda by the match rules (as the dispatcher does),
/// wrap, run, answer.
fn serve(
    mut workers: Vec<Worker>,
    rules: &[MatchRule],
    socket: &UdpSocket,
    local: SocketAddr,
    counters: &Counters,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    while !STOP.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error from an earlier send (the client went away): not ours to stop for.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let lambda_id = LambdaHeader::decode(&buf[..len])
            .ok()
            .map(|h| h.lambda_id());
        let Some(worker) = MatchRule::select(rules.iter().zip(0..), local.port(), lambda_id)
            .and_then(|at: usize| workers.get_mut(at))
        else {
            // No rule: what the dispatcher passes to the host stack; nobody else listens here.
            counters.passed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let frame = UdpFrame {
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            src: peer,
            dst: SocketAddr::new(server_ip(local.ip(), peer.ip()), local.port()),
            payload: buf[..len].to_vec(),
        };
        let packet = match frame.encode() {
            Ok(p) if p.len() <= MAX_PACKET => p,
            _ => {
                counters.too_large.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let summary = match worker.run_in_place(&packet) {
            Ok(summary) => summary,
            Err(e) => {
                // A runtime fault ends this request, not the server; say which and where.
                if counters.faults.fetch_add(1, Ordering::Relaxed) < 10 {
                    let line = e
                        .insn()
                        .and_then(|insn| worker.program().line(insn))
                        .map(|l| format!(" (at {l})"))
                        .unwrap_or_default();
                    eprintln!("lambdactl: lambda fault on a request from {peer}: {e}{line}");
                }
                continue;
            }
        };
        for line in worker.log() {
            eprintln!("trace: {line}");
        }
        match summary.action {
            XdpAction::Tx => match UdpFrame::decode(worker.output()) {
                Ok(reply) => {
                    let target = unmap(reply.dst, local);
                    match socket.send_to(&reply.payload, target) {
                        Ok(_) => counters.answered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counters.send_errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
                Err(e) => {
                    if counters.faults.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("lambdactl: the lambda transmitted a frame that is not UDP: {e}");
                    }
                }
            },
            XdpAction::Pass => {
                // There is no host stack behind the VM: a passed datagram is not for a lambda.
                counters.passed.fetch_add(1, Ordering::Relaxed);
            }
            XdpAction::Drop => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counters.aborted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// The server address to put in the frame: the socket's own, or, for a wildcard socket, the
/// loopback address of the peer's family (the lambda only swaps it into the reply's source).
fn server_ip(local: IpAddr, peer: IpAddr) -> IpAddr {
    if !local.is_unspecified() && local.is_ipv4() == peer.is_ipv4() {
        return local;
    }
    match peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// A dual-stack IPv6 socket reports IPv4 peers as mapped addresses; send back the same way.
fn unmap(target: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (target.ip(), local.ip()) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), target.port())
        }
        _ => target,
    }
}
