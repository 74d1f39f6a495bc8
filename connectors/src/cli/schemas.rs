//! `ferry schemas list | register | check`: the schema contract guard.
//!
//! Every `.avsc` file in the schemas folder has subjects (see
//! `ferry::schema::bindings`). `check` asks, for each, whether the file may
//! follow what is registered (or, with `--against-dir`, what an older copy
//! of the folder holds) under the subject's compatibility level, and fails
//! with the rule and field at fault: run it in CI before deploying.

use super::{Failure, Target};
use ferry::schema::bindings::file_subjects;
use ferry::schema::registry::api::VersionRef;
use ferry::schema::registry::RegistryClient;
use ferry::schema::{load_dir, CompatibilityLevel, SchemaFile};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// List subjects with their latest version, schema id and compatibility level.
    List,
    /// Register every schema file under its subjects.
    Register {
        /// Folder of `.avsc` files (default: `schema_registry.schemas_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check every schema file against its subject's latest registered
    /// version (or the same record in `--against-dir`); exit 1 if any is
    /// incompatible.
    Check {
        /// Folder of `.avsc` files (default: `schema_registry.schemas_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Check against the schemas in this folder (e.g. the last release's
        /// `schemas/` from git) instead of a registry, under
        /// `schema_registry.compatibility`.
        #[arg(long)]
        against_dir: Option<PathBuf>,
    },
}

pub(crate) async fn run(target: &Target, action: Action) -> Result<(), Failure> {
    let (config, origin) = target.load()?;
    let dir_or_default =
        |dir: Option<PathBuf>| dir.unwrap_or_else(|| config.schema_registry.schemas_dir.clone());
    match action {
        Action::List => list(&target.registry(&config)?).await,
        Action::Register { dir } => {
            let registry = target.registry(&config)?;
            let files = file_subjects(&config, &origin, &dir_or_default(dir))?;
            for (file, subjects) in &files {
                for subject in subjects {
                    let id = registry
                        .register(subject, &file.text)
                        .await
                        .map_err(|e| Failure::Runtime(format!("{}: {e}", file.path.display())))?;
                    println!("{subject}\tid {id}\t{}", file.path.display());
                }
            }
            Ok(())
        }
        Action::Check {
            dir,
            against_dir: Some(old),
        } => {
            let files = file_subjects(&config, &origin, &dir_or_default(dir))?;
            against_dir(&files, &old, config.schema_registry.compatibility)
        }
        Action::Check {
            dir,
            against_dir: None,
        } => {
            let registry = target.registry(&config)?;
            let files = file_subjects(&config, &origin, &dir_or_default(dir))?;
            against_registry(&files, &registry).await
        }
    }
}

async fn list(registry: &RegistryClient) -> Result<(), Failure> {
    let subjects = registry.subjects().await.map_err(Failure::runtime)?;
    if subjects.is_empty() {
        println!(
            "no subjects registered at {}",
            ferry::telemetry::redact::url(registry.url())
        );
    }
    for subject in subjects {
        let latest = registry.latest(&subject).await.map_err(Failure::runtime)?;
        let level = registry
            .compatibility(Some(&subject))
            .await
            .map_err(Failure::runtime)?;
        match latest {
            Some(v) => println!("{subject}\tversion {}\tid {}\t{level}", v.version, v.id),
            None => println!("{subject}\t(no live version)\t{level}"),
        }
    }
    Ok(())
}

/// Prints one verdict line per subject and fails if any is incompatible.
struct Verdicts {
    failed: usize,
}

impl Verdicts {
    fn ok(&self, subject: &str, file: &Path, what: &str) {
        println!("ok    {subject} ({}): {what}", file.display());
    }

    fn fail(&mut self, subject: &str, file: &Path, why: &str) {
        self.failed += 1;
        println!("FAIL  {subject} ({}): {why}", file.display());
    }

    fn finish(self) -> Result<(), Failure> {
        match self.failed {
            0 => Ok(()),
            n => Err(Failure::Runtime(format!(
                "{n} schema(s) incompatible; see the FAIL lines above"
            ))),
        }
    }
}

async fn against_registry(
    files: &[(SchemaFile, Vec<String>)],
    registry: &RegistryClient,
) -> Result<(), Failure> {
    let mut v = Verdicts { failed: 0 };
    for (file, subjects) in files {
        for subject in subjects {
            let Some(latest) = registry.latest(subject).await.map_err(Failure::runtime)? else {
                v.ok(subject, &file.path, "new subject, nothing registered yet");
                continue;
            };
            let level = registry
                .compatibility(Some(subject))
                .await
                .map_err(Failure::runtime)?;
            let answer = registry
                .check(subject, VersionRef::Latest, &file.text)
                .await
                .map_err(|e| Failure::Runtime(format!("{}: {e}", file.path.display())))?;
            if answer.is_compatible {
                v.ok(
                    subject,
                    &file.path,
                    &format!(
                        "{level}-compatible with version {} (id {})",
                        latest.version, latest.id
                    ),
                );
            } else {
                let why = if answer.messages.is_empty() {
                    format!("{level}: not compatible with version {}", latest.version)
                } else {
                    answer.messages.join("; ")
                };
                v.fail(subject, &file.path, &why);
            }
        }
    }
    v.finish()
}

fn against_dir(
    files: &[(SchemaFile, Vec<String>)],
    old_dir: &Path,
    level: CompatibilityLevel,
) -> Result<(), Failure> {
    let old = load_dir(old_dir).map_err(|e| Failure::Config(format!("--against-dir: {e}")))?;
    let mut v = Verdicts { failed: 0 };
    for (file, subjects) in files {
        let counterpart = old
            .iter()
            .find(|o| o.full_name().is_some() && o.full_name() == file.full_name())
            .or_else(|| {
                old.iter()
                    .find(|o| o.path.file_name() == file.path.file_name())
            });
        for subject in subjects {
            match counterpart {
                None => v.ok(
                    subject,
                    &file.path,
                    &format!("new: no counterpart in {}", old_dir.display()),
                ),
                Some(o) => match level.check(&file.schema, std::slice::from_ref(&o.schema)) {
                    Ok(()) => v.ok(
                        subject,
                        &file.path,
                        &format!("{level}-compatible with {}", o.path.display()),
                    ),
                    Err(e) => v.fail(
                        subject,
                        &file.path,
                        &format!("{} (compared with {})", e, o.path.display()),
                    ),
                },
            }
        }
    }
    v.finish()
}
