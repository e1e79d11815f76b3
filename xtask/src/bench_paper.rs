//! `cargo xtask bench paper`: the paper's Tables 1–3 and the gateway table, regenerated on this
//! machine with our backends in place of the paper's columns.
//!
//! Every column is one [`Column`]; each gets a fresh veth pair between two fresh network
//! namespaces, memcached in the client namespace (the memcached lambda's `XDP_TX` sends its
//! request back out of the interface it came in on, so memcached must sit behind it, for every
//! column alike), and the three workloads served on three UDP ports of the server end:
//! static-server on 9000, memcached (GET and SET) on 9001, grayscale on 9002. XDP columns deploy
//! the lambdas behind the tail-call dispatcher (`lambdactl deploy`) with generated `whoami`
//! lambdas beside them (the coalesced column: see [`measure_coalesced`]); process columns run one
//! server process (or container) per workload. A column that cannot run on this machine (no
//! podman) or fails is kept with its reason.
//!
//! Server processes run on CPU [`SERVER_CPU`], client threads on [`CLIENT_CPU`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::{Header, require_root};
use crate::bench_vm::{Served, pin_to_cpu};
use crate::bench_workloads::{MEMCACHED_PORT, Memcached, memcached_config};
use crate::container::{self, Container, Podman, RunOptions};
use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};
use crate::paper_client::{self, Call, HttpCall, Samples, Target};
use crate::paper_report::{self, CellResult, Completion, Resources};

pub struct PaperOptions {
    pub quick: bool,
    /// Where the report, JSON and plots go.
    pub out: PathBuf,
}

/// Sizes of one run: full or `--quick`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Table 1: requests per workload per column (grayscale: `gray_requests`).
    pub requests: u32,
    pub gray_requests: u32,
    pub warmup: u32,
    /// Table 2: total requests per thread count, and how many times each is run (median).
    pub completion_requests: u32,
    pub completion_rounds: u32,
    pub threads: [u32; 3],
    /// Generated whoami lambdas deployed beside the workloads on dispatcher columns.
    pub generated: u32,
    /// Gateway table: requests per workload per backend.
    pub gateway_requests: u32,
    /// Table 3: seconds of grayscale load while the host is sampled.
    pub resource_seconds: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        if quick {
            Sizes {
                requests: 1_000,
                gray_requests: 300,
                warmup: 100,
                completion_requests: 2_000,
                completion_rounds: 1,
                threads: [1, 2 * cores, 56],
                generated: 10,
                gateway_requests: 500,
                resource_seconds: 2,
            }
        } else {
            Sizes {
                requests: 10_000,
                gray_requests: 3_000,
                warmup: 500,
                completion_requests: 10_000,
                completion_rounds: 3,
                threads: [1, 2 * cores, 56],
                generated: 100,
                gateway_requests: 10_000,
                resource_seconds: 10,
            }
        }
    }
}

pub const SERVER_CPU: usize = 0;
pub const CLIENT_CPU: usize = 1;
const PORTS: [u16; 3] = [9000, 9001, 9002];
const BENCH_KEY: &str = "paper-key";
/// Most generated lambdas deployed beside the workloads in the coalesced program.
const COALESCED_GENERATED: u32 = 10;
/// The watchdog column's HTTP port for a workload: its UDP port + this.
const HTTP_PORT_OFFSET: u16 = 100;

/// The paper's columns, ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    XdpDrv,
    XdpSkb,
    CoalescedDrv,
    VmJit,
    VmInterpreter,
    Native,
    NativeContainer,
    Watchdog,
}

impl Column {
    pub const ALL: [Column; 8] = [
        Column::XdpDrv,
        Column::XdpSkb,
        Column::CoalescedDrv,
        Column::VmJit,
        Column::VmInterpreter,
        Column::Native,
        Column::NativeContainer,
        Column::Watchdog,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Column::XdpDrv => "xdp-drv",
            Column::XdpSkb => "xdp-skb",
            Column::CoalescedDrv => "coalesced-drv",
            Column::VmJit => "vm-jit",
            Column::VmInterpreter => "vm-interpreter",
            Column::Native => "native",
            Column::NativeContainer => "native-container",
            Column::Watchdog => "openfaas-watchdog",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Column::XdpDrv => "XDP drv (dispatcher)",
            Column::XdpSkb => "XDP skb (dispatcher)",
            Column::CoalescedDrv => "coalesced drv",
            Column::VmJit => "VM JIT",
            Column::VmInterpreter => "VM interpreter",
            Column::Native => "native baseline",
            Column::NativeContainer => "native in container",
            Column::Watchdog => "OpenFaaS-classic watchdog (container, fork per request)",
        }
    }

    /// Whether the workloads sit behind a dispatcher (tail calls or coalesced) in the kernel.
    pub fn is_xdp(self) -> bool {
        matches!(self, Column::XdpDrv | Column::XdpSkb | Column::CoalescedDrv)
    }

    /// Generated whoami lambdas deployed beside the workloads. The coalesced program is
    /// rebuilt and verified whole on every deploy, and must fit one program: fewer there.
    pub fn generated(self, sizes: Sizes) -> u32 {
        match self {
            Column::XdpDrv | Column::XdpSkb => sizes.generated,
            Column::CoalescedDrv => sizes.generated.min(COALESCED_GENERATED),
            _ => 0,
        }
    }

    /// Why this column cannot run here, when it cannot: the container columns need podman and
    /// runc (everything else the bench needs is checked before it starts).
    fn unavailable(self, podman: &Result<Podman, String>) -> Option<String> {
        match self {
            Column::NativeContainer | Column::Watchdog => podman.as_ref().err().cloned(),
            _ => None,
        }
    }
}

/// The workloads of Table 1, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Static,
    Get,
    Set,
    Gray,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Static,
        Workload::Get,
        Workload::Set,
        Workload::Gray,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Workload::Static => "static-server",
            Workload::Get => "memcached-get",
            Workload::Set => "memcached-set",
            Workload::Gray => "grayscale",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Workload::Static => "static-server (index.html)",
            Workload::Get => "memcached GET (100 B value)",
            Workload::Set => "memcached SET (100 B value)",
            Workload::Gray => "grayscale (one full fragment, 474 px)",
        }
    }

    fn port(self) -> u16 {
        match self {
            Workload::Static => PORTS[0],
            Workload::Get | Workload::Set => PORTS[1],
            Workload::Gray => PORTS[2],
        }
    }

    /// The request, and the OK answer's body computed independently of the server.
    fn call(self, server: SocketAddr) -> Call {
        let target = SocketAddr::new(server.ip(), self.port());
        let (body, expected) = match self {
            Workload::Static => (
                workloads::static_content::INDEX_NAME.to_vec(),
                workloads::static_content::INDEX_HTML.to_vec(),
            ),
            Workload::Get => (format!("get {BENCH_KEY}").into_bytes(), value()),
            Workload::Set => {
                let mut body = format!("set {BENCH_KEY} ").into_bytes();
                body.extend(value());
                (body, Vec::new())
            }
            Workload::Gray => gray_request(),
        };
        Call {
            target,
            lambda_id: 1,
            body,
            expected,
        }
    }
}

fn value() -> Vec<u8> {
    b"v".repeat(100)
}

/// One whole grayscale fragment: a 474 × 1 image (width, height big-endian, then RGB), and
/// its answer: the echoed image header and one gray byte per pixel (BT.601 8-bit luma,
/// `(77 R + 150 G + 29 B + 128) >> 8`),
/// computed here rather than by the workload's code.
pub fn gray_request() -> (Vec<u8>, Vec<u8>) {
    let pixels = workloads::grayscale::PIXELS_PER_FRAGMENT as u32;
    let mut body = (pixels as u16).to_be_bytes().to_vec();
    body.extend(1u16.to_be_bytes());
    let rgb: Vec<u8> = (0..pixels * 3).map(|i| (i * 7 % 251) as u8).collect();
    body.extend(&rgb);
    let mut expected = body[..4].to_vec();
    expected.extend(rgb.chunks_exact(3).map(|p| {
        let y = 77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]);
        ((y + 128) >> 8) as u8
    }));
    (body, expected)
}

/// Which of the workloads' lambdas a deployment holds (XDP columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The three workloads and the generated lambdas.
    All,
    /// static-server and the generated lambdas.
    Static,
    /// memcached alone.
    Memcached,
    /// grayscale alone.
    Gray,
}

impl Part {
    fn workloads(self) -> &'static [Workload] {
        match self {
            Part::All => &Workload::ALL,
            Part::Static => &[Workload::Static],
            Part::Memcached => &[Workload::Get, Workload::Set],
            Part::Gray => &[Workload::Gray],
        }
    }

    fn has(self, workload: Workload) -> bool {
        self.workloads().contains(&workload)
    }

    fn generated(self, column: Column, sizes: Sizes) -> u32 {
        match self {
            Part::All | Part::Static => column.generated(sizes),
            Part::Memcached | Part::Gray => 0,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Part::All => "3 workloads",
            Part::Static => "static-server",
            Part::Memcached => "memcached alone",
            Part::Gray => "grayscale alone",
        }
    }
}

/// Everything one column serves from, torn down on drop (servers, memcached, then the pair).
struct Deployment {
    /// Containers per workload port (the container columns), removed first on drop.
    containers: Vec<(u16, Container)>,
    servers: Vec<Served>,
    /// PIDs of the server processes, per workload port (for RSS and CPU time).
    pids: Vec<(u16, u32)>,
    /// Generated whoami lambdas deployed beside the workloads.
    generated: u32,
    /// Why fewer were deployed than asked for (the coalesced program is full).
    full: Option<String>,
    /// Served over HTTP (the watchdog column), on each workload's port + [`HTTP_PORT_OFFSET`].
    http: bool,
    _memcached: Memcached,
    pair: VethPair,
}

struct Ctx {
    root: PathBuf,
    lambdactl: PathBuf,
    sizes: Sizes,
    /// The private podman setup of the container columns, or why there is none.
    podman: Result<Podman, String>,
}

impl Ctx {
    fn object(&self, name: &str) -> Result<String> {
        let path = super::lambdas_dir(&self.root).join(format!("{name}.o"));
        if !path.exists() {
            bail!("{} is missing after build-ebpf", path.display());
        }
        Ok(path.to_str().context("non-UTF-8 path")?.to_owned())
    }

    /// Deploys `column` on a fresh pair. `part` picks the lambdas on the XDP columns (the
    /// coalesced column needs two programs, see [`measure_coalesced`]); process columns serve
    /// every workload.
    fn deploy(&self, column: Column, tag: &str, part: Part) -> Result<Deployment> {
        let pair = VethPair::create(&self.lambdactl, "paper", tag)?;
        let memcached = Memcached::start(&pair)?;
        let config = memcached_config(&pair, false)?;
        let listen = |port: u16| format!("{SERVER_ADDR}:{port}");
        let memcached_addr = format!("{}:{MEMCACHED_PORT}", crate::netns::CLIENT_ADDR);
        let mut servers = Vec::new();
        let mut pids = Vec::new();
        let mut containers = Vec::new();
        let mut generated = 0;
        let mut full = None;
        match column {
            Column::XdpDrv | Column::XdpSkb | Column::CoalescedDrv => {
                // The deploy's mode arguments: behind the dispatcher in drv or skb mode, or one
                // coalesced program attached in drv mode.
                let (mode, xdp): (&str, &[&str]) = match column {
                    Column::XdpDrv => ("drv", &[]),
                    Column::XdpSkb => ("skb", &[]),
                    _ => ("coalesced", &["--xdp", "drv"]),
                };
                if mode != "skb" {
                    // drv-mode XDP_TX on a veth needs a program on the peer (see netns.rs).
                    pair.lambdactl_in(
                        &pair.client,
                        &[
                            "attach",
                            &self.object("static-server")?,
                            "--iface",
                            &pair.client_if,
                            "--mode",
                            "drv",
                            "--port",
                            "1",
                        ],
                    )?;
                }
                let deploy = |object: &str, name: &str, rule: &str| {
                    let mut args = vec![
                        "deploy",
                        object,
                        "--iface",
                        &pair.server_if,
                        "--name",
                        name,
                        "--match",
                        rule,
                        "--mode",
                        mode,
                    ];
                    args.extend_from_slice(xdp);
                    pair.lambdactl_in(&pair.server, &args)
                };
                if part.has(Workload::Static) {
                    deploy(&self.object("static-server")?, "p-static", "port=9000,id=1")?;
                }
                if part.has(Workload::Get) {
                    // memcached on its port's any-id rule: memcached's reply (no λ header)
                    // must reach it too.
                    deploy(&self.object("memcached")?, "p-mc", "port=9001")?;
                }
                if part.has(Workload::Gray) {
                    deploy(&self.object("grayscale")?, "p-gray", "port=9002,id=1")?;
                }
                let whoami = self.object("whoami")?;
                for i in 0..part.generated(column, self.sizes) {
                    let deployed = deploy(
                        &whoami,
                        &format!("p-who{i}"),
                        &format!("port=9000,id={}", 100 + i),
                    );
                    match deployed {
                        Ok(_) => generated += 1,
                        // The coalesced program is full: the kernel verifier's complexity
                        // limit. Keep what fits and say so.
                        Err(e)
                            if column == Column::CoalescedDrv
                                && format!("{e:#}").contains("BPF_COMPLEXITY_LIMIT_INSNS") =>
                        {
                            full = Some(format!(
                                "the coalesced program holds {generated} generated whoami \
                                 lambdas beside the workloads: deploying one more is refused \
                                 (the kernel verifier would process more than 1,000,000 \
                                 instructions)"
                            ));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if part.has(Workload::Get) {
                    pair.lambdactl_in(&pair.server, &["maps", "set", "p-mc/CONFIG", "0", &config])?;
                }
            }
            Column::VmJit | Column::VmInterpreter => {
                for (object, port) in [
                    ("static-server", PORTS[0]),
                    ("memcached", PORTS[1]),
                    ("grayscale", PORTS[2]),
                ] {
                    let object = self.object(object)?;
                    let control = std::env::temp_dir().join(format!(
                        "lnic-paper-{}-{tag}-{port}.sock",
                        std::process::id()
                    ));
                    let control = control.to_str().context("non-UTF-8 path")?.to_owned();
                    let address = listen(port);
                    let mut args = vec![
                        "-n",
                        &pair.server,
                        "run",
                        &object,
                        "--listen",
                        &address,
                        "--workers",
                        "1",
                        "--control",
                        &control,
                    ];
                    if column == Column::VmJit {
                        args.push("--jit");
                    }
                    let served = Served::start(&self.lambdactl, &args)?;
                    pids.push((port, served.pid()));
                    servers.push(served);
                    if port == PORTS[1] {
                        // The control socket opens after the first line: retry briefly.
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while let Err(e) = sh(
                            &self.lambdactl,
                            &["maps", "--vm", &control, "set", "CONFIG", "0", &config],
                        ) {
                            if Instant::now() > deadline {
                                return Err(e);
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
            Column::Native => {
                for (workload, port) in [
                    ("static-server", PORTS[0]),
                    ("memcached", PORTS[1]),
                    ("grayscale", PORTS[2]),
                ] {
                    let address = listen(port);
                    let served = Served::start(
                        &self.lambdactl,
                        &[
                            "-n",
                            &pair.server,
                            "baseline",
                            workload,
                            "--listen",
                            &address,
                            "--memcached",
                            &memcached_addr,
                        ],
                    )?;
                    pids.push((port, served.pid()));
                    servers.push(served);
                }
            }
            Column::NativeContainer | Column::Watchdog => {
                let podman = self.podman.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                // Pinned like the other servers (also inherited from this process).
                let options = RunOptions {
                    cpuset_cpus: Some(SERVER_CPU.to_string()),
                };
                for (workload, port) in [
                    ("static-server", PORTS[0]),
                    ("memcached", PORTS[1]),
                    ("grayscale", PORTS[2]),
                ] {
                    let name = format!("lnic-paper-{}-{tag}-{port}", std::process::id());
                    let udp = listen(port);
                    let http = listen(port + HTTP_PORT_OFFSET);
                    let args: Vec<&str> = if column == Column::NativeContainer {
                        vec![
                            "baseline",
                            workload,
                            "--listen",
                            &udp,
                            "--memcached",
                            &memcached_addr,
                        ]
                    } else {
                        // OpenFaaS classic: the watchdog forks `lambdactl handle` per request.
                        let mut args = vec![
                            "watchdog",
                            "--listen",
                            &http,
                            "--",
                            container::LAMBDACTL,
                            "handle",
                            workload,
                        ];
                        if workload == "memcached" {
                            args.extend(["--memcached", &memcached_addr]);
                        }
                        args
                    };
                    let started = podman
                        .run_with(&name, &pair.server, &options, &args)
                        .with_context(|| format!("starting container {name}"))?;
                    containers.push((port, started));
                }
            }
        }
        Ok(Deployment {
            containers,
            servers,
            pids,
            generated,
            full,
            http: column == Column::Watchdog,
            _memcached: memcached,
            pair,
        })
    }
}

impl Deployment {
    fn server_addr(&self) -> SocketAddr {
        SocketAddr::new(SERVER_ADDR.parse().expect("constant address"), 0)
    }

    /// How this deployment is called: λ datagrams, or HTTP to the watchdog of the workload's
    /// port.
    fn target(&self, call: Call) -> Target {
        if !self.http {
            return Target::Udp(call);
        }
        Target::Http(HttpCall {
            addr: SocketAddr::new(call.target.ip(), call.target.port() + HTTP_PORT_OFFSET),
            method: "POST",
            path: "/".to_owned(),
            body: call.body,
            expected: call.expected,
        })
    }

    /// Every host process serving the workload on `port` right now: its server process, or
    /// its container's (conmon, the command, and whatever the watchdog forked at the moment).
    fn processes(&self, port: u16) -> Result<Vec<u32>> {
        let mut pids: Vec<u32> = self
            .pids
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, pid)| *pid)
            .collect();
        for (p, c) in &self.containers {
            if *p == port {
                pids.extend(c.pids()?);
            }
        }
        Ok(pids)
    }

    /// Stores the value the GETs read.
    fn prepare(&self) -> Result<()> {
        let mut samples = Samples::default();
        let call = Workload::Set.call(self.server_addr());
        paper_client::latency(
            Some(&self.pair.client),
            CLIENT_CPU,
            &self.target(call),
            0,
            1,
        )
        .map(|s| samples.merge(s))?;
        if samples.wrong > 0 {
            bail!(
                "storing the benchmark value failed: {}",
                samples.first_wrong.unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Containers and servers first (they sit in the pair's namespace), then memcached,
        // then the pair.
        self.containers.clear();
        self.servers.clear();
    }
}

/// Every figure of one column.
pub struct ColumnResult {
    pub column: Column,
    /// Why the column has no figures, when it has none.
    pub reason: Option<String>,
    /// What differs from the other columns' setup, for the report.
    pub notes: Vec<String>,
    pub latency: Vec<(Workload, CellResult)>,
    pub completion: Vec<Completion>,
    /// Why Table 2 has no figures for this column, when it has none.
    pub completion_reason: Option<String>,
    pub resources: Option<Resources>,
}

pub struct GatewayResult {
    pub backend: &'static str,
    pub cells: Vec<(Workload, CellResult)>,
}

pub fn paper(root: &Path, opts: &PaperOptions) -> Result<()> {
    require_root()?;
    let started = Instant::now();
    if Command::new("memcached").arg("-h").output().is_err() {
        bail!("memcached is not installed (apt-get install memcached)");
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("bench paper pins client and server to different CPUs: it needs at least 2");
    }
    let lambdactl = build_lambdactl(root)?;
    let sizes = Sizes::new(opts.quick);
    let header = Header::collect(root);
    println!("==> {}", header.line_for("paper"));
    println!(
        "==> server processes on CPU {SERVER_CPU}, client threads on CPU {CLIENT_CPU}; {sizes:?}"
    );
    pin_to_cpu(SERVER_CPU)?;
    let podman_dir = root
        .join("target")
        .join("tmp")
        .join(format!("paper-podman-{}", std::process::id()));
    println!(
        "==> preparing podman (runc, a local rootfs with lambdactl) for the container columns"
    );
    let podman = Podman::prepare(&podman_dir, &lambdactl)
        .map_err(|e| format!("no container could be run here: preparing podman failed: {e:#}"));
    let ctx = Ctx {
        root: root.to_path_buf(),
        lambdactl: lambdactl.clone(),
        sizes,
        podman,
    };

    let mut columns = Vec::new();
    for (c, column) in Column::ALL.into_iter().enumerate() {
        if let Some(reason) = column.unavailable(&ctx.podman) {
            println!("==> [{}] {}: not measured: {reason}", c + 1, column.label());
            columns.push(ColumnResult {
                column,
                reason: Some(reason),
                notes: Vec::new(),
                latency: Vec::new(),
                completion: Vec::new(),
                completion_reason: None,
                resources: None,
            });
            continue;
        }
        println!("==> [{}] {}", c + 1, column.label());
        let result = measure_column(&ctx, column, &format!("{c}")).unwrap_or_else(|e| {
            let reason = format!("failed: {e:#}");
            println!("    {reason}");
            ColumnResult {
                column,
                reason: Some(reason),
                notes: Vec::new(),
                latency: Vec::new(),
                completion: Vec::new(),
                completion_reason: None,
                resources: None,
            }
        });
        columns.push(result);
    }

    println!("==> gateway table");
    let gateway = measure_gateway(&ctx)?;

    let report = paper_report::Report {
        header,
        sizes,
        columns,
        gateway,
        quick: opts.quick,
        elapsed: started.elapsed(),
    };
    report.write(&opts.out)?;
    println!(
        "==> written to {} ({:.0} s)",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = report
        .columns
        .iter()
        .filter(|c| c.reason.as_deref().is_some_and(|r| r.starts_with("failed")))
        .map(|c| c.column.key().to_owned())
        .collect();
    if !failed.is_empty() {
        bail!("columns failed: {}", failed.join(", "));
    }
    Ok(())
}

fn measure_column(ctx: &Ctx, column: Column, tag: &str) -> Result<ColumnResult> {
    if column == Column::CoalescedDrv {
        return measure_coalesced(ctx, tag);
    }
    let deployment = deploy_timed(ctx, column, tag, Part::All)?;
    let latency = table1(ctx, &deployment, &Workload::ALL)?;
    let resources = Some(table3(ctx, &deployment, column)?);
    let completion = table2(ctx, &deployment)?;
    drop(deployment);
    Ok(ColumnResult {
        column,
        reason: None,
        notes: Vec::new(),
        latency,
        completion,
        completion_reason: None,
        resources,
    })
}

/// The coalesced column. First, like the other XDP columns, the three workloads and the
/// generated lambdas in one coalesced program. A coalesced program costs the kernel verifier
/// about the sum of its lambdas' costs, and when the three together pass its limit of
/// 1,000,000 processed instructions (`lambdactl deploy --mode coalesced` refuses them; on this
/// kernel, at the time of writing, static-server + memcached + one whoami, or grayscale with any
/// other workload, did), each workload gets a coalesced program of its own on a pair of its
/// own (static-server's with the generated whoamis that fit), measured one after the other, and
/// Table 2's mix, which needs them all behind one interface, is not run. The report says which
/// happened.
fn measure_coalesced(ctx: &Ctx, tag: &str) -> Result<ColumnResult> {
    let column = Column::CoalescedDrv;
    let generated_note = |d: &Deployment| {
        d.full.clone().unwrap_or_else(|| {
            format!(
                "the program holds {} generated whoami lambdas too (at most {COALESCED_GENERATED} \
                 are tried: each brings maps of its own, and one program may use 64)",
                d.generated
            )
        })
    };
    match deploy_timed(ctx, column, &format!("{tag}x"), Part::All) {
        Ok(deployment) => {
            let note = format!(
                "the three workloads share one coalesced program; {}",
                generated_note(&deployment)
            );
            let latency = table1(ctx, &deployment, &Workload::ALL)?;
            let resources = Some(table3(ctx, &deployment, column)?);
            let completion = table2(ctx, &deployment)?;
            return Ok(ColumnResult {
                column,
                reason: None,
                notes: vec![note],
                latency,
                completion,
                completion_reason: None,
                resources,
            });
        }
        Err(e) if format!("{e:#}").contains("BPF_COMPLEXITY_LIMIT_INSNS") => {
            println!("    the three workloads do not fit in one coalesced program: one each");
        }
        Err(e) => return Err(e),
    }
    let mut latency = Vec::new();
    let mut resources = None;
    let mut note = String::new();
    for (i, part) in [Part::Static, Part::Memcached, Part::Gray]
        .into_iter()
        .enumerate()
    {
        let deployment = deploy_timed(ctx, column, &format!("{tag}{i}"), part)?;
        if part == Part::Static {
            note = generated_note(&deployment);
        }
        latency.extend(table1(ctx, &deployment, part.workloads())?);
        if part == Part::Gray {
            resources = Some(table3(ctx, &deployment, column)?);
        }
    }
    let split = "the three workloads do not fit in one coalesced program (`lambdactl deploy \
                 --mode coalesced` refuses them: the kernel verifier would process more than \
                 its limit of 1,000,000 instructions), so each runs in a coalesced program of \
                 its own on its own interface";
    Ok(ColumnResult {
        column,
        reason: None,
        notes: vec![format!("{split}; {note}")],
        latency,
        completion: Vec::new(),
        completion_reason: Some(format!(
            "not run: {split}, and Table 2's mix needs them all behind one interface"
        )),
        resources,
    })
}

fn deploy_timed(ctx: &Ctx, column: Column, tag: &str, part: Part) -> Result<Deployment> {
    let setup = Instant::now();
    let deployment = ctx.deploy(column, tag, part)?;
    if part.has(Workload::Get) {
        deployment.prepare()?;
    }
    println!(
        "    deployed in {:.1} s{}",
        setup.elapsed().as_secs_f64(),
        if column.is_xdp() {
            format!(
                " ({} + {} whoami lambdas{})",
                part.describe(),
                deployment.generated,
                deployment
                    .full
                    .as_ref()
                    .map(|f| format!("; {f}"))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    Ok(deployment)
}

/// Table 1 for `workloads` on `deployment`.
fn table1(
    ctx: &Ctx,
    deployment: &Deployment,
    workloads: &[Workload],
) -> Result<Vec<(Workload, CellResult)>> {
    let sizes = ctx.sizes;
    let server = deployment.server_addr();
    let mut latency = Vec::new();
    for &workload in workloads {
        let count = if workload == Workload::Gray {
            sizes.gray_requests
        } else {
            sizes.requests
        };
        let target = deployment.target(workload.call(server));
        let samples = paper_client::latency(
            Some(&deployment.pair.client),
            CLIENT_CPU,
            &target,
            sizes.warmup,
            count,
        )?;
        let cell = CellResult::from_samples(samples);
        println!("    {:<14} {}", workload.key(), cell.line());
        latency.push((workload, cell));
    }
    Ok(latency)
}

/// Table 3: the host under grayscale load for a fixed time.
fn table3(ctx: &Ctx, deployment: &Deployment, column: Column) -> Result<Resources> {
    let sizes = ctx.sizes;
    let server = deployment.server_addr();
    // Table 3: the host under grayscale load for a fixed time.
    let gray_pids = deployment.processes(Workload::Gray.port())?;
    let before = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (wall, samples) = {
        let (before, pids) = (before.clone(), gray_pids.clone());
        paper_client::run_for(
            &deployment.pair.client,
            CLIENT_CPU,
            &deployment.target(Workload::Gray.call(server)),
            sizes.warmup,
            Duration::from_secs(sizes.resource_seconds),
            move || *before.lock().expect("not poisoned") = Some(CpuSnapshot::take(&pids)),
        )?
    };
    // The watchdog's handlers come and go: CPU time of those reaped is in their parent's
    // cutime/cstime; RSS counts the processes alive at the end.
    let gray_pids_after = deployment.processes(Workload::Gray.port())?;
    let after = CpuSnapshot::take(&gray_pids);
    let before = before
        .lock()
        .expect("not poisoned")
        .take()
        .context("no CPU snapshot at the start of the grayscale load")?;
    if samples.wrong > 0 {
        bail!(
            "wrong grayscale answers under load: {}",
            samples.first_wrong.unwrap_or_default()
        );
    }
    let kernel = kernel_bytes(&ctx.lambdactl, deployment, column)?;
    let resources = Resources::from_snapshots(
        &before,
        &after,
        wall,
        samples.us.len() as u64,
        rss_bytes(&gray_pids_after)?,
        kernel,
        gray_pids_after.len(),
    );
    println!("    {}", resources.line());

    Ok(resources)
}

/// Table 2: the mix of every workload's request over 1, 2×cores and 56 client threads.
fn table2(ctx: &Ctx, deployment: &Deployment) -> Result<Vec<Completion>> {
    let sizes = ctx.sizes;
    let server = deployment.server_addr();
    // Table 2.
    let calls: Vec<Target> = Workload::ALL
        .iter()
        .map(|w| deployment.target(w.call(server)))
        .collect();
    let mut completion = Vec::new();
    for threads in sizes.threads {
        let mut rounds = Vec::new();
        let (mut wrong, mut lost) = (0, 0);
        for _ in 0..sizes.completion_rounds {
            let (elapsed, samples) = paper_client::completion(
                &deployment.pair.client,
                CLIENT_CPU,
                &calls,
                threads,
                sizes.completion_requests,
            )?;
            rounds.push(elapsed.as_secs_f64());
            wrong += samples.wrong;
            lost += samples.lost;
        }
        let c = Completion {
            threads,
            requests: sizes.completion_requests,
            seconds: crate::bench::median(&rounds),
            rounds,
            wrong,
            lost,
        };
        println!(
            "    {} requests over {threads:>2} threads: {:.3} s (median of {:?}; {} wrong, {} resent)",
            c.requests, c.seconds, c.rounds, c.wrong, c.lost
        );
        completion.push(c);
    }
    Ok(completion)
}

/// /proc/stat totals and the server processes' CPU time, at one moment.
pub struct CpuSnapshot {
    /// Jiffies over all CPUs: total, idle (+iowait), softirq.
    pub total: u64,
    pub idle: u64,
    pub softirq: u64,
    /// CPU time of the server processes' threads, ns (schedstat).
    pub processes_ns: u64,
}

impl CpuSnapshot {
    fn take(pids: &[u32]) -> CpuSnapshot {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let get = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal …
        let total = fields.iter().take(8).sum();
        let processes_ns = pids.iter().map(|pid| process_cpu_ns(*pid)).sum();
        CpuSnapshot {
            total,
            idle: get(3) + get(4),
            softirq: get(6),
            processes_ns,
        }
    }
}

/// CPU time of `pid` so far, in ns: every live thread's (schedstat, ns), plus its reaped
/// children's (`cutime + cstime`, clock ticks), which is where the handlers a watchdog forked
/// per request end up.
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let threads: u64 = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let children = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses; cutime and
            // cstime are fields 16 and 17, i.e. 14 and 15 after the name.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    threads + children * 1_000_000_000 / hz
}

/// Summed VmRSS of `pids`, in bytes. A process gone since it was listed (a handler the
/// watchdog forked, now finished) counts nothing; kernel threads have no VmRSS.
fn rss_bytes(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += kib * 1024;
    }
    Ok(total)
}

/// Kernel memory (fdinfo memlock, through bpftool) of the grayscale lambda's program and maps
/// plus the dispatcher's, on dispatcher columns; of the whole coalesced program (every lambda
/// in it) and its maps on the coalesced column; 0 elsewhere.
fn kernel_bytes(lambdactl: &Path, deployment: &Deployment, column: Column) -> Result<u64> {
    if !column.is_xdp() {
        return Ok(0);
    }
    let pair = &deployment.pair;
    let ls: serde_json::Value =
        serde_json::from_str(&sh(lambdactl, &["-n", &pair.server, "ls", "--json"])?)?;
    let gray = ls
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "p-gray")
        .context("the grayscale lambda is not in `lambdactl ls`")?;
    let mut ids = vec![gray["program_id"].as_u64().context("program_id")?];
    if let Some(d) = gray["dispatcher_program_id"].as_u64() {
        ids.push(d);
    }
    crate::bench_density::memlock_of_programs(&ids).map(|b| b as u64)
}

/// memcached on a free loopback port (UDP and TCP) in this namespace, for the gateway table's
/// memcached rows (`lambdactl gateway --memcached`), killed by its PID on drop.
struct LoopbackMemcached {
    child: std::process::Child,
    addr: String,
}

impl LoopbackMemcached {
    fn start() -> Result<LoopbackMemcached> {
        let port = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let port = udp.local_addr()?.port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let port_text = port.to_string();
        let child = Command::new("memcached")
            .args(["-U", &port_text, "-p", &port_text, "-l", "127.0.0.1"])
            .args(["-u", "root", "-t", "1", "-m", "64"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting memcached")?;
        let server = LoopbackMemcached {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("memcached did not start listening on {}", server.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for LoopbackMemcached {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The HTTP call of `workload` through the gateway at `addr` (answers checked: status 200 and
/// the expected bytes).
fn gateway_call(workload: Workload, addr: SocketAddr) -> HttpCall {
    let call = workload.call(SocketAddr::new(addr.ip(), 0));
    let (path, method) = match workload {
        Workload::Static => ("/function/static-server/index.html".to_owned(), "GET"),
        Workload::Gray => ("/function/grayscale".to_owned(), "POST"),
        Workload::Get | Workload::Set => ("/function/memcached".to_owned(), "POST"),
    };
    HttpCall {
        addr,
        method,
        path,
        body: if method == "POST" {
            call.body.clone()
        } else {
            Vec::new()
        },
        expected: call.expected.clone(),
    }
}

fn measure_gateway(ctx: &Ctx) -> Result<Vec<GatewayResult>> {
    let mut results = Vec::new();
    // One memcached for every backend's memcached rows: the gateway's memcached function
    // (lambda, VM or baseline) calls it (on XDP through the gateway's relay).
    let memcached = LoopbackMemcached::start();
    if let Err(e) = &memcached {
        println!("    memcached: {e:#} (the memcached rows are not measured)");
    }
    for backend in ["drv", "vm", "native"] {
        let mut args = vec![
            "--backend",
            backend,
            "--no-auth",
            "--deploy",
            "static-server",
            "--deploy",
            "grayscale",
            "--vm-workers",
            "1",
        ];
        if let Ok(m) = &memcached {
            args.extend(["--memcached", &m.addr, "--deploy", "memcached"]);
        }
        let gw = match crate::gateway::GatewayChild::start(&ctx.lambdactl, &args) {
            Ok(gw) => gw,
            Err(e) => {
                let reason = format!("failed: the gateway did not start: {e:#}");
                println!("    {backend}: {reason}");
                results.push(GatewayResult {
                    backend,
                    cells: Workload::ALL
                        .iter()
                        .map(|w| (*w, CellResult::unavailable(&reason)))
                        .collect(),
                });
                continue;
            }
        };
        let mut cells = Vec::new();
        // GET reads the value one SET through the gateway stores first.
        let stored = match &memcached {
            Err(e) => Err(format!("not measured: memcached did not start: {e:#}")),
            Ok(_) => {
                let set = Target::Http(gateway_call(Workload::Set, gw.addr));
                match paper_client::latency(None, CLIENT_CPU, &set, 0, 1) {
                    Ok(s) if s.wrong == 0 => Ok(()),
                    Ok(s) => Err(format!(
                        "failed: storing the benchmark value through the gateway: {}",
                        s.first_wrong.unwrap_or_default()
                    )),
                    Err(e) => Err(format!(
                        "failed: storing the benchmark value through the gateway: {e:#}"
                    )),
                }
            }
        };
        for workload in Workload::ALL {
            if let (Workload::Get | Workload::Set, Err(reason)) = (workload, &stored) {
                println!("    {backend:<6} {:<14} {reason}", workload.key());
                cells.push((workload, CellResult::unavailable(reason)));
                continue;
            }
            let http = gateway_call(workload, gw.addr);
            let count = if workload == Workload::Gray {
                ctx.sizes.gray_requests
            } else {
                ctx.sizes.gateway_requests
            };
            let target = Target::Http(http);
            let cell =
                match paper_client::latency(None, CLIENT_CPU, &target, ctx.sizes.warmup, count) {
                    Ok(samples) => CellResult::from_samples(samples),
                    Err(e) => CellResult::unavailable(&format!("failed: {e:#}")),
                };
            println!("    {backend:<6} {:<14} {}", workload.key(), cell.line());
            cells.push((workload, cell));
        }
        drop(gw);
        results.push(GatewayResult { backend, cells });
    }
    Ok(results)
}

/// The JSON of a column's results, for the report.
pub fn column_json(c: &ColumnResult) -> serde_json::Value {
    json!({
        "column": c.column.key(),
        "label": c.column.label(),
        "reason": c.reason,
        "latency": c.latency.iter().map(|(w, cell)| json!({
            "workload": w.key(), "result": cell.json(),
        })).collect::<Vec<_>>(),
        "notes": c.notes,
        "completion": c.completion.iter().map(Completion::json).collect::<Vec<_>>(),
        "completion_reason": c.completion_reason,
        "resources": c.resources.as_ref().map(Resources::json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_request_is_one_full_fragment() {
        let (body, expected) = gray_request();
        let pixels = workloads::grayscale::PIXELS_PER_FRAGMENT;
        assert_eq!(body.len(), 4 + 3 * pixels);
        assert_eq!(expected.len(), 4 + pixels);
        // The workload's own conversion agrees with the formula computed here.
        let mut out = vec![0; pixels];
        workloads::grayscale::convert(&body[4..], &mut out);
        assert_eq!(&expected[4..], out.as_slice());
    }

    #[test]
    fn columns_have_distinct_keys() {
        let mut keys: Vec<&str> = Column::ALL.iter().map(|c| c.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), Column::ALL.len());
    }
}
