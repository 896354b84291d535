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
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
        }
    }

    /// Prints the message as one line on stderr and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("pylock: {}", self.message);
        ExitCode::from(self.code)
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
            | pylock::Error::UnknownScheme { .. } => code::USAGE,
            _ => code::ERROR,
        };
        Failure::new(code, one_line(&error))
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
