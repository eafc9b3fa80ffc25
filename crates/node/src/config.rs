//! Layered node configuration: built-in defaults, then a TOML file, then environment
//! variables `TESSERA__SECTION__KEY` (e.g. `TESSERA__INGEST__BROKERS`), then validation.
//! Each section is defined and checked by the feature it configures; this module only
//! assembles them, putting the section in front of a bad field's path (`ingest.shards`).
//! `deploy/tessera.example.toml` documents every key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tessera_core::{ConfigError, GradeMap, ensure};
use tessera_ingest::IngestConfig;

// The sections, each defined by the feature it configures.
pub use crate::checkpoints::StateConfig;
pub use crate::console::ConsoleConfig;
pub use crate::control::ControlConfig;
pub use crate::control::member::RaftConfig;
pub use crate::detect::DetectConfig;
pub use crate::notify::NotifyConfig;
pub use crate::observe::HttpConfig;
pub use crate::sql::SqlConfig;
pub use crate::store::{RetentionConfig, StoreConfig};
pub use crate::telemetry::{LogConfig, LogFormat, TelemetryConfig};

/// A node's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The site (plant) this node belongs to.
    pub site_id: String,
    /// Kafka ingest.
    pub ingest: IngestConfig,
    /// Windows, continuous queries and alerts.
    pub detect: DetectConfig,
    /// Checkpoints of the detection state.
    pub state: StateConfig,
    /// The control plane this node takes cluster-wide queries from.
    pub control: ControlConfig,
    /// The Flight SQL endpoint.
    pub sql: SqlConfig,
    /// The site-local store of raw telemetry (encrypted segments, retention, shredding).
    pub store: StoreConfig,
    /// The grade of each column of each stream (`[grades.<stream>] default = "..."`,
    /// `[grades.<stream>.columns] <column> = "..."`); defaults: [`GradeMap::builtin`]. The
    /// cluster's policy can raise them, never lower them.
    pub grades: GradeMap,
    /// mTLS on every gRPC endpoint and client of this node (`[tls] ca`, `cert`, `key`; see
    /// `tessera cert`); unset: in the clear (a trusted lab network only).
    pub tls: Option<tessera_tls::TlsFiles>,
    /// This node as a member of the cluster's control plane (Raft); unset: it is not one, and
    /// reads the cluster's queries from `[control] admin`.
    pub raft: Option<RaftConfig>,
    /// Prometheus `/metrics` and the health endpoints.
    pub http: HttpConfig,
    /// The web console and the JSON API on a listener of their own (HTTPS with `[tls]`).
    pub console: ConsoleConfig,
    /// Tracing export (OpenTelemetry, OTLP over gRPC).
    pub telemetry: TelemetryConfig,
    /// How log lines look: text or JSON.
    pub log: LogConfig,
    /// Where alert events go besides the alerts topic: Alertmanager, webhooks.
    pub notify: NotifyConfig,
    /// Deprecated keys the file or the environment used (each a warning the node logs at
    /// start, naming the key that replaces it); not a key itself.
    #[serde(skip)]
    pub deprecated: Vec<String>,
}

/// Keys renamed when durations became humantime text (`"100ms"`, `"5m"`): the old key, in
/// milliseconds, and the new one. The old keys are still read, with a warning.
const RENAMED_KEYS: [(&str, &str); 6] = [
    ("ingest.validation.max_future_ms", "ingest.validation.max_future"),
    ("ingest.validation.max_past_ms", "ingest.validation.max_past"),
    ("raft.heartbeat_ms", "raft.heartbeat"),
    ("raft.election_timeout_min_ms", "raft.election_timeout_min"),
    ("raft.election_timeout_max_ms", "raft.election_timeout_max"),
    ("raft.write_timeout_ms", "raft.write_timeout"),
];

/// The variable that sets config key `key` (`ingest.brokers` → `TESSERA__INGEST__BROKERS`).
pub fn env_var(key: &str) -> String {
    format!("TESSERA__{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Variables `TESSERA__CLIENT__*` set the command-line clients' flags (`tessera sql`,
/// `cluster`, `query`), not a node's config.
const CLIENT_PREFIX: &str = "client__";

/// Why a node's config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The named config file is not there.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// The named config file could not be read.
    #[error("reading config file {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    /// The file or an environment variable does not parse into the config (figment names the
    /// key and the source).
    #[error("config: {0}")]
    Parse(#[source] Box<figment::Error>),
    /// A value that cannot work.
    #[error("config: {0}")]
    Invalid(#[from] ConfigError),
}

/// The file with its renamed keys under their new names (`None`: it has none), each one
/// noted in `deprecated`; both the old and the new key of one setting is an error.
fn renamed_in_file(file: &Path, deprecated: &mut Vec<String>) -> Result<Option<String>, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|e| LoadError::Read(file.to_path_buf(), e))?;
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return Ok(None); // figment reports the syntax error with the file's name
    };
    let mut renamed = false;
    for (old, new) in RENAMED_KEYS {
        let (section, old_key) = old.rsplit_once('.').expect("dotted");
        let new_key = new.rsplit_once('.').expect("dotted").1;
        let Some(section) = section.split('.').try_fold(&mut table, |t, part| t.get_mut(part)?.as_table_mut()) else {
            continue;
        };
        let Some(value) = section.remove(old_key) else { continue };
        if section.contains_key(new_key) {
            return Err(ConfigError::new(old, format!("set both {old} and {new}; keep only {new}")).into());
        }
        section.insert(new_key.to_string(), value);
        deprecated.push(format!("{}: {old} is deprecated: use {new} (a duration such as \"5m\")", file.display()));
        renamed = true;
    }
    Ok(renamed.then(|| table.to_string()))
}

impl NodeConfig {
    /// Loads defaults ← `file` (if given) ← environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, LoadError> {
        Self::load_with(file, |_| {})
    }

    /// Like [`NodeConfig::load`], with `adjust` (a command's flags) applied before validation.
    pub fn load_with(file: Option<&Path>, adjust: impl FnOnce(&mut NodeConfig)) -> Result<Self, LoadError> {
        let mut deprecated = Vec::new();
        let mut figment =
            Figment::from(Serialized::defaults(NodeConfig { site_id: "site-a".into(), ..Default::default() }));
        if let Some(file) = file {
            if !file.exists() {
                return Err(LoadError::Missing(file.to_path_buf()));
            }
            figment = match renamed_in_file(file, &mut deprecated)? {
                Some(rewritten) => figment.merge(Toml::string(&rewritten)),
                None => figment.merge(Toml::file(file)),
            };
        }
        for (old, new) in RENAMED_KEYS {
            if std::env::var_os(env_var(old)).is_some() {
                deprecated.push(format!(
                    "{} is deprecated: use {} (a duration such as \"5m\")",
                    env_var(old),
                    env_var(new)
                ));
            }
        }
        let environment = Env::prefixed("TESSERA__")
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with(CLIENT_PREFIX))
            .split("__")
            .lowercase(true)
            .map(|key| match RENAMED_KEYS.iter().find(|(old, _)| key == *old) {
                Some((_, new)) => (*new).into(),
                None => key.into(),
            });
        figment = figment.merge(environment);
        let mut config: NodeConfig = figment.extract().map_err(|e| LoadError::Parse(Box::new(e)))?;
        adjust(&mut config);
        config.read_secrets()?;
        config.validate()?;
        config.deprecated = deprecated;
        Ok(config)
    }

    /// Reads what the config only points at: `ingest.kafka_from_env`'s variables into
    /// `ingest.kafka`, and `sql.credentials_file`'s users and tokens into `sql`.
    fn read_secrets(&mut self) -> Result<(), LoadError> {
        for (key, var) in std::mem::take(&mut self.ingest.kafka_from_env) {
            let field = format!("ingest.kafka_from_env.{key}");
            let value = std::env::var(&var)
                .map_err(|_| ConfigError::new(field.clone(), format!("environment variable {var} is not set")))?;
            if self.ingest.kafka.insert(key.clone(), value).is_some() {
                return Err(ConfigError::new(field, format!("ingest.kafka sets {key} too; keep one")).into());
            }
        }
        if let Some(file) = &self.sql.credentials_file {
            /// The credentials file: users and tokens, as in `[sql]`.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Credentials {
                #[serde(default)]
                users: Vec<tessera_sql::UserConfig>,
                #[serde(default)]
                tokens: Vec<tessera_sql::TokenConfig>,
            }
            let field = "sql.credentials_file";
            let text = std::fs::read_to_string(file)
                .map_err(|e| ConfigError::new(field, format!("reading {}: {e}", file.display())))?;
            let credentials: Credentials =
                toml::from_str(&text).map_err(|e| ConfigError::new(field, format!("{}: {e}", file.display())))?;
            self.sql.users.extend(credentials.users);
            self.sql.tokens.extend(credentials.tokens);
        }
        Ok(())
    }

    /// Checks every section; the error's field is the whole path (`ingest.shards`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        tessera_core::SiteId::new(self.site_id.clone()).map_err(|e| ConfigError::new("site_id", e.to_string()))?;
        self.ingest.validate().map_err(|e| match e {
            tessera_ingest::IngestError::Config(e) => e.within("ingest"),
            other => ConfigError::new("ingest", other.to_string()),
        })?;
        self.detect.validate().map_err(|e| e.within("detect"))?;
        self.state.validate().map_err(|e| e.within("state"))?;
        self.store.validate().map_err(|e| e.within("store"))?;
        self.control.validate().map_err(|e| e.within("control"))?;
        self.sql.validate().map_err(|e| e.within("sql"))?;
        self.notify.validate().map_err(|e| e.within("notify"))?;
        // A node hands a partition's rows over only when it checkpoints per partition.
        ensure(
            self.sql.site_nodes.is_empty() || self.state.enabled(),
            "sql.site_nodes",
            "a site of several nodes needs [state] dir or url (per-partition checkpoints, which hand partitions over)",
        )?;
        // A site of several nodes answers from a store only if it is shared: a node's own store
        // would drop out of the site's answers, unnoticed, whenever that node is down.
        ensure(
            self.sql.site_nodes.is_empty() || self.store.dir.is_none() || self.store.writer.is_some(),
            "store.writer",
            "a site of several nodes (sql.site_nodes) keeps one store its nodes share: set writer (this node's name in it)",
        )?;
        // A shared store files rows under their partitions, which the checkpoint barriers name.
        ensure(
            self.store.writer.is_none() || self.state.enabled(),
            "store.writer",
            "a store shared by the site's nodes needs [state] dir or url (the checkpoint barriers name each motor's partition)",
        )?;
        if let Some(raft) = &self.raft {
            raft.validate().map_err(|e| e.within("raft"))?;
        }
        self.telemetry.validate().map_err(|e| e.within("telemetry"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loading reads process-wide environment variables, which `environment_overrides_the_file`
    /// sets: every test that loads runs inside figment's `Jail`, which serialises them.
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn jailed(test: impl FnOnce()) {
        figment::Jail::expect_with(|_| {
            test();
            Ok(())
        });
    }

    #[test]
    fn the_example_config_is_the_default() {
        jailed(|| {
            let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tessera.example.toml");
            let loaded = NodeConfig::load(Some(&example)).unwrap();
            let defaults = NodeConfig { site_id: "site-a".into(), ..Default::default() };
            assert_eq!(loaded, defaults, "deploy/tessera.example.toml documents the defaults");
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn credentials_come_from_the_environment_and_a_credentials_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "credentials.toml",
                "[[users]]\nname = \"ops\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$5E36OuZHUtQ+jmMm10zlBg$iz7e7Bgwvxny+8OM5gWPofZ8nczAqYjyV96xT9izG6o\"\nrole = \"admin\"\n",
            )?;
            jail.create_file(
                "node.toml",
                "[ingest.kafka_from_env]\n\"sasl.password\" = \"KAFKA_PASSWORD\"\n[sql]\nlisten = \"127.0.0.1:0\"\ncredentials_file = \"credentials.toml\"\n",
            )?;
            let path = std::path::Path::new("node.toml");
            let err = NodeConfig::load(Some(path)).expect_err("the variable is unset");
            assert!(
                err.to_string()
                    .contains("ingest.kafka_from_env.sasl.password: environment variable KAFKA_PASSWORD is not set"),
                "{err}"
            );
            jail.set_env("KAFKA_PASSWORD", "s3cret");
            let c = NodeConfig::load(Some(path)).expect("loads");
            assert_eq!(c.ingest.kafka.get("sasl.password").map(String::as_str), Some("s3cret"));
            assert_eq!(c.sql.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["ops"]);
            jail.create_file("credentials.toml", "[[users]]\nname = 1\n")?;
            let err = NodeConfig::load(Some(path)).expect_err("a bad file");
            assert!(err.to_string().contains("sql.credentials_file: credentials.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn durations_are_humantime_and_the_old_millisecond_keys_still_load_with_a_warning() {
        figment::Jail::expect_with(|jail| {
            let raft = "[raft]\ndata_dir = \"/var/lib/raft\"\n";
            jail.create_file(
                "new.toml",
                &format!("[ingest.validation]\nmax_past = \"2days\"\n{raft}heartbeat = \"150ms\"\nelection_timeout_min = \"400ms\"\n"),
            )?;
            let c = NodeConfig::load(Some(std::path::Path::new("new.toml"))).expect("loads");
            let r = c.raft.as_ref().expect("raft");
            assert_eq!(
                (c.ingest.validation.max_past_ms, r.heartbeat_ms, r.election_timeout_min_ms),
                (172_800_000, 150, 400)
            );
            assert!(c.deprecated.is_empty());

            jail.create_file(
                "old.toml",
                &format!("[ingest.validation]\nmax_past_ms = 3600000\n{raft}heartbeat_ms = 120\n"),
            )?;
            jail.set_env("TESSERA__RAFT__WRITE_TIMEOUT_MS", "4000");
            let c = NodeConfig::load(Some(std::path::Path::new("old.toml"))).expect("loads");
            let r = c.raft.as_ref().expect("raft");
            assert_eq!((c.ingest.validation.max_past_ms, r.heartbeat_ms, r.write_timeout_ms), (3_600_000, 120, 4000));
            assert_eq!(c.deprecated.len(), 3, "{:?}", c.deprecated);
            assert!(c.deprecated.iter().any(|w| w.contains("raft.heartbeat_ms is deprecated: use raft.heartbeat")));
            assert!(c.deprecated.iter().any(|w| {
                w.contains("TESSERA__RAFT__WRITE_TIMEOUT_MS is deprecated: use TESSERA__RAFT__WRITE_TIMEOUT")
            }));

            jail.create_file("both.toml", &format!("{raft}heartbeat_ms = 120\nheartbeat = \"100ms\"\n"))?;
            let err = NodeConfig::load(Some(std::path::Path::new("both.toml"))).expect_err("both");
            assert!(err.to_string().contains("set both raft.heartbeat_ms and raft.heartbeat"), "{err}");

            // The clients' variables are no node config.
            jail.set_env("TESSERA__CLIENT__SQL", "127.0.0.1:50051");
            NodeConfig::load(Some(std::path::Path::new("new.toml"))).expect("TESSERA__CLIENT__* is ignored");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("node.toml", "site_id = \"site-b\"\n[ingest]\nshards = 4\n")?;
            jail.set_env("TESSERA__INGEST__BROKERS", "kafka-0:9092");
            jail.set_env("TESSERA__INGEST__SHARDS", "16");
            let c = NodeConfig::load(Some(std::path::Path::new("node.toml"))).expect("loads");
            assert_eq!(
                (c.site_id.as_str(), c.ingest.brokers.as_str(), c.ingest.shards),
                ("site-b", "kafka-0:9092", 16)
            );
            Ok(())
        });
    }

    #[test]
    fn file_and_errors_name_the_field() {
        jailed(file_and_errors);
    }

    fn file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "site_id = \"site-b\"\n[ingest]\nbrokers = \"k:9092\"\nshards = 4\nbatch_max_age = \"250ms\"\n",
        )
        .unwrap();
        let c = NodeConfig::load(Some(&good)).unwrap();
        assert_eq!((c.site_id.as_str(), c.ingest.brokers.as_str(), c.ingest.shards), ("site-b", "k:9092", 4));
        assert_eq!(c.ingest.batch_max_age, std::time::Duration::from_millis(250));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[ingest]\nshards = 0\n").unwrap();
        assert_eq!(NodeConfig::load(Some(&bad)).unwrap_err().to_string(), "config: ingest.shards: must be at least 1");

        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "[ingest]\nshard = 3\n").unwrap();
        let err = NodeConfig::load(Some(&typo)).unwrap_err().to_string();
        assert!(err.contains("shard"), "{err}");

        let wrong_type = dir.path().join("type.toml");
        std::fs::write(&wrong_type, "[ingest]\nshards = \"many\"\n").unwrap();
        let err = NodeConfig::load(Some(&wrong_type)).unwrap_err().to_string();
        assert!(err.contains("ingest.shards"), "{err}");
    }

    /// A site of several nodes with a store of each node's own, or a shared store without
    /// checkpoints, is refused, naming the field.
    #[test]
    fn a_site_of_several_nodes_shares_its_store() {
        let mut c = NodeConfig { site_id: "site-a".into(), ..Default::default() };
        c.state.dir = Some("/var/lib/tessera/state".into());
        c.store.dir = Some("/var/lib/tessera/store".into());
        c.store.kek_file = Some("/etc/tessera/kek".into());
        c.sql.site_nodes = vec!["b:50051".into()];
        c.sql.federation_token = Some("a-token-of-16-chars".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("store.writer: a site of several nodes"), "{err}");
        c.store.writer = Some("pod-0".into());
        c.validate().unwrap();
        c.state.dir = None;
        c.sql.site_nodes.clear();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("store.writer: a store shared"), "{err}");
        c.state.dir = Some("/s".into());
        c.store.writer = Some("../x".into());
        assert!(c.validate().unwrap_err().to_string().starts_with("store.writer: must be"));
    }
}
