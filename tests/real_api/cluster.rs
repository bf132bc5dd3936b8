//! A private Kubernetes control plane for one test run: etcd, kube-apiserver and
//! kube-controller-manager from `$KUBEBUILDER_ASSETS` (the envtest layout), each on free
//! loopback ports, with state in its own temporary directory, stopped by PID when dropped.
//!
//! Certificates and the service-account signing key come from `openssl`; users are static
//! tokens: `admin` (system:masters) for the test itself and `system:kube-controller-manager`
//! for the controller-manager, whose controllers use their own service accounts as in a real
//! cluster.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};

/// A running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub api_port: u16,
    /// Kubeconfig of the `admin` user (system:masters).
    pub admin_kubeconfig: PathBuf,
    pub ca: PathBuf,
    children: Vec<(&'static str, Child)>,
    _tmp: tempfile::TempDir,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token() -> String {
    provisioner::identity::new_uuid()
        .expect("random")
        .replace('-', "")
}

/// Writes a kubeconfig for `server` authenticating with bearer `token`.
pub fn write_kubeconfig(path: &Path, api_port: u16, ca: &Path, user: &str, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: \
         https://127.0.0.1:{api_port}\n    certificate-authority: {}\nusers:\n- name: {user}\n  \
         user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
         user: {user}\ncurrent-context: test\n",
        ca.display()
    );
    fs::write(path, text).expect("write kubeconfig");
}

/// kube-controller-manager: beside the other assets, else `$KUBE_CONTROLLER_MANAGER`.
/// (setup-envtest ships only etcd, kube-apiserver and kubectl; the controller-manager of the
/// same version comes from the Kubernetes server release archive.)
fn controller_manager(assets: &Path) -> PathBuf {
    let beside = assets.join("kube-controller-manager");
    if beside.exists() {
        return beside;
    }
    match std::env::var_os("KUBE_CONTROLLER_MANAGER") {
        Some(p) => p.into(),
        None => panic!(
            "no kube-controller-manager in {} and KUBE_CONTROLLER_MANAGER is not set: the suite \
             needs the real PV binder. Put the kube-controller-manager of the same Kubernetes \
             version (kubernetes-server-linux-amd64.tar.gz) beside the other binaries",
            assets.display()
        ),
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager from `assets` and waits until
    /// the API answers and the controller-manager's controllers run.
    pub async fn start(assets: &Path) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir_in(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("target/tmp"))
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).unwrap();
        let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&pki));
        ossl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]);
        ossl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]);
        fs::write(
            pki.join("apiserver.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "apiserver.ext",
        ]);
        ossl(&["genrsa", "-out", "sa.key", "2048"]);
        ossl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let (admin_token, kcm_token) = (token(), token());
        fs::write(
            pki.join("tokens.csv"),
            format!(
                "{admin_token},admin,admin-uid,\"system:masters\"\n\
                 {kcm_token},system:kube-controller-manager,kcm-uid\n"
            ),
        )
        .unwrap();

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let ca = pki.join("ca.crt");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, api_port, &ca, "admin", &admin_token);
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        write_kubeconfig(
            &kcm_kubeconfig,
            api_port,
            &ca,
            "system:kube-controller-manager",
            &kcm_token,
        );
        let mut cp = ControlPlane {
            dir: dir.clone(),
            api_port,
            admin_kubeconfig,
            ca,
            children: Vec::new(),
            _tmp: tmp,
        };
        let p = |f: &str| pki.join(f).display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.launch(
            "etcd",
            Command::new(assets.join("etcd")).args([
                "--name=default".to_string(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
            ]),
        );
        cp.launch(
            "kube-apiserver",
            Command::new(assets.join("kube-apiserver")).args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--token-auth-file={}", p("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/12".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
            ]),
        );
        let admin = cp.admin().await;
        cp.wait("the API server", Duration::from_secs(90), || {
            let admin = admin.clone();
            async move {
                Api::<ServiceAccount>::namespaced(admin, "default")
                    .list(&Default::default())
                    .await
                    .is_ok()
            }
        })
        .await;
        cp.launch(
            "kube-controller-manager",
            Command::new(controller_manager(assets)).args([
                format!("--kubeconfig={}", kcm_kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                "--controllers=*".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                "--service-cluster-ip-range=10.96.0.0/12".into(),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
            ]),
        );
        // The service-account controller's first act: controllers are running.
        cp.wait("the controller-manager", Duration::from_secs(90), || {
            let admin = admin.clone();
            async move {
                Api::<ServiceAccount>::namespaced(admin, "default")
                    .get_opt("default")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            }
        })
        .await;
        cp
    }

    fn launch(&mut self, name: &'static str, cmd: &mut Command) {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name, child));
    }

    /// Waits for `ready`, failing with the component's log if it died or took too long.
    async fn wait<F, Fut>(&mut self, what: &str, limit: Duration, ready: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if ready().await {
                eprintln!("[real-api] {what} ready after {:?}", start.elapsed());
                return;
            }
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = fs::read_to_string(self.dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                    panic!("{name} exited ({status}) while waiting for {what}:\n{tail}");
                }
            }
            assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A client as `admin`.
    pub async fn admin(&self) -> Client {
        provisioner::connect(Some(&self.admin_kubeconfig))
            .await
            .expect("admin client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: the controller-manager, the API server, then etcd.
        for (_, child) in self.children.iter_mut().rev() {
            // SAFETY: kill(2) on the PID of a child we own and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
