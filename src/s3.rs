//! An S3-compatible object store for tests: moto's server (`python -m moto.server`, from the
//! venv scripts/setup.sh makes) on a free loopback port, with one bucket. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// A running moto S3 server.
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    /// Starts moto's server with `python` (the venv's) and creates `bucket` in it.
    pub fn start(python: &str, bucket: &str) -> Result<Self> {
        let port = tessera_workload::ports::spare_loopback_port()?;
        let child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting moto's S3 server with {python} (run scripts/setup.sh --with-broker)"))?;
        crate::record_pid("moto", child.id());
        let mut server = S3Server { child, port };
        crate::wait_listening(&mut server.child, port, "moto's server", Duration::from_secs(60))?;
        // Creating a bucket is a plain PUT on it (moto checks no signature).
        let status = Command::new(python)
            .args([
                "-c",
                "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))",
                &format!("{}/{bucket}", server.endpoint()),
            ])
            .status()
            .context("creating the bucket")?;
        if !status.success() {
            bail!("creating bucket {bucket} in moto failed: {status}");
        }
        Ok(server)
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The options an object-store client needs for this server (`[state.object_store]`).
    pub fn options(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", "tessera-test".into()),
            ("aws_secret_access_key", "tessera-test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::forget_pid("moto", pid);
    }
}
