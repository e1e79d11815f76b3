//! The HTTP API: OpenFaaS's gateway paths, JSON shapes and status codes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use lambda_ebpf::wire::Status;
use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::backend::{BackendKind, DeploySpec, FunctionBackend, VmBackend, XdpBackend};
use crate::invoke::{CallError, Endpoint, Invoker};
use crate::metrics::Metrics;
use crate::{BackendChoice, Config, GatewayError};

/// Largest body of a `/system/*` request (a deployment is a few hundred bytes).
const SYSTEM_BODY_LIMIT: usize = 64 * 1024;

/// Annotations λ-NIC reads from a deployment.
pub const ANNOTATION_BACKEND: &str = "lambda-nic.backend";
pub const ANNOTATION_IFACE: &str = "lambda-nic.iface";
pub const ANNOTATION_MATCH: &str = "lambda-nic.match";

/// OpenFaaS's `FunctionDeployment` (the fields faas-cli sends; others are ignored).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeployment {
    pub service: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
}

/// OpenFaaS's `FunctionStatus`, as `GET /system/functions` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionStatus {
    name: String,
    image: String,
    invocation_count: u64,
    replicas: u32,
    available_replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    namespace: String,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteFunctionRequest {
    function_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleServiceRequest {
    #[serde(default)]
    service_name: Option<String>,
    replicas: u64,
}

/// A deployed function.
struct Function {
    deployment: FunctionDeployment,
    kind: BackendKind,
    lambda_id: u32,
    port: Option<u16>,
    iface: Option<String>,
    endpoint: RwLock<Endpoint>,
    replicas: AtomicU32,
    created_at: String,
    /// Calls hold it shared; an update's handover holds it exclusively, so no call is in
    /// flight while state moves and calls that arrive meanwhile wait (none fails).
    gate: tokio::sync::RwLock<()>,
}

/// Everything the handlers share.
pub struct State {
    config: Config,
    default_kind: BackendKind,
    vm: VmBackend,
    /// `lambdactl baseline` children: the native column (`lambda-nic.backend: native`).
    native: VmBackend,
    xdp: Option<XdpBackend>,
    local_invoker: Invoker,
    xdp_invoker: Option<Invoker>,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    /// Deploy, update, remove and scale one at a time; calls never wait for it.
    control: tokio::sync::Mutex<()>,
    metrics: Metrics,
    next_lambda_id: AtomicU32,
}

/// Whether this process may attach XDP programs and make namespaces.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl State {
    pub(crate) async fn new(config: Config) -> Result<State, GatewayError> {
        let want_xdp = match config.backend {
            BackendChoice::Auto => is_root(),
            BackendChoice::Fixed(kind) => kind.is_xdp(),
        };
        let peer_helper = config
            .samples_dir
            .as_ref()
            .map(|d| d.join("static-server.o"))
            .filter(|p| p.is_file());
        let mut xdp = None;
        let mut xdp_reason = String::from("not root");
        if want_xdp {
            let lambdactl = config.lambdactl.clone();
            let helper = peer_helper.clone();
            let memcached = config.memcached;
            match tokio::task::spawn_blocking(move || {
                XdpBackend::new(lambdactl, helper).map(|b| b.with_memcached(memcached))
            })
            .await
            .expect("backend setup thread")
            {
                Ok(b) => xdp = Some(b),
                Err(e) => xdp_reason = e.to_string(),
            }
        }
        let default_kind = match (config.backend, &xdp) {
            (BackendChoice::Fixed(kind), None) if kind.is_xdp() => {
                return Err(GatewayError::BackendUnavailable {
                    kind,
                    reason: xdp_reason,
                });
            }
            (BackendChoice::Fixed(kind), _) => kind,
            (BackendChoice::Auto, Some(_)) if peer_helper.is_some() => BackendKind::Drv,
            (BackendChoice::Auto, Some(_)) => BackendKind::Skb,
            (BackendChoice::Auto, None) => BackendKind::Vm,
        };
        let xdp_invoker = match &xdp {
            Some(b) => {
                let sockets = b
                    .client_sockets(config.sockets)
                    .map_err(GatewayError::Sockets)?;
                Some(Invoker::new(sockets).map_err(GatewayError::Sockets)?)
            }
            None => None,
        };
        let local_invoker =
            Invoker::new(Invoker::bind_local(config.sockets).map_err(GatewayError::Sockets)?)
                .map_err(GatewayError::Sockets)?;
        Ok(State {
            vm: VmBackend::new(config.lambdactl.clone(), config.vm_workers)
                .with_memcached(config.memcached),
            native: VmBackend::native(config.lambdactl.clone()).with_memcached(config.memcached),
            config,
            default_kind,
            xdp,
            local_invoker,
            xdp_invoker,
            functions: RwLock::default(),
            control: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            next_lambda_id: AtomicU32::new(1),
        })
    }

    pub(crate) fn default_kind(&self) -> BackendKind {
        self.default_kind
    }

    fn backend(&self, kind: BackendKind) -> Option<&dyn FunctionBackend> {
        match kind {
            BackendKind::Drv | BackendKind::Skb | BackendKind::Coalesced => {
                self.xdp.as_ref().map(|b| b as &dyn FunctionBackend)
            }
            BackendKind::Vm => Some(&self.vm),
            BackendKind::Native => Some(&self.native),
        }
    }

    fn invoker(&self, kind: BackendKind) -> &Invoker {
        if kind.is_xdp() {
            self.xdp_invoker
                .as_ref()
                .expect("XDP functions exist only with the XDP backend")
        } else {
            &self.local_invoker
        }
    }

    fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.functions.read().expect("functions").get(name).cloned()
    }

    pub(crate) fn function_summaries(&self) -> Vec<(String, BackendKind, SocketAddr)> {
        let mut list: Vec<_> = self
            .functions
            .read()
            .expect("functions")
            .iter()
            .map(|(n, f)| (n.clone(), f.kind, f.endpoint.read().expect("endpoint").addr))
            .collect();
        list.sort();
        list
    }

    /// Deploys a built sample under its own name (`--deploy-samples`).
    pub(crate) async fn deploy_sample(&self, name: &str) -> Result<(), String> {
        let deployment = FunctionDeployment {
            service: name.to_owned(),
            image: name.to_owned(),
            namespace: None,
            env_process: None,
            env_vars: None,
            constraints: None,
            secrets: None,
            labels: None,
            annotations: None,
            limits: None,
            requests: None,
            read_only_root_filesystem: None,
        };
        self.deploy(deployment)
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Stops every function and removes what the backends made.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        let state = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            state.functions.write().expect("functions").clear();
            state.vm.shutdown();
            state.native.shutdown();
            if let Some(xdp) = &state.xdp {
                xdp.shutdown();
            }
        })
        .await;
    }

    /// Resolves `image`: a lambda object on this host, or the name of a built sample.
    fn resolve_image(&self, image: &str) -> Result<PathBuf, ApiError> {
        let path = FsPath::new(image);
        if path.is_file() {
            return Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        }
        let is_name = !image.is_empty()
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if is_name && let Some(dir) = &self.config.samples_dir {
            let candidate = dir.join(format!("{image}.o"));
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        Err(ApiError::bad_request(format!(
            "image `{image}` is neither a lambda object on the gateway's host nor the name of a \
             built sample{}",
            self.config
                .samples_dir
                .as_ref()
                .map(|d| format!(" (in {})", d.display()))
                .unwrap_or_default()
        )))
    }

    /// Checks a deployment and turns it into what the backend needs.
    fn plan(&self, d: &FunctionDeployment, lambda_id: Option<u32>) -> Result<DeploySpec, ApiError> {
        validate_name(&d.service)?;
        let object = self.resolve_image(&d.image)?;
        let annotations = d.annotations.clone().unwrap_or_default();
        let kind = match annotations.get(ANNOTATION_BACKEND) {
            None => self.default_kind,
            Some(text) => BackendKind::parse(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "annotation {ANNOTATION_BACKEND}: `{text}` is not one of drv, skb, coalesced, vm, native"
                ))
            })?,
        };
        if self.backend(kind).is_none() {
            return Err(ApiError::bad_request(format!(
                "annotation {ANNOTATION_BACKEND}: backend {kind} is not available on this \
                 gateway (XDP needs the gateway to run as root)"
            )));
        }
        let iface = annotations.get(ANNOTATION_IFACE).cloned();
        if let Some(name) = &iface {
            if !kind.is_xdp() {
                return Err(ApiError::bad_request(format!(
                    "annotation {ANNOTATION_IFACE} applies to the drv, skb and coalesced backends only"
                )));
            }
            let valid = !name.is_empty()
                && name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "annotation {ANNOTATION_IFACE}: `{name}` is not an interface name \
                     (1-15 letters, digits, - or _)"
                )));
            }
        }
        let (port, id) = match annotations.get(ANNOTATION_MATCH) {
            Some(text) => parse_match(text)?,
            None => (None, None),
        };
        let lambda_id = id
            .or(lambda_id)
            .unwrap_or_else(|| self.next_lambda_id.fetch_add(1, Ordering::Relaxed));
        Ok(DeploySpec {
            name: d.service.clone(),
            object,
            kind,
            port,
            lambda_id,
            iface,
        })
    }

    async fn deploy(&self, deployment: FunctionDeployment) -> Result<StatusCode, ApiError> {
        let _control = self.control.lock().await;
        if self.function(&deployment.service).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "function {} already exists: update it with PUT /system/functions",
                    deployment.service
                ),
            ));
        }
        let spec = self.plan(&deployment, None)?;
        let endpoint = self.run_backend(spec.clone(), false).await?;
        let function = Function {
            deployment,
            kind: spec.kind,
            lambda_id: spec.lambda_id,
            port: spec.port,
            iface: spec.iface,
            endpoint: RwLock::new(endpoint),
            replicas: AtomicU32::new(1),
            created_at: now_rfc3339(),
            gate: tokio::sync::RwLock::new(()),
        };
        self.functions
            .write()
            .expect("functions")
            .insert(spec.name, Arc::new(function));
        Ok(StatusCode::ACCEPTED)
    }

    async fn update(&self, deployment: FunctionDeployment) -> Result<StatusCode, ApiError> {
        let _control = self.control.lock().await;
        let Some(old) = self.function(&deployment.service) else {
            return Err(not_found(&deployment.service));
        };
        let spec = self.plan(&deployment, Some(old.lambda_id))?;
        if spec.kind != old.kind || spec.iface != old.iface || spec.port != old.port {
            return Err(ApiError::bad_request(format!(
                "function {}: an update keeps the backend, interface and port (remove and \
                 deploy again to change them)",
                deployment.service
            )));
        }
        if spec.lambda_id != old.lambda_id {
            return Err(ApiError::bad_request(format!(
                "function {}: an update keeps the lambda id ({})",
                deployment.service, old.lambda_id
            )));
        }
        let endpoint = self.run_backend(spec.clone(), true).await?;
        let function = Function {
            deployment,
            kind: spec.kind,
            lambda_id: spec.lambda_id,
            port: spec.port,
            iface: spec.iface,
            endpoint: RwLock::new(endpoint),
            replicas: AtomicU32::new(old.replicas.load(Ordering::Relaxed)),
            created_at: old.created_at.clone(),
            gate: tokio::sync::RwLock::new(()),
        };
        // Wait for the calls in flight, hold new ones, move the state, switch, let them go:
        // the held calls look the function up again and reach the new version.
        let _held = old.gate.write().await;
        let backend = self.backend(spec.kind).expect("checked in plan");
        tokio::task::block_in_place(|| backend.handover(&spec.name)).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("updating {}: {e}", spec.name),
            )
        })?;
        *old.endpoint.write().expect("endpoint") = endpoint;
        self.functions
            .write()
            .expect("functions")
            .insert(spec.name, Arc::new(function));
        Ok(StatusCode::ACCEPTED)
    }

    async fn remove(&self, name: &str) -> Result<StatusCode, ApiError> {
        let _control = self.control.lock().await;
        let Some(function) = self.functions.write().expect("functions").remove(name) else {
            return Err(not_found(name));
        };
        let kind = function.kind;
        let name = name.to_owned();
        let result = {
            let backend = self.backend(kind).expect("the function's backend exists");
            // Removing runs child processes: keep it off the async workers.
            tokio::task::block_in_place(|| backend.remove(&name))
        };
        result.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(StatusCode::ACCEPTED)
    }

    async fn run_backend(&self, spec: DeploySpec, update: bool) -> Result<Endpoint, ApiError> {
        let backend = self.backend(spec.kind).expect("checked in plan");
        tokio::task::block_in_place(|| {
            if update {
                backend.update(&spec)
            } else {
                backend.deploy(&spec)
            }
        })
        .map_err(|e| {
            // A lambda the verifier or the loader refuses is the request's fault.
            let status = if e.is_refusal() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            ApiError::new(status, format!("deploying {}: {e}", spec.name))
        })
    }

    fn status_of(&self, name: &str, f: &Function) -> FunctionStatus {
        let replicas = f.replicas.load(Ordering::Relaxed);
        FunctionStatus {
            name: name.to_owned(),
            image: f.deployment.image.clone(),
            invocation_count: self.metrics.invocations(name),
            replicas,
            available_replicas: replicas.min(1),
            env_process: f.deployment.env_process.clone(),
            labels: f.deployment.labels.clone(),
            annotations: f.deployment.annotations.clone(),
            namespace: f
                .deployment
                .namespace
                .clone()
                .unwrap_or_else(|| "lambda-nic".into()),
            created_at: f.created_at.clone(),
        }
    }
}

/// An error answer: a status and a one-line message, as text (OpenFaaS answers errors in text).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("function {name} not found"))
}

/// OpenFaaS's rule for function names (a DNS-1123 label).
fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "function name `{name}` must be 1-63 lower-case letters, digits or '-', starting \
             and ending with a letter or digit"
        )))
    }
}

/// `lambda-nic.match`: `port=P`, `id=N`, or both, comma-separated.
fn parse_match(text: &str) -> Result<(Option<u16>, Option<u32>), ApiError> {
    let bad = |why: String| {
        ApiError::bad_request(format!(
            "annotation {ANNOTATION_MATCH}: {why} (expected e.g. `port=9000,id=7`)"
        ))
    };
    let (mut port, mut id) = (None, None);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(format!("`{part}` is not key=value")));
        };
        match key.trim() {
            "port" => {
                let p: u16 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(format!("`{value}` is not a port (1-65535)")))?;
                port = Some(p);
            }
            "id" => {
                id = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("`{value}` is not a lambda id (u32)")))?,
                );
            }
            other => return Err(bad(format!("unknown key `{other}`"))),
        }
    }
    Ok((port, id))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad JSON in the request body: {e}")))
}

/// The UTC time now as RFC 3339 (`2026-11-30T17:40:00Z`).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// routes

type Shared = AxState<Arc<State>>;

pub fn router(state: Arc<State>) -> Router {
    let system = Router::new()
        .route(
            "/system/functions",
            get(list_functions)
                .post(deploy_function)
                .put(update_function)
                .delete(delete_function),
        )
        .route("/system/function/{name}", get(get_function))
        .route("/system/scale-function/{name}", post(scale_function))
        .route("/system/info", get(info))
        .layer(DefaultBodyLimit::max(SYSTEM_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_auth,
        ));
    let functions = Router::new()
        .route("/function/{name}", any(invoke_function))
        .route("/function/{name}/", any(invoke_function))
        .route("/function/{name}/{*path}", any(invoke_function_path))
        .layer(DefaultBodyLimit::max(state.config.max_body));
    Router::new()
        .merge(system)
        .merge(functions)
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {method} {}", uri.path()),
            )
        })
        .with_state(state)
}

async fn require_auth(state: Shared, request: Request, next: Next) -> Response {
    let Some(credentials) = &state.config.credentials else {
        return next.run(request).await;
    };
    if authorized(credentials, &request) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Restricted\""),
    );
    response
}

fn authorized(credentials: &Credentials, request: &Request) -> bool {
    credentials.accepts(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
}

async fn list_functions(state: Shared) -> Response {
    let functions: Vec<(String, Arc<Function>)> = state
        .functions
        .read()
        .expect("functions")
        .iter()
        .map(|(n, f)| (n.clone(), Arc::clone(f)))
        .collect();
    let mut list: Vec<FunctionStatus> = functions
        .iter()
        .map(|(n, f)| state.status_of(n, f))
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(list).into_response()
}

async fn get_function(state: Shared, Path(name): Path<String>) -> Result<Response, ApiError> {
    let function = state.function(&name).ok_or_else(|| not_found(&name))?;
    Ok(axum::Json(state.status_of(&name, &function)).into_response())
}

async fn deploy_function(state: Shared, body: Bytes) -> Result<StatusCode, ApiError> {
    let deployment: FunctionDeployment = parse_json(&body)?;
    state.deploy(deployment).await
}

async fn update_function(state: Shared, body: Bytes) -> Result<StatusCode, ApiError> {
    let deployment: FunctionDeployment = parse_json(&body)?;
    validate_name(&deployment.service)?;
    state.update(deployment).await
}

async fn delete_function(state: Shared, body: Bytes) -> Result<StatusCode, ApiError> {
    let request: DeleteFunctionRequest = parse_json(&body)?;
    validate_name(&request.function_name)?;
    state.remove(&request.function_name).await
}

async fn scale_function(
    state: Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let request: ScaleServiceRequest = parse_json(&body)?;
    if let Some(service) = &request.service_name
        && !service.is_empty()
        && *service != name
    {
        return Err(ApiError::bad_request(format!(
            "serviceName `{service}` does not match the path's function `{name}`"
        )));
    }
    let replicas = u32::try_from(request.replicas)
        .map_err(|_| ApiError::bad_request("replicas out of range"))?;
    let function = state.function(&name).ok_or_else(|| not_found(&name))?;
    // A lambda in the XDP path runs on every CPU that receives its packets: replicas are
    // recorded and reported, not started.
    function.replicas.store(replicas, Ordering::Relaxed);
    Ok(StatusCode::ACCEPTED)
}

async fn info(state: Shared) -> Response {
    axum::Json(serde_json::json!({
        "provider": {
            "provider": "lambda-nic",
            "orchestration": format!("xdp+vm (default backend {})", state.default_kind),
            "version": { "sha": "", "release": env!("CARGO_PKG_VERSION") },
        },
        "version": { "commit_message": "", "sha": "", "release": env!("CARGO_PKG_VERSION") },
        "arch": std::env::consts::ARCH,
    }))
    .into_response()
}

async fn metrics(state: Shared) -> Response {
    let functions: Vec<(String, u32)> = {
        let map = state.functions.read().expect("functions");
        let mut list: Vec<_> = map
            .iter()
            .map(|(n, f)| (n.clone(), f.replicas.load(Ordering::Relaxed)))
            .collect();
        list.sort();
        list
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&functions),
    )
        .into_response()
}

async fn invoke_function(
    state: Shared,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    invoke(state, name, String::new(), uri, body).await
}

async fn invoke_function_path(
    state: Shared,
    Path((name, path)): Path<(String, String)>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    invoke(state, name, path, uri, body).await
}

/// The λ body of a call: the HTTP body; else the query string; else the path after the
/// function's name. So `curl -d index.html …/function/static-server`,
/// `…/function/static-server?index.html` and `…/function/static-server/index.html` agree.
async fn invoke(
    AxState(state): Shared,
    name: String,
    path: String,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let Some(function) = state.function(&name) else {
        // Before any packet is sent.
        return not_found(&name).into_response();
    };
    let payload: Vec<u8> = if !body.is_empty() {
        body.to_vec()
    } else if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
        query.as_bytes().to_vec()
    } else {
        path.into_bytes()
    };
    let started = Instant::now();
    // Held for the call: an update's handover waits for it (see `Function::gate`).
    let _open = function.gate.read().await;
    let locate = || {
        state
            .function(&name)
            .map(|f| *f.endpoint.read().expect("endpoint"))
    };
    let result = state
        .invoker(function.kind)
        .call(locate, &payload, state.config.call_timeout)
        .await;
    let took = started.elapsed();
    let mut response = match result {
        Ok(reply) => {
            let code = match reply.status {
                Some(Status::Ok) => StatusCode::OK,
                Some(Status::NotFound) => StatusCode::NOT_FOUND,
                Some(Status::BadRequest) => StatusCode::BAD_REQUEST,
                Some(Status::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
                Some(Status::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
                Some(Status::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
                None => StatusCode::BAD_GATEWAY,
            };
            let status_name = reply.status.map_or("UNKNOWN", Status::name);
            let content_type = content_type(&reply.body);
            let mut response = (code, reply.body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert("x-lambda-status", HeaderValue::from_static(status_name));
            response
        }
        Err(CallError::Timeout { waited }) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("function {name} did not answer within {waited:?}"),
        )
        .into_response(),
        Err(e @ CallError::TooManyFragments { .. }) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    state
        .metrics
        .observe(&name, response.status().as_u16(), took);
    // OpenFaaS's watchdog reports the function's time in this header.
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", took.as_secs_f64())) {
        response.headers_mut().insert("x-duration-seconds", v);
    }
    response
}

/// A lambda answers bytes without a type: HTML and text are recognised, the rest is binary.
fn content_type(body: &[u8]) -> &'static str {
    let head = &body[..body.len().min(64)];
    let lower = head.to_ascii_lowercase();
    if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        "text/html; charset=utf-8"
    } else if std::str::from_utf8(body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}
