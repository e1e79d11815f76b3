//! `lambdactl logs`: prints what an attached lambda logged through the SDK
//! (`lambda_ebpf::log`), read from its pinned ring buffer.

use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use clap::Args;
use loader::{
    Host,
    kernel::{LogLine, format_utc, monotonic_to_realtime_offset_ns},
};
use serde_json::json;

#[derive(Args)]
pub struct LogsArgs {
    /// The interface whose lambda's log to read.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// Keep waiting for new lines (woken by the kernel when the ring buffer has data) until
    /// Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Print one JSON object per line: time, ktime_ns, iface, lambda, text.
    #[arg(long)]
    json: bool,
}

/// How long `--follow` waits for data before looking again (the wait returns at once when
/// data arrives; the timeout only bounds how long a lost wakeup could delay a line).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub fn run(args: LogsArgs) -> Result<ExitCode> {
    let host = Host::from_env()?;
    let mut reader = host.logs(&args.iface)?;
    loop {
        let lines = reader.drain();
        // Converted per batch: the offset between the clocks moves only with NTP adjustments.
        let offset = monotonic_to_realtime_offset_ns();
        for line in &lines {
            print_line(&args, &reader.lambda, line, offset);
        }
        if !args.follow {
            break;
        }
        reader.wait(FOLLOW_POLL)?;
    }
    if reader.malformed > 0 {
        eprintln!(
            "lambdactl: {} record(s) in the ring buffer were not SDK log records",
            reader.malformed
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_line(args: &LogsArgs, lambda: &str, line: &LogLine, offset: i128) {
    let time = format_utc(i128::from(line.ktime_ns) + offset);
    let text = String::from_utf8_lossy(&line.text);
    if args.json {
        println!(
            "{}",
            json!({
                "time": time,
                "ktime_ns": line.ktime_ns,
                "iface": args.iface,
                "lambda": lambda,
                "text": text,
            })
        );
    } else {
        println!("{time} {lambda} {text}");
    }
}
