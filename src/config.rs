//! Configuration: `<home>/config.toml`, then environment variables, then flags (each later one
//! wins). Parsing here; the binary applies flags on top of the resolved [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::gguf;
use crate::job::ModelRef;

/// A model named in the config: `[models.gemma] path = "…", template = "gemma"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub path: PathBuf,
    /// Built-in llama.cpp chat template for a GGUF that has none.
    #[serde(default)]
    pub template: Option<String>,
}

/// Everything configurable. Field defaults are what a new user gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The model jobs use when `--model` is not given: a name in `[models]` or a path.
    pub default_model: Option<String>,
    /// Named models.
    pub models: BTreeMap<String, ModelEntry>,
    /// Context size per sequence (capped at the model's training context).
    pub n_ctx: u32,
    /// Sequences decoded together (B): chunks of one document or of several.
    pub parallel: u32,
    /// Decoding threads; 0 means all cores.
    pub threads: u32,
    /// `batch-invariant` (answers do not depend on `parallel` or on who shares the batch) or
    /// `fastest` (llama.cpp's defaults: llamafile, repacked weights; see BENCHMARKS.md).
    pub kernels: crate::engine::Kernels,
    /// Attempts before a job is Dead.
    pub max_attempts: u32,
    /// Crashes of the worker while a job ran alone before that job is Dead.
    pub max_crashes: u32,
    /// Longest one chunk may generate, in seconds.
    pub chunk_timeout_secs: u64,
    /// Largest document accepted, in bytes.
    pub max_file_bytes: u64,
    /// sled's cache, in MiB. Small: the store must not crowd out a model.
    pub store_cache_mb: u64,
    /// More folders `models scan` looks through.
    pub scan_dirs: Vec<PathBuf>,
    /// Bytes (MiB) all loaded models may take together, contexts included; 0 means three
    /// quarters of physical memory.
    pub model_budget_mb: u64,
    /// Most models loaded at once.
    pub max_models: usize,
    /// An idle model unloads after this many seconds.
    pub keep_alive_secs: u64,
    /// Models (names or paths) that stay loaded however long they idle.
    pub pin: Vec<String>,
    /// Memory left to the system (MiB); 0 means 12.5 % of RAM (at least 4 GiB on a Mac).
    pub memory_reserve_mb: u64,
    /// Memory use (percent of total) at which the worker stops growing its batch.
    pub memory_warn_percent: f64,
    /// Memory use (percent of total) at which the worker sheds load.
    pub memory_critical_percent: f64,
    /// Claim jobs only in this window: a five-field crontab pattern for when it opens…
    pub window: Option<String>,
    /// …and the local time (HH:MM) it closes.
    pub until: Option<String>,
    /// The memory history: a sample this often (seconds)…
    pub history_sample_secs: f64,
    /// …kept at full resolution this long (hours), then as one-minute averages…
    pub history_full_hours: u64,
    /// …for this long (days).
    pub history_keep_days: u64,
    /// Claim jobs only on AC power.
    pub ac_only: bool,
    /// Let the worker size its batch (up to `parallel`) from throughput and memory.
    pub adaptive: bool,
    /// How often the adaptive batch size takes its readings (seconds).
    pub adapt_interval_secs: f64,
    /// Shares of the memory beyond the reserve that loaded models' weights, and a batch's
    /// processing buffers (KV cache, compute buffers), may take.
    pub memory_model_share: f64,
    pub memory_buffer_share: f64,
    /// Serve the HTTP API on this address (`worker --http`), e.g. `127.0.0.1:11400`.
    pub http: Option<String>,
    /// Most tokens one interactive chat completion generates: a larger `max_tokens` is
    /// lowered to it, so that no request holds a batch slot for long.
    pub chat_max_tokens: u32,
    /// The person at the machine comes first: while they touched it within this duration
    /// (e.g. `5m`), the worker yields (`yield_to`).
    pub yield_when_active: Option<String>,
    /// How it yields: `pause` (claims nothing new) or `b1` (one job at a time).
    pub yield_to: crate::service::presence::YieldTo,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_model: None,
            models: BTreeMap::new(),
            n_ctx: 4096,
            parallel: 4,
            threads: 0,
            kernels: crate::engine::Kernels::default(),
            max_attempts: 3,
            chat_max_tokens: 4096,
            max_crashes: 3,
            chunk_timeout_secs: 600,
            max_file_bytes: 50_000_000,
            store_cache_mb: 32,
            scan_dirs: Vec::new(),
            model_budget_mb: 0,
            max_models: 2,
            keep_alive_secs: 300,
            pin: Vec::new(),
            memory_reserve_mb: 0,
            memory_warn_percent: 80.0,
            memory_critical_percent: 90.0,
            window: None,
            until: None,
            history_sample_secs: 1.0,
            history_full_hours: 24,
            history_keep_days: 30,
            ac_only: false,
            adaptive: false,
            adapt_interval_secs: 5.0,
            memory_model_share: 0.75,
            memory_buffer_share: 0.25,
            http: None,
            yield_when_active: None,
            yield_to: crate::service::presence::YieldTo::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("environment variable {0}={1:?} is not a number")]
    Env(&'static str, String),
    #[error(
        "no model given: pass --model PATH or NAME, set QWEN3Q_MODEL, or set default_model in {0}"
    )]
    NoModel(PathBuf),
    #[error("model {0:?} is neither a file, a name in [models] of the config, nor a registered model (qwen3q models add)")]
    UnknownModel(String),
    #[error("model file not found: {0}")]
    ModelMissing(PathBuf),
    #[error("{0} is not a usable GGUF model: {1}")]
    BadModel(PathBuf, gguf::GgufError),
    #[error("{0} has no chat template; pass --template (gemma, chatml, llama3, …)")]
    NoTemplate(PathBuf),
}

impl Config {
    /// The config file if it exists (defaults otherwise), then the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::parse(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(ConfigError::Read(path.to_path_buf(), e)),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Every number within what the worker can use: a value past it would overflow a
    /// computation (seconds to milliseconds, MiB to bytes) or make no sense (no sequence, a
    /// share over the whole). The first one out of range, named with its range.
    pub fn check(&self) -> Result<(), String> {
        fn within<T: PartialOrd + std::fmt::Display>(
            key: &str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), String> {
            if v >= lo && v <= hi {
                Ok(())
            } else {
                Err(format!("{key} = {v} is out of range ({lo} to {hi})"))
            }
        }
        const MIB_MAX: u64 = 1 << 30; // a petabyte, in MiB
        const DAY: u64 = 86_400;
        within("n_ctx", self.n_ctx, 1, 1 << 24)?;
        within("parallel", self.parallel, 1, 256)?;
        within("threads", self.threads, 0, 4096)?;
        within("max_attempts", self.max_attempts, 1, 1000)?;
        within("chat_max_tokens", self.chat_max_tokens, 1, 1 << 24)?;
        within("max_crashes", self.max_crashes, 1, 1000)?;
        within("chunk_timeout_secs", self.chunk_timeout_secs, 1, 7 * DAY)?;
        within(
            "max_file_bytes",
            self.max_file_bytes,
            1,
            crate::ingest::MAX_DOCUMENT_BYTES,
        )?;
        within("store_cache_mb", self.store_cache_mb, 0, MIB_MAX)?;
        within("model_budget_mb", self.model_budget_mb, 0, MIB_MAX)?;
        within("max_models", self.max_models, 1, 64)?;
        within("keep_alive_secs", self.keep_alive_secs, 0, 365 * DAY)?;
        within("memory_reserve_mb", self.memory_reserve_mb, 0, MIB_MAX)?;
        within("memory_warn_percent", self.memory_warn_percent, 1.0, 100.0)?;
        within(
            "memory_critical_percent",
            self.memory_critical_percent,
            self.memory_warn_percent,
            100.0,
        )?;
        within(
            "history_sample_secs",
            self.history_sample_secs,
            0.05,
            3600.0,
        )?;
        within("history_full_hours", self.history_full_hours, 1, 24 * 365)?;
        within("history_keep_days", self.history_keep_days, 1, 3650)?;
        within("adapt_interval_secs", self.adapt_interval_secs, 0.1, 3600.0)?;
        within("memory_model_share", self.memory_model_share, 0.01, 1.0)?;
        within("memory_buffer_share", self.memory_buffer_share, 0.01, 1.0)?;
        Ok(())
    }

    /// `QWEN3Q_MODEL`, `QWEN3Q_N_CTX`, `QWEN3Q_PARALLEL`, `QWEN3Q_THREADS` override the file.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(m) = get("QWEN3Q_MODEL").filter(|m| !m.is_empty()) {
            self.default_model = Some(m);
        }
        let num = |name: &'static str| -> Result<Option<u32>, ConfigError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Env(name, v)),
                None => Ok(None),
            }
        };
        if let Some(n) = num("QWEN3Q_N_CTX")? {
            self.n_ctx = n;
        }
        if let Some(n) = num("QWEN3Q_PARALLEL")? {
            self.parallel = n.max(1);
        }
        if let Some(n) = num("QWEN3Q_THREADS")? {
            self.threads = n;
        }
        Ok(())
    }

    /// Resolve a model as the user named it (or the default) into a checked [`ModelRef`]: the
    /// file exists and is a complete GGUF, and it has a chat template or one is named (a
    /// GGUF without one gets the built-in template of its architecture when there is one).
    pub fn resolve_model(
        &self,
        named: Option<&str>,
        template: Option<&str>,
        config_path: &Path,
        registry: &dyn Fn(&str) -> Option<ModelEntry>,
        checked: &crate::validated::ValidatedModels,
    ) -> Result<ModelRef, ConfigError> {
        let name = named
            .map(str::to_string)
            .or_else(|| self.default_model.clone())
            .ok_or_else(|| ConfigError::NoModel(config_path.to_path_buf()))?;
        let looks_like_path = name.contains('/') || name.ends_with(".gguf");
        let entry = match self.models.get(&name) {
            Some(e) => Some(e.clone()),
            None if !looks_like_path => registry(&name),
            None => None,
        };
        let named_entry = entry.is_some();
        let (path, entry_template) = match entry {
            Some(e) => (e.path.clone(), e.template.clone()),
            None => {
                let p = PathBuf::from(&name);
                if !p.exists() && !looks_like_path {
                    return Err(ConfigError::UnknownModel(name));
                }
                (p, None)
            }
        };
        if !path.is_file() {
            return Err(ConfigError::ModelMissing(path));
        }
        let path = path
            .canonicalize()
            .map_err(|e| ConfigError::Read(path.clone(), e))?;
        let check = checked
            .check(&path)
            .map_err(|e| ConfigError::BadModel(path.clone(), e))?;
        let template = template.map(str::to_string).or(entry_template);
        let template = match (check.has_template, template) {
            (_, Some(t)) => Some(t),
            (true, None) => None,
            (false, None) => {
                match builtin_template_for(check.architecture.as_deref().unwrap_or("")) {
                    Some(t) => Some(t.to_string()),
                    None => return Err(ConfigError::NoTemplate(path)),
                }
            }
        };
        let display = if named_entry {
            name
        } else {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name)
        };
        Ok(ModelRef {
            name: display,
            path: path.to_string_lossy().into_owned(),
            template,
        })
    }
}

/// llama.cpp's built-in template for an architecture, for GGUFs shipped without a template.
pub fn builtin_template_for(arch: &str) -> Option<&'static str> {
    match arch {
        a if a.starts_with("gemma") => Some("gemma"),
        a if a.starts_with("qwen") => Some("chatml"),
        "llama" => Some("llama3"),
        a if a.starts_with("phi3") => Some("phi3"),
        a if a.starts_with("mistral") => Some("mistral-v7"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            r#"
            default_model = "gemma"
            n_ctx = 2048
            [models.gemma]
            path = "/m/gemma.gguf"
            template = "gemma"
            "#,
        )
        .unwrap();
        assert_eq!(c.default_model.as_deref(), Some("gemma"));
        assert_eq!(c.n_ctx, 2048);
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.models["gemma"].template.as_deref(), Some("gemma"));
    }

    #[test]
    fn numbers_out_of_range_are_refused_naming_the_key_and_range() {
        for (text, key) in [
            ("n_ctx = 0", "n_ctx = 0 is out of range (1 to 16777216)"),
            ("keep_alive_secs = 18446744073709551615", "keep_alive_secs"),
            (
                "history_full_hours = 9999999999999999",
                "history_full_hours",
            ),
            ("history_keep_days = 9999999999999999", "history_keep_days"),
            ("model_budget_mb = 18446744073709551615", "model_budget_mb"),
            ("memory_reserve_mb = 18014398509481984", "memory_reserve_mb"),
            ("store_cache_mb = 18014398509481984", "store_cache_mb"),
            ("history_sample_secs = nan", "history_sample_secs = NaN"),
            ("adapt_interval_secs = inf", "adapt_interval_secs"),
            ("memory_model_share = 7.0", "memory_model_share"),
            ("memory_warn_percent = 95.0", "memory_critical_percent = 90"),
            ("parallel = 0", "parallel"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        Config::default().check().unwrap();
    }

    #[test]
    fn kernels_are_the_fastest_unless_the_file_asks_for_batch_invariant_ones() {
        use crate::job::Kernels;
        assert_eq!(Config::default().kernels, Kernels::Fastest);
        let c = Config::parse(r#"kernels = "batch-invariant""#).unwrap();
        assert_eq!(c.kernels, Kernels::BatchInvariant);
        let err = Config::parse(r#"kernels = "quick""#).unwrap_err();
        assert!(
            err.contains("quick") && err.contains("batch-invariant"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::parse("n_ctxx = 5").unwrap_err().contains("n_ctxx"));
    }

    #[test]
    fn env_overrides_the_file() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "QWEN3Q_MODEL" => Some("/x.gguf".into()),
            "QWEN3Q_N_CTX" => Some("1024".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.default_model.as_deref(), Some("/x.gguf"));
        assert_eq!(c.n_ctx, 1024);
        let err = c
            .apply_env(|k| (k == "QWEN3Q_THREADS").then(|| "many".into()))
            .unwrap_err();
        assert!(err.to_string().contains("QWEN3Q_THREADS"));
    }

    #[test]
    fn models_must_exist_and_be_gguf() {
        let c = Config::default();
        let p = Path::new("/cfg");
        let cache_dir = tempfile::tempdir().unwrap();
        let checked =
            crate::validated::ValidatedModels::new(cache_dir.path().join("validated-models.json"));
        assert!(matches!(
            c.resolve_model(None, None, p, &|_| None, &checked),
            Err(ConfigError::NoModel(_))
        ));
        assert!(matches!(
            c.resolve_model(Some("nosuchname"), None, p, &|_| None, &checked),
            Err(ConfigError::UnknownModel(_))
        ));
        assert!(matches!(
            c.resolve_model(Some("/no/such.gguf"), None, p, &|_| None, &checked),
            Err(ConfigError::ModelMissing(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.gguf");
        std::fs::write(&fake, "not a model").unwrap();
        let err = c
            .resolve_model(Some(fake.to_str().unwrap()), None, p, &|_| None, &checked)
            .unwrap_err();
        assert!(matches!(err, ConfigError::BadModel(..)), "{err}");
        assert!(err.to_string().contains("not a GGUF"));
    }

    #[test]
    fn builtin_templates_by_architecture() {
        assert_eq!(builtin_template_for("gemma3"), Some("gemma"));
        assert_eq!(builtin_template_for("qwen3"), Some("chatml"));
        assert_eq!(builtin_template_for("mamba"), None);
    }
}
