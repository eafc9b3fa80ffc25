//! The Helm chart, validated offline as CI can (no cluster here): for every values file in
//! `helm/tessera/ci/`, `helm lint --strict`, `helm template`, and `kubernetes-validate --strict`
//! against the Kubernetes 1.30 schemas; then what the rendered objects must say (a StatefulSet
//! per site with Parallel pod management, a quorum-keeping PodDisruptionBudget, probes on the
//! health endpoints, a locked-down securityContext, the `helm test` query), and each site's
//! rendered node config loads in `NodeConfig` as a node would load it, with checkpoints sealed
//! under a per-site KEK the chart generates. Bad values are refused
//! with the value named. helm and kubernetes-validate come from `scripts/setup.sh --with-broker`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_node::config::NodeConfig;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/tessera")
}

fn tool(name: &str, installed: PathBuf) -> PathBuf {
    if installed.exists() { installed } else { PathBuf::from(name) }
}

fn helm() -> PathBuf {
    let tools = std::env::var("TESSERA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/tessera/tools"));
    tool("helm", tools.join("bin/helm"))
}

fn kubernetes_validate() -> PathBuf {
    let python = std::env::var("TESSERA_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/tessera/venv/bin/python", std::env::var("HOME").unwrap_or_default()));
    tool("kubernetes-validate", Path::new(&python).with_file_name("kubernetes-validate"))
}

/// Runs a tool; its stdout, or a panic with everything it said.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh --with-broker installs it)", program.display()));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{} {args:?} failed ({}):\n{stdout}\n{stderr}", program.display(), out.status))
    }
}

/// The documents of a rendered chart.
fn documents(rendered: &str) -> Vec<&str> {
    rendered.split("\n---\n").filter(|d| d.contains("kind:")).collect()
}

/// The `node.toml` blocks of the rendered config Secrets (the block scalar, unindented).
fn node_configs(rendered: &str) -> Vec<String> {
    let mut configs = Vec::new();
    let mut lines = rendered.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() == "  node.toml: |" {
            let mut text = String::new();
            for l in lines.by_ref() {
                if !(l.starts_with("    ") || l.is_empty()) {
                    break;
                }
                text.push_str(l.strip_prefix("    ").unwrap_or(""));
                text.push('\n');
            }
            configs.push(text);
        }
    }
    configs
}

#[test]
fn the_chart_lints_renders_and_validates_for_every_ci_values_file() {
    let chart = chart();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(chart.join("ci")).expect("ci/").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let chart_arg = chart.to_str().expect("utf-8");
    for values in &files {
        let v = values.to_str().expect("utf-8");
        let name = values.file_name().expect("name").to_string_lossy().to_string();
        run(&helm(), &["lint", "--strict", chart_arg, "-f", v]).unwrap_or_else(|e| panic!("{e}"));
        let rendered = run(&helm(), &["template", "tessera", chart_arg, "-f", v, "--namespace", "plant"])
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join(&name);
        std::fs::write(&file, &rendered).expect("write");
        run(&kubernetes_validate(), &["--strict", "-k", "1.30.0", file.to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let docs = documents(&rendered);
        let kind =
            |k: &str| docs.iter().filter(move |d| d.contains(&format!("\nkind: {k}\n"))).copied().collect::<Vec<_>>();
        let sets = kind("StatefulSet");
        assert!(!sets.is_empty(), "{name}: no StatefulSet");
        for s in &sets {
            for needle in [
                "podManagementPolicy: Parallel",
                "path: /startupz",
                "path: /livez",
                "path: /readyz",
                "runAsNonRoot: true",
                "readOnlyRootFilesystem: true",
                "allowPrivilegeEscalation: false",
                "volumeClaimTemplates:",
                "topologySpreadConstraints:",
                "apps.kubernetes.io/pod-index",
            ] {
                assert!(s.contains(needle), "{name}: a StatefulSet lacks {needle}:\n{s}");
            }
            // The chart's anti-affinity, unless the values give an affinity of their own.
            assert!(s.contains("podAntiAffinity:") || s.contains("nodeAffinity:"), "{name}: no affinity:\n{s}");
        }
        // One headless Service per site, publishing not-ready pods (members find each other
        // before the first election).
        let headless = kind("Service").into_iter().filter(|d| d.contains("clusterIP: None")).count();
        assert_eq!(headless, sets.len(), "{name}");
        // The PodDisruptionBudget keeps a quorum whichever pods the leader made voters: a
        // bounded voter set (at most 5 by default, odd) and at most (voters - 1) / 2 pods down.
        if let Some(pdb) = kind("PodDisruptionBudget").first() {
            let number = |text: &str, key: &str| -> i64 {
                let line = text
                    .lines()
                    .find(|l| l.trim_start().starts_with(key))
                    .unwrap_or_else(|| panic!("{name}: no {key}"));
                line.split(':').nth(1).expect("value").trim().trim_matches('"').parse().expect("a number")
            };
            let (voters, quorum, min) = (
                number(pdb, "tessera.io/raft-voters"),
                number(pdb, "tessera.io/raft-quorum"),
                number(pdb, "minAvailable"),
            );
            let pods: i64 = sets.iter().map(|s| number(s, "replicas:")).sum();
            assert!(voters % 2 == 1 && voters <= 5, "{name}: {voters} voters");
            assert_eq!(quorum, voters / 2 + 1, "{name}");
            assert!(pods - min <= (voters - 1) / 2, "{name}: {pods} pods, minAvailable {min}, {voters} voters");
        }
        // The `helm test` hook runs a Flight SQL query against each site.
        let tests: Vec<&str> = kind("Pod").into_iter().filter(|d| d.contains("helm.sh/hook: test")).collect();
        assert_eq!(tests.len(), sets.len(), "{name}");
        assert!(tests.iter().all(|t| t.contains("- sql") && t.contains("FROM continuous_queries")), "{name}");
        // Every site's rendered config is one a node accepts.
        let configs = node_configs(&rendered);
        assert_eq!(configs.len(), sets.len(), "{name}");
        for (i, config) in configs.iter().enumerate() {
            // A site's pods that share a store are writers in it under their pod names, which
            // the StatefulSet sets (here: as if for its first pod).
            let shared_store = sets.iter().any(|s| s.contains("name: TESSERA__STORE__WRITER"));
            let config = match shared_store {
                true => config.replacen("[store]\n", "[store]\nwriter = \"pod-0\"\n", 1),
                false => config.clone(),
            };
            // Credentials from the operator's Secrets: the file the pod mounts, here a copy.
            let credentials = dir.path().join("credentials.toml");
            std::fs::write(&credentials, CREDENTIALS).expect("write");
            let config = config.replace("/etc/tessera/sql/credentials.toml", credentials.to_str().expect("utf-8"));
            let path = dir.path().join(format!("{name}-{i}.toml"));
            std::fs::write(&path, &config).expect("write");
            if config.contains("[ingest.kafka_from_env]") {
                // The variables the StatefulSet sets from the Secret: a node process gets them.
                let set = sets.iter().find(|s| s.contains("secretKeyRef")).expect("a set reading the Secret");
                let mut check =
                    crate::cli_process::command(&["node", "--config", path.to_str().expect("utf-8"), "--check"]);
                for var in config
                    .lines()
                    .filter_map(|l| l.split_once(" = \"TESSERA_KAFKA_"))
                    .map(|(_, v)| v.trim_end_matches('"'))
                {
                    let var = format!("TESSERA_KAFKA_{var}");
                    assert!(set.contains(&format!("- name: {var}")), "{name}: the pods do not set {var}");
                    check.env(&var, "from-the-secret");
                }
                let out = check.output().expect("tessera node --check");
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && said.contains("config ok"),
                    "{name}: {said}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(said.contains("1 SQL users"), "{name}: the Secret's user: {said}");
                continue;
            }
            let loaded = NodeConfig::load(Some(&path))
                .unwrap_or_else(|e| panic!("{name}: site {i}'s node.toml does not load: {e:#}\n{config}"));
            // Only the plant's values ask the nodes to create their topics.
            let create = loaded.ingest.create_topics.clone().map(|c| (c.partitions, c.replication_factor));
            assert_eq!(create, (name == "plant-values.yaml").then_some((12, 3)), "{name}: [ingest.create_topics]");
            let raft = loaded.raft.expect("[raft]");
            assert!(
                !raft.initial_members.is_empty() && loaded.http.listen.is_some() && loaded.sql.listen.is_some(),
                "{name}"
            );
            // Silent motors' judge state spills to the data volume, not /tmp (a small emptyDir).
            for s in &sets {
                assert!(
                    s.contains("name: TESSERA__DETECT__SPILL_DIR\n              value: /var/lib/tessera/spill")
                        && s.contains("mountPath: /var/lib/tessera\n"),
                    "{name}: the spill file is not on the data volume"
                );
            }
            // A site of several pods lists them all; each pod skips itself (sql.advertise,
            // which its StatefulSet sets from the pod's name, as the list names it).
            let pods = &loaded.sql.site_nodes;
            if !pods.is_empty() {
                let set =
                    sets.iter().find(|s| s.contains(pods[0].split('.').nth(1).expect("headless name"))).expect("set");
                assert!(set.contains("name: TESSERA__SQL__ADVERTISE"), "{name}: pods do not say their own address");
                for pod in pods {
                    let mut sql = loaded.sql.clone();
                    sql.advertise = Some(pod.clone());
                    assert_eq!(sql.other_site_nodes().len(), pods.len() - 1, "{name}: {pod} among {pods:?}");
                }
            }
            // A shared store is the claim every pod of the site mounts.
            if shared_store {
                assert_eq!(loaded.store.dir.as_deref(), Some(Path::new("/var/lib/tessera/site-store")), "{name}");
                for s in &sets {
                    assert!(
                        s.contains("mountPath: /var/lib/tessera/site-store") && s.contains("claimName: tessera-"),
                        "{name}"
                    );
                }
            }
            // Checkpoints are sealed by default: the config names the KEK the pods mount.
            assert_eq!(
                loaded.store.kek_file.as_deref(),
                Some(Path::new("/etc/tessera/kek/kek")),
                "{name}: site {i}'s checkpoints are not sealed"
            );
        }
        // Each site has its own generated KEK, kept across uninstalls, in the format a node reads.
        let keks: Vec<&str> = kind("Secret").into_iter().filter(|d| d.contains("-kek\n")).collect();
        assert_eq!(keks.len(), sets.len(), "{name}: one KEK per site");
        let mut seen = std::collections::BTreeSet::new();
        for kek in &keks {
            assert!(kek.contains("helm.sh/resource-policy: keep"), "{name}: a KEK must outlive the release");
            let text = kek.lines().find_map(|l| l.trim().strip_prefix("kek: ")).expect("kek data").trim_matches('"');
            let path = dir.path().join("kek");
            std::fs::write(&path, text).expect("write");
            tessera_store::Kek::read(&path).unwrap_or_else(|e| panic!("{name}: the chart's KEK does not load: {e}"));
            assert!(seen.insert(text.to_string()), "{name}: two sites share a KEK");
        }
        for s in &sets {
            assert!(s.contains("mountPath: /etc/tessera/kek"), "{name}: the KEK is not mounted");
        }
        // No CA key anywhere: certificates are issued outside the pods, by cert-manager from a
        // Certificate per pod, or made by the operator.
        assert!(!rendered.contains("ca.key") && !rendered.contains("--ca-key"), "{name}: a CA key in the release");
        let certificates = kind("Certificate");
        if rendered.contains("[tls]") {
            for s in &sets {
                assert!(s.contains("name: select-certificate") && s.contains("projected:"), "{name}: {s}");
            }
            let external = std::fs::read_to_string(values).expect("values").contains("certificates: external");
            if external {
                assert!(certificates.is_empty(), "{name}: external certificates, yet Certificates rendered");
            } else {
                assert_eq!(certificates.len(), sets_pods(&sets), "{name}: a Certificate per pod");
                for certificate in &certificates {
                    certificate_makes_a_node_identity(&name, certificate);
                }
            }
        } else {
            assert!(certificates.is_empty(), "{name}: Certificates without TLS");
        }
    }
}

/// The pods of these StatefulSets (their `replicas`).
/// The Secret of SQL users `ci/operators-values.yaml` names (key credentials.toml).
const CREDENTIALS: &str = "[[users]]\nname = \"ops\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$5E36OuZHUtQ+jmMm10zlBg$iz7e7Bgwvxny+8OM5gWPofZ8nczAqYjyV96xT9izG6o\"\nrole = \"admin\"\n";

/// The operators' values: credentials from their Secrets, extra environment, volumes, labels
/// and scheduling, and the rules and dashboard of deploy/ shipped as a PrometheusRule (which
/// promtool accepts) and a ConfigMap.
#[test]
fn the_chart_takes_credentials_from_secrets_and_ships_the_rules_and_the_dashboard() {
    let chart = chart();
    let values = chart.join("ci/operators-values.yaml");
    let rendered = run(
        &helm(),
        &[
            "template",
            "tessera",
            chart.to_str().expect("utf-8"),
            "-f",
            values.to_str().expect("utf-8"),
            "--namespace",
            "plant",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let docs = documents(&rendered);
    let find = |kind: &str| {
        *docs.iter().find(|d| d.contains(&format!("\nkind: {kind}\n"))).unwrap_or_else(|| panic!("no {kind}"))
    };
    let set = find("StatefulSet");
    for expected in [
        "name: kafka-credentials",
        "key: password",
        "name: HTTPS_PROXY",
        "mountPath: /etc/tessera/kafka-ca",
        "mountPath: /etc/tessera/sql",
        "secretName: tessera-sql-credentials",
        "team: plant-ops",
        "nodeAffinity:",
        "key: dedicated",
    ] {
        assert!(set.contains(expected), "the StatefulSet lacks {expected:?}");
    }
    assert!(!set.contains("podAntiAffinity"), "affinity replaces the chart's anti-affinity");
    assert!(!rendered.contains("from-the-secret") && !rendered.contains("argon2id"), "no credential in the release");

    // The PrometheusRule holds deploy/'s groups, and promtool accepts them.
    let rule: serde_json::Value = serde_yaml_ng::from_str(find("PrometheusRule")).expect("yaml");
    let deployed: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(deploy_file("prometheus/tessera-rules.yaml")).expect("rules"))
            .expect("yaml");
    assert_eq!(rule["spec"]["groups"], deployed["groups"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, serde_yaml_ng::to_string(&rule["spec"]).expect("yaml")).expect("write");
    let out =
        std::process::Command::new("promtool").args(["check", "rules"]).arg(&rules).output().expect("promtool runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The dashboard's ConfigMap holds deploy/'s dashboard, labelled for Grafana's sidecar.
    let map: serde_json::Value = serde_yaml_ng::from_str(find("ConfigMap")).expect("yaml");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: serde_json::Value =
        serde_json::from_str(map["data"]["tessera-dashboard.json"].as_str().expect("json"))
            .expect("the dashboard parses");
    let deployed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_file("grafana/tessera-dashboard.json")).expect("dashboard"),
    )
    .expect("json");
    assert_eq!(dashboard, deployed);
}

/// The chart ships copies of deploy/'s rules and dashboard (Helm reads only the chart's files):
/// they must stay equal.
#[test]
fn the_charts_copies_of_the_rules_and_the_dashboard_are_deploys() {
    for (copy, original) in [
        ("files/tessera-rules.yaml", "prometheus/tessera-rules.yaml"),
        ("files/tessera-dashboard.json", "grafana/tessera-dashboard.json"),
    ] {
        let copy_text = std::fs::read_to_string(chart().join(copy)).expect("the chart's copy");
        let original_text = std::fs::read_to_string(deploy_file(original)).expect("deploy/");
        assert!(copy_text == original_text, "helm/tessera/{copy} differs from deploy/{original}: copy it again");
    }
}

fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn sets_pods(sets: &[&str]) -> usize {
    sets.iter()
        .map(|s| {
            let line = s.lines().find(|l| l.trim_start().starts_with("replicas:")).expect("replicas");
            line.split(':').nth(1).expect("a value").trim().parse::<usize>().expect("a number")
        })
        .sum()
}

/// Issues what cert-manager would from `certificate` (its common name, URIs, DNS names and IP
/// addresses, an ECDSA P-256 key in PKCS#8, signed by a CA) and checks that a node loads it
/// as the identity of its Raft id and site.
fn certificate_makes_a_node_identity(name: &str, certificate: &str) {
    let list = |key: &str| -> Vec<String> {
        let mut lines = certificate.lines().skip_while(|l| l.trim() != format!("{key}:"));
        lines.next();
        lines.map_while(|l| l.trim().strip_prefix("- ").map(str::to_string)).collect()
    };
    let (uris, dns, ips) = (list("uris"), list("dnsNames"), list("ipAddresses"));
    let id: u64 = uris
        .iter()
        .find_map(|u| u.strip_prefix("tessera://node/"))
        .unwrap_or_else(|| panic!("{name}: no node URI in\n{certificate}"))
        .parse()
        .expect("an id");
    let site = uris.iter().find_map(|u| u.strip_prefix("tessera://site/")).expect("a site URI").to_string();
    assert!(dns.contains(&format!("node-{id}.tessera")), "{name}: {dns:?}");
    assert!(certificate.contains("encoding: PKCS8") && certificate.contains("algorithm: ECDSA"), "{name}");
    assert!(certificate.contains("- client auth") && certificate.contains("- server auth"), "{name}");

    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let ca = tessera_tls::pki::new_ca("a cert-manager CA issuer's CA", year).expect("CA");
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("tessera node {id} ({site})"));
    let ia5 = |s: &str| rcgen::string::Ia5String::try_from(s.to_string()).expect("ia5");
    params.subject_alt_names = uris.iter().map(|u| rcgen::SanType::URI(ia5(u))).collect();
    params.subject_alt_names.extend(dns.iter().map(|d| rcgen::SanType::DnsName(ia5(d))));
    params.subject_alt_names.extend(ips.iter().map(|i| rcgen::SanType::IpAddress(i.parse().expect("an IP"))));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("issue");
    let material = tessera_tls::TlsMaterial::from_pem(&ca.cert_pem, &cert.pem(), &key.serialize_pem())
        .unwrap_or_else(|e| panic!("{name}: a node does not load the certificate its Certificate asks for: {e}"));
    assert_eq!(
        material.identity(),
        &tessera_tls::PeerIdentity::Node { id, site: site.clone() },
        "{name}: the certificate names another identity"
    );
}

/// Copies the chart with NOTES.txt as a plain template, so that `helm template --debug`
/// renders it (helm renders NOTES only on install, which needs a cluster).
fn notes(values: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("tessera");
    let out = Command::new("cp")
        .args(["-r", chart().to_str().expect("utf-8"), copy.to_str().expect("utf-8")])
        .status()
        .expect("cp");
    assert!(out.success());
    std::fs::rename(copy.join("templates/NOTES.txt"), copy.join("templates/notes.txt")).expect("rename");
    let values = chart().join("ci").join(values);
    let out = Command::new(helm())
        .args([
            "template",
            "t",
            copy.to_str().expect("utf-8"),
            "-f",
            values.to_str().expect("utf-8"),
            "--show-only",
            "templates/notes.txt",
            "--debug",
        ])
        .output()
        .expect("helm");
    // The text is no YAML, so helm prints it (--debug) and then refuses it: expected.
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let start =
        all.find("# Source: tessera/templates/notes.txt").unwrap_or_else(|| panic!("NOTES.txt did not render:\n{all}"));
    all[start..].lines().skip(1).take_while(|l| !l.starts_with("Error:")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_notes_tell_how_to_check_and_query_the_release() {
    for values in ["default-values.yaml", "multi-site-values.yaml", "no-tls-values.yaml"] {
        let text = notes(values);
        assert!(
            text.contains("helm test t")
                && text.contains("port-forward svc/t-tessera-site-a")
                && text.contains("tessera sql --at"),
            "{values}:\n{text}"
        );
        assert!(!text.contains("<no value>"), "{values}:\n{text}");
        assert_eq!(text.contains("--tls-ca"), values != "no-tls-values.yaml", "{values}:\n{text}");
    }
}

/// The image's runtime stage installs every shared library Tessera links: the libraries of
/// this test binary (which links the same native code as `tessera`) map, through `dpkg -S`,
/// to packages the runtime stage installs or debian:bookworm-slim has. (The whole build stage,
/// run without an image builder: scripts/image-binary-stage.sh.)
#[test]
fn the_runtime_stage_has_every_library_the_binary_links() {
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
        .expect("deploy/Dockerfile");
    let runtime = dockerfile.split("AS runtime").nth(1).expect("a runtime stage");
    let installed: Vec<&str> = runtime
        .split("--no-install-recommends")
        .nth(1)
        .expect("an apt-get install")
        .split_whitespace()
        .take_while(|w| *w != "&&" && *w != "\\")
        .chain(["libc6", "libgcc-s1"])
        .collect();
    let exe = std::env::current_exe().expect("the test binary");
    let ldd = std::process::Command::new("ldd").arg(&exe).output().expect("ldd");
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split("=> ").nth(1)?.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(libraries.iter().any(|l| l.contains("libssl")), "{libraries:?}");
    for library in &libraries {
        // dpkg knows a library under the path its package installed (with /usr merged, the
        // path ldd names or the one its links resolve to).
        let real = std::fs::canonicalize(library).expect("the library");
        let owner = [Path::new(library), real.as_path()].iter().find_map(|path| {
            let out = std::process::Command::new("dpkg").arg("-S").arg(path).output().expect("dpkg -S");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            out.status.success().then(|| text.split(':').next().unwrap_or_default().trim().to_string())
        });
        let package = owner.as_deref().unwrap_or_default();
        assert!(
            installed.contains(&package),
            "{library} comes from {package:?}, which the runtime stage lacks ({installed:?})"
        );
    }
}

#[test]
fn the_image_runs_as_the_user_the_chart_expects() {
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
        .expect("deploy/Dockerfile");
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "a multi-stage build: {stages} stage(s)");
    assert!(dockerfile.contains("USER 10001:10001"), "the runtime user");
    assert!(dockerfile.contains("cargo build --release --locked -p tessera-cli --bin tessera"));
    let statefulset = std::fs::read_to_string(chart().join("templates/statefulset.yaml")).expect("statefulset.yaml");
    assert!(statefulset.contains("runAsUser: 10001") && statefulset.contains("runAsGroup: 10001"));
    for port in ["7070", "50051", "9464"] {
        assert!(dockerfile.contains(port), "the image exposes {port}");
    }
}

#[test]
fn bad_values_are_refused_with_the_value_named() {
    let chart = chart();
    let chart_arg = chart.to_str().expect("utf-8");
    let base = chart.join("ci/default-values.yaml");
    let base = base.to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let site = |name: &str, replicas: i64, id_base: i64| {
        format!("  - name: {name}\n    replicas: {replicas}\n    idBase: {id_base}\n")
    };
    for (case, values, expected) in [
        ("a site name that is no DNS label", format!("sites:\n{}", site("Site_A", 1, 1)), "sites.0.name"),
        ("no replicas", format!("sites:\n{}", site("site-a", 0, 1)), "sites.0.replicas"),
        (
            "an unknown encoding",
            "kafka:\n  topics:\n    - name: t\n      encoding: xml\n".to_string(),
            "kafka.topics.0.encoding",
        ),
        (
            "topics created without replicas",
            "kafka:\n  createTopics:\n    replicationFactor: 0\n".to_string(),
            "kafka.createTopics.replicationFactor",
        ),
        ("an endpoint without a scheme", "otlp:\n  endpoint: collector:4317\n".to_string(), "otlp.endpoint"),
        (
            "a test user who is no user",
            "sql:\n  testUser: nobody\n".to_string(),
            "sql.testUser: nobody is not one of sql.users",
        ),
        (
            "overlapping Raft ids",
            format!("sites:\n{}{}", site("site-a", 3, 100), site("site-b", 1, 101)),
            "Raft id 101 is used by site-a and site-b",
        ),
        ("no SQL user", "sql:\n  users: []\n".to_string(), "sql.users: give at least one user"),
        (
            "users in a Secret and no test user",
            "sql:\n  users: []\n  existingSecret: creds\n".to_string(),
            "sql.testUser: name the user of sql.existingSecret",
        ),
        (
            "Kafka settings from a Secret without its name",
            "kafka:\n  existingSecret:\n    settings:\n      sasl.password: password\n".to_string(),
            "kafka.existingSecret.name",
        ),
        ("certificates the chart would sign", "tls:\n  certificates: chart\n".to_string(), "tls.certificates"),
        ("a CA for the pods (removed)", "tls:\n  existingSecret: my-ca\n".to_string(), "existingSecret"),
        (
            "a store on each pod's own volume for a site of several pods",
            format!("sites:\n{}store:\n  enabled: true\n", site("site-a", 3, 100)),
            "store.existingClaim: site site-a runs 3 pods",
        ),
        (
            "a store without the site's KEK",
            "store:\n  enabled: true\nkek:\n  enabled: false\n".to_string(),
            "store.enabled: the site store is sealed",
        ),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, &values).expect("write");
        let err = run(&helm(), &["template", "tessera", chart_arg, "-f", base, "-f", file.to_str().expect("utf-8")])
            .expect_err(case);
        assert!(err.contains(expected), "{case}: expected {expected:?} in:\n{err}");
    }
}
