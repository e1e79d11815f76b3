//! `lambdactl stats`: per attached lambda, the kernel's run count and run time and the SDK's
//! counters per XDP action and λ status. Lambdas deployed behind a dispatcher or in coalesced
//! mode show their own SDK counters; the kernel's figures are their interface's program's (the
//! dispatcher or the coalesced program), shown once in a row of their own: the kernel counts
//! runs of the program a packet enters, not of tail-call targets or functions.
//!
//! The kernel times runs only while BPF statistics are on (see `loader::kernel`'s stats
//! module). A one-shot `stats` shows what was counted while they were; `stats --watch` turns
//! them on for as long as it runs and prints what each interval added, so its run times always
//! cover the whole interval.

use std::{
    collections::HashMap,
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use lambda_ebpf::{
    Status,
    stats::{ACTION_NAMES, StatsSnapshot},
};
use loader::{
    Host,
    kernel::{KernelRunStats, LambdaStats, RunTimeStats, StatsKind, stats_sysctl_enabled},
};
use serde_json::{Value, json};

/// The order the table shows the XDP actions in (by code: 2 PASS, 3 TX, 1 DROP, 0 ABORTED,
/// 4 REDIRECT): the common ones first.
const ACTION_COLUMNS: [(u32, &str); 5] = [
    (2, "PASS"),
    (3, "TX"),
    (1, "DROP"),
    (0, "ABORTED"),
    (4, "REDIRECT"),
];

#[derive(Args)]
pub struct StatsArgs {
    /// Only the lambda(s) on this interface.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Keep BPF run-time statistics on and print, every SECS seconds (default 1), what the
    /// interval added; the first report is the totals so far. Ctrl-C stops.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
    /// With --watch: stop after N intervals.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
    /// Print JSON: one object (with --watch, one object per line per report).
    #[arg(long)]
    json: bool,
    /// The lambda served by a `lambdactl run` process instead: its control socket, or
    /// `vm:<name>` to find it.
    /// (With --watch: what each interval added, from the VM's own counters.)
    #[arg(long, value_name = "SOCKET", conflicts_with = "iface")]
    vm: Option<String>,
}

pub fn run(args: StatsArgs) -> Result<ExitCode> {
    if let Some(spec) = &args.vm {
        return match args.watch {
            None => vm_stats(spec, args.json),
            Some(secs) => vm_watch(spec, args.json, secs, args.count),
        };
    }
    let host = Host::from_env()?;
    match args.watch {
        None => {
            let stats = host.stats(args.iface.as_deref())?;
            let sysctl = stats_sysctl_enabled();
            if args.json {
                let report = json!({
                    "bpf_stats_sysctl": sysctl,
                    "lambdas": stats.iter().map(|s| lambda_json(s, None)).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if stats.is_empty() {
                println!("no lambdas attached in this network namespace");
            } else {
                print_table(&stats, None);
                if sysctl != Some(true) {
                    println!(
                        "(RUNS and NS/RUN count only while BPF statistics are on: `lambdactl stats --watch` turns them on while it runs; sysctl kernel.bpf_stats_enabled=1 does for every program of the host)"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(secs) => watch(&host, &args, secs),
    }
}

/// `stats --vm`: the worker counters and SDK counts of a `lambdactl run` process.
fn vm_stats(spec: &str, json: bool) -> Result<ExitCode> {
    let client = crate::vm_control::Client::connect(spec)?;
    let answer = client.request(&json!({ "op": "stats" }))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} (lambdactl run, pid {}, {}):",
        answer["lambda"].as_str().unwrap_or("?"),
        answer["pid"],
        client.path().display()
    );
    print_vm_counts(&answer);
    Ok(ExitCode::SUCCESS)
}

/// The datagram counters and the SDK's counts of a VM `stats` answer (totals or deltas).
fn print_vm_counts(answer: &Value) {
    if let Some(counters) = answer["counters"].as_object() {
        let cells: Vec<String> = counters
            .iter()
            .map(|(name, n)| format!("{} {n}", name.replace('_', " ")))
            .collect();
        println!("  datagrams: {}", cells.join(", "));
    }
    match answer["sdk"].as_object() {
        Some(sdk) => {
            let named = |field: &str| {
                sdk.get(field)
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            println!(
                "  lambda counts: {} invocations; {}; responses: {}; not λ requests {}",
                sdk.get("invocations").unwrap_or(&Value::Null),
                named("actions"),
                named("statuses"),
                sdk.get("not_requests").unwrap_or(&Value::Null)
            );
        }
        None => println!("  lambda counts: none (the lambda keeps no SDK counters)"),
    }
}

/// `now - before` for every counter (numbers anywhere in the answer's objects); other values
/// are `now`'s.
fn counter_delta(now: &Value, before: &Value) -> Value {
    match (now, before) {
        (Value::Number(a), Value::Number(b)) => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) => json!(a.saturating_sub(b)),
            _ => now.clone(),
        },
        (Value::Object(a), Value::Object(b)) => Value::Object(
            a.iter()
                .map(|(k, v)| {
                    let d = b.get(k).map_or_else(|| v.clone(), |w| counter_delta(v, w));
                    (k.clone(), d)
                })
                .collect(),
        ),
        _ => now.clone(),
    }
}

/// `stats --vm S --watch`: the totals, then what each interval added, from the control socket.
fn vm_watch(spec: &str, json: bool, secs: f64, count: Option<u64>) -> Result<ExitCode> {
    if !(secs.is_finite() && secs >= 0.01) {
        bail!("--watch interval must be at least 0.01 seconds, not {secs}");
    }
    let interval = Duration::from_secs_f64(secs);
    let client = crate::vm_control::Client::connect(spec)?;
    let mut previous = client.request(&json!({ "op": "stats" }))?;
    let lambda = previous["lambda"].as_str().unwrap_or("?").to_owned();
    if json {
        println!("{}", json!({ "elapsed_s": 0.0, "totals": previous }));
    } else {
        println!(
            "{lambda} (lambdactl run, pid {}), totals so far:",
            previous["pid"]
        );
        print_vm_counts(&previous);
    }
    std::io::stdout().flush()?;
    let started = Instant::now();
    let mut reports = 0u64;
    while count.is_none_or(|n| reports < n) {
        let at = Instant::now();
        std::thread::sleep(interval);
        let now = client.request(&json!({ "op": "stats" }))?;
        let took = at.elapsed().as_secs_f64();
        let delta = counter_delta(&now, &previous);
        if json {
            println!(
                "{}",
                json!({
                    "elapsed_s": started.elapsed().as_secs_f64(),
                    "interval_s": took,
                    "added": delta,
                })
            );
        } else {
            let invocations = delta["sdk"]["invocations"].as_u64().unwrap_or(0);
            println!(
                "{lambda}, +{:.1} s: {:.0} invocations/s",
                started.elapsed().as_secs_f64(),
                invocations as f64 / took
            );
            print_vm_counts(&delta);
        }
        std::io::stdout().flush()?;
        previous = now;
        reports += 1;
    }
    Ok(ExitCode::SUCCESS)
}

fn watch(host: &Host, args: &StatsArgs, secs: f64) -> Result<ExitCode> {
    if !(secs.is_finite() && secs >= 0.01) {
        bail!("--watch interval must be at least 0.01 seconds, not {secs}");
    }
    let interval = Duration::from_secs_f64(secs);
    // Held until we return: the kernel counts run time only while it is open.
    let _stats_on = RunTimeStats::enable().context(
        "stats --watch turns BPF run-time statistics on while it runs, which needs CAP_SYS_ADMIN",
    )?;
    let mut previous = host.stats(args.iface.as_deref())?;
    let started = Instant::now();
    report(args.json, &previous, None, 0.0)?;
    let mut reports = 0u64;
    while args.count.is_none_or(|n| reports < n) {
        let at = Instant::now();
        std::thread::sleep(interval);
        let now = host.stats(args.iface.as_deref())?;
        let window = at.elapsed().as_secs_f64();
        let deltas = deltas(&previous, &now);
        report(
            args.json,
            &deltas,
            Some(window),
            started.elapsed().as_secs_f64(),
        )?;
        previous = now;
        reports += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// What each lambda of `now` added since `previous`. A lambda new since then, or whose link
/// now runs another program (an upgrade: the kernel's figures are per program), counts its
/// kernel figures from zero; the SDK counters live in a pinned map and carry on over upgrades.
fn deltas(previous: &[LambdaStats], now: &[LambdaStats]) -> Vec<LambdaStats> {
    let key = |s: &LambdaStats| (s.iface.clone(), s.lambda.clone(), s.kind.name());
    let before: HashMap<_, &LambdaStats> = previous.iter().map(|s| (key(s), s)).collect();
    now.iter()
        .map(|s| {
            let Some(b) = before.get(&key(s)) else {
                return s.clone();
            };
            let kernel = match (&s.kernel, &b.kernel) {
                (Some(n), Some(p)) if b.program_id == s.program_id => Some(n.since(p)),
                (n, _) => *n,
            };
            let sdk = match (&s.sdk, &b.sdk) {
                (Some(n), Some(p)) => Some(n.since(p)),
                (n, _) => *n,
            };
            LambdaStats {
                kernel,
                sdk,
                ..s.clone()
            }
        })
        .collect()
}

/// Prints one report: the totals (`window` `None`) or the deltas over `window` seconds.
fn report(json: bool, stats: &[LambdaStats], window: Option<f64>, elapsed: f64) -> Result<()> {
    if json {
        let line = json!({
            "kind": if window.is_some() { "interval" } else { "totals" },
            "interval_s": window,
            "elapsed_s": elapsed,
            "lambdas": stats.iter().map(|s| lambda_json(s, window)).collect::<Vec<_>>(),
        });
        println!("{line}");
    } else {
        match window {
            None => println!("totals so far (BPF run-time statistics on from now):"),
            Some(w) => println!("at {elapsed:.1} s, the last {w:.2} s:"),
        }
        if stats.is_empty() {
            println!("no lambdas attached in this network namespace");
        } else {
            print_table(stats, window);
        }
        println!();
    }
    // `--watch | tee`: every report as soon as it is made.
    std::io::stdout().flush().context("writing the report")
}

fn lambda_json(s: &LambdaStats, window: Option<f64>) -> Value {
    let sdk = s.sdk.as_ref().map(sdk_json);
    let kernel = s.kernel.as_ref().map(|k| {
        json!({
            "run_count": k.run_count,
            "run_time_ns": k.run_time_ns,
            "mean_ns": k.mean_ns(),
        })
    });
    let mut v = json!({
        "iface": s.iface,
        "kind": s.kind.name(),
        "lambda": if s.lambda.is_empty() { Value::Null } else { json!(s.lambda) },
        "program_id": s.program_id,
        "kernel": kernel,
        "sdk": sdk,
    });
    if let StatsKind::CoalescedProgram { lambdas } | StatsKind::Dispatcher { lambdas } = &s.kind {
        v["lambdas"] = json!(lambdas);
    }
    if let Some(w) = window {
        v["per_second"] = json!(invocations(s) as f64 / w);
    }
    v
}

/// The SDK's counters as JSON: per action and per status by name (also the `--vm` answer's).
pub(crate) fn sdk_json(c: &StatsSnapshot) -> Value {
    let actions: serde_json::Map<String, Value> = ACTION_NAMES
        .iter()
        .enumerate()
        .map(|(code, name)| ((*name).to_owned(), json!(c.action(code as u32))))
        .collect();
    let statuses: serde_json::Map<String, Value> = Status::ALL
        .iter()
        .map(|st| (st.name().to_owned(), json!(c.status(*st))))
        .collect();
    json!({
        "invocations": c.invocations,
        "actions": actions,
        "statuses": statuses,
        "not_requests": c.not_requests,
    })
}

/// Invocations: the SDK's count when the lambda keeps one (it counts whether or not BPF
/// statistics are on), else the kernel's (a coalesced program's: its runs).
fn invocations(s: &LambdaStats) -> u64 {
    match (&s.sdk, &s.kernel) {
        (Some(c), _) => c.invocations,
        (None, Some(k)) => k.run_count,
        (None, None) => 0,
    }
}

/// The LAMBDA cell: a coalesced program's row names its lambdas.
fn lambda_cell(s: &LambdaStats) -> String {
    match &s.kind {
        StatsKind::Attached => s.lambda.clone(),
        StatsKind::Coalesced => format!("{} (coalesced)", s.lambda),
        StatsKind::CoalescedProgram { lambdas } => {
            format!("[coalesced program: {}]", lambdas.join(","))
        }
        StatsKind::Deployed => format!("{} (tail call)", s.lambda),
        StatsKind::Dispatcher { lambdas } => format!("[dispatcher: {}]", lambdas.join(",")),
    }
}

fn print_table(stats: &[LambdaStats], window: Option<f64>) {
    let mut header: Vec<&str> = vec!["IFACE", "LAMBDA", "PROG", "INVOKED"];
    if window.is_some() {
        header.push("PER_S");
    }
    header.extend(["RUNS", "NS/RUN"]);
    header.extend(ACTION_COLUMNS.iter().map(|(_, name)| *name));
    header.extend(Status::ALL.iter().map(|s| s.name()));
    header.push("NOT_λ");
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let sdk = |f: &dyn Fn(&StatsSnapshot) -> u64| {
                s.sdk.as_ref().map_or("-".to_owned(), |c| f(c).to_string())
            };
            // A program row has no SDK counters of its own: INVOKED is its lambdas'.
            let invoked = if s.kind.is_program() {
                "-".to_owned()
            } else {
                invocations(s).to_string()
            };
            let mut row = vec![
                s.iface.clone(),
                lambda_cell(s),
                s.program_id.to_string(),
                invoked,
            ];
            if let Some(w) = window {
                row.push(if s.kind.is_program() {
                    "-".to_owned()
                } else {
                    format!("{:.0}", invocations(s) as f64 / w)
                });
            }
            // A coalesced or tail-called lambda's runs are its interface's program's: shown
            // once, on that program's row.
            match &s.kernel {
                Some(k) => {
                    row.push(k.run_count.to_string());
                    row.push(mean_text(k));
                }
                None => row.extend(["^".to_owned(), "^".to_owned()]),
            }
            for (code, _) in ACTION_COLUMNS {
                row.push(sdk(&|c| c.action(code)));
            }
            for status in Status::ALL {
                row.push(sdk(&|c| c.status(status)));
            }
            row.push(sdk(&|c| c.not_requests));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // Names left, numbers right.
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in &rows {
        print(row);
    }
}

fn mean_text(k: &KernelRunStats) -> String {
    k.mean_ns().map_or("-".to_owned(), |ns| format!("{ns:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lambda(iface: &str, program_id: u32, runs: u64, ok: u64) -> LambdaStats {
        let mut slots = vec![0u64; lambda_ebpf::stats::SLOTS as usize];
        slots[3] = ok;
        slots[lambda_ebpf::stats::SLOT_STATUS_BASE as usize] = ok;
        LambdaStats {
            iface: iface.into(),
            lambda: "static-server".into(),
            kind: StatsKind::Attached,
            program_id,
            kernel: Some(KernelRunStats {
                run_count: runs,
                run_time_ns: runs * 100,
            }),
            sdk: Some(StatsSnapshot::from_slots(&slots)),
        }
    }

    #[test]
    fn deltas_follow_programs_and_new_lambdas() {
        let before = vec![lambda("a", 1, 10, 10), lambda("b", 2, 5, 5)];
        let now = vec![
            lambda("a", 1, 15, 15),
            // Upgraded: a new program counts from zero; the SDK map carries on.
            lambda("b", 3, 2, 7),
            lambda("c", 4, 1, 1),
        ];
        let d = deltas(&before, &now);
        assert_eq!(d[0].kernel.unwrap().run_count, 5);
        assert_eq!(d[0].sdk.unwrap().status(Status::Ok), 5);
        assert_eq!(d[1].kernel.unwrap().run_count, 2);
        assert_eq!(d[1].sdk.unwrap().invocations, 2);
        assert_eq!(d[2].kernel.unwrap().run_count, 1);
    }

    #[test]
    fn coalesced_rows_keep_apart_and_show_the_program_once() {
        // One interface, a coalesced program and two of its lambdas.
        let program = |runs: u64| LambdaStats {
            lambda: String::new(),
            kind: StatsKind::CoalescedProgram {
                lambdas: vec!["static-server".into(), "whoami".into()],
            },
            sdk: None,
            ..lambda("c", 9, runs, 0)
        };
        let member = |name: &str, ok: u64| LambdaStats {
            lambda: name.into(),
            kind: StatsKind::Coalesced,
            kernel: None,
            ..lambda("c", 9, 0, ok)
        };
        let before = vec![program(10), member("static-server", 4), member("whoami", 6)];
        let now = vec![
            program(25),
            member("static-server", 9),
            member("whoami", 16),
        ];
        let d = deltas(&before, &now);
        assert_eq!(d[0].kernel.unwrap().run_count, 15);
        assert_eq!(d[1].sdk.unwrap().invocations, 5);
        assert_eq!(d[2].sdk.unwrap().invocations, 10);
        assert_eq!(d[1].kernel, None);
        let v = lambda_json(&d[0], None);
        assert_eq!(v["kind"], "coalesced-program");
        assert_eq!(v["lambda"], Value::Null);
        assert_eq!(v["lambdas"][1], "whoami");
        assert_eq!(v["kernel"]["run_count"], 15);
        let v = lambda_json(&d[2], None);
        assert_eq!(v["kind"], "coalesced");
        assert_eq!(v["kernel"], Value::Null);
        assert_eq!(v["sdk"]["invocations"], 10);
        assert_eq!(
            lambda_cell(&d[0]),
            "[coalesced program: static-server,whoami]"
        );
    }

    #[test]
    fn json_names_actions_and_statuses() {
        let v = lambda_json(&lambda("a", 1, 4, 4), Some(2.0));
        assert_eq!(v["sdk"]["actions"]["XDP_TX"], 4);
        assert_eq!(v["sdk"]["statuses"]["OK"], 4);
        assert_eq!(v["kernel"]["mean_ns"], 100.0);
        assert_eq!(v["per_second"], 2.0);
    }
}
