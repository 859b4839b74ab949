//! The model registry and the measured memory of real loads, in the store.

use super::trees::t;
use super::{codec, Result, SledStore};
use crate::queue::ModelRecords;
use crate::queue::Queue;
use crate::registry::{Calibration, MemoryRecord, RegisteredModel};

fn memory_key(path: &str, n_ctx: u32, n_seq: u32) -> Vec<u8> {
    let mut k = path.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&n_ctx.to_be_bytes());
    k.extend_from_slice(&n_seq.to_be_bytes());
    k
}

fn calibration_key(path: &str, n_ctx: u32) -> Vec<u8> {
    let mut k = memory_prefix(path);
    k.extend_from_slice(&n_ctx.to_be_bytes());
    k
}

fn memory_prefix(path: &str) -> Vec<u8> {
    let mut k = path.as_bytes().to_vec();
    k.push(0);
    k
}

impl ModelRecords for SledStore {
    fn add_model(&self, model: &RegisteredModel) -> Result<()> {
        self.tree(t::MODELS)
            .insert(model.name.as_bytes(), codec::encode(model)?)?;
        self.flush()
    }

    fn models(&self) -> Result<Vec<RegisteredModel>> {
        self.tree(t::MODELS)
            .iter()
            .values()
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    fn model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        match self.tree(t::MODELS).get(name.as_bytes())? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn remove_model(&self, name: &str) -> Result<bool> {
        let removed = self.tree(t::MODELS).remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(removed)
    }

    fn record_memory(&self, path: &str, record: &MemoryRecord) -> Result<()> {
        self.tree(t::MODEL_MEMORY).insert(
            memory_key(path, record.n_ctx, record.n_seq),
            codec::encode(record)?,
        )?;
        self.flush()
    }

    fn memory_of(&self, path: &str) -> Result<Vec<MemoryRecord>> {
        self.tree(t::MODEL_MEMORY)
            .scan_prefix(memory_prefix(path))
            .values()
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    fn record_calibration(&self, path: &str, c: &Calibration) -> Result<()> {
        self.tree(t::CALIBRATIONS)
            .insert(calibration_key(path, c.n_ctx), codec::encode(c)?)?;
        self.flush()
    }

    fn calibrations_of(&self, path: &str) -> Result<Vec<Calibration>> {
        self.tree(t::CALIBRATIONS)
            .scan_prefix(memory_prefix(path))
            .values()
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    fn calibration(&self, path: &str, n_ctx: u32) -> Result<Option<Calibration>> {
        match self
            .tree(t::CALIBRATIONS)
            .get(calibration_key(path, n_ctx))?
        {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::queue::prelude::*;
    use crate::queue::test_support::temp_store;
    use crate::registry::{MemoryRecord, RegisteredModel};

    #[test]
    fn models_and_measurements_round_trip() {
        let (_d, store) = temp_store();
        let m = RegisteredModel {
            name: "tiny".into(),
            path: "/m/tiny.gguf".into(),
            parts: vec![],
            template: None,
            architecture: "qwen3".into(),
            parameters: 5,
            quantization: "F16".into(),
            file_bytes: 10,
            added: 1,
        };
        store.add_model(&m).unwrap();
        assert_eq!(store.model("tiny").unwrap(), Some(m.clone()));
        assert_eq!(store.models().unwrap(), vec![m]);
        let r = |n_ctx, n_seq| MemoryRecord {
            n_ctx,
            n_seq,
            weights: 1,
            context_allocated: 2,
            context_resident: 3,
            at: 4,
        };
        store.record_memory("/m/tiny.gguf", &r(512, 1)).unwrap();
        store.record_memory("/m/tiny.gguf", &r(512, 4)).unwrap();
        store.record_memory("/m/tiny.gguf2", &r(512, 4)).unwrap();
        assert_eq!(
            store.memory_of("/m/tiny.gguf").unwrap(),
            vec![r(512, 1), r(512, 4)]
        );
        assert!(store.remove_model("tiny").unwrap());
        assert!(!store.remove_model("tiny").unwrap());
        assert!(store.models().unwrap().is_empty());
    }
}
