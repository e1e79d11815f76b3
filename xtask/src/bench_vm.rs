//! `cargo xtask bench vm`: the VM backend side by side with the kernel, from one run.
//!
//! 1. ns per invocation of the static-server on a λ request for `index.html`:
//!    BPF_PROG_TEST_RUN (kernel-measured mean), the VM interpreter and the VM JIT (wall clock
//!    per run in `lambdactl test-run --backend vm`, which includes copying the packet into the
//!    frame). The three are interleaved in rounds (order rotating); medians across rounds, and
//!    ratios to the kernel.
//! 2. Round trip of `lambdactl invoke` against the static-server served by XDP (drv mode) and by
//!    `lambdactl run` (interpreter, JIT), every one on the same kind of veth pair between two
//!    fresh network namespaces, so only the server side differs. Interleaved rounds, medians.
//!
//! Everything runs pinned to CPU 0 (this process and, by inheritance, every server and client
//! it starts): unpinned, round trips on this 2-core VM are bimodal — when client and server
//! land on different CPUs, each wakeup crosses CPUs and a round trip costs ≈ 55 µs instead of
//! ≈ 13 µs. On one CPU the comparison is like for like: XDP also runs on the sender's CPU.
//!
//! Needs root (test runs and namespaces). The header names the machine and commit; the same
//! data goes to `target/bench/vm-<commit>.json`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::{Header, median, parse_ns_per_run, parse_round_trip, require_root};
use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};

/// What `cargo xtask bench vm` measures; see the module docs.
pub struct VmOptions {
    /// Runs per engine per round for ns/invocation.
    pub repeat: u32,
    /// Rounds for ns/invocation.
    pub rounds: u32,
    /// Requests per server kind for the round trip, spread over `rtt_rounds`.
    pub count: u32,
    pub rtt_rounds: u32,
}

/// The engines of part 1, as `lambdactl test-run` arguments.
const ENGINES: [(&str, &[&str]); 3] = [
    ("kernel", &["--backend", "kernel"]),
    ("vm-interpreter", &["--backend", "vm"]),
    ("vm-jit", &["--backend", "vm", "--jit"]),
];
/// The servers of part 2.
const SERVERS: [&str; 3] = ["xdp-drv", "vm-interpreter", "vm-jit"];
const WARMUP: u32 = 200;
/// The CPU the bench and everything it starts run on.
pub(crate) const PINNED_CPU: usize = 0;

/// Pins this process (and what it starts later) to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

pub fn vm(root: &Path, opts: &VmOptions) -> Result<()> {
    require_root()?;
    if opts.repeat == 0 || opts.rounds == 0 || opts.count == 0 || opts.rtt_rounds == 0 {
        bail!("--repeat, --rounds, --count and --rtt-rounds must be at least 1");
    }
    let lambdactl = build_lambdactl(root)?;
    let object = super::lambdas_dir(root).join("static-server.o");
    if !object.exists() {
        bail!("{} is missing after build-ebpf", object.display());
    }
    let header = Header::collect(root);
    println!("==> {}", header.line_for("vm"));
    pin_to_cpu(PINNED_CPU)?;
    println!("==> pinned to CPU {PINNED_CPU}, with every server and client it starts");

    // Part 1: ns per invocation.
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); ENGINES.len()];
    for round in 0..opts.rounds {
        for k in 0..ENGINES.len() {
            let i = (k + round as usize) % ENGINES.len();
            let (name, flags) = ENGINES[i];
            let value = test_run(&lambdactl, &object, flags, opts.repeat)
                .with_context(|| format!("test-run on {name}, round {}", round + 1))?;
            ns[i].push(value as f64);
        }
        let line: Vec<String> = ENGINES
            .iter()
            .zip(&ns)
            .map(|((name, _), v)| format!("{name} {:.0} ns", v.last().copied().unwrap_or(0.0)))
            .collect();
        println!("    round {}: {}", round + 1, line.join(", "));
    }

    // Part 2: round trips.
    let per_round = opts.count.div_ceil(opts.rtt_rounds);
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); SERVERS.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); SERVERS.len()];
    for round in 0..opts.rtt_rounds {
        for k in 0..SERVERS.len() {
            let i = (k + round as usize) % SERVERS.len();
            let (a, b) = round_trip(&lambdactl, &object, SERVERS[i], round, per_round)
                .with_context(|| format!("round trip, {}, round {}", SERVERS[i], round + 1))?;
            println!(
                "    round {} {}: {per_round} requests, p50 {a:.1} µs, p99 {b:.1} µs",
                round + 1,
                SERVERS[i]
            );
            p50[i].push(a);
            p99[i].push(b);
        }
    }

    let kernel_ns = median(&ns[0]);
    let mut text = String::new();
    let _ = writeln!(text, "{}", header.line_for("vm"));
    let _ = writeln!(
        text,
        "static-server, ns per invocation ({} runs per engine per round, medians of {} rounds)",
        opts.repeat, opts.rounds
    );
    for ((name, _), values) in ENGINES.iter().zip(&ns) {
        let m = median(values);
        let _ = writeln!(
            text,
            "  {name:<15} {m:>7.0} ns   {:>5.2}× kernel",
            m / kernel_ns
        );
    }
    let _ = writeln!(
        text,
        "round trip over a veth pair, client and server pinned to CPU {PINNED_CPU} ({} requests per server, medians of {} rounds)",
        per_round * opts.rtt_rounds,
        opts.rtt_rounds
    );
    let xdp50 = median(&p50[0]);
    for (i, name) in SERVERS.iter().enumerate() {
        let (a, b) = (median(&p50[i]), median(&p99[i]));
        let _ = writeln!(
            text,
            "  {name:<15} p50 {a:>6.1} µs   p99 {b:>6.1} µs   p50 {:>5.2}× xdp",
            a / xdp50
        );
    }
    println!();
    print!("{text}");

    let report = json!({
        "suite": "vm",
        "pinned_cpu": PINNED_CPU,
        "machine": header.json(),
        "repeat": opts.repeat,
        "rounds": opts.rounds,
        "ns_per_invocation": ENGINES.iter().zip(&ns).map(|((name, _), v)| json!({
            "engine": name, "median_ns": median(v), "rounds": v,
        })).collect::<Vec<_>>(),
        "round_trip": SERVERS.iter().enumerate().map(|(i, name)| json!({
            "server": name, "p50_us": median(&p50[i]), "p99_us": median(&p99[i]),
            "rounds_p50": p50[i], "rounds_p99": p99[i],
        })).collect::<Vec<_>>(),
    });
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("vm-{}.json", header.commit));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}

/// ns per run of the static-server under `flags`; checks the answer, since a benchmark of a
/// wrong answer measures nothing.
fn test_run(lambdactl: &Path, object: &Path, flags: &[&str], repeat: u32) -> Result<u64> {
    let object = object.to_str().context("non-UTF-8 path")?;
    let repeat = repeat.to_string();
    let mut args = vec![
        "test-run",
        object,
        "--request-body",
        "index.html",
        "--repeat",
        &repeat,
    ];
    args.extend_from_slice(flags);
    let out = sh(lambdactl, &args)?;
    if !out.contains("action:  XDP_TX") || !out.contains("status OK") {
        bail!("the static-server did not answer correctly:\n{out}");
    }
    parse_ns_per_run(&out).with_context(|| format!("no ns/run in test-run output:\n{out}"))
}

/// p50 and p99 of `count` invocations against `server` on a fresh veth pair.
fn round_trip(
    lambdactl: &Path,
    object: &Path,
    server: &str,
    round: u32,
    count: u32,
) -> Result<(f64, f64)> {
    let object = object.to_str().context("non-UTF-8 path")?;
    let tag = format!("{}{round}", &server[server.len() - 1..]);
    let pair = VethPair::create(lambdactl, "vmbench", &tag)?;
    let mut served: Option<Served> = None;
    if server == "xdp-drv" {
        pair.attach_server(object, "drv")?;
    } else {
        let mut args = vec![
            "-n",
            &pair.server,
            "run",
            object,
            "--listen",
            "0.0.0.0:9000",
            "--workers",
            "1",
        ];
        if server == "vm-jit" {
            args.push("--jit");
        }
        served = Some(Served::start(lambdactl, &args)?);
    }
    let target = format!("{SERVER_ADDR}:9000");
    let invoke = |n: u32| {
        pair.lambdactl_in(
            &pair.client,
            &[
                "invoke",
                &target,
                "--lambda",
                "1",
                "--body",
                "index.html",
                "--count",
                &n.to_string(),
            ],
        )
    };
    invoke(WARMUP).context("warm-up invocations")?;
    let out = invoke(count)?;
    drop(served);
    let stats = parse_round_trip(&out)
        .with_context(|| format!("no round-trip line in lambdactl invoke's output:\n{out}"))?;
    drop(pair);
    Ok(stats)
}

/// A `lambdactl run` child, stopped (SIGINT, by its PID) on drop.
pub(crate) struct Served {
    child: std::process::Child,
    /// Kept open: the server prints more lines, and a closed pipe would kill it (SIGPIPE).
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Served {
    pub(crate) fn start(lambdactl: &Path, args: &[&str]) -> Result<Served> {
        let mut child = Command::new(lambdactl)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting lambdactl run")?;
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        stdout.read_line(&mut first)?;
        if !first.starts_with("serving") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("lambdactl run did not start: {first:?}");
        }
        Ok(Served {
            child,
            _stdout: stdout,
        })
    }

    /// The server process's PID (for its RSS and CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}
