//! `lambdactl plan`, `lambdactl probe` and the hardware step of `attach --mode hw|auto`: thin
//! over the `nic-offload` crate.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use loader::{Attached, Host};
use nic_offload::{HwAttachError, NicModel, OffloadSupport};

use crate::AttachArgs;

/// The model called `name`, or an error listing the known ones.
pub(crate) fn nic_model(name: &str) -> Result<&'static NicModel> {
    nic_offload::model(name)
        .ok_or_else(|| anyhow!("unknown NIC model `{name}` (known: {})", NicModel::names()))
}

/// `attach --mode hw`, and the first step of `--mode auto`: the object lowered for the NIC
/// model and checked (what the lowering did is printed before the probe answers), then
/// loaded offloaded.
pub(crate) fn attach_hw(
    host: &Host,
    args: &AttachArgs,
    model: &'static NicModel,
    order: nic_offload::CheckOrder,
) -> Result<Attached, HwAttachError> {
    let request = nic_offload::HwRequest {
        object: &args.object,
        iface: &args.iface,
        params: args.lambda.params(),
        model,
        order,
        limits: args.limits.limits(),
    };
    let outcome = nic_offload::attach_hw(host, &request, &mut |ready| {
        print_ready(ready, model.name, "")
    })?;
    println!("{}", outcome.support);
    Ok(outcome.attached)
}

/// `lowered NAME for MODEL: 1299 -> 1026 slots (…)`, the maps it changed and what the lowered
/// lambda no longer does, one per line, then our verifier's contract of the lowered program
/// and that the model accepts it (`note` appended).
pub(crate) fn print_ready(ready: &nic_offload::NicReady, nic: &str, note: &str) {
    let report = &ready.report;
    println!("lowered {} for {nic}: {}", report.lambda, report.summary());
    for line in report.maps_lowered.iter().chain(&report.losses) {
        println!("  {line}");
    }
    println!(
        "{}; accepted for {nic} (our verifier's nfp profile and the model's rules, on the lowered program){note}",
        crate::verify::summary(&ready.contract)
    );
}

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// The NIC model: nfp-4000 (60 cores) or agilio-cx (48 cores).
    #[arg(long, value_name = "MODEL")]
    nic: String,
    /// The lambda objects to place on the NIC together.
    #[arg(required = true)]
    objects: Vec<PathBuf>,
    /// Plan each lambda as `coalesce --lower` would place it: after the NFP lowering pass
    /// (logs dropped, `.rodata` folded, per-CPU counters made atomic on shared maps), or
    /// refused with the pass's reasons.
    #[arg(long)]
    lower: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn plan(args: PlanArgs) -> Result<ExitCode> {
    let model = nic_model(&args.nic)?;
    let mut objects = Vec::new();
    for path in &args.objects {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lambda".to_owned());
        objects.push((name, bytes));
    }
    let plan = nic_offload::plan::plan_with(model, &objects, args.lower)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!(
            "{} ({} cores, {} instructions per core, {} MHz){}",
            model.description,
            model.cores,
            model.insn_budget,
            model.clock_mhz,
            if args.lower {
                "; each lambda lowered for it first"
            } else {
                ""
            }
        );
        println!(
            "{:<20} {:>6} {:>10} {:>6} {:>9} {:>8} {:>12} {:>9}  offload",
            "lambda", "insns", "max exec", "stack", "map B", "entries", "worst cycles", "worst ns"
        );
        for l in &plan.lambdas {
            let status = if l.refusals.is_empty() {
                format!("core {}", l.core.map_or("-".into(), |c| c.to_string()))
            } else {
                "refused".to_owned()
            };
            println!(
                "{:<20} {:>6} {:>10} {:>6} {:>9} {:>8} {:>12} {:>9}  {status}",
                l.lambda,
                l.insn_slots,
                l.max_insns_executed,
                l.max_stack_bytes,
                l.map_bytes,
                l.map_entries,
                l.worst_case_cycles,
                l.worst_case_ns
            );
        }
        println!(
            "cores needed for one copy: {} of {} (instructions per core: {:?})",
            plan.cores_needed, plan.cores_available, plan.core_insns
        );
        if plan.fits {
            println!("fits: yes");
        } else {
            println!("fits: no");
            for r in &plan.reasons {
                println!("  {r}");
            }
        }
    }
    Ok(if plan.fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// The interface to probe.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn probe(args: ProbeArgs) -> Result<ExitCode> {
    let info = nic_offload::discover(&args.iface)?;
    let answer = nic_offload::probe(&args.iface)?;
    if args.json {
        let json = serde_json::json!({ "interface": info, "probe": answer });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "{} (ifindex {}): driver {}, hw-tc-offload {}",
            info.iface,
            info.ifindex,
            info.driver,
            match info.tc_offload {
                Some(true) => "on",
                Some(false) => "off",
                None => "not reported",
            }
        );
        println!("{answer}");
    }
    Ok(match answer {
        OffloadSupport::Works { .. } => ExitCode::SUCCESS,
        OffloadSupport::Unsupported { .. } => ExitCode::FAILURE,
    })
}

#[derive(Args)]
pub(crate) struct CoalesceArgs {
    /// The lambdas, each `OBJECT[@PORT[/ID]]`: the object, the UDP port it serves (default
    /// 9000) and the lambda id (default: any). One object may appear with several rules.
    #[arg(required = true, value_name = "OBJECT[@PORT[/ID]]")]
    lambdas: Vec<String>,
    /// The NIC model to pack cores for and to judge with the verifier's nfp profile.
    #[arg(long, value_name = "MODEL", default_value = "agilio-cx")]
    nic: String,
    /// Also load the coalesced program into the kernel (needs root) and report what its
    /// verifier processed against its one-million-instruction limit.
    #[arg(long)]
    kernel: bool,
    /// Lower each lambda for the NIC model first (`nic_offload::lower`): the SDK's log lines
    /// become no-ops (logs are not available offloaded), `.rodata` loads are folded into the
    /// code, per-CPU counters become atomic adds on shared maps. A lambda the pass refuses is
    /// listed with every reason and left out of the coalesced program (exit status 1). The
    /// set is then meant for the NIC: exit status 1 too when a core's program fails the nfp
    /// profile or a lambda fits no core.
    #[arg(long)]
    lower: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `OBJECT[@PORT[/ID]]`.
fn parse_lambda_spec(spec: &str) -> Result<(PathBuf, nic_offload::MatchRule)> {
    let (path, rule) = match spec.rsplit_once('@') {
        Some((path, rule)) => (path, Some(rule)),
        None => (spec, None),
    };
    let mut port = lambda_ebpf::wire::DEFAULT_PORT;
    let mut lambda_id = None;
    if let Some(rule) = rule {
        let (p, id) = match rule.split_once('/') {
            Some((p, id)) => (p, Some(id)),
            None => (rule, None),
        };
        port = p
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| anyhow!("`{spec}`: `{p}` is not a UDP port (1-65535)"))?;
        if let Some(id) = id {
            lambda_id = Some(
                id.parse()
                    .map_err(|_| anyhow!("`{spec}`: `{id}` is not a lambda id (0-4294967295)"))?,
            );
        }
    }
    Ok((
        PathBuf::from(path),
        nic_offload::MatchRule { port, lambda_id },
    ))
}

pub(crate) fn coalesce(args: CoalesceArgs) -> Result<ExitCode> {
    let model = nic_model(&args.nic)?;
    let mut inputs = Vec::new();
    for spec in &args.lambdas {
        let (path, rule) = parse_lambda_spec(spec)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lambda".to_owned());
        inputs.push(nic_offload::CoalesceInput::from_object(
            &bytes, &name, rule,
        )?);
    }
    // Lowering: what each lambda became, or why it cannot go to the NIC.
    let mut lowering = Vec::new();
    let mut refused_lambdas = 0;
    if args.lower {
        let mut kept = Vec::new();
        for input in &inputs {
            match nic_offload::lower(input, model) {
                Ok(out) => {
                    lowering.push(serde_json::json!({
                        "lambda": input.name, "lowered": true, "report": out.report,
                    }));
                    if !args.json {
                        print_lowering(&out.report, None);
                    }
                    kept.push(out.input);
                }
                Err(nic_offload::LowerError::Refused {
                    refusals, report, ..
                }) => {
                    refused_lambdas += 1;
                    let refusals: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                    if !args.json {
                        print_lowering(&report, Some(&refusals));
                    }
                    lowering.push(serde_json::json!({
                        "lambda": input.name, "lowered": false, "report": report,
                        "refusals": refusals,
                    }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if kept.is_empty() {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "nic": model.name, "lowering": lowering,
                    }))?
                );
            } else {
                println!(
                    "nothing left to coalesce: {} refused every lambda",
                    model.name
                );
            }
            return Ok(ExitCode::FAILURE);
        }
        inputs = kept;
    }
    let coalesced = nic_offload::coalesce(&inputs)?;
    // The whole set as one program: what the host runs (`deploy --mode coalesced`). The
    // kernel may refuse it where the cores' shares load (more than 64 maps in one program).
    let whole = judge("coalesced", &coalesced, model, args.kernel);
    // One core's code store takes a program of at most the model's budget: the set split by
    // coalesced size, each core's program judged (and with --kernel loaded) on its own. A core
    // holding every lambda runs the whole program, already judged.
    let split = nic_offload::coalesce_per_core(model, &inputs)?;
    let cores_needed = split.cores.len();
    let cores = split.core_of.clone();
    let core_reports: Vec<CoreReport> = split
        .cores
        .iter()
        .enumerate()
        .map(|(k, core)| {
            let judgment = if core.members.len() == inputs.len() {
                whole.clone()
            } else {
                judge(&format!("core{k}"), &core.coalesced, model, args.kernel)
            };
            CoreReport {
                core: k,
                lambdas: core
                    .members
                    .iter()
                    .map(|&i| inputs[i].name.clone())
                    .collect(),
                insns: core.coalesced.insns.len(),
                judgment,
            }
        })
        .collect();
    let cores_pass = core_reports.iter().all(CoreReport::passes);
    let verified = &whole.verified;
    let kernel = &whole.kernel;
    let (eligible, refused, contract_err) = match verified {
        Ok(c) => (
            c.eligible.iter().map(|b| b.name()).collect::<Vec<_>>(),
            c.refused
                .iter()
                .map(|(b, r)| format!("{}: {r}", b.name()))
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (vec![], vec![], Some(e.clone())),
    };
    if args.json {
        let json = serde_json::json!({
            "report": coalesced.report,
            "nic": model.name,
            "eligible": eligible,
            "refused": refused,
            "rejected": contract_err,
            "max_insns_executed": verified.as_ref().ok().map(|c| c.max_insns_executed),
            "cores": cores,
            "cores_needed": cores_needed,
            "core_programs": core_reports.iter().map(CoreReport::json).collect::<Vec<_>>(),
            "kernel_verified_insns": kernel.as_ref().and_then(|k| k.as_ref().ok()),
            "kernel_refused": kernel.as_ref().and_then(|k| k.as_ref().err()),
            "lowering": lowering,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let r = &coalesced.report;
        println!(
            "coalesced {} lambdas: {} instruction slots as separate programs, {} as one ({} of dispatch)",
            r.lambdas, r.insns_before, r.insns_after, r.dispatch_insns
        );
        println!(
            "  {} of {} functions merged, {} unreachable slots removed, maps {} -> {}",
            r.functions_merged,
            r.functions_before,
            r.unreachable_removed,
            r.maps_before,
            r.maps_after
        );
        match verified {
            Ok(c) => {
                println!(
                    "  verified: at most {} instructions per run; eligible: {}",
                    c.max_insns_executed,
                    eligible.join(", ")
                );
                for r in &refused {
                    println!("  refused by {r}");
                }
            }
            Err(e) => println!("  rejected by the λ-NIC verifier: {e}"),
        }
        match kernel {
            Some(Ok(n)) => {
                println!("  kernel verifier: loaded, {n} instructions processed (limit 1000000)")
            }
            Some(Err(e)) => println!(
                "  kernel verifier: refused the whole set as one program: {}",
                e.lines().collect::<Vec<_>>().join(" / ")
            ),
            None => {}
        }
        println!(
            "  {}: {} core{} for one copy ({} per core)",
            model.name,
            cores_needed,
            if cores_needed == 1 { "" } else { "s" },
            model.insn_budget
        );
        for report in &core_reports {
            println!("    {report}");
        }
        for (input, core) in inputs.iter().zip(&cores) {
            if core.is_none() {
                println!("    {} does not fit one core", input.name);
            }
        }
    }
    // Lowered, the set is meant for the NIC: it must then fit it, core by core. A core's
    // program the kernel refused (`--kernel`) fails the command either way.
    let nic_ready = !args.lower || (cores_pass && cores.iter().all(Option::is_some));
    let cores_load = core_reports
        .iter()
        .all(|c| !matches!(c.judgment.kernel, Some(Err(_))));
    Ok(
        if verified.is_ok() && refused_lambdas == 0 && nic_ready && cores_load {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// What our verifier (its kernel and nfp profiles, the model's budget) and, when asked, the
/// kernel say of one coalesced program.
#[derive(Clone)]
struct Judgment {
    verified: Result<verifier::Contract, String>,
    /// Instructions the kernel's verifier processed loading it, or why it refused (`--kernel`).
    kernel: Option<Result<u32, String>>,
}

/// Verifies `program` for `model` and, when `kernel`, loads it into the kernel.
fn judge(
    name: &str,
    program: &nic_offload::Coalesced,
    model: &'static NicModel,
    kernel: bool,
) -> Judgment {
    use loader::verify::{Limits, verify_linked};
    let linked = loader::link::LinkedProgram {
        lambda: name.into(),
        program: "coalesced".into(),
        section: "xdp".into(),
        insns: program.insns.clone(),
        maps: program.maps.clone(),
        lines: vec![],
    };
    let mut options = model.verifier_options(&Limits::default());
    // The lambda entries are BTF global functions: the kernel verifies each on its own.
    options.global_functions = program.entries.clone();
    let verified = verify_linked(&linked, &options).map_err(|e| e.to_string());
    let kernel = kernel.then(|| {
        loader::kernel::load_linked(
            &program.insns,
            &program.maps,
            &program.seeds,
            Some(&program.btf),
        )
        .map_err(|e| e.to_string())
        .and_then(|loaded| {
            loader::kernel::verified_insns(std::os::fd::AsFd::as_fd(&loaded.prog))
                .map_err(|e| e.to_string())
        })
    });
    Judgment { verified, kernel }
}

/// What one core's program is and what the verifiers say of it.
struct CoreReport {
    core: usize,
    lambdas: Vec<String>,
    insns: usize,
    judgment: Judgment,
}

impl CoreReport {
    /// The most instructions one run executes, or why the nfp profile refuses the program.
    fn nfp(&self) -> Result<u64, String> {
        match &self.judgment.verified {
            Ok(contract) => match contract
                .refused
                .iter()
                .find(|(b, _)| *b == verifier::Backend::Nfp)
            {
                Some((_, reason)) => Err(reason.to_string()),
                None => Ok(contract.max_insns_executed),
            },
            Err(e) => Err(e.clone()),
        }
    }

    /// The nfp profile passes it.
    fn passes(&self) -> bool {
        self.nfp().is_ok()
    }

    fn json(&self) -> serde_json::Value {
        let nfp = self.nfp();
        let kernel = self.judgment.kernel.as_ref();
        serde_json::json!({
            "core": self.core,
            "lambdas": self.lambdas,
            "insns": self.insns,
            "nfp_passes": nfp.is_ok(),
            "max_insns_executed": nfp.as_ref().ok(),
            "nfp_refused": nfp.as_ref().err(),
            "kernel_verified_insns": kernel.and_then(|k| k.as_ref().ok()),
            "kernel_refused": kernel.and_then(|k| k.as_ref().err()),
        })
    }
}

impl std::fmt::Display for CoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {}: {} lambda{}, {} slots; ",
            self.core,
            self.lambdas.len(),
            if self.lambdas.len() == 1 { "" } else { "s" },
            self.insns
        )?;
        match self.nfp() {
            Ok(max) => write!(f, "nfp profile passes (at most {max} instructions per run)")?,
            Err(reason) => write!(f, "nfp profile refuses: {reason}")?,
        }
        match &self.judgment.kernel {
            Some(Ok(n)) => write!(f, "; kernel: loaded, {n} processed")?,
            Some(Err(e)) => write!(
                f,
                "; kernel: refused: {}",
                e.lines().collect::<Vec<_>>().join(" / ")
            )?,
            None => {}
        }
        write!(f, " [{}]", self.lambdas.join(", "))
    }
}

/// One lambda's lowering, for people: what it did, and either the maps it changed and what
/// was lost, or (`refusals`) why the lambda is left out.
fn print_lowering(report: &nic_offload::lower::LowerReport, refusals: Option<&[String]>) {
    match refusals {
        None => {
            println!("lowered {}: {}", report.lambda, report.summary());
            for line in report.maps_lowered.iter().chain(&report.losses) {
                println!("  {line}");
            }
        }
        Some(refusals) => {
            println!(
                "refused {} (left out; lowered as far as it goes: {}):",
                report.lambda,
                report.summary()
            );
            for reason in refusals {
                println!("  {reason}");
            }
        }
    }
}
