//! A fluent ONNX graph builder. Every op helper appends one node and returns the
//! [`Value`] it produces; names are derived from the current scope so a node reads like
//! the checkpoint key of the module that made it (`memory_attention.layers.0/MatMul_3`).
//!
//! Only operators of ONNX opset 17 that onnx-tensorrt 8.5 supports are meant to be used;
//! `export::check_graph_ops` enforces that on every exported graph.

use std::collections::HashMap;
use std::sync::Arc;

use super::proto::{
    AttrValue, Attribute, DataType, Dim, GraphProto, ModelProto, NodeProto, TensorData, TensorProto, ValueInfo,
};

/// The opset every graph is written with (TensorRT 8.5 parses up to 17).
pub const OPSET: i64 = 17;
/// IR version matching opset 17.
pub const IR_VERSION: i64 = 8;

/// A tensor in the graph, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Value(Arc<str>);

impl Value {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Attribute constructors.
pub fn attr_i(name: &str, v: i64) -> Attribute {
    Attribute { name: name.into(), value: AttrValue::Int(v) }
}
pub fn attr_f(name: &str, v: f32) -> Attribute {
    Attribute { name: name.into(), value: AttrValue::Float(v) }
}
pub fn attr_s(name: &str, v: &str) -> Attribute {
    Attribute { name: name.into(), value: AttrValue::String(v.into()) }
}
pub fn attr_ints(name: &str, v: &[i64]) -> Attribute {
    Attribute { name: name.into(), value: AttrValue::Ints(v.to_vec()) }
}
pub fn attr_floats(name: &str, v: &[f32]) -> Attribute {
    Attribute { name: name.into(), value: AttrValue::Floats(v.to_vec()) }
}

/// Options of Conv / ConvTranspose (2-D).
#[derive(Debug, Clone)]
pub struct ConvOpts {
    pub strides: [i64; 2],
    /// [top, left, bottom, right] as ONNX orders them.
    pub pads: [i64; 4],
    pub dilations: [i64; 2],
    pub group: i64,
}

impl Default for ConvOpts {
    fn default() -> Self {
        ConvOpts { strides: [1, 1], pads: [0; 4], dilations: [1, 1], group: 1 }
    }
}

impl ConvOpts {
    pub fn stride(s: i64) -> Self {
        ConvOpts { strides: [s, s], ..Default::default() }
    }
    pub fn with_pad(mut self, p: i64) -> Self {
        self.pads = [p; 4];
        self
    }
    pub fn with_group(mut self, g: i64) -> Self {
        self.group = g;
        self
    }
}

/// Graph under construction.
pub struct Graph {
    name: String,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    init_index: HashMap<String, usize>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    scope: Vec<String>,
    counter: usize,
    i64_consts: HashMap<Vec<i64>, Value>,
    f32_scalars: HashMap<u32, Value>,
    doc: String,
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.to_string(),
            nodes: Vec::new(),
            inits: Vec::new(),
            init_index: HashMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            scope: Vec::new(),
            counter: 0,
            i64_consts: HashMap::new(),
            f32_scalars: HashMap::new(),
            doc: String::new(),
        }
    }

    /// The graph's name (`Graph::new`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_doc(&mut self, doc: &str) {
        self.doc = doc.to_string();
    }

    /// Run `f` with `name` pushed on the naming scope.
    pub fn scoped<R>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> R) -> R {
        self.scope.push(name.to_string());
        let r = f(self);
        self.scope.pop();
        r
    }

    fn scope_prefix(&self) -> String {
        self.scope.join(".")
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        let p = self.scope_prefix();
        if p.is_empty() {
            format!("{what}_{}", self.counter)
        } else {
            format!("{p}/{what}_{}", self.counter)
        }
    }

    /// Graph inputs declared so far.
    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    /// Graph outputs declared so far.
    pub fn outputs(&self) -> &[ValueInfo] {
        &self.outputs
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Op types used so far.
    pub fn op_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|n| n.op_type.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    // ---------------------------------------------------------------- I/O and constants

    pub fn input(&mut self, name: &str, dtype: DataType, dims: Vec<Dim>) -> Value {
        self.inputs.push(ValueInfo { name: name.into(), dtype, dims });
        Value(name.into())
    }

    /// Declare `v` as a graph output called `name` (an Identity node renames it).
    pub fn output(&mut self, v: &Value, name: &str, dtype: DataType, dims: Vec<Dim>) {
        let node = NodeProto {
            name: format!("output/{name}"),
            op_type: "Identity".into(),
            domain: String::new(),
            inputs: vec![v.name().to_string()],
            outputs: vec![name.to_string()],
            attributes: vec![],
        };
        self.nodes.push(node);
        self.outputs.push(ValueInfo { name: name.into(), dtype, dims });
    }

    /// A named float initializer (a checkpoint weight, or a constant computed at export).
    /// Adding the same name twice returns the first.
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: Arc<[f32]>) -> Value {
        if self.init_index.contains_key(name) {
            return Value(name.into());
        }
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}");
        self.init_index.insert(name.to_string(), self.inits.len());
        self.inits.push(TensorProto {
            name: name.into(),
            dtype: DataType::Float,
            dims: dims.iter().map(|d| *d as i64).collect(),
            data: TensorData::F32(data),
            external: None,
        });
        Value(name.into())
    }

    /// An anonymous float constant (stored as an initializer).
    pub fn const_f32(&mut self, dims: &[usize], data: Vec<f32>) -> Value {
        let name = self.fresh("const");
        self.initializer(&name, dims, data.into())
    }

    /// A float scalar constant (shape []); reused when the same value is asked again.
    pub fn scalar(&mut self, v: f32) -> Value {
        if let Some(x) = self.f32_scalars.get(&v.to_bits()) {
            return x.clone();
        }
        let name = format!("scalar_{}", self.f32_scalars.len());
        let val = self.initializer(&name, &[], vec![v].into());
        self.f32_scalars.insert(v.to_bits(), val.clone());
        val
    }

    /// A 1-D int64 constant (shapes, axes, indices); identical ones are shared.
    pub fn const_i64(&mut self, data: &[i64]) -> Value {
        if let Some(v) = self.i64_consts.get(data) {
            return v.clone();
        }
        let name = format!("i64_{}", self.i64_consts.len());
        self.init_index.insert(name.clone(), self.inits.len());
        self.inits.push(TensorProto {
            name: name.clone(),
            dtype: DataType::Int64,
            dims: vec![data.len() as i64],
            data: TensorData::I64(data.to_vec().into()),
            external: None,
        });
        let v = Value(name.into());
        self.i64_consts.insert(data.to_vec(), v.clone());
        v
    }

    /// An int64 scalar constant (shape []).
    pub fn scalar_i64(&mut self, v: i64) -> Value {
        let name = self.fresh("i64s");
        self.init_index.insert(name.clone(), self.inits.len());
        self.inits.push(TensorProto {
            name: name.clone(),
            dtype: DataType::Int64,
            dims: vec![],
            data: TensorData::I64(vec![v].into()),
            external: None,
        });
        Value(name.into())
    }

    // ---------------------------------------------------------------- generic nodes

    /// Append a node with one output.
    pub fn op(&mut self, op_type: &str, inputs: &[&Value], attrs: Vec<Attribute>) -> Value {
        let ins: Vec<Option<&Value>> = inputs.iter().map(|v| Some(*v)).collect();
        self.op_n(op_type, &ins, attrs, 1).pop().expect("one output")
    }

    /// Append a node with optional inputs (None = omitted, written as "") and `n_out`
    /// outputs.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[Option<&Value>],
        attrs: Vec<Attribute>,
        n_out: usize,
    ) -> Vec<Value> {
        let name = self.fresh(op_type);
        let outputs: Vec<String> =
            (0..n_out).map(|i| if n_out == 1 { name.clone() } else { format!("{name}:{i}") }).collect();
        self.nodes.push(NodeProto {
            name: name.clone(),
            op_type: op_type.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|v| v.map(|v| v.name().to_string()).unwrap_or_default()).collect(),
            outputs: outputs.clone(),
            attributes: attrs,
        });
        outputs.into_iter().map(|o| Value(o.into())).collect()
    }

    // ---------------------------------------------------------------- elementwise

    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Mul", &[a, b], vec![])
    }
    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Div", &[a, b], vec![])
    }
    pub fn pow(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Pow", &[a, b], vec![])
    }
    pub fn min2(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Min", &[a, b], vec![])
    }
    pub fn max2(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Max", &[a, b], vec![])
    }
    pub fn add_scalar(&mut self, a: &Value, s: f32) -> Value {
        let c = self.scalar(s);
        self.add(a, &c)
    }
    pub fn mul_scalar(&mut self, a: &Value, s: f32) -> Value {
        let c = self.scalar(s);
        self.mul(a, &c)
    }
    pub fn neg(&mut self, a: &Value) -> Value {
        self.op("Neg", &[a], vec![])
    }
    pub fn sqrt(&mut self, a: &Value) -> Value {
        self.op("Sqrt", &[a], vec![])
    }
    pub fn exp(&mut self, a: &Value) -> Value {
        self.op("Exp", &[a], vec![])
    }
    pub fn erf(&mut self, a: &Value) -> Value {
        self.op("Erf", &[a], vec![])
    }
    pub fn sigmoid(&mut self, a: &Value) -> Value {
        self.op("Sigmoid", &[a], vec![])
    }
    pub fn relu(&mut self, a: &Value) -> Value {
        self.op("Relu", &[a], vec![])
    }
    pub fn tanh(&mut self, a: &Value) -> Value {
        self.op("Tanh", &[a], vec![])
    }
    pub fn sin(&mut self, a: &Value) -> Value {
        self.op("Sin", &[a], vec![])
    }
    pub fn cos(&mut self, a: &Value) -> Value {
        self.op("Cos", &[a], vec![])
    }
    pub fn abs(&mut self, a: &Value) -> Value {
        self.op("Abs", &[a], vec![])
    }
    pub fn identity(&mut self, a: &Value) -> Value {
        self.op("Identity", &[a], vec![])
    }
    pub fn equal(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Equal", &[a, b], vec![])
    }
    pub fn greater(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Greater", &[a, b], vec![])
    }
    pub fn less(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Less", &[a, b], vec![])
    }
    pub fn where_(&mut self, cond: &Value, a: &Value, b: &Value) -> Value {
        self.op("Where", &[cond, a, b], vec![])
    }
    pub fn cast(&mut self, a: &Value, to: DataType) -> Value {
        self.op("Cast", &[a], vec![attr_i("to", to as i64)])
    }

    /// Exact GELU (PyTorch `nn.GELU()` default): 0.5·x·(1 + erf(x/√2)), in the node order
    /// ONNX Runtime fuses into one Gelu kernel (`Div(sqrt 2) → Erf → Add(1) → Mul(Mul(x, 0.5), ·)`).
    pub fn gelu(&mut self, x: &Value) -> Value {
        let c = self.scalar(std::f32::consts::SQRT_2);
        let s = self.div(x, &c);
        let e = self.erf(&s);
        let e1 = self.add_scalar(&e, 1.0);
        let h = self.mul_scalar(x, 0.5);
        self.mul(&h, &e1)
    }

    // ---------------------------------------------------------------- linear algebra

    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("MatMul", &[a, b], vec![])
    }

    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.op("Softmax", &[x], vec![attr_i("axis", axis)])
    }

    /// LayerNorm over the last axis, decomposed (LayerNormalization needs TRT 8.6+):
    /// `(x - mean) / sqrt(var + eps) * w + b`, biased variance as PyTorch uses.
    pub fn layer_norm(&mut self, x: &Value, w: &Value, b: &Value, eps: f32) -> Value {
        self.norm_over_axis(x, -1, eps, |g, y| {
            let y = g.mul(&y, w);
            g.add(&y, b)
        })
    }

    /// Normalise over `axis` (mean/var with keepdims) and hand the result to `affine`.
    /// Over the last axis with a 1-D affine this is the node order ONNX Runtime fuses into
    /// one LayerNormalization kernel (`ReduceMean → Sub → Pow(2) → ReduceMean → Add(eps) →
    /// Sqrt → Div → Mul → Add`).
    pub fn norm_over_axis(
        &mut self,
        x: &Value,
        axis: i64,
        eps: f32,
        affine: impl FnOnce(&mut Graph, Value) -> Value,
    ) -> Value {
        let mean = self.reduce_mean(x, &[axis], true);
        let d = self.sub(x, &mean);
        let two = self.scalar(2.0);
        let d2 = self.pow(&d, &two);
        let var = self.reduce_mean(&d2, &[axis], true);
        let ve = self.add_scalar(&var, eps);
        let sd = self.sqrt(&ve);
        let y = self.div(&d, &sd);
        affine(self, y)
    }

    // ---------------------------------------------------------------- reductions

    pub fn reduce_mean(&mut self, x: &Value, axes: &[i64], keepdims: bool) -> Value {
        self.op("ReduceMean", &[x], vec![attr_ints("axes", axes), attr_i("keepdims", keepdims as i64)])
    }
    pub fn reduce_sum(&mut self, x: &Value, axes: &[i64], keepdims: bool) -> Value {
        // opset 13+: ReduceSum takes axes as an input.
        let a = self.const_i64(axes);
        self.op("ReduceSum", &[x, &a], vec![attr_i("keepdims", keepdims as i64)])
    }
    pub fn reduce_max(&mut self, x: &Value, axes: &[i64], keepdims: bool) -> Value {
        self.op("ReduceMax", &[x], vec![attr_ints("axes", axes), attr_i("keepdims", keepdims as i64)])
    }
    pub fn argmax(&mut self, x: &Value, axis: i64, keepdims: bool) -> Value {
        self.op("ArgMax", &[x], vec![attr_i("axis", axis), attr_i("keepdims", keepdims as i64)])
    }

    // ---------------------------------------------------------------- shape ops

    /// Reshape to a constant shape (0 copies the input dim, -1 infers one dim).
    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let s = self.const_i64(shape);
        self.op("Reshape", &[x, &s], vec![])
    }
    /// Reshape to a shape computed in the graph (an int64 1-D value).
    pub fn reshape_to(&mut self, x: &Value, shape: &Value) -> Value {
        self.op("Reshape", &[x, shape], vec![])
    }
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)])
    }
    pub fn concat(&mut self, xs: &[&Value], axis: i64) -> Value {
        self.op("Concat", xs, vec![attr_i("axis", axis)])
    }
    /// Split into pieces of the given sizes along `axis`.
    pub fn split(&mut self, x: &Value, sizes: &[i64], axis: i64) -> Vec<Value> {
        let s = self.const_i64(sizes);
        self.op_n("Split", &[Some(x), Some(&s)], vec![attr_i("axis", axis)], sizes.len())
    }
    /// Slice with constant bounds (use i64::MAX for "to the end").
    pub fn slice(&mut self, x: &Value, starts: &[i64], ends: &[i64], axes: &[i64], steps: Option<&[i64]>) -> Value {
        let s = self.const_i64(starts);
        let e = self.const_i64(ends);
        let a = self.const_i64(axes);
        match steps {
            Some(st) => {
                let st = self.const_i64(st);
                self.op("Slice", &[x, &s, &e, &a, &st], vec![])
            }
            None => self.op("Slice", &[x, &s, &e, &a], vec![]),
        }
    }
    /// Slice with bounds computed in the graph (1-D int64 values).
    pub fn slice_dyn(&mut self, x: &Value, starts: &Value, ends: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.op("Slice", &[x, starts, ends, &a], vec![])
    }
    pub fn gather(&mut self, x: &Value, idx: &Value, axis: i64) -> Value {
        self.op("Gather", &[x, idx], vec![attr_i("axis", axis)])
    }
    /// Gather a single constant index (removes the axis).
    pub fn gather_at(&mut self, x: &Value, idx: i64, axis: i64) -> Value {
        let i = self.scalar_i64(idx);
        self.gather(x, &i, axis)
    }
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.op("Unsqueeze", &[x, &a], vec![])
    }
    pub fn squeeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.op("Squeeze", &[x, &a], vec![])
    }
    pub fn expand(&mut self, x: &Value, shape: &Value) -> Value {
        self.op("Expand", &[x, shape], vec![])
    }
    pub fn tile(&mut self, x: &Value, repeats: &Value) -> Value {
        self.op("Tile", &[x, repeats], vec![])
    }
    /// The runtime shape of `x` (int64 1-D).
    pub fn shape(&mut self, x: &Value) -> Value {
        self.op("Shape", &[x], vec![])
    }
    /// One dimension of `x` as a 1-element int64 tensor (for building shapes).
    pub fn dim(&mut self, x: &Value, axis: i64) -> Value {
        let s = self.shape(x);
        let i = self.const_i64(&[axis]);
        self.gather(&s, &i, 0)
    }

    // ---------------------------------------------------------------- conv / pooling / resize

    pub fn conv(&mut self, x: &Value, w: &Value, b: Option<&Value>, o: &ConvOpts) -> Value {
        let attrs = vec![
            attr_ints("strides", &o.strides),
            attr_ints("pads", &o.pads),
            attr_ints("dilations", &o.dilations),
            attr_i("group", o.group),
        ];
        self.op_n("Conv", &[Some(x), Some(w), b], attrs, 1).pop().unwrap()
    }

    pub fn conv_transpose(&mut self, x: &Value, w: &Value, b: Option<&Value>, o: &ConvOpts) -> Value {
        let attrs = vec![
            attr_ints("strides", &o.strides),
            attr_ints("pads", &o.pads),
            attr_ints("dilations", &o.dilations),
            attr_i("group", o.group),
        ];
        self.op_n("ConvTranspose", &[Some(x), Some(w), b], attrs, 1).pop().unwrap()
    }

    pub fn max_pool(&mut self, x: &Value, kernel: [i64; 2], strides: [i64; 2]) -> Value {
        self.op("MaxPool", &[x], vec![attr_ints("kernel_shape", &kernel), attr_ints("strides", &strides)])
    }

    /// Resize NCHW by constant scales. `mode` is "nearest" or "linear"; "linear" uses
    /// half-pixel centres (PyTorch `align_corners=False`), "nearest" uses asymmetric
    /// coordinates with floor (PyTorch `mode="nearest"`).
    pub fn resize_scales(&mut self, x: &Value, scales: [f32; 4], mode: &str) -> Value {
        let sc = self.const_f32(&[4], scales.to_vec());
        let attrs = if mode == "nearest" {
            vec![
                attr_s("mode", "nearest"),
                attr_s("coordinate_transformation_mode", "asymmetric"),
                attr_s("nearest_mode", "floor"),
            ]
        } else {
            vec![attr_s("mode", "linear"), attr_s("coordinate_transformation_mode", "half_pixel")]
        };
        self.op_n("Resize", &[Some(x), None, Some(&sc)], attrs, 1).pop().unwrap()
    }

    /// Constant zero-padding: `pads` in ONNX order (all begins, then all ends).
    pub fn pad(&mut self, x: &Value, pads: &[i64]) -> Value {
        let p = self.const_i64(pads);
        self.op("Pad", &[x, &p], vec![attr_s("mode", "constant")])
    }

    // ---------------------------------------------------------------- finish

    pub fn into_model(self, producer_version: &str, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset: OPSET,
            producer_name: "tamrt".into(),
            producer_version: producer_version.into(),
            graph: GraphProto {
                name: self.name,
                nodes: self.nodes,
                initializers: self.inits,
                inputs: self.inputs,
                outputs: self.outputs,
                doc: self.doc,
            },
            metadata,
        }
    }
}

/// Dims helper: `dims![1, "n", 256]`.
#[macro_export]
macro_rules! dims {
    ($($d:expr),* $(,)?) => { vec![$($crate::onnx::proto::Dim::from($d)),*] };
}
