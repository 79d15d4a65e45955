//! Log lines on stderr (Spin collects a component's stderr). Callers never pass secrets here.

pub(crate) fn warn(message: &str) {
    eprintln!("lakebase: warning: {message}");
}

pub(crate) fn info(message: &str) {
    eprintln!("lakebase: {message}");
}
