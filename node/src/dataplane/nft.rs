//! Runs `nft` in the calling thread's network namespace (a child inherits the namespace of the
//! thread that forks it).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::KernelError;
use crate::plan::nft::TABLE;

/// The `nft` binary, the table (of family inet) it replaces and what was last applied.
#[derive(Debug, Clone)]
pub struct NftRunner {
    pub binary: String,
    table: String,
    last: Option<(String, String)>,
}

impl Default for NftRunner {
    fn default() -> Self {
        Self::new("nft")
    }
}

/// `nft list table inet hybridnet`, or `None` when the table does not exist.
pub async fn nft_list_table(binary: &str) -> Result<Option<String>, KernelError> {
    list_table(binary, TABLE).await
}

/// `nft list table inet <table>`, or `None` when the table does not exist.
pub async fn list_table(binary: &str, table: &str) -> Result<Option<String>, KernelError> {
    let out = Command::new(binary)
        .args(["list", "table", "inet", table])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| KernelError::other(format!("run {binary}"), e.to_string()))?;
    if out.status.success() {
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(None)
    }
}

impl NftRunner {
    pub fn new(binary: impl Into<String>) -> Self {
        Self::for_table(binary, TABLE)
    }

    /// A runner for another table of ours (the NetworkPolicy table).
    pub fn for_table(binary: impl Into<String>, table: &str) -> Self {
        Self {
            binary: binary.into(),
            table: table.to_string(),
            last: None,
        }
    }

    /// Applies `script` unless it and the kernel's table are what the last apply left. Returns
    /// whether the kernel was changed.
    pub async fn apply(&mut self, script: &str) -> Result<bool, KernelError> {
        let current = list_table(&self.binary, &self.table).await?;
        if let (Some((s, listing)), Some(cur)) = (&self.last, &current)
            && s == script
            && listing == cur
        {
            return Ok(false);
        }
        self.run(script).await?;
        let listing = list_table(&self.binary, &self.table)
            .await?
            .unwrap_or_default();
        self.last = Some((script.to_string(), listing));
        Ok(true)
    }

    /// Runs `script` with `nft -f -` (one transaction), without comparing or recording anything.
    pub async fn run(&self, script: &str) -> Result<(), KernelError> {
        let mut child = Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| KernelError::other(format!("run {} -f -", self.binary), e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| KernelError::other("write nft script", e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| KernelError::other("wait for nft", e.to_string()))?;
        if !out.status.success() {
            return Err(KernelError::other(
                format!("nft -f - (table inet {})", self.table),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// `nft list table inet <table>` of this runner, or `None` when the table does not exist.
    pub async fn list(&self) -> Result<Option<String>, KernelError> {
        list_table(&self.binary, &self.table).await
    }
}
