//! Log lines on stderr (Spin collects a component's stderr). Callers never pass secrets here.

pub(crate) fn warn(message: &str) {
    emit(format!("lakebase: warning: {message}"));
}

/// A problem the operator has to fix (the app works on, worse).
pub(crate) fn error(message: &str) {
    emit(format!("lakebase: error: {message}"));
}

pub(crate) fn info(message: &str) {
    emit(format!("lakebase: {message}"));
}

fn emit(line: String) {
    #[cfg(test)]
    LINES.with(|lines| lines.borrow_mut().push(line.clone()));
    eprintln!("{line}");
}

#[cfg(test)]
thread_local! {
    static LINES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The lines logged on this thread since the last call (unit tests only).
#[cfg(test)]
pub(crate) fn take_lines() -> Vec<String> {
    LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
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
