//! Which Spin release the devhost models (`devhost up --spin-version 3.6.3`): what that release
//! refuses that the newest accepts, as checked on real Spin 3.6.3, 4.0.2 and 4.1 builds
//! (`../shared/facts/spin-host.md`) and read from Spin's manifest schema at each tag.
//!
//! | from | what arrives |
//! |---|---|
//! | 3.4 | `spin:postgres/postgres@4.0.0` |
//! | 4.0 | per-dependency `inherit_configuration` (before: only the component's `dependencies_inherit_configuration`); `spin:key-value@3.0.0`, `spin:variables@3.0.0`, `spin:postgres@4.2.0` |
//! | 4.1 | WASIp3 (`wasi:*@0.3.0`, `wasi:http/handler@0.3.0`: spin-sdk 7) |
//!
//! Spin 4.0.0 to 4.0.2 also never answer a synchronous `query` that matches no rows
//! ([`SpinVersion::empty_query_hangs`]).

use std::fmt;

use anyhow::{Result, bail};

/// A Spin release, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpinVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Default for SpinVersion {
    /// Spin 4.1, the newest line the devhost models in full.
    fn default() -> Self {
        SpinVersion::new(4, 1, 0)
    }
}

impl fmt::Display for SpinVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The imports that arrived after Spin 3.0, with the first release that serves them.
const IMPORTS_SINCE: &[(&str, SpinVersion)] = &[
    ("spin:postgres/postgres@4.0.0", SpinVersion::new(3, 4, 0)),
    ("spin:postgres/postgres@4.2.0", SpinVersion::new(4, 0, 0)),
    ("spin:key-value/key-value@3.0.0", SpinVersion::new(4, 0, 0)),
    ("spin:variables/variables@3.0.0", SpinVersion::new(4, 0, 0)),
];

impl SpinVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SpinVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `3.6.3`, `4.0` (patch 0) or the first word of `spin --version` (`spin 3.6.3
    /// (…)`). Spin 3.0 is the oldest the devhost models (manifest version 2 with component
    /// dependencies).
    pub fn parse(text: &str) -> Result<SpinVersion> {
        let word = text
            .trim()
            .trim_start_matches("spin ")
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let core = word.split(['-', '+']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        let number = |i: usize| -> Option<u32> {
            match parts.get(i) {
                None if i == 2 => Some(0),
                Some(p) => p.parse().ok(),
                None => None,
            }
        };
        match (parts.len(), number(0), number(1), number(2)) {
            (2 | 3, Some(major), Some(minor), Some(patch)) => {
                let v = SpinVersion::new(major, minor, patch);
                if v < SpinVersion::new(3, 0, 0) {
                    bail!(
                        "Spin version `{text}`: the devhost models Spin 3.0 and later (manifest version 2 with component dependencies)"
                    );
                }
                Ok(v)
            }
            _ => bail!("Spin version `{text}`: expected MAJOR.MINOR[.PATCH], e.g. 3.6.3 or 4.0.2"),
        }
    }

    /// Whether a dependency may say `inherit_configuration` itself (Spin 4.0 and later; before,
    /// only the component's `dependencies_inherit_configuration` exists).
    pub fn per_dependency_inherit(self) -> bool {
        self >= SpinVersion::new(4, 0, 0)
    }

    /// Whether WASIp3 components (spin-sdk 7, `wasi:http/handler@0.3.0`) load (Spin 4.1 and
    /// later; 4.0.x serves only a release candidate of it).
    pub fn serves_wasip3(self) -> bool {
        self >= SpinVersion::new(4, 1, 0)
    }

    /// Spin 4.0.0 to 4.0.2: a synchronous `spin:postgres` `query` that matches no rows never
    /// returns (spinframework/spin#3671, fixed by #3673 in 4.1).
    pub fn empty_query_hangs(self) -> bool {
        (SpinVersion::new(4, 0, 0)..=SpinVersion::new(4, 0, 2)).contains(&self)
    }

    /// Refuses a component whose imports this release does not serve, with the words of the
    /// linker error a real Spin prints.
    pub fn check_imports<'a>(self, imports: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for name in imports {
            let since = IMPORTS_SINCE
                .iter()
                .find(|(import, _)| *import == name)
                .map(|(_, since)| *since)
                .or_else(|| {
                    (name.starts_with("wasi:") && name.contains("@0.3."))
                        .then_some(SpinVersion::new(4, 1, 0))
                });
            if let Some(since) = since.filter(|since| self < *since) {
                bail!(
                    "component imports instance `{name}`, but a matching implementation was not found in the linker (the devhost models Spin {self}; Spin serves `{name}` from {}.{} on)",
                    since.major,
                    since.minor
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_spin_version_output() {
        assert_eq!(
            SpinVersion::parse("3.6.3").unwrap(),
            SpinVersion::new(3, 6, 3)
        );
        assert_eq!(
            SpinVersion::parse("4.0").unwrap(),
            SpinVersion::new(4, 0, 0)
        );
        assert_eq!(
            SpinVersion::parse("spin 4.0.2 (c3e1b7a 2026-06-23)").unwrap(),
            SpinVersion::new(4, 0, 2)
        );
        assert_eq!(
            SpinVersion::parse("spin 4.1.0-pre0 (94a8fc8a 2026-08-21)").unwrap(),
            SpinVersion::new(4, 1, 0)
        );
        for bad in ["", "4", "four.one", "4.1.x", "2.7.0", "4.1.0.1"] {
            assert!(SpinVersion::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn what_each_release_serves() {
        let v3_3 = SpinVersion::new(3, 3, 1);
        let v3_6 = SpinVersion::new(3, 6, 3);
        let v4_0 = SpinVersion::new(4, 0, 2);
        let v4_1 = SpinVersion::default();
        assert!(!v3_6.per_dependency_inherit() && v4_0.per_dependency_inherit());
        assert!(!v4_0.serves_wasip3() && v4_1.serves_wasip3());
        assert!(v4_0.empty_query_hangs());
        assert!(!v3_6.empty_query_hangs() && !v4_1.empty_query_hangs());
        assert!(!SpinVersion::new(4, 0, 3).empty_query_hangs());

        let pg4 = ["wasi:io/poll@0.2.6", "spin:postgres/postgres@4.0.0"];
        assert!(v3_6.check_imports(pg4).is_ok());
        let e = v3_3.check_imports(pg4).unwrap_err().to_string();
        assert!(
            e.contains("`spin:postgres/postgres@4.0.0`") && e.contains("from 3.4 on"),
            "{e}"
        );
        let kv3 = ["spin:key-value/key-value@3.0.0"];
        assert!(v3_6.check_imports(kv3).is_err() && v4_0.check_imports(kv3).is_ok());
        let p3 = ["wasi:http/types@0.3.0"];
        let e = v4_0.check_imports(p3).unwrap_err().to_string();
        assert!(e.contains("not found in the linker"), "{e}");
        assert!(v4_1.check_imports(p3).is_ok());
    }
}
