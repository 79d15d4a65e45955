//! The WASIp2 flavour (`examples/notes-app-p2` on `crates/spin-p2`, spin-sdk 5.2, `spin-p2.toml`):
//! its world is what Spin 3.4 to 4.0.x and SpinKube provide, and nothing of WASIp3. The runs on
//! a host come with the devhost's WASIp2 support.

use lakebase_e2e::{SPIN_P2_IMPORTS, notes_p2_wasm};

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
    assert_eq!(imports, SPIN_P2_IMPORTS, "the WASIp2 app's imports changed");
}
