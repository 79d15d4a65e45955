//! Log lines on stderr (Spin collects a component's stderr). Callers never pass secrets here.

pub(crate) fn warn(message: &str) {
    eprintln!("lakebase: warning: {message}");
}

pub(crate) fn info(message: &str) {
    eprintln!("lakebase: {message}");
}

/// At most [`CAP`] characters of a text that came from outside (a host error, a server's
/// answer), so that one bad answer cannot flood a log line or an error message.
pub(crate) fn cap(text: &str) -> String {
    if text.chars().count() <= CAP {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(CAP).collect();
        out.push('…');
        out
    }
}

/// The longest text from outside kept in a message.
pub(crate) const CAP: usize = 300;
