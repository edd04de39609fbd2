//! Help output that reads like Docker's: `Usage:  kiln [OPTIONS] COMMAND`,
//! grouped command lists, `Options:` headings, and the closing hint.

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
    cmd.help_template(TOP_TEMPLATE)
        .subcommand_value_name("COMMAND")
        .mut_subcommands(|sub| apply(sub, "kiln"))
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
