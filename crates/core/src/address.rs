//! The addresses a Lakebase plugin's virtualized `spin:postgres` `open` takes: `lakebase:` (the
//! configured database) or `lakebase://<database>` opt in; every other address is the host's.

use crate::lakebase::ConnectOptions;

/// The opt-in prefix of a Lakebase address.
pub const LAKEBASE_SCHEME: &str = "lakebase:";

/// What an address given to `open` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Address<'a> {
    /// `lakebase:` or `lakebase://<database>`: a Lakebase connection with these options.
    Lakebase(ConnectOptions),
    /// Anything else: the host's business, passed on untouched.
    PassThrough(&'a str),
}

impl<'a> Address<'a> {
    /// Reads `address`. A `lakebase:` address with anything but a database name after it (a
    /// user, password, host or query) is refused, without echoing it: it may hold a password.
    pub fn parse(address: &'a str) -> Result<Address<'a>, String> {
        let Some(rest) = address.strip_prefix(LAKEBASE_SCHEME) else {
            return Ok(Address::PassThrough(address));
        };
        let database = rest.strip_prefix("//").unwrap_or(rest);
        if database.is_empty() {
            return Ok(Address::Lakebase(ConnectOptions::default()));
        }
        // A Postgres database name (at most 63 bytes) without URL syntax, spaces or controls.
        if database.len() > 63
            || database.contains(['/', '@', ':', '?', '#', '%', '\\'])
            || database
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("invalid Lakebase address: use `lakebase:` for the configured database, or `lakebase://<database>`; host, user and password come from the plugin's variables".to_owned());
        }
        Ok(Address::Lakebase(
            ConnectOptions::default().database(database),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_address_parses_without_panic_and_errors_do_not_echo(address in proptest::prelude::any::<String>()) {
            match Address::parse(&address) {
                Ok(Address::PassThrough(a)) => proptest::prop_assert_eq!(a, address.as_str()),
                Ok(Address::Lakebase(_)) => proptest::prop_assert!(address.starts_with(LAKEBASE_SCHEME)),
                Err(e) => proptest::prop_assert!(address.len() < 4 || !e.contains(&address)),
            }
        }

        #[test]
        fn database_names_round_trip(db in "[A-Za-z_][A-Za-z0-9_$-]{0,62}") {
            let address = format!("lakebase://{db}");
            proptest::prop_assert_eq!(
                Address::parse(&address),
                Ok(Address::Lakebase(ConnectOptions::default().database(db.clone())))
            );
        }
    }

    #[test]
    fn lakebase_addresses_are_opt_in() {
        assert_eq!(
            Address::parse("lakebase:"),
            Ok(Address::Lakebase(ConnectOptions::default()))
        );
        assert_eq!(
            Address::parse("lakebase://"),
            Ok(Address::Lakebase(ConnectOptions::default()))
        );
        assert_eq!(
            Address::parse("lakebase://sales"),
            Ok(Address::Lakebase(
                ConnectOptions::default().database("sales")
            ))
        );
        let plain = "postgres://u:p@h:5432/db";
        assert_eq!(Address::parse(plain), Ok(Address::PassThrough(plain)));
        assert_eq!(
            Address::parse("host=h user=u"),
            Ok(Address::PassThrough("host=h user=u"))
        );
        for bad in [
            "lakebase://u:p@h/db",
            "lakebase://db?sslmode=disable",
            "lakebase:a/b",
        ] {
            let e = Address::parse(bad).unwrap_err();
            assert!(e.contains("lakebase://<database>"), "{e}");
            assert!(!e.contains(bad), "the address is not echoed: {e}");
        }
    }
}
