//! The Helm chart (deploy/helm/nfs-server-provisioner), rendered by real helm 3 and helm 4:
//! lint, the objects rendered for the default values, for the walk-through's values.yaml, for
//! the 1.x chart's own defaults and for a values file that sets every key, and the plain
//! manifests in deploy/kubernetes kept equal to the chart's output. The renders of the default
//! values and of every fixture are kept byte for byte (tests/chart/golden). Shards
//! (`replicaCount` > 1): their Services, environment and RBAC, and the scale-down guard, whose
//! `lookup` is answered by a small stand-in API (`helm template --dry-run=server`).
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

/// A values file with `content`, kept as long as the returned directory.
fn values_file(content: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, content).unwrap();
    let file = file.to_str().unwrap().to_owned();
    (dir, file)
}

/// The verbs of the rule of `rules` for `resource`.
fn verbs(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], resource: &str) -> Vec<String> {
    let found: Vec<_> = rules
        .iter()
        .filter(|r| r.resources.as_ref().is_some_and(|res| res == &[resource]))
        .collect();
    assert_eq!(found.len(), 1, "one rule for {resource}: {rules:?}");
    found[0].verbs.clone()
}

#[test]
fn three_replicas_render_three_shards_each_with_its_own_service() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    // Node ports, external IPs and a fixed ClusterIP belong to the release's Service alone.
    let (_dir, values) = values_file(
        "replicaCount: 3\n\
         service:\n  type: NodePort\n  nfsNodePort: 32049\n  clusterIP: 10.96.0.50\n  externalIPs: [192.0.2.10]\n",
    );
    for (major, helm) in helms() {
        let single = Manifests::parse(&template(&helm, "nfs", "default", &[]));
        let m = Manifests::parse(&template(&helm, "nfs", "default", &[&values]));
        let name = "nfs-nfs-server-provisioner";
        let shards: Vec<String> = (0..3).map(|i| format!("{name}-{i}")).collect();
        let mut want = single.objects();
        want.extend(shards.iter().map(|s| ("Service".to_owned(), s.clone())));
        want.sort();
        assert_eq!(m.objects(), want, "helm {major}");

        let sts: StatefulSet = m.one("StatefulSet");
        assert_eq!(sts.spec.replicas, Some(3));
        // The volumeClaimTemplate gives every pod its own claim of /export.
        assert_eq!(sts.spec.volume_claim_templates.as_ref().unwrap().len(), 1);
        let env = container(&sts).env.unwrap();
        let shards_env: Vec<_> = env.iter().filter(|e| e.name == "SHARDS").collect();
        assert_eq!(shards_env.len(), 1, "helm {major}: {env:?}");
        assert_eq!(shards_env[0].value.as_deref(), Some("true"));
        for var in ["POD_NAME", "POD_NAMESPACE", "SERVICE_NAME"] {
            assert!(env.iter().any(|e| e.name == var), "{var} missing");
        }
        let one: StatefulSet = single.one("StatefulSet");
        assert!(
            !container(&one)
                .env
                .unwrap()
                .iter()
                .any(|e| e.name == "SHARDS")
        );

        let services: Vec<Service> = m
            .find("Service")
            .into_iter()
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .collect();
        let main = services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap();
        let main_spec = main.spec.clone().unwrap();
        assert_eq!(main_spec.type_.as_deref(), Some("NodePort"));
        let pod_selector = sts.spec.selector.match_labels.clone().unwrap();
        // The release's Service is shard 0's address (the volumes made before shards name
        // it): pod 0 alone behind it.
        let mut zero = pod_selector.clone();
        zero.insert(
            "statefulset.kubernetes.io/pod-name".into(),
            shards[0].clone(),
        );
        assert_eq!(main_spec.selector.clone().unwrap(), zero, "helm {major}");
        let single_svc: Service = single.one("Service");
        assert_eq!(
            single_svc.spec.unwrap().selector.unwrap(),
            pod_selector,
            "one server: every pod"
        );
        for pod in &shards {
            let svc = services
                .iter()
                .find(|s| s.metadata.name.as_ref() == Some(pod))
                .unwrap_or_else(|| panic!("no Service {pod}"));
            assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
            let labels = svc.metadata.labels.clone().unwrap();
            assert_eq!(labels["nfs-server-provisioner/shard"], *pod);
            assert_eq!(labels["nfs-server-provisioner/service"], name);
            for (k, v) in main.metadata.labels.clone().unwrap() {
                assert_eq!(labels[&k], v, "{pod}: chart label {k}");
            }
            let spec = svc.spec.clone().unwrap();
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"), "{pod}");
            assert_eq!(spec.cluster_ip, None, "{pod}");
            assert_eq!(spec.external_ips, None, "{pod}");
            // The release's ports, without node ports.
            let without_node_ports: Vec<_> = service_ports(main)
                .into_iter()
                .map(|(n, p, proto, _)| (n, p, proto, None))
                .collect();
            assert_eq!(service_ports(svc), without_node_ports, "{pod}");
            for port in spec.ports.clone().unwrap() {
                let target = port.target_port.unwrap();
                let main_port = main_spec
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .find(|p| p.name == port.name)
                    .unwrap();
                assert_eq!(Some(target), main_port.target_port, "{pod}");
            }
            // The pods' selector plus the pod's own name: exactly that shard.
            let mut selector = pod_selector.clone();
            selector.insert("statefulset.kubernetes.io/pod-name".into(), pod.clone());
            assert_eq!(spec.selector.unwrap(), selector, "{pod}");
        }

        // RBAC: the single server's rules plus leases list and claims patch, nothing else.
        let cr: ClusterRole = m.one("ClusterRole");
        let cr_one: ClusterRole = single.one("ClusterRole");
        let role: Role = m.one("Role");
        let role_one: Role = single.one("Role");
        let (rules, rules_one) = (cr.rules.unwrap(), cr_one.rules.unwrap());
        assert_eq!(
            verbs(&rules, "persistentvolumeclaims"),
            owned(&["get", "list", "watch", "patch"])
        );
        assert_eq!(
            verbs(&rules_one, "persistentvolumeclaims"),
            owned(&["get", "list", "watch"])
        );
        let (ns_rules, ns_rules_one) = (role.rules.unwrap(), role_one.rules.unwrap());
        assert_eq!(
            verbs(&ns_rules, "leases"),
            owned(&["get", "list", "create", "update"])
        );
        assert_eq!(
            verbs(&ns_rules_one, "leases"),
            owned(&["get", "create", "update"])
        );
        let strip = |rules: &[k8s_openapi::api::rbac::v1::PolicyRule]| {
            rules
                .iter()
                .cloned()
                .map(|mut r| {
                    r.verbs.retain(|v| {
                        !(v == "list" && r.resources == Some(owned(&["leases"]))
                            || v == "patch"
                                && r.resources == Some(owned(&["persistentvolumeclaims"])))
                    });
                    r
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&rules), strip(&rules_one));
        assert_eq!(strip(&ns_rules), strip(&ns_rules_one));
    }
}

#[test]
fn shards_pass_lint_and_need_a_claim_of_their_own() {
    for (major, helm) in helms() {
        for values in [
            "replicaCount: 3\n",
            "replicaCount: 3\npersistence: {enabled: false}\n",
            "replicaCount: 3\nmetrics: {serviceMonitor: {enabled: true}}\nnetworkPolicy: {enabled: true, from: [10.0.0.0/8]}\n",
        ] {
            let (_dir, file) = values_file(values);
            let out = run_helm(
                &helm,
                &["lint", "--strict", manifests::CHART, "-f", file.as_str()],
            );
            assert!(out.contains("0 chart(s) failed"), "helm {major}: {out}");
        }
        // Each emptyDir is a pod's own: shards.
        let (_dir, file) = values_file("replicaCount: 2\npersistence: {enabled: false}\n");
        let m = Manifests::parse(&template(&helm, "nfs", "default", &[&file]));
        assert_eq!(m.find("Service").len(), 3, "helm {major}");
        // One existing claim for every pod: replicas of one server, as before shards.
        let (_dir, file) =
            values_file("replicaCount: 3\npersistence: {enabled: true, existingClaim: export}\n");
        let m = Manifests::parse(&template(&helm, "nfs", "default", &[&file]));
        assert_eq!(m.find("Service").len(), 1, "helm {major}");
        let sts: StatefulSet = m.one("StatefulSet");
        assert_eq!(sts.spec.replicas, Some(3));
        assert!(
            !container(&sts)
                .env
                .unwrap()
                .iter()
                .any(|e| e.name == "SHARDS")
        );
        // A shard's pod and Service names must fit in 63 characters.
        let long = "f".repeat(62);
        let (_dir, file) = values_file(&format!("replicaCount: 3\nfullnameOverride: {long}\n"));
        let err = manifests::try_run_helm(
            &helm,
            &["template", "nfs", manifests::CHART, "-f", file.as_str()],
        )
        .unwrap_err();
        assert!(
            err.contains("longer than 63 characters"),
            "helm {major}: {err}"
        );
    }
}

/// What the ServiceMonitor and NetworkPolicy select, with shards: every pod, each scraped
/// through one Service only, under the job name it has with one server.
#[test]
fn with_shards_the_service_monitor_and_network_policy_still_cover_every_pod() {
    let (_dir, file) = values_file(
        "replicaCount: 3\nmetrics: {serviceMonitor: {enabled: true}}\nnetworkPolicy: {enabled: true, from: [10.0.0.0/8]}\n",
    );
    for (major, helm) in helms() {
        let m = Manifests::parse(&template(&helm, "nfs", "default", &[&file]));
        let sts: StatefulSet = m.one("StatefulSet");
        let pod_labels = sts.spec.template.metadata.clone().unwrap().labels.unwrap();
        let pods: Vec<std::collections::BTreeMap<String, String>> = (0..3)
            .map(|i| {
                let mut l = pod_labels.clone();
                l.insert(
                    "statefulset.kubernetes.io/pod-name".into(),
                    format!("nfs-nfs-server-provisioner-{i}"),
                );
                l
            })
            .collect();
        let matches = |selector: &serde_json::Value,
                       labels: &std::collections::BTreeMap<String, String>| {
            let by_labels = selector["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
            let by_expressions = selector["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| {
                    let key = e["key"].as_str().unwrap();
                    match e["operator"].as_str().unwrap() {
                        "Exists" => labels.contains_key(key),
                        "DoesNotExist" => !labels.contains_key(key),
                        op => panic!("operator {op} not handled"),
                    }
                });
            by_labels && by_expressions
        };
        // The NetworkPolicy selects every shard's pod.
        let np = m.find("NetworkPolicy")[0].clone();
        for pod in &pods {
            assert!(
                matches(&np["spec"]["podSelector"], pod),
                "helm {major}: {pod:?}"
            );
        }
        // The ServiceMonitor picks Services whose endpoints are each pod exactly once.
        let sm = m.find("ServiceMonitor")[0].clone();
        let scraped: Vec<Service> = m
            .find("Service")
            .into_iter()
            .filter(|s| {
                let labels: std::collections::BTreeMap<String, String> =
                    serde_json::from_value(s["metadata"]["labels"].clone()).unwrap();
                matches(&sm["spec"]["selector"], &labels)
            })
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .collect();
        for pod in &pods {
            let behind = scraped
                .iter()
                .filter(|s| {
                    s.spec
                        .as_ref()
                        .unwrap()
                        .selector
                        .as_ref()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| pod.get(k) == Some(v))
                })
                .count();
            assert_eq!(behind, 1, "helm {major}: {pod:?} is scraped {behind} times");
        }
        // Under the job name of one server: the release's Service's name, which each shard's
        // Service carries in the label the ServiceMonitor takes the job name from.
        let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
        for svc in &scraped {
            assert_eq!(
                svc.metadata.labels.as_ref().unwrap()[job_label],
                "nfs-nfs-server-provisioner"
            );
        }
    }
}

/// Just enough of a Kubernetes API for helm's `lookup` (and for helm 4's server-side dry run,
/// which also maps every kind the chart renders): discovery of those kinds, and GET and list of
/// the objects given; anything else is 404. Read-only; serves until the test process ends.
struct LookupApi {
    _dir: tempfile::TempDir,
    kubeconfig: String,
}

/// (group, plural, kind, namespaced) of each kind the API knows, all at version v1.
const LOOKUP_KINDS: [(&str, &str, &str, bool); 10] = [
    ("", "persistentvolumes", "PersistentVolume", false),
    ("", "services", "Service", true),
    ("", "serviceaccounts", "ServiceAccount", true),
    ("apps", "statefulsets", "StatefulSet", true),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("rbac.authorization.k8s.io", "roles", "Role", true),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    (
        "scheduling.k8s.io",
        "priorityclasses",
        "PriorityClass",
        false,
    ),
    ("storage.k8s.io", "storageclasses", "StorageClass", false),
];

impl LookupApi {
    fn start(objects: Vec<serde_json::Value>) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let objects = std::sync::Arc::new(objects);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let objects = std::sync::Arc::clone(&objects);
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request);
                    let target = request.split(' ').nth(1).unwrap_or("/");
                    let path = target.split('?').next().unwrap();
                    let (status, body) = match Self::answer(&objects, path) {
                        Some(body) => ("200 OK", body),
                        None => (
                            "404 Not Found",
                            serde_json::json!({"kind": "Status", "apiVersion": "v1",
                                "status": "Failure", "reason": "NotFound", "code": 404}),
                        ),
                    };
                    let body = body.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
                 current-context: c\n"
            ),
        )
        .unwrap();
        LookupApi {
            kubeconfig: kubeconfig.to_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    fn answer(objects: &[serde_json::Value], path: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        let group_version = |g: &str| {
            if g.is_empty() {
                "v1".to_owned()
            } else {
                format!("{g}/v1")
            }
        };
        let mut groups: Vec<&str> = LOOKUP_KINDS.iter().map(|k| k.0).collect();
        groups.dedup();
        match path {
            "/version" => {
                return Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"}));
            }
            "/api" => return Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
            "/apis" => {
                let list: Vec<_> = groups
                    .iter()
                    .filter(|g| !g.is_empty())
                    .map(|g| {
                        let gv = json!({"groupVersion": group_version(g), "version": "v1"});
                        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                return Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}));
            }
            _ => {}
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", g, "v1", rest @ ..] if groups.contains(g) => (*g, rest),
            _ => return None,
        };
        if rest.is_empty() {
            let resources: Vec<_> = LOOKUP_KINDS
                .iter()
                .filter(|k| k.0 == group)
                .map(|(_, plural, kind, namespaced)| {
                    json!({"name": plural, "singularName": kind.to_lowercase(),
                           "namespaced": namespaced, "kind": kind,
                           "verbs": ["get", "list"]})
                })
                .collect();
            return Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                               "groupVersion": group_version(group), "resources": resources}));
        }
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        let (plural, name) = match rest {
            [plural] => (*plural, None),
            [plural, name] => (*plural, Some(*name)),
            _ => return None,
        };
        let kind = LOOKUP_KINDS
            .iter()
            .find(|k| k.0 == group && k.1 == plural)?
            .2;
        let mut found = objects.iter().filter(|o| {
            o["kind"] == kind
                && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
                && name.is_none_or(|n| o["metadata"]["name"] == n)
        });
        match name {
            Some(_) => found.next().cloned(),
            None => Some(
                json!({"kind": format!("{kind}List"), "apiVersion": group_version(group),
                                "metadata": {"resourceVersion": "1"},
                                "items": found.cloned().collect::<Vec<_>>()}),
            ),
        }
    }
}

/// `helm template --dry-run=server` against `api` (so `lookup` sees it), as an upgrade
/// (`--is-upgrade`) or an install, with `values` on top of the defaults.
fn template_against(
    helm: &std::path::Path,
    api: &LookupApi,
    upgrade: bool,
    values: &str,
) -> Result<String, String> {
    let (_dir, file) = values_file(values);
    let mut args = vec![
        "template",
        "nfs",
        manifests::CHART,
        "--namespace",
        "default",
        "--kubeconfig",
        api.kubeconfig.as_str(),
        "--dry-run=server",
        "--disable-openapi-validation",
        "-f",
        file.as_str(),
    ];
    if upgrade {
        args.push("--is-upgrade");
    }
    manifests::try_run_helm(helm, &args)
}

/// The live StatefulSet of release "nfs" (helm's, as helm 4 checks): `replicas` pods, shards
/// or not.
fn live_statefulset(replicas: u32, shards: bool) -> serde_json::Value {
    let mut env = vec![serde_json::json!({"name": "POD_NAME"})];
    if shards {
        env.push(serde_json::json!({"name": "SHARDS", "value": "true"}));
    }
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "nfs-nfs-server-provisioner", "namespace": "default",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "nfs",
                                     "meta.helm.sh/release-namespace": "default"}},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"name": "nfs-server-provisioner", "env": env}]}}},
    })
}

/// A PV of `provisioner` held by shard `pod` (no annotation when `None`).
fn pv(name: &str, provisioner: &str, pod: Option<&str>, deleting: bool) -> serde_json::Value {
    let mut meta = serde_json::json!({"name": name, "annotations": {
        "pv.kubernetes.io/provisioned-by": provisioner,
    }});
    if let Some(pod) = pod {
        meta["annotations"]["nfs-server-provisioner/server-pod"] = pod.into();
    }
    if deleting {
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    }
    serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta})
}

/// The scale-down guard, with `lookup` answered by a stand-in API: an upgrade to fewer shards
/// is refused while a shard being removed owns PVs, with a message naming the shards, their
/// volume counts, the replicaCount to keep and the README section; anything else renders
/// exactly what `helm template` renders without a cluster.
#[test]
fn scale_down_is_refused_while_a_removed_shard_owns_volumes() {
    let ours = "cluster.local/nfs-nfs-server-provisioner";
    let shard = |i: u32| format!("nfs-nfs-server-provisioner-{i}");
    let (s0, s1, s2) = (shard(0), shard(1), shard(2));
    let volumes = vec![
        pv("pvc-a", ours, Some(&s2), false),
        pv("pvc-b", ours, Some(&s2), false),
        pv("pvc-c", ours, Some(&s1), false),
        pv("pvc-d", ours, Some(&s0), false),
        // From before PVs named their pod: shard 0's, as the binary counts them.
        pv("pvc-e", ours, None, false),
        // Not counted: being deleted, or another provisioner's.
        pv("pvc-f", ours, Some(&s2), true),
        pv("pvc-g", "cluster.local/other", Some(&s1), false),
    ];
    let with = |sts: serde_json::Value, pvs: &[serde_json::Value]| {
        let mut objects = vec![sts];
        objects.extend_from_slice(pvs);
        LookupApi::start(objects)
    };
    let sharded = with(live_statefulset(3, true), &volumes);
    for (major, helm) in helms() {
        let offline = |values: &str| {
            let (_dir, file) = values_file(values);
            template(&helm, "nfs", "default", &[&file])
        };
        // Down to one server: shards 1 and 2 still own volumes.
        let err = template_against(&helm, &sharded, true, "replicaCount: 1\n").unwrap_err();
        for part in [
            format!(
                "replicaCount 1 would remove shards that still own PersistentVolumes: {s1} (1 volume), {s2} (2 volumes); 3 in all"
            ),
            "keep replicaCount: 3 or more (the StatefulSet runs 3 now)".to_owned(),
            "README.md, section \"Shards\"".to_owned(),
            "then upgrade with replicaCount: 1 again".to_owned(),
        ] {
            assert!(err.contains(&part), "helm {major}: {part:?} not in\n{err}");
        }
        // Down to two: shard 2 alone.
        let err = template_against(&helm, &sharded, true, "replicaCount: 2\n").unwrap_err();
        assert!(
            err.contains(&format!("PersistentVolumes: {s2} (2 volumes); 2 in all")),
            "{err}"
        );
        assert!(!err.contains(&s1), "{err}");
        // Down to zero: shard 0's volumes count too (with and without the annotation).
        let err = template_against(&helm, &sharded, true, "replicaCount: 0\n").unwrap_err();
        assert!(err.contains(&format!("{s0} (2 volumes)")), "{err}");
        // The same number of shards, more, or an install: no refusal, and lookup changes
        // nothing in the render.
        for (upgrade, values) in [
            (true, "replicaCount: 3\n"),
            (true, "replicaCount: 4\n"),
            (false, "replicaCount: 1\n"),
        ] {
            assert_eq!(
                template_against(&helm, &sharded, upgrade, values)
                    .unwrap_or_else(|e| panic!("helm {major}: {values}: {e}")),
                offline(values),
                "helm {major}: {values}"
            );
        }
        // The default values against a live cluster: the golden render.
        let golden = std::fs::read_to_string(format!(
            "{}/tests/chart/golden/default.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let single = with(live_statefulset(1, false), &volumes);
        assert_eq!(
            template_against(&helm, &single, true, "{}\n").unwrap(),
            golden,
            "helm {major}"
        );
        // A single server going to zero replicas, and replicas that are not shards (one
        // existing claim): not shards, no guard.
        template_against(&helm, &single, true, "replicaCount: 0\n").unwrap();
        let replicas = with(live_statefulset(3, false), &volumes);
        template_against(&helm, &replicas, true, "replicaCount: 1\n").unwrap();
        // Removed shards without volumes: allowed.
        let drained = with(
            live_statefulset(3, true),
            &[
                pv("pvc-d", ours, Some(&s0), false),
                pv("pvc-f", ours, Some(&s2), true),
            ],
        );
        template_against(&helm, &drained, true, "replicaCount: 1\n").unwrap();
    }
}
