//! The real `nfs-server-provisioner` binary run out of cluster as the chart's pod would run:
//! the StatefulSet's own arguments and environment (read back from the API server), its
//! ServiceAccount's token, free ports instead of the standard ones, and a private export root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};

use crate::cluster::{ControlPlane, free_port, write_kubeconfig};

/// The binary under test (integration tests know it; the benchmark passes its own).
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_nfs-server-provisioner") {
    Some(b) => b,
    None => "target/release/nfs-server-provisioner",
};

/// How to start one replica of the chart's pod.
#[derive(Clone)]
pub struct PodSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub kubeconfig: PathBuf,
}

impl PodSpec {
    /// The StatefulSet `sts` of namespace `ns` as rendered by the chart, with a kubeconfig
    /// holding a fresh token of its ServiceAccount.
    pub async fn from_chart(cp: &ControlPlane, admin: &Client, ns: &str, sts: &str) -> Self {
        let set = Api::<StatefulSet>::namespaced(admin.clone(), ns)
            .get(sts)
            .await
            .expect("the chart's StatefulSet");
        let pod = set.spec.template.spec.expect("pod spec");
        let sa = pod
            .service_account_name
            .clone()
            .expect("the chart names a ServiceAccount");
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap_or_default();
        let mut env = Vec::new();
        for e in container.env.clone().unwrap_or_default() {
            if let Some(v) = e.value {
                env.push((e.name, v));
            }
        }
        env.push(("POD_NAMESPACE".into(), ns.into()));
        env.push(("POD_IP".into(), "127.0.0.1".into()));
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create_token_request(
                &sa,
                &Default::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(4 * 3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("a token of the chart's ServiceAccount")
            .status
            .expect("token status")
            .token
            .expect("a token");
        let kubeconfig = cp.dir.join(format!("{sa}.kubeconfig"));
        write_kubeconfig(
            &kubeconfig,
            cp.api_port,
            &cp.ca,
            &format!("system:serviceaccount:{ns}:{sa}"),
            &token,
        );
        PodSpec {
            args,
            env,
            kubeconfig,
        }
    }
}

/// One running replica.
pub struct Server {
    pub name: String,
    /// The address it listens on (`--bind=` among its flags, else 127.0.0.1).
    pub host: String,
    pub export_root: PathBuf,
    pub nfs_port: u16,
    pub mount_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
    bin: PathBuf,
    spec: PodSpec,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts pod `name` (`POD_NAME`) of `spec` serving `export_root`, with `extra` flags.
    pub fn start(spec: &PodSpec, name: &str, export_root: &Path, extra: &[&str]) -> Self {
        Self::start_with(Path::new(BIN), spec, name, export_root, extra)
    }

    /// [`Self::start`] with binary `bin`.
    pub fn start_with(
        bin: &Path,
        spec: &PodSpec,
        name: &str,
        export_root: &Path,
        extra: &[&str],
    ) -> Self {
        fs::create_dir_all(export_root).unwrap();
        let host = extra
            .iter()
            .find_map(|a| a.strip_prefix("--bind="))
            .unwrap_or("127.0.0.1")
            .to_owned();
        let mut s = Server {
            name: name.into(),
            host,
            export_root: export_root.into(),
            nfs_port: free_port(),
            mount_port: free_port(),
            http_port: free_port(),
            log: export_root.with_extension("log"),
            bin: bin.to_owned(),
            spec: spec.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.restart();
        s
    }

    /// Starts the process again (same ports, export root and flags), appending to its log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let (nlm, statd) = (free_port(), free_port());
        let mut args = Vec::new();
        for a in &self.spec.args {
            let flag = a.split('=').next().unwrap_or_default();
            let value = match flag {
                "--export-root" => self.export_root.display().to_string(),
                "--nfs-port" => self.nfs_port.to_string(),
                "--mount-port" => self.mount_port.to_string(),
                "--portmap-port" => "0".into(),
                "--nlm-port" => nlm.to_string(),
                "--statd-port" => statd.to_string(),
                "--http-port" => self.http_port.to_string(),
                _ => {
                    args.push(a.clone());
                    continue;
                }
            };
            args.push(format!("{flag}={value}"));
        }
        args.push(format!("--kubeconfig={}", self.spec.kubeconfig.display()));
        args.extend(self.extra.iter().cloned());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("EXPORT_ROOT", &self.export_root)
            .env("POD_NAME", &self.name)
            .env("HOSTNAME", &self.name)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start nfs-server-provisioner"));
    }

    /// Waits until `/readyz` answers 200 (every volume exported again).
    pub async fn ready(&mut self) {
        let start = Instant::now();
        loop {
            if http_get_at(&self.host, self.http_port, "/readyz")
                .await
                .is_some_and(|(c, _)| c == 200)
            {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited ({st}):\n{}", self.name, self.log_tail(40));
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} not ready:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as a node loss or OOM would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The WARN and ERROR lines of its log.
    pub fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    /// Its NFS and MOUNT ports, as libnfs URLs need them.
    pub fn ports(&self) -> (u16, u16) {
        (self.nfs_port, self.mount_port)
    }

    /// The identity in its export root.
    pub fn identity(&self) -> String {
        fs::read_to_string(self.export_root.join("nfs-provisioner.identity"))
            .expect("the identity file")
            .trim()
            .to_owned()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs a subcommand of the binary (`status`, `recover`, `volume`) on this export root.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .env("EXPORT_ROOT", &self.export_root)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("EXPORT_ROOT", &self.export_root)
            .output()
            .expect("run nfs-server-provisioner");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn kubeconfig(&self) -> String {
        self.spec.kubeconfig.display().to_string()
    }
}

/// `helm install`s the chart as `release` in `ns` with the old (1.x) chart's values.
pub fn install_chart(helm: &Path, cp: &ControlPlane, ns: &str, release: &str) {
    install_chart_with(helm, cp, ns, release, &[]);
}

/// [`install_chart`] with `--set` values on top.
pub fn install_chart_with(helm: &Path, cp: &ControlPlane, ns: &str, release: &str, sets: &[&str]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("deploy/helm/nfs-server-provisioner").is_dir())
        .expect("the repository");
    let out = Command::new(helm)
        .args(["install", release])
        .arg(repo.join("deploy/helm/nfs-server-provisioner"))
        .args(["--namespace", ns, "--create-namespace", "--values"])
        .arg(repo.join("tests/chart/old-chart-defaults.yaml"))
        .args(sets.iter().flat_map(|s| ["--set", s]))
        .arg("--kubeconfig")
        .arg(&cp.admin_kubeconfig)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET of `host:port`: (status, body).
pub async fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((code, body))
}
