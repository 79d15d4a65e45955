//! Component dependencies: plugs `[component.<id>.dependencies]` into the app component before
//! it runs, as Spin does (with `wac-graph`).
//!
//! A dependency named by an interface (`spin:postgres/postgres@4.2.0`) satisfies exactly that
//! import; one named by a package (`lakebase:postgres`) satisfies every import of the package.
//! The dependency's export of the same name is used (or the one named by `export`). Imports that
//! no dependency satisfies stay imports of the composed component, merged by name.
//!
//! A dependency gets none of the parent's capabilities unless it inherits them: its imports of
//! Spin's interfaces are then answered by a deny adapter (`testing/deny-adapter`), whose
//! functions fail with `"<interface>" is not permitted`, as on Spin.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wac_graph::types::{Package, SubtypeChecker};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

/// What a dependency inherits from its parent component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inherit {
    /// Everything (`inherit_configuration = true`).
    All,
    /// These capability sets only (`inherit_configuration = ["key_value_stores", …]`); empty:
    /// nothing (`false` or absent).
    Sets(Vec<String>),
}

/// One `[component.<id>.dependencies]` entry with a local `path`.
#[derive(Clone, Debug)]
pub struct Dependency {
    /// The key: an interface (`ns:pkg/iface@ver`) or package (`ns:pkg`) name.
    pub name: String,
    /// The `.wasm` that provides it.
    pub path: PathBuf,
    /// Which of its exports to use (default: the one named like the import).
    pub export: Option<String>,
    /// What it inherits.
    pub inherit: Inherit,
}

/// Spin's capability sets that the devhost can deny, and the interfaces each one covers.
/// (`allowed_outbound_hosts` also covers outbound HTTP and sockets on Spin; the devhost's deny
/// adapter does not deny those: see the README.)
const CAPABILITY_SETS: &[(&str, &[&str])] = &[
    ("allowed_outbound_hosts", &["spin:postgres/postgres@4.2.0"]),
    (
        "key_value_stores",
        &[
            "spin:key-value/key-value@3.0.0",
            "fermyon:spin/key-value@2.0.0",
        ],
    ),
    (
        "variables",
        &[
            "spin:variables/variables@3.0.0",
            "fermyon:spin/variables@2.0.0",
        ],
    ),
];

/// The capability sets Spin knows (others are ignored by Spin; the devhost warns).
const KNOWN_SETS: &[&str] = &[
    "ai_models",
    "allowed_outbound_hosts",
    "environment",
    "files",
    "key_value_stores",
    "sqlite_databases",
    "variables",
];

/// The interfaces a dependency that inherits `sets` may use for real.
fn allowed_interfaces(sets: &[String]) -> Vec<&'static str> {
    for s in sets {
        if !KNOWN_SETS.contains(&s.as_str()) {
            eprintln!(
                "devhost: inherit_configuration names `{s}`, which is not a capability set (Spin ignores it); known: {}",
                KNOWN_SETS.join(", ")
            );
        }
    }
    CAPABILITY_SETS
        .iter()
        .filter(|(set, _)| sets.iter().any(|s| s == set))
        .flat_map(|(_, ifaces)| ifaces.iter().copied())
        .collect()
}

/// A WIT name split into package (`ns:pkg`), interface and version; plain names have no package.
#[derive(Debug, PartialEq, Eq)]
struct WitName<'a> {
    package: Option<&'a str>,
    interface: Option<&'a str>,
    version: Option<&'a str>,
    plain: &'a str,
}

fn parse_name(name: &str) -> WitName<'_> {
    let (rest, version) = match name.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (name, None),
    };
    if !rest.contains(':') {
        return WitName {
            package: None,
            interface: None,
            version,
            plain: name,
        };
    }
    let (package, interface) = match rest.split_once('/') {
        Some((p, i)) => (p, Some(i)),
        None => (rest, None),
    };
    WitName {
        package: Some(package),
        interface,
        version,
        plain: name,
    }
}

/// Whether the dependency key `dep` satisfies the import `import` (Spin's rule: same package,
/// and the same interface and version where the key names them).
pub fn matches_import(dep: &str, import: &str) -> bool {
    let (d, i) = (parse_name(dep), parse_name(import));
    match (d.package, i.package) {
        (None, None) => d.plain == i.plain,
        (Some(dp), Some(ip)) => {
            dp == ip
                && d.interface.is_none_or(|x| Some(x) == i.interface)
                && d.version.is_none_or(|x| Some(x) == i.version)
        }
        _ => false,
    }
}

/// The names a component imports (read without compiling it).
pub fn import_names(name: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let mut types = wac_graph::types::Types::default();
    let package = Package::from_bytes(name, None, bytes.to_vec(), &mut types)
        .with_context(|| format!("reading component `{name}`"))?;
    Ok(types[package.ty()].imports.keys().cloned().collect())
}

fn package(
    graph: &mut CompositionGraph,
    name: &str,
    bytes: Vec<u8>,
) -> Result<wac_graph::PackageId> {
    let package = Package::from_bytes(name, None, bytes, graph.types_mut())
        .with_context(|| format!("reading component `{name}`"))?;
    graph
        .register_package(package)
        .with_context(|| format!("registering component `{name}`"))
}

/// Checks that `export` of instance `from` may stand for `import` of package `to`, then plugs it.
fn plug(
    graph: &mut CompositionGraph,
    from: NodeId,
    export: &str,
    to: NodeId,
    import: &str,
    import_kind: wac_graph::types::ItemKind,
) -> Result<()> {
    let alias = graph
        .alias_instance_export(from, export)
        .with_context(|| format!("the dependency has no export `{export}`"))?;
    let export_kind = graph[alias].item_kind();
    let mut cache = Default::default();
    let mut checker = SubtypeChecker::new(&mut cache);
    checker
        .is_subtype(export_kind, graph.types(), import_kind, graph.types())
        .with_context(|| format!("export `{export}` does not match the import `{import}`"))?;
    graph
        .set_instantiation_argument(to, import, alias)
        .with_context(|| format!("plugging `{export}` into `{import}`"))?;
    Ok(())
}

/// Re-exports every export of `instance` under its own name.
fn export_all(
    graph: &mut CompositionGraph,
    package: wac_graph::PackageId,
    instance: NodeId,
) -> Result<()> {
    let world = graph[package].ty();
    let names: Vec<String> = graph.types()[world].exports.keys().cloned().collect();
    for name in names {
        let alias = graph.alias_instance_export(instance, &name)?;
        graph.export(alias, name)?;
    }
    Ok(())
}

fn encode(graph: &CompositionGraph) -> Result<Vec<u8>> {
    graph
        .encode(EncodeOptions::default())
        .context("encoding the composed component")
}

/// Puts the deny adapter in front of the dependency's imports of Spin interfaces it does not
/// inherit. Returns the dependency unchanged when it inherits everything.
fn apply_deny_adapter(dep: Vec<u8>, inherit: &Inherit, adapter: &[u8]) -> Result<Vec<u8>> {
    let allowed = match inherit {
        Inherit::All => return Ok(dep),
        Inherit::Sets(sets) => allowed_interfaces(sets),
    };
    let mut graph = CompositionGraph::new();
    let adapter_pkg = package(&mut graph, "devhost:deny-adapter", adapter.to_vec())?;
    let dep_pkg = package(&mut graph, "devhost:dependency", dep.clone())?;
    let adapter_inst = graph.instantiate(adapter_pkg);
    let dep_inst = graph.instantiate(dep_pkg);
    let adapter_exports: Vec<String> = graph.types()[graph[adapter_pkg].ty()]
        .exports
        .keys()
        .cloned()
        .collect();
    let dep_imports = graph.types()[graph[dep_pkg].ty()].imports.clone();
    let mut plugged = 0;
    for name in adapter_exports {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        if let Some(kind) = dep_imports.get(&name) {
            plug(&mut graph, adapter_inst, &name, dep_inst, &name, *kind)?;
            plugged += 1;
        }
    }
    if plugged == 0 {
        return Ok(dep);
    }
    export_all(&mut graph, dep_pkg, dep_inst)?;
    encode(&graph)
}

/// Composes the app component with its dependencies. `deny_adapter` is read only when some
/// dependency does not inherit everything.
pub fn compose(
    component_id: &str,
    app: Vec<u8>,
    dependencies: &[Dependency],
    deny_adapter: impl Fn() -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    if dependencies.is_empty() {
        return Ok(app);
    }
    let mut graph = CompositionGraph::new();
    let app_pkg = package(&mut graph, &format!("devhost:{component_id}"), app)?;
    let app_world = graph[app_pkg].ty();
    let app_imports = graph.types()[app_world].imports.clone();
    let mut plugs: Vec<(String, NodeId, String)> = Vec::new();
    let mut claimed: std::collections::HashMap<String, String> = Default::default();
    let mut adapter: Option<Vec<u8>> = None;
    for (n, dep) in dependencies.iter().enumerate() {
        let matched: Vec<&String> = app_imports
            .keys()
            .filter(|import| matches_import(&dep.name, import))
            .collect();
        if matched.is_empty() {
            bail!(
                "component `{component_id}`: dependency `{}` matches none of its imports ({})",
                dep.name,
                app_imports.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let mut bytes = std::fs::read(&dep.path).with_context(|| {
            format!(
                "reading dependency `{}` from {} (build it first)",
                dep.name,
                dep.path.display()
            )
        })?;
        if dep.inherit != Inherit::All {
            if adapter.is_none() {
                adapter = Some(deny_adapter()?);
            }
            bytes = apply_deny_adapter(bytes, &dep.inherit, adapter.as_deref().unwrap_or_default())
                .with_context(|| format!("denying capabilities to dependency `{}`", dep.name))?;
        }
        let dep_pkg = package(&mut graph, &format!("devhost:dependency-{n}"), bytes)?;
        let dep_inst = graph.instantiate(dep_pkg);
        for import in matched {
            if let Some(other) = claimed.insert(import.clone(), dep.name.clone()) {
                bail!(
                    "component `{component_id}`: import `{import}` is satisfied by two dependencies, `{other}` and `{}`",
                    dep.name
                );
            }
            let export = dep.export.clone().unwrap_or_else(|| import.clone());
            plugs.push((import.clone(), dep_inst, export));
        }
    }
    let app_inst = graph.instantiate(app_pkg);
    for (import, dep_inst, export) in plugs {
        let kind = app_imports[&import];
        plug(&mut graph, dep_inst, &export, app_inst, &import, kind)
            .with_context(|| format!("component `{component_id}`: dependency for `{import}`"))?;
    }
    export_all(&mut graph, app_pkg, app_inst)?;
    encode(&graph)
}

/// What `wac plug --plug <plug> <socket>` does: every export of `plug` that matches an import
/// of `socket` (by name and type) satisfies it, from one instance of `plug`; the result exports
/// what `socket` exports. Fails when nothing matched.
pub fn wac_plug(socket: Vec<u8>, plug: Vec<u8>) -> Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = package(&mut graph, "wac:socket", socket)?;
    let plug = package(&mut graph, "wac:plug", plug)?;
    wac_graph::plug(&mut graph, vec![plug], socket).context("plugging the components")?;
    encode(&graph)
}

/// Where the deny adapter is built (`cargo build --target wasm32-wasip2 --release -p
/// lakebase-deny-adapter` at the workspace root).
pub fn default_deny_adapter_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/wasm32-wasip2/release/lakebase_deny_adapter.wasm"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_names_match_imports_as_on_spin() {
        let pg = "spin:postgres/postgres@4.2.0";
        assert!(matches_import("spin:postgres/postgres@4.2.0", pg));
        assert!(matches_import("spin:postgres/postgres", pg));
        assert!(matches_import("spin:postgres", pg));
        assert!(!matches_import("spin:postgres/postgres@4.1.0", pg));
        assert!(!matches_import("spin:postgres/other", pg));
        assert!(!matches_import("spin:key-value", pg));
        assert!(!matches_import("postgres", pg));
        assert!(matches_import("my-dep", "my-dep"));
        assert!(!matches_import("my-dep", "other"));
    }

    #[test]
    fn capability_sets_expand_to_interfaces() {
        assert_eq!(allowed_interfaces(&[]), Vec::<&str>::new());
        assert_eq!(
            allowed_interfaces(&["key_value_stores".into(), "variables".into()]),
            vec![
                "spin:key-value/key-value@3.0.0",
                "fermyon:spin/key-value@2.0.0",
                "spin:variables/variables@3.0.0",
                "fermyon:spin/variables@2.0.0",
            ]
        );
        assert_eq!(
            allowed_interfaces(&["allowed_outbound_hosts".into()]),
            vec!["spin:postgres/postgres@4.2.0"]
        );
    }
}
