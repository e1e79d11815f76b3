//! `cargo xtask bench density`: the paper's density claim, measured. A thousand `whoami`
//! lambdas deployed behind one dispatcher on a veth interface, against one `whoami` attached
//! directly to a second veth pair, in the same run:
//!
//! - round trip p50/p99 of lambda #1 and lambda #N behind the dispatcher vs the lambda
//!   attached alone (rounds interleaved, medians, everything pinned to one CPU);
//! - deploy rate (lambdas per second, deploys running in parallel as `lambdactl deploy`
//!   processes) and undeploy rate;
//! - kernel memory per deployed lambda (program and map memlock, as bpftool reads it from
//!   fdinfo, plus its share of the dispatcher) vs the RSS of one `lambdactl run` process per
//!   lambda (the VM backend's way to isolate lambdas without the kernel).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bench::{Header, median, parse_round_trip, require_root};
use crate::bench_vm::{PINNED_CPU, pin_to_cpu};
use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};

pub struct DensityOptions {
    /// Lambdas deployed behind the dispatcher.
    pub lambdas: u32,
    /// Requests per round trip measurement.
    pub count: u32,
    /// Rounds of the three round-trip measurements, interleaved.
    pub rounds: u32,
    /// Parallel deploy processes.
    pub parallel: u32,
    /// `lambdactl run` processes whose RSS is sampled.
    pub vm_processes: u32,
}

const WARMUP: u32 = 200;

pub fn density(root: &Path, opts: &DensityOptions) -> Result<()> {
    require_root()?;
    if opts.lambdas == 0 || opts.count == 0 || opts.rounds == 0 || opts.parallel == 0 {
        bail!("--lambdas, --count, --rounds and --parallel must be at least 1");
    }
    let lambdactl = build_lambdactl(root)?;
    let whoami = super::lambdas_dir(root).join("whoami.o");
    let helper = super::lambdas_dir(root).join("static-server.o");
    for object in [&whoami, &helper] {
        if !object.exists() {
            bail!("{} is missing after build-ebpf", object.display());
        }
    }
    let whoami = whoami.to_str().context("non-UTF-8 path")?.to_owned();
    let helper = helper.to_str().context("non-UTF-8 path")?.to_owned();
    let header = Header::collect(root);
    println!("==> {}", header.line_for("density"));

    // Pair A: one whoami attached alone. Pair B: the dispatcher with N whoamis.
    let alone = VethPair::create(&lambdactl, "density", "a")?;
    let many = VethPair::create(&lambdactl, "density", "b")?;
    for pair in [&alone, &many] {
        // drv-mode XDP_TX on a veth needs a program on the peer (see netns.rs).
        pair.lambdactl_in(
            &pair.client,
            &[
                "attach",
                &helper,
                "--iface",
                &pair.client_if,
                "--mode",
                "drv",
                "--port",
                "1",
            ],
        )?;
    }
    alone.lambdactl_in(
        &alone.server,
        &[
            "attach",
            &whoami,
            "--iface",
            &alone.server_if,
            "--mode",
            "drv",
            "--lambda-id",
            "1",
        ],
    )?;

    println!(
        "==> deploying {} whoami lambdas ({} in parallel)",
        opts.lambdas, opts.parallel
    );
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..opts.parallel)
            .map(|t| {
                let (many, whoami) = (&many, &whoami);
                scope.spawn(move || -> Result<()> {
                    for id in (1..=opts.lambdas).filter(|id| id % opts.parallel == t) {
                        many.lambdactl_in(
                            &many.server,
                            &[
                                "deploy",
                                whoami,
                                "--iface",
                                &many.server_if,
                                "--name",
                                &format!("whoami-{id}"),
                                "--match",
                                &format!("port=9000,id={id}"),
                                "--mode",
                                "drv",
                            ],
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("deploy thread")?;
        }
        Ok(())
    })?;
    let deploy_secs = started.elapsed().as_secs_f64();
    let deploy_rate = f64::from(opts.lambdas) / deploy_secs;
    println!("    {deploy_rate:.1} lambdas/s ({deploy_secs:.1} s)");

    let memory = kernel_memory(&many)?;
    println!(
        "    kernel memory per lambda: {:.1} KiB (program {:.1} KiB, maps {:.1} KiB, dispatcher share {:.2} KiB)",
        memory.per_lambda() / 1024.0,
        memory.programs / memory.lambdas as f64 / 1024.0,
        memory.maps / memory.lambdas as f64 / 1024.0,
        memory.dispatcher / memory.lambdas as f64 / 1024.0
    );
    let vm_rss = vm_rss(&lambdactl, &whoami, opts.vm_processes)?;
    println!(
        "    RSS of one `lambdactl run` per lambda: {:.1} KiB (median of {})",
        vm_rss / 1024.0,
        opts.vm_processes
    );

    pin_to_cpu(PINNED_CPU)?;
    let last = opts.lambdas;
    let cases: [(&str, &VethPair, u32); 3] = [
        ("alone", &alone, 1),
        ("dispatched #1", &many, 1),
        ("dispatched #N", &many, last),
    ];
    let mut p50 = vec![Vec::new(); cases.len()];
    let mut p99 = vec![Vec::new(); cases.len()];
    for round in 0..opts.rounds {
        for k in 0..cases.len() {
            let i = (k + round as usize) % cases.len();
            let (name, pair, id) = cases[i];
            // whoami answers with its identity: a benchmark of the wrong lambda measures nothing.
            let expect = format!("lambda={id:0>10}");
            let (a, b) = round_trip(pair, 9000, id, "who?", &expect, opts.count)
                .with_context(|| format!("round trip {name}, round {}", round + 1))?;
            println!(
                "    round {} {name}: p50 {a:.1} µs, p99 {b:.1} µs",
                round + 1
            );
            p50[i].push(a);
            p99[i].push(b);
        }
    }

    let started = Instant::now();
    many.lambdactl_in(&many.server, &["undeploy", "--all"])?;
    let undeploy_rate = f64::from(opts.lambdas) / started.elapsed().as_secs_f64();

    let med = |v: &[f64]| median(v);
    let base50 = med(&p50[0]);
    let base99 = med(&p99[0]);
    println!();
    println!("{}", header.line_for("density"));
    println!(
        "round trip over a veth pair, drv mode, pinned to CPU {PINNED_CPU}, medians of {} rounds of {} requests:",
        opts.rounds, opts.count
    );
    println!(
        "{:<34} {:>9} {:>9} {:>11} {:>11}",
        "lambda", "p50 µs", "p99 µs", "p50 ratio", "p99 ratio"
    );
    let labels = [
        "whoami attached alone".to_owned(),
        format!("#1 of {} behind the dispatcher", opts.lambdas),
        format!("#{last} of {} behind the dispatcher", opts.lambdas),
    ];
    for (i, label) in labels.iter().enumerate() {
        println!(
            "{label:<34} {:>9.1} {:>9.1} {:>10.3}× {:>10.3}×",
            med(&p50[i]),
            med(&p99[i]),
            med(&p50[i]) / base50,
            med(&p99[i]) / base99
        );
    }
    println!(
        "deploy: {deploy_rate:.1} lambdas/s ({} parallel); undeploy: {undeploy_rate:.1} lambdas/s",
        opts.parallel
    );
    println!(
        "memory per lambda: kernel {:.1} KiB (programs + maps + dispatcher share, memlock) vs {:.1} KiB RSS of a `lambdactl run` process ({:.3}×)",
        memory.per_lambda() / 1024.0,
        vm_rss / 1024.0,
        memory.per_lambda() / vm_rss
    );

    let report = serde_json::json!({
        "suite": "density",
        "pinned_cpu": PINNED_CPU,
        "machine": header.json(),
        "lambdas": opts.lambdas,
        "count": opts.count,
        "rounds": opts.rounds,
        "round_trip": labels.iter().enumerate().map(|(i, l)| serde_json::json!({
            "lambda": l,
            "p50_us": med(&p50[i]),
            "p99_us": med(&p99[i]),
            "p50_ratio": med(&p50[i]) / base50,
            "p99_ratio": med(&p99[i]) / base99,
            "p50_rounds": p50[i],
            "p99_rounds": p99[i],
        })).collect::<Vec<_>>(),
        "deploy_per_s": deploy_rate,
        "deploy_parallel": opts.parallel,
        "undeploy_per_s": undeploy_rate,
        "kernel_bytes_per_lambda": memory.per_lambda(),
        "kernel_program_bytes": memory.programs,
        "kernel_map_bytes": memory.maps,
        "dispatcher_bytes": memory.dispatcher,
        "vm_process_rss_bytes": vm_rss,
    });
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("density-{}.json", header.commit));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}

/// p50 and p99 of `count` requests to `port`/`id`, after checking who answers and a warm-up.
pub(crate) fn round_trip(
    pair: &VethPair,
    port: u16,
    id: u32,
    body: &str,
    expect: &str,
    count: u32,
) -> Result<(f64, f64)> {
    let target = format!("{SERVER_ADDR}:{port}");
    let id = id.to_string();
    let invoke = |n: u32| {
        pair.lambdactl_in(
            &pair.client,
            &[
                "invoke",
                &target,
                "--lambda",
                &id,
                "--body",
                body,
                "--count",
                &n.to_string(),
            ],
        )
    };
    // A benchmark of the wrong lambda measures nothing.
    let first = invoke(1)?;
    if !first.contains(expect) {
        bail!("{target} lambda {id} did not answer with {expect:?}:\n{first}");
    }
    invoke(WARMUP).context("warm-up")?;
    let out = invoke(count)?;
    parse_round_trip(&out).with_context(|| format!("no round-trip line in:\n{out}"))
}

/// Kernel memory of the deployed lambdas and the dispatcher, from bpftool's `bytes_memlock`.
struct Memory {
    lambdas: usize,
    programs: f64,
    maps: f64,
    dispatcher: f64,
}

impl Memory {
    fn per_lambda(&self) -> f64 {
        (self.programs + self.maps + self.dispatcher) / self.lambdas as f64
    }
}

fn kernel_memory(pair: &VethPair) -> Result<Memory> {
    let ls: serde_json::Value =
        serde_json::from_str(&pair.lambdactl_in(&pair.server, &["ls", "--json"])?)?;
    let deployed: Vec<&serde_json::Value> = ls
        .as_array()
        .context("ls --json is an array")?
        .iter()
        .filter(|v| v["kind"] == "deployed")
        .collect();
    if deployed.is_empty() {
        bail!("nothing deployed to measure");
    }
    let bpf = BpfMemory::read()?;
    let mut memory = Memory {
        lambdas: deployed.len(),
        programs: 0.0,
        maps: 0.0,
        dispatcher: 0.0,
    };
    for d in &deployed {
        let id = d["program_id"].as_u64().context("program_id")?;
        let (program, maps) = bpf.program(id)?;
        memory.programs += program;
        memory.maps += maps;
    }
    let dispatcher_id = deployed[0]["dispatcher_program_id"]
        .as_u64()
        .context("ls --json names the dispatcher's program")?;
    if let Ok((program, maps)) = bpf.program(dispatcher_id) {
        memory.dispatcher += program + maps;
    }
    Ok(memory)
}

/// Kernel memory (program and map memlock from fdinfo, through bpftool) of the programs
/// `ids` and their maps, each map counted once.
pub(crate) fn memlock_of_programs(ids: &[u64]) -> Result<f64> {
    let bpf = BpfMemory::read()?;
    let mut maps_seen = std::collections::BTreeSet::new();
    let mut total = 0.0;
    for &id in ids {
        let prog = bpf.prog(id)?;
        total += prog["bytes_memlock"].as_f64().unwrap_or(0.0);
        for map in prog["map_ids"].as_array().into_iter().flatten() {
            let map = map.as_u64().unwrap_or(0);
            if maps_seen.insert(map) {
                total += bpf.map_memlock(map);
            }
        }
    }
    Ok(total)
}

/// `bpftool prog show` and `map show`, read once.
struct BpfMemory {
    progs: serde_json::Value,
    maps: serde_json::Value,
}

impl BpfMemory {
    fn read() -> Result<BpfMemory> {
        Ok(BpfMemory {
            progs: serde_json::from_str(&sh(Path::new("bpftool"), &["prog", "show", "--json"])?)?,
            maps: serde_json::from_str(&sh(Path::new("bpftool"), &["map", "show", "--json"])?)?,
        })
    }

    fn prog(&self, id: u64) -> Result<&serde_json::Value> {
        self.progs
            .as_array()
            .and_then(|a| a.iter().find(|p| p["id"].as_u64() == Some(id)))
            .with_context(|| format!("program {id} not in bpftool"))
    }

    fn map_memlock(&self, id: u64) -> f64 {
        self.maps
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"].as_u64() == Some(id)))
            .and_then(|m| m["bytes_memlock"].as_f64())
            .unwrap_or(0.0)
    }

    /// The program's memlock and its maps' (summed).
    fn program(&self, id: u64) -> Result<(f64, f64)> {
        let prog = self.prog(id)?;
        let maps = prog["map_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| self.map_memlock(m.as_u64().unwrap_or(0)))
            .sum();
        Ok((prog["bytes_memlock"].as_f64().unwrap_or(0.0), maps))
    }
}

/// Median VmRSS of `n` `lambdactl run` processes serving whoami (interpreter: the JIT has no
/// atomics, which whoami's counter uses), after a few requests each.
fn vm_rss(lambdactl: &Path, whoami: &str, n: u32) -> Result<f64> {
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut rss = Vec::new();
    for _ in 0..n.max(1) {
        let mut child = Killed(
            Command::new(lambdactl)
                .args([
                    "run",
                    whoami,
                    "--listen",
                    "127.0.0.1:0",
                    "--workers",
                    "1",
                    "--lambda-id",
                    "1",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting lambdactl run")?,
        );
        let stdout = child.0.stdout.take().context("stdout")?;
        let mut port = None;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line?;
            if port.is_none() {
                port = line
                    .split("127.0.0.1:")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok());
            }
            if line == "Ctrl-C stops" {
                break;
            }
        }
        let port = port.context("lambdactl run printed no port")?;
        sh(
            lambdactl,
            &[
                "invoke",
                &format!("127.0.0.1:{port}"),
                "--lambda",
                "1",
                "--body",
                "who?",
                "--count",
                "100",
            ],
        )?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        rss.push(kib * 1024.0);
    }
    Ok(median(&rss))
}
