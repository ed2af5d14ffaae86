//! A small hand-written ONNX protobuf writer (and the reader the tests use to inspect
//! what was written).
//!
//! Only the fields tamrt emits are modelled. Field numbers follow `onnx/onnx.proto3`
//! (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto).
//! Large initializer payloads are not copied into one buffer: every message's encoded
//! length is computed first and the payloads are streamed to the writer.

use std::io::{self, Write};
use std::sync::Arc;

/// ONNX `TensorProto.DataType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    BFloat16 = 16,
}

impl DataType {
    pub fn from_i32(v: i32) -> Option<DataType> {
        Some(match v {
            1 => DataType::Float,
            2 => DataType::Uint8,
            3 => DataType::Int8,
            6 => DataType::Int32,
            7 => DataType::Int64,
            9 => DataType::Bool,
            10 => DataType::Float16,
            11 => DataType::Double,
            16 => DataType::BFloat16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Float => "float32",
            DataType::Uint8 => "uint8",
            DataType::Int8 => "int8",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::Bool => "bool",
            DataType::Float16 => "float16",
            DataType::Double => "float64",
            DataType::BFloat16 => "bfloat16",
        }
    }
}

/// One dimension of a value's declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A named dynamic axis (`dim_param`).
    Sym(String),
}

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Fixed(v)
    }
}

impl From<&str> for Dim {
    fn from(v: &str) -> Self {
        Dim::Sym(v.to_string())
    }
}

/// The payload of an initializer.
#[derive(Debug, Clone)]
pub enum TensorData {
    F32(Arc<[f32]>),
    I64(Arc<[i64]>),
    /// Raw little-endian bytes of the given type (e.g. f16 / bf16 / bool / u8).
    Raw(Arc<[u8]>),
}

impl TensorData {
    pub fn byte_len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len() * 4,
            TensorData::I64(v) => v.len() * 8,
            TensorData::Raw(v) => v.len(),
        }
    }

    /// Write the payload as little-endian bytes.
    pub fn write_bytes<W: Write>(&self, w: &mut W) -> io::Result<()> {
        match self {
            TensorData::F32(v) => {
                // Stream in chunks so a large weight never needs a second full copy.
                let mut buf = Vec::with_capacity(64 * 1024);
                for chunk in v.chunks(16 * 1024) {
                    buf.clear();
                    for x in chunk {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    w.write_all(&buf)?;
                }
                Ok(())
            }
            TensorData::I64(v) => {
                let mut buf = Vec::with_capacity(v.len() * 8);
                for x in v.iter() {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
                w.write_all(&buf)
            }
            TensorData::Raw(v) => w.write_all(v),
        }
    }
}

/// Where an initializer's bytes live when the model uses ONNX external data.
#[derive(Debug, Clone)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone)]
pub struct TensorProto {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: TensorData,
    /// Set when the payload is written to a side file instead of `raw_data`.
    pub external: Option<ExternalRef>,
}

#[derive(Debug, Clone)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(TensorProto),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

#[derive(Debug, Clone)]
pub struct NodeProto {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<Dim>,
}

#[derive(Debug, Clone, Default)]
pub struct GraphProto {
    pub name: String,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub doc: String,
}

#[derive(Debug, Clone)]
pub struct ModelProto {
    pub ir_version: i64,
    pub opset: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub graph: GraphProto,
    pub metadata: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------------------
// Wire format helpers.

const WT_VARINT: u32 = 0;
const WT_I64: u32 = 1;
const WT_LEN: u32 = 2;
const WT_I32: u32 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key_len(field: u32) -> usize {
    varint_len((field as u64) << 3)
}

fn put_key(out: &mut Vec<u8>, field: u32, wt: u32) {
    put_varint(out, ((field as u64) << 3) | wt as u64);
}

fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WT_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_int_field(out: &mut Vec<u8>, field: u32, v: i64) {
    put_key(out, field, WT_VARINT);
    put_varint(out, v as u64);
}

fn string_entry(key: &str, value: &str) -> Vec<u8> {
    let mut m = Vec::new();
    put_bytes_field(&mut m, 1, key.as_bytes());
    put_bytes_field(&mut m, 2, value.as_bytes());
    m
}

// ---------------------------------------------------------------------------------------
// Encoding. Small messages are encoded to Vec<u8>; tensors are "header + payload" so the
// payload can be streamed.

impl TensorProto {
    /// Encoded message without the raw payload, plus the payload length that follows
    /// (`raw_data` is the last field written).
    fn encode_header(&self) -> (Vec<u8>, usize) {
        let mut m = Vec::new();
        if !self.dims.is_empty() {
            let mut packed = Vec::new();
            for d in &self.dims {
                put_varint(&mut packed, *d as u64);
            }
            put_bytes_field(&mut m, 1, &packed);
        }
        put_int_field(&mut m, 2, self.dtype as i64);
        put_bytes_field(&mut m, 8, self.name.as_bytes());
        match &self.external {
            Some(ext) => {
                put_bytes_field(&mut m, 13, &string_entry("location", &ext.location));
                put_bytes_field(&mut m, 13, &string_entry("offset", &ext.offset.to_string()));
                put_bytes_field(&mut m, 13, &string_entry("length", &ext.length.to_string()));
                put_int_field(&mut m, 14, 1);
                (m, 0)
            }
            None => {
                let n = self.data.byte_len();
                put_key(&mut m, 9, WT_LEN);
                put_varint(&mut m, n as u64);
                (m, n)
            }
        }
    }

    fn encoded_len(&self) -> usize {
        let (h, n) = self.encode_header();
        h.len() + n
    }

    fn write_to<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let (h, n) = self.encode_header();
        w.write_all(&h)?;
        if n > 0 {
            self.data.write_bytes(w)?;
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

impl Attribute {
    fn encode(&self) -> Vec<u8> {
        let mut m = Vec::new();
        put_bytes_field(&mut m, 1, self.name.as_bytes());
        match &self.value {
            AttrValue::Float(f) => {
                put_key(&mut m, 2, WT_I32);
                m.extend_from_slice(&f.to_le_bytes());
                put_int_field(&mut m, 20, 1);
            }
            AttrValue::Int(i) => {
                put_int_field(&mut m, 3, *i);
                put_int_field(&mut m, 20, 2);
            }
            AttrValue::String(s) => {
                put_bytes_field(&mut m, 4, s.as_bytes());
                put_int_field(&mut m, 20, 3);
            }
            AttrValue::Tensor(t) => {
                put_bytes_field(&mut m, 5, &t.encode());
                put_int_field(&mut m, 20, 4);
            }
            AttrValue::Floats(fs) => {
                let mut packed = Vec::new();
                for f in fs {
                    packed.extend_from_slice(&f.to_le_bytes());
                }
                put_bytes_field(&mut m, 7, &packed);
                put_int_field(&mut m, 20, 6);
            }
            AttrValue::Ints(is) => {
                let mut packed = Vec::new();
                for i in is {
                    put_varint(&mut packed, *i as u64);
                }
                put_bytes_field(&mut m, 8, &packed);
                put_int_field(&mut m, 20, 7);
            }
        }
        m
    }
}

impl NodeProto {
    fn encode(&self) -> Vec<u8> {
        let mut m = Vec::new();
        for i in &self.inputs {
            put_bytes_field(&mut m, 1, i.as_bytes());
        }
        for o in &self.outputs {
            put_bytes_field(&mut m, 2, o.as_bytes());
        }
        put_bytes_field(&mut m, 3, self.name.as_bytes());
        put_bytes_field(&mut m, 4, self.op_type.as_bytes());
        for a in &self.attributes {
            put_bytes_field(&mut m, 5, &a.encode());
        }
        if !self.domain.is_empty() {
            put_bytes_field(&mut m, 7, self.domain.as_bytes());
        }
        m
    }
}

impl ValueInfo {
    fn encode(&self) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in &self.dims {
            let mut dm = Vec::new();
            match d {
                Dim::Fixed(v) => put_int_field(&mut dm, 1, *v),
                Dim::Sym(s) => put_bytes_field(&mut dm, 2, s.as_bytes()),
            }
            put_bytes_field(&mut shape, 1, &dm);
        }
        let mut tensor_type = Vec::new();
        put_int_field(&mut tensor_type, 1, self.dtype as i64);
        put_bytes_field(&mut tensor_type, 2, &shape);
        let mut type_proto = Vec::new();
        put_bytes_field(&mut type_proto, 1, &tensor_type);
        let mut m = Vec::new();
        put_bytes_field(&mut m, 1, self.name.as_bytes());
        put_bytes_field(&mut m, 2, &type_proto);
        m
    }
}

impl GraphProto {
    /// Everything except initializers, which are streamed.
    fn small_fields(&self) -> (Vec<u8>, Vec<u8>) {
        let mut head = Vec::new();
        for n in &self.nodes {
            put_bytes_field(&mut head, 1, &n.encode());
        }
        put_bytes_field(&mut head, 2, self.name.as_bytes());
        let mut tail = Vec::new();
        if !self.doc.is_empty() {
            put_bytes_field(&mut tail, 10, self.doc.as_bytes());
        }
        for i in &self.inputs {
            put_bytes_field(&mut tail, 11, &i.encode());
        }
        for o in &self.outputs {
            put_bytes_field(&mut tail, 12, &o.encode());
        }
        (head, tail)
    }

    fn write_to<W: Write>(&self, w: &mut W, head: &[u8], tail: &[u8]) -> io::Result<()> {
        w.write_all(head)?;
        let mut key = Vec::new();
        for t in &self.initializers {
            key.clear();
            put_key(&mut key, 5, WT_LEN);
            put_varint(&mut key, t.encoded_len() as u64);
            w.write_all(&key)?;
            t.write_to(w)?;
        }
        w.write_all(tail)
    }

    fn encoded_len(&self, head: &[u8], tail: &[u8]) -> usize {
        head.len() + tail.len() + self.initializers.iter().map(|t| len_field_len(5, t.encoded_len())).sum::<usize>()
    }
}

impl ModelProto {
    /// Stream the encoded model to `w`.
    pub fn write_to<W: Write>(&self, w: &mut W) -> io::Result<()> {
        let mut head = Vec::new();
        put_int_field(&mut head, 1, self.ir_version);
        put_bytes_field(&mut head, 2, self.producer_name.as_bytes());
        put_bytes_field(&mut head, 3, self.producer_version.as_bytes());
        let (g_head, g_tail) = self.graph.small_fields();
        let g_len = self.graph.encoded_len(&g_head, &g_tail);
        put_key(&mut head, 7, WT_LEN);
        put_varint(&mut head, g_len as u64);
        w.write_all(&head)?;
        self.graph.write_to(w, &g_head, &g_tail)?;
        let mut tail = Vec::new();
        let mut opset = Vec::new();
        put_bytes_field(&mut opset, 1, b"");
        put_int_field(&mut opset, 2, self.opset);
        put_bytes_field(&mut tail, 8, &opset);
        for (k, v) in &self.metadata {
            put_bytes_field(&mut tail, 14, &string_entry(k, v));
        }
        w.write_all(&tail)
    }

    /// Total initializer bytes (to decide on external data).
    pub fn initializer_bytes(&self) -> usize {
        self.graph.initializers.iter().map(|t| t.data.byte_len()).sum()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

// Silence "unused" for wire types only the reader uses.
const _: u32 = WT_I64;

// ---------------------------------------------------------------------------------------
// A minimal reader: enough to list nodes, opsets, initializers and I/O of a written
// model (used by the operator-support test and by `tamrt info`).

/// One node as [`read_summary`] reads it.
#[derive(Debug, Clone, Default)]
pub struct NodeSummary {
    pub op_type: String,
    pub domain: String,
    pub name: String,
    pub inputs: Vec<String>,
}

/// What [`read_summary`] extracts from a model file.
#[derive(Debug, Clone, Default)]
pub struct ModelSummary {
    pub ir_version: i64,
    /// (domain, version) pairs.
    pub opsets: Vec<(String, i64)>,
    /// Every node, in order.
    pub nodes: Vec<NodeSummary>,
    /// (name, data type, dims) per initializer.
    pub initializers: Vec<(String, i32, Vec<i64>)>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Data types seen on graph inputs/outputs and initializers.
    pub dtypes: Vec<i32>,
    /// Data types of Cast targets (`to` attribute).
    pub cast_targets: Vec<i32>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err("varint too long".into());
            }
        }
    }
    /// Returns (field, wire type, payload slice for LEN / value for varint).
    fn field(&mut self) -> Result<(u32, u32, &'a [u8], u64), String> {
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let wt = (key & 7) as u32;
        match wt {
            WT_VARINT => {
                let v = self.varint()?;
                Ok((field, wt, &[], v))
            }
            WT_LEN => {
                let n = self.varint()? as usize;
                let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok((field, wt, s, 0))
            }
            WT_I32 => {
                let end = self.pos + 4;
                if end > self.buf.len() {
                    return Err("truncated fixed32".into());
                }
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok((field, wt, s, 0))
            }
            WT_I64 => {
                let end = self.pos + 8;
                if end > self.buf.len() {
                    return Err("truncated fixed64".into());
                }
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok((field, wt, s, 0))
            }
            _ => Err(format!("unsupported wire type {wt}")),
        }
    }
}

fn read_value_info(b: &[u8], dtypes: &mut Vec<i32>) -> Result<String, String> {
    let mut r = Reader::new(b);
    let mut name = String::new();
    while !r.done() {
        let (f, _, s, _) = r.field()?;
        match f {
            1 => name = String::from_utf8_lossy(s).into_owned(),
            2 => {
                let mut tr = Reader::new(s);
                while !tr.done() {
                    let (tf, _, ts, _) = tr.field()?;
                    if tf == 1 {
                        let mut tt = Reader::new(ts);
                        while !tt.done() {
                            let (ef, _, _, ev) = tt.field()?;
                            if ef == 1 {
                                dtypes.push(ev as i32);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(name)
}

/// `TensorProto.dims` from one occurrence of field 1: packed (LEN) or a single varint.
fn tensor_dims(wt: u32, payload: &[u8], value: u64) -> Result<Vec<u64>, String> {
    if wt != WT_LEN {
        return Ok(vec![value]);
    }
    let mut p = Reader::new(payload);
    let mut dims = Vec::new();
    while !p.done() {
        dims.push(p.varint()?);
    }
    Ok(dims)
}

/// Parse a model file's bytes into a [`ModelSummary`].
pub fn read_summary(bytes: &[u8]) -> Result<ModelSummary, String> {
    let mut out = ModelSummary::default();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (f, _, s, v) = r.field()?;
        match f {
            1 => out.ir_version = v as i64,
            8 => {
                let mut o = Reader::new(s);
                let (mut dom, mut ver) = (String::new(), 0);
                while !o.done() {
                    let (of, _, os, ov) = o.field()?;
                    match of {
                        1 => dom = String::from_utf8_lossy(os).into_owned(),
                        2 => ver = ov as i64,
                        _ => {}
                    }
                }
                out.opsets.push((dom, ver));
            }
            7 => {
                let mut g = Reader::new(s);
                while !g.done() {
                    let (gf, _, gs, _) = g.field()?;
                    match gf {
                        1 => {
                            let mut n = Reader::new(gs);
                            let (mut op, mut dom, mut name) = (String::new(), String::new(), String::new());
                            let mut inputs = Vec::new();
                            while !n.done() {
                                let (nf, _, ns, _) = n.field()?;
                                match nf {
                                    1 => inputs.push(String::from_utf8_lossy(ns).into_owned()),
                                    3 => name = String::from_utf8_lossy(ns).into_owned(),
                                    4 => op = String::from_utf8_lossy(ns).into_owned(),
                                    7 => dom = String::from_utf8_lossy(ns).into_owned(),
                                    5 => {
                                        let mut a = Reader::new(ns);
                                        let (mut an, mut ai) = (String::new(), None);
                                        while !a.done() {
                                            let (af, _, as_, av) = a.field()?;
                                            match af {
                                                1 => an = String::from_utf8_lossy(as_).into_owned(),
                                                3 => ai = Some(av as i64),
                                                _ => {}
                                            }
                                        }
                                        if an == "to" {
                                            if let Some(t) = ai {
                                                out.cast_targets.push(t as i32);
                                            }
                                        }
                                    }
                                    _ => {}
                                }
                            }
                            out.nodes.push(NodeSummary { op_type: op, domain: dom, name, inputs });
                        }
                        5 => {
                            let mut t = Reader::new(gs);
                            let (mut name, mut dt, mut dims) = (String::new(), 0, Vec::new());
                            while !t.done() {
                                let (tf, wt, ts, tv) = t.field()?;
                                match (tf, wt) {
                                    (1, _) => dims.extend(tensor_dims(wt, ts, tv)?.into_iter().map(|d| d as i64)),
                                    (2, _) => dt = tv as i32,
                                    (8, _) => name = String::from_utf8_lossy(ts).into_owned(),
                                    _ => {}
                                }
                            }
                            out.dtypes.push(dt);
                            out.initializers.push((name, dt, dims));
                        }
                        11 => out.inputs.push(read_value_info(gs, &mut out.dtypes)?),
                        12 => out.outputs.push(read_value_info(gs, &mut out.dtypes)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A float32 initializer read back: (name, dims, values).
pub type F32Initializer = (String, Vec<usize>, Vec<f32>);

/// The float32 initializers of a model file's graph whose names `want` accepts, as
/// (name, dims, values). Payloads in `raw_data` or `float_data`; external data is an
/// error (tamrt writes it only for graphs over 1.8 GB).
pub fn read_f32_initializers(bytes: &[u8], want: impl Fn(&str) -> bool) -> Result<Vec<F32Initializer>, String> {
    let mut out = Vec::new();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (f, _, s, _) = r.field()?;
        if f != 7 {
            continue;
        }
        let mut g = Reader::new(s);
        while !g.done() {
            let (gf, _, gs, _) = g.field()?;
            if gf != 5 {
                continue;
            }
            let mut t = Reader::new(gs);
            let (mut name, mut dtype, mut dims, mut raw, mut floats, mut external) =
                (String::new(), 0, Vec::new(), None, Vec::new(), false);
            while !t.done() {
                let (tf, wt, ts, tv) = t.field()?;
                match (tf, wt) {
                    (1, _) => dims.extend(tensor_dims(wt, ts, tv)?.into_iter().map(|d| d as usize)),
                    (2, _) => dtype = tv as i32,
                    (4, WT_LEN) => {
                        floats.extend(ts.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    }
                    (4, WT_I32) => floats.push(f32::from_le_bytes([ts[0], ts[1], ts[2], ts[3]])),
                    (8, _) => name = String::from_utf8_lossy(ts).into_owned(),
                    (9, _) => raw = Some(ts),
                    (14, _) => external = tv == 1,
                    _ => {}
                }
            }
            if dtype != DataType::Float as i32 || !want(&name) {
                continue;
            }
            if external {
                return Err(format!("initializer '{name}' is in external data"));
            }
            let values = match raw {
                Some(b) if b.len() % 4 == 0 => {
                    b.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
                }
                Some(b) => {
                    return Err(format!("initializer '{name}': {} raw bytes, not whole float32 values", b.len()))
                }
                None => std::mem::take(&mut floats),
            };
            if values.len() != dims.iter().product::<usize>() {
                return Err(format!("initializer '{name}': {} values for dims {dims:?}", values.len()));
            }
            out.push((name, dims, values));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_lengths() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut r = Reader::new(&b);
            assert_eq!(r.varint().unwrap(), v);
        }
    }

    #[test]
    fn streamed_length_matches_encoding() {
        let t = TensorProto {
            name: "w".into(),
            dtype: DataType::Float,
            dims: vec![2, 3],
            data: TensorData::F32(vec![1.0; 6].into()),
            external: None,
        };
        assert_eq!(t.encode().len(), t.encoded_len());
        assert_eq!(t.encoded_len(), t.encode_header().0.len() + 24);
    }
}
