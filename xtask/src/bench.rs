//! `cargo xtask bench spine`: the spine's figures, side by side, from one run.
//!
//! 1. Round trip of `lambdactl invoke` against the static-server, attached in `skb` and in
//!    `drv` mode, each on a fresh veth pair between two network namespaces; the modes are
//!    interleaved over several rounds and the report shows medians across rounds (the machine
//!    is shared and noisy).
//! 2. `BPF_PROG_TEST_RUN` time per run of the static-server, `pong` (the SDK) and
//!    `baseline-raw-pong` (the same lambda by hand), interleaved in rounds, and the ratio of the
//!    last two: what the SDK costs over hand-written code.
//! 3. Program size: the xlated instruction count the kernel reports for each program once
//!    loaded (`bpftool prog show`, `bytes_xlated / 8`, after the verifier's rewrites).
//!
//! The header names the machine and commit that produced the figures; the same data goes to
//! `target/bench/spine-<commit>.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::netns::{SERVER_ADDR, VethPair, build_lambdactl, sh};

/// What `cargo xtask bench spine` measures; see the module docs.
pub struct SpineOptions {
    /// Requests per mode for the round trip, spread over `rounds`.
    pub count: u32,
    /// Rounds for the round trip (modes interleaved within each).
    pub rounds: u32,
    /// BPF_PROG_TEST_RUN repetitions per program per round.
    pub repeat: u32,
    /// Rounds for BPF_PROG_TEST_RUN (programs interleaved within each).
    pub test_run_rounds: u32,
}

/// The three programs whose cost and size the spine reports, with the object they come from.
const PROGRAMS: [&str; 3] = ["static-server", "pong", "baseline-raw-pong"];
const MODES: [&str; 2] = ["skb", "drv"];
/// Requests sent on each fresh pair before measuring (ARP, caches, JIT-warm paths).
const WARMUP: u32 = 200;

/// Refuses to start without root: everything here loads BPF programs, and the round trip makes
/// network namespaces.
pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask bench spine needs root: it creates network namespaces, attaches XDP \
             programs and runs BPF_PROG_TEST_RUN (CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF); \
             run it again as root"
        );
    }
    Ok(())
}

pub fn spine(root: &Path, opts: &SpineOptions) -> Result<()> {
    require_root()?;
    if opts.count == 0 || opts.rounds == 0 || opts.repeat == 0 || opts.test_run_rounds == 0 {
        bail!("--count, --rounds, --repeat and --test-run-rounds must be at least 1");
    }
    let lambdactl = build_lambdactl(root)?;
    let objects = super::lambdas_dir(root);
    for name in PROGRAMS {
        let object = objects.join(format!("{name}.o"));
        if !object.exists() {
            bail!("{} is missing after build-ebpf", object.display());
        }
    }
    let bench = Bench { lambdactl, objects };

    let header = Header::collect(root);
    println!("==> {}", header.line());

    let per_round = opts.count.div_ceil(opts.rounds);
    let mut rtt: Vec<ModeFigures> = MODES
        .iter()
        .map(|m| ModeFigures {
            mode: m,
            p50: Vec::new(),
            p99: Vec::new(),
        })
        .collect();
    for round in 0..opts.rounds {
        // Alternate the order so neither mode always runs right after pair setup.
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for i in order {
            let mode = MODES[i];
            let (p50, p99) = bench
                .round_trip(mode, round, per_round)
                .with_context(|| format!("round trip, {mode} mode, round {}", round + 1))?;
            println!(
                "    round {} {mode}: {per_round} requests, p50 {p50:.1} µs, p99 {p99:.1} µs",
                round + 1
            );
            rtt[i].p50.push(p50);
            rtt[i].p99.push(p99);
        }
    }

    let mut runs: Vec<ProgramFigures> = PROGRAMS
        .iter()
        .map(|p| ProgramFigures {
            name: p,
            ns: Vec::new(),
            insns: None,
        })
        .collect();
    for round in 0..opts.test_run_rounds {
        // Rotate the order each round.
        for k in 0..PROGRAMS.len() {
            let i = (k + round as usize) % PROGRAMS.len();
            let ns = bench
                .test_run(PROGRAMS[i], opts.repeat)
                .with_context(|| format!("test-run of {}", PROGRAMS[i]))?;
            runs[i].ns.push(ns);
        }
        let line: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {} ns", r.name, r.ns.last().copied().unwrap_or(0)))
            .collect();
        println!("    test-run round {}: {}", round + 1, line.join(", "));
    }

    for (i, insns) in bench.program_sizes()?.into_iter().enumerate() {
        runs[i].insns = insns;
    }

    let report = Report {
        header,
        count: per_round * opts.rounds,
        rounds: opts.rounds,
        repeat: opts.repeat,
        test_run_rounds: opts.test_run_rounds,
        rtt,
        runs,
    };
    println!();
    print!("{}", report.text());
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json_path = out_dir.join(format!("spine-{}.json", report.header.commit));
    std::fs::write(&json_path, report.json())
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("written to {}", json_path.display());
    Ok(())
}

struct Bench {
    lambdactl: PathBuf,
    objects: PathBuf,
}

impl Bench {
    fn object(&self, name: &str) -> Result<String> {
        let path = self.objects.join(format!("{name}.o"));
        Ok(path.to_str().context("non-UTF-8 path")?.to_owned())
    }

    fn lambdactl(&self, args: &[&str]) -> Result<String> {
        sh(&self.lambdactl, args)
    }

    /// A fresh veth pair between two fresh namespaces; `tag` keeps names unique in this run.
    fn pair(&self, tag: &str) -> Result<VethPair> {
        VethPair::create(&self.lambdactl, "bench", tag)
    }

    /// Median-free figures of one round: p50 and p99 of `count` invocations in `mode`.
    fn round_trip(&self, mode: &str, round: u32, count: u32) -> Result<(f64, f64)> {
        let tag = format!("{}{round}", &mode[..1]);
        let pair = self.pair(&tag)?;
        let object = self.object("static-server")?;
        pair.attach_server(&object, mode)?;
        let target = format!("{SERVER_ADDR}:9000");
        let invoke = |n: u32| {
            self.lambdactl(&[
                "-n",
                &pair.client,
                "invoke",
                &target,
                "--lambda",
                "1",
                "--body",
                "index.html",
                "--count",
                &n.to_string(),
            ])
        };
        invoke(WARMUP).context("warm-up invocations")?;
        let out = invoke(count)?;
        let stats = parse_round_trip(&out)
            .with_context(|| format!("no round-trip line in lambdactl invoke's output:\n{out}"))?;
        drop(pair);
        Ok(stats)
    }

    /// Mean ns per run of `name` on a λ request for `index.html`; checks the answer too.
    fn test_run(&self, name: &str, repeat: u32) -> Result<u64> {
        let object = self.object(name)?;
        let out = self.lambdactl(&[
            "test-run",
            &object,
            "--request-body",
            "index.html",
            "--repeat",
            &repeat.to_string(),
        ])?;
        // A benchmark of a program that answers wrongly measures nothing.
        if !out.contains("action:  XDP_TX")
            || !out.contains("(checksums OK)")
            || !out.contains("status OK")
        {
            bail!("{name} did not answer the request correctly under test-run:\n{out}");
        }
        parse_ns_per_run(&out)
            .with_context(|| format!("no `time: … ns/run` line in test-run output:\n{out}"))
    }

    /// xlated instruction counts of the three programs, loaded and attached (skb) one after
    /// the other on a fresh pair. `None` where bpftool is missing or says nothing useful.
    fn program_sizes(&self) -> Result<Vec<Option<u64>>> {
        let pair = self.pair("z")?;
        let mut sizes = Vec::new();
        for name in PROGRAMS {
            let object = self.object(name)?;
            let out = self.lambdactl(&[
                "-n",
                &pair.server,
                "attach",
                &object,
                "--iface",
                &pair.server_if,
                "--mode",
                "skb",
            ])?;
            let insns = parse_program_id(&out).and_then(xlated_insns);
            self.lambdactl(&["-n", &pair.server, "detach", "--iface", &pair.server_if])?;
            sizes.push(insns);
        }
        Ok(sizes)
    }
}

/// `bytes_xlated / 8` of program `id`, from bpftool.
fn xlated_insns(id: u32) -> Option<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "... xlated 1234B  jited 2345B ..."
    let after = text.split("xlated ").nth(1)?;
    let bytes: u64 = after.split('B').next()?.trim().parse().ok()?;
    Some(bytes / 8)
}

/// The program id from `lambdactl attach`'s `program id N, link id M` line.
fn parse_program_id(out: &str) -> Option<u32> {
    let after = out.split("program id ").nth(1)?;
    after.split(',').next()?.trim().parse().ok()
}

/// p50 and p99 from `round trip µs: min … p50 … p90 … p99 … max …`.
pub(crate) fn parse_round_trip(out: &str) -> Option<(f64, f64)> {
    let line = out.lines().find(|l| l.contains("round trip"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> Option<f64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some((field("p50")?, field("p99")?))
}

/// The mean from `[kernel] time:    302 ns/run mean, 290 ns min (…)` (or `[vm] time: …`).
pub(crate) fn parse_ns_per_run(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.contains("time:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "ns/run")?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

/// Two namespaces joined by a veth pair; torn down on drop (also on error or panic).
/// Which machine and commit produced the figures, and when.
pub(crate) struct Header {
    pub(crate) commit: String,
    cpu: String,
    cores: usize,
    kernel: String,
    date: String,
}

impl Header {
    pub(crate) fn collect(root: &Path) -> Header {
        let run = |program: &str, args: &[&str]| -> Option<String> {
            let out = Command::new(program)
                .current_dir(root)
                .args(args)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let mut commit =
            run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if run("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) {
            commit.push_str("+dirty");
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        Header {
            commit,
            cpu,
            cores,
            kernel: run("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
            date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        }
    }

    fn line(&self) -> String {
        self.line_for("spine")
    }

    /// `λ-NIC bench <suite> — commit …, CPU, cores, kernel, date`.
    pub(crate) fn line_for(&self, suite: &str) -> String {
        format!(
            "λ-NIC bench {suite} — commit {}, {}, {} cores, kernel {}, {}",
            self.commit, self.cpu, self.cores, self.kernel, self.date
        )
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "commit": self.commit, "cpu": self.cpu, "cores": self.cores,
            "kernel": self.kernel, "date": self.date,
        })
    }
}

struct ModeFigures {
    mode: &'static str,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

struct ProgramFigures {
    name: &'static str,
    ns: Vec<u64>,
    insns: Option<u64>,
}

impl ProgramFigures {
    fn median(&self) -> f64 {
        median(&self.ns.iter().map(|&n| n as f64).collect::<Vec<_>>())
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Report {
    header: Header,
    count: u32,
    rounds: u32,
    repeat: u32,
    test_run_rounds: u32,
    rtt: Vec<ModeFigures>,
    runs: Vec<ProgramFigures>,
}

impl Report {
    fn program(&self, name: &str) -> &ProgramFigures {
        self.runs
            .iter()
            .find(|r| r.name == name)
            .expect("every program is measured")
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.header.line());
        let _ = writeln!(
            s,
            "round trip (lambdactl invoke, static-server, {} requests per mode, medians of {} rounds)",
            self.count, self.rounds
        );
        for m in &self.rtt {
            let _ = writeln!(
                s,
                "  {:<4} p50 {:>6.1} µs   p99 {:>6.1} µs",
                m.mode,
                median(&m.p50),
                median(&m.p99)
            );
        }
        let _ = writeln!(
            s,
            "BPF_PROG_TEST_RUN ({} runs each, mean ns/run, medians of {} rounds; size = xlated insns)",
            self.repeat, self.test_run_rounds
        );
        for r in &self.runs {
            let insns = r.insns.map_or_else(|| "n/a".to_owned(), |n| n.to_string());
            let _ = writeln!(
                s,
                "  {:<18} {:>6.0} ns/run   ({insns} insns)",
                r.name,
                r.median()
            );
        }
        let (pong, base) = (self.program("pong"), self.program("baseline-raw-pong"));
        let _ = writeln!(
            s,
            "  SDK overhead: pong / baseline-raw-pong = {:.2}× ({:.0} ns / {:.0} ns, +{:.0} ns)",
            pong.median() / base.median(),
            pong.median(),
            base.median(),
            pong.median() - base.median()
        );
        s
    }

    fn json(&self) -> String {
        let h = &self.header;
        let modes: serde_json::Map<String, serde_json::Value> = self
            .rtt
            .iter()
            .map(|m| {
                let value = json!({
                    "p50_us": median(&m.p50),
                    "p99_us": median(&m.p99),
                    "p50_us_rounds": m.p50,
                    "p99_us_rounds": m.p99,
                });
                (m.mode.to_owned(), value)
            })
            .collect();
        let programs: serde_json::Map<String, serde_json::Value> = self
            .runs
            .iter()
            .map(|r| {
                let value = json!({
                    "ns_per_run": r.median(),
                    "ns_per_run_rounds": r.ns,
                    "xlated_insns": r.insns,
                });
                (r.name.to_owned(), value)
            })
            .collect();
        let (pong, base) = (self.program("pong"), self.program("baseline-raw-pong"));
        let report = json!({
            "commit": h.commit,
            "cpu": h.cpu,
            "cores": h.cores,
            "kernel": h.kernel,
            "date": h.date,
            "round_trip": {
                "requests_per_mode": self.count,
                "rounds": self.rounds,
                "modes": modes,
            },
            "test_run": {
                "repeat": self.repeat,
                "rounds": self.test_run_rounds,
                "insns_source": "bpftool prog show: bytes_xlated / 8",
                "programs": programs,
            },
            "sdk_overhead": {
                "pong_ns": pong.median(),
                "baseline_raw_pong_ns": base.median(),
                "ratio": pong.median() / base.median(),
            },
        });
        serde_json::to_string_pretty(&report).expect("plain JSON values serialise") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lambdactl_output() {
        let rtt = "status OK\nround trip µs: min 3.1  p50 5.2  p90 6.0  p99 9.8  max 40.0\n";
        assert_eq!(parse_round_trip(rtt), Some((5.2, 9.8)));
        let run = "action:  XDP_TX\ntime:    302 ns/run mean, 290 ns min (kernel-measured)\n";
        assert_eq!(parse_ns_per_run(run), Some(302));
        let attach = "attached x\n  program id 42, link id 7\n";
        assert_eq!(parse_program_id(attach), Some(42));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
