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

/// `attach --mode hw`, and the first step of `--mode auto`.
pub(crate) fn attach_hw(
    host: &Host,
    args: &AttachArgs,
    model: &'static NicModel,
) -> Result<Attached, HwAttachError> {
    let outcome = nic_offload::attach_hw(
        host,
        &args.object,
        &args.iface,
        &args.lambda.params(),
        model,
    )?;
    println!("{}", crate::verify::summary(&outcome.contract));
    println!("{}", outcome.support);
    Ok(outcome.attached)
}

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// The NIC model: nfp-4000 (60 cores) or agilio-cx (48 cores).
    #[arg(long, value_name = "MODEL")]
    nic: String,
    /// The lambda objects to place on the NIC together.
    #[arg(required = true)]
    objects: Vec<PathBuf>,
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
    let plan = nic_offload::plan(model, &objects)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!(
            "{} ({} cores, {} instructions per core, {} MHz)",
            model.description, model.cores, model.insn_budget, model.clock_mhz
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
