//! The CLI's flags, made from the settings registry ([`gzship_core::settings::SETTINGS`]):
//! every setting a command uses becomes `--flag VALUE` backed by its `GZSHIP_*` variable, with
//! the registry's unit, default and doc, and the values are parsed by
//! [`Settings::from_lookup`] exactly as the Lambda functions parse their environment.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use gzship_core::settings::{FrontEnd, Group, Only, SETTINGS, Setting, Settings, Unit};

/// Which settings a command takes.
pub trait Groups: Send + Sync + 'static {
    /// The groups of settings the command uses.
    const GROUPS: &'static [Group];
    /// Whose defaults apply: `gzship estimate` models a Lambda job, so it takes Lambda's.
    const DEFAULTS: FrontEnd = FrontEnd::Cli;
}

/// `gzship run`: everything a local job uses.
#[derive(Debug, Clone, Copy)]
pub struct RunGroups;
impl Groups for RunGroups {
    const GROUPS: &'static [Group] = &[
        Group::Ssh,
        Group::Access,
        Group::Sftp,
        Group::Job,
        Group::Master,
        Group::Worker,
        Group::S3,
        Group::Records,
        Group::Scan,
    ];
}

/// `gzship resume`: everything a local job uses but its shape, which the record holds.
#[derive(Debug, Clone, Copy)]
pub struct ResumeGroups;
impl Groups for ResumeGroups {
    const GROUPS: &'static [Group] = &[
        Group::Ssh,
        Group::Access,
        Group::Sftp,
        Group::Master,
        Group::Worker,
        Group::S3,
        Group::Records,
    ];
}

/// `gzship jobs` and `gzship abort`: the store and where its records are.
#[derive(Debug, Clone, Copy)]
pub struct RecordGroups;
impl Groups for RecordGroups {
    const GROUPS: &'static [Group] = &[Group::S3, Group::Records];
}

/// `gzship plan`: the source and the job's shape.
#[derive(Debug, Clone, Copy)]
pub struct PlanGroups;
impl Groups for PlanGroups {
    const GROUPS: &'static [Group] = &[Group::Ssh, Group::Sftp, Group::Job];
}

/// `gzship verify`: the source and the store.
#[derive(Debug, Clone, Copy)]
pub struct VerifyGroups;
impl Groups for VerifyGroups {
    const GROUPS: &'static [Group] = &[Group::Ssh, Group::Sftp, Group::S3];
}

/// `gzship estimate`: the job's shape, the master, the worker and the duration model, with
/// Lambda's defaults.
#[derive(Debug, Clone, Copy)]
pub struct EstimateGroups;
impl Groups for EstimateGroups {
    const GROUPS: &'static [Group] = &[Group::Job, Group::Master, Group::Worker, Group::Model];
    const DEFAULTS: FrontEnd = FrontEnd::Lambda;
}

/// The settings flags of one command, as given (on the command line or in the environment).
pub struct Flags<G> {
    /// Given values by environment variable name.
    values: BTreeMap<&'static str, String>,
    groups: PhantomData<G>,
}

impl<G> Clone for Flags<G> {
    fn clone(&self) -> Self {
        Flags {
            values: self.values.clone(),
            groups: PhantomData,
        }
    }
}

impl<G> fmt::Debug for Flags<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are names and sizes, never secrets (those come through *_ENV variables).
        f.debug_struct("Flags")
            .field("values", &self.values)
            .finish()
    }
}

impl<G: Groups> Flags<G> {
    /// The settings this command takes.
    fn settings() -> impl Iterator<Item = &'static Setting> {
        SETTINGS
            .iter()
            .filter(|s| G::GROUPS.contains(&s.group) && s.available_on(FrontEnd::Cli))
    }

    /// Parses and validates the given values, with the registry's defaults.
    pub fn parse(&self) -> anyhow::Result<Settings> {
        let lookup = |env: &str| self.values.get(env).cloned();
        Ok(Settings::from_lookup_with_defaults(
            FrontEnd::Cli,
            G::DEFAULTS,
            &lookup,
        )?)
    }

    /// Whether the setting named by `env` was given.
    pub fn given(&self, env: &str) -> bool {
        self.values.contains_key(env)
    }

    /// Flags from explicit values (tests).
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&'static str, &str)]) -> Self {
        Flags {
            values: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            groups: PhantomData,
        }
    }
}

fn arg(s: &'static Setting) -> Arg {
    let default = s.default_on(FrontEnd::Cli).text();
    let mut arg = Arg::new(s.flag)
        .long(s.flag)
        .env(s.env)
        .help(s.summary.to_owned())
        .long_help(format!("{}. {}\n[default: {default}]", s.summary, s.doc));
    if s.flag == "identity" {
        arg = arg.short('i');
    }
    if let Only::Cli(why) = s.only {
        arg = arg.long_help(format!(
            "{}. {}\n[default: {default}; CLI only: {why}]",
            s.summary, s.doc
        ));
    }
    match s.unit {
        Unit::Switch => arg.action(ArgAction::SetTrue),
        unit => arg.action(ArgAction::Set).value_name(unit.value_name()),
    }
}

impl<G: Groups> Args for Flags<G> {
    fn augment_args(cmd: Command) -> Command {
        Self::settings().fold(cmd, |cmd, s| cmd.arg(arg(s)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<G: Groups> FromArgMatches for Flags<G> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags {
            values: BTreeMap::new(),
            groups: PhantomData,
        };
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for s in Self::settings() {
            let value = match s.unit {
                // Unset switches read as absent, so the registry's default applies.
                Unit::Switch => matches.get_flag(s.flag).then(|| "true".to_owned()),
                _ => matches.get_one::<String>(s.flag).cloned(),
            };
            if let Some(v) = value {
                self.values.insert(s.env, v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(flatten)]
        flags: Flags<RunGroups>,
    }

    #[test]
    fn flags_are_the_registrys_settings() {
        use clap::Parser;
        let given = [
            "probe",
            "--part-memory",
            "64MiB",
            "--retry-delay",
            "250ms",
            "--sftp-requests-in-flight",
            "32",
            "--uploads-in-flight",
            "2",
            "--task-attempts",
            "5",
        ];
        // A known_hosts file and "accept any" both: refused, naming the conflict.
        let both = [
            "--known-hosts",
            "/etc/ssh/ssh_known_hosts",
            "--insecure-accept-any-host-key",
        ];
        let p = Probe::try_parse_from(given.iter().chain(&both)).unwrap();
        let err = p.flags.parse().unwrap_err().to_string();
        assert!(err.contains("one way"), "{err}");
        let p = Probe::try_parse_from(given).unwrap();
        let s = p.flags.parse().unwrap();
        assert_eq!(s.worker.part_memory, 64 << 20);
        assert_eq!(s.master.retry.base, std::time::Duration::from_millis(250));
        assert_eq!(s.sftp.requests_in_flight, 32);
        assert_eq!(s.worker.uploads_in_flight, 2);
        assert_eq!(s.master.task_attempts, 5);
        assert_eq!(s.master.concurrency, 2, "the CLI's default");
        // Lambda-only settings are not flags.
        assert!(Probe::try_parse_from(["probe", "--worker-function", "w"]).is_err());
    }

    #[test]
    fn estimate_takes_lambdas_defaults() {
        let f: Flags<EstimateGroups> = Flags::from_pairs(&[]);
        assert_eq!(f.parse().unwrap().master.concurrency, 8);
    }
}
