//! Reading a GGUF file's header without loading its weights: metadata, tensor table, and
//! whether the file is long enough to hold the tensors it declares. A fake or truncated file
//! is refused here, before llama.cpp ever sees it.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// A metadata value. Arrays keep their first few items (token lists are huge) and their length.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64, head: Vec<Value> },
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(v) => Some(v),
            Value::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's entry in the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Bytes of data, when the type is known.
    pub fn bytes(&self) -> Option<u64> {
        let (block, size) = type_block(self.ggml_type)?;
        Some(self.elements().div_ceil(block) * size)
    }
}

/// A parsed header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts in the file.
    pub data_offset: u64,
}

impl Header {
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture")?.as_str()
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key)?.as_u64()
    }
    /// `{arch}.{suffix}`, e.g. `context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.metadata.get("tokenizer.chat_template")?.as_str()
    }
    /// The file size the tensor table needs, when every tensor's type is known.
    pub fn required_size(&self) -> Option<u64> {
        let mut end = self.data_offset;
        for t in &self.tensors {
            end = end.max(self.data_offset + t.offset + t.bytes()?);
        }
        Some(end)
    }
    /// Bytes of all tensors (the weights).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().filter_map(TensorInfo::bytes).sum()
    }
}

/// What a person (and memory planning) wants to know of a model, read from its header.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelFacts {
    pub architecture: String,
    pub name: Option<String>,
    /// Parameters: elements of all tensors.
    pub parameters: u64,
    /// The file type llama.cpp records (`Q4_K_M`, `F16`, ...), else the most common tensor type.
    pub quantization: String,
    pub file_bytes: u64,
    /// Bytes of tensor data (the weights).
    pub weight_bytes: u64,
    pub layers: Option<u64>,
    pub embedding: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    /// Size of one attention head's key (and value) vector.
    pub head_size: Option<u64>,
    pub context_length: Option<u64>,
    /// Sliding-window attention size, for models that use it on some layers.
    pub sliding_window: Option<u64>,
    pub vocab_size: Option<u64>,
    pub chat_template: bool,
}

/// llama.cpp's `general.file_type` names (`llama_ftype`).
fn file_type_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

impl Header {
    /// The facts of [`ModelFacts`]; `file_bytes` is the file's length.
    pub fn facts(&self, file_bytes: u64) -> ModelFacts {
        let arch = self.architecture().unwrap_or("unknown").to_string();
        let quantization = self
            .get_u64("general.file_type")
            .and_then(file_type_name)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let mut by_type: BTreeMap<u32, u64> = BTreeMap::new();
                for t in &self.tensors {
                    *by_type.entry(t.ggml_type).or_default() += t.elements();
                }
                let top = by_type.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t);
                top.map(type_name).unwrap_or("unknown").to_string()
            });
        let heads = self.arch_u64("attention.head_count");
        let embedding = self.arch_u64("embedding_length");
        let head_size = self
            .arch_u64("attention.key_length")
            .or_else(|| Some(embedding? / heads.filter(|h| *h > 0)?));
        let vocab_size = match self.metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array { len, .. }) => Some(*len),
            _ => self.arch_u64("vocab_size"),
        };
        ModelFacts {
            name: self
                .metadata
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_string),
            architecture: arch,
            parameters: self.tensors.iter().map(TensorInfo::elements).sum(),
            quantization,
            file_bytes,
            weight_bytes: self.weight_bytes(),
            layers: self.arch_u64("block_count"),
            embedding,
            heads,
            kv_heads: self.arch_u64("attention.head_count_kv").or(heads),
            head_size,
            context_length: self.arch_u64("context_length"),
            sliding_window: self.arch_u64("attention.sliding_window"),
            vocab_size,
            chat_template: self.chat_template().is_some(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (no GGUF magic)")]
    NotGguf,
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("damaged header: {0}")]
    Damaged(String),
    #[error("truncated: the file has {actual} bytes but its tensors need {required}")]
    Truncated { actual: u64, required: u64 },
    #[error("the file declares no tensors")]
    NoTensors,
}

/// (elements per block, bytes per block) of ggml's tensor types.
fn type_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66), // IQ2_XXS
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),    // F64
        29 => (256, 56), // IQ1_M
        30 => (1, 2),    // BF16
        34 => (256, 54), // TQ1_0
        35 => (256, 66), // TQ2_0
        39 => (32, 17),  // MXFP4
        _ => return None,
    })
}

/// The name of a ggml type, for people.
pub fn type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        23 => "IQ4_XS",
        30 => "BF16",
        39 => "MXFP4",
        _ => "other",
    }
}

const MAX_STRING: u64 = 64 << 20;
const MAX_COUNT: u64 = 1 << 24;
const ARRAY_HEAD: u64 = 8;

struct R<T> {
    inner: T,
}

impl<T: Read + Seek> R<T> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(eof)?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(GgufError::Damaged(format!(
                "{what} count {n} is implausible"
            )));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Damaged(format!("string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf).map_err(eof)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn skip_string(&mut self) -> Result<(), GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Damaged(format!("string of {len} bytes")));
        }
        // Read past it: seeking would throw away a BufReader's buffer on every string, and a
        // tokenizer has hundreds of thousands of them.
        let skipped = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink())?;
        if skipped < len {
            return Err(GgufError::Damaged("the header ends early".into()));
        }
        Ok(())
    }
    fn value(&mut self, ty: u32, keep: bool) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::UInt(u8::from_le_bytes(self.bytes()?) as u64),
            1 => Value::Int(i8::from_le_bytes(self.bytes()?) as i64),
            2 => Value::UInt(u16::from_le_bytes(self.bytes()?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => Value::UInt(self.u32()? as u64),
            5 => Value::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 if keep => Value::Str(self.string()?),
            8 => {
                self.skip_string()?;
                Value::Str(String::new())
            }
            9 => {
                let item_ty = self.u32()?;
                let len = self.count("array")?;
                let mut head = Vec::new();
                for i in 0..len {
                    let v = self.value(item_ty, keep && i < ARRAY_HEAD)?;
                    if i < ARRAY_HEAD {
                        head.push(v);
                    }
                }
                Value::Array { len, head }
            }
            10 => Value::UInt(self.u64()?),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(GgufError::Damaged(format!("unknown value type {other}"))),
        })
    }
}

fn eof(e: std::io::Error) -> GgufError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        GgufError::Damaged("the header ends early".into())
    } else {
        GgufError::Io(e)
    }
}

/// Parse the header from a reader positioned at the start of the file.
pub fn read_header<T: Read + Seek>(inner: T) -> Result<Header, GgufError> {
    let mut r = R { inner };
    let magic: [u8; 4] = r.bytes().map_err(|_| GgufError::NotGguf)?;
    if &magic != b"GGUF" {
        return Err(GgufError::NotGguf);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let n_tensors = r.count("tensor")?;
    let n_kv = r.count("metadata")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, true)?;
        metadata.insert(key, value);
    }
    let mut tensors = Vec::with_capacity(n_tensors.min(65_536) as usize);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            return Err(GgufError::Damaged(format!(
                "tensor {name} has {n_dims} dimensions"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| r.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(Value::as_u64)
        .filter(|a| *a > 0)
        .unwrap_or(32);
    let pos = r.inner.stream_position()?;
    let data_offset = pos.div_ceil(alignment) * alignment;
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
    })
}

/// Read and check a GGUF file: a real header, at least one tensor, and long enough for every
/// tensor it declares.
pub fn inspect(path: &Path) -> Result<Header, GgufError> {
    let file = std::fs::File::open(path)?;
    let actual = file.metadata()?.len();
    let header = read_header(BufReader::with_capacity(1 << 20, file))?;
    if header.tensors.is_empty() {
        return Err(GgufError::NoTensors);
    }
    if let Some(required) = header.required_size() {
        if actual < required {
            return Err(GgufError::Truncated { actual, required });
        }
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    /// A minimal GGUF: one string key, one u32 key, one F32 tensor of 8 elements.
    fn tiny(with_data: bool) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "qwen3");
        s(&mut b, "qwen3.context_length");
        b.extend(4u32.to_le_bytes());
        b.extend(4096u32.to_le_bytes());
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        if with_data {
            b.extend([0u8; 32]);
        }
        b
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let h = read_header(Cursor::new(tiny(true))).unwrap();
        assert_eq!(h.architecture(), Some("qwen3"));
        assert_eq!(h.arch_u64("context_length"), Some(4096));
        assert_eq!(h.tensors.len(), 1);
        assert_eq!(h.tensors[0].bytes(), Some(32));
        assert_eq!(h.required_size(), Some(h.data_offset + 32));
        assert_eq!(h.weight_bytes(), 32);
        let f = h.facts(1000);
        assert_eq!(f.architecture, "qwen3");
        assert_eq!(f.parameters, 8);
        assert_eq!(
            f.quantization, "F32",
            "no file type: the most common tensor type"
        );
        assert_eq!(f.context_length, Some(4096));
        assert!(!f.chat_template);
    }

    #[test]
    fn refuses_fakes_and_truncations() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.gguf");
        std::fs::write(&fake, b"this is not a model").unwrap();
        assert!(matches!(inspect(&fake), Err(GgufError::NotGguf)));

        let short = dir.path().join("short.gguf");
        std::fs::write(&short, tiny(false)).unwrap();
        assert!(matches!(inspect(&short), Err(GgufError::Truncated { .. })));

        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &tiny(true)[..40]).unwrap();
        assert!(matches!(inspect(&cut), Err(GgufError::Damaged(_))));

        let good = dir.path().join("good.gguf");
        std::fs::write(&good, tiny(true)).unwrap();
        assert!(inspect(&good).is_ok());

        let mut huge = tiny(true);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_header(Cursor::new(huge)),
            Err(GgufError::Damaged(_))
        ));
    }
}
