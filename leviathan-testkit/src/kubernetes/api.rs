//! The HTTP surface: discovery, CRUD, list and watch with selectors, pod logs, Table output.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use base64::Engine as _;
use k8s_openapi::{
    List,
    api::{
        batch::v1::Job,
        core::v1::{Namespace, NamespaceStatus, Pod, PodStatus, Secret},
    },
    apimachinery::pkg::{
        apis::meta::v1::{
            APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, DeleteOptions,
            GroupVersionForDiscovery, ListMeta, ObjectMeta, ServerAddressByClientCIDR,
        },
        version::Info,
    },
};
use serde::Serialize;
use tokio::{sync::watch, time::Instant};

use super::{
    Cluster, RecordedRequest,
    controller::{self, Propagation},
    kind::Kind,
    kubelet, lock, new_uid, now, random_suffix,
    selector::{FieldSelector, LabelSelector, Selectors},
    status::ApiError,
    store::{Change, EventType, Key, Replay, StoredObject},
    table,
};

type Shared = State<Arc<Cluster>>;
type QueryPairs = Query<Vec<(String, String)>>;

/// The API server's routes over `cluster`.
pub(crate) fn router(cluster: Arc<Cluster>) -> Router {
    let core = |handler: MethodRouter<Arc<Cluster>>| handler.fallback(not_allowed);
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/api", get(core_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(groups))
        .route("/apis/batch", get(batch_group))
        .route("/apis/batch/v1", get(batch_resources))
        .route("/api/v1/namespaces", core(get(list_namespaces)))
        .route("/api/v1/namespaces/{namespace}", core(get(get_namespace)))
        .route("/api/v1/{resource}", core(get(core_all)))
        .route(
            "/api/v1/namespaces/{namespace}/{resource}",
            core(get(core_list).post(core_create)),
        )
        .route(
            "/api/v1/namespaces/{namespace}/{resource}/{name}",
            core(get(core_get).delete(core_delete)),
        )
        .route(
            "/api/v1/namespaces/{namespace}/{resource}/{name}/{subresource}",
            core(get(core_sub)),
        )
        .route("/apis/batch/v1/{resource}", core(get(batch_all)))
        .route(
            "/apis/batch/v1/namespaces/{namespace}/{resource}",
            core(get(batch_list).post(batch_create)),
        )
        .route(
            "/apis/batch/v1/namespaces/{namespace}/{resource}/{name}",
            core(get(batch_get).delete(batch_delete)),
        )
        .route(
            "/apis/batch/v1/namespaces/{namespace}/{resource}/{name}/{subresource}",
            core(get(batch_sub)),
        )
        .fallback(|| async { ApiError::no_route() })
        .layer(middleware::from_fn_with_state(cluster.clone(), record))
        .with_state(cluster)
}

async fn record(State(cluster): Shared, request: Request, next: Next) -> Response {
    lock(&cluster.requests).push(RecordedRequest {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
    });
    next.run(request).await
}

async fn not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str())
}

async fn ok() -> &'static str {
    "ok"
}

fn json(code: StatusCode, body: &impl Serialize) -> Response {
    (code, axum::Json(body)).into_response()
}

fn kind(group: &str, resource: &str) -> Result<Kind, ApiError> {
    match (group, resource) {
        ("", "pods") => Ok(Kind::Pod),
        ("", "secrets") => Ok(Kind::Secret),
        ("batch", "jobs") => Ok(Kind::Job),
        _ => Err(ApiError::no_route()),
    }
}

/// Calls a generic function with the stored type of a [`Kind`].
macro_rules! by_kind {
    ($kind:expr, $function:ident ( $($arg:expr),* $(,)? )) => {
        match $kind {
            Kind::Job => $function::<Job>($($arg),*),
            Kind::Pod => $function::<Pod>($($arg),*),
            Kind::Secret => $function::<Secret>($($arg),*),
        }
    };
}

// ---- discovery ----

async fn version() -> Response {
    json(
        StatusCode::OK,
        &Info {
            major: "1".to_owned(),
            minor: "34".to_owned(),
            git_version: "v1.34.0-leviathan-testkit".to_owned(),
            git_commit: "0000000000000000000000000000000000000000".to_owned(),
            git_tree_state: "clean".to_owned(),
            build_date: "2025-01-01T00:00:00Z".to_owned(),
            go_version: "go1.24".to_owned(),
            compiler: "gc".to_owned(),
            platform: "linux/amd64".to_owned(),
            ..Info::default()
        },
    )
}

async fn core_versions(State(cluster): Shared) -> Response {
    let address = format!(
        "127.0.0.1:{}",
        cluster.port.get().copied().unwrap_or_default()
    );
    json(
        StatusCode::OK,
        &APIVersions {
            versions: vec!["v1".to_owned()],
            server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".to_owned(),
                server_address: address,
            }],
        },
    )
}

fn resource(
    name: &str,
    kind: &str,
    namespaced: bool,
    verbs: &[&str],
    short: &[&str],
) -> APIResource {
    let subresource = name.contains('/');
    APIResource {
        name: name.to_owned(),
        kind: kind.to_owned(),
        namespaced,
        singular_name: if subresource {
            String::new()
        } else {
            kind.to_lowercase()
        },
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        short_names: Some(short.iter().map(|s| (*s).to_owned()).collect())
            .filter(|s: &Vec<String>| !s.is_empty()),
        categories: (!subresource && kind != "Secret" && kind != "Namespace")
            .then(|| vec!["all".to_owned()]),
        ..APIResource::default()
    }
}

const OBJECT_VERBS: &[&str] = &["create", "delete", "get", "list", "watch"];

async fn core_resources() -> Response {
    json(
        StatusCode::OK,
        &APIResourceList {
            group_version: "v1".to_owned(),
            resources: vec![
                resource("namespaces", "Namespace", false, &["get", "list"], &["ns"]),
                resource("pods", "Pod", true, OBJECT_VERBS, &["po"]),
                resource("pods/log", "Pod", true, &["get"], &[]),
                resource("pods/status", "Pod", true, &["get"], &[]),
                resource("secrets", "Secret", true, OBJECT_VERBS, &[]),
            ],
        },
    )
}

fn batch_v1() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: "batch/v1".to_owned(),
        version: "v1".to_owned(),
    }
}

fn batch() -> APIGroup {
    APIGroup {
        name: "batch".to_owned(),
        versions: vec![batch_v1()],
        preferred_version: Some(batch_v1()),
        ..APIGroup::default()
    }
}

async fn groups() -> Response {
    json(
        StatusCode::OK,
        &APIGroupList {
            groups: vec![batch()],
        },
    )
}

async fn batch_group() -> Response {
    json(StatusCode::OK, &batch())
}

async fn batch_resources() -> Response {
    json(
        StatusCode::OK,
        &APIResourceList {
            group_version: "batch/v1".to_owned(),
            resources: vec![
                resource("jobs", "Job", true, OBJECT_VERBS, &[]),
                resource("jobs/status", "Job", true, &["get"], &[]),
            ],
        },
    )
}

fn namespace_object(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                name.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NamespaceStatus {
            phase: Some("Active".to_owned()),
            ..NamespaceStatus::default()
        }),
    }
}

async fn list_namespaces(State(cluster): Shared) -> Response {
    let items = cluster
        .store
        .namespaces()
        .iter()
        .map(|name| namespace_object(name))
        .collect();
    let metadata = ListMeta {
        resource_version: Some(cluster.store.resource_version().to_string()),
        ..ListMeta::default()
    };
    json(StatusCode::OK, &List::<Namespace> { items, metadata })
}

async fn get_namespace(Path(namespace): Path<String>) -> Response {
    json(StatusCode::OK, &namespace_object(&namespace))
}

// ---- thin route adapters ----

async fn core_all(
    cluster: Shared,
    Path(resource): Path<String>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Response {
    collection(cluster, "", None, resource, query, headers).await
}

async fn batch_all(
    cluster: Shared,
    Path(resource): Path<String>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Response {
    collection(cluster, "batch", None, resource, query, headers).await
}

async fn core_list(
    cluster: Shared,
    Path((ns, resource)): Path<(String, String)>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Response {
    collection(cluster, "", Some(ns), resource, query, headers).await
}

async fn batch_list(
    cluster: Shared,
    Path((ns, resource)): Path<(String, String)>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Response {
    collection(cluster, "batch", Some(ns), resource, query, headers).await
}

async fn core_create(
    cluster: Shared,
    Path((ns, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    create(cluster, "", ns, resource, body).await
}

async fn batch_create(
    cluster: Shared,
    Path((ns, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    create(cluster, "batch", ns, resource, body).await
}

async fn core_get(
    cluster: Shared,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    item(cluster, "", path, headers).await
}

async fn batch_get(
    cluster: Shared,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    item(cluster, "batch", path, headers).await
}

async fn core_delete(
    cluster: Shared,
    Path(path): Path<(String, String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> Response {
    delete(cluster, "", path, query, body).await
}

async fn batch_delete(
    cluster: Shared,
    Path(path): Path<(String, String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> Response {
    delete(cluster, "batch", path, query, body).await
}

async fn core_sub(
    cluster: Shared,
    Path(path): Path<(String, String, String, String)>,
    query: QueryPairs,
) -> Response {
    subresource(cluster, "", path, query).await
}

async fn batch_sub(
    cluster: Shared,
    Path(path): Path<(String, String, String, String)>,
    query: QueryPairs,
) -> Response {
    subresource(cluster, "batch", path, query).await
}

fn into_response(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

// ---- list and watch ----

/// The query parameters of a list or watch.
struct ListParams {
    watch: bool,
    selectors: Selectors,
    resource_version: Option<String>,
    limit: Option<usize>,
    continue_from: Option<Key>,
    timeout: Option<Duration>,
    bookmarks: bool,
    initial_events: bool,
}

fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|value| value == "true" || value == "1")
}

fn parse_number<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    query
        .get(name)
        .filter(|value| !value.is_empty())
        .map(|value| {
            value
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid {name}: {value:?}")))
        })
        .transpose()
}

impl ListParams {
    fn parse(kind: Kind, pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let query: BTreeMap<String, String> = pairs.into_iter().collect();
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let supported: &[&str] = match kind {
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "status.phase",
                "spec.nodeName",
            ],
            Kind::Secret => &["metadata.name", "metadata.namespace", "type"],
            Kind::Job => &["metadata.name", "metadata.namespace"],
        };
        let fields = FieldSelector::parse(
            query.get("fieldSelector").map_or("", String::as_str),
            supported,
        )
        .map_err(ApiError::bad_request)?;
        let continue_from = query
            .get("continue")
            .filter(|token| !token.is_empty())
            .map(|token| {
                decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
            })
            .transpose()?;
        Ok(Self {
            watch: flag(&query, "watch"),
            selectors: Selectors { labels, fields },
            resource_version: query
                .get("resourceVersion")
                .cloned()
                .filter(|rv| !rv.is_empty()),
            limit: parse_number::<usize>(&query, "limit")?.filter(|limit| *limit > 0),
            continue_from,
            timeout: parse_number::<u64>(&query, "timeoutSeconds")?.map(Duration::from_secs),
            bookmarks: flag(&query, "allowWatchBookmarks"),
            initial_events: flag(&query, "sendInitialEvents"),
        })
    }
}

fn encode_continue(key: &Key) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}\n{}", key.0, key.1))
}

fn decode_continue(token: &str) -> Option<Key> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (namespace, name) = text.split_once('\n')?;
    Some((namespace.to_owned(), name.to_owned()))
}

async fn collection(
    State(cluster): Shared,
    group: &str,
    namespace: Option<String>,
    resource: String,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Response {
    into_response((|| {
        let kind = kind(group, &resource)?;
        let params = ListParams::parse(kind, query)?;
        if params.watch {
            return by_kind!(kind, watch(cluster, namespace, params));
        }
        Ok(by_kind!(
            kind,
            list(
                &cluster,
                namespace.as_deref(),
                params,
                wants_table(&headers)
            )
        ))
    })())
}

fn list<K: StoredObject + table::Tabular>(
    cluster: &Cluster,
    namespace: Option<&str>,
    params: ListParams,
    table: bool,
) -> Response {
    let (items, rv) = cluster.store.list::<K>(namespace);
    let mut items: Vec<K> = items
        .into_iter()
        .filter(|item| params.selectors.matches(&item.view()))
        .filter(|item| {
            params
                .continue_from
                .as_ref()
                .is_none_or(|after| &super::store::key_of(item.metadata()) > after)
        })
        .collect();
    let mut metadata = ListMeta {
        resource_version: Some(rv.to_string()),
        ..ListMeta::default()
    };
    if let Some(limit) = params.limit
        && items.len() > limit
    {
        let remaining = items.split_off(limit);
        metadata.remaining_item_count = i64::try_from(remaining.len()).ok();
        metadata.continue_ = items
            .last()
            .map(|last| encode_continue(&super::store::key_of(last.metadata())));
    }
    if table {
        return table_response(table::render(&items, metadata));
    }
    json(StatusCode::OK, &List { items, metadata })
}

fn table_response(table: serde_json::Value) -> Response {
    let mut response = json(StatusCode::OK, &table);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
    );
    response
}

/// One line of a watch stream.
#[derive(Serialize)]
struct WireEvent<'a, T: Serialize> {
    #[serde(rename = "type")]
    type_: &'static str,
    object: &'a T,
}

fn line<T: Serialize>(type_: &'static str, object: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&WireEvent { type_, object }).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn bookmark<K: StoredObject>(rv: u64, initial_events_end: bool) -> Vec<u8> {
    let mut object = K::default();
    let meta = object.metadata_mut();
    meta.resource_version = Some(rv.to_string());
    if initial_events_end {
        meta.annotations = Some(BTreeMap::from([(
            "k8s.io/initial-events-end".to_owned(),
            "true".to_owned(),
        )]));
    }
    line("BOOKMARK", &object)
}

fn error_line(error: &ApiError) -> Vec<u8> {
    line("ERROR", &error.to_status())
}

/// What woke a waiting watch stream.
enum Wake {
    Changed,
    End,
    LimitChanged,
    TimedOut,
}

/// The state of one watch stream between chunks.
struct WatchStream {
    cluster: Arc<Cluster>,
    kind: Kind,
    namespace: Option<String>,
    selectors: Selectors,
    bookmark: fn(u64, bool) -> Vec<u8>,
    bookmarks: bool,
    queued: VecDeque<Vec<u8>>,
    cursor: u64,
    finished: bool,
    delivered: usize,
    limit: Option<usize>,
    limit_rx: watch::Receiver<Option<usize>>,
    cut: watch::Receiver<u64>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    deadline: Option<Instant>,
}

impl WatchStream {
    /// The event type this watcher sees for a change, given its selectors.
    fn event_for(&self, change: &Change) -> Option<&'static str> {
        if change.kind != self.kind {
            return None;
        }
        let namespace = change.view.fields.get("metadata.namespace");
        if self
            .namespace
            .as_ref()
            .is_some_and(|wanted| Some(wanted) != namespace)
        {
            return None;
        }
        let now = self.selectors.matches(&change.view);
        match change.event {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = change
                    .previous
                    .as_ref()
                    .is_none_or(|view| self.selectors.matches(view));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|limit| self.delivered >= limit)
    }

    /// The next chunk of the stream, or `None` when it ends.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(chunk) = self.queued.pop_front() {
            return Some((Ok(Bytes::from(chunk)), self));
        }
        loop {
            if self.finished || self.limit_reached() {
                return None;
            }
            let mut chunk = Vec::new();
            let mut saw_changes = false;
            match self.cluster.store.replay(self.cursor) {
                Replay::Expired { oldest } => {
                    self.finished = true;
                    return Some((
                        Ok(Bytes::from(error_line(&ApiError::expired(
                            self.cursor,
                            oldest,
                        )))),
                        self,
                    ));
                }
                Replay::Changes(changes) => {
                    for change in changes {
                        saw_changes = true;
                        self.cursor = change.rv;
                        if let Some(type_) = self.event_for(&change) {
                            chunk.extend(line(type_, &*change.object));
                            self.delivered += 1;
                            if self.limit_reached() {
                                break;
                            }
                        }
                    }
                }
            }
            if !chunk.is_empty() {
                return Some((Ok(Bytes::from(chunk)), self));
            }
            if saw_changes && self.bookmarks {
                let mark = (self.bookmark)(self.cursor, false);
                return Some((Ok(Bytes::from(mark)), self));
            }
            let deadline = self.deadline;
            let expired = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_ok() { Wake::Changed } else { Wake::End }
                }
                _ = self.cut.changed() => Wake::End,
                _ = self.limit_rx.changed() => Wake::LimitChanged,
                () = expired => Wake::TimedOut,
                _ = self.shutdown.wait_for(|stopped| *stopped) => Wake::End,
            };
            match woke {
                Wake::Changed => {}
                Wake::End => return None,
                Wake::LimitChanged => {
                    self.limit = *self.limit_rx.borrow_and_update();
                    self.delivered = 0;
                }
                Wake::TimedOut => {
                    self.finished = true;
                    if self.bookmarks {
                        let mark = (self.bookmark)(self.cursor, false);
                        return Some((Ok(Bytes::from(mark)), self));
                    }
                    return None;
                }
            }
        }
    }
}

fn watch<K: StoredObject>(
    cluster: Arc<Cluster>,
    namespace: Option<String>,
    params: ListParams,
) -> Result<Response, ApiError> {
    let mut queued = VecDeque::new();
    let mut finished = false;
    let mut cursor = 0;
    if cluster.faults.take_expired_watch() {
        let requested = params
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        queued.push_back(error_line(&ApiError::expired(
            requested,
            cluster.store.resource_version(),
        )));
        finished = true;
    } else {
        let from =
            match params.resource_version.as_deref() {
                None | Some("0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?),
            };
        match from {
            Some(rv) if !params.initial_events => cursor = rv,
            _ => {
                // Synthetic ADDED events for the current state, then changes after it.
                let (items, rv) = cluster.store.list::<K>(namespace.as_deref());
                for item in items
                    .iter()
                    .filter(|item| params.selectors.matches(&item.view()))
                {
                    queued.push_back(line("ADDED", item));
                }
                if params.initial_events && params.bookmarks {
                    queued.push_back(bookmark::<K>(rv, true));
                }
                cursor = rv;
            }
        }
    }
    let mut limit_rx = cluster.faults.event_limit();
    let limit = *limit_rx.borrow_and_update();
    let stream = WatchStream {
        kind: K::KIND_ID,
        namespace,
        selectors: params.selectors,
        bookmark: bookmark::<K>,
        bookmarks: params.bookmarks,
        delivered: queued.len(),
        queued,
        cursor,
        finished,
        limit,
        limit_rx,
        cut: cluster.faults.cut_signal(),
        changes: cluster.store.subscribe(),
        shutdown: cluster.shutdown.subscribe(),
        deadline: params.timeout.map(|timeout| Instant::now() + timeout),
        cluster,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, WatchStream::next_chunk));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| ApiError::internal("watch response").into_response()))
}

// ---- get ----

async fn item(
    State(cluster): Shared,
    group: &str,
    (namespace, resource, name): (String, String, String),
    headers: HeaderMap,
) -> Response {
    into_response((|| {
        let kind = kind(group, &resource)?;
        by_kind!(
            kind,
            get_one(&cluster, (namespace, name), wants_table(&headers))
        )
    })())
}

fn get_one<K: StoredObject + table::Tabular>(
    cluster: &Cluster,
    key: Key,
    table: bool,
) -> Result<Response, ApiError> {
    let object = cluster
        .store
        .get::<K>(&key)
        .ok_or_else(|| ApiError::not_found(K::KIND_ID, &key.1))?;
    if table {
        let metadata = ListMeta {
            resource_version: object.metadata().resource_version.clone(),
            ..ListMeta::default()
        };
        return Ok(table_response(table::render(
            std::slice::from_ref(&object),
            metadata,
        )));
    }
    Ok(json(StatusCode::OK, &object))
}

async fn subresource(
    State(cluster): Shared,
    group: &str,
    (namespace, resource, name, sub): (String, String, String, String),
    Query(query): QueryPairs,
) -> Response {
    into_response((|| {
        let kind = kind(group, &resource)?;
        let key = (namespace, name);
        match (kind, sub.as_str()) {
            (_, "status") => by_kind!(kind, get_one(&cluster, key, false)),
            (Kind::Pod, "log") => pod_log(&cluster, &key, query),
            _ => Err(ApiError::no_route()),
        }
    })())
}

fn pod_log(
    cluster: &Cluster,
    key: &Key,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    if cluster.store.get::<Pod>(key).is_none() {
        return Err(ApiError::not_found(Kind::Pod, &key.1));
    }
    let query: BTreeMap<String, String> = pairs.into_iter().collect();
    let buffer = cluster
        .kubelet
        .log(key, query.get("container").map(String::as_str))
        .map_err(|reason| {
            ApiError::bad_request(
                reason.unwrap_or_else(|| format!("pod \"{}\" has no running container", key.1)),
            )
        })?;
    if flag(&query, "previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container in pod \"{}\" not found",
            key.1
        )));
    }
    let tail = parse_number::<usize>(&query, "tailLines")?;
    let limit = parse_number::<usize>(&query, "limitBytes")?;
    let mut progress = buffer.subscribe();
    let (length, _) = *progress.borrow_and_update();
    let snapshot = buffer.snapshot();
    let snapshot = &snapshot[..length.min(snapshot.len())];
    let mut head = match tail {
        Some(lines) => kubelet::log_tail(snapshot, lines, usize::MAX).into_bytes(),
        None => snapshot.to_vec(),
    };
    if let Some(limit) = limit {
        head.truncate(limit);
    }
    let body = if flag(&query, "follow") {
        let first = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) });
        let rest = futures::stream::unfold(
            (buffer, progress, length),
            |(buffer, mut progress, offset)| async move {
                loop {
                    let (length, closed) = *progress.borrow_and_update();
                    if length > offset {
                        let chunk = buffer.since(offset);
                        return Some((Ok(Bytes::from(chunk)), (buffer, progress, length)));
                    }
                    if closed || progress.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        Body::from_stream(futures::StreamExt::chain(first, rest))
    } else {
        Body::from(head)
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|_| ApiError::internal("log response").into_response()))
}

// ---- create ----

fn decode<K: StoredObject>(body: &[u8]) -> Result<K, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("failed to decode {}: {error}", K::KIND_ID.plural()))
    })
}

/// Whether `name` is a DNS-1123 subdomain, as object names must be.
fn valid_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.split('.').all(|part| {
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || c == '-')
        })
}

/// Common admission for creates: namespace, name (`generateName`), uid and timestamps.
fn admit(
    meta: &mut ObjectMeta,
    namespace: &str,
    kind: Kind,
    type_name: &str,
) -> Result<String, ApiError> {
    if meta
        .namespace
        .as_deref()
        .is_some_and(|ns| !ns.is_empty() && ns != namespace)
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta.namespace = Some(namespace.to_owned());
    if meta.name.as_deref().is_none_or(str::is_empty) {
        match meta
            .generate_name
            .as_deref()
            .filter(|prefix| !prefix.is_empty())
        {
            Some(prefix) => meta.name = Some(format!("{prefix}{}", random_suffix())),
            None => {
                let cause = (
                    "metadata.name".to_owned(),
                    "Required value: name or generateName is required".to_owned(),
                );
                return Err(ApiError::invalid(kind, type_name, "", vec![cause]));
            }
        }
    }
    let name = meta.name.clone().unwrap_or_default();
    if !valid_name(&name) {
        let message = format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        );
        return Err(ApiError::invalid(
            kind,
            type_name,
            &name,
            vec![("metadata.name".to_owned(), message)],
        ));
    }
    meta.uid = Some(new_uid());
    meta.creation_timestamp = Some(now());
    meta.resource_version = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.managed_fields = None;
    Ok(name)
}

fn created(object: &impl Serialize) -> Response {
    json(StatusCode::CREATED, object)
}

async fn create(
    State(cluster): Shared,
    group: &str,
    namespace: String,
    resource: String,
    body: Bytes,
) -> Response {
    into_response((|| match kind(group, &resource)? {
        Kind::Job => {
            let mut job: Job = decode(&body)?;
            let name = admit(&mut job.metadata, &namespace, Kind::Job, "Job")?;
            if let Some(error) = cluster.faults.take_job_create_failure(&name, &namespace) {
                return Err(error);
            }
            controller::prepare_job(&mut job)
                .map_err(|causes| ApiError::invalid(Kind::Job, "Job", &name, causes))?;
            let job = cluster.store.create(job)?;
            controller::start(&cluster, &job);
            Ok(created(&job))
        }
        Kind::Pod => {
            let mut pod: Pod = decode(&body)?;
            let name = admit(&mut pod.metadata, &namespace, Kind::Pod, "Pod")?;
            let spec = pod.spec.get_or_insert_with(Default::default);
            let errors = controller::validate_pod_spec(spec, "spec");
            if !errors.is_empty() {
                return Err(ApiError::invalid(Kind::Pod, "Pod", &name, errors));
            }
            controller::default_pod_spec(spec);
            pod.status = Some(PodStatus {
                phase: Some("Pending".to_owned()),
                qos_class: Some("BestEffort".to_owned()),
                ..PodStatus::default()
            });
            let pod = cluster.store.create(pod)?;
            // A bare pod has no controller waiting for its outcome.
            drop(kubelet::start(&cluster, &pod));
            Ok(created(&pod))
        }
        Kind::Secret => {
            let mut secret: Secret = decode(&body)?;
            admit(&mut secret.metadata, &namespace, Kind::Secret, "Secret")?;
            if let Some(strings) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(BTreeMap::new);
                for (key, value) in strings {
                    data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
                }
            }
            secret.type_.get_or_insert_with(|| "Opaque".to_owned());
            Ok(created(&cluster.store.create(secret)?))
        }
    })())
}

// ---- delete ----

async fn delete(
    State(cluster): Shared,
    group: &str,
    (namespace, resource, name): (String, String, String),
    Query(pairs): QueryPairs,
    body: Bytes,
) -> Response {
    into_response((|| {
        let kind = kind(group, &resource)?;
        let query: BTreeMap<String, String> = pairs.into_iter().collect();
        let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))?
        };
        let propagation = match options
            .propagation_policy
            .as_deref()
            .or(query.get("propagationPolicy").map(String::as_str))
        {
            Some(policy) => Some(Propagation::parse(policy)?),
            None => options.orphan_dependents.map(|orphan| {
                if orphan {
                    Propagation::Orphan
                } else {
                    Propagation::Background
                }
            }),
        };
        let grace = match options.grace_period_seconds {
            Some(grace) => Some(grace),
            None => parse_number::<i64>(&query, "gracePeriodSeconds")?,
        };
        let key = (namespace, name);
        let (gone, response) = match kind {
            Kind::Job => {
                let (gone, job) = controller::delete(&cluster, &key, propagation, grace)?;
                (gone, serde_json::to_value(job))
            }
            Kind::Pod => {
                let (gone, pod) = kubelet::delete(&cluster, &key, grace)?;
                (gone, serde_json::to_value(pod))
            }
            Kind::Secret => {
                let secret = cluster
                    .store
                    .remove::<Secret>(&key)
                    .ok_or_else(|| ApiError::not_found(Kind::Secret, &key.1))?;
                (true, serde_json::to_value(secret))
            }
        };
        let response = response.map_err(|error| ApiError::internal(&error.to_string()))?;
        Ok(json(
            if gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            },
            &response,
        ))
    })())
}
