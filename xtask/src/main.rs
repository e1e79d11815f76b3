//! Project automation: `cargo xtask build-ebpf | test | demo | bench`.
//!
//! The eBPF lambdas need a toolchain setup the host crates do not (rust-src, `-Z build-std`,
//! bpf-linker built against the toolchain's own libLLVM); this is the one place that knows it.

mod bench;
mod bench_coalesced;
mod bench_density;
mod bench_gateway;
mod bench_paper;
mod bench_verifier;
mod bench_vm;
mod bench_workloads;
#[allow(dead_code)] // The API `bench paper` uses; until it lands, only its test calls it.
mod container;
mod demo;
mod gateway;
mod netns;
mod paper_client;
mod paper_plot;
mod paper_report;
mod toolchain;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "λ-NIC project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every lambda under samples/ for bpfel-unknown-none (with BTF and line info) into
    /// target/lambdas/<name>.o, installing rust-src and bpf-linker first when missing.
    BuildEbpf,
    /// The whole test suite: build the lambdas, check formatting and clippy, run every test.
    /// Kernel tests need root; they skip with a reason without it, except under CI=true.
    Test,
    /// The main job: the OpenFaaS-compatible gateway with the samples deployed on the best
    /// backend this machine allows (XDP when root, else the userspace VM), called over HTTP
    /// with curl. `--udp`: the λ protocol directly, with `lambdactl invoke` and latency figures.
    Demo {
        /// Skip the gateway: serve the static-server and invoke it over UDP (`--backend vm`
        /// or `xdp`), showing the answer and the round-trip latency.
        #[arg(long)]
        udp: bool,
        /// Requests to send for the latency figures (`--udp`).
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        /// The gateway's backend: `auto` (XDP when root, else vm), `drv`, `skb`, `vm`. With
        /// `--udp`: `vm` (default) or `xdp`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "drv", "skb", "vm", "xdp"])]
        backend: String,
        /// XDP mode to attach in (`--backend xdp`).
        #[arg(long, default_value = "drv")]
        mode: String,
    },
    /// Reproducible figures, with the machine and commit that produced them (root).
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Subcommand)]
enum BenchSuite {
    /// The spine's figures side by side: static-server round trip in skb and drv mode,
    /// BPF_PROG_TEST_RUN ns/run of static-server, pong and baseline-raw-pong (the SDK's
    /// overhead), and program sizes. Writes target/bench/spine-<commit>.json too.
    Spine {
        /// Round-trip requests per mode, spread over --rounds.
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        /// Round-trip rounds; the modes are interleaved and medians reported.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// BPF_PROG_TEST_RUN runs per program per round.
        #[arg(long, default_value_t = 100_000)]
        repeat: u32,
        /// BPF_PROG_TEST_RUN rounds; the programs are interleaved and medians reported.
        #[arg(long, default_value_t = 5)]
        test_run_rounds: u32,
    },
    /// The VM backend against the kernel: static-server ns per invocation under
    /// BPF_PROG_TEST_RUN, the VM interpreter and the VM JIT, and round trips of XDP (drv) vs
    /// `lambdactl run` (interpreter, JIT) over veth pairs. Writes target/bench/vm-<commit>.json.
    Vm {
        /// Runs per engine per round for ns per invocation.
        #[arg(long, default_value_t = 20_000)]
        repeat: u32,
        /// Rounds for ns per invocation (engines interleaved, medians reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Round-trip requests per server, spread over --rtt-rounds.
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        /// Round-trip rounds (servers interleaved, medians reported).
        #[arg(long, default_value_t = 3)]
        rtt_rounds: u32,
    },
    /// Coalesced vs tail-call: round trip p50/p99 of the static-server and a whoami deployed
    /// behind the tail-call dispatcher, in one coalesced program (`deploy --mode coalesced`),
    /// and as their NIC builds lowered for the NFP-4000 and coalesced (`--lower`: the program
    /// a NIC core would run), drv mode, pinned to one CPU, rounds interleaved, medians and
    /// ratios to tail-call. Root. Writes target/bench/coalesced-<commit>.json.
    Coalesced {
        /// Requests per round-trip measurement.
        #[arg(long, default_value_t = 5000)]
        count: u32,
        /// Rounds (the six measurements interleaved, medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// match+lambda density: N whoami lambdas behind one dispatcher vs one attached alone, in
    /// one run: round trip p50/p99 of lambda #1 and #N (ratios to the lambda alone), deploy
    /// and undeploy rates, kernel memory per lambda (memlock) vs the RSS of one `lambdactl
    /// run` per lambda. Root. Writes target/bench/density-<commit>.json.
    Density {
        /// Lambdas to deploy.
        #[arg(long, default_value_t = 1000)]
        lambdas: u32,
        /// Requests per round-trip measurement.
        #[arg(long, default_value_t = 5000)]
        count: u32,
        /// Rounds (the three measurements interleaved, medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Parallel `lambdactl deploy` processes.
        #[arg(long, default_value_t = 2)]
        parallel: u32,
        /// `lambdactl run` processes whose RSS is sampled.
        #[arg(long, default_value_t = 5)]
        vm_processes: u32,
    },
    /// The paper's workloads on every backend: p50/p99 round trip of static-server, memcached
    /// GET and memcached SET (and GET with the lambda's hot-key cache on) through XDP drv, XDP
    /// skb, the VM JIT and the native baseline (`lambdactl baseline`), with ratios to the
    /// baseline. Needs memcached installed. Writes
    /// target/bench/workloads-<commit>.json.
    Workloads {
        /// Requests per workload per server, spread over --rounds.
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        /// Rounds (servers interleaved, medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// HTTP load with wrk against the static-server behind `lambdactl gateway`: XDP (drv,
    /// root), the VM and the native baseline (`lambdactl baseline`) in one run:
    /// requests/s, p50/p99, and zero errors and timeouts required. Writes
    /// target/bench/gateway-<commit>.json.
    Gateway {
        /// Seconds of load per backend.
        #[arg(long, default_value_t = 30)]
        duration: u32,
        /// Open HTTP connections.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// The paper's evaluation on this machine: Table 1 latency (avg, std, p99) of
    /// static-server, memcached GET/SET and grayscale on every column (XDP drv and skb behind
    /// the dispatcher, coalesced drv, VM JIT, VM interpreter, native baseline, native in a
    /// container, OpenFaaS-classic watchdog in a container), Table 2 work completion time over
    /// 1, 2×cores and 56 client threads, Table 3 host RAM and CPU during the grayscale run, and
    /// the latency table through the gateway. A column that cannot run says why. Root and
    /// memcached. Writes paper.md, paper.json and PNG plots to --out (about 10 minutes;
    /// --quick under 3).
    Paper {
        /// Fewer requests and generated lambdas: a CI check that every column answers
        /// correctly, not figures of record.
        #[arg(long)]
        quick: bool,
        /// Output directory (default: docs/results).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Our verifier against the kernel's: verification time per program and per instruction
    /// for the sample lambdas, the XDP verifier cases and the bpf_conformance programs, beside
    /// the kernel's BPF_PROG_LOAD time, and ns per instruction on straight-line programs of
    /// 1 Ki to 32 Ki instructions. Writes target/bench/verifier-<commit>.json.
    Verifier {
        /// Rounds (programs interleaved, medians reported).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Verifications and kernel loads per program per round.
        #[arg(long, default_value_t = 20)]
        repeat: u32,
        /// Largest straight-line program, in instructions.
        #[arg(long, default_value_t = 32_768)]
        max_size: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::BuildEbpf => {
            build_ebpf(&root)?;
        }
        Task::Test => test(&root)?,
        Task::Demo {
            udp,
            count,
            backend,
            mode,
        } => {
            build_ebpf(&root)?;
            match (udp, backend.as_str()) {
                (false, "xdp") => bail!("--backend xdp is for --udp; the gateway takes drv or skb"),
                (false, backend) => demo::run_gateway(&root, backend)?,
                (true, "vm" | "auto") => demo::run_vm(&root, count)?,
                (true, "xdp") => demo::run(&root, count, &mode)?,
                (true, other) => bail!("--udp takes --backend vm or xdp, not {other}"),
            }
        }
        Task::Bench {
            suite:
                BenchSuite::Spine {
                    count,
                    rounds,
                    repeat,
                    test_run_rounds,
                },
        } => {
            // Fail on a missing root before spending time on builds.
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench::SpineOptions {
                count,
                rounds,
                repeat,
                test_run_rounds,
            };
            bench::spine(&root, &options)?;
        }
        Task::Bench {
            suite:
                BenchSuite::Density {
                    lambdas,
                    count,
                    rounds,
                    parallel,
                    vm_processes,
                },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_density::DensityOptions {
                lambdas,
                count,
                rounds,
                parallel,
                vm_processes,
            };
            bench_density::density(&root, &options)?;
        }
        Task::Bench {
            suite: BenchSuite::Coalesced { count, rounds },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_coalesced::CoalescedOptions { count, rounds };
            bench_coalesced::coalesced(&root, &options)?;
        }
        Task::Bench {
            suite: BenchSuite::Workloads { count, rounds },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_workloads::WorkloadsOptions { count, rounds };
            bench_workloads::workloads(&root, &options)?;
        }
        Task::Bench {
            suite:
                BenchSuite::Vm {
                    repeat,
                    rounds,
                    count,
                    rtt_rounds,
                },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_vm::VmOptions {
                repeat,
                rounds,
                count,
                rtt_rounds,
            };
            bench_vm::vm(&root, &options)?;
        }
        Task::Bench {
            suite:
                BenchSuite::Gateway {
                    duration,
                    connections,
                    threads,
                },
        } => {
            build_ebpf(&root)?;
            let options = bench_gateway::GatewayOptions {
                duration,
                connections,
                threads,
            };
            bench_gateway::gateway(&root, &options)?;
        }
        Task::Bench {
            suite: BenchSuite::Paper { quick, out },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_paper::PaperOptions {
                quick,
                out: out.unwrap_or_else(|| root.join("docs").join("results")),
            };
            bench_paper::paper(&root, &options)?;
        }
        Task::Bench {
            suite:
                BenchSuite::Verifier {
                    rounds,
                    repeat,
                    max_size,
                },
        } => {
            bench::require_root()?;
            build_ebpf(&root)?;
            let options = bench_verifier::VerifierOptions {
                rounds,
                repeat,
                max_size,
            };
            bench_verifier::verifier(&root, &options)?;
        }
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where `cargo xtask build-ebpf` puts the lambda objects.
pub fn lambdas_dir(root: &Path) -> PathBuf {
    root.join("target").join("lambdas")
}

/// Builds every sample lambda and returns the paths of the objects.
fn build_ebpf(root: &Path) -> Result<Vec<PathBuf>> {
    toolchain::ensure_rust_src()?;
    toolchain::ensure_bpf_linker()?;

    let target_dir = root.join("target").join("ebpf");
    let status = Command::new(cargo())
        .current_dir(root.join("samples"))
        .args([
            "build",
            "--release",
            "--package",
            "samples",
            "--bins",
            "--examples",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        // `-Z build-std` is unstable; scoping RUSTC_BOOTSTRAP to this one build keeps the host
        // crates on plain stable (DESIGN.md: gives the same object as nightly).
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        // BTF plus .BTF.ext line info: the kernel verifier then names Rust source lines.
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo to build the lambdas")?;
    if !status.success() {
        bail!("building the lambdas failed ({status})");
    }

    let built = target_dir.join("bpfel-unknown-none").join("release");
    let out_dir = lambdas_dir(root);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut objects = Vec::new();
    for name in rust_files(&root.join("samples").join("src").join("bin"))? {
        let to = out_dir.join(format!("{name}.o"));
        copy_if_changed(&built.join(&name), &to)?;
        println!("lambda {name}: {}", to.display());
        objects.push(to);
    }
    // Lambdas the kernel verifier must reject, for the tests of rejection messages.
    let rejected_dir = out_dir.join("rejected");
    std::fs::create_dir_all(&rejected_dir)
        .with_context(|| format!("creating {}", rejected_dir.display()))?;
    for name in rust_files(&root.join("samples").join("examples"))? {
        copy_if_changed(
            &built.join("examples").join(&name),
            &rejected_dir.join(format!("{name}.o")),
        )?;
    }
    objects.extend(build_nic_variants(root, &out_dir)?);
    Ok(objects)
}

/// The samples also built for the NIC: same sources, the SDK's `nic` feature on (frame access
/// and checksums in code, no helper the NFP lacks; the paper workloads shaped for the NIC in
/// their own sources under the feature).
pub const NIC_SAMPLES: &[&str] = &[
    "whoami",
    "pong",
    "counter",
    "static-server",
    "grayscale",
    "memcached",
];

/// Builds [`NIC_SAMPLES`] with `--features nic` into `<name>-nic.o`, in a target dir of its own
/// so the two builds do not invalidate each other.
fn build_nic_variants(root: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let target_dir = root.join("target").join("ebpf-nic");
    let mut args = vec![
        "build",
        "--release",
        "--package",
        "samples",
        "--features",
        "nic",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ];
    for name in NIC_SAMPLES {
        args.extend(["--bin", name]);
    }
    let status = Command::new(cargo())
        .current_dir(root.join("samples"))
        .args(&args)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo to build the NIC lambdas")?;
    if !status.success() {
        bail!("building the NIC lambdas failed ({status})");
    }
    let built = target_dir.join("bpfel-unknown-none").join("release");
    let mut objects = Vec::new();
    for name in NIC_SAMPLES {
        let to = out_dir.join(format!("{name}-nic.o"));
        copy_if_changed(&built.join(name), &to)?;
        println!("lambda {name} (NIC build): {}", to.display());
        objects.push(to);
    }
    Ok(objects)
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let fresh = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    // Copy only on change so the mtime tells when the lambda last really changed.
    if std::fs::read(to).ok().as_deref() != Some(fresh.as_slice()) {
        std::fs::write(to, &fresh).with_context(|| format!("writing {}", to.display()))?;
    }
    Ok(())
}

/// The stems of the `.rs` files in `dir`, sorted: each `samples/src/bin/<name>.rs` is one
/// lambda, each `samples/examples/<name>.rs` one the verifier must reject.
fn rust_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `cargo ARGS`, echoing its output and adding its `test result:` lines to `totals`.
fn run_tests(root: &Path, args: &[&str], totals: &mut TestTotals) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let mut child = Command::new(cargo())
        .current_dir(root)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_summary_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    build_ebpf(root)?;
    run_cargo(
        root,
        &["fmt", "--all", "--", "--check"],
        "cargo fmt --check",
    )?;
    run_cargo(
        root,
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        "cargo clippy",
    )?;
    // The SDK's NIC build (feature `nic`) is other code behind a cfg: lint and test it too.
    const NIC_FEATURES: &str = "lambda-ebpf/nic,samples/nic";
    run_cargo(
        root,
        &[
            "clippy",
            "-p",
            "lambda-ebpf",
            "-p",
            "samples",
            "--features",
            NIC_FEATURES,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        "cargo clippy (the SDK's NIC build)",
    )?;
    // The netns tests use unique namespace and interface names, so the default parallelism
    // is safe.
    let mut totals = TestTotals::default();
    let whole = run_tests(root, &["test"], &mut totals);
    let nic = run_tests(
        root,
        &[
            "test",
            "-p",
            "lambda-ebpf",
            "-p",
            "samples",
            "--features",
            NIC_FEATURES,
        ],
        &mut totals,
    );
    // One closing line over every test binary: cargo's own last line is often a doc-test run
    // of a crate without doc tests ("0 passed").
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    whole?;
    nic?;
    Ok(())
}

/// Sums cargo's `test result:` lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Adds `test result: ok. 3 passed; 0 failed; 1 ignored; …`; ignores any other line.
    fn add_summary_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

fn run_cargo(root: &Path, args: &[&str], what: &str) -> Result<()> {
    println!("==> {what}");
    let status = Command::new(cargo())
        .current_dir(root)
        .args(args)
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn sums_cargo_test_summaries() {
        let mut totals = TestTotals::default();
        totals.add_summary_line(
            "test result: ok. 14 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        totals.add_summary_line("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured");
        totals.add_summary_line("running 5 tests");
        totals.add_summary_line("test foo ... ok");
        assert_eq!(
            totals,
            TestTotals {
                passed: 16,
                failed: 3,
                ignored: 1
            }
        );
    }
}
