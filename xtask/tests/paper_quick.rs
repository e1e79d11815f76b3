//! `cargo xtask bench paper --quick` into a temporary directory: the report, the JSON and the
//! plots are produced, every column either answered every request correctly or states why it
//! could not run, and the columns this machine always has (XDP drv and skb, VM JIT and
//! interpreter, native) did run. Needs root and memcached; skips with a reason without them,
//! except under CI=true, where it must run.

use std::path::PathBuf;
use std::process::Command;

fn enabled(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let memcached = Command::new("memcached").arg("-h").output().is_ok();
    let missing = match (root, memcached) {
        (true, true) => return true,
        (false, _) => "root (network namespaces, XDP, BPF maps)",
        (true, false) => "memcached (apt-get install memcached)",
    };
    if ci {
        panic!("{test}: CI=true but this needs {missing}: it must run in CI");
    }
    eprintln!("skipping {test}: needs {missing}");
    false
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quick_paper_bench_answers_on_every_column() {
    if !enabled("quick_paper_bench_answers_on_every_column") {
        return;
    }
    let out = TempDir(std::env::temp_dir().join(format!("lnic-paper-test-{}", std::process::id())));
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "paper", "--quick", "--out"])
        .arg(&out.0)
        .output()
        .expect("running xtask bench paper");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench paper --quick failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    // Progress is shown while it runs.
    assert!(stdout.contains("==> [1] XDP drv"), "{stdout}");

    let md = std::fs::read_to_string(out.0.join("paper.md")).expect("paper.md");
    for section in [
        "Table 1",
        "Table 2",
        "Table 3",
        "gateway",
        "headline ratios",
    ] {
        assert!(md.contains(section), "paper.md lacks {section}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("paper.json")).unwrap())
            .expect("paper.json parses");
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let columns = json["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), 8, "every column is reported");
    for c in columns {
        let name = c["column"].as_str().unwrap();
        if let Some(reason) = c["reason"].as_str() {
            assert!(!reason.is_empty(), "{name}: empty reason");
            assert!(!reason.starts_with("failed"), "{name}: {reason}");
            assert!(
                !matches!(
                    name,
                    "xdp-drv" | "xdp-skb" | "vm-jit" | "vm-interpreter" | "native"
                ),
                "{name} must run here: {reason}"
            );
            // CI installs podman, runc and the fonts: there every column must run.
            assert!(!in_ci, "{name} must run in CI: {reason}");
            continue;
        }
        let latency = c["latency"].as_array().unwrap();
        assert_eq!(latency.len(), 4, "{name}: four workloads");
        for cell in latency {
            let r = &cell["result"];
            assert_eq!(r["answered_correctly"], true, "{name}: {cell}");
            assert_eq!(r["wrong_answers"], 0, "{name}: {cell}");
            assert!(r["requests"].as_u64().unwrap() > 0, "{name}: {cell}");
            assert!(r["avg_us"].as_f64().unwrap() > 0.0, "{name}: {cell}");
        }
        let completion = c["completion"].as_array().unwrap();
        if let Some(why) = c["completion_reason"].as_str() {
            // A column whose Table 2 cannot run says why (the coalesced one).
            assert!(completion.is_empty() && !why.is_empty(), "{name}: {why}");
        } else {
            assert_eq!(completion.len(), 3, "{name}: three thread counts");
        }
        for x in completion {
            assert_eq!(x["wrong_answers"], 0, "{name}: {x}");
            assert!(x["seconds"].as_f64().unwrap() > 0.0, "{name}: {x}");
        }
        let resources = &c["resources"];
        assert!(resources.is_object(), "{name}: no Table 3 figures");
        let memory =
            resources["rss_bytes"].as_u64().unwrap() + resources["kernel_bytes"].as_u64().unwrap();
        assert!(memory > 0, "{name}: no memory counted: {resources}");
    }
    for g in json["gateway"].as_array().expect("gateway") {
        for cell in g["latency"].as_array().unwrap() {
            let r = &cell["result"];
            match r["reason"].as_str() {
                Some(reason) => {
                    assert!(!reason.starts_with("failed"), "gateway {g}: {reason}");
                    assert!(
                        !in_ci,
                        "every gateway cell must be measured in CI: {reason}"
                    );
                }
                None => assert_eq!(r["answered_correctly"], true, "gateway: {cell}"),
            }
        }
    }
    for plot in json["plots"].as_array().unwrap() {
        let path = out.0.join(plot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
    }
    assert!(
        json["plots"].as_array().unwrap().len() == 5
            || (!in_ci && json["plots_skipped"].is_string()),
        "plots neither drawn nor skipped with a reason"
    );
}
