//! `lambdactl upgrade` and `lambdactl rollback`: replace the lambda on an interface with a new
//! version, keeping its state and dropping no packet, and bring the previous version back.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use loader::{Host, kernel::Upgraded};

use crate::verify;

#[derive(Args)]
pub(crate) struct UpgradeArgs {
    /// The new version's object (an eBPF ELF file, e.g. target/lambdas/counter-v2.o).
    object: PathBuf,
    /// The interface whose lambda to replace.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// UDP port the new version serves (default: the running lambda's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Lambda id the new version answers (default: the running lambda's).
    #[arg(long, value_name = "ID")]
    lambda_id: Option<u32>,
    /// Remove the pinned maps the new version does not use (default: keep them, with their
    /// contents, for a rollback or a later version).
    #[arg(long)]
    prune: bool,
    /// Do not run the λ-NIC verifier first (the kernel's verifier still checks the program).
    #[arg(long)]
    skip_verify: bool,
    #[command(flatten)]
    limits: verify::LimitsArgs,
}

#[derive(Args)]
pub(crate) struct RollbackArgs {
    /// The interface whose lambda to roll back.
    #[arg(long, value_name = "IF")]
    iface: String,
}

/// Checks the new object's maps against the pinned ones (refusing before anything is loaded),
/// verifies it, loads it on the pinned maps and swaps it in on the pinned link.
pub(crate) fn upgrade(args: UpgradeArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let plan = host.prepare_upgrade(&args.object, &args.iface, args.port, args.lambda_id)?;
    if !args.skip_verify {
        let contract = verify::check_before_load(
            &args.object,
            plan.params(),
            verifier::Backend::Kernel,
            &args.limits,
        )?;
        println!("{}", verify::summary(&contract));
    }
    let running = plan.running().clone();
    let upgraded = host.upgrade(plan, args.prune)?;
    let r = &upgraded.record;
    println!(
        "upgraded {} on {}: {} (program {}) → {} (program {}), swapped atomically on link {}",
        r.iface, r.mode, running.lambda, running.program_id, r.lambda, r.program_id, r.link_id
    );
    print_outcome(&upgraded);
    Ok(ExitCode::SUCCESS)
}

/// Swaps the previous version back in.
pub(crate) fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let rolled = host.rollback(&args.iface)?;
    let r = &rolled.record;
    let from = r.previous.as_ref();
    println!(
        "rolled back {}: {} (program {}) → {} (program {}), swapped atomically on link {}",
        r.iface,
        from.map(|p| p.lambda.as_str()).unwrap_or("?"),
        from.map(|p| p.program_id).unwrap_or(0),
        r.lambda,
        r.program_id,
        r.link_id
    );
    print_outcome(&rolled);
    println!("  (one level of history: a second rollback returns to the version just replaced)");
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(u: &Upgraded) {
    for note in &u.notes {
        println!("note: {note}");
    }
    let r = &u.record;
    println!(
        "  serves UDP port {}, lambda id {}",
        r.port,
        r.lambda_id
            .map(|i| i.to_string())
            .unwrap_or_else(|| "any".into())
    );
    for m in &r.maps {
        let state = if m.reused {
            "reused, contents kept".to_owned()
        } else if m.seeded > 0 {
            format!("new, seeded {} records", m.seeded)
        } else {
            "new".to_owned()
        };
        println!(
            "  map {} ({}) at {} ({state})",
            m.name,
            m.map_type,
            m.pin.display()
        );
    }
    for path in &u.kept {
        println!(
            "  map pin {} is not used by this version: kept (upgrade --prune removes such maps)",
            path.display()
        );
    }
    for path in &u.pruned {
        println!("  removed unused map pin {}", path.display());
    }
    if let Some(p) = &r.previous {
        println!(
            "  previous version: {} (program {}, {}), kept loaded for `lambdactl rollback`",
            p.lambda,
            p.program_id,
            p.object.display()
        );
    }
}
