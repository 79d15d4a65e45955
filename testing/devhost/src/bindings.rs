//! Host bindings of Spin's interfaces (WIT vendored from the spin-sdk 7.0.0 crate).

wasmtime::component::bindgen!({
    path: [
        "../../wit/deps/spin-postgres@4.2.0",
        "../../wit/deps/spin-key-value@3.0.0",
        "../../wit/deps/spin-variables@3.0.0",
    ],
    inline: "
        package devhost:host;
        world spin-host {
            import spin:postgres/postgres@4.2.0;
            import spin:key-value/key-value@3.0.0;
            import spin:variables/variables@3.0.0;
        }
    ",
    imports: { default: async | trappable },
    with: {
        "spin:postgres/postgres.connection": crate::pg::Connection,
        "spin:postgres/postgres.connection-builder": crate::pg::ConnectionBuilder,
        "spin:key-value/key-value.store": crate::host::StoreHandle,
    },
});
