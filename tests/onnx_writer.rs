//! The hand-written ONNX writer produces models ONNX Runtime loads and evaluates as
//! expected: small graphs built with the fluent builder, checked against values computed
//! here in Rust. Tolerance 1e-5 absolute: fp32 arithmetic on O(1) values.

use tamrt::backend::ort::OrtSession;
use tamrt::backend::{take_output, ComponentSession};
use tamrt::dims;
use tamrt::onnx::graph::ConvOpts;
use tamrt::onnx::proto::{read_summary, DataType};
use tamrt::onnx::Graph;
use tamrt::weights::TensorF32;

fn run(g: Graph, inputs: &[(&str, &TensorF32)]) -> Vec<(String, TensorF32)> {
    let dir = tempdir();
    let path = dir.join("g.onnx");
    tamrt::export::write_model_atomic(g.into_model("test", vec![]), &path).unwrap();
    let mut s = OrtSession::load(&path, 1).unwrap();
    s.run(inputs).unwrap()
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "tamrt-onnx-writer-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn layer_norm_gelu_softmax_match_reference() {
    let mut g = Graph::new("t");
    let x = g.input("x", DataType::Float, dims!["n", 4]);
    let w = g.const_f32(&[4], vec![1.0, 2.0, 0.5, -1.0]);
    let b = g.const_f32(&[4], vec![0.1, 0.0, -0.1, 0.2]);
    let ln = g.layer_norm(&x, &w, &b, 1e-6);
    let ge = g.gelu(&ln);
    let sm = g.softmax(&ge, -1);
    g.output(&ln, "ln", DataType::Float, dims!["n", 4]);
    g.output(&sm, "sm", DataType::Float, dims!["n", 4]);
    let xv = TensorF32::new(vec![2, 4], vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.25, 8.0]);
    let mut out = run(g, &[("x", &xv)]);
    let ln = take_output(&mut out, "ln").unwrap();
    let sm = take_output(&mut out, "sm").unwrap();
    let (wv, bv) = ([1.0f32, 2.0, 0.5, -1.0], [0.1f32, 0.0, -0.1, 0.2]);
    for r in 0..2 {
        let row = &xv.data[r * 4..r * 4 + 4];
        let mean = row.iter().sum::<f32>() / 4.0;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
        let lnr: Vec<f32> = (0..4).map(|i| (row[i] - mean) / (var + 1e-6).sqrt() * wv[i] + bv[i]).collect();
        for (i, want) in lnr.iter().enumerate() {
            assert!((ln.data[r * 4 + i] - want).abs() < 1e-5, "ln[{r},{i}]");
        }
        let ge: Vec<f32> = lnr.iter().map(|v| 0.5 * v * (1.0 + erf(v / 2f32.sqrt()))).collect();
        let mx = ge.iter().cloned().fold(f32::MIN, f32::max);
        let z: f32 = ge.iter().map(|v| (v - mx).exp()).sum();
        for (i, g) in ge.iter().enumerate() {
            let expect = (g - mx).exp() / z;
            assert!((sm.data[r * 4 + i] - expect).abs() < 1e-5, "softmax[{r},{i}] {} vs {expect}", sm.data[r * 4 + i]);
        }
    }
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), enough for a 1e-5 check.
fn erf(x: f32) -> f32 {
    let (s, x) = (x.signum(), x.abs() as f64);
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592)
            * t
            * (-x * x).exp();
    s * y as f32
}

#[test]
fn conv_matmul_reshape_and_dynamic_axis() {
    let mut g = Graph::new("t");
    let x = g.input("x", DataType::Float, dims!["b", 1, 3, 3]);
    // 2x2 kernel of ones, stride 1: each output is a 2x2 window sum.
    let w = g.const_f32(&[1, 1, 2, 2], vec![1.0; 4]);
    let y = g.conv(&x, &w, None, &ConvOpts::default());
    let y = g.reshape(&y, &[0, -1]);
    let m = g.const_f32(&[4, 1], vec![1.0, 10.0, 100.0, 1000.0]);
    let z = g.matmul(&y, &m);
    g.output(&z, "z", DataType::Float, dims!["b", 1]);
    let xv = TensorF32::new(vec![2, 1, 3, 3], (0..18).map(|v| v as f32).collect());
    let mut out = run(g, &[("x", &xv)]);
    let z = take_output(&mut out, "z").unwrap();
    assert_eq!(z.shape, vec![2, 1]);
    for b in 0..2 {
        let p = |r: usize, c: usize| xv.data[b * 9 + r * 3 + c];
        let win = |r: usize, c: usize| p(r, c) + p(r, c + 1) + p(r + 1, c) + p(r + 1, c + 1);
        let expect = win(0, 0) + 10.0 * win(0, 1) + 100.0 * win(1, 0) + 1000.0 * win(1, 1);
        assert!((z.data[b] - expect).abs() < 1e-2, "batch {b}: {} vs {expect}", z.data[b]);
    }
}

#[test]
fn summary_reads_back_what_was_written() {
    let mut g = Graph::new("t");
    let x = g.input("x", DataType::Float, dims![2]);
    let y = g.g_sqrt_plus_one(&x);
    g.output(&y, "y", DataType::Float, dims![2]);
    let bytes = g.into_model("t", vec![("k".into(), "v".into())]).to_bytes();
    let s = read_summary(&bytes).unwrap();
    assert_eq!(s.opsets, vec![(String::new(), 17)]);
    assert_eq!(s.inputs, vec!["x".to_string()]);
    assert_eq!(s.outputs, vec!["y".to_string()]);
    let ops: Vec<&str> = s.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, vec!["Sqrt", "Add", "Identity"]);
}

trait SqrtPlusOne {
    fn g_sqrt_plus_one(&mut self, x: &tamrt::onnx::Value) -> tamrt::onnx::Value;
}
impl SqrtPlusOne for Graph {
    fn g_sqrt_plus_one(&mut self, x: &tamrt::onnx::Value) -> tamrt::onnx::Value {
        let s = self.sqrt(x);
        self.add_scalar(&s, 1.0)
    }
}

#[test]
fn external_data_model_loads_and_matches() {
    // Force external data (the real threshold is ~1.8 GB) and check ORT reads it back.
    let build = || {
        let mut g = Graph::new("t");
        let x = g.input("x", DataType::Float, dims![1, 512]);
        let w: Vec<f32> = (0..512 * 4).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
        let w = g.initializer("w", &[512, 4], w.into());
        let y = g.matmul(&x, &w);
        g.output(&y, "y", DataType::Float, dims![1, 4]);
        g.into_model("test", vec![])
    };
    let dir = tempdir();
    let (inline, external) = (dir.join("inline.onnx"), dir.join("external.onnx"));
    tamrt::export::write_model_atomic(build(), &inline).unwrap();
    tamrt::export::write_model_atomic_with_threshold(build(), &external, 0).unwrap();
    assert!(dir.join("external.onnx.data").exists());
    assert!(std::fs::metadata(&external).unwrap().len() < 1024, "weights must not be inline");
    let xv = TensorF32::new(vec![1, 512], (0..512).map(|i| (i as f32) / 512.0).collect());
    let mut a = OrtSession::load(&inline, 1).unwrap();
    let mut b = OrtSession::load(&external, 1).unwrap();
    let ya = take_output(&mut a.run(&[("x", &xv)]).unwrap(), "y").unwrap();
    let yb = take_output(&mut b.run(&[("x", &xv)]).unwrap(), "y").unwrap();
    assert_eq!(ya, yb);
    assert!(ya.data.iter().any(|v| *v != 0.0));
}

/// Deterministic values in [-2, 2) for test inputs.
fn ramp(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 4000) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// `nn::sdpa_in_blocks` (3-row blocks, the last 1 row) equals softmax(q·kᵀ/√c)·v
/// computed here in f64, with the value head broadcast over 2 query heads.
/// Tolerance 1e-5 absolute: fp32 dot products of 4 O(1) terms and a softmax.
#[test]
fn sdpa_in_query_blocks_equals_plain_attention() {
    let (h, nq, nk, c, cv) = (2usize, 10usize, 7usize, 4usize, 3usize);
    let mut g = Graph::new("t");
    let q = g.input("q", DataType::Float, dims![1i64, h as i64, nq as i64, c as i64]);
    let kt = g.input("kt", DataType::Float, dims![1i64, h as i64, c as i64, "nk"]);
    let v = g.input("v", DataType::Float, dims![1i64, 1i64, "nk", cv as i64]);
    let o = tamrt::onnx::nn::sdpa_in_blocks(&mut g, &q, &kt, &v, c, nq, 3);
    // Mul (scale), Split, 4 blocks of ≤ 3 rows × (MatMul, Softmax, MatMul), Concat
    assert_eq!(g.num_nodes(), 1 + 1 + 4 * 3 + 1);
    g.output(&o, "o", DataType::Float, dims![1i64, h as i64, nq as i64, cv as i64]);
    let (qv, ktv, vv) = (ramp(h * nq * c, 1), ramp(h * c * nk, 2), ramp(nk * cv, 3));
    let inputs = [
        TensorF32::new(vec![1, h, nq, c], qv.clone()),
        TensorF32::new(vec![1, h, c, nk], ktv.clone()),
        TensorF32::new(vec![1, 1, nk, cv], vv.clone()),
    ];
    let mut out = run(g, &[("q", &inputs[0]), ("kt", &inputs[1]), ("v", &inputs[2])]);
    let o = take_output(&mut out, "o").unwrap();
    assert_eq!(o.shape, vec![1, h, nq, cv]);
    for hh in 0..h {
        for i in 0..nq {
            let s: Vec<f64> = (0..nk)
                .map(|j| {
                    let dot: f64 =
                        (0..c).map(|d| qv[(hh * nq + i) * c + d] as f64 * ktv[(hh * c + d) * nk + j] as f64).sum();
                    dot / (c as f64).sqrt()
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
            for e in 0..cv {
                let want: f64 = (0..nk).map(|j| (s[j] - mx).exp() / z * vv[j * cv + e] as f64).sum();
                let got = o.data[(hh * nq + i) * cv + e] as f64;
                assert!((got - want).abs() < 1e-5, "o[{hh},{i},{e}] = {got}, want {want}");
            }
        }
    }
}

/// Hiera run in bands of window rows (`build_hiera_banded` with a 1-byte budget: every
/// windowed block without padding is split into bands of one window row) equals the
/// unbanded trunk on the reduced SAM 2.1 config. Tolerance 1e-5 of the output's max:
/// the same products per token, only the MatMul row counts differ.
#[test]
fn hiera_in_bands_equals_whole_map() {
    use tamrt::config::ModelConfig;
    use tamrt::models::hiera::build_hiera_banded;
    use tamrt::weights::{RandomWeights, Weights};
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1_tiny/config.json");
    let cfg = ModelConfig::from_json_file(&fx).unwrap();
    let hc = cfg.hiera().unwrap();
    let s = cfg.image_size;
    let w = Weights::new(Box::new(RandomWeights { seed: 7 }));
    let trunk = |band_bytes: usize| {
        let mut g = Graph::new("trunk");
        let image = g.input("image", DataType::Float, dims![1i64, 3, s as i64, s as i64]);
        let xs = build_hiera_banded(&mut g, hc, &w.root().pp("trunk"), &image, s, band_bytes).unwrap();
        for (i, x) in xs.iter().enumerate() {
            g.output(&x.v, &format!("level{i}"), DataType::Float, dims![1i64, x.c as i64, x.h as i64, x.w as i64]);
        }
        (g.num_nodes(), g)
    };
    let (nodes_whole, whole) = trunk(usize::MAX);
    let (nodes_banded, banded) = trunk(1);
    assert!(nodes_banded > nodes_whole, "the 1-byte budget must band some block");
    let image = TensorF32::new(vec![1, 3, s, s], ramp(3 * s * s, 9));
    let a = run(whole, &[("image", &image)]);
    let b = run(banded, &[("image", &image)]);
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!((na, &ta.shape), (nb, &tb.shape));
        let max = ta.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = ta.data.iter().zip(&tb.data).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(max > 0.0 && err <= 1e-5 * max, "{na}: max |banded − whole| {err} of max {max}");
    }
}
