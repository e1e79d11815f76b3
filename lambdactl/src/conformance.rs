//! `lambdactl conformance`: runs a bpf_conformance suite (`*.data` files) against the kernel
//! (BPF_PROG_TEST_RUN, the reference), the VM interpreter and the VM JIT, and counts what each
//! backend did with each file.

use std::{
    collections::BTreeMap,
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use ebpf_isa::conformance::{Expected, TestCase, load_test};
use loader::kernel::{KernelValue, RawRunError, run_raw_in_kernel};
use loader::verify::VerifyError;
use loader::vm::{DEFAULT_BUDGET, Engine, VmError, raw::run_raw};
use serde::Serialize;

#[derive(Args)]
pub(crate) struct ConformanceArgs {
    /// The suite: a folder with a `tests/` folder of `.data` files, or a folder of `.data`
    /// files.
    dir: PathBuf,
    /// Which backends to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    backend: Vec<BackendSel>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Instructions one VM run may execute before it is stopped.
    #[arg(long, default_value_t = DEFAULT_BUDGET, value_name = "N")]
    budget: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendSel {
    /// BPF_PROG_TEST_RUN in the kernel (needs root): the reference.
    Kernel,
    /// The userspace VM's interpreter.
    Interpreter,
    /// The userspace VM's JIT (rbpf).
    Jit,
    /// All three.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Kernel,
    Interpreter,
    Jit,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Interpreter => "interpreter",
            Backend::Jit => "jit",
        }
    }
}

/// What one backend did with one file.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
enum Outcome {
    /// The expected result, or the expected refusal.
    Pass,
    /// A result different from the expected one.
    FailWrongAnswer { expected: String, got: String },
    /// A result where the file expects the program to be refused.
    FailShouldHaveErrored { got: String },
    /// The backend failed while running a program that should have given a result (a VM
    /// runtime error, a panic, or a failed test-run syscall).
    FailErrored { reason: String },
    /// The VM refused the program up front (an instruction or helper it does not have): not a
    /// wrong answer.
    Refused { reason: String },
    /// The kernel verifier rejected a program that has an expected result.
    KernelRejected { reason: String },
    /// Nothing to run or nothing to compare with.
    Skipped { reason: String },
}

impl Outcome {
    fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::FailWrongAnswer { .. }
                | Outcome::FailShouldHaveErrored { .. }
                | Outcome::FailErrored { .. }
        )
    }

    /// A value different from the expected one (a value where an error was expected is a
    /// failure too, counted apart).
    fn is_wrong_answer(&self) -> bool {
        matches!(self, Outcome::FailWrongAnswer { .. })
    }

    fn reason(&self) -> String {
        match self {
            Outcome::Pass => String::new(),
            Outcome::FailWrongAnswer { expected, got } => {
                format!("wrong answer: expected {expected}, got {got}")
            }
            Outcome::FailShouldHaveErrored { got } => {
                format!("should have been refused, returned {got}")
            }
            Outcome::FailErrored { reason } => format!("error instead of a result: {reason}"),
            Outcome::Refused { reason }
            | Outcome::KernelRejected { reason }
            | Outcome::Skipped { reason } => reason.clone(),
        }
    }
}

/// Counts per outcome for one backend.
#[derive(Clone, Debug, Default, Serialize)]
struct Counts {
    pass: usize,
    fail_wrong_answer: usize,
    fail_should_have_errored: usize,
    fail_errored: usize,
    refused: usize,
    kernel_rejected: usize,
    skipped: usize,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        let slot = match outcome {
            Outcome::Pass => &mut self.pass,
            Outcome::FailWrongAnswer { .. } => &mut self.fail_wrong_answer,
            Outcome::FailShouldHaveErrored { .. } => &mut self.fail_should_have_errored,
            Outcome::FailErrored { .. } => &mut self.fail_errored,
            Outcome::Refused { .. } => &mut self.refused,
            Outcome::KernelRejected { .. } => &mut self.kernel_rejected,
            Outcome::Skipped { .. } => &mut self.skipped,
        };
        *slot += 1;
    }

    fn total(&self) -> usize {
        self.pass
            + self.fail_wrong_answer
            + self.fail_should_have_errored
            + self.fail_errored
            + self.refused
            + self.kernel_rejected
            + self.skipped
    }
}

#[derive(Debug, Serialize)]
struct Entry {
    file: String,
    backend: Backend,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Serialize)]
struct Unreadable {
    file: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct Disagreement {
    file: String,
    engine: Backend,
    kernel: String,
    /// How many bits of the kernel's `r0` were known and compared (32 or 64).
    kernel_bits: u32,
    vm: String,
}

#[derive(Debug, Default, Serialize)]
struct KernelBits {
    /// Results whose full 64 bits the kernel gave (compared on 64 bits).
    full_64: usize,
    /// Results compared on their low 32 bits only (the wrapped run was refused).
    low_32_only: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    dir: PathBuf,
    files: usize,
    backends: BTreeMap<Backend, Counts>,
    /// Why the kernel column is missing, when it was asked for but could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_unavailable: Option<String>,
    kernel_result_bits: KernelBits,
    unreadable: Vec<Unreadable>,
    /// Every non-pass outcome (failures, refusals, rejections, skips).
    results: Vec<Entry>,
    disagreements: Vec<Disagreement>,
    /// VM results different from the expected ones (the exit status is non-zero when this is
    /// not zero).
    vm_wrong_answers: usize,
}

/// What a backend produced, before it is judged against the file's expectation.
enum Run {
    Value(u64),
    KernelValue(KernelValue),
    /// Refused up front: an instruction or helper the engine does not have.
    Refused(String),
    /// Rejected by the kernel verifier (its log's last line).
    Rejected(String),
    /// Failed while running.
    Failed(String),
}

pub(crate) fn run(args: ConformanceArgs) -> Result<ExitCode> {
    let backends = selected(&args.backend);
    let (dir, files) = suite_files(&args.dir)?;
    let report = run_suite(&dir, &files, &backends, args.budget)?;
    if report.unreadable.len() == report.files {
        bail!(
            "none of the {} .data files in {} could be read (first: {}: {})",
            report.files,
            dir.display(),
            report.unreadable[0].file,
            report.unreadable[0].error
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &backends);
    }
    Ok(if report.vm_wrong_answers > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn selected(sel: &[BackendSel]) -> Vec<Backend> {
    let mut out = Vec::new();
    for s in sel {
        let add: &[Backend] = match s {
            BackendSel::Kernel => &[Backend::Kernel],
            BackendSel::Interpreter => &[Backend::Interpreter],
            BackendSel::Jit => &[Backend::Jit],
            BackendSel::All => &[Backend::Kernel, Backend::Interpreter, Backend::Jit],
        };
        for b in add {
            if !out.contains(b) {
                out.push(*b);
            }
        }
    }
    out.sort();
    out
}

/// The folder holding the `.data` files, and the files, sorted by name.
fn suite_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let tests = dir.join("tests");
    let dir = if tests.is_dir() {
        tests
    } else {
        dir.to_owned()
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "data") && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("no .data files in {}", dir.display());
    }
    files.sort();
    Ok((dir, files))
}

fn run_suite(dir: &Path, files: &[PathBuf], backends: &[Backend], budget: u64) -> Result<Report> {
    let mut report = Report {
        dir: dir.to_owned(),
        files: files.len(),
        backends: backends.iter().map(|b| (*b, Counts::default())).collect(),
        kernel_unavailable: None,
        kernel_result_bits: KernelBits::default(),
        unreadable: Vec::new(),
        results: Vec::new(),
        disagreements: Vec::new(),
        vm_wrong_answers: 0,
    };
    let explicit_kernel_only = backends == [Backend::Kernel];
    for path in files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let case = match load_test(path) {
            Ok(case) => case,
            Err(e) => {
                report.unreadable.push(Unreadable {
                    file,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let mut kernel_value = None;
        let mut vm_values = Vec::new();
        for &backend in backends {
            if backend == Backend::Kernel && report.kernel_unavailable.is_some() {
                continue;
            }
            let run = if case.program.is_empty() {
                None
            } else {
                Some(match backend {
                    Backend::Kernel => match run_kernel(&case) {
                        Ok(run) => run,
                        Err(unavailable) => {
                            if explicit_kernel_only {
                                bail!("the kernel backend cannot run: {unavailable}");
                            }
                            report.kernel_unavailable = Some(unavailable);
                            report.backends.remove(&Backend::Kernel);
                            continue;
                        }
                    },
                    Backend::Interpreter => run_vm(&case, Engine::Interpreter, budget),
                    Backend::Jit => run_jit_isolated(&case, budget),
                })
            };
            match &run {
                Some(Run::KernelValue(v)) => {
                    kernel_value = Some(*v);
                    if matches!(case.expected, Expected::Result(_)) {
                        if v.high.is_some() {
                            report.kernel_result_bits.full_64 += 1;
                        } else {
                            report.kernel_result_bits.low_32_only += 1;
                        }
                    }
                }
                Some(Run::Value(v)) => vm_values.push((backend, *v)),
                _ => {}
            }
            let outcome = judge(&case, run);
            if backend != Backend::Kernel && outcome.is_wrong_answer() {
                report.vm_wrong_answers += 1;
            }
            if let Some(counts) = report.backends.get_mut(&backend) {
                counts.add(&outcome);
            }
            if !matches!(outcome, Outcome::Pass) {
                report.results.push(Entry {
                    file: file.clone(),
                    backend,
                    outcome,
                });
            }
        }
        if let Some(kernel) = kernel_value {
            for (engine, value) in vm_values {
                if !kernel.agrees_with(value) {
                    report.disagreements.push(Disagreement {
                        file: file.clone(),
                        engine,
                        kernel: kernel.to_string(),
                        kernel_bits: kernel.bits(),
                        vm: hex(value),
                    });
                }
            }
        }
    }
    Ok(report)
}

/// Runs the case in the kernel; `Err` when the kernel backend cannot run at all (no
/// privileges), which takes the whole column out.
fn run_kernel(case: &TestCase) -> Result<Run, String> {
    match run_raw_in_kernel(&case.program, &case.memory) {
        Ok(value) => Ok(Run::KernelValue(value)),
        Err(RawRunError::VerifierRejected { log, errno }) => {
            Ok(Run::Rejected(verifier_reason(&log, &errno)))
        }
        Err(e @ RawRunError::PermissionDenied { .. }) => Err(e.to_string()),
        Err(e) => Ok(Run::Failed(e.to_string())),
    }
}

/// The verifier's reason: the last line of its log before the statistics it ends with.
fn verifier_reason(log: &str, errno: &std::io::Error) -> String {
    let reason = log
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("[…")
        })
        .unwrap_or("(no reason in the log)");
    format!("{reason} ({errno})")
}

fn run_vm(case: &TestCase, engine: Engine, budget: u64) -> Run {
    let mut memory = case.memory.clone();
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_raw(&case.program, &mut memory, engine, budget)
    }));
    match result {
        Ok(Ok(value)) => Run::Value(value),
        Ok(Err(
            e @ (VmError::EngineCannot { .. }
            | VmError::Unsupported { .. }
            | VmError::UnknownHelper { .. }
            // rbpf's own verifier refusing the program before the JIT compiles it.
            | VmError::Rbpf(_)
            | VmError::JitOverBudget { .. }
            | VmError::JitNeedsVerification),
        )) => Run::Refused(e.to_string()),
        // The JIT runs only what our verifier accepts: its refusal, in one line.
        Ok(Err(VmError::Verify(VerifyError::Rejected { rejection, .. }))) => {
            Run::Refused(match rejection.errors.first() {
                Some(first) => format!(
                    "our verifier refuses it for the JIT: insn {}: {}",
                    first.insn, first.kind
                ),
                None => "our verifier refuses it for the JIT".to_owned(),
            })
        }
        Ok(Err(e)) => Run::Failed(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Run::Failed(format!("the {engine} panicked: {what}"))
        }
    }
}

/// Runs the case with the JIT in a forked child process. Compiled code does not check memory
/// accesses (in the lambda path the verifier has made them safe; a conformance file has not
/// been verified), so a program that reads or writes outside its memory must not be able to
/// corrupt or crash this process: in the child it can only take the child down.
///
/// `lambdactl conformance` is single-threaded, so the child may allocate after `fork`.
fn run_jit_isolated(case: &TestCase, budget: u64) -> Run {
    use std::io::{Read as _, Write as _};
    use std::os::fd::FromRawFd as _;

    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Run::Failed(format!(
            "cannot make a pipe for the JIT child: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (mut reader, writer) =
        unsafe { (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded (see above); the child only runs the case, writes
    // to the pipe and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Run::Failed(format!(
            "cannot fork for the JIT: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        drop(reader);
        let mut writer = writer;
        let message = match run_vm(case, Engine::Jit, budget) {
            Run::Value(v) => {
                let mut m = vec![b'V'];
                m.extend_from_slice(&v.to_le_bytes());
                m
            }
            Run::Refused(why) => [b"R".as_slice(), why.as_bytes()].concat(),
            Run::Failed(why) | Run::Rejected(why) => [b"F".as_slice(), why.as_bytes()].concat(),
            Run::KernelValue(_) => b"Fnot a VM result".to_vec(),
        };
        let ok = writer.write_all(&message).is_ok();
        // SAFETY: leaving the child without running the parent's exit handlers or flushing
        // its copies of buffered output.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    drop(writer);
    let mut message = Vec::new();
    let read = reader.read_to_end(&mut message);
    let mut status = 0;
    // SAFETY: `pid` is our child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Run::Failed("lost the JIT child process".into());
        }
    }
    if libc::WIFSIGNALED(status) {
        return Run::Failed(format!(
            "the jit crashed (signal {}): a memory access outside the program's memory?",
            libc::WTERMSIG(status)
        ));
    }
    if read.is_err() || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Run::Failed("the JIT child process failed".into());
    }
    match message.split_first() {
        Some((b'V', rest)) => match <[u8; 8]>::try_from(rest) {
            Ok(bytes) => Run::Value(u64::from_le_bytes(bytes)),
            Err(_) => Run::Failed("garbled answer from the JIT child".into()),
        },
        Some((b'R', rest)) => Run::Refused(String::from_utf8_lossy(rest).into_owned()),
        Some((b'F', rest)) => Run::Failed(String::from_utf8_lossy(rest).into_owned()),
        _ => Run::Failed("no answer from the JIT child".into()),
    }
}

fn judge(case: &TestCase, run: Option<Run>) -> Outcome {
    let Some(run) = run else {
        return Outcome::Skipped {
            reason: "the file has no program".into(),
        };
    };
    match &case.expected {
        Expected::None => Outcome::Skipped {
            reason: "the file expects neither a result nor an error".into(),
        },
        Expected::Result(expected) => match run {
            Run::Value(got) if got == *expected => Outcome::Pass,
            Run::Value(got) => Outcome::FailWrongAnswer {
                expected: hex(*expected),
                got: hex(got),
            },
            Run::KernelValue(got) if got.agrees_with(*expected) => Outcome::Pass,
            Run::KernelValue(got) => Outcome::FailWrongAnswer {
                expected: if got.high.is_some() {
                    hex(*expected)
                } else {
                    format!(
                        "{:#x} (low 32 bits of {})",
                        *expected as u32,
                        hex(*expected)
                    )
                },
                got: got.to_string(),
            },
            Run::Refused(reason) => Outcome::Refused { reason },
            Run::Rejected(reason) => Outcome::KernelRejected { reason },
            Run::Failed(reason) => Outcome::FailErrored { reason },
        },
        Expected::Error(_) => match run {
            Run::Value(got) => Outcome::FailShouldHaveErrored { got: hex(got) },
            Run::KernelValue(got) => Outcome::FailShouldHaveErrored {
                got: got.to_string(),
            },
            // Refused, rejected or failed: the program did not give a result, as expected.
            Run::Refused(_) | Run::Rejected(_) | Run::Failed(_) => Outcome::Pass,
        },
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn print_report(report: &Report, backends: &[Backend]) {
    println!(
        "bpf_conformance: {} files in {}",
        report.files,
        report.dir.display()
    );
    if !report.unreadable.is_empty() {
        println!(
            "{} file(s) could not be read (not run):",
            report.unreadable.len()
        );
        for u in &report.unreadable {
            println!("  {}: {}", u.file, u.error);
        }
    }
    if let Some(why) = &report.kernel_unavailable {
        println!("kernel backend not run: {why}");
    }
    println!();
    println!(
        "{:<12} {:>5} {:>6} {:>11} {:>8} {:>8} {:>16} {:>8} {:>6}",
        "backend",
        "pass",
        "wrong",
        "should-err",
        "errored",
        "refused",
        "kernel-rejected",
        "skipped",
        "total"
    );
    for (backend, c) in &report.backends {
        println!(
            "{:<12} {:>5} {:>6} {:>11} {:>8} {:>8} {:>16} {:>8} {:>6}",
            backend.name(),
            c.pass,
            c.fail_wrong_answer,
            c.fail_should_have_errored,
            c.fail_errored,
            c.refused,
            c.kernel_rejected,
            c.skipped,
            c.total()
        );
    }
    if report.backends.contains_key(&Backend::Kernel) {
        let bits = &report.kernel_result_bits;
        println!(
            "kernel results compared on all 64 bits: {}, on the low 32 bits only: {} \
             (BPF_PROG_TEST_RUN reports a 32-bit retval; a second, wrapped run gives the high half)",
            bits.full_64, bits.low_32_only
        );
    }

    let section = |title: &str, pick: &dyn Fn(&Outcome) -> bool| {
        let rows: Vec<&Entry> = report.results.iter().filter(|e| pick(&e.outcome)).collect();
        println!();
        println!("{title}: {}", rows.len());
        for e in rows {
            println!(
                "  {:<11} {}: {}",
                e.backend.name(),
                e.file,
                e.outcome.reason()
            );
        }
    };
    section("Failures", &|o| o.is_failure());
    if backends.iter().any(|b| *b != Backend::Kernel) {
        section("Refused by the VM (not wrong answers)", &|o| {
            matches!(o, Outcome::Refused { .. })
        });
    }
    if report.backends.contains_key(&Backend::Kernel) {
        section("Rejected by the kernel verifier", &|o| {
            matches!(o, Outcome::KernelRejected { .. })
        });
    }
    let skipped = report
        .results
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Skipped { .. }))
        .count();
    if skipped > 0 {
        section("Skipped", &|o| matches!(o, Outcome::Skipped { .. }));
    }
    if report.backends.contains_key(&Backend::Kernel) && backends.len() > 1 {
        println!();
        println!(
            "Kernel vs VM disagreements (both gave a value): {}",
            report.disagreements.len()
        );
        for d in &report.disagreements {
            println!(
                "  {}: kernel {}, {} {}",
                d.file,
                d.kernel,
                d.engine.name(),
                d.vm
            );
        }
    }
    println!();
    if report.vm_wrong_answers > 0 {
        println!(
            "FAILED: {} wrong answer(s) from the VM",
            report.vm_wrong_answers
        );
    } else {
        println!("no wrong answers from the VM");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebpf_isa::conformance::parse_test;

    fn case(text: &str) -> TestCase {
        parse_test("t", text).unwrap()
    }

    #[test]
    fn outcomes_follow_the_expectation() {
        let c = case("-- asm\nmov %r0, 1\nexit\n-- result\n0x1\n");
        assert!(matches!(judge(&c, Some(Run::Value(1))), Outcome::Pass));
        let wrong = judge(&c, Some(Run::Value(2)));
        assert!(wrong.is_wrong_answer(), "{wrong:?}");
        let refused = judge(&c, Some(Run::Refused("no".into())));
        assert!(matches!(refused, Outcome::Refused { .. }) && !refused.is_failure());
        let rejected = judge(&c, Some(Run::Rejected("no".into())));
        assert!(matches!(rejected, Outcome::KernelRejected { .. }));
        let failed = judge(&c, Some(Run::Failed("oob".into())));
        assert!(failed.is_failure() && !failed.is_wrong_answer());

        let e = case("-- asm\nmov %r0, 1\nexit\n-- error\nbad\n");
        assert!(matches!(
            judge(&e, Some(Run::Failed("x".into()))),
            Outcome::Pass
        ));
        let accepted = judge(&e, Some(Run::Value(1)));
        assert!(
            matches!(accepted, Outcome::FailShouldHaveErrored { .. })
                && accepted.is_failure()
                && !accepted.is_wrong_answer()
        );
        assert!(matches!(judge(&e, None), Outcome::Skipped { .. }));
    }

    #[test]
    fn kernel_values_compare_on_the_bits_it_reported() {
        let c = case("-- asm\nlddw %r0, 0x8877665544332211\nexit\n-- result\n0x8877665544332211\n");
        let low_only = KernelValue {
            low: 0x4433_2211,
            high: None,
        };
        assert!(matches!(
            judge(&c, Some(Run::KernelValue(low_only))),
            Outcome::Pass
        ));
        let wrong_high = KernelValue {
            low: 0x4433_2211,
            high: Some(0),
        };
        assert!(matches!(
            judge(&c, Some(Run::KernelValue(wrong_high))),
            Outcome::FailWrongAnswer { .. }
        ));
    }

    #[test]
    fn backend_selection_expands_all_and_dedups() {
        assert_eq!(
            selected(&[BackendSel::Jit, BackendSel::All]),
            vec![Backend::Kernel, Backend::Interpreter, Backend::Jit]
        );
        assert_eq!(
            selected(&[BackendSel::Jit, BackendSel::Interpreter, BackendSel::Jit]),
            vec![Backend::Interpreter, Backend::Jit]
        );
    }
}
