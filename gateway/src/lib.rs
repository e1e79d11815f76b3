//! λ-NIC's gateway: OpenFaaS's gateway API in front of lambdas. `POST /system/functions`
//! deploys a lambda object on a backend ([`backend`]), `POST /function/{name}` turns the HTTP
//! call into a λ request over UDP ([`invoke`]) and relays the answer, and `/metrics` speaks
//! OpenFaaS's metric names, so `faas-cli` and scripts written for OpenFaaS work unchanged.
//! `lambdactl gateway` is the command that starts it.

pub mod api;
pub mod auth;
pub mod backend;
pub mod invoke;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use api::State;
pub use auth::Credentials;
pub use backend::{BackendKind, FunctionBackend};

/// Which backend functions get when their deployment does not name one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// XDP in native mode when root and the kernel allows, else generic mode, else the VM.
    Auto,
    Fixed(BackendKind),
}

/// How to start a gateway.
pub struct Config {
    /// HTTP address to listen on.
    pub listen: SocketAddr,
    /// The `lambdactl` binary the backends run (`run`, `attach`, `upgrade`, `detach`).
    pub lambdactl: PathBuf,
    /// Where built samples live (`target/lambdas`): an `image` that is not a file is looked up
    /// here as `<image>.o`.
    pub samples_dir: Option<PathBuf>,
    pub backend: BackendChoice,
    /// `None`: no auth (`--no-auth`).
    pub credentials: Option<Credentials>,
    /// How long a call waits for its answer before the one retransmission, and again after.
    pub call_timeout: Duration,
    /// Largest invocation body, in bytes.
    pub max_body: usize,
    /// Samples to deploy at start, each under its own name.
    pub deploy: Vec<String>,
    /// Worker threads per `lambdactl run` child.
    pub vm_workers: usize,
    /// UDP sockets shared by the calls of each backend.
    pub sockets: usize,
    /// The memcached server (UDP) the `memcached` lambda calls, on every backend. `None`: a
    /// deployment of the memcached lambda is refused with a clear error.
    pub memcached: Option<std::net::SocketAddrV4>,
}

impl Config {
    pub fn new(listen: SocketAddr, lambdactl: PathBuf) -> Config {
        Config {
            listen,
            lambdactl,
            samples_dir: None,
            backend: BackendChoice::Auto,
            credentials: None,
            call_timeout: Duration::from_millis(1000),
            max_body: 1 << 20,
            deploy: Vec::new(),
            vm_workers: 1,
            sockets: 4,
            memcached: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the invocation sockets: {0}")]
    Sockets(#[source] std::io::Error),
    #[error("backend {kind} is not available here: {reason}")]
    BackendUnavailable { kind: BackendKind, reason: String },
    #[error("deploying sample `{name}`: {message}")]
    Deploy { name: String, message: String },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// A started gateway: listening, its backends ready, the samples deployed.
pub struct Gateway {
    state: Arc<State>,
    listener: tokio::net::TcpListener,
}

impl Gateway {
    /// Binds, prepares the backends and deploys `config.deploy`. On error everything it made is
    /// removed again.
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| GatewayError::Listen {
                addr: config.listen,
                source,
            })?;
        let deploy = config.deploy.clone();
        let state = Arc::new(State::new(config).await?);
        for name in deploy {
            if let Err(message) = state.deploy_sample(&name).await {
                state.shutdown().await;
                return Err(GatewayError::Deploy { name, message });
            }
        }
        Ok(Gateway { state, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The backend functions get by default.
    pub fn default_backend(&self) -> BackendKind {
        self.state.default_kind()
    }

    /// Names of the deployed functions with their backend and endpoint.
    pub fn functions(&self) -> Vec<(String, BackendKind, SocketAddr)> {
        self.state.function_summaries()
    }

    /// Serves until `shutdown` completes, then stops every function and removes what the
    /// backends made.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let app = api::router(Arc::clone(&self.state));
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.state.shutdown().await;
        served.map_err(GatewayError::Serve)
    }
}
