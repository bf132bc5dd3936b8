//! The Helm chart (deploy/helm/nfs-server-provisioner), rendered by real helm 3 and helm 4:
//! lint, the objects rendered for the default values, for the walk-through's values.yaml, for
//! the 1.x chart's own defaults and for a values file that sets every key, and the plain
//! manifests in deploy/kubernetes kept equal to the chart's output.
//!
//! helm comes from `scripts/fetch-helm.sh` (or `$HELM3`/`$HELM4`); CI sets `$REQUIRE_HELM`
//! so a missing helm fails instead of skipping.

mod manifests;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use manifests::{Manifests, fixture, helms, run_helm, template};

const CAPABILITIES: [&str; 9] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
];

fn container(sts: &StatefulSet) -> Container {
    let pod = sts.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

fn args(sts: &StatefulSet) -> Vec<String> {
    container(sts).args.unwrap()
}

fn service_ports(svc: &Service) -> Vec<(String, i32, String, Option<i32>)> {
    svc.spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.port,
                p.protocol.clone().unwrap(),
                p.node_port,
            )
        })
        .collect()
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn lint_strict_passes_with_default_and_user_values() {
    for (major, helm) in helms() {
        let mut runs = vec![vec![]];
        for f in [
            "article-values.yaml",
            "old-chart-defaults.yaml",
            "everything-values.yaml",
            "monitoring-values.yaml",
        ] {
            runs.push(vec![fixture(f)]);
        }
        for values in runs {
            let mut a = vec!["lint", "--strict", manifests::CHART];
            for v in &values {
                a.extend(["-f", v.as_str()]);
            }
            let out = run_helm(&helm, &a);
            assert!(out.contains("0 chart(s) failed"), "helm {major}: {out}");
        }
    }
}

#[test]
fn default_values_render_a_server_with_persistent_export_and_minimal_capabilities() {
    for (major, helm) in helms() {
        let m = Manifests::parse(&template(&helm, "nfs-server-provisioner", "storage", &[]));
        let name = "nfs-server-provisioner".to_string();
        assert_eq!(
            m.objects(),
            vec![
                ("ClusterRole".into(), name.clone()),
                ("ClusterRoleBinding".into(), name.clone()),
                ("PriorityClass".into(), name.clone()),
                ("Role".into(), name.clone()),
                ("RoleBinding".into(), name.clone()),
                ("Service".into(), name.clone()),
                ("ServiceAccount".into(), name.clone()),
                ("StatefulSet".into(), name.clone()),
                ("StorageClass".into(), "nfs".into()),
            ],
            "helm {major}"
        );

        let sc: StorageClass = m.one("StorageClass");
        assert_eq!(sc.provisioner, "cluster.local/nfs-server-provisioner");
        assert_eq!(sc.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            sc.mount_options.unwrap(),
            owned(&["vers=3", "proto=tcp", "noresvport"])
        );
        assert_eq!(
            sc.allow_volume_expansion,
            Some(true),
            "sizes are enforced and grow online"
        );
        assert!(
            !sc.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("storageclass.kubernetes.io/is-default-class")
        );

        let svc: Service = m.one("Service");
        assert_eq!(svc.metadata.namespace.as_deref(), Some("storage"));
        assert_eq!(
            service_ports(&svc),
            vec![
                ("nfs".into(), 2049, "TCP".into(), None),
                ("mountd".into(), 20048, "TCP".into(), None),
                ("rpcbind".into(), 111, "TCP".into(), None),
                ("nlockmgr".into(), 32803, "TCP".into(), None),
                ("nlockmgr-udp".into(), 32803, "UDP".into(), None),
                ("statd".into(), 662, "TCP".into(), None),
                ("statd-udp".into(), 662, "UDP".into(), None),
                ("http".into(), 8080, "TCP".into(), None),
            ]
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let selector = spec.selector.unwrap();

        let sts: StatefulSet = m.one("StatefulSet");
        let sspec = sts.spec.clone();
        assert_eq!(sspec.replicas, Some(1));
        assert_eq!(
            sspec.service_name.as_deref(),
            Some("nfs-server-provisioner")
        );
        // The 1.x selector, which an upgrade in place cannot change.
        let match_labels = sspec.selector.match_labels.unwrap();
        assert_eq!(match_labels, selector);
        assert_eq!(
            match_labels.keys().cloned().collect::<Vec<_>>(),
            owned(&["app", "release"])
        );
        let vct = sspec.volume_claim_templates.unwrap();
        assert_eq!(vct.len(), 1);
        assert_eq!(vct[0].metadata.name.as_deref(), Some("data"));
        let vspec = vct[0].spec.clone().unwrap();
        assert_eq!(vspec.access_modes.unwrap(), owned(&["ReadWriteOnce"]));
        assert_eq!(vspec.storage_class_name, None);
        assert_eq!(
            vspec.resources.unwrap().requests.unwrap()["storage"].0,
            "1Gi"
        );
        let pod = sspec.template.spec.clone().unwrap();
        assert!(pod.volumes.is_none(), "no emptyDir by default");
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("nfs-server-provisioner")
        );
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("nfs-server-provisioner")
        );

        let c = container(&sts);
        assert_eq!(c.image.as_deref(), Some("nfs-server-provisioner:0.1.0"));
        let a = c.args.clone().unwrap();
        assert_eq!(a[0], "serve");
        assert!(a.contains(&"--export-root=/export".into()));
        assert!(a.contains(&"--nlm-port=32803".into()));
        assert!(a.contains(&"--statd-port=662".into()));
        assert!(a.contains(&format!("--provisioner={}", sc.provisioner)));
        assert!(!a.iter().any(|x| x.contains("allow-ephemeral")));
        let ports: Vec<_> = c
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.container_port, p.protocol.unwrap()))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("nfs".into(), 2049, "TCP".into()),
                ("mountd".into(), 20048, "TCP".into()),
                ("rpcbind".into(), 111, "TCP".into()),
                ("nlockmgr".into(), 32803, "TCP".into()),
                ("nlockmgr-udp".into(), 32803, "UDP".into()),
                ("statd".into(), 662, "TCP".into()),
                ("statd-udp".into(), 662, "UDP".into()),
                ("http".into(), 8080, "TCP".into()),
            ]
        );
        let env: Vec<_> = c.env.unwrap().into_iter().map(|e| e.name).collect();
        for var in [
            "POD_IP",
            "POD_NAME",
            "POD_NAMESPACE",
            "NODE_NAME",
            "SERVICE_NAME",
        ] {
            assert!(env.contains(&var.into()), "{var} missing");
        }
        let mounts = c.volume_mounts.unwrap();
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
            ("data", "/export")
        );
        let ready = c.readiness_probe.unwrap().http_get.unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let live = c.liveness_probe.unwrap().http_get.unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));

        let sc_ctx = c.security_context.unwrap();
        assert_ne!(sc_ctx.privileged, Some(true));
        assert_eq!(sc_ctx.allow_privilege_escalation, Some(false));
        assert_eq!(sc_ctx.read_only_root_filesystem, Some(true));
        assert_eq!(sc_ctx.run_as_user, Some(0));
        let caps = sc_ctx.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), owned(&["ALL"]));
        assert_eq!(caps.add.unwrap(), owned(&CAPABILITIES));

        let pc: PriorityClass = m.one("PriorityClass");
        assert_eq!(pc.value, Some(5));
    }
}

#[test]
fn the_walk_through_values_yaml_renders_as_it_did_with_the_old_chart() {
    for (major, helm) in helms() {
        let m = Manifests::parse(&template(
            &helm,
            "nfs",
            "default",
            &[&fixture("article-values.yaml")],
        ));
        let sc: StorageClass = m.one("StorageClass");
        assert_eq!(sc.metadata.name.as_deref(), Some("nfs"), "helm {major}");
        // Release "nfs" does not contain the chart name: fullname is "nfs-<chart>".
        assert_eq!(sc.provisioner, "cluster.local/nfs-nfs-server-provisioner");
        let sts: StatefulSet = m.one("StatefulSet");
        assert_eq!(
            sts.metadata.name.as_deref(),
            Some("nfs-nfs-server-provisioner")
        );
        let vct = &sts.spec.clone().volume_claim_templates.unwrap()[0];
        let vspec = vct.spec.clone().unwrap();
        assert_eq!(vspec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            vspec.resources.unwrap().requests.unwrap()["storage"].0,
            "1Gi"
        );
        assert!(
            args(&sts).contains(&"--provisioner=cluster.local/nfs-nfs-server-provisioner".into())
        );
        let svc: Service = m.one("Service");
        assert_eq!(
            svc.metadata.name.as_deref(),
            Some("nfs-nfs-server-provisioner")
        );
    }
}

#[test]
fn the_old_charts_defaults_install_with_our_image_and_an_emptydir() {
    for (major, helm) in helms() {
        let m = Manifests::parse(&template(
            &helm,
            "nfs",
            "default",
            &[&fixture("old-chart-defaults.yaml")],
        ));
        assert!(m.find("PriorityClass").is_empty(), "helm {major}");
        let sts: StatefulSet = m.one("StatefulSet");
        let spec = sts.spec.clone();
        assert!(spec.volume_claim_templates.is_none());
        let vols = spec.template.spec.clone().unwrap().volumes.unwrap();
        assert_eq!(vols[0].name, "data");
        assert!(vols[0].empty_dir.is_some());
        // The server refuses an emptyDir unless told: the chart tells it, and warns.
        assert!(args(&sts).contains(&"--allow-ephemeral-export-root".into()));
        // The old Ganesha image cannot run our arguments: ours is used instead.
        assert_eq!(
            container(&sts).image.as_deref(),
            Some("nfs-server-provisioner:0.1.0")
        );
        let sc: StorageClass = m.one("StorageClass");
        assert_eq!(
            sc.mount_options.unwrap(),
            owned(&["vers=3", "retrans=2", "timeo=30"])
        );
        assert_eq!(sc.allow_volume_expansion, Some(true));
        // nlockmgr and statd are opened over TCP and UDP; rquotad is accepted but not opened.
        let svc: Service = m.one("Service");
        let names: Vec<_> = service_ports(&svc).into_iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            owned(&[
                "nfs",
                "mountd",
                "rpcbind",
                "nlockmgr",
                "nlockmgr-udp",
                "statd",
                "statd-udp",
                "http"
            ])
        );
    }
}

#[test]
fn notes_warn_in_capitals_when_persistence_is_off() {
    // helm 3 cannot render NOTES without a cluster; helm 4's client-side dry run can.
    let Some(helm) = manifests::helm(4) else {
        return;
    };
    let install = |values: &[&str]| {
        let mut a = vec![
            "install",
            "nfs",
            manifests::CHART,
            "--dry-run=client",
            "--namespace",
            "default",
        ];
        for v in values {
            a.extend(["-f", v]);
        }
        run_helm(&helm, &a)
    };
    let old = install(&[&fixture("old-chart-defaults.yaml")]);
    let notes = &old[old.find("NOTES:").expect("no NOTES")..];
    assert!(
        notes.contains("PERSISTENCE IS DISABLED")
            && notes.contains("EVERY VOLUME AND ALL ITS DATA IS LOST"),
        "{notes}"
    );
    assert!(notes.contains("names the old NFS-Ganesha"), "{notes}");
    let ours = install(&[&fixture("article-values.yaml")]);
    let notes = &ours[ours.find("NOTES:").expect("no NOTES")..];
    assert!(!notes.contains("PERSISTENCE IS DISABLED"), "{notes}");
    assert!(notes.contains("StorageClass \"nfs\""), "{notes}");
}

#[test]
fn every_old_values_key_is_honoured() {
    for (major, helm) in helms() {
        let m = Manifests::parse(&template(
            &helm,
            "rel",
            "storage",
            &[&fixture("everything-values.yaml")],
        ));
        // rbac.create=false: no RBAC objects and no service account of ours.
        assert_eq!(
            m.objects(),
            vec![
                ("PriorityClass".into(), "storage-critical".into()),
                ("Service".into(), "shared-nfs".into()),
                ("StatefulSet".into(), "shared-nfs".into()),
                ("StorageClass".into(), "shared".into()),
            ],
            "helm {major}"
        );
        let sc: StorageClass = m.one("StorageClass");
        assert_eq!(sc.provisioner, "example.com/nfs");
        assert_eq!(sc.reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(sc.allow_volume_expansion, Some(true));
        let ann = sc.metadata.annotations.unwrap();
        assert_eq!(ann["team"], "storage");
        assert_eq!(ann["storageclass.kubernetes.io/is-default-class"], "true");
        let params = sc.parameters.unwrap();
        assert_eq!(
            (params["gid"].as_str(), params["rootSquash"].as_str()),
            ("1000", "true")
        );
        assert_eq!(
            sc.mount_options.unwrap(),
            owned(&["vers=3", "proto=tcp", "nolock", "hard"])
        );

        let svc: Service = m.one("Service");
        assert_eq!(
            service_ports(&svc),
            vec![
                ("nfs".into(), 2049, "TCP".into(), Some(32049)),
                ("mountd".into(), 20048, "TCP".into(), Some(32048)),
                ("rpcbind".into(), 111, "TCP".into(), Some(32111)),
                ("nlockmgr".into(), 32803, "TCP".into(), Some(32803)),
                ("nlockmgr-udp".into(), 32803, "UDP".into(), Some(32803)),
                ("statd".into(), 662, "TCP".into(), Some(32662)),
                ("statd-udp".into(), 662, "UDP".into(), Some(32662)),
                ("http".into(), 8080, "TCP".into(), None),
            ]
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.50"));
        assert_eq!(spec.external_ips.unwrap(), owned(&["192.0.2.10"]));

        let sts: StatefulSet = m.one("StatefulSet");
        let sspec = sts.spec.clone();
        assert_eq!(sspec.replicas, Some(2));
        assert_eq!(sspec.selector.match_labels.unwrap()["app"], "nfs");
        assert!(sspec.volume_claim_templates.is_none());
        let pod = sspec.template.spec.clone().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("nfs-sa"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.priority_class_name.as_deref(), Some("storage-critical"));
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("storage"));
        assert!(pod.affinity.unwrap().node_affinity.is_some());
        assert_eq!(pod.security_context.unwrap().fs_group, Some(2000));
        let vols = pod.volumes.unwrap();
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "rel-export"
        );

        let c = container(&sts);
        assert_eq!(
            c.image.as_deref(),
            Some(
                "registry.example/storage/nfs-server-provisioner@sha256:\
                 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            )
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let a = c.args.clone().unwrap();
        for flag in [
            "--provisioner=example.com/nfs",
            "--grace-period=0",
            "--device-based-fsids=false",
            "--max-exports=50",
        ] {
            assert!(a.contains(&flag.into()), "{flag} missing from {a:?}");
        }
        let res = c.resources.unwrap();
        assert_eq!(res.limits.unwrap()["memory"].0, "256Mi");
        // The user's extra capability joins ours; ours are never lost.
        let mut want = owned(&CAPABILITIES);
        want.push("SYS_RESOURCE".into());
        assert_eq!(
            c.security_context
                .unwrap()
                .capabilities
                .unwrap()
                .add
                .unwrap(),
            want
        );
        let pc: PriorityClass = m.one("PriorityClass");
        assert_eq!(pc.value, Some(1000));
    }
}

#[test]
fn helm_3_and_helm_4_render_the_same_objects() {
    let all = helms();
    if all.len() < 2 {
        return;
    }
    for values in [
        vec![],
        vec![fixture("article-values.yaml")],
        vec![fixture("old-chart-defaults.yaml")],
        vec![fixture("everything-values.yaml")],
        vec![fixture("monitoring-values.yaml")],
    ] {
        let v: Vec<&str> = values.iter().map(String::as_str).collect();
        let three = Manifests::parse(&template(&all[0].1, "nfs", "default", &v));
        let four = Manifests::parse(&template(&all[1].1, "nfs", "default", &v));
        assert_eq!(three, four, "values {values:?}");
    }
}

/// The chart rendered with its default values and with each values file of tests/chart/
/// (release "nfs", namespace "default") is, byte for byte, what tests/chart/golden/ recorded
/// before shards existed: with one replica nothing an installed release runs may change, so
/// `helm upgrade` from that chart is a no-op. helm 3 (3.17) and helm 4 (4.1) print the same
/// bytes for this chart, so there is one golden file per values file and nothing is
/// normalised. A change to these renders is deliberate: regenerate the file with
/// `helm template nfs deploy/helm/nfs-server-provisioner --namespace default [-f FIXTURE]`
/// and say why in the commit.
#[test]
fn default_and_fixture_renders_equal_the_golden_files() {
    let dir = format!("{}/tests/chart", env!("CARGO_MANIFEST_DIR"));
    let mut cases = vec![("default".to_owned(), None)];
    let mut fixtures: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 4, "{fixtures:?}");
    for f in fixtures {
        cases.push((f.trim_end_matches(".yaml").to_owned(), Some(fixture(&f))));
    }
    for (major, helm) in helms() {
        for (name, values) in &cases {
            let golden_path = format!("{dir}/golden/{name}.yaml");
            let golden = std::fs::read_to_string(&golden_path)
                .unwrap_or_else(|e| panic!("{golden_path}: {e} (every fixture needs a golden)"));
            let v: Vec<&str> = values.iter().map(String::as_str).collect();
            let rendered = template(&helm, "nfs", "default", &v);
            if rendered != golden {
                let line = rendered
                    .lines()
                    .zip(golden.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| rendered.lines().count().min(golden.lines().count()));
                panic!(
                    "helm {major}, {name}: the render differs from {golden_path} at line {}:\n\
                     rendered: {:?}\n  golden: {:?}",
                    line + 1,
                    rendered.lines().nth(line),
                    golden.lines().nth(line)
                );
            }
        }
    }
}

#[test]
fn plain_manifests_equal_the_chart_rendered_with_default_values() {
    let Some(helm) = manifests::helm(4) else {
        return;
    };
    let rendered = template(
        &helm,
        manifests::PLAIN_RELEASE,
        manifests::PLAIN_NAMESPACE,
        &[],
    );
    let plain = std::fs::read_to_string(manifests::PLAIN).unwrap();
    let body = plain
        .split_once("\n---\n")
        .map(|(_header, rest)| format!("---\n{rest}"))
        .unwrap_or_default();
    assert!(
        body == rendered,
        "deploy/kubernetes/nfs-server-provisioner.yaml is out of date: run scripts/render-manifests.sh"
    );
}

/// The flags the chart renders (with every old flag from extraArgs) are accepted by the
/// binary, which then serves and answers its readiness probe.
#[test]
fn the_binary_runs_with_the_arguments_the_chart_renders() {
    let Some((_, helm)) = helms().pop() else {
        return;
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: serve needs root");
        return;
    }
    let m = Manifests::parse(&template(
        &helm,
        "rel",
        "storage",
        &[&fixture("everything-values.yaml")],
    ));
    let sts: StatefulSet = m.one("StatefulSet");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let http = free();
    // Later flags override the chart's: free ports, a private export root, no cluster.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nfs-server-provisioner"));
    cmd.args(args(&sts))
        .arg(format!("--export-root={}", dir.path().display()))
        .args(["--bind=127.0.0.1", "--portmap-port=0", "--no-controller"])
        .args(["--nlm-port=0", "--statd-port=0"])
        .arg(format!("--nfs-port={}", free()))
        .arg(format!("--mount-port={}", free()))
        .arg(format!("--http-port={http}"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in stderr.lines() {
        let line = line.unwrap();
        let serving = line.contains("serving NFSv3");
        log.push(line);
        if serving || Instant::now() > deadline {
            break;
        }
    }
    let readyz = || {
        std::net::TcpStream::connect(("127.0.0.1", http)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        })
    };
    // Ready is set just after the listeners are up: poll briefly.
    let mut ready = readyz();
    while !ready.as_ref().is_ok_and(|r| r.starts_with("HTTP/1.1 200")) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        ready = readyz();
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("serving NFSv3"), "{log}");
    assert!(log.contains("--device-based-fsids ignored"), "{log}");
    assert!(ready.unwrap().starts_with("HTTP/1.1 200"));
}

/// docs/configuration.md names every flag of every subcommand and every key of values.yaml.
#[test]
fn every_flag_and_chart_value_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_nfs-server-provisioner");
    let mut missing = Vec::new();
    for sub in [
        &["serve"][..],
        &["status"],
        &["recover"],
        &["volume", "add"],
        &["volume", "remove"],
        &["volume", "list"],
    ] {
        let out = Command::new(bin).args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if word.starts_with("--")
                && word.len() > 2
                && word != "--help"
                && !doc.contains(&format!("`{word}"))
            {
                missing.push(format!("{sub:?} {word}"));
            }
        }
    }
    let values: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{}/values.yaml", manifests::CHART)).unwrap(),
    )
    .unwrap();
    // Values whose content is free-form Kubernetes objects are documented as a whole.
    let opaque = [
        "extraArgs",
        "resources",
        "securityContext",
        "podSecurityContext",
        "nodeSelector",
        "affinity",
        "podAnnotations",
        "readinessProbe",
        "livenessProbe",
    ];
    for (key, value) in values.as_object().unwrap() {
        let mut keys = vec![key.clone()];
        if let Some(map) = value
            .as_object()
            .filter(|_| !opaque.contains(&key.as_str()))
        {
            keys = map.keys().map(|k| format!("{key}.{k}")).collect();
        }
        for k in keys {
            if !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("`{k},")) {
                missing.push(format!("value {k}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn a_service_monitor_scrapes_the_http_port_when_enabled() {
    for (major, helm) in helms() {
        let off = Manifests::parse(&template(&helm, "nfs", "default", &[]));
        assert!(off.find("ServiceMonitor").is_empty(), "helm {major}");
        let values = std::env::temp_dir().join(format!("sm-values-{major}.yaml"));
        std::fs::write(
            &values,
            "metrics:\n  serviceMonitor:\n    enabled: true\n    labels: {release: prom}\n",
        )
        .unwrap();
        let on = Manifests::parse(&template(
            &helm,
            "nfs",
            "default",
            &[values.to_str().unwrap()],
        ));
        let sm = on.find("ServiceMonitor")[0].clone();
        assert_eq!(sm["metadata"]["labels"]["release"], "prom");
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
        let svc: Service = on.one("Service");
        let selector = svc.spec.unwrap().selector.unwrap();
        for (k, v) in selector {
            assert_eq!(sm["spec"]["selector"]["matchLabels"][&k], v.as_str());
        }
    }
}

#[test]
fn a_network_policy_admits_nfs_only_from_the_given_ranges_when_enabled() {
    for (major, helm) in helms() {
        let off = Manifests::parse(&template(&helm, "nfs", "default", &[]));
        assert!(off.find("NetworkPolicy").is_empty(), "helm {major}");
        let values = std::env::temp_dir().join(format!("np-values-{major}.yaml"));
        std::fs::write(
            &values,
            "networkPolicy:\n  enabled: true\n  from: [10.0.0.0/16, 192.168.7.0/24]\n",
        )
        .unwrap();
        let on = Manifests::parse(&template(
            &helm,
            "nfs",
            "default",
            &[values.to_str().unwrap()],
        ));
        let np = on.find("NetworkPolicy")[0].clone();
        let rules = np["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{np}");
        let cidrs: Vec<&str> = rules[0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["ipBlock"]["cidr"].as_str().unwrap())
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/16", "192.168.7.0/24"]);
        let ports: Vec<(String, i64)> = rules[0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["protocol"].as_str().unwrap().to_owned(),
                    p["port"].as_i64().unwrap(),
                )
            })
            .collect();
        // Every port the server's container listens on for clients, TCP and UDP as served.
        let sts: StatefulSet = on.one("StatefulSet");
        for port in container(&sts).ports.unwrap() {
            let proto = port.protocol.unwrap_or_else(|| "TCP".into());
            if port.name.as_deref() == Some("http") {
                continue;
            }
            assert!(
                ports.contains(&(proto.clone(), i64::from(port.container_port))),
                "{proto} {} not in the policy",
                port.container_port
            );
        }
        // The http port is open to all (probes, Prometheus).
        assert!(rules[1].get("from").is_none());
        assert_eq!(rules[1]["ports"][0]["port"], 8080);
        // It selects the server pod.
        let svc: Service = on.one("Service");
        for (k, v) in svc.spec.unwrap().selector.unwrap() {
            assert_eq!(np["spec"]["podSelector"]["matchLabels"][&k], v.as_str());
        }
    }
}

/// The image a values file (over the chart's defaults, or over the 1.x chart's) renders.
fn image_for(helm: &std::path::Path, base: Option<&str>, values: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let mut files = Vec::new();
    if let Some(b) = base {
        files.push(fixture(b));
    }
    files.push(file);
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let m = Manifests::parse(&template(helm, "nfs", "default", &files));
    let sts: StatefulSet = m.one("StatefulSet");
    container(&sts).image.unwrap()
}

#[test]
fn an_old_image_tag_is_never_combined_with_our_image() {
    let chart: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{}/Chart.yaml", manifests::CHART)).unwrap(),
    )
    .unwrap();
    let app = chart["appVersion"].as_str().unwrap().to_owned();
    for (major, helm) in helms() {
        let h = &helm;
        // The old repository, with its tag: our image at the appVersion.
        for old in [
            "quay.io/kubernetes_incubator/nfs-provisioner",
            "k8s.gcr.io/sig-storage/nfs-provisioner",
            "registry.k8s.io/sig-storage/nfs-provisioner",
        ] {
            for tag in ["v2.3.0", "v3.0.1", "v4.0.8", "latest"] {
                assert_eq!(
                    image_for(
                        h,
                        None,
                        &format!("image: {{repository: {old}, tag: {tag}}}")
                    ),
                    format!("nfs-server-provisioner:{app}"),
                    "helm {major}: {old}:{tag}"
                );
            }
        }
        // README's install command over a 1.x values.yaml: our repository, the old tag.
        assert_eq!(
            image_for(
                h,
                Some("old-chart-defaults.yaml"),
                "image: {repository: registry.example/nfs-server-provisioner}"
            ),
            format!("registry.example/nfs-server-provisioner:{app}"),
            "helm {major}"
        );
        for old_tag in ["v2.3.0", "v2.2.1-k8s1.12", "v1.0.9", "v4.0.2"] {
            assert_eq!(
                image_for(
                    h,
                    None,
                    &format!(
                        "image: {{repository: r.example/nfs-server-provisioner, tag: {old_tag}}}"
                    )
                ),
                format!("r.example/nfs-server-provisioner:{app}"),
                "helm {major}: {old_tag}"
            );
        }
        // Our own tags are kept.
        for tag in ["0.1.0", "0.2.0-rc1", "dev", "v0.1.0", "v10.0.0"] {
            assert_eq!(
                image_for(
                    h,
                    None,
                    &format!("image: {{repository: r.example/nfs-server-provisioner, tag: {tag}}}")
                ),
                format!("r.example/nfs-server-provisioner:{tag}"),
                "helm {major}"
            );
        }
    }
}

/// Every default of values.yaml that differs from the 1.x chart's is marked "1.x:" in the
/// comment above it (or on its line) and named in the chart README's differences.
#[test]
fn defaults_that_differ_from_the_old_chart_are_marked() {
    let path = format!("{}/values.yaml", manifests::CHART);
    let text = std::fs::read_to_string(&path).unwrap();
    let ours: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let old: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(fixture("old-chart-defaults.yaml")).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(format!("{}/README.md", manifests::CHART)).unwrap();

    // Paths (a.b.c) whose defaults differ; an object is compared whole unless the old one has
    // keys of its own to compare.
    fn differing(
        old: &serde_json::Value,
        ours: &serde_json::Value,
        path: &str,
        out: &mut Vec<String>,
    ) {
        match old.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if let Some(o) = ours.get(k) {
                        differing(v, o, &p, out);
                    }
                }
            }
            _ if old != ours => out.push(path.to_owned()),
            _ => {}
        }
    }
    let mut keys = Vec::new();
    differing(&old, &ours, "", &mut keys);
    assert!(keys.contains(&"priorityClass.value".to_owned()), "{keys:?}");

    // Each key's line in values.yaml and the comment lines just above it.
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut marked = std::collections::BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        stack.retain(|(d, _)| *d < indent);
        stack.push((indent, key.to_owned()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let mut note = line.to_string();
        for above in lines[..i].iter().rev() {
            if !above.trim_start().starts_with('#') {
                break;
            }
            note.push_str(above);
        }
        marked.insert(path.join("."), note.contains("1.x"));
    }
    let mut unmarked = Vec::new();
    for key in &keys {
        if marked.get(key) != Some(&true) {
            unmarked.push(format!("{key}: no \"1.x:\" comment in values.yaml"));
        }
        if !readme.contains(&format!("`{key}")) {
            unmarked.push(format!("{key}: not in the chart README"));
        }
    }
    assert!(unmarked.is_empty(), "{unmarked:#?}");
}
