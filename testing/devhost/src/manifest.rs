//! The subset of `spin.toml` (manifest version 2) that the devhost runs, and Spin's template and
//! allowed-host rules.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::spin_version::SpinVersion;

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawApplication {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    dependencies: BTreeMap<String, RawDependency>,
    dependencies_inherit_configuration: Option<bool>,
}

/// `[component.<id>.dependencies]` entry. Spin also takes registry packages, URLs and other
/// components of the app; the devhost takes local paths.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    path: Option<String>,
    export: Option<String>,
    inherit_configuration: Option<RawInherit>,
    version: Option<String>,
    registry: Option<String>,
    package: Option<String>,
    url: Option<String>,
    digest: Option<String>,
    component: Option<String>,
}

/// `inherit_configuration = true | false | ["capability_set", …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawInherit {
    All(bool),
    Some(Vec<String>),
}

/// An application variable.
#[derive(Clone, Debug)]
pub struct Variable {
    /// Default value, if any.
    pub default: Option<String>,
    /// Must be given a value.
    pub required: bool,
    /// Never printed.
    pub secret: bool,
}

/// A loaded application (one HTTP component is what the devhost serves).
#[derive(Clone, Debug)]
pub struct App {
    /// `[application] name`.
    pub name: String,
    /// Directory of the manifest (component sources are relative to it).
    pub dir: PathBuf,
    /// Application variables.
    pub variables: BTreeMap<String, Variable>,
    /// HTTP route of the component.
    pub route: String,
    /// The component id.
    pub component_id: String,
    /// Path of the component's `.wasm`.
    pub source: PathBuf,
    /// Allowed outbound host templates.
    pub allowed_outbound_hosts: Vec<String>,
    /// Declared key-value stores.
    pub key_value_stores: Vec<String>,
    /// Component variables: name → template over app variables.
    pub component_variables: BTreeMap<String, String>,
    /// `[component.<id>.dependencies]`, composed in before the component runs.
    pub dependencies: Vec<crate::compose::Dependency>,
}

impl App {
    /// Reads `spin.toml` (or `<dir>/spin.toml`) as the newest modelled Spin does.
    pub fn load(path: &Path) -> Result<App> {
        App::load_as(path, SpinVersion::default())
    }

    /// Reads `spin.toml` (or `<dir>/spin.toml`) as Spin `version` does: what that release's
    /// manifest schema refuses is refused here too (see [`SpinVersion`]).
    pub fn load_as(path: &Path, version: SpinVersion) -> Result<App> {
        let file = if path.is_dir() {
            path.join("spin.toml")
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let raw: RawManifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "{}: only spin_manifest_version = 2 is supported",
                file.display()
            );
        }
        let trigger = match raw.trigger.http.as_slice() {
            [one] => one,
            [] => bail!("{}: no [[trigger.http]]", file.display()),
            _ => bail!(
                "{}: the devhost serves one [[trigger.http]] component",
                file.display()
            ),
        };
        let comp = raw.component.get(&trigger.component).with_context(|| {
            format!(
                "trigger names component `{}`, which is not defined",
                trigger.component
            )
        })?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let variables = raw
            .variables
            .into_iter()
            .map(|(name, v)| {
                validate_variable_name(&name)?;
                if v.required && v.default.is_some() {
                    bail!("variable `{name}`: a required variable cannot have a default");
                }
                Ok((
                    name,
                    Variable {
                        default: v.default,
                        required: v.required,
                        secret: v.secret,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let dependencies = dependencies(&trigger.component, comp, &dir, version)
            .with_context(|| format!("parsing {}", file.display()))?;
        Ok(App {
            dependencies,
            name: raw.application.name,
            source: dir.join(&comp.source),
            dir,
            variables,
            route: trigger.route.clone(),
            component_id: trigger.component.clone(),
            allowed_outbound_hosts: comp.allowed_outbound_hosts.clone(),
            key_value_stores: comp.key_value_stores.clone(),
            component_variables: comp.variables.clone(),
        })
    }

    /// Resolves every application variable: `--variable`, then `SPIN_VARIABLE_<NAME>`, then the
    /// default. A required variable without a value is an error that names it.
    pub fn resolve_variables(
        &self,
        cli: &HashMap<String, String>,
        env: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        for name in cli.keys() {
            if !self.variables.contains_key(name) {
                bail!("--variable {name}: no such variable in [variables] of spin.toml");
            }
        }
        let mut out = HashMap::new();
        for (name, var) in &self.variables {
            let env_name = format!("SPIN_VARIABLE_{}", name.to_uppercase());
            let value = cli
                .get(name)
                .or_else(|| env.get(&env_name))
                .cloned()
                .or_else(|| var.default.clone());
            match value {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None if var.required => bail!(
                    "variable `{name}` is required but has no value: pass `--variable {name}=...` or set {env_name}"
                ),
                None => {}
            }
        }
        Ok(out)
    }

    /// The component's variables, rendered from the application's.
    pub fn component_variables(
        &self,
        app_values: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        self.component_variables
            .iter()
            .map(|(k, t)| {
                Ok((
                    k.clone(),
                    render(t, app_values).with_context(|| format!("component variable `{k}`"))?,
                ))
            })
            .collect()
    }

    /// The allowed outbound hosts, rendered and parsed. Like Spin, an entry that renders to an
    /// invalid host (e.g. `postgres://:5432` from an empty default) is an error at start.
    pub fn allowed_hosts(&self, app_values: &HashMap<String, String>) -> Result<Vec<AllowedHost>> {
        self.allowed_outbound_hosts
            .iter()
            .map(|t| {
                let rendered = render(t, app_values)?;
                AllowedHost::parse(&rendered).with_context(|| {
                    let used = template_variables(t);
                    let hint = if used.is_empty() {
                        String::new()
                    } else {
                        format!("; check the value of {}", used.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "))
                    };
                    format!("invalid allowed host `{rendered}` (from `{t}` in allowed_outbound_hosts){hint}")
                })
            })
            .collect()
    }

    /// Variable names whose values must never be printed.
    pub fn secret_values(&self, app_values: &HashMap<String, String>) -> Vec<String> {
        self.variables
            .iter()
            .filter(|(_, v)| v.secret)
            .filter_map(|(k, _)| app_values.get(k).filter(|v| !v.is_empty()).cloned())
            .collect()
    }
}

/// The component's dependencies, with Spin's inheritance rules: the component-wide
/// `dependencies_inherit_configuration` and a dependency's own `inherit_configuration` exclude
/// each other; absent means inherit nothing. Before Spin 4.0 a dependency has no
/// `inherit_configuration` of its own: Spin 3.x's untagged `ComponentDependency` matches no
/// variant and the app does not load (checked on a real Spin 3.6.3).
fn dependencies(
    id: &str,
    comp: &RawComponent,
    dir: &Path,
    version: SpinVersion,
) -> Result<Vec<crate::compose::Dependency>> {
    use crate::compose::{Dependency, Inherit};
    comp.dependencies
        .iter()
        .map(|(name, dep)| {
            let context = || format!("component `{id}`, dependency `{name}`");
            if dep.version.is_some()
                || dep.registry.is_some()
                || dep.package.is_some()
                || dep.url.is_some()
                || dep.digest.is_some()
                || dep.component.is_some()
            {
                bail!(
                    "{}: the devhost composes dependencies from a local `path` only (not registry packages, URLs or app components)",
                    context()
                );
            }
            if dep.inherit_configuration.is_some() && !version.per_dependency_inherit() {
                bail!(
                    "{}: data did not match any variant of untagged enum ComponentDependency (as Spin {version} says: a dependency's own `inherit_configuration` arrived with Spin 4.0; for Spin 3.x put `dependencies_inherit_configuration = true` under [component.{id}] instead, which every Spin reads)",
                    context()
                );
            }
            let path = dep
                .path
                .as_deref()
                .with_context(|| format!("{}: needs `path = \"<file>.wasm\"`", context()))?;
            let inherit = match (comp.dependencies_inherit_configuration, &dep.inherit_configuration) {
                (Some(_), Some(_)) => bail!(
                    "{}: use either `dependencies_inherit_configuration` on the component or `inherit_configuration` on the dependency, not both",
                    context()
                ),
                (Some(true), None) | (None, Some(RawInherit::All(true))) => Inherit::All,
                (None, Some(RawInherit::Some(sets))) => Inherit::Sets(sets.clone()),
                _ => Inherit::Sets(Vec::new()),
            };
            Ok(Dependency {
                name: name.clone(),
                path: dir.join(path),
                export: dep.export.clone(),
                inherit,
            })
        })
        .collect()
}

fn validate_variable_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!("variable name `{name}` must be lower_snake_case");
    }
    Ok(())
}

/// The variable names a template uses.
pub fn template_variables(template: &str) -> Vec<String> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|part| {
            part.split_once("}}")
                .map(|(name, _)| name.trim().to_owned())
        })
        .collect()
}

/// Renders `{{ name }}` templates.
pub fn render(template: &str, values: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("unclosed `{{{{` in `{template}`"))?;
        let name = after[..end].trim();
        let value = values.get(name).with_context(|| {
            format!("template `{template}` uses variable `{name}`, which has no value")
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One `allowed_outbound_hosts` entry: `scheme://host:port`, each part possibly `*`; a host may
/// be `*.domain` (any subdomain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

impl AllowedHost {
    /// Parses an entry.
    pub fn parse(text: &str) -> Result<AllowedHost> {
        let (scheme, rest) = text
            .split_once("://")
            .context("an allowed host needs a scheme, e.g. https://example.com")?;
        if scheme.is_empty() {
            bail!("empty scheme");
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("an allowed host must not have a path");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        if host.is_empty() {
            bail!("empty host");
        }
        if let Some(p) = port
            && p != "*"
            && !(p.parse::<u16>().is_ok() || is_port_range(p))
        {
            bail!("invalid port `{p}`");
        }
        Ok(AllowedHost {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port: port.map(str::to_owned),
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host = host.to_ascii_lowercase();
        let host_ok = self.host == "*"
            || self.host == host
            || self
                .host
                .strip_prefix("*.")
                .is_some_and(|d| host.ends_with(&format!(".{d}")));
        let port_ok = match &self.port {
            Some(p) if p == "*" => true,
            Some(p) if is_port_range(p) => {
                let (a, b) = p.split_once("..").unwrap();
                let (a, b) = (a.parse::<u16>().unwrap_or(0), b.parse::<u16>().unwrap_or(0));
                (a..b).contains(&port)
            }
            Some(p) => p.parse::<u16>().ok() == Some(port),
            None => default_port(scheme) == Some(port),
        };
        scheme_ok && host_ok && port_ok
    }
}

fn is_port_range(p: &str) -> bool {
    p.split_once("..")
        .is_some_and(|(a, b)| a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok())
}

/// Default port of a scheme.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_host_matching() {
        let cases = [
            ("https://example.com", "https", "example.com", 443, true),
            ("https://example.com", "https", "example.com", 8443, false),
            ("https://example.com", "http", "example.com", 80, false),
            ("http://127.0.0.1:8787", "http", "127.0.0.1", 8787, true),
            ("http://127.0.0.1:8787", "http", "localhost", 8787, false),
            (
                "postgres://*:5432",
                "postgres",
                "ep-1.database.cloud.databricks.com",
                5432,
                true,
            ),
            ("postgres://*:5432", "postgres", "h", 5433, false),
            (
                "postgres://*.cloud.databricks.com:5432",
                "postgres",
                "ep.database.cloud.databricks.com",
                5432,
                true,
            ),
            (
                "postgres://*.cloud.databricks.com:5432",
                "postgres",
                "cloud.databricks.com.evil",
                5432,
                false,
            ),
            ("*://example.com:*", "http", "example.com", 1234, true),
            (
                "https://example.com:8000..8010",
                "https",
                "example.com",
                8005,
                true,
            ),
            (
                "https://example.com:8000..8010",
                "https",
                "example.com",
                8010,
                false,
            ),
        ];
        for (entry, scheme, host, port, want) in cases {
            let a = AllowedHost::parse(entry).unwrap();
            assert_eq!(
                a.allows(scheme, host, port),
                want,
                "{entry} vs {scheme}://{host}:{port}"
            );
        }
        for bad in [
            "postgres://:5432",
            "example.com",
            "https://x/path",
            "https://h:port",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render() {
        let v: HashMap<String, String> = [("a".to_owned(), "1".to_owned())].into();
        assert_eq!(render("x{{ a }}y{{a}}", &v).unwrap(), "x1y1");
        assert!(render("{{ b }}", &v).is_err());
    }

    /// A manifest with one dependency, given `component_extra` under the component and
    /// `dep_extra` inside the dependency's table.
    fn with_dependency(component_extra: &str, dep_extra: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "devhost-manifest-{}-{}",
            std::process::id(),
            component_extra.len() * 10 + dep_extra.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("spin.toml");
        std::fs::write(
            &file,
            format!(
                r#"spin_manifest_version = 2
[application]
name = "deps"
[[trigger.http]]
route = "/..."
component = "app"
[component.app]
source = "app.wasm"
{component_extra}
[component.app.dependencies]
"spin:postgres/postgres@4.0.0" = {{ path = "plugin.wasm"{dep_extra} }}
"#
            ),
        )
        .unwrap();
        file
    }

    #[test]
    fn dependency_inheritance_forms_by_spin_version() {
        use crate::compose::Inherit;
        let v3 = SpinVersion::new(3, 6, 3);
        let v4 = SpinVersion::new(4, 0, 2);
        let per_dependency = with_dependency("", ", inherit_configuration = true");
        let component_wide = with_dependency("dependencies_inherit_configuration = true", "");
        let both = with_dependency(
            "dependencies_inherit_configuration = true",
            ", inherit_configuration = true",
        );

        // Spin 3.x: only the component-wide switch; the per-dependency form does not load.
        let e = format!("{:#}", App::load_as(&per_dependency, v3).unwrap_err());
        assert!(
            e.contains("did not match any variant of untagged enum ComponentDependency")
                && e.contains("dependencies_inherit_configuration = true"),
            "{e}"
        );
        for version in [v3, v4, SpinVersion::default()] {
            let app = App::load_as(&component_wide, version).unwrap();
            assert!(
                matches!(app.dependencies[0].inherit, Inherit::All),
                "{version}"
            );
            assert!(
                App::load_as(&both, version).is_err(),
                "{version}: both forms"
            );
        }
        // Spin 4.0 and later read the per-dependency form too.
        for version in [v4, SpinVersion::default()] {
            let app = App::load_as(&per_dependency, version).unwrap();
            assert!(
                matches!(app.dependencies[0].inherit, Inherit::All),
                "{version}"
            );
        }
        // Without either, the dependency inherits nothing.
        let neither = with_dependency("", "");
        let app = App::load_as(&neither, v3).unwrap();
        assert!(
            matches!(&app.dependencies[0].inherit, Inherit::Sets(s) if s.is_empty()),
            "no inheritance"
        );
    }
}
