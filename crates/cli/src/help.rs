//! Help output that reads like Docker's: `Usage:  kiln [OPTIONS] COMMAND`,
//! `--file string`, `(default "x")`, command lists, and the closing hint.

use clap::Command;

const TOP_TEMPLATE: &str = "\
Usage:  {usage}

{about}

Commands:
{subcommands}

Global Options:
{options}

Run 'kiln COMMAND --help' for more information on a command.
";

const SUB_TEMPLATE: &str = "\
Usage:  {usage}

{about}
{after-help}
Options:
{options}
";

const GROUP_TEMPLATE: &str = "\
Usage:  {usage}

{about}

Commands:
{subcommands}

Run '{bin} COMMAND --help' for more information on a command.
";

/// Applies Docker's help layout to the whole command tree.
pub fn dockerize(cmd: Command) -> Command {
    // Commands are listed alphabetically, as in Docker's help.
    let mut names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.sort();
    let mut cmd = cmd
        .help_template(TOP_TEMPLATE)
        .subcommand_value_name("COMMAND");
    for (i, name) in names.iter().enumerate() {
        cmd = cmd.mut_subcommand(name, |s| s.display_order(i));
    }
    cmd.mut_subcommands(|sub| apply(sub, "kiln"))
}

fn apply(sub: Command, parent: &str) -> Command {
    let path = format!("{parent} {}", sub.get_name());
    if sub.has_subcommands() {
        sub.help_template(GROUP_TEMPLATE.replace("{bin}", &path))
            .subcommand_value_name("COMMAND")
            .mut_subcommands(|s| apply(s, &path))
    } else {
        sub.help_template(SUB_TEMPLATE)
    }
}

/// Parses the command line; help and usage errors are printed in Docker's
/// spelling. Usage errors exit with 2.
pub fn get_matches(cmd: Command) -> clap::ArgMatches {
    match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = dockerize_text(&e.render().to_string());
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    print!("{text}");
                    std::process::exit(0)
                }
                _ => {
                    eprint!("{text}");
                    std::process::exit(2)
                }
            }
        }
    }
}

/// Rewrites clap's notation into Docker's: `<COMMAND>` → `COMMAND`,
/// `--file <string>` → `--file string`, `[default: x]` → `(default "x")`.
fn dockerize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let mut l = line.replace("<COMMAND>", "COMMAND");
        for ty in [
            "string",
            "list",
            "int",
            "bytes",
            "duration",
            "stringArray",
            "filter",
            "uint",
        ] {
            // Same width as before, so the description column stays aligned.
            l = l.replace(&format!(" <{ty}>"), &format!(" {ty}  "));
        }
        if let Some(start) = l.find("[default: ")
            && let Some(len) = l[start..].find(']')
        {
            let value = &l[start + 10..start + len];
            l = format!(
                "{}(default \"{value}\"){}",
                &l[..start],
                &l[start + len + 1..]
            );
        }
        out.push_str(&l);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_notation() {
        assert_eq!(
            super::dockerize_text(
                "Usage:  kiln [OPTIONS] <COMMAND>\n  -f, --file <string>  Name [default: Dockerfile]\n"
            ),
            "Usage:  kiln [OPTIONS] COMMAND\n  -f, --file string    Name (default \"Dockerfile\")\n"
        );
    }
}
