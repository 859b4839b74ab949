//! Reading a GGUF file's header without loading its weights: metadata, tensor table, and
//! whether the file is long enough to hold the tensors it declares. A fake or truncated file
//! is refused here, before llama.cpp ever sees it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek};
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
    /// Elements: the product of the dimensions (checked when the header is read: a header
    /// whose products overflow is refused, so this saturates only on a hand-made value).
    pub fn elements(&self) -> u64 {
        self.checked_elements().unwrap_or(u64::MAX)
    }
    fn checked_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }
    /// Bytes of data, when the type is known (and the size fits in a u64).
    pub fn bytes(&self) -> Option<u64> {
        let (block, size) = type_block(self.ggml_type)?;
        self.checked_elements()?.div_ceil(block).checked_mul(size)
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
            let t_end = self
                .data_offset
                .checked_add(t.offset)?
                .checked_add(t.bytes()?)?;
            end = end.max(t_end);
        }
        Some(end)
    }
    /// Bytes of all tensors (the weights).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(TensorInfo::bytes)
            .fold(0, u64::saturating_add)
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
    /// Width of the feed-forward layers (`feed_forward_length`; per-layer arrays are not read).
    pub feed_forward: Option<u64>,
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
                    let n = by_type.entry(t.ggml_type).or_default();
                    *n = n.saturating_add(t.elements());
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
            parameters: self
                .tensors
                .iter()
                .map(TensorInfo::elements)
                .fold(0, u64::saturating_add),
            quantization,
            file_bytes,
            weight_bytes: self.weight_bytes(),
            layers: self.arch_u64("block_count"),
            embedding,
            feed_forward: self.arch_u64("feed_forward_length"),
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
/// Arrays inside arrays: GGUF allows them, real models use none (llama.cpp refuses them), and
/// each level is a frame of recursion: a file nesting them deeply must not exhaust the stack.
const MAX_DEPTH: u32 = 4;
/// Metadata kept in memory (strings and array heads): real headers keep a few hundred KB (the
/// token lists are skipped); a file claiming more is damaged or hostile.
const MAX_KEPT: u64 = 64 << 20;
/// Largest data alignment accepted (llama.cpp's default is 32; it must be a power of two).
const MAX_ALIGNMENT: u64 = 1 << 20;

struct R<T> {
    inner: T,
    /// Bytes of metadata kept so far (see [`MAX_KEPT`]).
    kept: u64,
}

impl<T: BufRead + Seek> R<T> {
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
        self.kept = self.kept.saturating_add(len);
        if self.kept > MAX_KEPT {
            return Err(GgufError::Damaged(format!(
                "over {} MiB of metadata",
                MAX_KEPT >> 20
            )));
        }
        // Read what is there rather than allocate what the header claims first.
        let mut buf = Vec::new();
        (&mut self.inner).take(len).read_to_end(&mut buf)?;
        if (buf.len() as u64) < len {
            return Err(GgufError::Damaged("the header ends early".into()));
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn skip_string(&mut self) -> Result<(), GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Damaged(format!("string of {len} bytes")));
        }
        self.skip(len)
    }

    /// Step over `len` bytes in the reader's buffer: a tokenizer has hundreds of thousands of
    /// strings of a few bytes, and a seek (or a copy) per string costs more than the rest of
    /// the header.
    fn skip(&mut self, len: u64) -> Result<(), GgufError> {
        let mut left = len;
        while left > 0 {
            let available = self.inner.fill_buf()?.len() as u64;
            if available == 0 {
                return Err(GgufError::Damaged("the header ends early".into()));
            }
            let n = available.min(left);
            self.inner.consume(n as usize);
            left -= n;
        }
        Ok(())
    }
    fn value(&mut self, ty: u32, keep: bool, depth: u32) -> Result<Value, GgufError> {
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
                if depth >= MAX_DEPTH {
                    return Err(GgufError::Damaged(format!(
                        "arrays nested over {MAX_DEPTH} deep"
                    )));
                }
                let item_ty = self.u32()?;
                let len = self.count("array")?;
                let mut head = Vec::new();
                for _ in 0..len.min(ARRAY_HEAD) {
                    head.push(self.value(item_ty, keep, depth + 1)?);
                }
                let rest = len - len.min(ARRAY_HEAD);
                match fixed_size(item_ty) {
                    // Scores and token types: hundreds of thousands of numbers, stepped over
                    // at once (count × size cannot overflow: the count is capped).
                    Some(size) => self.skip(rest * size)?,
                    None => {
                        for _ in 0..rest {
                            self.value(item_ty, false, depth + 1)?;
                        }
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

/// Bytes of one value of a fixed-size type (numbers and booleans); `None` for strings and
/// arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
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
pub fn read_header<T: BufRead + Seek>(inner: T) -> Result<Header, GgufError> {
    let mut r = R { inner, kept: 0 };
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
        let value = r.value(ty, true, 0)?;
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
        let tensor = TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        };
        if tensor.checked_elements().is_none() {
            return Err(GgufError::Damaged(format!(
                "tensor {}'s dimensions {:?} overflow",
                tensor.name, tensor.dims
            )));
        }
        tensors.push(tensor);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            _ => {
                return Err(GgufError::Damaged(format!(
                    "alignment {v:?} is not a power of two up to {MAX_ALIGNMENT}"
                )))
            }
        },
    };
    let pos = r.inner.stream_position()?;
    let data_offset = pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::Damaged("the data section starts past the end".into()))?;
    let header = Header {
        version,
        metadata,
        tensors,
        data_offset,
    };
    // Every tensor's end, and the sum of all elements, must be numbers: a table whose sizes
    // overflow "holds" anything in a few bytes.
    let mut parameters = 0u64;
    for t in &header.tensors {
        parameters = parameters
            .checked_add(t.elements())
            .ok_or_else(|| GgufError::Damaged("the tensors' element count overflows".into()))?;
        let Some(start) = data_offset.checked_add(t.offset) else {
            return Err(GgufError::Damaged(format!(
                "tensor {}'s offset {} overflows",
                t.name, t.offset
            )));
        };
        let known_type = type_block(t.ggml_type).is_some();
        if known_type && t.bytes().and_then(|b| start.checked_add(b)).is_none() {
            return Err(GgufError::Damaged(format!(
                "tensor {} ends past any file size",
                t.name
            )));
        }
    }
    Ok(header)
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

/// The facts of the model in the GGUF at `path` (its header [`inspect`]ed, and the file's size):
/// what predicting its memory needs.
pub fn facts_of(path: &Path) -> Result<ModelFacts, GgufError> {
    let bytes = std::fs::metadata(path)?.len();
    Ok(inspect(path)?.facts(bytes))
}

/// What identifies a model wherever it is stored: the SHA-256 of its header (every byte
/// before the tensor data: metadata, vocabulary, chat template, tensor table) and the file's
/// size. Cheap on a large file, since the weights are not read, and blind to the path.
pub fn identity(path: &Path, header: &Header) -> Result<String, GgufError> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hash = Sha256::new();
    let mut left = header.data_offset.min(size);
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = file.read(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        hash.update(&buf[..got]);
        left -= got as u64;
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("gguf-sha256:{digest}:{size}"))
}

/// A minimal usable GGUF for tests elsewhere: `general.architecture` = `arch`, one F32
/// tensor of 8 elements with its data.
#[cfg(test)]
pub(crate) fn test_model(arch: &str) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // kv
    let key = "general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((arch.len() as u64).to_le_bytes());
    b.extend(arch.as_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'w');
    b.extend(1u32.to_le_bytes()); // dims
    b.extend(8u64.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend([0u8; 32]);
    b
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

    /// Long arrays of every fixed-size type and of strings are stepped over exactly: the
    /// key after each, and the tensor after them all, read as written.
    #[test]
    fn long_arrays_are_skipped_exactly() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        let types: [(u32, usize); 11] = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 4),
            (5, 4),
            (6, 4),
            (7, 1),
            (10, 8),
            (11, 8),
            (12, 8),
        ];
        b.extend((2 * types.len() as u64 + 2).to_le_bytes()); // kv
        for (n, (ty, size)) in types.iter().enumerate() {
            s(&mut b, &format!("a{n}"));
            b.extend(9u32.to_le_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(1000u64.to_le_bytes());
            b.extend(std::iter::repeat_n(0x5a, 1000 * size));
            s(&mut b, &format!("after{n}"));
            b.extend(4u32.to_le_bytes());
            b.extend((n as u32 + 100).to_le_bytes());
        }
        s(&mut b, "tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(3000u64.to_le_bytes());
        for i in 0..3000 {
            s(&mut b, &"t".repeat(i % 17));
        }
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "qwen3");
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let h = read_header(Cursor::new(b)).unwrap();
        for n in 0..types.len() {
            assert_eq!(h.get_u64(&format!("after{n}")), Some(n as u64 + 100));
            match &h.metadata[&format!("a{n}")] {
                Value::Array { len, head } => assert!(*len == 1000 && head.len() == 8),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(h.architecture(), Some("qwen3"));
        assert_eq!(h.tensors.len(), 1);
        assert_eq!(h.tensors[0].name, "w");
    }

    #[test]
    fn a_model_is_identified_by_its_header_and_size_not_its_path_or_weights() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let h = inspect(&p).unwrap();
            identity(&p, &h).unwrap()
        };
        let model = tiny(true);
        let h = read_header(Cursor::new(model.clone())).unwrap();
        let data = h.data_offset as usize;
        let a = write("a.gguf", &model);
        assert!(a.starts_with("gguf-sha256:") && a.ends_with(&format!(":{}", model.len())));
        assert_eq!(
            write("elsewhere.gguf", &model),
            a,
            "the path is not the identity"
        );
        // Other weights of the same size: the same identity (the weights are not read).
        let mut weights = model.clone();
        weights[data] ^= 0xff;
        assert_eq!(write("w.gguf", &weights), a);
        // One byte of metadata changed (a letter of the architecture's name), or one more
        // byte at the end: another model.
        let mut meta = model.clone();
        let at = model.windows(5).position(|w| w == b"qwen3").unwrap();
        meta[at + 4] = b'4';
        let other = dir.path().join("m.gguf");
        std::fs::write(&other, &meta).unwrap();
        let hm = read_header(Cursor::new(meta.clone())).unwrap();
        assert_ne!(identity(&other, &hm).unwrap(), a);
        let mut longer = model.clone();
        longer.push(0);
        assert_ne!(write("l.gguf", &longer), a);
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

    /// A header with one key whose value is `depth` arrays nested, each of one item, around a
    /// u8.
    fn nested(depth: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        s(&mut b, "deep");
        b.extend(9u32.to_le_bytes());
        for level in 0..depth {
            let inner = if level + 1 == depth { 0u32 } else { 9u32 };
            b.extend(inner.to_le_bytes());
            b.extend(1u64.to_le_bytes());
        }
        b.push(7);
        b
    }

    #[test]
    fn deeply_nested_arrays_are_damage_not_a_stack_overflow() {
        // Shallow nesting reads; a hundred thousand levels (which recursed off the stack) and
        // anything past the cap are refused.
        assert!(read_header(Cursor::new(nested(2))).is_ok());
        for depth in [MAX_DEPTH as usize + 1, 100_000] {
            match read_header(Cursor::new(nested(depth))) {
                Err(GgufError::Damaged(why)) => assert!(why.contains("nested"), "{why}"),
                other => panic!("{depth}: {other:?}"),
            }
        }
    }

    #[test]
    fn sizes_that_overflow_are_damage_not_wrapped_numbers() {
        // A 2^32 × 2^32 × 3 tensor: its element count overflows (it used to report 0).
        let mut b = tiny(true);
        let at = b.windows(2).position(|w| w == b"w\x01").unwrap() + 1;
        let mut three = b[..at].to_vec();
        three.extend(3u32.to_le_bytes());
        three.extend((1u64 << 32).to_le_bytes());
        three.extend((1u64 << 32).to_le_bytes());
        three.extend(3u64.to_le_bytes());
        three.extend(0u32.to_le_bytes());
        three.extend(0u64.to_le_bytes());
        match read_header(Cursor::new(three)) {
            Err(GgufError::Damaged(why)) => assert!(why.contains("overflow"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An offset near 2^64: data start + offset + size wrapped to a small number, so a file
        // of a few hundred bytes "held" the tensor.
        // The offset field ends the table: n_dims, one dim, type, offset.
        let table_end = at + 4 + 8 + 4 + 8;
        b[table_end - 8..table_end].copy_from_slice(&(u64::MAX - 16).to_le_bytes());
        match read_header(Cursor::new(b.clone())) {
            Err(GgufError::Damaged(why)) => assert!(why.contains("overflows"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An alignment that is no power of two, or so large the data would start past 2^64.
        for align in [0u64, 3, 1 << 40, u64::MAX] {
            let mut bytes = b"GGUF".to_vec();
            bytes.extend(3u32.to_le_bytes());
            bytes.extend(0u64.to_le_bytes());
            bytes.extend(1u64.to_le_bytes());
            s(&mut bytes, "general.alignment");
            bytes.extend(10u32.to_le_bytes());
            bytes.extend(align.to_le_bytes());
            assert!(
                matches!(read_header(Cursor::new(bytes)), Err(GgufError::Damaged(_))),
                "alignment {align}"
            );
        }
    }

    #[test]
    fn a_header_claiming_huge_strings_allocates_only_what_is_there() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((MAX_STRING).to_le_bytes());
        b.extend(b"short");
        assert!(matches!(
            read_header(Cursor::new(b)),
            Err(GgufError::Damaged(_))
        ));
    }
}
