//! `leviathan serve`: the control plane's HTTP API on a store.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use leviathan::{
    api::{
        ApiConfig, ApiState, ControlPlane, Limits, console, keyring_file, log_key, router,
        sign_checkpoints,
        token::{self, TOKEN_ENV},
    },
    core::{
        Ledger,
        auth::token::Keyring,
        tlog::{checkpoint::LogSigner, cosignature::CosignatureVerifier},
    },
    scheduler::{Scheduler, SchedulerError},
    stores::{StoreUrl, Stores, open_with},
};
use leviathan_store_pg::BuildProgress;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};

use super::{
    error::{CliError, finish},
    output::{LogFormat, init_logging, progress},
    schedule::{self, RunArgs, WorkerDefaults},
    signal::shutdown_signal,
};

/// How long a shutdown waits for in-flight requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Run the control plane: the HTTP API over a store, until SIGTERM or SIGINT.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The store: sled:PATH, postgres://…, memory:  [default: sled:~/.leviathan/data]
    #[arg(long, value_name = "URL", env = "LEVIATHAN_STORE")]
    store: Option<String>,
    /// Address to listen on
    #[arg(
        long,
        value_name = "ADDR",
        env = "LEVIATHAN_BIND",
        default_value = "0.0.0.0:8000"
    )]
    bind: SocketAddr,
    /// Token file, generated (mode 0600) when missing; unused when LEVIATHAN_CONTROL_PLANE_TOKEN
    /// is set [default: ~/.leviathan/control-plane-token]
    #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Put GET /metrics behind the token too
    #[arg(long)]
    metrics_require_auth: bool,
    /// Largest JSON request body, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().json_body_bytes)]
    max_body_bytes: usize,
    /// Largest artifact upload, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().artifact_bytes)]
    max_artifact_bytes: u64,
    /// Most events in one ingest bundle
    #[arg(long, value_name = "N", default_value_t = Limits::default().events_per_bundle)]
    max_events_per_bundle: usize,
    /// Most requests handled at once; more are answered 429 with Retry-After
    #[arg(long, value_name = "N", default_value_t = Limits::default().concurrent_requests)]
    max_concurrent_requests: usize,
    /// Verified uploads written into the store at once (each is in memory while it is written)
    #[arg(long, value_name = "N", default_value_t = Limits::default().artifact_writes)]
    artifact_writes: usize,
    /// Requests a second each worker, reader or operator token may make on average (0: no rate
    /// limit); more get 429
    #[arg(long, value_name = "N", default_value_t = Limits::default().requests_per_second_per_principal)]
    rate_per_token: u32,
    /// Requests each token may make in a burst above its rate
    #[arg(long, value_name = "N", default_value_t = Limits::default().request_burst_per_principal)]
    burst_per_token: u32,
    /// Event streams each token may hold open at once
    #[arg(long, value_name = "N", default_value_t = Limits::default().streams_per_principal)]
    streams_per_token: usize,
    /// Deadline of an ordinary request, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().request_timeout.as_secs())]
    request_timeout: u64,
    /// Log format (logs go to stderr)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Also run the scheduler in this process, on the same ledger, for these targets (files, or
    /// NAME for ~/.leviathan/targets/NAME.yaml); see `leviathan schedule --help` for its
    /// environment. On SIGTERM it stops first, so that running attempts can still report here.
    #[arg(long = "schedule", value_name = "TARGET", num_args = 1..)]
    schedule: Vec<String>,
    /// How the scheduler runs (with --schedule)
    #[command(flatten)]
    run: RunArgs,
    /// The log's name in its signed checkpoints and key (`host/path`, no spaces or `+`); used
    /// only when the signing key is generated, on first start
    #[arg(
        long,
        value_name = "ORIGIN",
        env = "LEVIATHAN_LOG_ORIGIN",
        default_value = "leviathan.localhost/log"
    )]
    log_origin: String,
    /// Sign a checkpoint of the log this often while it grows, in milliseconds (0: only on
    /// demand, POST /v1/log/checkpoint)
    #[arg(
        long,
        value_name = "MILLISECONDS",
        env = "LEVIATHAN_CHECKPOINT_EVERY_MS",
        default_value_t = 1000
    )]
    checkpoint_every_ms: u64,
    /// A witness whose cosignatures of the latest checkpoint POST /v1/log/cosignature accepts
    /// and GET /v1/log/checkpoint then serves (its public key, `leviathan log witness-key`
    /// prints it); repeatable
    #[arg(long = "witness-key", value_name = "PUB")]
    witness_keys: Vec<String>,
    /// Run the model gateway with this file (YAML: `anthropic`/`openai` upstreams with
    /// `base_url` and `key_env`, the variable holding the key; `prices`; `budgets`)
    #[arg(long, value_name = "FILE", env = "LEVIATHAN_GATEWAY_CONFIG")]
    gateway: Option<PathBuf>,
    /// The URL people reach this control plane at, e.g. behind a proxy that terminates TLS
    /// (`https://leviathan.example.com`): with `https`, the console's session cookie is
    /// `Secure`, so browsers send it over TLS only
    #[arg(long, value_name = "URL", env = "LEVIATHAN_PUBLIC_URL", value_parser = public_url)]
    public_url: Option<url::Url>,
}

/// An absolute `http` or `https` URL, for `--public-url`.
fn public_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not an absolute URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err("expected http://HOST… or https://HOST…".to_owned()),
    }
}

/// The verifiers of `--witness-key`s.
fn witness_verifiers(keys: &[String]) -> Result<Vec<CosignatureVerifier>, CliError> {
    keys.iter()
        .map(|key| CosignatureVerifier::new(key))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::usage(format!("--witness-key: {e}")))
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("info", args.log_format == LogFormat::Json);
    finish(serve(args).await)
}

/// The request limits the flags set; each must be positive.
fn limits(args: &Args) -> Result<Limits, CliError> {
    if args.max_body_bytes == 0
        || args.max_events_per_bundle == 0
        || args.request_timeout == 0
        || args.max_concurrent_requests == 0
        || args.artifact_writes == 0
    {
        return Err(CliError::usage(
            "--max-body-bytes, --max-events-per-bundle, --max-concurrent-requests, --artifact-writes and --request-timeout must be positive",
        ));
    }
    let mut limits = Limits::default();
    limits.json_body_bytes = args.max_body_bytes;
    limits.artifact_bytes = args.max_artifact_bytes;
    limits.events_per_bundle = args.max_events_per_bundle;
    limits.concurrent_requests = args.max_concurrent_requests;
    limits.artifact_writes = args.artifact_writes;
    limits.requests_per_second_per_principal = args.rate_per_token;
    limits.request_burst_per_principal = args.burst_per_token;
    limits.streams_per_principal = args.streams_per_token;
    limits.request_timeout = Duration::from_secs(args.request_timeout);
    Ok(limits)
}

/// The scheduler `serve --schedule` runs beside the API: how to stop it, and its task.
type SchedulerRun = (oneshot::Sender<()>, JoinHandle<Result<(), SchedulerError>>);

async fn serve(args: Args) -> Result<(), CliError> {
    let limits = limits(&args)?;
    let targets = schedule::load_targets(&args.schedule)?;
    let token_file = token_file(&args)?;
    let resolved = token::resolve(std::env::var(TOKEN_ENV).ok(), &token_file, true)?;
    if resolved.generated {
        tracing::info!(file = %token_file.display(), "generated a new control-plane token (mode 0600); `leviathan token show` prints it");
    }
    let stores = open_stores(&args).await?;
    let (signer, keyring) = private_keys(&token_file, &args.log_origin)?;
    tracing::info!(store = %stores.location, "opening the ledger (catching up the graph)");
    let ledger = Arc::new(Ledger::open(stores.events.clone(), stores.graphs.clone()).await?);

    let mut config = ApiConfig::new(resolved.token)
        .with_keyring(
            keyring,
            Some(keyring_file::keyring_file_beside(&token_file)),
        )
        .with_limits(limits)
        .with_metrics_auth(args.metrics_require_auth);
    if let Some(path) = &args.gateway {
        config = config.with_gateway(super::gateway::load(path)?);
        tracing::info!(file = %path.display(), "model gateway on /v1/gateway/anthropic and /v1/gateway/openai/v1");
    }
    let plane = ControlPlane::new(ledger.clone(), stores.artifacts.clone())
        .with_log(stores.tree.clone(), Some(Arc::new(signer)))
        .with_witnesses(witness_verifiers(&args.witness_keys)?)
        .with_bundles(stores.bundles.clone());
    let state = ApiState::from_control_plane(plane.clone(), config);
    // Dropped when serving ends: the signer stops.
    let _stop_signing = spawn_signer(plane, args.checkpoint_every_ms);

    let listener = TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::failure(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::failure(format!("cannot read the bound address: {e}")))?;
    tracing::info!(
        %addr,
        store = %stores.location,
        token = %resolved.source,
        head = ledger.checkpoint().await.map_or(0, |h| h.seq),
        "control plane listening"
    );

    let scheduler = if targets.is_empty() {
        None
    } else {
        let workers = WorkerDefaults {
            control_plane_url: Some(format!("http://{}", reachable(addr))),
            minter: Arc::new(state.clone()),
        };
        let scheduler = schedule::build(
            ledger.clone(),
            stores.artifacts.clone(),
            targets,
            &args.run,
            workers,
        )
        .await?;
        tracing::info!(targets = ?args.schedule, "scheduler running");
        Some(spawn_scheduler(scheduler))
    };
    let console = console::ConsoleConfig {
        secure_cookie: args
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https"),
        ..console::ConsoleConfig::default()
    };
    if let Some(url) = &args.public_url {
        let cookie = if console.secure_cookie {
            "Secure"
        } else {
            "plain"
        };
        tracing::info!(public_url = %url, "served publicly at this URL; the console's session cookie is {cookie}");
    }
    serve_until_signal(listener, state, console, scheduler).await?;
    ledger.flush().await?;
    tracing::info!(
        head = ledger.checkpoint().await.map_or(0, |h| h.seq),
        "stopped; graph flushed"
    );
    Ok(())
}

/// `--token-file`, or the default beside the home directory.
fn token_file(args: &Args) -> Result<PathBuf, CliError> {
    args.token_file
        .clone()
        .or_else(token::default_token_file)
        .ok_or_else(|| {
            CliError::usage(format!(
                "no token: set {TOKEN_ENV} or --token-file (HOME is unset, so there is no default token file)"
            ))
        })
}

/// Opens `--store` (sled by default), showing progress while an older log's tree is built.
async fn open_stores(args: &Args) -> Result<Stores, CliError> {
    let url: StoreUrl = match &args.store {
        Some(raw) => raw.parse().map_err(|e| CliError::usage(format!("{e}")))?,
        None => StoreUrl::default_sled().map_err(|e| CliError::usage(format!("{e}")))?,
    };
    let bar = progress(None, "building the log's Merkle tree");
    let progress = {
        let bar = bar.clone();
        BuildProgress(Arc::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        }))
    };
    let stores = open_with(&url, Some(progress)).await?;
    bar.finish_and_clear();
    Ok(stores)
}

/// Signs checkpoints every `every_ms` (none when 0) until the returned sender is dropped.
fn spawn_signer(plane: ControlPlane, every_ms: u64) -> oneshot::Sender<()> {
    let (stop_signing, signing_stopped) = oneshot::channel::<()>();
    if every_ms > 0 {
        let stopped = async move {
            let _ = signing_stopped.await;
        };
        tokio::spawn(sign_checkpoints(
            plane,
            Duration::from_millis(every_ms),
            stopped,
        ));
    }
    stop_signing
}

/// Runs the scheduler until the returned sender fires.
fn spawn_scheduler(scheduler: Scheduler) -> SchedulerRun {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scheduler
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

/// The API and, under `/ui`, the operator console; `/` sends a browser to the console.
fn app(state: ApiState, console: console::ConsoleConfig) -> axum::Router {
    let console = console::router(state.clone(), console);
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Redirect::to("/ui") }),
        )
        .nest("/ui", console)
        .merge(router(state))
}

/// Serves until SIGTERM or SIGINT, then stops the scheduler first, the event streams next, and
/// gives in-flight requests [`SHUTDOWN_GRACE`] to finish.
async fn serve_until_signal(
    listener: TcpListener,
    state: ApiState,
    console: console::ConsoleConfig,
    scheduler: Option<SchedulerRun>,
) -> Result<(), CliError> {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let shutdown = {
        let state = state.clone();
        async move {
            let signal = shutdown_signal().await;
            if let Some(run) = scheduler {
                tracing::info!(signal, "shutting down: stopping the scheduler first");
                stop_scheduler(run).await;
            }
            tracing::info!(signal, "shutting down: finishing in-flight requests");
            state.close_streams();
            let _ = stop_tx.send(true);
        }
    };
    let server = axum::serve(listener, app(state, console)).with_graceful_shutdown(shutdown);
    let grace = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| CliError::failure(format!("the server failed: {e}")))?,
        () = grace => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "requests still running after the grace period; stopping anyway"),
    }
    Ok(())
}

/// Stops the scheduler and waits for its cycle to end.
async fn stop_scheduler((stop, task): SchedulerRun) {
    let _ = stop.send(());
    match task.await {
        Ok(Ok(())) => tracing::info!("scheduler stopped"),
        Ok(Err(error)) => tracing::error!(%error, "the scheduler stopped with an error"),
        Err(error) => tracing::error!(%error, "the scheduler task failed"),
    }
}

/// The log's signing key and the token keyring, beside the token file; each generated (mode
/// 0600) on first start.
fn private_keys(token_file: &Path, log_origin: &str) -> Result<(LogSigner, Keyring), CliError> {
    let key_file = log_key::key_file_beside(token_file);
    let (signer, generated) = log_key::load_or_create(&key_file, log_origin)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if generated {
        tracing::info!(file = %key_file.display(), "generated the log's signing key (mode 0600); `leviathan log key` prints its public key");
    }
    let keyring_path = keyring_file::keyring_file_beside(token_file);
    let (keyring, generated) =
        keyring_file::load_or_create(&keyring_path).map_err(|e| CliError::usage(e.to_string()))?;
    if generated {
        tracing::info!(file = %keyring_path.display(), "generated the token signing keyring (mode 0600)");
    }
    Ok((signer, keyring))
}

/// Where a process on this host reaches a server bound to `addr` (the loopback address when it
/// listens on all of them).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
