//! API operations (create, update, patch, delete, get, list) with Kubernetes semantics.
//! The HTTP layer parses requests into these calls; admission webhooks run between computing
//! the new object and committing it.

use crate::State;
use crate::admission::{self, Operation};
use crate::error::{ApiError, ApiResult};
use crate::managed::{self, Scope};
use crate::resources::{self, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Expect, Key, Stored};
use crate::util::{self, finalizers, meta, meta_mut, meta_str, now_rfc3339, resource_version};
use crate::validate;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: Arc<ResourceInfo>,
    pub version: String,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// Who asks (None: the admin, also for the server's own work such as garbage collection).
    pub user: Option<Arc<crate::TokenUser>>,
}

impl Target {
    pub fn key(&self) -> Key {
        (
            self.ns.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.info.group, &self.info.plural, self.name())
    }
    fn scope(&self) -> Scope {
        if self.sub.as_deref() == Some("status") {
            Scope::Status
        } else {
            Scope::Main {
                status_split: self.info.status,
            }
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub field_manager: Option<String>,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
    pub user_agent: String,
    pub dry_run: bool,
    pub force: bool,
}

impl WriteOpts {
    /// The manager recorded for non-apply writes (Kubernetes derives it from the user agent).
    fn manager(&self) -> String {
        match &self.field_manager {
            Some(m) => m.clone(),
            None => {
                let ua = self.user_agent.split('/').next().unwrap_or("").trim();
                if ua.is_empty() {
                    "unknown".into()
                } else {
                    ua.to_string()
                }
            }
        }
    }
}

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Rewrite apiVersion for the requested version (objects are stored in the storage version).
pub fn for_version(obj: Arc<Value>, info: &ResourceInfo, version: &str) -> Arc<Value> {
    if version == info.storage_version() {
        return obj;
    }
    let mut o = (*obj).clone();
    o["apiVersion"] = json!(info.api_version(version));
    Arc::new(o)
}

fn to_storage(mut obj: Value, info: &ResourceInfo) -> Value {
    obj["apiVersion"] = json!(info.api_version(info.storage_version()));
    obj
}

pub fn get(state: &State, t: &Target) -> ApiResult<Arc<Value>> {
    let obj = state
        .store
        .read()
        .get(&t.info.gr(), &t.key())
        .ok_or_else(|| t.not_found())?;
    Ok(for_version(obj, &t.info, &t.version))
}

/// Parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub struct ListResult {
    /// Objects (in the requested version) with their serialisation.
    pub items: Vec<Stored>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

fn encode_continue(rv: u64, key: &Key) -> String {
    format!(
        "{rv}.{}",
        util::hex(format!("{}/{}", key.0, key.1).as_bytes())
    )
}

fn decode_continue(tok: &str) -> ApiResult<(u64, Key)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok}"));
    let (rv, k) = tok.split_once('.').ok_or_else(bad)?;
    let rv = rv.parse().map_err(|_| bad())?;
    let k = String::from_utf8(util::unhex(k).ok_or_else(bad)?).map_err(|_| bad())?;
    let (ns, name) = k.split_once('/').ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

pub fn list(state: &State, t: &Target, opts: &ListOpts) -> ApiResult<ListResult> {
    let after = opts
        .continue_token
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    let inner = state.store.read();
    if let Some((crv, _)) = &after
        && *crv + (inner.window as u64) * 1000 < inner.rv
    {
        // keep tokens valid for a long time; only absurdly old ones expire
        return Err(ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ));
    }
    let rv = after.as_ref().map(|(r, _)| *r).unwrap_or(inner.rv);
    let gr = t.info.gr();
    // `metadata.name=` within one namespace (or cluster-scoped) is a point lookup; kube-runtime's
    // await_condition and watch_object list this way
    let by_name = opts
        .fields
        .0
        .iter()
        .find(|(f, eq, _)| f == "metadata.name" && *eq)
        .map(|(_, _, v)| v);
    let point_lookup =
        by_name.filter(|_| after.is_none() && (t.ns.is_some() || !t.info.namespaced));
    let point: Option<Stored> = point_lookup
        .and_then(|name| inner.get_stored(&gr, &(t.ns.clone().unwrap_or_default(), name.clone())));
    let candidates: Box<dyn Iterator<Item = &Stored>> = match point_lookup {
        Some(_) => Box::new(point.iter()),
        None => Box::new(inner.range(&gr, t.ns.as_deref(), after.as_ref().map(|(_, k)| k))),
    };
    // filter and page under the read lock; only the returned page is cloned (Arc + Bytes)
    let filtered =
        candidates.filter(|o| opts.labels.matches(&o.obj) && opts.fields.matches(&o.obj));
    let mut items: Vec<Stored> = Vec::new();
    let mut continue_token = None;
    let mut remaining = None;
    match opts.limit.filter(|l| *l > 0) {
        Some(limit) => {
            let mut rest = 0usize;
            for o in filtered {
                if items.len() < limit {
                    items.push(o.clone());
                } else {
                    rest += 1;
                }
            }
            if rest > 0
                && let Some(last) = items.last()
            {
                let key = (
                    meta_str(&last.obj, "namespace").to_string(),
                    meta_str(&last.obj, "name").to_string(),
                );
                continue_token = Some(encode_continue(rv, &key));
                remaining = Some(rest);
            }
        }
        None => items.extend(filtered.cloned()),
    }
    drop(inner);
    if t.version != t.info.storage_version() {
        items = items
            .into_iter()
            .map(|o| Stored::new(for_version(o.obj, &t.info, &t.version)))
            .collect();
    }
    Ok(ListResult {
        items,
        rv,
        continue_token,
        remaining,
    })
}

fn require_object(body: Value) -> ApiResult<Value> {
    match body {
        Value::Object(_) => Ok(body),
        _ => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

fn invalid(t: &Target, name: &str, causes: Vec<(String, String)>) -> ApiError {
    ApiError::invalid(&t.info.group, &t.info.kind, name, &causes)
}

/// Checks that apiVersion/kind in a body match the endpoint; fills them in when missing.
fn check_type(t: &Target, obj: &mut Value) -> ApiResult<()> {
    let want_av = t.info.api_version(&t.version);
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(t.info.kind),
        Some(k) if k == t.info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({want_av}) or kind {k} does not match {}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                t.info.kind
            )));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av)
            if av == want_av || (t.info.versions.iter().any(|v| t.info.api_version(v) == av)) => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    if !obj.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Validation shared by create and update (422 causes).
fn validate_common(t: &Target, obj: &Value) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let m = meta(obj);
    for (field, check_keys) in [("labels", true), ("annotations", false)] {
        match m.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !validate::is_qualified_name(k) {
                        errs.push((format!("metadata.{field}"), format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'")));
                    }
                    match v.as_str() {
                        Some(s) if check_keys && !validate::is_label_value(s) => errs.push((
                            "metadata.labels".to_string(),
                            format!("Invalid value: \"{s}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                        )),
                        Some(_) => {}
                        None => errs.push((format!("metadata.{field}.{k}"), "Invalid value: must be a string".into())),
                    }
                }
            }
            Some(_) => errs.push((
                format!("metadata.{field}"),
                "Invalid value: must be a map of strings".into(),
            )),
        }
    }
    if let Some(f) = m.get("finalizers")
        && !f.as_array().is_some_and(|a| {
            a.iter()
                .all(|x| x.as_str().is_some_and(validate::is_qualified_name))
        })
    {
        errs.push((
            "metadata.finalizers".into(),
            format!("Invalid value: {f}: each finalizer must be a qualified name"),
        ));
    }
    if let Some(refs) = m.get("ownerReferences") {
        match refs.as_array() {
            Some(refs) => {
                for (i, r) in refs.iter().enumerate() {
                    for f in ["apiVersion", "kind", "name", "uid"] {
                        if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                            errs.push((
                                format!("metadata.ownerReferences[{i}].{f}"),
                                "Required value".into(),
                            ));
                        }
                    }
                }
            }
            None => errs.push((
                "metadata.ownerReferences".into(),
                "Invalid value: must be a list".into(),
            )),
        }
    }
    if !obj.get("spec").is_none_or(|s| s.is_object() || s.is_null()) {
        errs.push((
            "spec".into(),
            format!(
                "Invalid value: \"{}\": spec must be an object",
                value_type(&obj["spec"])
            ),
        ));
    }
    if t.info.group == "apiextensions.k8s.io"
        && t.info.plural == "customresourcedefinitions"
        && let Err(e) = resources::crd_resource(obj)
    {
        errs.extend(e);
    }
    errs
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Defaults a real API server fills in for some built-in kinds, and CRD status.
fn defaults_on_create(info: &ResourceInfo, obj: &mut Value) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
            if obj.get("spec").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        ("", "pods") if obj.get("status").is_none_or(|s| s.get("phase").is_none()) => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "serviceaccounts") | ("", "configmaps") | ("", "secrets") => {}
        _ => {}
    }
}

fn crd_status(obj: &mut Value) {
    let now = now_rfc3339();
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["singular"] = json!(k.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["listKind"] = json!(format!("{k}List"));
    }
    let storage: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut stored: Vec<Value> = obj
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in storage {
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    obj["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions"
}

/// Turn a request body into a new object ready to store (without resourceVersion).
/// `creator`: record managedFields for this manager (None when apply already did).
fn prepare_create(
    state: &State,
    t: &Target,
    body: Value,
    creator: Option<&str>,
    strict: bool,
) -> ApiResult<Value> {
    let mut obj = require_object(body)?;
    check_type(t, &mut obj)?;
    let info = &t.info;
    {
        let m = meta_mut(&mut obj);
        if info.namespaced {
            let path_ns = t.ns.clone().unwrap_or_default();
            match m.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != path_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(path_ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let mut prefix = g.to_string();
                    prefix.truncate(253 - 5);
                    m.insert(
                        "name".into(),
                        json!(format!("{prefix}{}", util::name_suffix())),
                    );
                }
                _ => {}
            }
        }
        m.insert("uid".into(), json!(util::new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "resourceVersion",
        ] {
            m.remove(k);
        }
        if info.status || info.custom {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if creator.is_some() {
            m.remove("managedFields");
        }
    }
    let name = meta_str(&obj, "name").to_string();
    if let Err(e) = validate::object_name(&name) {
        return Err(invalid(t, &name, vec![("metadata.name".into(), e)]));
    }
    if let Some(n) = &t.name
        && *n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({n})"
        )));
    }
    if !info.keeps_status_on_create()
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    defaults_on_create(info, &mut obj);
    apply_schema(t, &mut obj, strict)?;
    let errs = validate_common(t, &obj);
    if !errs.is_empty() {
        return Err(invalid(t, &name, errs));
    }
    if is_crd(info) {
        crd_status(&mut obj);
    }
    if info.namespaced && state.config.require_namespace {
        let ns = meta_str(&obj, "namespace").to_string();
        let nsobj = state.store.read().get(
            &(String::new(), "namespaces".into()),
            &(String::new(), ns.clone()),
        );
        match nsobj {
            None => return Err(ApiError::not_found("", "namespaces", &ns)),
            Some(n) if meta(&n).contains_key("deletionTimestamp") => {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    crate::error::qualified(&info.group, &info.plural)
                ))
                .with_details(json!({"name": name, "group": info.group, "kind": info.plural})));
            }
            Some(_) => {}
        }
    }
    if let Some(mgr) = creator {
        managed::record_update(
            None,
            &mut obj,
            mgr,
            &info.api_version(&t.version),
            t.scope(),
            &now_rfc3339(),
        );
    }
    Ok(obj)
}

/// Default, prune (or reject unknown fields) and validate a custom resource against its schema.
fn apply_schema(t: &Target, obj: &mut Value, strict: bool) -> ApiResult<()> {
    if !t.info.custom {
        return Ok(());
    }
    let Some(schema) = t
        .info
        .schemas
        .get(&t.version)
        .or_else(|| t.info.schemas.get(t.info.storage_version()))
    else {
        return Ok(());
    };
    let mode = if strict {
        crate::schema::Unknown::Reject
    } else {
        crate::schema::Unknown::Prune
    };
    let out = crate::schema::process(schema, obj, mode);
    let name = meta_str(obj, "name").to_string();
    if !out.unknown.is_empty() {
        let all: Vec<String> = out
            .unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            t.info.kind,
            t.version,
            t.info.kind,
            all.join(", ")
        )));
    }
    if !out.invalid.is_empty() {
        return Err(invalid(t, &name, out.invalid));
    }
    Ok(())
}

/// Result of preparing an update.
struct Prepared {
    obj: Value,
    /// deletionTimestamp set and no finalizers left: remove instead of storing.
    remove: bool,
}

/// Merge a new version of an object with the stored one following the subresource split,
/// immutable metadata, generation and managedFields rules.
fn prepare_update(
    t: &Target,
    old: &Value,
    mut new: Value,
    manager: Option<&str>,
    strict: bool,
) -> ApiResult<Prepared> {
    let info = &t.info;
    check_type(t, &mut new)?;
    let name = meta_str(old, "name").to_string();
    let new_name = meta_str(&new, "name");
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let new_ns = meta_str(&new, "namespace");
    if info.namespaced && !new_ns.is_empty() && new_ns != meta_str(old, "namespace") {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let new_uid = meta_str(&new, "uid");
    if !new_uid.is_empty() && new_uid != meta_str(old, "uid") {
        return Err(ApiError::conflict(
            &info.group,
            &info.plural,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
                meta_str(old, "uid")
            ),
        ));
    }
    let scope = t.scope();
    let mut obj = match scope {
        Scope::Status => {
            // only status changes through /status
            let mut o = old.clone();
            match new.get("status") {
                Some(s) => o["status"] = s.clone(),
                None => {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            o
        }
        Scope::Main { status_split } => {
            let mut o = new;
            if status_split {
                match old.get("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            o
        }
    };
    obj["apiVersion"] = json!(info.api_version(info.storage_version()));
    {
        let om = meta(old).clone();
        let m = meta_mut(&mut obj);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("selfLink");
        if manager.is_some() {
            // clients cannot write managedFields through ordinary updates here; keep the stored ones
            match om.get("managedFields") {
                Some(v) => m.insert("managedFields".into(), v.clone()),
                None => m.remove("managedFields"),
            };
        }
        if om.contains_key("deletionTimestamp") {
            // no new finalizers once deletion started
            let old_f: Vec<Value> = om
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(f) = m.get("finalizers").and_then(Value::as_array)
                && f.iter().any(|x| !old_f.contains(x))
            {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    &name,
                    &[(
                        "metadata.finalizers".into(),
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    )],
                ));
            }
        }
    }
    if !matches!(scope, Scope::Status) {
        let errs = validate_common(t, &obj);
        if !errs.is_empty() {
            return Err(invalid(t, &name, errs));
        }
    }
    apply_schema(t, &mut obj, strict)?;
    // generation: bumped when anything but metadata (and status with a status subresource) changes
    if meta(old).contains_key("generation") {
        let strip = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("apiVersion");
                m.remove("kind");
                if info.status {
                    m.remove("status");
                }
            }
            v
        };
        if strip(old) != strip(&obj) {
            let g = meta(old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
        }
    }
    if is_crd(info) {
        obj["status"] = old.get("status").cloned().unwrap_or(json!({}));
        crd_status(&mut obj);
    }
    if let Some(mgr) = manager {
        managed::record_update(
            Some(old),
            &mut obj,
            mgr,
            &info.api_version(&t.version),
            scope,
            &now_rfc3339(),
        );
    }
    let remove = meta(&obj).contains_key("deletionTimestamp") && finalizers(&obj).is_empty();
    Ok(Prepared { obj, remove })
}

/// Commit a prepared update (store or remove), then run post-commit hooks.
fn commit_update(
    state: &State,
    t: &Target,
    p: Prepared,
    expect: Expect,
    dry_run: bool,
) -> ApiResult<Arc<Value>> {
    let gr = t.info.gr();
    if dry_run {
        return Ok(Arc::new(p.obj));
    }
    let res = {
        let mut inner = state.store.write();
        if p.remove {
            // verify precondition, then store the final state and remove
            let key = (
                meta_str(&p.obj, "namespace").to_string(),
                meta_str(&p.obj, "name").to_string(),
            );
            if let Expect::Rv(rv) = expect
                && inner.get(&gr, &key).and_then(|o| resource_version(&o)) != Some(rv)
            {
                return Err(ApiError::stale(&gr.0, &gr.1, &key.1));
            }
            inner.put(&gr, p.obj, expect)?;
            inner.remove(&gr, &key, Expect::Exists)
        } else {
            inner.put(&gr, p.obj, expect)
        }
    }?;
    after_commit(state, t, &res, p.remove);
    Ok(res)
}

fn after_commit(state: &State, t: &Target, obj: &Value, removed: bool) {
    if is_crd(&t.info) {
        crate::register_crd(state, obj, removed);
    }
    if removed {
        state.gc.notify_one();
    }
}

pub async fn create(
    state: &State,
    t: &Target,
    body: Value,
    opts: &WriteOpts,
) -> ApiResult<Arc<Value>> {
    let manager = opts.manager();
    let obj = prepare_create(state, t, body, Some(&manager), opts.strict)?;
    let obj = admission::admit(state, t, Operation::Create, Some(obj), None, opts.dry_run).await?;
    let obj = obj.unwrap_or(Value::Null);
    // webhooks may not change identity
    if opts.dry_run {
        return Ok(Arc::new(obj));
    }
    store_created(state, t, obj)
}

/// Stores an admitted new object (it must not exist yet) and returns it in the client's version.
fn store_created(state: &State, t: &Target, obj: Value) -> ApiResult<Arc<Value>> {
    let created =
        state
            .store
            .write()
            .put(&t.info.gr(), to_storage(obj, &t.info), Expect::Absent)?;
    after_commit(state, t, &created, false);
    Ok(for_version(created, &t.info, &t.version))
}

/// Runs the update admission webhooks over a prepared object; they may mutate it.
async fn admit_update(
    state: &State,
    t: &Target,
    p: Prepared,
    old: &Arc<Value>,
    dry_run: bool,
) -> ApiResult<Prepared> {
    let obj = admission::admit(
        state,
        t,
        Operation::Update,
        Some(p.obj),
        Some(old.clone()),
        dry_run,
    )
    .await?;
    Ok(Prepared {
        obj: obj.unwrap_or(Value::Null),
        remove: p.remove,
    })
}

pub async fn update(
    state: &State,
    t: &Target,
    body: Value,
    opts: &WriteOpts,
) -> ApiResult<Arc<Value>> {
    if state.faults.take_conflict() {
        return Err(ApiError::stale(&t.info.group, &t.info.plural, t.name()));
    }
    let body = require_object(body)?;
    let old = state
        .store
        .read()
        .get(&t.info.gr(), &t.key())
        .ok_or_else(|| t.not_found())?;
    let rv = match meta_str(&body, "resourceVersion") {
        "" => {
            return Err(invalid(
                t,
                t.name(),
                vec![(
                    "metadata.resourceVersion".into(),
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        s => s.parse::<u64>().map_err(|_| {
            invalid(
                t,
                t.name(),
                vec![(
                    "metadata.resourceVersion".into(),
                    format!("Invalid value: \"{s}\": must be an integer"),
                )],
            )
        })?,
    };
    if resource_version(&old) != Some(rv) {
        return Err(ApiError::stale(&t.info.group, &t.info.plural, t.name()));
    }
    let manager = opts.manager();
    let p = prepare_update(t, &old, body, Some(&manager), opts.strict)?;
    let p = admit_update(state, t, p, &old, opts.dry_run).await?;
    let res = commit_update(state, t, p, Expect::Rv(rv), opts.dry_run)?;
    Ok(for_version(res, &t.info, &t.version))
}

fn parse_apply_body(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("apply body is not valid UTF-8"))?;
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "apply configuration must be an object",
        ));
    }
    Ok(v)
}

/// How often a patch without a resourceVersion is redone after racing another write before the
/// server gives up with 409 (only under a storm of writes to one object).
const PATCH_ATTEMPTS: usize = 64;

pub async fn patch(
    state: &State,
    t: &Target,
    ptype: PatchType,
    body: &[u8],
    opts: &WriteOpts,
) -> ApiResult<(u16, Arc<Value>)> {
    if state.faults.take_conflict() {
        return Err(ApiError::stale(&t.info.group, &t.info.plural, t.name()));
    }
    if ptype == PatchType::Strategic && t.info.custom {
        return Err(ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    enum Doc {
        Json(json_patch::Patch),
        Merge(Value),
        Apply(Value),
    }
    let doc = match ptype {
        PatchType::Json => Doc::Json(
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?,
        ),
        PatchType::Merge | PatchType::Strategic => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !v.is_object() {
                return Err(ApiError::bad_request("patch body must be a JSON object"));
            }
            Doc::Merge(v)
        }
        PatchType::Apply => {
            if opts.field_manager.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "PATCH apply requires a non-empty fieldManager query parameter",
                ));
            }
            let v = parse_apply_body(body)?;
            if meta(&v).contains_key("managedFields") {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            Doc::Apply(v)
        }
    };
    let manager = opts.manager();
    let av = t.info.api_version(&t.version);
    // A resourceVersion the patch itself sets is a precondition; a patch without one is applied
    // to whatever the object is when it is written, so a write that raced another is redone on
    // the fresh object, as the API server's GuaranteedUpdate does (a client never sees a 409 for
    // a patch that names no version).
    let sets_rv = match &doc {
        Doc::Merge(v) | Doc::Apply(v) => !meta_str(v, "resourceVersion").is_empty(),
        Doc::Json(p) => serde_json::to_value(p).ok().is_some_and(|ops| {
            ops.as_array().into_iter().flatten().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                    && op.get("op").and_then(Value::as_str) != Some("test")
            })
        }),
    };
    for _attempt in 0..PATCH_ATTEMPTS {
        let old = state.store.read().get(&t.info.gr(), &t.key());
        let Some(old) = old else {
            if let Doc::Apply(applied) = &doc {
                if t.sub.is_some() {
                    return Err(t.not_found());
                }
                let mut a = applied.clone();
                check_type(t, &mut a)?;
                let obj = managed::apply(
                    None,
                    &a,
                    &manager,
                    &av,
                    opts.force,
                    t.scope(),
                    &now_rfc3339(),
                )
                .map_err(|c| conflict_error(t, &c))?;
                let mut obj = obj;
                if let Some(m) = applied.get("metadata").and_then(Value::as_object) {
                    for k in ["name", "namespace", "generateName"] {
                        if let Some(v) = m.get(k) {
                            meta_mut(&mut obj).insert(k.into(), v.clone());
                        }
                    }
                }
                let obj = prepare_create(state, t, obj, None, opts.strict)?;
                let obj =
                    admission::admit(state, t, Operation::Create, Some(obj), None, opts.dry_run)
                        .await?;
                let obj = obj.unwrap_or(Value::Null);
                if opts.dry_run {
                    return Ok((201, Arc::new(obj)));
                }
                match store_created(state, t, obj) {
                    Ok(created) => return Ok((201, created)),
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            return Err(t.not_found());
        };
        let old_rv = resource_version(&old).unwrap_or(0);
        let mut versioned = (*for_version(old.clone(), &t.info, &t.version)).clone();
        let (new, manage) = match &doc {
            Doc::Json(p) => {
                apply_json_patch(&mut versioned, p)?;
                (versioned, true)
            }
            Doc::Merge(p) if ptype == PatchType::Merge => {
                json_patch::merge(&mut versioned, p);
                (versioned, true)
            }
            Doc::Merge(p) => {
                crate::merge::strategic_merge(&mut versioned, p).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
                (versioned, true)
            }
            Doc::Apply(applied) => {
                let mut a = applied.clone();
                check_type(t, &mut a)?;
                let n = meta_str(&a, "name");
                if !n.is_empty() && n != t.name() {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({})",
                        t.name()
                    )));
                }
                let obj = managed::apply(
                    Some(&versioned),
                    &a,
                    &manager,
                    &av,
                    opts.force,
                    t.scope(),
                    &now_rfc3339(),
                )
                .map_err(|c| conflict_error(t, &c))?;
                (obj, false)
            }
        };
        if !new.is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patched object must be a JSON object",
            ));
        }
        // a resourceVersion in the patch is a precondition
        let patched_rv = meta_str(&new, "resourceVersion").to_string();
        if !patched_rv.is_empty() && patched_rv.parse::<u64>().ok() != Some(old_rv) {
            return Err(ApiError::stale(&t.info.group, &t.info.plural, t.name()));
        }
        // an apply patch computed its managedFields itself: record no update entry over them
        let p = prepare_update(
            t,
            &old,
            new,
            if manage { Some(&manager) } else { None },
            opts.strict,
        )?;
        let p = admit_update(state, t, p, &old, opts.dry_run).await?;
        match commit_update(state, t, p, Expect::Rv(old_rv), opts.dry_run) {
            Ok(res) => return Ok((200, for_version(res, &t.info, &t.version))),
            Err(e) if e.reason == "Conflict" && !sets_rv => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &t.info.group,
        &t.info.plural,
        t.name(),
        "too many concurrent modifications",
    ))
}

/// Apply an RFC 6902 patch the way Kubernetes (evanphx/json-patch) does: a `test` of `null`
/// succeeds when the path is absent (kube-rs' finalizer helper relies on this).
pub fn apply_json_patch(doc: &mut Value, patch: &json_patch::Patch) -> ApiResult<()> {
    for (i, op) in patch.0.iter().enumerate() {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| {
            let msg = e
                .to_string()
                .replacen("operation '/0'", &format!("operation '/{i}'"), 1);
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {msg}"),
            )
        })?;
    }
    Ok(())
}

fn conflict_error(t: &Target, conflicts: &[managed::Conflict]) -> ApiError {
    let (message, causes) = managed::conflict_message(conflicts);
    ApiError::new(409, "Conflict", message).with_details(
        json!({"name": t.name(), "group": t.info.group, "kind": t.info.plural, "causes": causes}),
    )
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    pub grace_period: Option<i64>,
}

impl DeleteOpts {
    pub fn from_body(body: &Value) -> ApiResult<Self> {
        if body.is_null() {
            return Ok(DeleteOpts::default());
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        let propagation = s("/propagationPolicy");
        if let Some(p) = &propagation
            && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
        {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                &[(
                    "propagationPolicy".into(),
                    format!(
                        "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
        let orphan = body.get("orphanDependents").and_then(Value::as_bool);
        Ok(DeleteOpts {
            propagation: propagation.or(match orphan {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }),
            precondition_uid: s("/preconditions/uid"),
            precondition_rv: s("/preconditions/resourceVersion"),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
        })
    }
}

/// Delete one object. Returns the object (still present with deletionTimestamp when it has finalizers).
pub async fn delete(state: &State, t: &Target, opts: &DeleteOpts) -> ApiResult<Arc<Value>> {
    let gr = t.info.gr();
    for _attempt in 0..16 {
        let old = state
            .store
            .read()
            .get(&gr, &t.key())
            .ok_or_else(|| t.not_found())?;
        if let Some(uid) = &opts.precondition_uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &gr.0,
                &gr.1,
                t.name(),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &gr.0,
                &gr.1,
                t.name(),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        admission::admit(
            state,
            t,
            Operation::Delete,
            None,
            Some(old.clone()),
            opts.dry_run,
        )
        .await?;
        if opts.dry_run {
            return Ok(for_version(old, &t.info, &t.version));
        }
        let old_rv = resource_version(&old).unwrap_or(0);
        if meta(&old).contains_key("deletionTimestamp") {
            return Ok(for_version(old, &t.info, &t.version));
        }
        let is_ns = gr.0.is_empty() && gr.1 == "namespaces";
        let foreground = opts.propagation.as_deref() == Some("Foreground");
        let res = if !finalizers(&old).is_empty() || is_ns || foreground {
            let mut o = (*old).clone();
            {
                let m = meta_mut(&mut o);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if let Some(g) = m.get("generation").and_then(Value::as_i64) {
                    m.insert("generation".into(), json!(g + 1));
                }
                if foreground {
                    // dependents go first; the garbage collector removes this finalizer after them
                    let f = m.entry("finalizers").or_insert_with(|| json!([]));
                    if let Some(list) = f.as_array_mut()
                        && !list.iter().any(|x| x == FOREGROUND)
                    {
                        list.push(json!(FOREGROUND));
                    }
                }
            }
            if is_ns {
                o["status"] = json!({"phase": "Terminating"});
            }
            state.store.write().put(&gr, o, Expect::Rv(old_rv))
        } else {
            state
                .store
                .write()
                .remove(&gr, &t.key(), Expect::Rv(old_rv))
        };
        match res {
            Ok(obj) => {
                let removed = !meta(&obj).contains_key("deletionTimestamp");
                if opts.propagation.as_deref() == Some("Orphan") {
                    orphan_dependents(state, meta_str(&obj, "uid"));
                }
                after_commit(state, t, &obj, removed);
                if is_ns || foreground {
                    state.gc.notify_one();
                }
                return Ok(for_version(obj, &t.info, &t.version));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &gr.0,
        &gr.1,
        t.name(),
        "too many concurrent modifications",
    ))
}

const FOREGROUND: &str = "foregroundDeletion";

/// Remove ownerReferences to `owner_uid` from every object (DeleteOptions propagationPolicy=Orphan).
fn orphan_dependents(state: &State, owner_uid: &str) {
    let mut inner = state.store.write();
    let mut changes = Vec::new();
    for (gr, table) in inner.tables.iter() {
        for obj in table.objects.values().map(|s| &s.obj) {
            let refs = meta(obj).get("ownerReferences").and_then(Value::as_array);
            if refs.is_some_and(|r| {
                r.iter()
                    .any(|x| x.get("uid").and_then(Value::as_str) == Some(owner_uid))
            }) {
                let mut o = (**obj).clone();
                if let Some(Value::Array(r)) = meta_mut(&mut o).get_mut("ownerReferences") {
                    r.retain(|x| x.get("uid").and_then(Value::as_str) != Some(owner_uid));
                }
                changes.push((gr.clone(), o));
            }
        }
    }
    for (gr, o) in changes {
        let _ = inner.put(&gr, o, Expect::Exists);
    }
}

/// Bind a pod to a node (pods/binding).
pub fn bind(state: &State, t: &Target, body: &Value) -> ApiResult<Value> {
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(invalid(
            t,
            t.name(),
            vec![("target.name".into(), "Required value".into())],
        ));
    }
    let gr = t.info.gr();
    let mut inner = state.store.write();
    let old = inner.get(&gr, &t.key()).ok_or_else(|| t.not_found())?;
    if let Some(n) = old.pointer("/spec/nodeName").and_then(Value::as_str)
        && !n.is_empty()
    {
        return Err(ApiError::conflict(
            &gr.0,
            &gr.1,
            t.name(),
            &format!("pod {} is already assigned to node \"{n}\"", t.name()),
        ));
    }
    let mut o = (*old).clone();
    o["spec"]["nodeName"] = json!(node);
    let rv = resource_version(&old).unwrap_or(0);
    inner.put(&gr, o, Expect::Rv(rv))?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// One pass of background garbage collection: dependents whose owners are all gone, and the
/// contents of terminating namespaces. Returns how many deletions were issued.
pub async fn collect_garbage(state: &State) -> usize {
    let mut victims: Vec<Target> = Vec::new();
    let mut empty_namespaces = Vec::new();
    let finished_foreground: Vec<Target>;
    {
        let inner = state.store.read();
        let terminating: Vec<String> = inner
            .list(&(String::new(), "namespaces".into()), None, None)
            .into_iter()
            .filter(|n| meta(n).contains_key("deletionTimestamp"))
            .map(|n| meta_str(&n, "name").to_string())
            .collect();
        let mut ns_has_content: std::collections::HashSet<String> = Default::default();
        // owners being deleted in the foreground, and whether they still have dependents
        let mut foreground: HashMap<String, (Target, bool)> = HashMap::new();
        for (gr, table) in inner.tables.iter() {
            let Some(info) = inner.registry.get(&gr.0, &gr.1).cloned() else {
                continue;
            };
            for obj in table.objects.values().map(|s| &s.obj) {
                if meta(obj).contains_key("deletionTimestamp")
                    && finalizers(obj).iter().any(|f| f == FOREGROUND)
                {
                    let ns = meta_str(obj, "namespace");
                    let t = Target {
                        info: info.clone(),
                        version: info.storage_version().to_string(),
                        ns: info.namespaced.then(|| ns.to_string()),
                        name: Some(meta_str(obj, "name").to_string()),
                        sub: None,
                        user: None,
                    };
                    foreground.insert(meta_str(obj, "uid").to_string(), (t, false));
                }
            }
        }
        for (gr, table) in inner.tables.iter() {
            let Some(info) = inner.registry.get(&gr.0, &gr.1).cloned() else {
                continue;
            };
            for obj in table.objects.values().map(|s| &s.obj) {
                let m = meta(obj);
                let ns = meta_str(obj, "namespace");
                let in_terminating = info.namespaced && terminating.iter().any(|t| t == ns);
                if in_terminating {
                    ns_has_content.insert(ns.to_string());
                }
                let refs: Vec<&str> = m
                    .get("ownerReferences")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.get("uid").and_then(Value::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut owner_in_foreground = false;
                for uid in &refs {
                    if let Some(entry) = foreground.get_mut(*uid) {
                        entry.1 = true;
                        owner_in_foreground = true;
                    }
                }
                if m.contains_key("deletionTimestamp") {
                    continue;
                }
                let orphaned = m
                    .get("ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        !refs.is_empty()
                            && refs.iter().all(|r| {
                                let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
                                !inner.uids.contains_key(uid)
                            })
                    });
                if orphaned || in_terminating || owner_in_foreground {
                    victims.push(Target {
                        info: info.clone(),
                        version: info.storage_version().to_string(),
                        ns: info.namespaced.then(|| ns.to_string()),
                        name: Some(meta_str(obj, "name").to_string()),
                        sub: None,
                        user: None,
                    });
                }
            }
        }
        for ns in terminating {
            if !ns_has_content.contains(&ns) {
                empty_namespaces.push(ns);
            }
        }
        finished_foreground = foreground
            .into_values()
            .filter(|(_, has)| !has)
            .map(|(t, _)| t)
            .collect();
    }
    // count only progress, so a deletion that keeps failing (e.g. denied by a webhook) does not
    // make the caller loop; it is retried on the next trigger
    let mut n = 0;
    for t in finished_foreground {
        // all dependents are gone: drop the foregroundDeletion finalizer (removes the owner if last)
        let Ok(old) = get(state, &t) else { continue };
        let mut o = (*old).clone();
        if let Some(Value::Array(f)) = meta_mut(&mut o).get_mut("finalizers") {
            f.retain(|x| x != FOREGROUND);
        }
        let rv = resource_version(&old).unwrap_or(0);
        match prepare_update(&t, &old, o, None, false) {
            Ok(p) => match commit_update(state, &t, p, Expect::Rv(rv), false) {
                Ok(_) => n += 1,
                Err(e) => {
                    tracing::debug!(name = t.name(), error = %e, "foreground finalizer removal retried later")
                }
            },
            Err(e) => {
                tracing::warn!(name = t.name(), error = %e, "foreground finalizer removal failed")
            }
        }
    }
    for t in victims {
        let opts = DeleteOpts {
            propagation: Some("Background".into()),
            ..Default::default()
        };
        match delete(state, &t, &opts).await {
            Ok(_) => n += 1,
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(resource = %t.info.plural, name = t.name(), error = %e, "garbage collection delete failed")
            }
        }
    }
    for ns in empty_namespaces {
        let gr = (String::new(), "namespaces".to_string());
        let mut inner = state.store.write();
        let key = (String::new(), ns.clone());
        if let Some(obj) = inner.get(&gr, &key)
            && finalizers(&obj).is_empty()
        {
            let mut o = (*obj).clone();
            o["spec"] = json!({});
            let rv = resource_version(&obj).unwrap_or(0);
            if inner.put(&gr, o, Expect::Rv(rv)).is_ok() {
                let _ = inner.remove(&gr, &key, Expect::Exists);
            }
        }
    }
    n
}
