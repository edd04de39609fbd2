//! `kiln login [SERVER]` and `kiln logout [SERVER]`: check credentials
//! against a registry and store them in Docker's `config.json` (or its
//! credential helper), or remove them. Docker Hub is the default server.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::Context as _;
use clap::Args;
use kiln_registry::Credential;
use kiln_registry::credentials::{DOCKER_HUB_KEY, server_key};

use super::Context;
use super::pull::{registry_error, runtime};
use crate::render::DockerError;

#[derive(Args, Debug)]
#[command(
    about = "Authenticate to a registry",
    after_help = "Defaults to Docker Hub if no server is specified.\n"
)]
pub struct LoginArgs {
    /// Password or Personal Access Token (PAT)
    #[arg(short = 'p', long = "password", value_name = "string")]
    password: Option<String>,
    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Username
    #[arg(short = 'u', long = "username", value_name = "string")]
    username: Option<String>,
    /// The registry (default: Docker Hub)
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Log out from a registry",
    after_help = "If no server is specified, the default is defined by the daemon.\n"
)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

pub fn login(_ctx: &Context, a: LoginArgs) -> anyhow::Result<()> {
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        if a.password_stdin {
            return Err(DockerError(
                "--password and --password-stdin are mutually exclusive".into(),
            )
            .into());
        }
    }
    let mut password = a.password.clone();
    if a.password_stdin {
        if a.username.as_deref().is_none_or(str::is_empty) {
            return Err(DockerError("Must provide --username with --password-stdin".into()).into());
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read the password from stdin")?;
        password = Some(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    let server = a
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DOCKER_HUB_KEY.to_owned());
    let client = crate::config::registry_client()?;
    let runtime = runtime()?;
    let store = client.credential_store().cloned();

    // Without credentials on the command line, try the stored ones first.
    let stored = match &store {
        Some(s) if a.username.is_none() && password.is_none() => s.get(&server)?,
        _ => None,
    };
    if let Some(cred) = &stored
        && cred.identity_token().is_none()
    {
        println!(
            "Authenticating with existing credentials... [Username: {}]",
            cred.username
        );
        match runtime.block_on(client.check_login(&server, cred)) {
            Ok(()) => {
                println!("Login Succeeded");
                return Ok(());
            }
            Err(e) => {
                eprintln!(
                    "Login did not succeed, error: {}",
                    login_error(e, &server).root_cause()
                );
            }
        }
    }

    let username = match a.username.clone().filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => {
            let default = stored.as_ref().map(|c| c.username.clone());
            let prompt = match &default {
                Some(d) => format!("Username ({d}): "),
                None => "Username: ".to_owned(),
            };
            let typed = prompt_line(&prompt)?;
            match (typed.trim(), default) {
                ("", Some(d)) => d,
                ("", None) => return Err(DockerError("Username is required".into()).into()),
                (t, _) => t.to_owned(),
            }
        }
    };
    let password = match password.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None => {
            let p = prompt_password("Password: ")?;
            if p.is_empty() {
                return Err(DockerError("Password is required".into()).into());
            }
            p
        }
    };
    let credential = Credential::new(username, password);
    runtime
        .block_on(client.login(&server, &credential))
        .map_err(|e| login_error(e, &server))?;
    if let Some(s) = &store
        && s.helper(&server).ok().flatten().is_none()
    {
        eprintln!(
            "WARNING! Your credentials are stored unencrypted in '{}'.\n\
             Configure a credential helper to remove this warning. See\n\
             https://docs.docker.com/go/credential-store/\n",
            s.config_path().display()
        );
    }
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(_ctx: &Context, a: LogoutArgs) -> anyhow::Result<()> {
    let server = a
        .server
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DOCKER_HUB_KEY.to_owned());
    let key = server_key(&server);
    let client = crate::config::registry_client()?;
    let Some(store) = client.credential_store().cloned() else {
        println!("Not logged in to {key}");
        return Ok(());
    };
    if store.get(&server)?.is_none() {
        println!("Not logged in to {key}");
        return Ok(());
    }
    println!("Removing login credentials for {key}");
    runtime()?
        .block_on(client.logout(&server))
        .map_err(|e| registry_error(e, &key))?;
    Ok(())
}

/// Login failures in Docker's words.
fn login_error(e: kiln_registry::Error, server: &str) -> anyhow::Error {
    match e {
        kiln_registry::Error::Unauthorized { registry, .. } => DockerError(format!(
            "login to {registry} failed: unauthorized: incorrect username or password"
        ))
        .into(),
        other => registry_error(other, &server_key(server)),
    }
}

fn require_tty() -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(DockerError("Cannot perform an interactive login from a non TTY device".into()).into())
    }
}

/// Prints `prompt` and reads a line from the terminal.
fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    require_tty()?;
    print!("{prompt}");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Prints `prompt` and reads a line with echo turned off.
fn prompt_password(prompt: &str) -> anyhow::Result<String> {
    require_tty()?;
    let stdin = std::io::stdin();
    let original =
        rustix::termios::tcgetattr(&stdin).context("failed to read the terminal settings")?;
    let mut quiet = original.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    quiet
        .local_modes
        .insert(rustix::termios::LocalModes::ECHONL);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
        .context("failed to turn off the terminal echo")?;
    /// Turns echo back on however reading ends.
    struct Restore<'a>(&'a std::io::Stdin, rustix::termios::Termios);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ =
                rustix::termios::tcsetattr(self.0, rustix::termios::OptionalActions::Now, &self.1);
        }
    }
    let _restore = Restore(&stdin, original);
    print!("{prompt}");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("failed to read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
