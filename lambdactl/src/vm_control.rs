//! The control socket of `lambdactl run`: how `lambdactl maps --vm`, `stats --vm` and
//! `logs --vm` reach the maps, counters and log of a lambda served by the VM backend, which
//! live only in that process.
//!
//! A Unix stream socket at `<state>/vm/<name>-<pid>.sock` (`<state>` is `$LNIC_STATE_DIR` or
//! `/run/lnic`; when that is not writable, `$XDG_RUNTIME_DIR/lnic/vm/`, then
//! `/tmp/lnic-<uid>/vm/`), or where `--control` says. One thread serves it, one connection at a
//! time. Requests and responses are single lines of JSON. Keys and values are hex of their raw
//! bytes in the kernel's userspace view (per-CPU values: one 8-byte-aligned copy per worker);
//! the client types them with the object's BTF, as it does for pinned maps.
//!
//! | request                                                   | response                      |
//! |-----------------------------------------------------------|-------------------------------|
//! | `{"op":"maps"}`                                           | `{"lambda","object","pid","ncpus","maps":[{"name","type","type_id","key_size","value_size","max_entries","flags","entries"}]}` |
//! | `{"op":"lookup","map":M,"key":HEX}`                       | `{"value":HEX}` or `{"value":null}` |
//! | `{"op":"update","map":M,"key":HEX,"value":HEX,"flags":0}` | `{"ok":true}`                 |
//! | `{"op":"delete","map":M,"key":HEX}`                       | `{"ok":true}`                 |
//! | `{"op":"next_key","map":M,"key":HEX or null}`             | `{"key":HEX}` or `{"key":null}` |
//! | `{"op":"entries","map":M}`                                | `{"entries":[[HEX,HEX],…]}`   |
//! | `{"op":"stats"}`                                          | `{"lambda","object","pid","counters":{…},"sdk":{…} or null}` |
//! | `{"op":"logs"}` or `{"op":"logs","map":M}`               | `{"lambda","records":[{"ktime_ns","text"} or {"hex"}]}` |
//!
//! `logs` consumes the records of the ring buffer `M` (default `LNIC_LOG`, the SDK's log),
//! oldest first: SDK log records as their time and text, anything else as hex. Like the
//! kernel's ring buffer it has one reader position, so each record is answered once.
//!
//! Any failure is `{"error":TEXT}`, with `"kind"` naming the map error the client maps back
//! (`not_found`, `exists`, `full`, `delete_from_array`, `invalid_flags`, `no_elements`), so
//! `maps set`/`del` word them as they do for pinned maps. A malformed line gets an error and
//! the connection stays open.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use loader::btf_types::hex;
use loader::maps::{Entries, MapAccess, MapError, MapSpec, MapType, UpdateFlags};
use loader::vm::VmProgram;
use serde_json::{Value, json};

/// A request line longer than this is refused (and the connection closed): nothing legitimate
/// comes near it, and reading on would let one client grow the server's memory at will.
const MAX_LINE: usize = 16 << 20;

/// How long a client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the server thread looks at the stop flag while idle.
const POLL: Duration = Duration::from_millis(100);

/// What the server answers `stats` with besides the SDK counters: the worker counters.
pub(crate) type CountersFn = dyn Fn() -> Value + Send + Sync;

/// The directories a control socket may go in, in order of preference.
fn socket_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let state = std::env::var_os(loader::kernel::ENV_STATE_DIR)
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(loader::kernel::DEFAULT_STATE_DIR),
            PathBuf::from,
        );
    dirs.push(state.join("vm"));
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(xdg).join("lnic").join("vm"));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    dirs.push(PathBuf::from(format!("/tmp/lnic-{uid}")).join("vm"));
    dirs
}

/// The control socket, removed when dropped (at a clean shutdown or an error after binding).
pub(crate) struct ControlSocket {
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlSocket {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Binds the socket (at `path`, or the first writable default directory) and starts the
    /// thread serving it until `stop` is set.
    pub(crate) fn start(
        path: Option<&Path>,
        program: Arc<VmProgram>,
        object: PathBuf,
        counters: Box<CountersFn>,
        stop: &'static AtomicBool,
    ) -> Result<ControlSocket> {
        let (listener, path) = match path {
            Some(p) => (bind(p)?, p.to_path_buf()),
            None => {
                let file = format!("{}-{}.sock", program.name, std::process::id());
                let mut tried = Vec::new();
                let mut bound = None;
                for dir in socket_dirs() {
                    let p = dir.join(&file);
                    match std::fs::create_dir_all(&dir)
                        .map_err(anyhow::Error::from)
                        .and_then(|()| bind(&p))
                    {
                        Ok(l) => {
                            bound = Some((l, p));
                            break;
                        }
                        Err(e) => tried.push(format!("{}: {e:#}", dir.display())),
                    }
                }
                bound.ok_or_else(|| {
                    anyhow!(
                        "cannot create a control socket ({}); choose one with --control",
                        tried.join("; ")
                    )
                })?
            }
        };
        // Non-blocking accepts so the thread notices the stop flag.
        listener.set_nonblocking(true)?;
        let server = Server {
            program,
            object,
            counters,
        };
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || server.serve(&listener, stop))?;
        Ok(ControlSocket {
            path,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path`, replacing a stale socket (one nobody answers on) but never a live one or
/// another kind of file.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))
}

struct Server {
    program: Arc<VmProgram>,
    object: PathBuf,
    counters: Box<CountersFn>,
}

impl Server {
    fn serve(&self, listener: &UnixListener, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    // A client's failure (gone, timed out) ends its connection only.
                    let _ = self.connection(stream, stop);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("lambdactl: control socket: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    fn connection(&self, stream: UnixStream, stop: &AtomicBool) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        // Timed reads so an idle client does not hold the thread past a stop.
        stream.set_read_timeout(Some(POLL))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return Ok(()),
                Ok(_) if line.last() != Some(&b'\n') => return Ok(()), // EOF mid-line
                Ok(_) => {}
                // A timeout keeps what was read so far in `line`; go on reading it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if line.len() > MAX_LINE {
                        return reply(&mut writer, &error("request line too long"));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            if line.len() > MAX_LINE {
                return reply(&mut writer, &error("request line too long"));
            }
            let answer = match serde_json::from_slice::<Value>(&line) {
                Ok(request) => self.answer(&request),
                Err(e) => error(&format!("not a JSON request: {e}")),
            };
            line.clear();
            reply(&mut writer, &answer)?;
        }
        Ok(())
    }

    fn answer(&self, request: &Value) -> Value {
        match self.try_answer(request) {
            Ok(v) => v,
            Err(Failure::Map(e)) => map_error(&e),
            Err(Failure::Request(message)) => error(&message),
        }
    }

    fn try_answer(&self, request: &Value) -> Result<Value, Failure> {
        let op = request["op"]
            .as_str()
            .ok_or_else(|| Failure::Request("the request has no \"op\"".into()))?;
        match op {
            "maps" => Ok(self.maps()),
            "stats" => Ok(self.stats()),
            "logs" => self.logs(request),
            "lookup" => {
                let map = self.map(request)?;
                let key = hex_field(request, "key")?;
                Ok(json!({ "value": map.lookup(&key)?.map(|v| hex(&v)) }))
            }
            "update" => {
                let map = self.map(request)?;
                let key = hex_field(request, "key")?;
                let value = hex_field(request, "value")?;
                let flags =
                    match &request["flags"] {
                        Value::Null => UpdateFlags::Any,
                        v => UpdateFlags::from_raw(v.as_u64().ok_or_else(|| {
                            Failure::Request("\"flags\" must be 0, 1 or 2".into())
                        })?)?,
                    };
                map.update(&key, &value, flags)?;
                Ok(json!({ "ok": true }))
            }
            "delete" => {
                let map = self.map(request)?;
                map.delete(&hex_field(request, "key")?)?;
                Ok(json!({ "ok": true }))
            }
            "next_key" => {
                let map = self.map(request)?;
                let key = match &request["key"] {
                    Value::Null => None,
                    _ => Some(hex_field(request, "key")?),
                };
                Ok(json!({ "key": map.next_key(key.as_deref())?.map(|k| hex(&k)) }))
            }
            "entries" => {
                let map = self.map(request)?;
                let entries: Vec<Value> = map
                    .entries()?
                    .iter()
                    .map(|(k, v)| json!([hex(k), hex(v)]))
                    .collect();
                Ok(json!({ "entries": entries }))
            }
            other => Err(Failure::Request(format!(
                "unknown op `{other}` (maps, lookup, update, delete, next_key, entries, stats, logs)"
            ))),
        }
    }

    fn map(&self, request: &Value) -> Result<&dyn MapAccess, Failure> {
        let name = request["map"]
            .as_str()
            .ok_or_else(|| Failure::Request("the request has no \"map\"".into()))?;
        self.program
            .map(name)
            .map(|m| m.as_ref() as &dyn MapAccess)
            .ok_or_else(|| {
                let names: Vec<&str> = self.program.maps.iter().map(|e| e.name.as_str()).collect();
                Failure::Request(format!("no map `{name}`; the maps: {}", names.join(", ")))
            })
    }

    fn maps(&self) -> Value {
        let maps: Vec<Value> = self
            .program
            .maps
            .iter()
            .map(|e| {
                let spec = e.map.spec();
                // A ring buffer has no elements to count.
                let entries = if spec.map_type.is_ring_buffer() {
                    Some(0)
                } else {
                    e.map.entries().ok().map(|v| v.len())
                };
                json!({
                    "name": e.name,
                    "type": spec.map_type.to_string(),
                    "type_id": spec.map_type.raw(),
                    "key_size": spec.key_size,
                    "value_size": spec.value_size,
                    "max_entries": spec.max_entries,
                    "flags": spec.flags,
                    "entries": entries,
                })
            })
            .collect();
        json!({
            "lambda": self.program.name,
            "object": self.object,
            "pid": std::process::id(),
            "ncpus": self.program.workers,
            "maps": maps,
        })
    }

    /// Drains a ring buffer (the SDK's log unless the request names another map).
    fn logs(&self, request: &Value) -> Result<Value, Failure> {
        let name = match &request["map"] {
            Value::Null => lambda_ebpf::log::MAP_NAME,
            v => v
                .as_str()
                .ok_or_else(|| Failure::Request("\"map\" must be a string".into()))?,
        };
        let Some(map) = self.program.map(name) else {
            return Err(Failure::Request(if request["map"].is_null() {
                format!(
                    "`{}` does not log: it has no `{name}` ring buffer (lambda_ebpf::declare_log!)",
                    self.program.name
                )
            } else {
                format!("no map `{name}`")
            }));
        };
        // Only the SDK's map holds SDK records; another ring's bytes are shown as they are.
        let sdk = name == lambda_ebpf::log::MAP_NAME;
        let records: Vec<Value> = map
            .ringbuf_drain()?
            .iter()
            .map(
                |r| match lambda_ebpf::log::LogRecord::decode(r).filter(|_| sdk) {
                    Some((ktime_ns, text)) => json!({
                        "ktime_ns": ktime_ns,
                        "text": String::from_utf8_lossy(text),
                    }),
                    None => json!({ "hex": hex(r) }),
                },
            )
            .collect();
        Ok(json!({ "lambda": self.program.name, "records": records }))
    }

    fn stats(&self) -> Value {
        let sdk = self
            .program
            .map(lambda_ebpf::stats::MAP_NAME)
            .and_then(|m| loader::kernel::sum_slots(m.as_ref()).ok())
            .map(|s| crate::stats_cmd::sdk_json(&s));
        json!({
            "lambda": self.program.name,
            "object": self.object,
            "pid": std::process::id(),
            "counters": (self.counters)(),
            "sdk": sdk,
        })
    }
}

/// Why a request failed: a map operation (answered with its kind) or the request itself.
enum Failure {
    Map(MapError),
    Request(String),
}

impl From<MapError> for Failure {
    fn from(e: MapError) -> Failure {
        Failure::Map(e)
    }
}

fn error(message: &str) -> Value {
    json!({ "error": message })
}

fn map_error(e: &MapError) -> Value {
    let kind = match e {
        MapError::NotFound => "not_found",
        MapError::Exists => "exists",
        MapError::Full => "full",
        MapError::DeleteFromArray => "delete_from_array",
        MapError::InvalidFlags { .. } => "invalid_flags",
        MapError::NoElements { .. } => "no_elements",
        _ => "other",
    };
    json!({ "error": e.to_string(), "kind": kind, "errno": e.errno() })
}

fn reply(writer: &mut UnixStream, answer: &Value) -> io::Result<()> {
    let mut line = answer.to_string();
    line.push('\n');
    writer.write_all(line.as_bytes())
}

fn hex_field(request: &Value, field: &str) -> Result<Vec<u8>, Failure> {
    let text = request[field]
        .as_str()
        .ok_or_else(|| Failure::Request(format!("\"{field}\" must be a hex string")))?;
    unhex(text).ok_or_else(|| Failure::Request(format!("\"{field}\" is not hex: `{text}`")))
}

/// Bytes from an even number of hex digits.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    // `from_str_radix` alone would take a sign ("+1"); only digits are hex here.
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// A connection to a `lambdactl run` control socket.
pub(crate) struct Client {
    path: PathBuf,
    stream: std::sync::Mutex<(UnixStream, BufReader<UnixStream>)>,
}

impl Client {
    /// Connects to `spec`: a socket path, or `vm:<name>` (found in the socket directories).
    pub(crate) fn connect(spec: &str) -> Result<Client> {
        let path = resolve(spec)?;
        let stream = UnixStream::connect(&path).with_context(|| {
            format!(
                "cannot connect to {} (is `lambdactl run` still running?)",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            path,
            stream: std::sync::Mutex::new((stream, reader)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// One request and its answer; `Err` for transport failures only (an `{"error"}` answer
    /// is returned as is).
    pub(crate) fn call(&self, request: &Value) -> io::Result<Value> {
        let mut guard = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("control connection poisoned"))?;
        let (writer, reader) = &mut *guard;
        let mut line = request.to_string();
        line.push('\n');
        writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if reader.read_line(&mut answer)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        serde_json::from_str(&answer).map_err(io::Error::other)
    }

    /// Like [`Client::call`], with an `{"error"}` answer as an error.
    pub(crate) fn request(&self, request: &Value) -> Result<Value> {
        let answer = self
            .call(request)
            .with_context(|| format!("talking to {}", self.path.display()))?;
        if let Some(e) = answer["error"].as_str() {
            bail!("{}: {e}", self.path.display());
        }
        Ok(answer)
    }

    /// The `maps` listing.
    pub(crate) fn maps(&self) -> Result<Value> {
        self.request(&json!({ "op": "maps" }))
    }
}

/// `spec` as a socket path: `vm:<name>` is looked up in the socket directories.
fn resolve(spec: &str) -> Result<PathBuf> {
    let Some(name) = spec.strip_prefix("vm:") else {
        return Ok(PathBuf::from(spec));
    };
    let mut found = Vec::new();
    for dir in socket_dirs() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((lambda, pid)) = file
                .strip_suffix(".sock")
                .and_then(|stem| stem.rsplit_once('-'))
            else {
                continue;
            };
            let alive = pid.parse::<i32>().is_ok_and(|pid| {
                // SAFETY: signal 0 only checks that the process exists.
                let sent = unsafe { libc::kill(pid, 0) } == 0;
                sent || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            });
            if lambda == name && alive {
                found.push(entry.path());
            }
        }
    }
    match found.as_slice() {
        [] => bail!(
            "no running `lambdactl run` of `{name}` found in {}",
            socket_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        [one] => Ok(one.clone()),
        many => bail!(
            "several `lambdactl run` of `{name}`: pass one socket with --vm: {}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One map of a `lambdactl run` process, reached through its control socket: the same
/// [`MapAccess`] as a pinned map, so `lambdactl maps` reads and writes it by the same code.
pub(crate) struct RemoteMap {
    client: Arc<Client>,
    spec: MapSpec,
    ncpus: usize,
}

impl RemoteMap {
    /// The map `name` from a `maps` listing.
    pub(crate) fn from_listing(
        client: Arc<Client>,
        listing: &Value,
        name: &str,
    ) -> Option<RemoteMap> {
        let m = listing["maps"]
            .as_array()?
            .iter()
            .find(|m| m["name"].as_str() == Some(name))?;
        let field = |f: &str| m[f].as_u64().and_then(|n| u32::try_from(n).ok());
        Some(RemoteMap {
            client,
            spec: MapSpec {
                name: name.to_owned(),
                map_type: MapType::from_raw(field("type_id")?),
                key_size: field("key_size")?,
                value_size: field("value_size")?,
                max_entries: field("max_entries")?,
                flags: field("flags").unwrap_or(0),
            },
            ncpus: listing["ncpus"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1),
        })
    }

    pub(crate) fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// Sends `request` (with this map's name) and maps an error answer back to a [`MapError`].
    fn call(&self, mut request: Value) -> Result<Value, MapError> {
        request["map"] = json!(self.spec.name);
        let answer = self.client.call(&request).map_err(|e| MapError::Kernel {
            op: "talking to the lambdactl run control socket",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        let Some(message) = answer["error"].as_str() else {
            return Ok(answer);
        };
        Err(match answer["kind"].as_str() {
            Some("not_found") => MapError::NotFound,
            Some("exists") => MapError::Exists,
            Some("full") => MapError::Full,
            Some("delete_from_array") => MapError::DeleteFromArray,
            Some("no_elements") => MapError::NoElements {
                map: self.spec.name.clone(),
            },
            _ => MapError::InvalidSpec {
                map: self.spec.name.clone(),
                reason: message.to_owned(),
            },
        })
    }

    fn hex_answer(answer: &Value, field: &str) -> Result<Option<Vec<u8>>, MapError> {
        match &answer[field] {
            Value::Null => Ok(None),
            Value::String(s) => unhex(s).map(Some).ok_or(MapError::Kernel {
                op: "reading the control socket's answer",
                errno: libc::EPROTO,
            }),
            _ => Err(MapError::Kernel {
                op: "reading the control socket's answer",
                errno: libc::EPROTO,
            }),
        }
    }
}

impl MapAccess for RemoteMap {
    fn spec(&self) -> &MapSpec {
        &self.spec
    }

    fn userspace_value_size(&self) -> usize {
        self.spec.userspace_value_size(self.ncpus)
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let answer = self.call(json!({ "op": "lookup", "key": hex(key) }))?;
        Self::hex_answer(&answer, "value")
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), MapError> {
        self.call(json!({
            "op": "update", "key": hex(key), "value": hex(value), "flags": flags.raw(),
        }))
        .map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.call(json!({ "op": "delete", "key": hex(key) }))
            .map(drop)
    }

    fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError> {
        let answer = self.call(json!({ "op": "next_key", "key": key.map(hex) }))?;
        Self::hex_answer(&answer, "key")
    }

    /// One request instead of two per entry.
    fn entries(&self) -> Result<Entries, MapError> {
        let answer = self.call(json!({ "op": "entries" }))?;
        let bad = || MapError::Kernel {
            op: "reading the control socket's answer",
            errno: libc::EPROTO,
        };
        answer["entries"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|pair| {
                let k = pair[0].as_str().and_then(unhex).ok_or_else(bad)?;
                let v = pair[1].as_str().and_then(unhex).ok_or_else(bad)?;
                Ok((k, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
        assert_eq!(unhex(""), Some(vec![]));
    }
}
