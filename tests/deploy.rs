//! The Kubernetes kit in `deploy/kubernetes/`, checked without a cluster:
//!
//! - every manifest passes `kubernetes-validate --strict`, which holds the Kubernetes OpenAPI
//!   schemas of each release (strict: a field the schema does not know is an error), for the
//!   oldest and the newest release the kit is written for, every document of every file; and a
//!   copy of a manifest with a misspelt field, or a value of the wrong type, is refused: the
//!   validator checks the schema, it does not just parse YAML;
//! - what no schema knows: the ConfigMap's `bootstorm.toml`, its root moved to a temporary
//!   directory, passes `bootstorm check` with each workload's own flags; each workload runs the
//!   binary directly (no shell: the image's file capability must reach it) with the file where
//!   the ConfigMap is mounted, mounts the root where the file says, runs in the mode its network
//!   needs (on the node's network the default mode; behind the LoadBalancer Service
//!   `--single-port`, the Service on UDP 69 with `externalTrafficPolicy: Local`), keeps the
//!   security settings, and names one metrics port in the file, the container and the
//!   annotations;
//! - every liveness and readiness probe command, run as written against a real bootstorm started
//!   with the workload's command line and the ConfigMap's file (the probe's `127.0.0.1:69`
//!   moved to the test server's port), exits 0, and exits 1 once the probed file is gone; the
//!   probe's own time limit fits in the probe's `timeoutSeconds`;
//! - as root: each workload's command, run the way its security context has the runtime start it
//!   (`setpriv` in a network namespace of the test's: the pod's uid and gid, the added
//!   capabilities as the bounding set, `no_new_privs`, the pod's sysctls) with a copy of the
//!   binary carrying the image's file capability, binds port 69; without the added capability
//!   the kernel does not run the binary; the DaemonSet's through a shell cannot bind (the file
//!   capability is lost under `no_new_privs`), the Deployment's binds by its sysctl alone.
//!
//! Needs python3 with the `kubernetes_validate` module (scripts/test.sh installs it; it brings
//! PyYAML, which reads the manifests here), and for the last part root, `unshare`, `setpriv` and
//! `setcap`. Traffic goes only to 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Server, bin, cannot_run, run_code};
use serde_json::Value;

/// The kit's manifests.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// The Kubernetes releases whose schemas the manifests must pass: the oldest the kit is written
/// for and the newest the validator holds.
const RELEASES: [&str; 2] = ["1.25.0", "1.37.0"];

/// Where the workloads read the configuration (their `--config`).
const CONFIG: &str = "/etc/bootstorm/bootstorm.toml";

/// The Python interpreter with the validator, or `None` (after `cannot_run`) when it is missing.
fn python() -> Option<&'static str> {
    let probe = Command::new("python3").args(["-c", "import kubernetes_validate, yaml"]).output();
    match probe {
        Ok(out) if out.status.success() => Some("python3"),
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string();
            cannot_run(&format!("python3 without kubernetes-validate (pip install kubernetes-validate): {why}"));
            None
        }
        Err(e) => {
            cannot_run(&format!("no python3: {e}"));
            None
        }
    }
}

/// Every `*.yaml` file of the kit, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests in {DIR}: {files:?}");
    files
}

/// The documents of a YAML file, read by PyYAML and handed over as JSON.
fn documents(py: &str, file: &Path) -> Vec<Value> {
    let script = "import sys, json, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let out = Command::new(py).args(["-c", script]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("{}: {other}", file.display()),
    }
}

/// Every document of the kit.
fn all_documents(py: &str) -> Vec<Value> {
    manifests().iter().flat_map(|f| documents(py, f)).collect()
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind && d["metadata"]["name"] == name);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind} {name}"));
    assert!(found.next().is_none(), "two of {kind} {name}");
    doc
}

/// Runs the validator, strict, on `files` against `release`: exit code and output.
fn validate(py: &str, release: &str, files: &[PathBuf]) -> (Option<i32>, String) {
    run_code(
        Command::new(py).args(["-m", "kubernetes_validate", "--strict", "-k", release]).args(files),
        Duration::from_secs(60),
    )
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas() {
    let Some(py) = python() else { return };
    let files = manifests();
    let docs = all_documents(py).len();
    for release in RELEASES {
        let (code, out) = validate(py, release, &files);
        assert_eq!(code, Some(0), "against {release}:\n{out}");
        // Each document was checked against its schema, none skipped or merely warned about.
        assert_eq!(out.matches(" passed for resource ").count(), docs, "against {release}:\n{out}");
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "against {release}:\n{out}");
    }
}

#[test]
fn a_misspelt_field_or_a_wrongly_typed_value_is_refused() {
    let Some(py) = python() else { return };
    let good = std::fs::read_to_string(Path::new(DIR).join("daemonset.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("runAsNonRoot: true", "runAsNonroot: true", "'runAsNonroot' was unexpected"),
        ("containerPort: 69\n", "containerPort: tftp\n", "'tftp' is not of type 'integer'"),
        ("dnsPolicy: ClusterFirstWithHostNet", "dnsPolicy: [ClusterFirstWithHostNet]", "is not of type 'string'"),
    ];
    for (from, to, why) in cases {
        assert_eq!(good.matches(from).count(), 1, "{from:?} in daemonset.yaml");
        let bad = dir.path().join("daemonset.yaml");
        std::fs::write(&bad, good.replacen(from, to, 1)).unwrap();
        for release in RELEASES {
            let (code, out) = validate(py, release, std::slice::from_ref(&bad));
            assert_eq!(code, Some(1), "{to:?} against {release}:\n{out}");
            assert!(out.contains(why), "{to:?} against {release}:\n{out}");
        }
    }
}

/// A workload of the kit: its pod template and its one container.
struct Workload {
    kind: &'static str,
    template: Value,
    container: Value,
}

impl Workload {
    fn of(docs: &[Value], kind: &'static str, name: &str) -> Self {
        let template = find(docs, kind, name)["spec"]["template"].clone();
        let containers = template["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{kind} {name}");
        let container = containers[0].clone();
        Self { kind, template, container }
    }

    fn both(docs: &[Value]) -> [Self; 2] {
        [Self::of(docs, "DaemonSet", "bootstorm"), Self::of(docs, "Deployment", "bootstorm-lb")]
    }

    fn pod(&self) -> &Value {
        &self.template["spec"]
    }

    /// The container's command line.
    fn command(&self) -> Vec<String> {
        strings(&self.container["command"])
    }

    /// The flags after `--config FILE`, which the workload adds to the file.
    fn flags(&self) -> Vec<String> {
        let cmd = self.command();
        assert_eq!(cmd[..3], ["/usr/bin/bootstorm", "--config", CONFIG], "{}: {cmd:?}", self.kind);
        assert!(self.container["args"].is_null(), "{}: args besides command", self.kind);
        cmd[3..].to_vec()
    }

    /// Where the volume `name` is mounted, and whether read-only.
    fn mount_of(&self, volume: &str) -> (String, bool) {
        let mounts = self.container["volumeMounts"].as_array().unwrap();
        let m = mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{}: no mount of {volume}", self.kind));
        (m["mountPath"].as_str().unwrap().to_string(), m["readOnly"] == true)
    }

    /// The container port named `name`: its number and protocol.
    fn port(&self, name: &str) -> (u64, String) {
        let ports = self.container["ports"].as_array().unwrap();
        let p = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{}: no port {name}", self.kind));
        (p["containerPort"].as_u64().unwrap(), p["protocol"].as_str().unwrap_or("TCP").to_string())
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The ConfigMap's `bootstorm.toml`, parsed.
fn config(docs: &[Value]) -> toml::Table {
    let text = find(docs, "ConfigMap", "bootstorm-config")["data"]["bootstorm.toml"].as_str().unwrap();
    text.parse().unwrap()
}

/// The ConfigMap's file with its root moved to `root`, written to a file in `dir`.
fn config_file(docs: &[Value], root: &Path, dir: &Path) -> PathBuf {
    let mut table = config(docs);
    assert!(table.contains_key("root"), "the ConfigMap names no root");
    table.insert("root".into(), toml::Value::String(root.to_str().unwrap().into()));
    let file = dir.join("bootstorm.toml");
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    file
}

#[test]
fn the_configmap_passes_bootstorm_check_with_each_workloads_flags() {
    let Some(py) = python() else { return };
    let docs = all_documents(py);
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&docs, root.path(), dir.path());
    for w in Workload::both(&docs) {
        let mut cmd = Command::new(bin());
        cmd.args(["check", "--config", file.to_str().unwrap()]).args(w.flags());
        let (code, out) = run_code(&mut cmd, Duration::from_secs(30));
        assert_eq!(code, Some(0), "{}: {cmd:?}:\n{out}", w.kind);
        assert!(out.contains(": ok"), "{}: {out}", w.kind);
    }
    // And a file bootstorm refuses is refused here: the check is a real one.
    std::fs::write(&file, "root = \"/nonexistent/tftp\"\nmax_blksize = 1468\n").unwrap();
    let (code, out) =
        run_code(Command::new(bin()).args(["check", "--config", file.to_str().unwrap()]), Duration::from_secs(30));
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn each_workload_runs_the_mode_its_network_needs_with_the_security_settings() {
    let Some(py) = python() else { return };
    let docs = all_documents(py);
    let conf = config(&docs);
    let map = find(&docs, "ConfigMap", "bootstorm-config");
    let metrics_port: u64 =
        conf["metrics"].as_str().expect("metrics in the ConfigMap").rsplit(':').next().unwrap().parse().unwrap();
    let grace = conf.get("grace").and_then(toml::Value::as_float).unwrap_or(10.0);
    // The probes reach the server at 127.0.0.1:69: it must listen there, and let it in.
    if let Some(listen) = conf.get("listen") {
        let listen = listen.to_string();
        assert!(["0.0.0.0:69", "\":69\"", "127.0.0.1:69"].iter().any(|a| listen.contains(a)), "listen {listen}");
    }
    let allow = conf.get("allow").map(|a| a.to_string()).unwrap_or_default();
    assert!(allow.is_empty() || allow.contains("127.0.0.0/8") || allow.contains("127.0.0.1"), "allow {allow}");
    assert!(conf.get("single-port").is_none(), "the mode belongs to each workload's command line");

    for w in Workload::both(&docs) {
        let kind = w.kind;
        let pod = w.pod();
        let flags = w.flags();
        // The configuration: the ConfigMap's key, mounted where --config reads it.
        let volumes = pod["volumes"].as_array().unwrap();
        let cm = volumes.iter().find(|v| v["configMap"]["name"] == map["metadata"]["name"]).expect("ConfigMap volume");
        let (at, ro) = w.mount_of(cm["name"].as_str().unwrap());
        assert!(ro && format!("{at}/bootstorm.toml") == CONFIG, "{kind}: ConfigMap at {at}");
        // The root: the file's root, mounted read-only.
        assert_eq!(w.mount_of("root"), (conf["root"].as_str().unwrap().to_string(), true), "{kind}");

        // The mode.
        let host_network = pod["hostNetwork"] == true;
        let single_port = flags.iter().any(|f| f == "--single-port");
        match kind {
            "DaemonSet" => {
                assert!(host_network && !single_port, "{kind}: hostNetwork in the default mode");
                assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{kind}");
            }
            _ => assert!(!host_network && single_port, "{kind}: behind the Service in --single-port"),
        }

        // Security: non-root with a fixed uid, nothing but NET_BIND_SERVICE, no escalation.
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{kind}");
        assert!(sc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{kind}: runAsUser {}", sc["runAsUser"]);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{kind}");
        let csc = &w.container["securityContext"];
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{kind}");
        assert_eq!(strings(&csc["capabilities"]["drop"]), ["ALL"], "{kind}");
        assert_eq!(strings(&csc["capabilities"]["add"]), ["NET_BIND_SERVICE"], "{kind}");
        assert!(csc["privileged"].is_null() || csc["privileged"] == false, "{kind}");

        // Ports and metrics.
        assert_eq!(w.port("tftp"), (69, "UDP".to_string()), "{kind}");
        assert_eq!(w.port("metrics"), (metrics_port, "TCP".to_string()), "{kind}");
        let ann = &w.template["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{kind}");
        assert_eq!(ann["prometheus.io/port"], metrics_port.to_string(), "{kind}");

        // Workers match the CPUs asked for; stopping leaves transfers their grace.
        if let Some(workers) = conf.get("workers").and_then(toml::Value::as_integer) {
            assert_eq!(w.container["resources"]["requests"]["cpu"], workers.to_string(), "{kind}: cpu and workers");
        }
        let term = pod["terminationGracePeriodSeconds"].as_f64().unwrap_or(30.0);
        assert!(term > grace, "{kind}: terminationGracePeriodSeconds {term} within grace {grace}");
    }

    // The Service in front of the Deployment: UDP 69, the client's address kept.
    let deployment = Workload::of(&docs, "Deployment", "bootstorm-lb");
    let labels = &deployment.template["metadata"]["labels"];
    let svc = find(&docs, "Service", "bootstorm");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert!(ports.iter().all(|p| p["protocol"] == "UDP" && p["port"] == 69 && p["targetPort"] == "tftp"), "{ports:?}");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the Deployment's pods");
    }
    let pdb = find(&docs, "PodDisruptionBudget", "bootstorm-lb");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the budget covers the Deployment's pods");
    }
}

/// The `--timeout` a probe command gives (2 s by default).
fn probe_timeout(cmd: &[String]) -> f64 {
    cmd.iter().position(|a| a == "--timeout").map_or(2.0, |i| cmd[i + 1].parse().unwrap())
}

#[test]
fn the_probes_pass_against_a_server_run_as_the_workload_runs_it() {
    let Some(py) = python() else { return };
    let docs = all_documents(py);
    for w in Workload::both(&docs) {
        let kind = w.kind;
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = config_file(&docs, root.path(), dir.path());
        // The workload's own command line; the test's server listens on loopback ports of its own
        // and serves its metrics on a free loopback port.
        let mut extra = vec!["--config".to_string(), file.to_str().unwrap().to_string()];
        extra.extend(w.flags());
        extra.extend(["--metrics".to_string(), "127.0.0.1:0".to_string()]);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = Server::start(root.path(), "auto", &extra);
        let addr = server.v4.to_string();

        for probe in ["livenessProbe", "readinessProbe"] {
            let spec = &w.container[probe];
            let cmd = strings(&spec["exec"]["command"]);
            assert_eq!(cmd[..2], ["/usr/bin/bootstorm", "probe"], "{kind} {probe}: {cmd:?}");
            let at = cmd.iter().position(|a| a == "127.0.0.1:69").unwrap_or_else(|| panic!("{kind} {probe}: {cmd:?}"));
            // The probe's whole run (five times its timeout) ends before Kubernetes gives up on it.
            let limit = spec["timeoutSeconds"].as_f64().unwrap_or(1.0);
            assert!(5.0 * probe_timeout(&cmd) < limit, "{kind} {probe}: timeoutSeconds {limit} for {cmd:?}");
            let name = cmd.last().unwrap().clone();
            let mut args = cmd[1..].to_vec();
            args[at - 1] = addr.clone();

            std::fs::write(root.path().join(&name), common::bytes(50_000, 7)).unwrap();
            let (code, out) = run_code(Command::new(bin()).args(&args), Duration::from_secs_f64(limit));
            assert_eq!(code, Some(0), "{kind} {probe}: {args:?}:\n{out}\n{}", server.log());
            assert!(out.starts_with(&format!("ok {addr} {name} 50000 bytes in ")), "{kind} {probe}: {out}");

            std::fs::remove_file(root.path().join(&name)).unwrap();
            let (code, out) = run_code(Command::new(bin()).args(&args), Duration::from_secs_f64(limit));
            assert_eq!(code, Some(1), "{kind} {probe}: {args:?} without the file:\n{out}");
            assert!(out.contains("file not found"), "{kind} {probe}: {out}");
        }
        let (status, log) = server.stop();
        assert!(status.success(), "{kind}: {log}");
    }
}

/// Whether the tests may run processes as other users in network namespaces of their own, with
/// the tools that needs; `cannot_run` otherwise.
fn can_run_as_pod() -> bool {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        cannot_run("needs root (network namespaces, other users)");
        return false;
    }
    for tool in ["unshare", "setpriv", "setcap", "timeout"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            cannot_run(&format!("{tool} missing"));
            return false;
        }
    }
    true
}

/// Runs `program` with the workload's command line the way its security context has the
/// runtime start it, in a network namespace of its own listening on 127.0.0.1:69 for three
/// seconds: as the pod's uid and gid, the bounding set `bounding` (the capabilities added),
/// `no_new_privs` (allowPrivilegeEscalation: false) and the pod's sysctls. `setpriv` stands in for
/// the runtime: like runc, it sets the ids and the bounding set keeping the permitted
/// capabilities, then execs the command. `shell` puts `sh -c` in between. Exit code and output.
fn run_as_pod(w: &Workload, program: &Path, config: &Path, bounding: &str, shell: bool) -> (Option<i32>, String) {
    let sc = &w.pod()["securityContext"];
    let (uid, gid) = (sc["runAsUser"].as_u64().unwrap(), sc["runAsGroup"].as_u64().unwrap());
    let mut setup = String::from("ip link set lo up");
    for s in sc["sysctls"].as_array().into_iter().flatten() {
        let (name, value) = (s["name"].as_str().unwrap(), s["value"].as_str().unwrap());
        setup += &format!(" && echo {value} > /proc/sys/{}", name.replace('.', "/"));
    }
    let mut nnp = "";
    if w.container["securityContext"]["allowPrivilegeEscalation"] == false {
        nnp = "--no-new-privs";
    }
    let mut cmd = format!("{} --config {}", program.display(), config.display());
    for f in w.flags() {
        cmd += &format!(" {f}");
    }
    cmd += " --listen 127.0.0.1:69 --workers 1 --metrics 127.0.0.1:0";
    if shell {
        cmd = format!("sh -c '{cmd}'");
    }
    let script = format!(
        "{setup} && exec timeout -s TERM 3 setpriv --reuid {uid} --regid {gid} --clear-groups --inh-caps=-all \
         {nnp} --bounding-set=-all{bounding} {cmd}"
    );
    run_code(Command::new("unshare").args(["-n", "sh", "-c", &script]), Duration::from_secs(20))
}

#[test]
fn the_security_settings_let_each_workload_bind_port_69_as_the_kernel_applies_them() {
    let Some(py) = python() else { return };
    if !can_run_as_pod() {
        return;
    }
    let docs = all_documents(py);
    // The image's binary: CAP_NET_BIND_SERVICE as a file capability (Containerfile); and the
    // same without it. In a directory the pod's user may enter, as the root and the config.
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    for d in [dir.path(), root.path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let config = config_file(&docs, root.path(), dir.path());
    let with_cap = dir.path().join("bootstorm");
    let plain = dir.path().join("bootstorm-plain");
    std::fs::copy(bin(), &with_cap).unwrap();
    std::fs::copy(bin(), &plain).unwrap();
    let (ok, out) =
        common::run(Command::new("setcap").arg("cap_net_bind_service=+ep").arg(&with_cap), Duration::from_secs(10));
    assert!(ok, "setcap: {out}");

    for w in Workload::both(&docs) {
        let kind = w.kind;
        let added: String = strings(&w.container["securityContext"]["capabilities"]["add"])
            .iter()
            .map(|c| format!(",+{}", c.to_lowercase()))
            .collect();
        // As the manifest has it: the server binds port 69.
        let (_, out) = run_as_pod(&w, &with_cap, &config, &added, false);
        assert!(out.contains("listening on 127.0.0.1:69"), "{kind}:\n{out}");
        // Without the added capability the kernel does not run the image's binary at all.
        let (code, out) = run_as_pod(&w, &with_cap, &config, "", false);
        assert!(code != Some(124) && out.contains("Operation not permitted"), "{kind}: {code:?}\n{out}");
        match kind {
            // On the node's network the file capability is what binds port 69: run through a
            // shell, under no_new_privs, the binary does not get it.
            "DaemonSet" => {
                let (_, out) = run_as_pod(&w, &with_cap, &config, &added, true);
                assert!(out.contains("port 69 needs root or CAP_NET_BIND_SERVICE"), "{kind}:\n{out}");
            }
            // In its own network namespace the sysctl binds it, even without the file capability.
            _ => {
                let (_, out) = run_as_pod(&w, &plain, &config, &added, false);
                assert!(out.contains("listening on 127.0.0.1:69"), "{kind}:\n{out}");
            }
        }
    }
}
