//! Where functions run. A backend deploys a lambda object under a name and returns the
//! [`Endpoint`] its requests go to; `update` swaps in a new object without a failed call, and
//! `remove` takes it away. Both backends drive the `lambdactl` binary as child processes, the
//! same commands an operator would type.
//!
//! Until the dispatcher serves many lambdas on one interface, each function has a port of its
//! own (`vm`) or a veth pair of its own (`drv`/`skb`); the dispatcher replaces that inside
//! [`XdpBackend`] without touching the gateway.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::sync::Mutex;
use std::time::Duration;

use crate::invoke::Endpoint;

/// A backend kind, as named in the `lambda-nic.backend` annotation and `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendKind {
    /// XDP in native (driver) mode.
    Drv,
    /// XDP in generic (skb) mode.
    Skb,
    /// `lambdactl deploy --mode coalesced`: the interface's functions in one coalesced XDP
    /// program (drv mode when the gateway has the peer helper, else skb), no tail calls.
    Coalesced,
    /// `lambdactl run`: the userspace VM.
    Vm,
    /// `lambdactl baseline`: the workload as a plain native UDP server (static-server,
    /// memcached, grayscale), the benchmarks' bare-metal column behind the same gateway.
    Native,
}

impl BackendKind {
    pub fn parse(text: &str) -> Option<BackendKind> {
        match text {
            "drv" => Some(BackendKind::Drv),
            "skb" => Some(BackendKind::Skb),
            "coalesced" => Some(BackendKind::Coalesced),
            "vm" => Some(BackendKind::Vm),
            "native" => Some(BackendKind::Native),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Drv => "drv",
            BackendKind::Skb => "skb",
            BackendKind::Coalesced => "coalesced",
            BackendKind::Vm => "vm",
            BackendKind::Native => "native",
        }
    }

    pub fn is_xdp(self) -> bool {
        matches!(
            self,
            BackendKind::Drv | BackendKind::Skb | BackendKind::Coalesced
        )
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to deploy: the function's name, its object and the match it serves.
#[derive(Clone, Debug)]
pub struct DeploySpec {
    pub name: String,
    pub object: PathBuf,
    pub kind: BackendKind,
    /// UDP port to serve (default: 9000 on XDP, a free one in the VM).
    pub port: Option<u16>,
    /// The lambda id its requests carry (and the only one it answers).
    pub lambda_id: u32,
    /// `lambda-nic.iface`: the name of the server-side interface (XDP backends).
    pub iface: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    /// `lambdactl attach|upgrade` refused the object (our verifier, the kernel's, a bad ELF).
    #[error("the lambda was refused: {output}")]
    Refused { output: String },
    #[error("lambdactl run for `{name}` did not start serving: {detail}")]
    NotServing { name: String, detail: String },
    #[error("function `{name}` is not deployed on this backend")]
    Unknown { name: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "no native baseline for `{workload}`: the native backend serves static-server, memcached and grayscale"
    )]
    NoBaseline { workload: String },
    /// The memcached lambda (or baseline) was deployed but the gateway has no memcached server.
    #[error(
        "function `{name}` is the memcached workload, but this gateway has no memcached server to send it to (start the gateway with --memcached ADDR:PORT)"
    )]
    NoMemcached { name: String },
}

impl BackendError {
    /// Whether the lambda object itself is at fault (a client error), not this host.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            BackendError::Refused { .. }
                | BackendError::NotServing { .. }
                | BackendError::NoBaseline { .. }
                | BackendError::NoMemcached { .. }
        )
    }
}

/// A place functions run. Methods block (they run child processes): call them from a
/// blocking thread.
pub trait FunctionBackend: Send + Sync {
    fn deploy(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError>;
    /// Replaces the function's object; calls keep being answered throughout. The returned
    /// endpoint takes over after [`FunctionBackend::handover`].
    fn update(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError>;
    /// Completes an update while the gateway holds the function's calls (none in flight, new
    /// ones waiting): moves state the new version does not share by itself. On error the new
    /// version is dropped and the old one keeps serving.
    fn handover(&self, name: &str) -> Result<(), BackendError> {
        let _ = name;
        Ok(())
    }
    fn remove(&self, name: &str) -> Result<(), BackendError>;
    /// Removes everything this backend made (children, namespaces). Idempotent.
    fn shutdown(&self);
}

/// Runs a command to completion; its output becomes the error when it fails.
fn run(program: &Path, args: &[&str]) -> Result<String, BackendError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BackendError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.trim().is_empty() {
            output.push_str(" | ");
            output.push_str(stdout.trim());
        }
        return Err(BackendError::Command {
            command: format!("{} {}", program.display(), args.join(" ")),
            status: out.status.to_string(),
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `spec` deploys the memcached workload (its object is `memcached.o`), which needs
/// the gateway's memcached server.
fn is_memcached(spec: &DeploySpec) -> bool {
    spec.object.file_stem().and_then(|s| s.to_str()) == Some("memcached")
}

/// The memcached lambda's `CONFIG` value: server IPv4 address, the MAC its requests go to,
/// UDP port (network order), flags (0: no hot-key cache) and 3 reserved bytes.
fn memcached_config(server: SocketAddrV4, mac: [u8; 6]) -> Vec<u8> {
    let mut bytes = server.ip().octets().to_vec();
    bytes.extend_from_slice(&mac);
    bytes.extend_from_slice(&server.port().to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn path_str(path: &Path) -> Result<&str, BackendError> {
    path.to_str()
        .ok_or_else(|| BackendError::Unsupported(format!("non-UTF-8 path {}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// vm

/// One `lambdactl run` child per function on a loopback port.
pub struct VmBackend {
    lambdactl: PathBuf,
    workers: usize,
    /// Serve each function's native baseline (`lambdactl baseline`) instead of its lambda.
    native: bool,
    children: Mutex<HashMap<String, VmChild>>,
    /// New versions started by `update`, waiting for `handover`.
    pending: Mutex<HashMap<String, VmChild>>,
    /// The memcached server the memcached lambda (or baseline) is given.
    memcached: Option<SocketAddrV4>,
}

/// The workloads `lambdactl baseline` serves, by their lambda's object name.
const NATIVE_WORKLOADS: [&str; 3] = ["static-server", "memcached", "grayscale"];

/// A `lambdactl run` child and its control socket (where its maps are reached).
struct VmChild {
    child: Child,
    control: Option<PathBuf>,
}

impl VmBackend {
    pub fn new(lambdactl: PathBuf, workers: usize) -> VmBackend {
        VmBackend {
            lambdactl,
            workers: workers.max(1),
            native: false,
            children: Mutex::default(),
            pending: Mutex::default(),
            memcached: None,
        }
    }

    /// The memcached server a memcached function is told about: `lambdactl baseline
    /// memcached --memcached ADDR`, or the lambda's `CONFIG` map through its control socket
    /// (the VM sends the lambda's `XDP_TX` datagram to the address it names, so no MAC).
    pub fn with_memcached(mut self, memcached: Option<SocketAddrV4>) -> VmBackend {
        self.memcached = memcached;
        self
    }

    /// The same process management for `lambdactl baseline` children: a function's object
    /// names its workload (`static-server.o` → `lambdactl baseline static-server`). They keep
    /// no state the gateway could move, so an update of one starts afresh.
    pub fn native(lambdactl: PathBuf) -> VmBackend {
        let mut backend = VmBackend::new(lambdactl, 1);
        backend.native = true;
        backend
    }

    /// Starts `lambdactl run` with rbpf's JIT, or with the interpreter when the JIT refuses
    /// the program (it lacks atomics, for one).
    fn start(&self, spec: &DeploySpec) -> Result<(VmChild, Endpoint), BackendError> {
        if is_memcached(spec) && self.memcached.is_none() {
            return Err(BackendError::NoMemcached {
                name: spec.name.clone(),
            });
        }
        if self.native {
            return self.start_engine(spec, false);
        }
        let (child, endpoint) = match self.start_engine(spec, true) {
            Err(BackendError::NotServing { detail, .. }) if detail.contains("jit") => {
                self.start_engine(spec, false)
            }
            other => other,
        }?;
        if let (true, Some(server)) = (is_memcached(spec), self.memcached) {
            let configured = match &child.control {
                Some(control) => connect(control).and_then(|mut stream| {
                    control_call(
                        &mut stream,
                        serde_json::json!({
                            "op": "update", "map": "CONFIG", "key": "00000000",
                            "value": hex(&memcached_config(server, [0; 6])), "flags": 0,
                        }),
                    )
                }),
                None => Err(BackendError::Unsupported(
                    "a VM without a control socket: the memcached lambda cannot be configured"
                        .into(),
                )),
            };
            if let Err(e) = configured {
                stop_child(child);
                return Err(e);
            }
        }
        Ok((child, endpoint))
    }

    /// Starts `lambdactl run` and waits for its "serving … on udp ADDR" line.
    fn start_engine(
        &self,
        spec: &DeploySpec,
        jit: bool,
    ) -> Result<(VmChild, Endpoint), BackendError> {
        let listen = format!("127.0.0.1:{}", spec.port.unwrap_or(0));
        let lambda_id = spec.lambda_id.to_string();
        let workers = self.workers.to_string();
        let object = path_str(&spec.object)?;
        let workload = spec
            .object
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let memcached = self.memcached.map(|m| m.to_string()).unwrap_or_default();
        let args = if self.native {
            if !NATIVE_WORKLOADS.contains(&workload) {
                return Err(BackendError::NoBaseline {
                    workload: workload.to_owned(),
                });
            }
            let mut args = vec!["baseline", workload, "--listen", &listen];
            if workload == "memcached" {
                args.extend(["--memcached", &memcached]);
            }
            args
        } else {
            let mut args = vec!["run", object, "--listen", &listen];
            // The memcached lambda answers any id: memcached's replies, which carry no λ
            // header, must reach it too (a port of its own, as on XDP).
            if !is_memcached(spec) {
                args.extend(["--lambda-id", &lambda_id]);
            }
            args.extend(["--workers", &workers]);
            if jit {
                args.push("--jit");
            }
            args
        };
        let mut command = Command::new(&self.lambdactl);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied(command).map_err(|source| BackendError::Spawn {
            program: self.lambdactl.display().to_string(),
            source,
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let not_serving = |child: &mut Child, detail: String| {
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            let _ = child.wait();
            BackendError::NotServing {
                name: spec.name.clone(),
                detail: format!("{detail} {}", stderr.trim()),
            }
        };
        let first = match lines.next() {
            Some(Ok(line)) => line,
            _ => return Err(not_serving(&mut child, "it exited:".into())),
        };
        let Some(addr) = first
            .split(" on udp ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            return Err(not_serving(
                &mut child,
                format!("unexpected output {first:?}"),
            ));
        };
        // Then the contract and seeds, then where its control socket is (a baseline has
        // none and prints nothing more).
        let mut control = None;
        // (Checked before reading: a read would wait for a line that never comes.)
        let more = if self.native {
            None
        } else {
            Some(lines.by_ref())
        };
        for line in more.into_iter().flatten().map_while(Result::ok) {
            if let Some(path) = line.strip_prefix("control socket ") {
                control = Some(PathBuf::from(path.trim()));
                break;
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        // The rest of its stdout (counts on stop) is drained so the child never blocks on a
        // full pipe; its stderr (lambda faults) goes to ours.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        if let Some(stderr) = child.stderr.take() {
            let name = spec.name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("gateway: {name}: {line}");
                }
            });
        }
        Ok((
            VmChild { child, control },
            Endpoint {
                addr,
                lambda_id: spec.lambda_id,
            },
        ))
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Starts `command` so that it gets SIGTERM when the gateway dies, even by SIGKILL
/// (`PR_SET_PDEATHSIG`). The signal follows the *thread* that forked, so every such child is
/// forked by one thread that lives as long as the process, never by a pool thread that may
/// retire while the child runs.
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    static SPAWNER: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("gateway-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    spawner
        .lock()
        .expect("spawner")
        .send((command, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Asks a control socket one JSON-line request.
fn control_call(
    stream: &mut std::io::BufReader<std::os::unix::net::UnixStream>,
    request: serde_json::Value,
) -> Result<serde_json::Value, BackendError> {
    use std::io::Write as _;
    let failed = |e: String| BackendError::Unsupported(format!("VM control socket: {e}"));
    let mut line = request.to_string();
    line.push('\n');
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let mut answer = String::new();
    stream
        .read_line(&mut answer)
        .map_err(|e| failed(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| failed(format!("bad answer: {e}")))?;
    if let Some(error) = value.get("error") {
        return Err(failed(error.to_string()));
    }
    Ok(value)
}

fn connect(path: &Path) -> Result<BufReader<std::os::unix::net::UnixStream>, BackendError> {
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        BackendError::Unsupported(format!("VM control socket {}: {e}", path.display()))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    Ok(BufReader::new(stream))
}

/// Copies every map the two versions share by name, type and sizes from `old` to `new`, as
/// `lambdactl upgrade` keeps pinned maps; ring buffers (logs) start empty. Returns how many
/// maps were copied.
fn copy_state(old: &Path, new: &Path) -> Result<usize, BackendError> {
    let mut from = connect(old)?;
    let mut to = connect(new)?;
    let maps = |s: &mut BufReader<std::os::unix::net::UnixStream>| {
        control_call(s, serde_json::json!({ "op": "maps" }))
            .map(|v| v["maps"].as_array().cloned().unwrap_or_default())
    };
    let old_maps = maps(&mut from)?;
    let new_maps = maps(&mut to)?;
    let mut copied = 0;
    for m in &old_maps {
        let kind = m["type"].as_str().unwrap_or("");
        if kind.contains("ringbuf") || kind.contains("prog") || kind.contains("perf") {
            continue;
        }
        let same = new_maps.iter().any(|n| {
            n["name"] == m["name"]
                && n["type"] == m["type"]
                && n["key_size"] == m["key_size"]
                && n["value_size"] == m["value_size"]
                && n["max_entries"].as_u64() >= m["max_entries"].as_u64()
        });
        if !same {
            continue;
        }
        let name = &m["name"];
        let entries = control_call(
            &mut from,
            serde_json::json!({ "op": "entries", "map": name }),
        )?;
        for entry in entries["entries"].as_array().into_iter().flatten() {
            control_call(
                &mut to,
                serde_json::json!({
                    "op": "update", "map": name, "key": entry[0], "value": entry[1], "flags": 0,
                }),
            )?;
        }
        copied += 1;
    }
    Ok(copied)
}

/// Stops a `lambdactl run` child the way Ctrl-C does (it prints its counts and removes its
/// control socket), by its PID, and reaps it.
fn stop_child(child: VmChild) {
    let mut child = child.child;
    // SAFETY: signalling a child we started and have not reaped, so the PID is still ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How long an old VM lives on after the handover (no call can reach it then: the gateway
/// held every call while the state moved; this only covers a stray late datagram).
const VM_DRAIN: Duration = Duration::from_millis(500);

impl FunctionBackend for VmBackend {
    fn deploy(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError> {
        let (child, endpoint) = self.start(spec)?;
        if let Some(old) = self
            .children
            .lock()
            .expect("children")
            .insert(spec.name.clone(), child)
        {
            stop_child(old);
        }
        Ok(endpoint)
    }

    fn update(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError> {
        // With a fixed port the new child could not bind beside the old one.
        let mut fresh = spec.clone();
        fresh.port = None;
        if !self
            .children
            .lock()
            .expect("children")
            .contains_key(&spec.name)
        {
            return Err(BackendError::Unknown {
                name: spec.name.clone(),
            });
        }
        let (child, endpoint) = self.start(&fresh)?;
        if let Some(stale) = self
            .pending
            .lock()
            .expect("pending")
            .insert(spec.name.clone(), child)
        {
            stop_child(stale);
        }
        Ok(endpoint)
    }

    fn handover(&self, name: &str) -> Result<(), BackendError> {
        let Some(new) = self.pending.lock().expect("pending").remove(name) else {
            return Err(BackendError::Unknown { name: name.into() });
        };
        let old_control = self
            .children
            .lock()
            .expect("children")
            .get(name)
            .and_then(|c| c.control.clone());
        let copied = match (old_control, &new.control) {
            _ if self.native => Ok(0),
            (Some(old), Some(fresh)) => copy_state(&old, fresh),
            _ => Err(BackendError::Unsupported(
                "a VM without a control socket: its state cannot move".into(),
            )),
        };
        if let Err(e) = copied {
            stop_child(new);
            return Err(e);
        }
        let old = self
            .children
            .lock()
            .expect("children")
            .insert(name.to_owned(), new);
        if let Some(old) = old {
            std::thread::spawn(move || {
                std::thread::sleep(VM_DRAIN);
                stop_child(old);
            });
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        let child = self.children.lock().expect("children").remove(name);
        match child {
            Some(child) => {
                stop_child(child);
                Ok(())
            }
            None => Err(BackendError::Unknown { name: name.into() }),
        }
    }

    fn shutdown(&self) {
        let mut children: Vec<VmChild> = self
            .children
            .lock()
            .map(|mut c| c.drain().map(|(_, child)| child).collect())
            .unwrap_or_default();
        if let Ok(mut pending) = self.pending.lock() {
            children.extend(pending.drain().map(|(_, child)| child));
        }
        for child in children {
            stop_child(child);
        }
    }
}

impl Drop for VmBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// drv / skb

/// XDP on veth pairs between two network namespaces the gateway creates: the lambdas' ends in
/// `<prefix>-s`, the peers in `<prefix>-c`, where the gateway's invocation sockets live. Every
/// function is deployed behind the dispatcher of a shared pair (`lambdactl deploy`): one pair
/// per XDP mode (or per `lambda-nic.iface` name), each with its /24 (10.216.N.0), made for its
/// first function and removed with its last. Functions on a pair are told apart by their
/// UDP port and lambda id, as the dispatcher's rules match them.
pub struct XdpBackend {
    lambdactl: PathBuf,
    /// `static-server.o`, given to each peer in drv mode (it passes everything but port 1):
    /// native-mode `XDP_TX` on veth needs an XDP program on the peer.
    peer_helper: Option<PathBuf>,
    pub server_ns: String,
    pub client_ns: String,
    state: Mutex<XdpState>,
    /// The memcached server memcached functions call, through [`MemcachedRelay`].
    memcached: Option<SocketAddrV4>,
    /// Started with the first memcached function.
    relay: Mutex<Option<MemcachedRelay>>,
}

/// Where the memcached lambda's requests go on XDP: it sends them back out of the interface
/// they came in on (`XDP_TX`), so its server must answer in the gateway's client namespace.
/// The relay listens there (all addresses, one port) and passes each datagram on to the
/// configured memcached from the gateway's own namespace, over one socket per lambda address,
/// and memcached's replies back to that address; the lambda sees them come from the client
/// end of its pair and the relay's port, which is what its `CONFIG` names.
struct MemcachedRelay {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The receiving thread; it joins the reply threads it started when it stops.
    thread: std::thread::JoinHandle<()>,
}

/// How often relay threads look at their stop flag while idle.
const RELAY_POLL: Duration = Duration::from_millis(100);

impl MemcachedRelay {
    fn start(inside: UdpSocket, server: SocketAddrV4) -> std::io::Result<MemcachedRelay> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let port = inside.local_addr()?.port();
        inside.set_read_timeout(Some(RELAY_POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let main = std::thread::Builder::new()
            .name("memcached-relay".into())
            .spawn(move || {
                let mut upstream: HashMap<SocketAddr, UdpSocket> = HashMap::new();
                let mut repliers = Vec::new();
                let mut buf = vec![0u8; 65536];
                while !flag.load(Ordering::Relaxed) {
                    let Ok((n, from)) = inside.recv_from(&mut buf) else {
                        continue;
                    };
                    if let std::collections::hash_map::Entry::Vacant(slot) = upstream.entry(from) {
                        // One socket per lambda address, so memcached's replies find their way
                        // back.
                        let made = UdpSocket::bind("0.0.0.0:0").and_then(|u| {
                            u.connect(server)?;
                            u.set_read_timeout(Some(RELAY_POLL))?;
                            let back = inside.try_clone()?;
                            let reader = u.try_clone()?;
                            let flag = flag.clone();
                            repliers.push(std::thread::spawn(move || {
                                let mut buf = vec![0u8; 65536];
                                while !flag.load(Ordering::Relaxed) {
                                    if let Ok(n) = reader.recv(&mut buf) {
                                        let _ = back.send_to(&buf[..n], from);
                                    }
                                }
                            }));
                            Ok(u)
                        });
                        match made {
                            Ok(u) => {
                                slot.insert(u);
                            }
                            Err(e) => {
                                eprintln!("gateway: memcached relay: {e}");
                                continue;
                            }
                        }
                    }
                    if let Some(u) = upstream.get(&from) {
                        let _ = u.send(&buf[..n]);
                    }
                }
                for r in repliers {
                    let _ = r.join();
                }
            })?;
        Ok(MemcachedRelay {
            port,
            stop,
            thread: main,
        })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> Result<[u8; 6], BackendError> {
    let out = ip(&["-n", ns, "link", "show", "dev", dev])?;
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    let bytes: Vec<u8> = text
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| BackendError::Unsupported(format!("no MAC address for {dev} in {out:?}")))
}

#[derive(Default)]
struct XdpState {
    /// Function name → the server interface of its pair.
    functions: HashMap<String, String>,
    /// Server interface → its pair.
    pairs: HashMap<String, XdpPair>,
    /// Subnets in use.
    used: Vec<bool>,
    shut_down: bool,
    /// Function name → the UDP port it serves on (memcached functions get one of their own).
    ports: HashMap<String, u16>,
    /// The next port a memcached function without a `lambda-nic.match` port gets.
    next_memcached_port: u16,
}

struct XdpPair {
    subnet: usize,
    server_if: String,
    client_if: String,
    mode: BackendKind,
    functions: usize,
}

/// Subnets 10.216.1.0/24 … 10.216.250.0/24: the most pairs (not functions) at once.
const SUBNETS: usize = 250;

/// The first UDP port given to memcached functions on XDP. Each has a port of its own with an
/// any-id rule: memcached's replies carry no λ header, yet must reach the lambda.
const MEMCACHED_PORTS: u16 = 9100;

fn ip(args: &[&str]) -> Result<String, BackendError> {
    run(Path::new("ip"), args)
}

impl XdpBackend {
    /// Creates the two namespaces (named after this process, so gateways never collide).
    pub fn new(
        lambdactl: PathBuf,
        peer_helper: Option<PathBuf>,
    ) -> Result<XdpBackend, BackendError> {
        let prefix = format!("lnic-gw-{}", std::process::id());
        let backend = XdpBackend {
            lambdactl,
            peer_helper,
            server_ns: format!("{prefix}-s"),
            client_ns: format!("{prefix}-c"),
            state: Mutex::new(XdpState {
                used: vec![false; SUBNETS],
                next_memcached_port: MEMCACHED_PORTS,
                ..XdpState::default()
            }),
            memcached: None,
            relay: Mutex::new(None),
        };
        for ns in [&backend.server_ns, &backend.client_ns] {
            // A namespace left by a killed gateway with the same PID would make `add` fail.
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(backend)
    }

    /// The memcached server memcached functions call (through a relay in the client
    /// namespace, see [`MemcachedRelay`]).
    pub fn with_memcached(mut self, memcached: Option<SocketAddrV4>) -> XdpBackend {
        self.memcached = memcached;
        self
    }

    /// The relay's port in the client namespace, started on first use.
    fn relay_port(&self, server: SocketAddrV4) -> Result<u16, BackendError> {
        let mut relay = self.relay.lock().expect("relay");
        if let Some(r) = relay.as_ref() {
            return Ok(r.port);
        }
        let failed = |e: std::io::Error| {
            BackendError::Unsupported(format!("cannot start the memcached relay: {e}"))
        };
        let inside = self
            .client_sockets(1)
            .map_err(failed)?
            .pop()
            .expect("one socket");
        let started = MemcachedRelay::start(inside, server).map_err(failed)?;
        let port = started.port;
        *relay = Some(started);
        Ok(port)
    }

    /// Writes the memcached function `name`'s `CONFIG`: the relay at the client end of its
    /// pair (address and MAC), where its `XDP_TX` requests arrive.
    fn configure_memcached(
        &self,
        name: &str,
        server_if: &str,
        server: SocketAddrV4,
    ) -> Result<(), BackendError> {
        let (client_if, subnet) = {
            let state = self.state.lock().expect("xdp state");
            let pair = state
                .pairs
                .get(server_if)
                .ok_or_else(|| BackendError::Unknown { name: name.into() })?;
            (pair.client_if.clone(), pair.subnet)
        };
        let port = self.relay_port(server)?;
        let mac = mac_of(&self.client_ns, &client_if)?;
        let relay = SocketAddrV4::new(Ipv4Addr::new(10, 216, subnet as u8, 2), port);
        let value = format!("hex:{}", hex(&memcached_config(relay, mac)));
        let map = format!("{name}/CONFIG");
        self.lambdactl_in(&self.server_ns, &["maps", "set", &map, "0", &value])?;
        Ok(())
    }

    /// Binds `count` UDP sockets inside the client namespace; they stay there after this
    /// thread leaves it.
    pub fn client_sockets(&self, count: usize) -> std::io::Result<Vec<UdpSocket>> {
        let ns = self.client_ns.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
            // SAFETY: setns on this short-lived thread only, with an fd we hold open.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            (0..count.max(1))
                .map(|_| UdpSocket::bind("0.0.0.0:0"))
                .collect()
        })
        .join()
        .map_err(|_| std::io::Error::other("the netns thread panicked"))?
    }

    fn lambdactl_in(&self, ns: &str, args: &[&str]) -> Result<String, BackendError> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        run(&self.lambdactl, &full).map_err(|e| match e {
            BackendError::Command { output, .. } => BackendError::Refused { output },
            other => other,
        })
    }

    /// The XDP mode functions of `kind` run in: a coalesced program in drv mode when the
    /// peer can have its helper (native-mode `XDP_TX` on veth needs one), else skb.
    fn xdp_mode(&self, kind: BackendKind) -> &'static str {
        match kind {
            BackendKind::Drv => "drv",
            BackendKind::Coalesced if self.peer_helper.is_some() => "drv",
            _ => "skb",
        }
    }

    /// `lambdactl deploy`'s mode arguments for `kind`.
    fn deploy_mode_args(&self, kind: BackendKind) -> Vec<&'static str> {
        match kind {
            BackendKind::Coalesced => vec!["--mode", "coalesced", "--xdp", self.xdp_mode(kind)],
            _ => vec!["--mode", self.xdp_mode(kind)],
        }
    }

    /// One letter of the interface names of `kind`'s pairs.
    fn tag(kind: BackendKind) -> &'static str {
        match kind {
            BackendKind::Drv => "d",
            BackendKind::Coalesced => "c",
            _ => "s",
        }
    }

    /// Makes the veth pair on `subnet`, addresses it, brings it up, and in drv mode gives the
    /// peer its helper program.
    fn make_pair(&self, pair: &XdpPair) -> Result<(), BackendError> {
        ip(&[
            "link",
            "add",
            &pair.server_if,
            "netns",
            &self.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.client_if,
            "netns",
            &self.client_ns,
        ])?;
        for (ns, dev, host) in [
            (&self.server_ns, &pair.server_if, 1),
            (&self.client_ns, &pair.client_if, 2),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.216.{}.{host}/24", pair.subnet),
                "dev",
                dev,
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // The gateway's datagrams leave the client end with a correct UDP checksum in software
        // instead of CHECKSUM_PARTIAL, which an XDP lambda would see unfinished.
        run(
            Path::new("ip"),
            &[
                "netns",
                "exec",
                &self.client_ns,
                "ethtool",
                "-K",
                &pair.client_if,
                "tx",
                "off",
            ],
        )?;
        if self.xdp_mode(pair.mode) == "drv" {
            let helper = self.peer_helper.as_deref().ok_or_else(|| {
                BackendError::Unsupported(
                    "drv mode on veth needs static-server.o for the peer; use skb".into(),
                )
            })?;
            self.lambdactl_in(
                &self.client_ns,
                &[
                    "attach",
                    path_str(helper)?,
                    "--iface",
                    &pair.client_if,
                    "--mode",
                    "drv",
                    "--port",
                    "1",
                ],
            )?;
        }
        Ok(())
    }

    fn teardown(&self, pair: &XdpPair) {
        let _ = self.lambdactl_in(
            &self.server_ns,
            &["undeploy", "--all", "--iface", &pair.server_if],
        );
        if self.xdp_mode(pair.mode) == "drv" {
            let _ = self.lambdactl_in(&self.client_ns, &["detach", "--iface", &pair.client_if]);
        }
        // Deleting one end deletes the pair.
        let _ = ip(&["-n", &self.server_ns, "link", "del", &pair.server_if]);
    }

    /// The pair a function of `spec` goes on, made when it is the first: its server interface
    /// and subnet.
    fn pair_for(&self, spec: &DeploySpec) -> Result<(String, usize), BackendError> {
        let pid = std::process::id() % 100_000;
        let tag = Self::tag(spec.kind);
        // ≤ 15 bytes: "g" + pid (≤ 5) + s|c + d|s|c, or the annotation's name.
        let server_if = spec
            .iface
            .clone()
            .unwrap_or_else(|| format!("g{pid}s{tag}"));
        let pair = {
            let mut state = self.state.lock().expect("xdp state");
            if state.shut_down {
                return Err(BackendError::Unsupported("the backend is shut down".into()));
            }
            if let Some(p) = state.pairs.get(&server_if) {
                if p.mode != spec.kind {
                    return Err(BackendError::Unsupported(format!(
                        "interface {server_if} serves in {} mode, not {}",
                        p.mode, spec.kind
                    )));
                }
                return Ok((server_if, p.subnet));
            }
            let Some(free) = state.used.iter().position(|u| !u) else {
                return Err(BackendError::Unsupported(format!(
                    "no free subnet: at most {SUBNETS} XDP interfaces"
                )));
            };
            state.used[free] = true;
            let subnet = free + 1;
            XdpPair {
                subnet,
                client_if: format!("g{pid}c{tag}{subnet}"),
                server_if: server_if.clone(),
                mode: spec.kind,
                functions: 0,
            }
        };
        if let Err(e) = self.make_pair(&pair) {
            self.teardown(&pair);
            self.state.lock().expect("xdp state").used[pair.subnet - 1] = false;
            return Err(e);
        }
        let subnet = pair.subnet;
        self.state
            .lock()
            .expect("xdp state")
            .pairs
            .insert(server_if.clone(), pair);
        Ok((server_if, subnet))
    }

    /// One function fewer on `server_if`; the last one takes the pair with it.
    fn release(&self, server_if: &str) {
        let gone = {
            let mut state = self.state.lock().expect("xdp state");
            let Some(pair) = state.pairs.get_mut(server_if) else {
                return;
            };
            pair.functions = pair.functions.saturating_sub(1);
            if pair.functions > 0 {
                return;
            }
            let pair = state.pairs.remove(server_if).expect("present");
            state.used[pair.subnet - 1] = false;
            pair
        };
        self.teardown(&gone);
    }
}

fn endpoint(subnet: usize, port: u16, lambda_id: u32) -> Endpoint {
    Endpoint {
        addr: SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 216, subnet as u8, 1),
            port,
        )),
        lambda_id,
    }
}

impl FunctionBackend for XdpBackend {
    fn deploy(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError> {
        if self
            .state
            .lock()
            .expect("xdp state")
            .functions
            .contains_key(&spec.name)
        {
            return Err(BackendError::Unsupported(format!(
                "`{}` is already deployed",
                spec.name
            )));
        }
        let memcached = is_memcached(spec);
        let server = match (memcached, self.memcached) {
            (true, None) => {
                return Err(BackendError::NoMemcached {
                    name: spec.name.clone(),
                });
            }
            (_, server) => server,
        };
        let (server_if, subnet) = self.pair_for(spec)?;
        if let Some(pair) = self
            .state
            .lock()
            .expect("xdp state")
            .pairs
            .get_mut(&server_if)
        {
            pair.functions += 1;
        }
        let port = match spec.port {
            Some(port) => port,
            None if memcached => {
                let mut state = self.state.lock().expect("xdp state");
                let port = state.next_memcached_port;
                state.next_memcached_port = port.wrapping_add(1).max(MEMCACHED_PORTS);
                port
            }
            None => lambda_ebpf::wire::DEFAULT_PORT,
        };
        let rule = if memcached {
            format!("port={port}")
        } else {
            format!("port={port},id={}", spec.lambda_id)
        };
        let mut args = vec![
            "deploy",
            path_str(&spec.object)?,
            "--iface",
            &server_if,
            "--name",
            &spec.name,
            "--match",
            &rule,
        ];
        args.extend(self.deploy_mode_args(spec.kind));
        let deployed = self.lambdactl_in(&self.server_ns, &args);
        if let Err(e) = deployed {
            self.release(&server_if);
            return Err(e);
        }
        if let (true, Some(server)) = (memcached, server) {
            if let Err(e) = self.configure_memcached(&spec.name, &server_if, server) {
                let _ = self.lambdactl_in(&self.server_ns, &["undeploy", &spec.name]);
                self.release(&server_if);
                return Err(e);
            }
        }
        let mut state = self.state.lock().expect("xdp state");
        state.functions.insert(spec.name.clone(), server_if);
        state.ports.insert(spec.name.clone(), port);
        Ok(endpoint(subnet, port, spec.lambda_id))
    }

    fn update(&self, spec: &DeploySpec) -> Result<Endpoint, BackendError> {
        let (subnet, port) = {
            let state = self.state.lock().expect("xdp state");
            let server_if =
                state
                    .functions
                    .get(&spec.name)
                    .ok_or_else(|| BackendError::Unknown {
                        name: spec.name.clone(),
                    })?;
            let port = state.ports.get(&spec.name).copied();
            (state.pairs.get(server_if).map_or(0, |p| p.subnet), port)
        };
        // `deploy --replace` keeps the lambda's pinned maps and rule and swaps its slot in the
        // dispatcher's program array atomically (coalesced: rebuilds the interface's program
        // with the new object and swaps it in on the interface's link).
        self.lambdactl_in(
            &self.server_ns,
            &[
                "deploy",
                path_str(&spec.object)?,
                "--name",
                &spec.name,
                "--replace",
            ],
        )?;
        let port = port
            .or(spec.port)
            .unwrap_or(lambda_ebpf::wire::DEFAULT_PORT);
        Ok(endpoint(subnet, port, spec.lambda_id))
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        let server_if = {
            let mut state = self.state.lock().expect("xdp state");
            state.ports.remove(name);
            state
                .functions
                .remove(name)
                .ok_or_else(|| BackendError::Unknown { name: name.into() })?
        };
        let undeployed = self.lambdactl_in(&self.server_ns, &["undeploy", name]);
        self.release(&server_if);
        undeployed.map(|_| ())
    }

    fn shutdown(&self) {
        let pairs: Vec<XdpPair> = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if state.shut_down {
                return;
            }
            state.shut_down = true;
            state.functions.clear();
            state.pairs.drain().map(|(_, p)| p).collect()
        };
        for pair in &pairs {
            self.teardown(pair);
        }
        if let Some(relay) = self.relay.lock().ok().and_then(|mut r| r.take()) {
            relay.stop();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Drop for XdpBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip_and_coalesced_is_xdp() {
        for kind in [
            BackendKind::Drv,
            BackendKind::Skb,
            BackendKind::Coalesced,
            BackendKind::Vm,
            BackendKind::Native,
        ] {
            assert_eq!(BackendKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(BackendKind::parse("gpu"), None);
        assert!(BackendKind::Coalesced.is_xdp());
        assert!(!BackendKind::Vm.is_xdp());
        // Each XDP kind has its own interface names.
        assert_ne!(
            XdpBackend::tag(BackendKind::Coalesced),
            XdpBackend::tag(BackendKind::Drv)
        );
        assert_ne!(
            XdpBackend::tag(BackendKind::Coalesced),
            XdpBackend::tag(BackendKind::Skb)
        );
    }
}
