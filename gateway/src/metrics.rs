//! The Prometheus text exposition of OpenFaaS's gateway metrics: invocation totals by function
//! and HTTP code, the latency histogram, and the deployed functions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Prometheus's default buckets, which OpenFaaS's gateway histogram uses too (seconds).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Non-cumulative counts per bucket, plus one for +Inf.
    buckets: [u64; BUCKETS.len() + 1],
}

#[derive(Default)]
pub struct Metrics {
    /// (function, HTTP code) → observations.
    series: Mutex<BTreeMap<(String, u16), Series>>,
}

impl Metrics {
    pub fn observe(&self, function: &str, code: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut series = self.series.lock().expect("metrics");
        let s = series.entry((function.to_owned(), code)).or_default();
        s.count += 1;
        s.sum += secs;
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        s.buckets[bucket] += 1;
    }

    /// Calls of `function` observed so far, whatever their code.
    pub fn invocations(&self, function: &str) -> u64 {
        self.series
            .lock()
            .expect("metrics")
            .iter()
            .filter(|((f, _), _)| f == function)
            .map(|(_, s)| s.count)
            .sum()
    }

    /// The exposition text; `functions` gives each deployed function's replicas.
    pub fn render(&self, functions: &[(String, u32)]) -> String {
        let series = self.series.lock().expect("metrics");
        let mut out = String::new();
        out.push_str("# HELP gateway_function_invocation_total Function metrics\n");
        out.push_str("# TYPE gateway_function_invocation_total counter\n");
        for ((function, code), s) in series.iter() {
            let _ = writeln!(
                out,
                "gateway_function_invocation_total{{code=\"{code}\",function_name=\"{}\"}} {}",
                escape(function),
                s.count
            );
        }
        out.push_str("# HELP gateway_functions_seconds Function time taken\n");
        out.push_str("# TYPE gateway_functions_seconds histogram\n");
        for ((function, code), s) in series.iter() {
            let labels = format!("code=\"{code}\",function_name=\"{}\"", escape(function));
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "gateway_functions_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "gateway_functions_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "gateway_functions_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(
                out,
                "gateway_functions_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out.push_str("# HELP gateway_service_count Current count of replicas for function\n");
        out.push_str("# TYPE gateway_service_count gauge\n");
        for (function, replicas) in functions {
            let _ = writeln!(
                out,
                "gateway_service_count{{function_name=\"{}\"}} {replicas}",
                escape(function)
            );
        }
        out
    }
}

/// Label values escape backslash, quote and newline (the names we accept have none, but the
/// format must hold whatever reaches it).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.observe("f", 200, Duration::from_millis(1));
        m.observe("f", 200, Duration::from_millis(30));
        m.observe("f", 504, Duration::from_secs(20));
        let text = m.render(&[("f".into(), 1)]);
        assert!(
            text.contains("gateway_function_invocation_total{code=\"200\",function_name=\"f\"} 2")
        );
        assert!(
            text.contains("gateway_function_invocation_total{code=\"504\",function_name=\"f\"} 1")
        );
        assert!(text.contains(
            "gateway_functions_seconds_bucket{code=\"200\",function_name=\"f\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "gateway_functions_seconds_bucket{code=\"200\",function_name=\"f\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "gateway_functions_seconds_bucket{code=\"504\",function_name=\"f\",le=\"10\"} 0"
        ));
        assert!(text.contains(
            "gateway_functions_seconds_bucket{code=\"504\",function_name=\"f\",le=\"+Inf\"} 1"
        ));
        assert!(text.contains("gateway_service_count{function_name=\"f\"} 1"));
        assert_eq!(m.invocations("f"), 3);
        assert_eq!(m.invocations("g"), 0);
    }
}
