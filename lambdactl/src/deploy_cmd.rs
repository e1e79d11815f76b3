//! `lambdactl deploy` / `undeploy`: many lambdas behind one interface's dispatcher, added and
//! removed one at a time (see `loader::dispatch` and `loader::kernel::deploy`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use loader::dispatch::{self, MatchRule};
use loader::maps::KernelMap;
use loader::{AttachMode, Host};

use crate::verify::{self, LimitsArgs};
use crate::{plural, print_table};

#[derive(Args)]
pub(crate) struct DeployArgs {
    /// The lambda object (an eBPF ELF file, e.g. target/lambdas/whoami.o). It needs no change
    /// to run behind the dispatcher: it is loaded with the rule's port and lambda id.
    object: PathBuf,
    /// The interface whose dispatcher serves it (installed by the first deploy).
    #[arg(long, value_name = "IF", required_unless_present = "replace")]
    iface: Option<String>,
    /// The lambda's name: its pins, its maps (`maps dump NAME/MAP`) and `undeploy NAME`.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Which packets reach it: UDP destination port, and one λ lambda id or any
    /// (`port=9000,id=7`, `port=9000`). The exact rule wins over a port's any-id rule.
    #[arg(
        long = "match",
        value_name = "RULE",
        required_unless_present = "replace"
    )]
    rule: Option<MatchRule>,
    /// Replace the deployed lambda NAME by this object, keeping its maps (each shared map
    /// must have the same type, key and value size and at least as many entries) and its
    /// rule: the new program takes over its slot in one atomic update, with no request lost.
    /// A lambda deployed in coalesced mode is replaced the same way: its interface's program is
    /// rebuilt with the new object and swapped in on its link.
    /// A lambda deployed with --lower is lowered again for the same NIC model.
    #[arg(long, conflicts_with_all = ["iface", "rule", "mode", "xdp", "lower", "nic"])]
    replace: bool,
    /// How the interface runs its lambdas. auto (the default), drv, skb: behind the
    /// tail-call dispatcher, in that XDP mode when this deploy installs it (auto: drv, else
    /// skb); hw is refused (offload NICs run no tail calls). coalesced: the interface runs ONE
    /// program of every lambda deployed on it in coalesced mode (a dispatch in code calling each
    /// lambda as a function, no tail calls), rebuilt, verified and swapped in atomically on
    /// each deploy, replace and undeploy, with each lambda's maps kept; see --xdp. One
    /// interface's lambdas are all tail-call or all coalesced.
    #[arg(long, value_enum)]
    mode: Option<DeployMode>,
    /// With --mode coalesced: the XDP mode of the coalesced program when this deploy attaches
    /// it (auto, the default: drv, else skb). When the interface already runs its coalesced
    /// program the new one is swapped in on that attachment: drv or skb differing from its mode
    /// is refused, and a matching one (or auto) is noted as changing nothing.
    #[arg(long, value_enum, value_name = "MODE")]
    xdp: Option<XdpArg>,
    /// With --mode coalesced: run on the host exactly the program a NIC would get. The lambda
    /// is lowered for the --nic model first (the NFP lowering pass of `coalesce --lower`: log
    /// lines become no-ops — `logs` has nothing to show —, .rodata is folded into the code,
    /// per-CPU counters become atomic adds on plain maps, which `stats` reads the same) and
    /// checked against it (our verifier's nfp profile and the model's rules, lambda by lambda),
    /// then coalesced and loaded as without it; a lambda either refuses is refused with every
    /// reason and nothing changes. Its record keeps the model, so every rebuild (replace,
    /// others' deploys and undeploys) lowers it again. One interface's coalesced lambdas are
    /// all lowered for one model or none are: lowering changes their maps' types (per-CPU to
    /// shared), so pinned state cannot move between the two forms, and a half-lowered program
    /// would be neither what the NIC gets nor what the host runs as written.
    #[arg(long)]
    lower: bool,
    /// With --lower: the NIC model to lower for (nfp-4000 or agilio-cx; default agilio-cx, as
    /// for `attach --nic`).
    #[arg(long, value_name = "MODEL", requires = "lower")]
    nic: Option<String>,
    /// Do not run the λ-NIC verifier first (the kernel's verifier still checks the program).
    /// With --mode coalesced this skips the check of the object alone; the coalesced program
    /// is always verified before it is loaded, against the limits each of its lambdas was
    /// deployed with (kept in its record: later deploys and undeploys of others use them).
    #[arg(long)]
    skip_verify: bool,
    #[command(flatten)]
    limits: LimitsArgs,
}

/// The NIC model `--lower` lowers for when `--nic` does not say (as `attach --nic`).
const DEFAULT_NIC: &str = "agilio-cx";

/// `deploy --mode`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeployMode {
    /// Behind the dispatcher, drv mode, else skb.
    Auto,
    /// Refused: offload NICs run no tail calls (`attach --mode hw` offloads one lambda;
    /// `--mode coalesced --lower` runs the program a NIC core would get, on the host).
    Hw,
    /// Behind the dispatcher, native (driver) mode only.
    Drv,
    /// Behind the dispatcher, generic (skb) mode only.
    Skb,
    /// One coalesced program per interface, no tail calls.
    Coalesced,
}

/// `deploy --xdp`: the XDP mode of a coalesced program.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum XdpArg {
    Auto,
    Drv,
    Skb,
}

impl XdpArg {
    fn name(self) -> &'static str {
        match self {
            XdpArg::Auto => "auto",
            XdpArg::Drv => "drv",
            XdpArg::Skb => "skb",
        }
    }
}

#[derive(Args)]
pub(crate) struct UndeployArgs {
    /// The deployed lambda's name.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    name: Option<String>,
    /// Undeploy every lambda in this network namespace (with --iface: on that interface).
    #[arg(long)]
    all: bool,
    /// With --all: only the lambdas on this interface.
    #[arg(long, value_name = "IF", requires = "all")]
    iface: Option<String>,
}

/// Runs `f` with the coalescer (and our verifier, with the limits each lambda was deployed
/// with) as the builder of coalesced programs, and returns what the last build reported.
pub(crate) fn with_builder<T>(
    f: impl FnOnce(loader::kernel::CoalesceBuilder<'_>) -> T,
) -> (T, Option<nic_offload::host::HostBuild>) {
    let report = std::cell::RefCell::new(None);
    let builder = |members: &[loader::kernel::CoalesceMember]| {
        let (program, build) = nic_offload::host::build(members)?;
        *report.borrow_mut() = Some(build);
        Ok::<_, Box<dyn std::error::Error>>(program)
    };
    let out = f(&builder);
    (out, report.into_inner())
}

fn print_coalesced(
    change: &loader::kernel::CoalescedChange,
    build: Option<&nic_offload::host::HostBuild>,
) {
    let Some(i) = &change.iface else {
        return;
    };
    let sizes = build.map_or_else(String::new, |b| {
        format!(
            " (from {} as separate programs; {} functions merged, {} maps), our verifier: at most {} instructions per request (limits from its lambdas' deploys: max-insns {}, max-stack {}, max-map-bytes {})",
            b.report.insns_before,
            b.report.functions_merged,
            b.report.maps_after,
            b.max_insns_executed,
            b.limits.max_insns,
            b.limits.max_stack,
            b.limits.max_map_bytes
        )
    });
    println!(
        "{} runs one coalesced program of {} lambda{} in {} mode: program id {}, link id {}, {} instruction slots{sizes}; the kernel's verifier processed {} of {} instructions",
        i.iface,
        i.lambdas.len(),
        plural(i.lambdas.len()),
        i.mode,
        i.program_id,
        i.link_id,
        i.insns,
        i.verified_insns,
        loader::kernel::KERNEL_COMPLEXITY_LIMIT
    );
    if let Some((nic, cores)) = build.and_then(|b| b.nic_cores) {
        println!(
            "  its lambdas are lowered for {nic}: the program is what the NIC would get (one copy takes {cores} core{} of {nic})",
            plural(cores)
        );
    }
    if let Some(reason) = &change.drv_fallback {
        println!("note: native (drv) mode failed, using generic (skb) mode: {reason}");
    }
}

fn print_maps(maps: &[loader::PinnedMap]) {
    for m in maps {
        println!(
            "  map {} ({}) pinned at {}, {}",
            m.name,
            m.map_type,
            m.pin.display(),
            if m.reused {
                "reused, contents kept".to_owned()
            } else {
                format!("new, seeded {} record{}", m.seeded, plural(m.seeded))
            }
        );
    }
}

pub(crate) fn deploy(args: DeployArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    loader::kernel::check_lambda_name(&args.name)?;
    let coalesced_record = host
        .coalesced_records()?
        .into_iter()
        .find(|r| r.name == args.name);
    let coalesced =
        args.mode == Some(DeployMode::Coalesced) || (args.replace && coalesced_record.is_some());
    if args.xdp.is_some() && !coalesced {
        bail!("--xdp is for --mode coalesced; a dispatcher's XDP mode is --mode auto|drv|skb");
    }
    if args.lower && !coalesced {
        bail!(
            "--lower is for --mode coalesced (the NIC runs one coalesced program, no tail calls); `attach --mode hw` lowers a lambda attached alone"
        );
    }
    if coalesced {
        return deploy_coalesced(&host, args, coalesced_record);
    }
    let rule = match (args.rule, args.replace) {
        (Some(rule), _) => rule,
        (None, _) => {
            host.deploy_records()?
                .into_iter()
                .find(|r| r.name == args.name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no lambda named `{}` is deployed: nothing to replace",
                        args.name
                    )
                })?
                .rule
        }
    };
    if !args.skip_verify {
        let contract = verify::check_before_load(
            &args.object,
            &rule.params(),
            verifier::Backend::Kernel,
            &args.limits,
        )?;
        // The request runs the dispatcher and then this lambda: bound the whole chain.
        let dispatcher = verifier::verify(
            &dispatch::verifier_input(),
            &args.limits.limits().options(verifier::Backend::Kernel, 1),
        )
        .map_err(|e| anyhow::anyhow!("the dispatcher fails our verifier: {e}"))?;
        let total = verifier::chain::tail_call_chain(
            &dispatcher,
            &contract,
            args.limits.limits().max_insns,
        )?;
        println!(
            "{}; with the dispatcher at most {total} instructions per request",
            verify::summary(&contract)
        );
    }
    if args.replace {
        let replaced = host.redeploy(&args.name, &args.object)?;
        let r = &replaced.record;
        println!(
            "replaced {} on {} ({}): program id {} now in slot {}",
            r.name, r.iface, r.rule, r.program_id, r.slot
        );
        for m in &r.maps {
            println!(
                "  map {} ({}) {}",
                m.name,
                m.map_type,
                if m.reused {
                    "reused, contents kept".to_owned()
                } else {
                    format!("new, seeded {} record{}", m.seeded, plural(m.seeded))
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let iface = args.iface.context("--iface is required")?;
    let mode = match args.mode.unwrap_or(DeployMode::Auto) {
        // No offload NIC runs tail calls: auto means drv, else skb, for a dispatcher.
        DeployMode::Auto => AttachMode::Auto,
        DeployMode::Drv => AttachMode::Drv,
        DeployMode::Skb => AttachMode::Skb,
        DeployMode::Coalesced => unreachable!("handled above"),
        DeployMode::Hw => bail!(
            "--mode hw: the dispatcher tail-calls into the lambdas' slots and offload NICs run no tail calls. Offload one lambda with `lambdactl attach OBJECT --iface IF --mode hw` (lowered for the NIC first); run several as the one program a NIC core would get with `deploy --mode coalesced --lower` (on the host), and see how a set splits over a NIC's cores with `lambdactl coalesce --lower --nic MODEL`"
        ),
    };
    let deployed = host.deploy(&args.object, &iface, &args.name, rule, mode)?;
    for note in &deployed.notes {
        println!("note: {note}");
    }
    if let Some(d) = &deployed.installed_dispatcher {
        println!(
            "installed the dispatcher on {} (ifindex {}) in {} mode: program id {}, link id {}, {} instructions",
            d.iface, d.ifindex, d.mode, d.program_id, d.link_id, d.insns
        );
        if let Some(reason) = &deployed.drv_fallback {
            println!("note: native (drv) mode failed, using generic (skb) mode: {reason}");
        }
    }
    let r = &deployed.record;
    println!(
        "deployed {} ({}) on {} for {}: program id {}, slot {}",
        r.name, r.program, r.iface, r.rule, r.program_id, r.slot
    );
    for m in &r.maps {
        println!(
            "  map {} ({}) pinned at {}{}",
            m.name,
            m.map_type,
            m.pin.display(),
            if m.seeded > 0 {
                format!(" (seeded {} record{})", m.seeded, plural(m.seeded))
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `deploy --mode coalesced`, and `--replace` of a lambda deployed so.
fn deploy_coalesced(
    host: &Host,
    args: DeployArgs,
    existing: Option<loader::kernel::CoalescedRecord>,
) -> Result<ExitCode> {
    let rule = match (args.rule, &existing) {
        (Some(rule), _) => rule,
        (None, Some(r)) => r.rule,
        (None, None) => bail!(
            "no lambda named `{}` is deployed: nothing to replace",
            args.name
        ),
    };
    if !args.skip_verify {
        // The lambda alone first, for a precise rejection; the coalesced program is verified
        // as a whole before it is loaded.
        let contract = verify::check_before_load(
            &args.object,
            &rule.params(),
            verifier::Backend::Kernel,
            &args.limits,
        )?;
        println!("{}", verify::summary(&contract));
    }
    let limits = args.limits.limits();
    // Lowered as the record says (replace), or as asked.
    let lower = match &existing {
        Some(r) if args.replace => r.lower.clone(),
        _ if args.lower => Some(
            crate::offload_cmd::nic_model(args.nic.as_deref().unwrap_or(DEFAULT_NIC))?
                .name
                .to_owned(),
        ),
        _ => None,
    };
    if let Some(nic) = &lower {
        // This lambda lowered and checked alone first, for a precise refusal before anything
        // changes; every rebuild lowers each lowered member again.
        let model = crate::offload_cmd::nic_model(nic)?;
        let bytes = std::fs::read(&args.object)
            .with_context(|| format!("cannot read {}", args.object.display()))?;
        let input = nic_offload::CoalesceInput::from_object(
            &bytes,
            &args.name,
            nic_offload::MatchRule {
                port: rule.port,
                lambda_id: rule.lambda_id,
            },
        )?;
        let ready = nic_offload::lower_and_check(&input, model, &limits)?;
        let note = if args.replace {
            " — lowered as it was deployed"
        } else {
            ""
        };
        crate::offload_cmd::print_ready(&ready, nic, note);
    }
    if args.replace {
        let (changed, build) =
            with_builder(|b| host.redeploy_coalesced(&args.name, &args.object, limits, b));
        let changed = changed?;
        let r = &changed.record;
        println!(
            "replaced {} on {} ({}) in its coalesced program",
            r.name, r.iface, r.rule
        );
        print_coalesced(&changed, build.as_ref());
        print_maps(&r.maps);
        return Ok(ExitCode::SUCCESS);
    }
    let iface = args.iface.context("--iface is required")?;
    let mode = match args.xdp.unwrap_or(XdpArg::Auto) {
        XdpArg::Auto => AttachMode::Auto,
        XdpArg::Drv => AttachMode::Drv,
        XdpArg::Skb => AttachMode::Skb,
    };
    // --xdp applies when this deploy attaches the program; the loader refuses a mode that
    // conflicts with the running attachment, and one that does not is said to change nothing.
    let running = host.coalesced_iface(&iface).map(|r| r.mode);
    let (changed, build) = with_builder(|b| {
        host.deploy_coalesced(
            &args.object,
            &iface,
            &args.name,
            rule,
            mode,
            limits,
            lower.as_deref(),
            b,
        )
    });
    let changed = changed?;
    let r = &changed.record;
    println!(
        "deployed {} (coalesced) on {} for {}",
        r.name, r.iface, r.rule
    );
    if let (Some(xdp), Some(running), Some(i)) = (args.xdp, running, &changed.iface)
        && i.lambdas.len() > 1
    {
        println!(
            "note: --xdp {} changed nothing: {} already ran its coalesced program in {running} mode, attached by its first deploy (the new program was swapped in on that link)",
            xdp.name(),
            r.iface
        );
    }
    print_coalesced(&changed, build.as_ref());
    print_maps(&r.maps);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn undeploy(args: UndeployArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    if let Some(name) = &args.name
        && host.coalesced_records()?.iter().any(|r| &r.name == name)
    {
        let (changed, build) = with_builder(|b| host.undeploy_coalesced(name, b));
        let changed = changed?;
        let r = &changed.record;
        println!(
            "undeployed {} (coalesced) from {} ({})",
            r.name, r.iface, r.rule
        );
        match &changed.iface {
            Some(_) => print_coalesced(&changed, build.as_ref()),
            None => println!(
                "it was the last lambda on {}: removed its coalesced program, link and pins",
                r.iface
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut removed_coalesced = 0;
    if args.all {
        for r in host.undeploy_coalesced_all(args.iface.as_deref())? {
            println!(
                "undeployed {} (coalesced) from {} ({})",
                r.name, r.iface, r.rule
            );
            removed_coalesced += 1;
        }
    }
    let names: Vec<String> = match &args.name {
        Some(name) => vec![name.clone()],
        None => host
            .deploy_records()?
            .into_iter()
            .filter(|r| args.iface.as_ref().is_none_or(|i| *i == r.iface))
            .map(|r| r.name)
            .collect(),
    };
    if names.is_empty() && removed_coalesced == 0 {
        println!("nothing deployed to undeploy");
    }
    for name in names {
        undeploy_one(&host, &name)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn undeploy_one(host: &Host, name: &str) -> Result<()> {
    let undeployed = host.undeploy(name)?;
    let r = &undeployed.record;
    println!(
        "undeployed {} (program id {}, slot {}) from {} ({})",
        r.name, r.program_id, r.slot, r.iface, r.rule
    );
    if let Some(d) = &undeployed.removed_dispatcher {
        println!(
            "it was the last lambda on {}: removed the dispatcher (program id {})",
            d.iface, d.program_id
        );
    }
    Ok(())
}

/// Invocations counted by a deployed lambda's SDK counters, when it has them.
/// A deployed or coalesced lambda's liveness for `ls --json`.
fn liveness_json(live: &Result<(), String>) -> serde_json::Value {
    match live {
        Ok(()) => serde_json::json!({ "state": "live", "detail": null }),
        Err(reason) => serde_json::json!({ "state": "stale", "detail": reason }),
    }
}

/// The `ls` table's MAPS, CALLS and STATE cells, the same for deployed and coalesced lambdas:
/// the lambda's own maps (not its global-data sections), its SDK invocation count, liveness.
fn maps_calls_state(maps: &[loader::PinnedMap], live: &Result<(), String>) -> [String; 3] {
    let names: Vec<&str> = maps
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| !n.starts_with('.'))
        .collect();
    [
        if names.is_empty() {
            "-".into()
        } else {
            names.join(",")
        },
        invocations_of(maps).map_or_else(|| "-".into(), |n| n.to_string()),
        match live {
            Ok(()) => "live".into(),
            Err(reason) => format!("STALE: {reason}"),
        },
    ]
}

fn invocations_of(maps: &[loader::PinnedMap]) -> Option<u64> {
    let pin = maps
        .iter()
        .find(|m| m.name == lambda_ebpf::stats::MAP_NAME)?
        .pin
        .clone();
    let map = KernelMap::from_pin(pin).ok()?;
    loader::kernel::sum_slots(&map).ok().map(|s| s.invocations)
}

/// The deployed lambdas for `ls --json`, each with `"kind": "deployed"`.
pub(crate) fn deployed_json(host: &Host) -> Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    for d in host.deployed()? {
        let mut v = serde_json::to_value(&d.record).context("serializing a deploy record")?;
        v["kind"] = "deployed".into();
        v["rule_text"] = d.record.rule.to_string().into();
        v["invocations"] = invocations_of(&d.record.maps).into();
        v["liveness"] = liveness_json(&d.live);
        let dispatcher = host.dispatcher(&d.record.iface);
        v["dispatcher_mode"] = dispatcher.as_ref().map(|r| r.mode.to_string()).into();
        v["dispatcher_program_id"] = dispatcher.as_ref().map(|r| r.program_id).into();
        items.push(v);
    }
    Ok(items)
}

/// The deployed lambdas as a table for `ls`; returns how many there were.
pub(crate) fn print_deployed(host: &Host) -> Result<usize> {
    let deployed = host.deployed()?;
    if deployed.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = deployed
        .iter()
        .map(|d| {
            let r = &d.record;
            let mut row = vec![
                r.name.clone(),
                r.iface.clone(),
                host.dispatcher(&r.iface)
                    .map_or_else(|| "-".into(), |d| d.mode.to_string()),
                r.rule.to_string(),
                r.slot.to_string(),
                r.program_id.to_string(),
            ];
            row.extend(maps_calls_state(&r.maps, &d.live));
            row
        })
        .collect();
    println!("deployed behind dispatchers:");
    print_table(
        &[
            "NAME", "IFACE", "MODE", "MATCH", "SLOT", "PROG", "MAPS", "CALLS", "STATE",
        ],
        &rows,
    );
    let mut ifaces: Vec<&str> = deployed.iter().map(|d| d.record.iface.as_str()).collect();
    ifaces.sort_unstable();
    ifaces.dedup();
    for iface in ifaces {
        if let Ok(counts) = host.dispatcher_counters(iface) {
            let parts: Vec<String> = dispatch::DispatchCounter::ALL
                .iter()
                .zip(counts)
                .map(|(c, n)| format!("{} {n}", c.name()))
                .collect();
            println!("dispatcher on {iface}: {}", parts.join(", "));
        }
    }
    Ok(deployed.len())
}

/// The coalesced lambdas for `ls --json`, each with `"kind": "coalesced"`.
pub(crate) fn coalesced_json(host: &Host) -> Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    for c in host.coalesced()? {
        let mut v = serde_json::to_value(&c.record).context("serializing a coalesced record")?;
        v["kind"] = "coalesced".into();
        v["rule_text"] = c.record.rule.to_string().into();
        v["liveness"] = liveness_json(&c.live);
        let iface = host.coalesced_iface(&c.record.iface);
        v["xdp_mode"] = iface.as_ref().map(|r| r.mode.to_string()).into();
        v["program_id"] = iface.as_ref().map(|r| r.program_id).into();
        v["program_lowered_for"] = iface.as_ref().and_then(|r| r.lower.clone()).into();
        items.push(v);
    }
    Ok(items)
}

/// The coalesced lambdas as a table for `ls`; returns how many there were.
pub(crate) fn print_coalesced_ls(host: &Host) -> Result<usize> {
    let all = host.coalesced()?;
    if all.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            let r = &c.record;
            let iface = host.coalesced_iface(&r.iface);
            let mut row = vec![
                r.name.clone(),
                r.iface.clone(),
                iface.as_ref().map_or_else(
                    || "coalesced".into(),
                    |i| match &r.lower {
                        Some(nic) => format!("coalesced/{} (lowered: {nic})", i.mode),
                        None => format!("coalesced/{}", i.mode),
                    },
                ),
                r.rule.to_string(),
                iface
                    .as_ref()
                    .map_or_else(|| "-".into(), |i| i.program_id.to_string()),
            ];
            row.extend(maps_calls_state(&r.maps, &c.live));
            row
        })
        .collect();
    println!("deployed in coalesced programs:");
    print_table(
        &[
            "NAME", "IFACE", "MODE", "MATCH", "PROG", "MAPS", "CALLS", "STATE",
        ],
        &rows,
    );
    Ok(all.len())
}
