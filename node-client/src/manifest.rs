//! Software release manifests, format 1: what a software release URL points to when it is run
//! by the built-in [`crate::software::ManifestRunner`]. See `node-client/MANIFEST.md` for the
//! reference. Parsing and rendering are plain functions; running the steps is the runner's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::template::{self, TemplateError, Variables};

/// The one manifest format this agent reads.
pub const FORMAT: u32 = 1;
/// The software type a request without one gets.
pub const DEFAULT_TYPE: &str = "default";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    #[serde(default)]
    pub name: String,
    /// Run once, in order, in the software directory.
    #[serde(default)]
    pub install: Vec<InstallStep>,
    /// By software type.
    #[serde(default)]
    pub instance: BTreeMap<String, InstanceTemplate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallStep {
    pub run: Vec<String>,
    #[serde(default = "default_install_timeout")]
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceTemplate {
    #[serde(default)]
    pub file: Vec<FileTemplate>,
    #[serde(default)]
    pub process: Vec<ProcessTemplate>,
    pub promise: Option<PromiseTemplate>,
    /// Connection parameters the instance publishes, by name.
    #[serde(default)]
    pub connection: BTreeMap<String, String>,
    /// Connection parameters published for each shared instance the instance hosts.
    #[serde(default)]
    pub shared_connection: BTreeMap<String, String>,
    /// Connection parameters read from files the instance writes (paths relative to the
    /// partition, templates like the others), once its promise holds.
    #[serde(default)]
    pub connection_file: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTemplate {
    /// Relative to the partition directory.
    pub path: String,
    pub template: String,
    /// Permission bits (`0o755` for a script); 0o640 when absent.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessTemplate {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromiseTemplate {
    pub command: Vec<String>,
    /// How long the promise may take to hold (it is retried until then).
    #[serde(default = "default_promise_timeout")]
    pub timeout_s: u64,
}

fn default_install_timeout() -> u64 {
    3600
}
fn default_promise_timeout() -> u64 {
    30
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Toml(String),
    #[error("manifest format {0} is not supported (this agent reads format {FORMAT})")]
    Format(u32),
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("no software type {wanted:?} in the manifest (it has: {available})")]
    NoSuchType { wanted: String, available: String },
    #[error("{what}: {source}")]
    Template {
        what: String,
        #[source]
        source: TemplateError,
    },
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Self =
            toml::from_str(text).map_err(|e| ManifestError::Toml(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(ManifestError::Format(manifest.format));
        }
        for (i, step) in manifest.install.iter().enumerate() {
            if step.run.is_empty() {
                return Err(invalid(format!("install step {i}"), "empty command"));
            }
        }
        for (software_type, instance) in &manifest.instance {
            instance.check(software_type)?;
        }
        Ok(manifest)
    }

    /// The instance template for a requested software type (empty means the default one).
    pub fn instance(&self, software_type: &str) -> Result<&InstanceTemplate, ManifestError> {
        let wanted = if software_type.is_empty() {
            DEFAULT_TYPE
        } else {
            software_type
        };
        self.instance
            .get(wanted)
            .ok_or_else(|| ManifestError::NoSuchType {
                wanted: wanted.to_owned(),
                available: self.instance.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

impl InstanceTemplate {
    fn check(&self, software_type: &str) -> Result<(), ManifestError> {
        let mut names = BTreeSet::new();
        for process in &self.process {
            let what = format!("instance.{software_type} process {:?}", process.name);
            let good_name = !process.name.is_empty()
                && process
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !good_name {
                return Err(invalid(what, "names are letters, digits, '-' and '_'"));
            }
            if !names.insert(&process.name) {
                return Err(invalid(what, "defined twice"));
            }
            if process.command.is_empty() {
                return Err(invalid(what, "empty command"));
            }
        }
        for file in &self.file {
            relative_path(&file.path).ok_or_else(|| {
                invalid(
                    format!("instance.{software_type} file {:?}", file.path),
                    "must be a relative path without '..'",
                )
            })?;
            if file.mode.is_some_and(|m| m > 0o777) {
                return Err(invalid(
                    format!("instance.{software_type} file {:?}", file.path),
                    "mode holds permission bits only (at most 0o777)",
                ));
            }
        }
        for (name, path) in &self.connection_file {
            if self.connection.contains_key(name) {
                return Err(invalid(
                    format!("instance.{software_type} connection_file {name:?}"),
                    "also in connection",
                ));
            }
            relative_path(path).ok_or_else(|| {
                invalid(
                    format!("instance.{software_type} connection_file {name:?}"),
                    "must be a relative path without '..'",
                )
            })?;
        }
        if self.promise.as_ref().is_some_and(|p| p.command.is_empty()) {
            return Err(invalid(
                format!("instance.{software_type} promise"),
                "empty command",
            ));
        }
        Ok(())
    }

    /// Renders everything but the shared connection parameters.
    pub fn render(&self, variables: &Variables) -> Result<RenderedInstance, ManifestError> {
        let text = |what: String, template: &str| {
            template::render(template, variables)
                .map_err(|source| ManifestError::Template { what, source })
        };
        let mut files = Vec::new();
        for file in &self.file {
            let what = format!("file {}", file.path);
            files.push(RenderedFile {
                path: PathBuf::from(text(what.clone(), &file.path)?),
                contents: text(what, &file.template)?,
                mode: file.mode.unwrap_or(0o640),
            });
        }
        for file in &files {
            if relative_path(&file.path.to_string_lossy()).is_none() {
                return Err(invalid(
                    format!("file {}", file.path.display()),
                    "rendered to a path outside the partition",
                ));
            }
        }
        let mut processes = Vec::new();
        for process in &self.process {
            let what = format!("process {}", process.name);
            let command = process
                .command
                .iter()
                .map(|arg| text(what.clone(), arg))
                .collect::<Result<_, _>>()?;
            let env = process
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(what.clone(), v)?)))
                .collect::<Result<_, ManifestError>>()?;
            processes.push(RenderedProcess {
                name: process.name.clone(),
                command,
                env,
            });
        }
        let promise = match &self.promise {
            Some(promise) => Some(RenderedPromise {
                command: promise
                    .command
                    .iter()
                    .map(|arg| text("promise".into(), arg))
                    .collect::<Result<_, _>>()?,
                timeout: Duration::from_secs(promise.timeout_s),
            }),
            None => None,
        };
        let connection = self
            .connection
            .iter()
            .map(|(k, v)| Ok((k.clone(), text(format!("connection {k}"), v)?)))
            .collect::<Result<_, ManifestError>>()?;
        let mut connection_files = BTreeMap::new();
        for (name, path) in &self.connection_file {
            let what = format!("connection_file {name}");
            let path = text(what.clone(), path)?;
            if relative_path(&path).is_none() {
                return Err(invalid(what, "rendered to a path outside the partition"));
            }
            connection_files.insert(name.clone(), PathBuf::from(path));
        }
        Ok(RenderedInstance {
            files,
            processes,
            promise,
            connection,
            connection_files,
        })
    }

    /// The connection parameters for one shared instance.
    pub fn render_shared(
        &self,
        variables: &Variables,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        self.shared_connection
            .iter()
            .map(|(k, v)| {
                let value =
                    template::render(v, variables).map_err(|source| ManifestError::Template {
                        what: format!("shared_connection {k}"),
                        source,
                    })?;
                Ok((k.clone(), value))
            })
            .collect()
    }
}

/// A path inside the partition: relative, without `..`.
fn relative_path(path: &str) -> Option<&Path> {
    let path = Path::new(path);
    let inside = !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    inside.then_some(path)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedInstance {
    pub files: Vec<RenderedFile>,
    pub processes: Vec<RenderedProcess>,
    pub promise: Option<RenderedPromise>,
    pub connection: BTreeMap<String, String>,
    /// Published with `connection`, each read from its file (relative to the partition).
    pub connection_files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedProcess {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPromise {
    pub command: Vec<String>,
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
format = 1
name = "demo"

[[install]]
run = ["sh", "-c", "mkdir -p bin && echo ok > bin/built"]

[instance.default]
connection = { url = "http://[{{ partition.ipv6 }}]:{{ parameter.port or \"8080\" }}/" }
shared_connection = { site = "{{ shared.reference }}.example" }

[[instance.default.file]]
path = "etc/{{ instance.title }}.conf"
template = "listen {{ partition.ipv6 }}"

[[instance.default.process]]
name = "web"
command = ["{{ software.path }}/bin/web", "--port", "{{ parameter.port or \"8080\" }}"]
env = { HOME = "{{ partition.path }}" }

[instance.default.promise]
command = ["test", "-e", "run/web.ready"]
timeout_s = 5

[instance.default.connection_file]
key = "etc/{{ instance.title }}.pub"
"#;

    fn variables() -> Variables {
        [
            ("partition.ipv6", "fd00::100"),
            ("partition.path", "/srv/slappart0"),
            ("instance.title", "main"),
            ("software.path", "/opt/abc"),
            ("parameter.port", "9000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn renders_an_instance_from_the_demo_manifest() -> Result<(), ManifestError> {
        let manifest = Manifest::parse(DEMO)?;
        let instance = manifest.instance("")?.render(&variables())?;
        assert_eq!(instance.files[0].path, Path::new("etc/main.conf"));
        assert_eq!(instance.files[0].contents, "listen fd00::100");
        assert_eq!(
            instance.processes[0].command,
            ["/opt/abc/bin/web", "--port", "9000"]
        );
        assert_eq!(instance.processes[0].env["HOME"], "/srv/slappart0");
        assert_eq!(instance.connection["url"], "http://[fd00::100]:9000/");
        assert_eq!(instance.connection_files["key"], Path::new("etc/main.pub"));
        assert_eq!(
            instance.promise.map(|p| p.timeout),
            Some(Duration::from_secs(5))
        );
        let mut shared = variables();
        shared.insert("shared.reference".into(), "blog".into());
        assert_eq!(
            manifest.instance("default")?.render_shared(&shared)?["site"],
            "blog.example"
        );
        Ok(())
    }

    #[test]
    fn the_shipped_demo_release_renders() -> Result<(), ManifestError> {
        let manifest = Manifest::parse(include_str!("../releases/demo.toml"))?;
        let mut vars = variables();
        vars.insert("partition.reference".into(), "slappart0".into());
        let instance = manifest.instance("")?.render(&vars)?;
        assert_eq!(instance.connection["url"], "http://[fd00::100]:9000/");
        assert_eq!(instance.processes[0].command, ["/opt/abc/bin/serve"]);
        Ok(())
    }

    #[test]
    fn the_slapmaster_release_renders_a_replica_configuration() -> Result<(), ManifestError> {
        let manifest = Manifest::parse(include_str!(
            "../../master-cluster/releases/slapmaster.toml"
        ))?;
        let mut vars = variables();
        vars.insert("parameter.replica-id".into(), "4".into());
        vars.insert("parameter.roots".into(), "ROOT PEM".into());
        vars.insert("parameter.cluster".into(), "https://[fd00::1]:7000".into());
        let instance = manifest.instance("")?.render(&vars)?;
        assert_eq!(instance.connection["url"], "https://[fd00::100]:9000");
        assert_eq!(
            instance.connection_files["csr"],
            Path::new("etc/tls/replica.csr")
        );
        let config = &instance.files[0];
        assert_eq!(config.path, Path::new("etc/slapmaster.toml"));
        assert!(config.contents.contains("id = 4\n"), "{}", config.contents);
        assert!(
            config
                .contents
                .contains("advertise = \"https://[fd00::100]:9000\""),
            "{}",
            config.contents
        );
        let chain = instance
            .files
            .iter()
            .find(|f| f.path.ends_with("chain.pem"));
        assert_eq!(chain.map(|f| f.contents.as_str()), Some(""), "no chain yet");
        vars.remove("parameter.roots");
        assert!(
            manifest.instance("")?.render(&vars).is_err(),
            "roots required"
        );
        Ok(())
    }

    #[test]
    fn refuses_manifests_it_cannot_run_safely() {
        let cases = [
            ("format = 2", "format 2"),
            ("format = 1\n[[install]]\nrun = []", "empty command"),
            (
                "format = 1\n[[instance.default.file]]\npath = \"../etc/passwd\"\ntemplate = \"\"",
                "relative path",
            ),
            (
                "format = 1\n[[instance.default.process]]\nname = \"a b\"\ncommand = [\"x\"]",
                "names are",
            ),
            ("format = 1\nunknown = 1", "unknown field"),
            (
                "format = 1\n[instance.default.connection_file]\nkey = \"/etc/shadow\"",
                "relative path",
            ),
            (
                "format = 1\n[instance.default]\nconnection = { a = \"x\" }\nconnection_file = { a = \"a\" }",
                "also in connection",
            ),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let manifest = Manifest::parse(DEMO).expect("parses");
        assert!(matches!(
            manifest.instance("kvm"),
            Err(ManifestError::NoSuchType { .. })
        ));
        let mut escaping = variables();
        escaping.insert("instance.title".into(), "../../x".into());
        assert!(
            manifest
                .instance("")
                .and_then(|i| i.render(&escaping))
                .is_err()
        );
        let mut without_files = manifest.instance("").expect("default").clone();
        without_files.file.clear();
        let error = without_files
            .render(&escaping)
            .expect_err("escaping connection file");
        assert!(
            error.to_string().starts_with("connection_file key"),
            "{error}"
        );
    }
}
