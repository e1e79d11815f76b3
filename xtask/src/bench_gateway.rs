//! `cargo xtask bench gateway`: HTTP load with `wrk` (64 connections, 30 s by default) against
//! the static-server behind `lambdactl gateway`, once per backend in one run: XDP (drv, root),
//! the VM, and the native baseline (`--backend native`: `lambdactl baseline static-server`
//! children). Every column must finish with
//! zero socket errors, zero timeouts and zero non-2xx answers; the report gives requests/s and
//! the p50/p99 latency wrk measured. The same data goes to `target/bench/gateway-<commit>.json`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::Header;
use crate::gateway::GatewayChild;
use crate::netns::build_lambdactl;

pub struct GatewayOptions {
    /// wrk's `-d`, in seconds.
    pub duration: u32,
    pub connections: u32,
    pub threads: u32,
}

/// One column's figures, parsed from wrk's `--latency` report.
#[derive(Debug, Default)]
struct WrkFigures {
    requests: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    socket_errors: u64,
    timeouts: u64,
    non_2xx: u64,
}

pub fn gateway(root: &Path, opts: &GatewayOptions) -> Result<()> {
    if opts.duration == 0 || opts.connections == 0 || opts.threads == 0 {
        bail!("--duration, --connections and --threads must be at least 1");
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed: `apt-get install wrk` (Debian's package)");
    }
    let lambdactl = build_lambdactl(root)?;
    let header = Header::collect(root);
    println!("==> {}", header.line_for("gateway"));
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let mut backends = Vec::new();
    if root_user {
        backends.push("drv");
    } else {
        println!("note: not root: the XDP column is skipped");
    }
    backends.push("vm");
    // The native baseline (`lambdactl baseline static-server`) behind the same gateway.
    backends.push("native");

    let mut rows = Vec::new();
    for backend in backends {
        let workers = "2";
        let gw = GatewayChild::start(
            &lambdactl,
            &[
                "--backend",
                backend,
                "--no-auth",
                "--deploy",
                "static-server",
                "--vm-workers",
                workers,
            ],
        )?;
        let url = format!("http://{}/function/static-server/index.html", gw.addr);
        // Warm up (ARP, caches) and check the answer before measuring.
        let warm = Command::new("wrk")
            .args(["-t1", "-c4", "-d1s", &url])
            .output()
            .context("running wrk")?;
        if !warm.status.success() {
            bail!(
                "wrk warm-up failed: {}",
                String::from_utf8_lossy(&warm.stderr)
            );
        }
        println!(
            "==> wrk -t{} -c{} -d{}s --latency --timeout 5s {url}   (gateway on {backend})",
            opts.threads, opts.connections, opts.duration
        );
        let out = Command::new("wrk")
            .args([
                &format!("-t{}", opts.threads),
                &format!("-c{}", opts.connections),
                &format!("-d{}s", opts.duration),
                "--latency",
                "--timeout",
                "5s",
                &url,
            ])
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("wrk failed: {}{text}", String::from_utf8_lossy(&out.stderr));
        }
        let figures =
            parse_wrk(&text).with_context(|| format!("cannot read wrk's report:\n{text}"))?;
        // The gateway's own count of answers that were not 200 (504s for lost calls).
        let metrics = crate::gateway::http(gw.addr, "GET", "/metrics", None, b"")?.1;
        let gateway_non_200: u64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("gateway_function_invocation_total{") && !l.contains("code=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        drop(gw);
        println!(
            "    {backend}: {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, {} requests, {} socket errors, {} timeouts, {} non-2xx, gateway non-200 {gateway_non_200}",
            figures.requests_per_sec,
            figures.p50_ms,
            figures.p99_ms,
            figures.requests,
            figures.socket_errors,
            figures.timeouts,
            figures.non_2xx
        );
        rows.push((backend, figures, gateway_non_200));
    }

    println!();
    println!("| gateway backend | requests/s | p50 | p99 | errors | timeouts | non-2xx |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (backend, f, gw_non_200) in &rows {
        println!(
            "| {backend} | {:.0} | {:.3} ms | {:.3} ms | {} | {} | {} |",
            f.requests_per_sec,
            f.p50_ms,
            f.p99_ms,
            f.socket_errors,
            f.timeouts,
            f.non_2xx.max(*gw_non_200)
        );
    }
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let json_path = out_dir.join(format!("gateway-{}.json", header.commit));
    let report = json!({
        "machine": header.json(),
        "duration_s": opts.duration,
        "connections": opts.connections,
        "threads": opts.threads,
        "rows": rows.iter().map(|(b, f, g)| json!({
            "backend": b, "requests": f.requests, "requests_per_sec": f.requests_per_sec,
            "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "socket_errors": f.socket_errors,
            "timeouts": f.timeouts, "non_2xx": f.non_2xx, "gateway_non_200": g,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    println!("(written to {})", json_path.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, f, g)| f.socket_errors + f.timeouts + f.non_2xx + g > 0)
        .map(|(b, _, _)| *b)
        .collect();
    if !failed.is_empty() {
        bail!("errors or timeouts under load on: {}", failed.join(", "));
    }
    Ok(())
}

/// Reads wrk's report: `Requests/sec:`, the `--latency` distribution, `Socket errors:` and
/// `Non-2xx or 3xx responses:`.
fn parse_wrk(text: &str) -> Option<WrkFigures> {
    let mut f = WrkFigures::default();
    let mut saw_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => {
                f.requests_per_sec = rate.parse().ok()?;
                saw_rate = true;
            }
            ["50%", value] => f.p50_ms = duration_ms(value)?,
            ["99%", value] => f.p99_ms = duration_ms(value)?,
            [count, "requests", "in", ..] => f.requests = count.parse().ok()?,
            [
                "Socket",
                "errors:",
                "connect",
                c,
                "read",
                r,
                "write",
                w,
                "timeout",
                t,
            ] => {
                let n = |s: &str| s.trim_end_matches(',').parse::<u64>().ok();
                f.socket_errors = n(c)? + n(r)? + n(w)?;
                f.timeouts = n(t)?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => f.non_2xx = n.parse().ok()?,
            _ => {}
        }
    }
    saw_rate.then_some(f)
}

/// wrk prints `812.00us`, `1.23ms`, `1.01s`.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 2s test @ http://127.0.0.1:1/function/static-server/index.html
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms  812.00us  20.01ms   90.00%
    Req/Sec    10.00k     1.00k   12.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    3.00ms
     90%    4.00ms
     99%    1.01s
  40000 requests in 2.00s, 8.00MB read
  Socket errors: connect 0, read 1, write 2, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  19999.50
Transfer/sec:      4.00MB
";
        let f = parse_wrk(report).unwrap();
        assert_eq!(f.requests, 40_000);
        assert!((f.requests_per_sec - 19_999.5).abs() < 1e-9);
        assert!((f.p50_ms - 0.812).abs() < 1e-9);
        assert!((f.p99_ms - 1010.0).abs() < 1e-9);
        assert_eq!((f.socket_errors, f.timeouts, f.non_2xx), (3, 3, 4));
        assert!(parse_wrk("nothing").is_none());
    }
}
