//! The container-runtime side of CNI (spec 1.1, section "Execution of Network Configuration Lists"):
//! runs every plugin of a conflist in order for ADD (passing each result on as `prevResult`) and in
//! reverse order for DEL, exactly as containerd or CRI-O would, so the lab exercises the real
//! hybridnet plugin and the chained Debian plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// What the runtime passes to every plugin.
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. `K8S_POD_NAMESPACE`.
    pub args: Vec<(String, String)>,
    /// Directories searched for plugin binaries.
    pub cni_path: Vec<PathBuf>,
    /// Network namespace the plugins run in (the node's; the runtime of a real node runs them in
    /// the host namespace of that node).
    pub exec_netns: Option<String>,
}

/// A failed plugin call, with the CNI error object when the plugin printed one.
#[derive(Debug, thiserror::Error)]
#[error("CNI {command} of plugin {plugin:?} failed: {message}")]
pub struct CniError {
    pub command: String,
    pub plugin: String,
    /// The CNI error code, when the plugin returned an error object.
    pub code: Option<u64>,
    pub message: String,
}

/// Loads the first `*.conflist` in `dir` by name order (as libcni does).
pub fn load_conflist(dir: &Path) -> Result<(PathBuf, Value), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading CNI config dir {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    let path = files.into_iter().next().ok_or_else(|| {
        format!(
            "no .conflist in {} (has the node agent installed it?)",
            dir.display()
        )
    })?;
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if !v["plugins"].is_array() {
        return Err(format!("{}: no plugins list", path.display()));
    }
    Ok((path, v))
}

fn find_plugin(rt: &RuntimeConf, ty: &str) -> Option<PathBuf> {
    if ty.contains('/') || ty.is_empty() {
        return None;
    }
    rt.cni_path.iter().map(|d| d.join(ty)).find(|p| p.is_file())
}

fn exec(rt: &RuntimeConf, command: &str, ty: &str, config: &Value) -> Result<Value, CniError> {
    let err = |code, message: String| CniError {
        command: command.into(),
        plugin: ty.into(),
        code,
        message,
    };
    let bin = find_plugin(rt, ty).ok_or_else(|| {
        err(
            None,
            format!("plugin binary not found in {:?}", rt.cni_path),
        )
    })?;
    let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cni_path = std::env::join_paths(&rt.cni_path).map_err(|e| err(None, e.to_string()))?;
    let mut cmd = match &rt.exec_netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut child = cmd
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(None, format!("starting {}: {e}", bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.to_string().as_bytes())
            .map_err(|e| err(None, format!("writing config: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(None, format!("waiting for {}: {e}", bin.display())))?;
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = stdout["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{} {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let details = stdout["details"]
            .as_str()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return Err(err(stdout["code"].as_u64(), format!("{msg}{details}")));
    }
    Ok(stdout)
}

fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    if let Some(o) = conf.as_object_mut() {
        o.insert("name".into(), list["name"].clone());
        o.insert("cniVersion".into(), list["cniVersion"].clone());
        if let Some(p) = prev.filter(|p| !p.is_null()) {
            o.insert("prevResult".into(), p.clone());
        }
    }
    conf
}

/// ADD: every plugin in order; returns the final result. On failure the plugins that succeeded are
/// deleted again, so nothing is left behind.
pub fn add(list: &Value, rt: &RuntimeConf) -> Result<Value, CniError> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    let mut prev: Option<Value> = None;
    for (i, p) in plugins.iter().enumerate() {
        let ty = p["type"].as_str().unwrap_or("");
        match exec(rt, "ADD", ty, &plugin_config(list, p, prev.as_ref())) {
            Ok(r) => prev = Some(r),
            Err(e) => {
                let _ = del_plugins(list, &plugins[..i], rt, prev.as_ref());
                return Err(e);
            }
        }
    }
    Ok(prev.unwrap_or_else(|| json!({})))
}

fn del_plugins(
    list: &Value,
    plugins: &[Value],
    rt: &RuntimeConf,
    prev: Option<&Value>,
) -> Result<(), CniError> {
    let mut first_err = None;
    for p in plugins.iter().rev() {
        let ty = p["type"].as_str().unwrap_or("");
        if let Err(e) = exec(rt, "DEL", ty, &plugin_config(list, p, prev)) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// DEL: every plugin in reverse order, with the ADD result as `prevResult` when known.
pub fn del(list: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Result<(), CniError> {
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    del_plugins(list, &plugins, rt, prev)
}

/// CHECK: every plugin in order with the ADD result.
pub fn check(list: &Value, rt: &RuntimeConf, prev: &Value) -> Result<(), CniError> {
    for p in list["plugins"].as_array().into_iter().flatten() {
        let ty = p["type"].as_str().unwrap_or("");
        exec(rt, "CHECK", ty, &plugin_config(list, p, Some(prev)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_carries_name_version_and_prev_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "hybridnet", "plugins": [{"type": "hybridnet"}, {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let c = plugin_config(&list, &list["plugins"][1], Some(&json!({"ips": []})));
        assert_eq!(c["name"], "hybridnet");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"], json!({"ips": []}));
        assert_eq!(c["type"], "portmap");
    }

    #[test]
    fn plugin_names_cannot_escape_the_search_path() {
        let rt = RuntimeConf {
            container_id: "c".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            cni_path: vec!["/usr/lib/cni".into()],
            exec_netns: None,
        };
        assert!(find_plugin(&rt, "../../bin/sh").is_none());
        assert!(find_plugin(&rt, "").is_none());
        let e = exec(&rt, "ADD", "../sh", &json!({})).unwrap_err();
        assert!(e.message.contains("not found"), "{e}");
    }
}
