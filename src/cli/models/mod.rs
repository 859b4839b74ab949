//! `qwen3q models`: the registry (add, list, rm, scan) and `inspect`.

mod inspect;

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::args::ModelsCommand;
use super::output::human_bytes;
use super::{code, fail, Coded, Ctx};
use crate::engine::gguf;
use crate::protocol::{Request, Response};
use crate::registry::{self, default_name, split_part, RegisteredModel};

pub fn run(ctx: &Ctx, command: ModelsCommand) -> Result<i32> {
    match command {
        ModelsCommand::Inspect {
            model,
            n_ctx,
            parallel,
            json,
        } => inspect::run(ctx, &model, n_ctx, &parallel, json),
        ModelsCommand::Add {
            path,
            name,
            template,
        } => {
            let m = checked(ctx, &path, name, template.as_deref())?;
            register(ctx, &m)?;
            println!("added {} ({})", m.name, m.path);
            Ok(0)
        }
        ModelsCommand::List { json } => list(ctx, json),
        ModelsCommand::Rm { name } => match ctx.call(Request::ModelRemove(name.clone()))? {
            Response::Removed(true) => {
                println!("removed {name}");
                Ok(0)
            }
            _ => fail(
                code::NOT_FOUND,
                format!("no registered model named {name:?}"),
            ),
        },
        ModelsCommand::Scan { dirs, add, json } => scan(ctx, &dirs, add, json),
    }
}

/// The parts of the split GGUF `path` belongs to, in order (just `path` for a single file);
/// an error names a missing part.
fn parts_of(path: &Path) -> Result<Vec<PathBuf>> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((base, _, total)) = split_part(&stem) else {
        return Ok(vec![path.to_path_buf()]);
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    (1..=total)
        .map(|k| {
            let p = dir.join(format!("{base}-{k:05}-of-{total:05}.gguf"));
            if p.is_file() {
                Ok(p)
            } else {
                Err(Coded(
                    code::BAD_INPUT,
                    format!(
                        "split model {base}: part {k} of {total} is missing ({})",
                        p.display()
                    ),
                )
                .into())
            }
        })
        .collect()
}

/// A model ready to register: every part present, the first part's header complete and
/// genuine, a chat template known.
fn checked(
    ctx: &Ctx,
    path: &Path,
    name: Option<String>,
    template: Option<&str>,
) -> Result<RegisteredModel> {
    let parts = parts_of(path)?;
    let first = &parts[0];
    let model_ref = ctx
        .config
        .resolve_model(
            Some(&first.display().to_string()),
            template,
            &ctx.home.config(),
            &|_| None,
            &ctx.checked(),
        )
        .map_err(|e| Coded(code::BAD_INPUT, e.to_string()))?;
    let header = gguf::inspect(Path::new(&model_ref.path))
        .map_err(|e| Coded(code::BAD_INPUT, format!("{}: {e}", first.display())))?;
    let mut file_bytes = 0;
    for p in &parts {
        file_bytes += std::fs::metadata(p)?.len();
    }
    let facts = header.facts(file_bytes);
    let name = name.unwrap_or_else(|| default_name(first));
    if name.is_empty() || name.contains('/') {
        return fail(code::BAD_INPUT, format!("bad model name {name:?}"));
    }
    let parts = if parts.len() > 1 { parts } else { Vec::new() };
    Ok(RegisteredModel {
        name,
        path: model_ref.path,
        parts: parts.iter().map(|p| p.display().to_string()).collect(),
        template: model_ref.template,
        architecture: facts.architecture,
        parameters: facts.parameters,
        quantization: facts.quantization,
        file_bytes,
        added: crate::now_ms(),
    })
}

/// Register `m` under its name, unless the name is taken.
fn register(ctx: &Ctx, m: &RegisteredModel) -> Result<()> {
    if let Response::Model(Some(old)) = ctx.call(Request::ModelGet(m.name.clone()))? {
        return fail(
            code::BAD_INPUT,
            format!(
                "{} is already registered ({}); qwen3q models rm {} first",
                old.name, old.path, old.name
            ),
        );
    }
    ctx.call(Request::ModelAdd(m.clone()))?;
    Ok(())
}

fn registered(ctx: &Ctx) -> Result<Vec<RegisteredModel>> {
    match ctx.call(Request::ModelList)? {
        Response::Models(m) => Ok(m),
        other => fail(code::FAILURE, format!("unexpected answer: {other:?}")),
    }
}

fn list(ctx: &Ctx, json: bool) -> Result<i32> {
    let models = registered(ctx)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(0);
    }
    if models.is_empty() {
        println!("no registered models (qwen3q models add PATH, or models scan --add)");
    }
    for m in &models {
        let split = if m.parts.is_empty() {
            String::new()
        } else {
            format!(", {} parts", m.parts.len())
        };
        println!(
            "{:<28} {:<10} {:>6.2} B {:<8} {:>10}{split}  {}",
            m.name,
            m.architecture,
            m.parameters as f64 / 1e9,
            m.quantization,
            human_bytes(m.file_bytes),
            m.path
        );
    }
    Ok(0)
}

fn scan(ctx: &Ctx, dirs: &[PathBuf], add: bool, json: bool) -> Result<i32> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut extra = ctx.config.scan_dirs.clone();
    extra.extend(dirs.iter().cloned());
    let found = registry::scan(&registry::usual_places(&home, &extra));
    let known = registered(ctx)?;
    let is_known = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        known.iter().any(|m| Path::new(&m.path) == p)
    };
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "path": f.path.display().to_string(),
                    "parts": f.parts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "incomplete": f.incomplete,
                    "registered": is_known(&f.path),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    let mut added = 0;
    for f in &found {
        let state = if f.incomplete {
            "incomplete split model"
        } else if is_known(&f.path) {
            "registered"
        } else if add {
            match checked(ctx, &f.path, None, None).and_then(|m| register(ctx, &m)) {
                Ok(_) => {
                    added += 1;
                    "added"
                }
                Err(e) => {
                    eprintln!("qwen3q: {}: {e}", f.path.display());
                    "refused"
                }
            }
        } else {
            "found"
        };
        if !json {
            println!("{:<10} {:<28} {}", state, f.name, f.path.display());
        }
    }
    if !json {
        println!(
            "{} models found{}",
            found.len(),
            if add {
                format!(", {added} added")
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}
