//! The TensorRT 8.5 operator rule: every exported graph may only use operators that
//! onnx-tensorrt's 8.5 support matrix marks supported (`export/trt85_operators.tsv`, with
//! its source in its header), at opset ≤ 17, in the default domain, with no float64, and
//! with the inputs 8.5 requires to be initializers (Slice / Squeeze / Unsqueeze axes,
//! TopK's K) given as initializers.

use std::collections::{BTreeSet, HashSet};

use super::proto::ModelSummary;

/// The support matrix as committed.
pub const TRT85_OPERATORS_TSV: &str = include_str!("../../export/trt85_operators.tsv");

/// Operators marked supported ("Y").
pub fn supported_ops() -> BTreeSet<&'static str> {
    TRT85_OPERATORS_TSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut it = l.split('\t');
            let op = it.next()?;
            (it.next()? == "Y").then_some(op)
        })
        .collect()
}

/// Check a written model; returns every violation found (empty = OK).
pub fn check_model(graph_name: &str, s: &ModelSummary) -> Vec<String> {
    let ok = supported_ops();
    let mut errs = Vec::new();
    for (dom, ver) in &s.opsets {
        if !dom.is_empty() && dom != "ai.onnx" {
            errs.push(format!("{graph_name}: opset import of custom domain '{dom}'"));
        }
        if *ver > 17 {
            errs.push(format!("{graph_name}: opset {ver} > 17 (TensorRT 8.5 parses up to 17)"));
        }
    }
    let inits: HashSet<&str> = s.initializers.iter().map(|(n, _, _)| n.as_str()).collect();
    for n in &s.nodes {
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            errs.push(format!("{graph_name}: node '{}' is in custom domain '{}'", n.name, n.domain));
        }
        if !ok.contains(n.op_type.as_str()) {
            errs.push(format!(
                "{graph_name}: node '{}' uses {} which onnx-tensorrt 8.5 does not support",
                n.name, n.op_type
            ));
        }
        let must_be_init: &[usize] = match n.op_type.as_str() {
            "Slice" => &[3],
            "Squeeze" | "Unsqueeze" | "TopK" => &[1],
            _ => &[],
        };
        for &i in must_be_init {
            if let Some(inp) = n.inputs.get(i) {
                if !inp.is_empty() && !inits.contains(inp.as_str()) {
                    errs.push(format!(
                        "{graph_name}: node '{}' ({}) input {i} '{inp}' must be an initializer for TensorRT 8.5",
                        n.name, n.op_type
                    ));
                }
            }
        }
    }
    for dt in s.dtypes.iter().chain(s.cast_targets.iter()) {
        if *dt == 11 {
            errs.push(format!("{graph_name}: uses float64 (double)"));
        }
        if *dt == 14 || *dt == 15 {
            errs.push(format!("{graph_name}: uses a complex type"));
        }
    }
    errs.sort();
    errs.dedup();
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_has_the_rows_we_rely_on() {
        let ok = supported_ops();
        for op in ["MatMul", "Softmax", "Erf", "Resize", "ConvTranspose", "Where", "Gather"] {
            assert!(ok.contains(op), "{op}");
        }
        // LayerNormalization arrived in 8.6: it must not be in the 8.5 list.
        assert!(!ok.contains("LayerNormalization"));
        assert!(ok.len() > 100, "parsed {} ops", ok.len());
    }
}
