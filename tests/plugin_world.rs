//! The plugin component's world: what it exports and imports.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn plugin_exports_credentials_and_imports_only_what_it_uses() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--target", "wasm32-wasip2", "--release", "-p", "lakebase-plugin"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let wasm = root.join("target/wasm32-wasip2/release/lakebase_plugin.wasm");
    let (imports, exports) = lakebase_devhost::component_world(&wasm).unwrap();
    println!("plugin imports: {imports:?}\nplugin exports: {exports:?}\nsize: {} bytes", std::fs::metadata(&wasm).unwrap().len());
    assert!(exports.iter().any(|e| e == "lakebase:postgres/credentials@0.1.0"), "{exports:?}");
    for i in &imports {
        let ok = i.starts_with("wasi:")
            || i == "spin:postgres/postgres@4.2.0"
            || i == "spin:key-value/key-value@3.0.0"
            || i == "spin:variables/variables@3.0.0";
        assert!(ok, "unexpected import {i}");
    }
}
