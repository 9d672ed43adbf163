//! `vipd`, the appliance daemon. So far only `vipd --check [--config FILE]` exists: validate the
//! config file and exit 0 when it is valid, or print every problem to stderr and exit 1.
//!
//! Arguments are parsed by hand for now; the full CLI (clap) comes with the daemon proper.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use ctrl::config;

const USAGE: &str = "\
usage: vipd --check [--config FILE]

  --check          validate the configuration and exit (0 = valid, 1 = invalid)
  --config FILE    configuration file (default: /etc/vipd/vipd.toml)
  -h, --help       show this help
  -V, --version    show the version";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Check { config_path: String },
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut check = false;
    let mut config_path = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--config" | "-c" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("{arg} needs a file name"))?;
                config_path = Some(value);
            }
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => match arg.strip_prefix("--config=") {
                Some(value) => config_path = Some(value.to_string()),
                None => return Err(format!("unknown argument {arg:?}")),
            },
        }
    }
    if !check {
        return Err("only --check is implemented so far".to_string());
    }
    Ok(Command::Check {
        config_path: config_path.unwrap_or_else(|| config::DEFAULT_PATH.to_string()),
    })
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("vipd: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("vipd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config_path } => match config::load(&config_path) {
            Ok(config) => {
                println!(
                    "{config_path}: OK ({} VIPs, {} backends)",
                    config.vips().len(),
                    config.backend_count()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_check_forms() {
        let check = |path: &str| {
            Ok(Command::Check {
                config_path: path.to_string(),
            })
        };
        assert_eq!(args(&["--check", "--config", "a.toml"]), check("a.toml"));
        assert_eq!(args(&["--config=b.toml", "--check"]), check("b.toml"));
        assert_eq!(args(&["--check"]), check(config::DEFAULT_PATH));
        assert_eq!(args(&["--help"]), Ok(Command::Help));
    }

    #[test]
    fn rejects_what_is_not_implemented_or_malformed() {
        assert!(args(&[]).is_err());
        assert!(args(&["--config", "a.toml"]).is_err());
        assert!(args(&["--check", "--config"]).is_err());
        assert!(args(&["--check", "--frobnicate"]).is_err());
    }
}
