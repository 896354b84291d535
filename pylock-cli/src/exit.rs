//! Exit codes and the one-line error messages of the `pylock` command.

use std::process::ExitCode;

/// The command ran under the lock: its own exit code is passed through (128 + N when a
/// signal N ended it). These codes are pylock's own.
pub(crate) mod code {
    /// Bad usage, or no lock server given (sysexits `EX_USAGE`).
    pub(crate) const USAGE: u8 = 64;
    /// The backend failed (unreachable, refused the request; sysexits `EX_SOFTWARE`).
    pub(crate) const ERROR: u8 = 70;
    /// The lock was not had within the timeout (sysexits `EX_TEMPFAIL`): try again later.
    /// `pylock run -E N` replaces it, as `flock -E` does.
    pub(crate) const TIMEOUT: u8 = 75;
    /// The lock was lost while the command ran, and the command was stopped.
    pub(crate) const LOST: u8 = 76;
    /// The command could not be executed (permission denied), as shells report it.
    pub(crate) const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found, as shells report it.
    pub(crate) const CANNOT_RUN: u8 = 127;
}

/// A failure of the `pylock` command itself: what to print, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
    /// The lock is held by someone else: the expected outcome that `-q` keeps silent.
    pub(crate) conflict: bool,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
            conflict: false,
        }
    }

    /// The lock was not had within the timeout: exit `code` (75 unless `-E` says otherwise).
    pub(crate) fn conflict(code: u8, message: impl Into<String>) -> Self {
        Failure {
            conflict: true,
            ..Failure::new(code, message)
        }
    }

    /// Prints the message as one line on stderr and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("pylock: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl Failure {
    /// A usage error from clap, on one line with a hint: the message (with any missing or
    /// offending items and clap's tip), the usage, and where the help is (of `subcommand`,
    /// if one was given). Clap's own report spreads this over five to seven lines.
    pub(crate) fn usage(error: &clap::Error, subcommand: Option<&str>) -> Self {
        let text = error.render().to_string();
        let mut message = String::new();
        let mut usage = None;
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix("Usage:") {
                usage = Some(rest.trim().to_owned());
            } else if line.starts_with("For more information") {
                // Replaced by the hint below.
            } else if let Some(rest) = line.strip_prefix("error:") {
                message.push_str(rest.trim());
            } else {
                // Items of the message (missing arguments) and clap's tips.
                message.push_str(if message.ends_with(':') { " " } else { "; " });
                message.push_str(line);
            }
        }
        let help = match subcommand {
            Some(word) => format!("pylock {word} --help"),
            None => "pylock --help".to_owned(),
        };
        let hint = match usage {
            Some(usage) => format!(" (usage: {usage}; see {help})"),
            None => format!(" (see {help})"),
        };
        Failure::new(code::USAGE, format!("{message}{hint}"))
    }
}

impl From<pylock::Error> for Failure {
    fn from(error: pylock::Error) -> Self {
        let code = match error {
            pylock::Error::Timeout { .. } => code::TIMEOUT,
            pylock::Error::Lost { .. } => code::LOST,
            pylock::Error::InvalidKey { .. }
            | pylock::Error::InvalidOption { .. }
            | pylock::Error::InvalidUrl { .. }
            | pylock::Error::UnknownOption { .. }
            | pylock::Error::UnknownScheme { .. }
            // Asked of a backend that cannot do it (`--fair` on memcached): change the call.
            | pylock::Error::Unsupported { .. } => code::USAGE,
            _ => code::ERROR,
        };
        Failure {
            conflict: code == code::TIMEOUT,
            ..Failure::new(code, one_line(&error))
        }
    }
}

/// An error and its sources on one line: `message: cause: cause`.
pub(crate) fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}
