//! `lambdactl logs`: prints what a lambda logged through the SDK (`lambda_ebpf::log`): for an
//! attached lambda, read from its pinned ring buffer; for one deployed behind a dispatcher or in
//! coalesced mode, from its own ring buffer (pinned under its name); for one served by `lambdactl run`,
//! from the ring buffer of its VM, through the control socket.

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::Args;
use loader::{
    Host,
    kernel::{LogLine, format_utc, monotonic_to_realtime_offset_ns},
};
use serde_json::{Value, json};

use crate::vm_control::Client;

#[derive(Args)]
pub struct LogsArgs {
    /// The lambda whose log to read: its name (the object's stem, as `lambdactl ls` shows it;
    /// for a deployed lambda, its --name). A name attached on several
    /// interfaces needs --iface instead.
    #[arg(value_name = "LAMBDA", required_unless_present_any = ["iface", "vm"])]
    lambda: Option<String>,
    /// The interface whose lambda's log to read (on an interface with deployed lambdas, its
    /// lambda when it has one; with several, name the lambda).
    #[arg(long, value_name = "IF", conflicts_with_all = ["lambda", "vm"])]
    iface: Option<String>,
    /// The lambda served by a `lambdactl run` process instead: its control socket, or
    /// `vm:<name>` to find it.
    #[arg(long, value_name = "SOCKET", conflicts_with = "lambda")]
    vm: Option<String>,
    /// Keep waiting for new lines until Ctrl-C (attached lambdas: woken by the kernel when the
    /// ring buffer has data; --vm: asked for every 200 ms).
    #[arg(long)]
    follow: bool,
    /// Print one JSON object per line: time, ktime_ns, iface (or vm), lambda, text.
    #[arg(long)]
    json: bool,
}

/// How long `--follow` waits for data before looking again (the wait returns at once when
/// data arrives; the timeout only bounds how long a lost wakeup could delay a line).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// How often `--follow --vm` asks the control socket: the VM has no file descriptor to wait on.
const VM_FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn run(args: LogsArgs) -> Result<ExitCode> {
    if let Some(spec) = &args.vm {
        return run_vm(&args, spec);
    }
    let host = Host::from_env()?;
    let mut reader = match (&args.iface, &args.lambda) {
        (Some(iface), _) => match deployed_on(&host, iface)?.as_slice() {
            [] => host.logs(iface)?,
            [one] => host.deployed_logs(one)?,
            many => bail!(
                "`{iface}` runs {} deployed lambdas ({}): name the one whose log to read",
                many.len(),
                many.join(", ")
            ),
        },
        (None, Some(name)) => {
            if deployed_on_any(&host, name)? {
                host.deployed_logs(name)?
            } else {
                host.logs(&iface_of(&host, name)?)?
            }
        }
        // clap requires one of LAMBDA, --iface and --vm.
        (None, None) => bail!("name the lambda, or pass --iface or --vm"),
    };
    let iface = reader.iface.clone();
    let place = json!({ "iface": iface });
    loop {
        let lines = reader.drain();
        // Converted per batch: the offset between the clocks moves only with NTP adjustments.
        let offset = monotonic_to_realtime_offset_ns();
        for line in &lines {
            print_line(&args, &place, &reader.lambda, line, offset);
        }
        if !args.follow {
            break;
        }
        reader.wait(FOLLOW_POLL)?;
    }
    warn_malformed(reader.malformed);
    Ok(ExitCode::SUCCESS)
}

/// The lambdas deployed on `iface` (behind its dispatcher or in its coalesced program), by
/// name.
fn deployed_on(host: &Host, iface: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = host
        .coalesced_records()?
        .into_iter()
        .filter(|r| r.iface == iface)
        .map(|r| r.name)
        .collect();
    names.extend(
        host.deploy_records()?
            .into_iter()
            .filter(|r| r.iface == iface)
            .map(|r| r.name),
    );
    names.sort();
    Ok(names)
}

/// Whether a lambda is deployed (not attached) under `name`.
fn deployed_on_any(host: &Host, name: &str) -> Result<bool> {
    Ok(host.coalesced_records()?.iter().any(|r| r.name == name)
        || host.deploy_records()?.iter().any(|r| r.name == name))
}

/// The interface the lambda `name` is attached on: an error when it is attached nowhere, or on
/// several interfaces (a name is not unique; an interface is).
fn iface_of(host: &Host, name: &str) -> Result<String> {
    let listed = host.list()?;
    let matches: Vec<&str> = listed
        .iter()
        .filter(|l| l.record.lambda == name)
        .map(|l| l.record.iface.as_str())
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] if listed.is_empty() => {
            bail!("no lambdas attached in this network namespace (see `lambdactl attach`)")
        }
        [] => bail!(
            "no lambda `{name}` attached in this network namespace; attached: {}",
            listed
                .iter()
                .map(|l| format!("{} on {}", l.record.lambda, l.record.iface))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "lambda `{name}` is attached on several interfaces ({}): pass one with --iface",
            many.join(", ")
        ),
    }
}

/// `logs --vm`: drains the VM's ring buffer through the control socket's `logs` op.
fn run_vm(args: &LogsArgs, spec: &str) -> Result<ExitCode> {
    let client = Client::connect(spec)?;
    let place = json!({ "vm": client.path() });
    let mut malformed = 0u64;
    loop {
        let answer = client.request(&json!({ "op": "logs" }))?;
        let lambda = answer["lambda"].as_str().unwrap_or("?");
        let offset = monotonic_to_realtime_offset_ns();
        let records = answer["records"].as_array().map_or(&[][..], Vec::as_slice);
        for record in records {
            match (record["ktime_ns"].as_u64(), record["text"].as_str()) {
                (Some(ktime_ns), Some(text)) => {
                    let line = LogLine {
                        ktime_ns,
                        text: text.as_bytes().to_vec(),
                    };
                    print_line(args, &place, lambda, &line, offset);
                }
                _ => malformed += 1,
            }
        }
        if !args.follow {
            break;
        }
        std::thread::sleep(VM_FOLLOW_POLL);
    }
    warn_malformed(malformed);
    Ok(ExitCode::SUCCESS)
}

fn warn_malformed(malformed: u64) {
    if malformed > 0 {
        eprintln!("lambdactl: {malformed} record(s) in the ring buffer were not SDK log records");
    }
}

/// Prints one line; `place` is the JSON field saying where the lambda runs (`iface` or `vm`).
fn print_line(args: &LogsArgs, place: &Value, lambda: &str, line: &LogLine, offset: i128) {
    let time = format_utc(i128::from(line.ktime_ns) + offset);
    let text = String::from_utf8_lossy(&line.text);
    if args.json {
        let mut object = json!({
            "time": time,
            "ktime_ns": line.ktime_ns,
            "lambda": lambda,
            "text": text,
        });
        if let (Some(object), Some(place)) = (object.as_object_mut(), place.as_object()) {
            object.extend(place.clone());
        }
        println!("{object}");
    } else {
        println!("{time} {lambda} {text}");
    }
}
