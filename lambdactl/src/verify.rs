//! `lambdactl verify`, and the check `attach`, `run` and `test-run` make before any backend
//! sees a program: our verifier's contract, or its reasons.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use loader::LambdaParams;
use loader::verify::{Limits, VerifyError, verify_object};
use verifier::{Backend, Contract, Options};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProfileArg {
    /// XDP in the host kernel.
    Kernel,
    /// Netronome NFP hardware offload.
    Nfp,
    /// The userspace VM.
    Vm,
    /// Judge every backend; fail only if none accepts the program.
    All,
}

/// Limits on a program's contract: the verifier refuses a program that exceeds them.
#[derive(Args, Clone, Copy)]
pub(crate) struct LimitsArgs {
    /// Refuse programs whose bound on executed instructions is above N.
    #[arg(long, value_name = "N", default_value_t = verifier::DEFAULT_MAX_INSNS)]
    max_insns: u64,
    /// Refuse programs that need more than B bytes of stack over their call chain.
    #[arg(long, value_name = "B", default_value_t = verifier::MAX_STACK_BYTES)]
    max_stack: u32,
    /// Refuse programs whose maps take more than B bytes.
    #[arg(long, value_name = "B", default_value_t = verifier::DEFAULT_MAX_MAP_BYTES)]
    max_map_bytes: u64,
}

impl LimitsArgs {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_insns: self.max_insns,
            max_stack: self.max_stack,
            max_map_bytes: self.max_map_bytes,
        }
    }
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The lambda object (or any XDP object).
    object: std::path::PathBuf,
    /// Which backend's rules to check.
    #[arg(long, value_enum, default_value = "all")]
    profile: ProfileArg,
    #[command(flatten)]
    limits: LimitsArgs,
    /// Instruction slots the NFP profile allows.
    #[arg(long, value_name = "N", default_value_t = verifier::DEFAULT_NFP_INSN_BUDGET)]
    nfp_budget: usize,
    /// Print the contract as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.object)
        .with_context(|| format!("cannot read {}", args.object.display()))?;
    let name = object_name(&args.object);
    let profiles = match args.profile {
        ProfileArg::Kernel => vec![Backend::Kernel],
        ProfileArg::Nfp => vec![Backend::Nfp],
        ProfileArg::Vm => vec![Backend::Vm],
        ProfileArg::All => Backend::ALL.to_vec(),
    };
    let limits = args.limits.limits();
    let options = Options {
        profiles,
        max_insns: limits.max_insns,
        max_stack: limits.max_stack,
        max_map_bytes: limits.max_map_bytes,
        nfp_insn_budget: args.nfp_budget,
        ncpus: possible_cpus(),
        global_functions: Vec::new(),
    };
    let started = std::time::Instant::now();
    let (_, contract) = verify_object(&bytes, &name, &LambdaParams::default(), &options)?;
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&contract)?);
    } else {
        print_contract(&contract);
        println!("verified in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    }
    Ok(ExitCode::SUCCESS)
}

/// The check before a backend loads `object`: its contract for `backend`, or an error that
/// shows the verifier's reasons.
pub(crate) fn check_before_load(
    object: &Path,
    params: &LambdaParams,
    backend: Backend,
    limits: &LimitsArgs,
) -> Result<Contract> {
    let bytes =
        std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    let options = limits.limits().options(backend, possible_cpus());
    match verify_object(&bytes, &object_name(object), params, &options) {
        Ok((_, contract)) => Ok(contract),
        Err(e @ VerifyError::Rejected { .. }) => bail!(
            "{e}\n(refused before the {backend} backend saw it; --skip-verify loads it anyway, \
             leaving safety to the {})",
            if backend == Backend::Kernel {
                "kernel's verifier"
            } else {
                "VM's run-time checks"
            }
        ),
        Err(e) => Err(e.into()),
    }
}

/// One line for `attach`/`run` to print what the verifier proved.
pub(crate) fn summary(contract: &Contract) -> String {
    format!(
        "verified: at most {} instructions per run, {} bytes of stack, {} bytes of maps",
        contract.max_insns_executed, contract.max_stack_bytes, contract.map_bytes
    )
}

fn print_contract(c: &Contract) {
    println!("program {} ({} instruction slots)", c.program, c.insn_slots);
    println!(
        "  max instructions executed  {} (a sound upper bound over every run)",
        c.max_insns_executed
    );
    println!(
        "  max stack                  {} bytes over the call chain",
        c.max_stack_bytes
    );
    println!("  map memory                 {} bytes", c.map_bytes);
    for m in &c.maps {
        println!("    {:<24} {} bytes", m.name, m.bytes);
    }
    let helpers: Vec<String> = c
        .helpers_used
        .iter()
        .map(|(id, name)| format!("{name} ({id})"))
        .collect();
    println!(
        "  helpers                    {}",
        if helpers.is_empty() {
            "none".to_owned()
        } else {
            helpers.join(", ")
        }
    );
    let eligible: Vec<&str> = c.eligible.iter().map(|b| b.name()).collect();
    println!("  eligible backends          {}", eligible.join(", "));
    for (backend, reason) in &c.refused {
        println!("  refused by {backend:<15} {reason}");
    }
}

fn object_name(object: &Path) -> String {
    object.file_stem().map_or_else(
        || object.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// CPUs per-CPU maps are counted for (possible CPUs, as the kernel allocates).
fn possible_cpus() -> u32 {
    loader::maps::possible_cpus().map_or(1, |n| n as u32)
}
