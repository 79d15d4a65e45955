//! The WASIp2 flavour (`examples/notes-app-p2` on `crates/spin-p2`, spin-sdk 5.2, `spin-p2.toml`):
//! its world is what Spin 3.4 to 4.0.x and SpinKube provide, and nothing of WASIp3. The runs on
//! a host come with the devhost's WASIp2 support.

use lakebase_e2e::notes_p2_wasm;

/// Every import of the WASIp2 app, exactly. A change here changes which Spins can load it:
/// `spin:postgres@4.0.0` needs Spin 3.4 or later, `fermyon:spin@2.0.0` key-value and variables
/// every Spin 2+, `wasi:*@0.2` (the `wasi:io` / `wasi:clocks` / `wasi:cli` of Rust's own
/// standard library for `wasm32-wasip2`, the `wasi:http` client of spin-sdk 5.2).
const IMPORTS: &[&str] = &[
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "spin:postgres/postgres@4.0.0",
    "wasi:cli/environment@0.2.6",
    "wasi:cli/exit@0.2.6",
    "wasi:cli/stderr@0.2.6",
    "wasi:cli/stdin@0.2.6",
    "wasi:cli/stdout@0.2.6",
    "wasi:cli/terminal-input@0.2.6",
    "wasi:cli/terminal-output@0.2.6",
    "wasi:cli/terminal-stderr@0.2.6",
    "wasi:cli/terminal-stdin@0.2.6",
    "wasi:cli/terminal-stdout@0.2.6",
    "wasi:clocks/monotonic-clock@0.2.6",
    "wasi:clocks/wall-clock@0.2.6",
    "wasi:http/outgoing-handler@0.2.6",
    "wasi:http/types@0.2.6",
    "wasi:io/error@0.2.6",
    "wasi:io/poll@0.2.6",
    "wasi:io/streams@0.2.6",
    "wasi:random/insecure-seed@0.2.6",
    "wasi:random/random@0.2.6",
];

#[test]
fn the_p2_app_world_is_what_spin_3_and_4_0_provide() {
    let (mut imports, exports) = lakebase_devhost::component_world(&notes_p2_wasm()).unwrap();
    println!("imports: {imports:?}\nexports: {exports:?}");
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2.0"]);
    for i in &imports {
        assert!(
            !i.contains("@0.3")
                && !i.starts_with("spin:key-value")
                && !i.starts_with("spin:variables"),
            "not WASIp2 / Spin 3.x: {i}"
        );
    }
    imports.sort();
    assert_eq!(imports, IMPORTS, "the WASIp2 app's imports changed");
}
