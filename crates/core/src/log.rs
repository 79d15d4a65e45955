//! The library's log lines: a mint, a rejected token, a failing store or refresh. They go to
//! stderr by default (Spin and wasmCloud collect a component's stderr); [`set_sink`] sends them
//! elsewhere, filters or silences them. No line ever holds a token, secret or connection string.
//!
//! ```
//! // Only warnings and errors, through the app's own logging:
//! fn quieter(level: lakebase::log::Level, message: &str) {
//!     if level <= lakebase::log::Level::Warn {
//!         lakebase::log::stderr(level, message);
//!     }
//! }
//! lakebase::log::set_sink(quieter);
//! ```
//!
//! With the feature `log`, `to_log` hands the lines to the `log` crate instead.

use std::sync::RwLock;

/// How much a line matters; `Error < Warn < Info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Someone must fix something (the app goes on, worse): a store that refuses every key.
    Error,
    /// Something failed and was worked around: a refresh that failed, a record ignored.
    Warn,
    /// What happened: a token obtained, a credential minted, a token rejected and replaced.
    Info,
}

/// Where log lines go: the level and the message (without any prefix).
pub type Sink = fn(Level, &str);

static SINK: RwLock<Sink> = RwLock::new(stderr);

/// Sends the library's log lines to `sink` from now on (for the whole instance).
pub fn set_sink(sink: Sink) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = sink;
}

/// The default sink: `lakebase: <message>` on stderr, `lakebase: warning: …` and
/// `lakebase: error: …` for the other levels.
pub fn stderr(level: Level, message: &str) {
    match level {
        Level::Error => eprintln!("lakebase: error: {message}"),
        Level::Warn => eprintln!("lakebase: warning: {message}"),
        Level::Info => eprintln!("lakebase: {message}"),
    }
}

/// A sink that drops every line.
pub fn silent(_: Level, _: &str) {}

/// A sink that hands every line to the [`log`](https://docs.rs/log) crate (feature `log`), with
/// target `lakebase` and the same level, so that an app's own logger (`env_logger`, a
/// `tracing` subscriber with `tracing-log`, …) routes and filters them:
/// `lakebase::log::set_sink(lakebase::log::to_log)`.
#[cfg(feature = "log")]
pub fn to_log(level: Level, message: &str) {
    let level = match level {
        Level::Error => log::Level::Error,
        Level::Warn => log::Level::Warn,
        Level::Info => log::Level::Info,
    };
    log::log!(target: "lakebase", level, "{message}");
}

/// Something went wrong and was handled; also for the adapters' own warnings.
pub fn warn(message: &str) {
    emit(Level::Warn, message);
}

/// A problem the operator has to fix (the app works on, worse).
pub(crate) fn error(message: &str) {
    emit(Level::Error, message);
}

pub(crate) fn info(message: &str) {
    emit(Level::Info, message);
}

fn emit(level: Level, message: &str) {
    #[cfg(test)]
    LINES.with(|lines| {
        let prefix = match level {
            Level::Error => "lakebase: error: ",
            Level::Warn => "lakebase: warning: ",
            Level::Info => "lakebase: ",
        };
        lines.borrow_mut().push(format!("{prefix}{message}"))
    });
    let sink = *SINK.read().unwrap_or_else(|p| p.into_inner());
    sink(level, message);
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

#[cfg(all(test, feature = "log"))]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A `log` logger that keeps what it is given.
    struct Keep(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Keep {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0.lock().unwrap().push((
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            ));
        }
        fn flush(&self) {}
    }

    static KEEP: Keep = Keep(Mutex::new(Vec::new()));

    #[test]
    fn to_log_hands_lines_to_the_log_crate_with_their_level() {
        log::set_logger(&KEEP).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        set_sink(to_log);
        error("the store refuses every key");
        warn("a refresh failed");
        info("minted database credential");
        set_sink(stderr);
        let lines = KEEP.0.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                (log::Level::Error, "the store refuses every key"),
                (log::Level::Warn, "a refresh failed"),
                (log::Level::Info, "minted database credential"),
            ]
            .map(|(level, text)| (level, "lakebase".to_owned(), text.to_owned()))
        );
    }
}
