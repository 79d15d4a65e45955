//! Host bindings of Spin's interfaces: the WASIp3 ones (WIT vendored from the spin-sdk 7.0.0
//! crate) and the WASIp2 ones that spin-sdk 5.2 components import (from the spin-sdk 5.2.0
//! crate). `spin:postgres@4.0.0` needs no bindings of its own: its types are those of 4.2.0 and
//! wasmtime's linker serves an import of 4.0.0 with the 4.2.0 definitions (semver-compatible
//! versions), as Spin 4.1 does. `spin:postgres@3.0.0` has smaller types: `pg3.rs` converts.
//! The WASIp2-only WIT lives in `testing/devhost/wit/`, not in the components' `wit/deps/`: a
//! second version of `spin:postgres` there would rename the plugin's generated modules.

wasmtime::component::bindgen!({
    path: [
        "../../wit/deps/spin-postgres@4.2.0",
        "../../wit/deps/spin-key-value@3.0.0",
        "../../wit/deps/spin-variables@3.0.0",
        "wit/fermyon-spin@2.0.0",
        "wit/spin-postgres@3.0.0",
    ],
    inline: "
        package devhost:host;
        world spin-host {
            import spin:postgres/postgres@4.2.0;
            import spin:key-value/key-value@3.0.0;
            import spin:variables/variables@3.0.0;
            import fermyon:spin/key-value@2.0.0;
            import fermyon:spin/variables@2.0.0;
            import spin:postgres/postgres@3.0.0;
        }
    ",
    imports: { default: async | trappable },
    with: {
        "spin:postgres/postgres.connection": crate::pg::Connection,
        "spin:postgres/postgres.connection-builder": crate::pg::ConnectionBuilder,
        "spin:key-value/key-value.store": crate::host::StoreHandle,
        "fermyon:spin/key-value.store": crate::host::StoreHandle,
    },
});
