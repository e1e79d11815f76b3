//! `cargo xtask bench workloads`: the paper's workloads on every backend, from one run.
//!
//! For each workload (static-server `index.html`; memcached GET of a stored 100-byte value and
//! SET of one; the same GET with the lambda's hot-key cache on; grayscale of one full
//! fragment, 474 pixels) and each server — the lambda in XDP `drv` and `skb` mode, the lambda in the VM
//! (`lambdactl run --jit`), and the native baseline (`lambdactl baseline`) — p50/p99 round trip
//! of `lambdactl invoke --count N` over a veth pair between two fresh network namespaces, and
//! the ratios to the baseline. memcached runs in the client namespace (the lambda's `XDP_TX`
//! sends its request back out of the interface it came in on), for every server alike.
//! Servers are interleaved in rounds (order rotating); medians across rounds.
//!
//! Pinned to one CPU like `bench vm` (the process, and every server, client and memcached it
//! starts), so that the figures are not bimodal on this 2-core machine.
//!
//! A workload is one entry of [`WORKLOADS`]; a server is one entry of [`SERVERS`].

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::{Header, median, parse_round_trip, require_root};
use crate::bench_vm::{PINNED_CPU, Served, pin_to_cpu};
use crate::netns::{CLIENT_ADDR, SERVER_ADDR, VethPair, build_lambdactl, sh};

pub struct WorkloadsOptions {
    /// Requests per workload per server, spread over `rounds`.
    pub count: u32,
    pub rounds: u32,
}

/// One row of the table: which lambda and baseline serve it and what the client sends.
struct Workload {
    name: &'static str,
    /// The lambda object's name and the `lambdactl baseline` workload.
    lambda: &'static str,
    /// The request body.
    body: fn() -> Vec<u8>,
    /// A request sent once before warming up (e.g. storing the value a GET reads).
    prepare: Option<fn() -> String>,
    /// memcached: turn the lambda's hot-key cache on (the baseline has none).
    cache: bool,
}

pub(crate) const MEMCACHED_PORT: u16 = 11211;
const BENCH_KEY: &str = "bench-key";

fn value() -> String {
    "v".repeat(100)
}

/// One whole grayscale fragment: a 474 × 1 image (the most pixels one fragment carries), its
/// width and height (big-endian u16) then the RGB bytes.
fn gray_fragment() -> Vec<u8> {
    let mut body = vec![0x01, 0xda, 0x00, 0x01];
    body.extend((0..474u32 * 3).map(|i| (i * 7 % 251) as u8));
    body
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "static-server",
        lambda: "static-server",
        body: || b"index.html".to_vec(),
        prepare: None,
        cache: false,
    },
    Workload {
        name: "memcached GET",
        lambda: "memcached",
        body: || format!("get {BENCH_KEY}").into_bytes(),
        prepare: Some(|| format!("set {BENCH_KEY} {}", value())),
        cache: false,
    },
    Workload {
        name: "memcached GET, lambda cache",
        lambda: "memcached",
        body: || format!("get {BENCH_KEY}").into_bytes(),
        prepare: Some(|| format!("set {BENCH_KEY} {}", value())),
        cache: true,
    },
    Workload {
        name: "memcached SET",
        lambda: "memcached",
        body: || format!("set {BENCH_KEY} {}", value()).into_bytes(),
        prepare: None,
        cache: false,
    },
    Workload {
        name: "grayscale, one fragment",
        lambda: "grayscale",
        body: gray_fragment,
        prepare: None,
        cache: false,
    },
];

/// The servers, the last one the baseline the ratios divide by.
const SERVERS: [&str; 4] = ["xdp-drv", "xdp-skb", "vm-jit", "baseline"];
const WARMUP: u32 = 200;

pub fn workloads(root: &Path, opts: &WorkloadsOptions) -> Result<()> {
    require_root()?;
    if opts.count == 0 || opts.rounds == 0 {
        bail!("--count and --rounds must be at least 1");
    }
    if Command::new("memcached").arg("-h").output().is_err() {
        bail!("memcached is not installed (apt-get install memcached)");
    }
    let lambdactl = build_lambdactl(root)?;
    let header = Header::collect(root);
    println!("==> {}", header.line_for("workloads"));
    pin_to_cpu(PINNED_CPU)?;
    println!("==> pinned to CPU {PINNED_CPU}, with every server, client and memcached it starts");

    let per_round = opts.count.div_ceil(opts.rounds);
    // [workload][server] → per-round figures.
    let mut p50 = vec![vec![Vec::new(); SERVERS.len()]; WORKLOADS.len()];
    let mut p99 = vec![vec![Vec::new(); SERVERS.len()]; WORKLOADS.len()];
    for round in 0..opts.rounds {
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for k in 0..SERVERS.len() {
                let s = (k + round as usize) % SERVERS.len();
                let tag = format!("{w}{s}{round}");
                let (a, b) = measure(root, &lambdactl, workload, SERVERS[s], &tag, per_round)
                    .with_context(|| {
                        format!("{} on {}, round {}", workload.name, SERVERS[s], round + 1)
                    })?;
                println!(
                    "    round {} {} on {}: {per_round} requests, p50 {a:.1} µs, p99 {b:.1} µs",
                    round + 1,
                    workload.name,
                    SERVERS[s]
                );
                p50[w][s].push(a);
                p99[w][s].push(b);
            }
        }
    }

    let mut text = String::new();
    let _ = writeln!(text, "{}", header.line_for("workloads"));
    let _ = writeln!(
        text,
        "round trip over a veth pair, all on CPU {PINNED_CPU} ({} requests per cell, medians of {} rounds)",
        per_round * opts.rounds,
        opts.rounds
    );
    let _ = writeln!(
        text,
        "  {:<27} {:<9} {:>8} {:>8} {:>12} {:>12}",
        "workload", "server", "p50 µs", "p99 µs", "p50/baseline", "p99/baseline"
    );
    let baseline = SERVERS.len() - 1;
    let mut rows = Vec::new();
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let (b50, b99) = (median(&p50[w][baseline]), median(&p99[w][baseline]));
        for (s, server) in SERVERS.iter().enumerate() {
            let (a, b) = (median(&p50[w][s]), median(&p99[w][s]));
            let _ = writeln!(
                text,
                "  {:<27} {server:<9} {a:>8.1} {b:>8.1} {:>11.2}× {:>11.2}×",
                workload.name,
                a / b50,
                b / b99
            );
            rows.push(json!({
                "workload": workload.name, "server": server,
                "p50_us": a, "p99_us": b, "p50_ratio_to_baseline": a / b50,
                "p99_ratio_to_baseline": b / b99,
                "rounds_p50": p50[w][s], "rounds_p99": p99[w][s],
            }));
        }
    }
    println!();
    print!("{text}");
    let report = json!({
        "suite": "workloads",
        "pinned_cpu": PINNED_CPU,
        "machine": header.json(),
        "count": per_round * opts.rounds,
        "rounds": opts.rounds,
        "rows": rows,
    });
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("workloads-{}.json", header.commit));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}

/// memcached in the client namespace (UDP and TCP port 11211 on [`CLIENT_ADDR`]), killed by its
/// PID on drop.
pub(crate) struct Memcached(Child);

impl Memcached {
    pub(crate) fn start(pair: &VethPair) -> Result<Memcached> {
        let port = MEMCACHED_PORT.to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &pair.client, "memcached"])
            .args(["-U", &port, "-p", &port, "-l", CLIENT_ADDR])
            .args(["-u", "root", "-t", "1", "-m", "64"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting memcached")?;
        let server = Memcached(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = sh(
                Path::new("ip"),
                &["netns", "exec", &pair.client, "ss", "-lnt"],
            )?;
            if listening.contains(&format!("{CLIENT_ADDR}:{MEMCACHED_PORT}")) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("memcached did not start listening");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// The memcached lambda's `CONFIG` value: memcached's IPv4 address, MAC and port, and the
/// cache flag.
pub(crate) fn memcached_config(pair: &VethPair, cache: bool) -> Result<String> {
    let out = sh(
        Path::new("ip"),
        &["-n", &pair.client, "link", "show", "dev", &pair.client_if],
    )?;
    let mac = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no MAC address on the client interface")?;
    let ip: std::net::Ipv4Addr = CLIENT_ADDR.parse()?;
    let mut hex: String = ip.octets().iter().map(|b| format!("{b:02x}")).collect();
    hex.push_str(&mac.replace(':', ""));
    hex.push_str(&format!("{MEMCACHED_PORT:04x}"));
    // Flags, then 3 reserved bytes.
    hex.push_str(if cache { "01000000" } else { "00000000" });
    Ok(format!("hex:{hex}"))
}

/// p50 and p99 of `count` invocations of `workload` against `server` on a fresh veth pair.
fn measure(
    root: &Path,
    lambdactl: &Path,
    workload: &Workload,
    server: &str,
    tag: &str,
    count: u32,
) -> Result<(f64, f64)> {
    let object = super::lambdas_dir(root).join(format!("{}.o", workload.lambda));
    let object = object.to_str().context("non-UTF-8 path")?;
    let pair = VethPair::create(lambdactl, "wl", tag)?;
    let memcached = match workload.lambda {
        "memcached" => Some(Memcached::start(&pair)?),
        _ => None,
    };
    let config = match memcached {
        Some(_) => Some(memcached_config(&pair, workload.cache)?),
        None => None,
    };
    let listen = format!("{SERVER_ADDR}:9000");
    let control =
        std::env::temp_dir().join(format!("lnic-bench-wl-{}-{tag}.sock", std::process::id()));
    let control = control.to_str().context("non-UTF-8 path")?.to_owned();
    let memcached_addr = format!("{CLIENT_ADDR}:{MEMCACHED_PORT}");
    let mut served: Option<Served> = None;
    match server {
        "xdp-drv" | "xdp-skb" => {
            pair.attach_server(object, &server[4..])?;
            if let Some(config) = &config {
                let map = format!("{}/CONFIG", pair.server_if);
                pair.lambdactl_in(&pair.server, &["maps", "set", &map, "0", config])?;
            }
        }
        "vm-jit" => {
            served = Some(Served::start(
                lambdactl,
                &[
                    "-n",
                    &pair.server,
                    "run",
                    object,
                    "--listen",
                    &listen,
                    "--jit",
                    "--workers",
                    "1",
                    "--control",
                    &control,
                ],
            )?);
            if let Some(config) = &config {
                // The control socket opens after the first line: retry briefly.
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(e) = sh(
                    lambdactl,
                    &["maps", "--vm", &control, "set", "CONFIG", "0", config],
                ) {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        "baseline" => {
            served = Some(Served::start(
                lambdactl,
                &[
                    "-n",
                    &pair.server,
                    "baseline",
                    workload.lambda,
                    "--listen",
                    &listen,
                    "--memcached",
                    &memcached_addr,
                ],
            )?);
        }
        _ => bail!("unknown server {server}"),
    }
    let target = format!("{SERVER_ADDR}:9000");
    // `invoke` exits non-zero unless every answer is OK: a wrong answer fails the bench.
    // Bodies go through a file: the grayscale body is binary.
    let body_file =
        std::env::temp_dir().join(format!("lnic-bench-wl-{}-{tag}.body", std::process::id()));
    let body_path = body_file.to_str().context("non-UTF-8 path")?.to_owned();
    let invoke = |body: &[u8], n: u32| {
        std::fs::write(&body_file, body)?;
        pair.lambdactl_in(
            &pair.client,
            &[
                "invoke",
                &target,
                "--lambda",
                "1",
                "--body-file",
                &body_path,
                "--count",
                &n.to_string(),
            ],
        )
    };
    if let Some(prepare) = workload.prepare {
        invoke(prepare().as_bytes(), 1).context("preparing")?;
    }
    let body = (workload.body)();
    invoke(&body, WARMUP).context("warm-up invocations")?;
    let out = invoke(&body, count);
    let _ = std::fs::remove_file(&body_file);
    let out = out?;
    drop(served);
    drop(memcached);
    let stats = parse_round_trip(&out)
        .with_context(|| format!("no round-trip line in lambdactl invoke's output:\n{out}"))?;
    drop(pair);
    Ok(stats)
}
