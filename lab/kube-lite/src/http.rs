//! HTTP layer: routing of Kubernetes API paths, discovery, content negotiation and watch streams.

use crate::State;
use crate::error::{ApiError, ApiResult};
use crate::ops::{self, DeleteOpts, ListOpts, PatchType, Target, WriteOpts};
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType};
use crate::table;
use crate::util::{self, meta_str};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(3 * 1024 * 1024))
        .with_state(state)
}

fn json_response(code: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn value_response(code: u16, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn error_response(e: &ApiError) -> Response {
    value_response(e.code, &e.to_status())
}

/// Decode an `application/x-www-form-urlencoded` query string.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    match s
                        .get(i + 1..i + 3)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(x) => {
                            out.push(x);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// kubectl asks for Tables first and JSON as the fallback; honour the first preference.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=Table"))
}

async fn handle(
    AxState(state): AxState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = bearer.and_then(|b| {
        state
            .config
            .users
            .iter()
            .find(|u| !u.token.is_empty() && u.token == b)
    });
    if user.is_none()
        && let Some(tok) = &state.config.token
        && bearer != Some(tok.as_str())
    {
        return error_response(&ApiError::unauthorized());
    }
    let user = user.cloned().map(Arc::new);
    let path = uri.path().trim_end_matches('/').to_string();
    let query = parse_query(uri.query().unwrap_or(""));
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => return value_response(200, &version(&state)),
        (Method::GET, ["healthz" | "readyz" | "livez", ..]) => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return r;
        }
        (Method::GET, ["api"]) => return value_response(200, &api_versions(&state, &headers)),
        (Method::GET, ["apis"]) => return value_response(200, &api_groups(&state)),
        (Method::GET, ["apis", g]) => {
            return match api_group(&state, g) {
                Some(v) => value_response(200, &v),
                None => error_response(&ApiError::not_found_path(&path)),
            };
        }
        (Method::GET, ["openapi", "v3"]) => return value_response(200, &openapi_root(&state)),
        (Method::GET, ["openapi", "v3", "api", v]) => return openapi_gv(&state, "", v, &path),
        (Method::GET, ["openapi", "v3", "apis", g, v]) => return openapi_gv(&state, g, v, &path),
        (Method::GET, ["api", v]) => return discovery_response(&state, "", v, &path),
        (Method::GET, ["apis", g, v]) => return discovery_response(&state, g, v, &path),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::not_found_path(&path)),
    };
    let mut rest: Vec<&str> = rest.to_vec();
    let mut is_watch = truthy(&query, "watch");
    if rest.first() == Some(&"watch") {
        is_watch = true;
        rest.remove(0);
    }
    // namespaces/{ns}/{resource}... vs the namespaces resource itself
    let (ns, rest) = match rest.as_slice() {
        ["namespaces", ns, r, tail @ ..] if !matches!(*r, "status" | "finalize") => {
            (Some(ns.to_string()), {
                let mut v = vec![*r];
                v.extend_from_slice(tail);
                v
            })
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return error_response(&ApiError::not_found_path(&path)),
    };
    let info = state.store.read().registry.lookup(group, version, plural);
    let Some(info) = info else {
        return error_response(&ApiError::not_found_path(&path));
    };
    if info.namespaced != ns.is_some()
        && !(info.namespaced && name.is_none() && matches!(method, Method::GET))
    {
        if !info.namespaced {
            return error_response(&ApiError::not_found_path(&path));
        }
        // namespaced resources need a namespace except for list/watch across namespaces
        return error_response(&ApiError::not_found_path(&path));
    }
    if let Some(s) = &sub
        && s != "status"
        && !info.extra_subresources.contains(s)
    {
        return error_response(&ApiError::not_found_path(&path));
    }
    if sub.as_deref() == Some("status") && !info.status {
        return error_response(&ApiError::not_found_path(&path));
    }
    let t = Target {
        info: info.clone(),
        version: version.to_string(),
        ns,
        name,
        sub,
        user,
    };
    let verb = match (&method, t.name.is_some(), is_watch) {
        (&Method::GET, _, true) => "watch",
        (&Method::GET, true, false) => "get",
        (&Method::GET, false, false) => "list",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => {
            return error_response(&ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
    };
    state.faults.record(verb, &info.plural, t.sub.as_deref());
    let latency = state.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = state.faults.error_for(verb, &info.plural, t.sub.as_deref()) {
        let reason = match code {
            429 => "TooManyRequests",
            409 => "Conflict",
            404 => "NotFound",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            403 => "Forbidden",
            _ => "InternalError",
        };
        return error_response(&ApiError::new(
            code,
            reason,
            format!("injected fault: {verb} {}", info.plural),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = if content_type.contains("protobuf") && !body.is_empty() {
        // kubectl's `create namespace|configmap|secret|serviceaccount` send protobuf
        match crate::proto::decode(&body) {
            Ok(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            Err(e) => {
                return error_response(&ApiError::unsupported_media(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
                )));
            }
        }
    } else if content_type.contains("cbor") {
        return error_response(&ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        ));
    } else {
        body
    };
    let table = wants_table(&headers);
    let include = query
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    let res = match verb {
        "get" => ops::get(&state, &t).map(|o| object_out(&t, &o, table, &include, 200)),
        "list" => list(&state, &t, &query, table, &include),
        "watch" => {
            return watch(state.clone(), t, &query, table, include)
                .await
                .unwrap_or_else(|e| error_response(&e));
        }
        "create" => create(&state, &t, &query, &headers, &body).await,
        "update" => update(&state, &t, &query, &headers, &body).await,
        "patch" => patch(&state, &t, &query, &headers, &body).await,
        "delete" => delete(&state, &t, &query, &body).await,
        _ => delete_collection(&state, &t, &query, &body).await,
    };
    res.unwrap_or_else(|e| error_response(&e))
}

fn object_out(t: &Target, obj: &Value, as_table: bool, include: &str, code: u16) -> Response {
    if as_table {
        let cols = table::columns(&t.info, &t.version);
        let rv = Some(meta_str(obj, "resourceVersion").to_string());
        return value_response(
            code,
            &table::table(&cols, true, vec![table::row(&cols, obj, include)], rv, None),
        );
    }
    value_response(code, obj)
}

fn write_opts(q: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<WriteOpts> {
    if let Some(v) = q.get("fieldValidation")
        && !["Ignore", "Warn", "Strict", ""].contains(&v.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {v}"
        )));
    }
    if let Some(d) = q.get("dryRun")
        && d != "All"
        && !d.is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "Invalid dryRun value: {d}; only \"All\" is supported"
        )));
    }
    Ok(WriteOpts {
        field_manager: q.get("fieldManager").cloned().filter(|s| !s.is_empty()),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        force: truthy(q, "force"),
    })
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) => {
            // kubectl sends JSON; YAML bodies are accepted as a convenience
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?;
            match serde_saphyr::from_str::<Value>(text) {
                Ok(v) if v.is_object() => Ok(v),
                _ => Err(ApiError::bad_request(format!(
                    "couldn't get version/kind; json parse error: {e}"
                ))),
            }
        }
    }
}

async fn create(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    if t.sub.as_deref() == Some("binding") {
        let b = parse_body(body)?;
        return Ok(value_response(201, &ops::bind(state, t, &b)?));
    }
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed(
            "POST is not allowed on a named object",
        ));
    }
    let opts = write_opts(q, headers)?;
    let obj = ops::create(state, t, parse_body(body)?, &opts).await?;
    Ok(value_response(201, &obj))
}

async fn update(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    if t.name.is_none() {
        return Err(ApiError::method_not_allowed("PUT requires a name"));
    }
    let opts = write_opts(q, headers)?;
    let obj = ops::update(state, t, parse_body(body)?, &opts).await?;
    Ok(value_response(200, &obj))
}

async fn patch(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    if t.name.is_none() {
        return Err(ApiError::method_not_allowed("PATCH requires a name"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ptype = PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got \"{ct}\")"
        ))
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the patch body is empty"));
    }
    let opts = write_opts(q, headers)?;
    let (code, obj) = ops::patch(state, t, ptype, body, &opts).await?;
    Ok(value_response(code, &obj))
}

fn delete_opts(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOpts> {
    let b = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    let mut o = DeleteOpts::from_body(&b)?;
    if let Some(p) = q.get("propagationPolicy") {
        o = DeleteOpts::from_body(&json!({"propagationPolicy": p})).map(|p| DeleteOpts {
            propagation: p.propagation,
            ..o.clone()
        })?;
    }
    if q.get("dryRun").is_some_and(|d| d == "All") {
        o.dry_run = true;
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        o.grace_period = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    Ok(o)
}

async fn delete(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    let opts = delete_opts(q, body)?;
    let obj = ops::delete(state, t, &opts).await?;
    Ok(value_response(200, &obj))
}

fn list_opts(t: &Target, q: &HashMap<String, String>) -> ApiResult<ListOpts> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {}",
                e.trim_start_matches("unable to parse requirement: ")
            ))
        })?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &t.info.group,
        &t.info.plural,
    )
    .map_err(ApiError::bad_request)?;
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        _ => None,
    };
    if let Some(rv) = q.get("resourceVersion")
        && !rv.is_empty()
        && rv.parse::<u64>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "invalid resourceVersion: \"{rv}\""
        )));
    }
    Ok(ListOpts {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").cloned().filter(|c| !c.is_empty()),
    })
}

async fn delete_collection(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    let lo = list_opts(t, q)?;
    let dopts = delete_opts(q, body)?;
    let items = ops::list(
        state,
        t,
        &ListOpts {
            limit: None,
            continue_token: None,
            ..lo
        },
    )?;
    let mut deleted = Vec::new();
    for o in items.items {
        let mut one = t.clone();
        one.ns = t
            .info
            .namespaced
            .then(|| meta_str(&o.obj, "namespace").to_string());
        one.name = Some(meta_str(&o.obj, "name").to_string());
        match ops::delete(state, &one, &dopts).await {
            Ok(d) => deleted.push((*d).clone()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = state.store.read().rv;
    Ok(value_response(
        200,
        &json!({"kind": t.info.list_kind, "apiVersion": t.info.api_version(&t.version), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

fn list(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    as_table: bool,
    include: &str,
) -> ApiResult<Response> {
    let opts = list_opts(t, q)?;
    let res = ops::list(state, t, &opts)?;
    if as_table {
        let cols = table::columns(&t.info, &t.version);
        let rows = res
            .items
            .iter()
            .map(|o| table::row(&cols, &o.obj, include))
            .collect();
        return Ok(value_response(
            200,
            &table::table(
                &cols,
                true,
                rows,
                Some(res.rv.to_string()),
                res.continue_token,
            ),
        ));
    }
    // stream the list out without cloning objects
    let mut md = serde_json::Map::new();
    md.insert("resourceVersion".into(), json!(res.rv.to_string()));
    if let Some(c) = &res.continue_token {
        md.insert("continue".into(), json!(c));
    }
    if let Some(n) = res.remaining {
        md.insert("remainingItemCount".into(), json!(n));
    }
    let mut out = Vec::with_capacity(64 + res.items.len() * 512);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, &t.info.list_kind)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &t.info.api_version(&t.version))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &md).map_err(|e| ApiError::internal(e.to_string()))?;
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in res.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&o.json);
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(200, out))
}

struct WatchFilter {
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| meta_str(o, "namespace") == ns)
            && self.labels.matches(o)
            && self.fields.matches(o)
    }
}

struct Watcher {
    info: Arc<ResourceInfo>,
    version: String,
    filter: WatchFilter,
    table: bool,
    include: String,
    sent_defs: bool,
}

impl Watcher {
    /// The line for an event, or None when filtered out.
    fn line(&mut self, ev: &Event) -> Option<Bytes> {
        let now = self.filter.matches(&ev.obj);
        let before = ev.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let kind = match ev.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if before || now => EventType::Deleted,
            _ => return None,
        };
        Some(self.encode(kind.as_str(), ev))
    }

    fn encode(&mut self, kind: &str, ev: &Event) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        if self.table {
            let cols = table::columns(&self.info, &self.version);
            let obj = ops::for_version(ev.obj.clone(), &self.info, &self.version);
            let t = table::table(
                &cols,
                !self.sent_defs,
                vec![table::row(&cols, &obj, &self.include)],
                Some(ev.rv.to_string()),
                None,
            );
            self.sent_defs = true;
            let _ = serde_json::to_writer(&mut out, &t);
        } else if self.version == self.info.storage_version() {
            out.extend_from_slice(&ev.obj_json());
        } else {
            let _ = serde_json::to_writer(
                &mut out,
                &*ops::for_version(ev.obj.clone(), &self.info, &self.version),
            );
        }
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(&self.version), "metadata": md});
        let mut out =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        out.push(b'\n');
        Bytes::from(out)
    }
}

fn error_event(e: &ApiError) -> Bytes {
    let mut out =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn too_old(from: u64, floor: u64) -> ApiError {
    ApiError::expired(format!("too old resource version: {from} ({floor})"))
}

async fn watch(
    state: Arc<State>,
    t: Target,
    q: &HashMap<String, String>,
    as_table: bool,
    include: String,
) -> ApiResult<Response> {
    let opts = list_opts(&t, q)?;
    let bookmarks = truthy(q, "allowWatchBookmarks");
    let send_initial = truthy(q, "sendInitialEvents");
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let from = match rv_param.as_str() {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: \"{s}\"")))?,
        ),
    };
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "",
            "ListOptions",
            "",
            &[(
                "allowWatchBookmarks".into(),
                "Required value: sendInitialEvents requires setting allowWatchBookmarks to true"
                    .into(),
            )],
        ));
    }
    let from = if send_initial { None } else { from };
    let timeout = match q.get("timeoutSeconds") {
        Some(s) if !s.is_empty() => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {s}")))?,
        ),
        _ => state.config.default_watch_timeout,
    };
    let gr = t.info.gr();
    let start = state.store.write().watch(&gr, t.ns.as_deref(), from);
    let mut watcher = Watcher {
        info: t.info.clone(),
        version: t.version.clone(),
        filter: WatchFilter {
            ns: t.ns.clone(),
            labels: opts.labels,
            fields: opts.fields,
        },
        table: as_table,
        include,
        sent_defs: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let start = match start {
        Ok(s) => s,
        Err(floor) => {
            let line = error_event(&too_old(from.unwrap_or(0), floor));
            let _ = tx.try_send(line);
            drop(tx);
            return Ok(stream_response(rx));
        }
    };
    let mut disconnect = state.faults.disconnects();
    disconnect.borrow_and_update();
    let mut stop = state.shutdown.subscribe();
    let bookmark_every = state.config.bookmark_interval;
    let weak = Arc::downgrade(&state);
    drop(state);
    tokio::spawn(async move {
        let mut last_rv = start.rv.max(from.unwrap_or(0));
        for ev in &start.initial {
            if let Some(line) = watcher.line(ev)
                && tx.send(line).await.is_err()
            {
                return;
            }
            if from.is_some() {
                last_rv = last_rv.max(ev.rv);
            }
        }
        if send_initial && tx.send(watcher.bookmark(start.rv, true)).await.is_err() {
            return;
        }
        let mut rx = start.rx;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = disconnect.changed() => return,
                _ = stop.changed() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let Some(st) = weak.upgrade() else { return };
                    let rv = {
                        let inner = st.store.read();
                        // only when nothing is queued for us, so the bookmark is not ahead of events
                        if rx.is_empty() { Some(inner.rv) } else { None }
                    };
                    if let Some(rv) = rv && rv > last_rv {
                        last_rv = rv;
                    }
                    if rv.is_some() && tx.send(watcher.bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(line) = watcher.line(&ev) && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let Some(st) = weak.upgrade() else { return };
                        let resync = st.store.write().resync(&gr, last_rv);
                        match resync {
                            Ok((evs, new_rx)) => {
                                rx = new_rx;
                                for ev in evs {
                                    last_rv = ev.rv;
                                    if let Some(line) = watcher.line(&ev) && tx.send(line).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(floor) => {
                                let _ = tx.send(error_event(&too_old(last_rv, floor))).await;
                                return;
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn version(state: &State) -> Value {
    let gv = &state.config.git_version;
    let minor: String = gv
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0")
        .to_string();
    json!({
        "major": "1", "minor": minor, "gitVersion": gv, "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": util::rfc3339(state.started), "goVersion": "go1.24 (kube-lite: rust)",
        "compiler": "gc", "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else if std::env::consts::ARCH == "aarch64" { "arm64" } else { std::env::consts::ARCH }),
    })
}

fn api_versions(_state: &State, headers: &HeaderMap) -> Value {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(json!({}));
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

fn api_groups(state: &State) -> Value {
    let groups: Vec<Value> = state
        .store
        .read()
        .registry
        .groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_group(state: &State, g: &str) -> Option<Value> {
    let groups = state.store.read().registry.groups();
    let vs = groups.get(g)?;
    let mut v = group_json(g, vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// Identifies one group/version's resources; changes when CRDs change it.
fn gv_hash(infos: &[&Arc<ResourceInfo>]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for i in infos {
        (&i.plural, &i.kind, i.namespaced, i.status, &i.versions).hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

fn infos_for<'a>(
    inner: &'a crate::store::Inner,
    group: &str,
    version: &str,
) -> Vec<&'a Arc<ResourceInfo>> {
    inner
        .registry
        .all()
        .filter(|i| i.group == group && i.versions.iter().any(|v| v == version))
        .collect()
}

/// OpenAPI v3 discovery root. kubectl reads it to learn that the server does field validation.
fn openapi_root(state: &State) -> Value {
    let inner = state.store.read();
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = Vec::new();
    for i in inner.registry.all() {
        for v in &i.versions {
            if !gvs.contains(&(i.group.clone(), v.clone())) {
                gvs.push((i.group.clone(), v.clone()));
            }
        }
    }
    for (g, v) in gvs {
        let p = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        let hash = gv_hash(&infos_for(&inner, &g, &v));
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document: PATCH operations tagged with their GVK and the query
/// parameters the server supports. Schemas are open (`x-kubernetes-preserve-unknown-fields`).
fn openapi_gv(state: &State, group: &str, version: &str, path: &str) -> Response {
    let inner = state.store.read();
    let infos = infos_for(&inner, group, version);
    if infos.is_empty() {
        return error_response(&ApiError::not_found_path(path));
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let params: Vec<Value> = ["fieldValidation", "fieldManager", "dryRun", "force"]
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for i in infos {
        let gvk = json!({"group": group, "version": version, "kind": i.kind});
        let ns = if i.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let op = |verb: &str| json!({"operationId": format!("{verb}{}", i.kind), "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}});
        paths.insert(
            format!("{prefix}{ns}/{}/{{name}}", i.plural),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(
            format!("{prefix}{ns}/{}", i.plural),
            json!({"get": op("list"), "post": op("post")}),
        );
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group
            },
            version,
            i.kind
        );
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "x-kubernetes-group-version-kind": [gvk]}),
        );
    }
    value_response(
        200,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn discovery_response(state: &State, group: &str, version: &str, path: &str) -> Response {
    let inner = state.store.read();
    let infos: Vec<&Arc<ResourceInfo>> = inner
        .registry
        .all()
        .filter(|i| i.group == group && i.versions.iter().any(|v| v == version))
        .collect();
    if infos.is_empty() {
        return error_response(&ApiError::not_found_path(path));
    }
    let mut resources = Vec::new();
    for i in infos {
        let mut r = json!({
            "name": i.plural, "singularName": i.singular, "namespaced": i.namespaced, "kind": i.kind,
            "verbs": VERBS, "storageVersionHash": "",
        });
        if !i.short_names.is_empty() {
            r["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            r["categories"] = json!(i.categories);
        }
        resources.push(r);
        if i.status {
            resources.push(json!({"name": format!("{}/status", i.plural), "singularName": "", "namespaced": i.namespaced, "kind": i.kind, "verbs": ["get", "patch", "update"]}));
        }
        for s in &i.extra_subresources {
            let kind = if s == "binding" {
                "Binding"
            } else {
                i.kind.as_str()
            };
            resources.push(json!({"name": format!("{}/{s}", i.plural), "singularName": "", "namespaced": i.namespaced, "kind": kind, "verbs": ["create"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    value_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app+in+%28a%2Cb%29&watch=1&x&bad=%zz");
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(q["bad"], "%zz");
    }

    #[test]
    fn table_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(wants_table(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_table(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*"),
        );
        assert!(!wants_table(&h));
    }
}
