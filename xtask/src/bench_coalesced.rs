//! `cargo xtask bench coalesced`: per-request round trip of the same lambdas deployed behind
//! the tail-call dispatcher and in one coalesced program (`deploy --mode coalesced`), both in
//! drv mode on veth pairs of their own, in the same run: rounds interleaved, medians, ratios,
//! pinned to one CPU.
//!
//! The set is the static-server (port 9000, any id) and two `whoami` lambdas (port 9100, ids
//! 1 and 2). A third pair runs the same set as a NIC would get it: the NIC builds
//! (`<name>-nic.o`: direct packet access, checksums in code, the SDK's parser and reply shared)
//! lowered for the NFP-4000 and coalesced (`deploy --mode coalesced --lower`). Measured: the
//! static-server, and `whoami` #2, whose rule the coalesced dispatch compares last.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::bench::{Header, median, require_root};
use crate::bench_density::round_trip;
use crate::bench_vm::{PINNED_CPU, pin_to_cpu};
use crate::netns::{VethPair, build_lambdactl};

pub struct CoalescedOptions {
    /// Requests per round-trip measurement.
    pub count: u32,
    /// Rounds (the six measurements interleaved, medians reported).
    pub rounds: u32,
}

pub fn coalesced(root: &Path, opts: &CoalescedOptions) -> Result<()> {
    require_root()?;
    if opts.count == 0 || opts.rounds == 0 {
        bail!("--count and --rounds must be at least 1");
    }
    let lambdactl = build_lambdactl(root)?;
    let dir = super::lambdas_dir(root);
    let object = |name: &str| -> Result<String> {
        let path = dir.join(format!("{name}.o"));
        if !path.exists() {
            bail!("{} is missing after build-ebpf", path.display());
        }
        Ok(path.to_str().context("non-UTF-8 path")?.to_owned())
    };
    let (web, whoami) = (object("static-server")?, object("whoami")?);
    let (web_nic, whoami_nic) = (object("static-server-nic")?, object("whoami-nic")?);
    let header = Header::collect(root);
    println!("==> {}", header.line_for("coalesced"));

    let tail = VethPair::create(&lambdactl, "coalesced", "t")?;
    let coal = VethPair::create(&lambdactl, "coalesced", "c")?;
    let nic = VethPair::create(&lambdactl, "coalesced", "n")?;
    let set = |web: &str, whoami: &str| {
        [
            ("web", web.to_owned(), "port=9000"),
            ("whoami-1", whoami.to_owned(), "port=9100,id=1"),
            ("whoami-2", whoami.to_owned(), "port=9100,id=2"),
        ]
    };
    let deployments: [(&VethPair, _, &[&str]); 3] = [
        (&tail, set(&web, &whoami), &["--mode", "drv"]),
        (
            &coal,
            set(&web, &whoami),
            &["--mode", "coalesced", "--xdp", "drv"],
        ),
        (
            &nic,
            set(&web_nic, &whoami_nic),
            &[
                "--mode",
                "coalesced",
                "--xdp",
                "drv",
                "--lower",
                "--nic",
                "nfp-4000",
            ],
        ),
    ];
    for (pair, set, mode) in &deployments {
        // drv-mode XDP_TX on a veth needs a program on the peer (see netns.rs).
        pair.lambdactl_in(
            &pair.client,
            &[
                "attach",
                &web,
                "--iface",
                &pair.client_if,
                "--mode",
                "drv",
                "--port",
                "1",
            ],
        )?;
        for (name, object, rule) in set {
            let mut args = vec![
                "deploy",
                object.as_str(),
                "--iface",
                &pair.server_if,
                "--name",
                name,
                "--match",
                rule,
            ];
            args.extend(mode.iter());
            let out = pair.lambdactl_in(&pair.server, &args)?;
            if let Some(line) = out
                .lines()
                .find(|l| l.contains("runs one coalesced program"))
            {
                println!("    {line}");
            }
        }
    }

    pin_to_cpu(PINNED_CPU)?;
    // (label, pair, port, lambda id, body, what the answer must contain)
    // Per lambda: tail-call first, the row the other two are divided by.
    let cases: [(&str, &VethPair, u16, u32, &str, &str); 6] = [
        (
            "static-server, tail-call",
            &tail,
            9000,
            1,
            "index.html",
            "<html>",
        ),
        (
            "static-server, coalesced",
            &coal,
            9000,
            1,
            "index.html",
            "<html>",
        ),
        (
            "static-server, NIC lowered",
            &nic,
            9000,
            1,
            "index.html",
            "<html>",
        ),
        (
            "whoami #2, tail-call",
            &tail,
            9100,
            2,
            "who?",
            "lambda=0000000002",
        ),
        (
            "whoami #2, coalesced",
            &coal,
            9100,
            2,
            "who?",
            "lambda=0000000002",
        ),
        (
            "whoami #2, NIC lowered",
            &nic,
            9100,
            2,
            "who?",
            "lambda=0000000002",
        ),
    ];
    let mut p50 = vec![Vec::new(); cases.len()];
    let mut p99 = vec![Vec::new(); cases.len()];
    for round in 0..opts.rounds {
        for k in 0..cases.len() {
            let i = (k + round as usize) % cases.len();
            let (name, pair, port, id, body, expect) = cases[i];
            let (a, b) = round_trip(pair, port, id, body, expect, opts.count)
                .with_context(|| format!("round trip {name}, round {}", round + 1))?;
            println!(
                "    round {} {name}: p50 {a:.1} µs, p99 {b:.1} µs",
                round + 1
            );
            p50[i].push(a);
            p99[i].push(b);
        }
    }
    for pair in [&tail, &coal, &nic] {
        pair.lambdactl_in(&pair.server, &["undeploy", "--all"])?;
    }

    let med = |v: &[f64]| median(v);
    println!();
    println!("{}", header.line_for("coalesced"));
    println!(
        "round trip over a veth pair, drv mode, pinned to CPU {PINNED_CPU}, medians of {} rounds of {} requests:",
        opts.rounds, opts.count
    );
    println!(
        "{:<28} {:>9} {:>9} {:>22}",
        "lambda", "p50 µs", "p99 µs", "÷ tail-call"
    );
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let base = i - i % 3;
        let ratio = (i != base).then(|| {
            (
                med(&p50[i]) / med(&p50[base]),
                med(&p99[i]) / med(&p99[base]),
            )
        });
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>22}",
            case.0,
            med(&p50[i]),
            med(&p99[i]),
            ratio.map_or_else(String::new, |(a, b)| format!("p50 {a:.3}× p99 {b:.3}×"))
        );
        rows.push(serde_json::json!({
            "case": case.0,
            "p50_us": med(&p50[i]),
            "p99_us": med(&p99[i]),
            "p50_ratio_to_tail_call": ratio.map(|r| r.0),
            "p99_ratio_to_tail_call": ratio.map(|r| r.1),
            "p50_rounds": p50[i],
            "p99_rounds": p99[i],
        }));
    }
    let report = serde_json::json!({
        "suite": "coalesced",
        "pinned_cpu": PINNED_CPU,
        "machine": header.json(),
        "count": opts.count,
        "rounds": opts.rounds,
        "round_trip": rows,
    });
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("coalesced-{}.json", header.commit));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}
