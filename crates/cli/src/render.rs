//! Turns errors into what the user reads on stderr, and exit codes.
//!
//! Exit codes: 0 success; 1 a command failed (build error, bad input,
//! missing image); 2 usage error (bad flags or arguments).

use std::process::ExitCode;

use kiln_frontend::diagnostic::code_frame;

/// An error that points into a Dockerfile; the message is complete (see
/// [`DockerfileError::parse`] for Dockerfile errors).
#[derive(Debug)]
pub struct DockerfileError {
    pub name: String,
    pub source: String,
    pub span: kiln_frontend::parser::Span,
    pub message: String,
}

impl std::fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DockerfileError {}

impl DockerfileError {
    /// A mistake in the Dockerfile itself: BuildKit's wording.
    pub fn parse(
        name: &str,
        source: &str,
        span: kiln_frontend::parser::Span,
        message: impl std::fmt::Display,
    ) -> Self {
        DockerfileError {
            name: name.to_string(),
            source: source.to_string(),
            span,
            message: format!(
                "dockerfile parse error on line {}: {message}",
                span.start_line
            ),
        }
    }
}

/// An error Docker reports in one line, `Error: <message>` (`No such
/// image: foo`, `invalid filter 'x'`), printed as Docker prints it.
#[derive(Debug)]
pub struct DockerError(pub String);

impl std::fmt::Display for DockerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DockerError {}

/// A failure whose messages the command already printed (e.g. `rmi` with
/// several names, some missing); only the exit code remains.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the command failed")
    }
}

impl std::error::Error for AlreadyReported {}

/// A command's own exit status (`run`: the container's, or Docker's
/// 125/126/127); its messages, if any, were already printed.
#[derive(Debug)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

/// Prints an error chain (`error: …`, then `Caused by:` lines), with a code
/// frame when the error points into a Dockerfile.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<AlreadyReported>().is_some() {
        return ExitCode::from(1);
    }
    if let Some(s) = err.downcast_ref::<ExitStatus>() {
        return ExitCode::from(s.0);
    }
    if let Some(e) = err.downcast_ref::<DockerError>() {
        eprintln!("Error: {e}");
        return ExitCode::from(1);
    }
    if let Some(df) = err.downcast_ref::<DockerfileError>() {
        eprint!("{}", code_frame(&df.name, &df.source, df.span));
    }
    eprintln!("error: {err}");
    let mut causes = err.chain().skip(1).peekable();
    if causes.peek().is_some() {
        eprintln!("\nCaused by:");
        for cause in causes {
            eprintln!("    {cause}");
        }
    }
    ExitCode::from(1)
}
