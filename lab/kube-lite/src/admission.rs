//! Admission webhooks: MutatingWebhookConfigurations then ValidatingWebhookConfigurations,
//! called over HTTPS with AdmissionReview v1.

use crate::State;
use crate::error::{ApiError, ApiResult};
use crate::ops::Target;
use crate::selector::{LabelSelector, from_label_selector_object};
use crate::util::{base64_decode, meta, meta_str, new_uid};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// Resolves a webhook `clientConfig.service` to a base URL (`https://host:port`).
pub type ServiceResolver = Arc<dyn Fn(&str, &str, u16) -> Option<String> + Send + Sync>;

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn matches_any(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Does a webhook rule match this request?
pub fn rule_matches(
    rule: &Value,
    group: &str,
    version: &str,
    resource: &str,
    sub: Option<&str>,
    op: Operation,
    namespaced: bool,
) -> bool {
    let ops = strs(rule.get("operations"));
    if !matches_any(&ops, op.as_str()) {
        return false;
    }
    if !matches_any(&strs(rule.get("apiGroups")), group)
        || !matches_any(&strs(rule.get("apiVersions")), version)
    {
        return false;
    }
    let full = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    let res_ok = strs(rule.get("resources")).iter().any(|r| {
        if r == "*/*" || *r == full {
            return true;
        }
        match (r.split_once('/'), sub) {
            (None, None) => r == "*",
            (Some(("*", rs)), Some(s)) => rs == s,
            (Some((rr, "*")), Some(_)) => rr == resource,
            _ => false,
        }
    });
    if !res_ok {
        return false;
    }
    match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !namespaced,
        "Namespaced" => namespaced,
        _ => true,
    }
}

struct Call {
    name: String,
    url: String,
    /// TLS server name to verify: `<service>.<namespace>.svc` for service references, as the real
    /// API server does (the override URL may be a bare IP); None means the URL's host.
    server_name: Option<String>,
    ca: Vec<u8>,
    timeout: Duration,
    fail_closed: bool,
    mutating: bool,
}

/// Run admission for a write. Returns the (possibly mutated) object.
pub async fn admit(
    state: &State,
    t: &Target,
    op: Operation,
    obj: Option<Value>,
    old: Option<Arc<Value>>,
    dry_run: bool,
) -> ApiResult<Option<Value>> {
    if t.info.group == "admissionregistration.k8s.io" {
        return Ok(obj); // webhooks never intercept their own configuration
    }
    let (mutating, validating) = {
        let inner = state.store.read();
        let g = "admissionregistration.k8s.io".to_string();
        (
            inner.list(
                &(g.clone(), "mutatingwebhookconfigurations".into()),
                None,
                None,
            ),
            inner.list(&(g, "validatingwebhookconfigurations".into()), None, None),
        )
    };
    if mutating.is_empty() && validating.is_empty() {
        return Ok(obj);
    }
    let mut obj = obj;
    for (configs, is_mutating) in [(mutating, true), (validating, false)] {
        for cfg in configs {
            for wh in cfg
                .get("webhooks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                if !webhook_applies(state, t, op, obj.as_ref(), old.as_deref(), &wh) {
                    continue;
                }
                let user = t
                    .user
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(crate::TokenUser::admin);
                let call = match match_conditions(&user, &wh).and_then(|applies| {
                    applies
                        .then(|| call_target(state, &wh, is_mutating))
                        .transpose()
                }) {
                    Ok(None) => continue,
                    Ok(Some(c)) => c,
                    Err(e) => {
                        let name = wh.get("name").and_then(Value::as_str).unwrap_or("");
                        if wh.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
                            tracing::warn!(webhook = name, error = %e, "ignoring webhook that cannot be called");
                            continue;
                        }
                        return Err(ApiError::internal(format!(
                            "Internal error occurred: failed calling webhook \"{name}\": {e}"
                        )));
                    }
                };
                let review = review_request(t, op, obj.as_ref(), old.as_deref(), dry_run);
                let uid = review["request"]["uid"].as_str().unwrap_or("").to_string();
                match send(&call, &review)
                    .await
                    .and_then(|resp| check_response(&resp, &uid))
                {
                    Ok(response) => {
                        if response.get("allowed").and_then(Value::as_bool) != Some(true) {
                            return Err(denied(&call.name, response.get("status")));
                        }
                        if call.mutating
                            && let Some(p) = response.get("patch").and_then(Value::as_str)
                            && let Some(o) = obj.as_mut()
                        {
                            apply_patch(&call.name, o, p, response.get("patchType"))?;
                        }
                    }
                    Err(e) if call.fail_closed => {
                        return Err(ApiError::internal(format!(
                            "Internal error occurred: failed calling webhook \"{}\": failed to call webhook: {e}",
                            call.name
                        )));
                    }
                    Err(e) => {
                        tracing::warn!(webhook = call.name, error = %e, "webhook failed; failurePolicy Ignore")
                    }
                }
            }
        }
    }
    Ok(obj)
}

fn apply_patch(name: &str, obj: &mut Value, p: &str, ptype: Option<&Value>) -> ApiResult<()> {
    if ptype.and_then(Value::as_str).unwrap_or("JSONPatch") != "JSONPatch" {
        return Err(ApiError::internal(format!(
            "Internal error occurred: webhook \"{name}\" returned an unsupported patchType"
        )));
    }
    let raw = base64_decode(p).ok_or_else(|| {
        ApiError::internal(format!(
            "Internal error occurred: webhook \"{name}\" returned a patch that is not base64"
        ))
    })?;
    let patch: json_patch::Patch = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::internal(format!(
            "Internal error occurred: webhook \"{name}\" returned an invalid JSON patch: {e}"
        ))
    })?;
    json_patch::patch(obj, &patch).map_err(|e| {
        ApiError::internal(format!(
            "Internal error occurred: webhook \"{name}\" returned a patch that does not apply: {e}"
        ))
    })
}

fn denied(name: &str, status: Option<&Value>) -> ApiError {
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u16;
    let code = if code < 400 { 400 } else { code };
    let msg = status
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let reason_in = status
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let deny = format!("admission webhook \"{name}\" denied the request");
    let message = if !msg.is_empty() {
        format!("{deny}: {msg}")
    } else if !reason_in.is_empty() {
        format!("{deny}: {reason_in}")
    } else {
        format!("{deny} without explanation")
    };
    let reason = if reason_in.is_empty() { "" } else { reason_in };
    ApiError::new(code, reason.to_string(), message)
}

fn webhook_applies(
    state: &State,
    t: &Target,
    op: Operation,
    obj: Option<&Value>,
    old: Option<&Value>,
    wh: &Value,
) -> bool {
    let rules = wh
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let group = t.info.group.as_str();
    if !rules.iter().any(|r| {
        rule_matches(
            r,
            group,
            &t.version,
            &t.info.plural,
            t.sub.as_deref(),
            op,
            t.info.namespaced,
        )
    }) {
        return false;
    }
    // a selector that does not parse matches nothing
    let Ok(object_selector) = webhook_selector(wh, "objectSelector") else {
        return false;
    };
    if let Some(sel) = object_selector
        && !(obj.is_some_and(|o| sel.matches(o)) || old.is_some_and(|o| sel.matches(o)))
    {
        return false;
    }
    let Ok(namespace_selector) = webhook_selector(wh, "namespaceSelector") else {
        return false;
    };
    if let Some(sel) = namespace_selector {
        let is_namespace = group.is_empty() && t.info.plural == "namespaces";
        if is_namespace {
            return obj.or(old).is_some_and(|o| sel.matches(o));
        }
        if t.info.namespaced {
            let ns = t.ns.clone().unwrap_or_default();
            let nsobj = state
                .store
                .read()
                .get(&(String::new(), "namespaces".into()), &(String::new(), ns));
            // a namespace that does not exist has no labels
            let empty = json!({});
            return sel.matches(nsobj.as_deref().unwrap_or(&empty));
        }
    }
    true
}

/// Whether every `matchConditions` entry of the webhook holds for `user`. Real API servers evaluate
/// CEL; kube-lite evaluates only `request.userInfo.username == '<name>'` and `!=` (what hybridnet
/// renders) and reports any other expression as an error, which the failurePolicy then decides.
pub fn match_conditions(user: &crate::TokenUser, wh: &Value) -> Result<bool, String> {
    let Some(conds) = wh.get("matchConditions").and_then(Value::as_array) else {
        return Ok(true);
    };
    for c in conds {
        let expr = c
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        let unsupported = || format!("kube-lite cannot evaluate the matchCondition {expr:?}");
        let rest = expr
            .strip_prefix("request.userInfo.username")
            .ok_or_else(unsupported)?
            .trim_start();
        let (equal, lit) = if let Some(r) = rest.strip_prefix("==") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (false, r)
        } else {
            return Err(unsupported());
        };
        let lit = lit
            .trim()
            .strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .filter(|l| !l.contains(['\'', '\\']))
            .ok_or_else(unsupported)?;
        if (user.username == lit) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A webhook's `objectSelector` or `namespaceSelector`; absent or empty selects everything.
fn webhook_selector(wh: &Value, field: &str) -> Result<Option<LabelSelector>, String> {
    wh.get(field)
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .map(from_label_selector_object)
        .transpose()
}

fn call_target(state: &State, wh: &Value, mutating: bool) -> Result<Call, String> {
    let name = wh
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let versions = strs(wh.get("admissionReviewVersions"));
    if !versions.iter().any(|v| v == "v1") {
        return Err(format!(
            "webhook does not accept AdmissionReview v1 (admissionReviewVersions: {versions:?})"
        ));
    }
    let cc = wh.get("clientConfig").cloned().unwrap_or(json!({}));
    let mut server_name = None;
    let url = if let Some(u) = cc.get("url").and_then(Value::as_str) {
        u.to_string()
    } else if let Some(svc) = cc.get("service") {
        let ns = svc.get("namespace").and_then(Value::as_str).unwrap_or("");
        let sname = svc.get("name").and_then(Value::as_str).unwrap_or("");
        let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
        let path = svc.get("path").and_then(Value::as_str).unwrap_or("");
        let base = state
            .config
            .service_overrides
            .get(&format!("{ns}/{sname}"))
            .cloned()
            .or_else(|| state.config.service_resolver.as_ref().and_then(|r| r(ns, sname, port)))
            .ok_or_else(|| format!("service \"{ns}/{sname}\" cannot be resolved (no cluster DNS; set Config::service_overrides)"))?;
        server_name = Some(format!("{sname}.{ns}.svc"));
        format!("{}{}", base.trim_end_matches('/'), path)
    } else {
        return Err("clientConfig has neither url nor service".into());
    };
    let ca = match cc.get("caBundle").and_then(Value::as_str) {
        Some(b) if !b.is_empty() => base64_decode(b).ok_or("caBundle is not valid base64")?,
        _ => Vec::new(),
    };
    let timeout = Duration::from_secs(
        wh.get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30),
    );
    let fail_closed = wh.get("failurePolicy").and_then(Value::as_str) != Some("Ignore");
    Ok(Call {
        name,
        url,
        server_name,
        ca,
        timeout,
        fail_closed,
        mutating,
    })
}

fn review_request(
    t: &Target,
    op: Operation,
    obj: Option<&Value>,
    old: Option<&Value>,
    dry_run: bool,
) -> Value {
    let name = obj
        .map(|o| meta_str(o, "name"))
        .filter(|n| !n.is_empty())
        .or(t.name.as_deref())
        .unwrap_or("");
    let gvk = json!({"group": t.info.group, "version": t.version, "kind": t.info.kind});
    let gvr = json!({"group": t.info.group, "version": t.version, "resource": t.info.plural});
    let mut req = json!({
        "uid": new_uid(),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "operation": op.as_str(),
        "userInfo": t.user.as_deref().cloned().unwrap_or_else(crate::TokenUser::admin).user_info(),
        "object": obj.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": dry_run,
    });
    if let Some(ns) = &t.ns {
        req["namespace"] = json!(ns);
    }
    if let Some(s) = &t.sub {
        req["subResource"] = json!(s);
    }
    let _ = meta; // metadata helpers used by callers
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

fn check_response(resp: &Value, uid: &str) -> Result<Value, String> {
    if resp.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err("expected response kind AdmissionReview".into());
    }
    let r = resp.get("response").ok_or("webhook response was absent")?;
    if r.get("uid").and_then(Value::as_str) != Some(uid) {
        return Err(format!(
            "expected response.uid=\"{uid}\", got \"{}\"",
            r.get("uid").and_then(Value::as_str).unwrap_or("")
        ));
    }
    Ok(r.clone())
}

/// POST the review to the webhook and parse the JSON answer.
async fn send(call: &Call, review: &Value) -> Result<Value, String> {
    let fut = post_json_as(&call.url, call.server_name.as_deref(), &call.ca, review);
    match tokio::time::timeout(call.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "context deadline exceeded (timeout {}s)",
            call.timeout.as_secs()
        )),
    }
}

/// Minimal HTTP/1.1 client over TCP or TLS (trusting only `ca_pem`).
pub async fn post_json(url: &str, ca_pem: &[u8], body: &Value) -> Result<Value, String> {
    post_json_as(url, None, ca_pem, body).await
}

/// Like [`post_json`], verifying the server's certificate for `server_name` when given.
pub async fn post_json_as(
    url: &str,
    server_name: Option<&str>,
    ca_pem: &[u8],
    body: &Value,
) -> Result<Value, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid webhook URL {url}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("webhook URL {url} must use https")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("webhook URL {url} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let req = hyper::Request::post(path)
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let config = crate::tls::client_config(ca_pem)?;
        let name = server_name
            .map(str::to_string)
            .unwrap_or_else(|| host.clone());
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("bad server name {name}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        roundtrip(TokioIo::new(tls), req).await?
    } else {
        roundtrip(TokioIo::new(tcp), req).await?
    };
    serde_json::from_slice(&resp)
        .map_err(|e| format!("the webhook response is not valid JSON: {e}"))
}

async fn roundtrip<T>(io: T, req: hyper::Request<Full<Bytes>>) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "webhook returned HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_conditions_on_the_username() {
        let admin = crate::TokenUser::admin();
        let agent = crate::TokenUser {
            username: "system:serviceaccount:ns:agent".into(),
            ..Default::default()
        };
        let wh = |e: &str| json!({"matchConditions": [{"name": "c", "expression": e}]});
        let is_agent = wh("request.userInfo.username == 'system:serviceaccount:ns:agent'");
        assert_eq!(match_conditions(&agent, &is_agent), Ok(true));
        assert_eq!(match_conditions(&admin, &is_agent), Ok(false));
        let not_agent = wh("request.userInfo.username != 'system:serviceaccount:ns:agent'");
        assert_eq!(match_conditions(&agent, &not_agent), Ok(false));
        assert_eq!(match_conditions(&admin, &not_agent), Ok(true));
        assert_eq!(match_conditions(&admin, &json!({})), Ok(true));
        for unsupported in [
            "request.userInfo.groups.exists(g, g == 'x')",
            "request.userInfo.username == \"x\"",
            "request.userInfo.username == 'a\\'b'",
            "request.userInfo.username",
            "",
        ] {
            assert!(
                match_conditions(&admin, &wh(unsupported)).is_err(),
                "{unsupported}"
            );
        }
    }

    #[test]
    fn rules() {
        let r = json!({"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]});
        assert!(rule_matches(
            &r,
            "",
            "v1",
            "pods",
            None,
            Operation::Create,
            true
        ));
        assert!(!rule_matches(
            &r,
            "",
            "v1",
            "pods",
            None,
            Operation::Delete,
            true
        ));
        assert!(!rule_matches(
            &r,
            "",
            "v1",
            "pods",
            Some("status"),
            Operation::Update,
            true
        ));
        assert!(!rule_matches(
            &r,
            "apps",
            "v1",
            "pods",
            None,
            Operation::Create,
            true
        ));
        let r = json!({"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/status"], "operations": ["*"], "scope": "Cluster"});
        assert!(rule_matches(
            &r,
            "x.io",
            "v2",
            "nodes",
            Some("status"),
            Operation::Update,
            false
        ));
        assert!(!rule_matches(
            &r,
            "x.io",
            "v2",
            "nodes",
            None,
            Operation::Update,
            false
        ));
        assert!(!rule_matches(
            &r,
            "",
            "v1",
            "pods",
            Some("status"),
            Operation::Update,
            true
        ));
        let r = json!({"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"]});
        assert!(rule_matches(
            &r,
            "a",
            "v1",
            "things",
            None,
            Operation::Delete,
            true
        ));
        assert!(!rule_matches(
            &r,
            "a",
            "v1",
            "things",
            Some("status"),
            Operation::Update,
            true
        ));
    }

    #[test]
    fn denial_messages() {
        let e = denied(
            "deny.example.com",
            Some(&json!({"message": "no", "code": 403})),
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: no"
        );
        let e = denied("w", None);
        assert_eq!(e.code, 400);
        assert!(e.message.ends_with("without explanation"));
    }

    #[test]
    fn responses_are_checked() {
        assert!(
            check_response(
                &json!({"kind": "AdmissionReview", "response": {"uid": "a", "allowed": true}}),
                "a"
            )
            .is_ok()
        );
        assert!(
            check_response(
                &json!({"kind": "AdmissionReview", "response": {"uid": "b"}}),
                "a"
            )
            .is_err()
        );
        assert!(check_response(&json!({"kind": "Other"}), "a").is_err());
        let mut o = json!({"metadata": {}});
        let p = crate::util::base64_encode(
            br#"[{"op":"add","path":"/metadata/labels","value":{"m":"1"}}]"#,
        );
        apply_patch("w", &mut o, &p, None).unwrap();
        assert_eq!(o["metadata"]["labels"]["m"], "1");
        assert!(apply_patch("w", &mut o, "!!", None).is_err());
    }
}
