//! `lambdactl watchdog`: an OpenFaaS-classic-style watchdog, the function container's HTTP
//! server in the paper's container column. For EVERY request it forks and execs the handler
//! command, writes the request body to its stdin and answers with its stdout (200), or with its
//! stderr (500) when it exits non-zero. Like the classic watchdog it passes the request line to
//! the handler as `Http_Method`, `Http_Path` and `Http_Query`, and headers as
//! `Http_<Header_Name>` environment variables; `GET /_/health` answers 200 without forking.
//!
//! The cost it measures is the fork/exec per request, so nothing is cached or kept warm.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Args)]
pub(crate) struct WatchdogArgs {
    /// HTTP address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Kill the handler and answer 504 when it has not finished after this many milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Largest request body accepted, in bytes; larger ones get 413 and fork nothing.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_body: usize,
    /// Content-Type of successful answers.
    #[arg(long, default_value = "application/octet-stream", value_name = "TYPE")]
    content_type: String,
    /// The handler: a program and its arguments, after `--` (e.g. `-- lambdactl handle
    /// static-server`).
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

struct Config {
    program: OsString,
    args: Vec<OsString>,
    timeout: Duration,
    max_body: usize,
    content_type: HeaderValue,
}

pub(crate) fn run(args: WatchdogArgs) -> Result<ExitCode> {
    let content_type = HeaderValue::from_str(&args.content_type)
        .with_context(|| format!("invalid --content-type `{}`", args.content_type))?;
    let mut command = args.command.into_iter();
    let program = command.next().context("no handler command after `--`")?;
    let config = Arc::new(Config {
        program,
        args: command.collect(),
        timeout: Duration::from_millis(args.timeout_ms),
        max_body: args.max_body,
        content_type,
    });
    // main() restores SIGPIPE's default action (dying) for the CLI's pipelines; a handler that
    // exits without reading its stdin must cost an EPIPE here, not the server. (The handlers
    // get the default action back: std's spawn resets it.)
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on TCP {}", args.listen))?;
        let shown: Vec<String> = std::iter::once(&config.program)
            .chain(&config.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        println!(
            "serving watchdog on http {}: forks `{}` per request",
            listener.local_addr()?,
            shown.join(" ")
        );
        std::io::stdout().flush()?;
        let app = Router::new()
            .route("/_/health", get(|| async { "OK\n" }))
            .fallback(invoke)
            .with_state(config);
        axum::serve(listener, app).await.context("serving HTTP")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn text(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

fn too_large(config: &Config) -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds {} bytes\n", config.max_body),
    )
}

/// One request: fork the handler, feed it the body, answer with what it wrote.
async fn invoke(State(config): State<Arc<Config>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > config.max_body as u64) {
        // Refused on its announced length, before reading any of it (a client that sent
        // `Expect: 100-continue` never sends it).
        return too_large(&config);
    }
    let body = match axum::body::to_bytes(body, config.max_body).await {
        Ok(body) => body,
        Err(e) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if over_limit {
                too_large(&config)
            } else {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}\n"),
                )
            };
        }
    };
    let mut command = tokio::process::Command::new(&config.program);
    command
        .args(&config.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("Http_Method", parts.method.as_str())
        .env("Http_Path", parts.uri.path())
        .env("Http_Query", parts.uri.query().unwrap_or(""));
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            command.env(header_variable(name.as_str()), value);
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "cannot start the handler {}: {e}\n",
                    config.program.to_string_lossy()
                ),
            );
        }
    };
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A handler that exits without reading all of its input is its own business: the
            // broken pipe is not an error here, its exit status says what happened.
            let _ = stdin.write_all(&body).await;
        }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = async {
        let read_out = async {
            if let Some(mut pipe) = stdout {
                pipe.read_to_end(&mut out).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let read_err = async {
            if let Some(mut pipe) = stderr {
                pipe.read_to_end(&mut err).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let ((), read_out, read_err, status) = tokio::join!(feed, read_out, read_err, child.wait());
        read_out?;
        read_err?;
        status
    };
    let status = match tokio::time::timeout(config.timeout, finished).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("waiting for the handler: {e}\n"),
            );
        }
        Err(_) => {
            // SIGKILL and reap it now: no zombie left until some later spawn.
            let _ = child.kill().await;
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the handler did not finish within {} ms and was killed\n",
                    config.timeout.as_millis()
                ),
            );
        }
    };
    let output = std::process::Output {
        status,
        stdout: out,
        stderr: err,
    };
    if output.status.success() {
        let mut response = Response::new(Body::from(output.stdout));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, config.content_type.clone());
        return response;
    }
    let mut message = output.stderr;
    if message.is_empty() {
        message = format!("the handler failed ({})\n", output.status).into_bytes();
    }
    (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
}

/// The classic watchdog's name for a header's variable: `content-type` → `Http_Content_Type`.
fn header_variable(name: &str) -> String {
    let mut out = String::from("Http_");
    let mut upper = true;
    for c in name.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_variables_are_named_like_the_classic_watchdog() {
        assert_eq!(header_variable("content-type"), "Http_Content_Type");
        assert_eq!(header_variable("x-call-id"), "Http_X_Call_Id");
        assert_eq!(header_variable("host"), "Http_Host");
    }
}
