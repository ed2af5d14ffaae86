//! Per-component backend choice with fallback: a component whose engine cannot be loaded
//! runs on ONNX Runtime and the run continues; the choice and its reason are reported.

use std::path::Path;

use super::{Backend, ComponentSession};
use crate::error::{Error, ErrorKind, Result};
use crate::export::Component;

/// What the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPref {
    /// TensorRT where an engine loads, ONNX Runtime elsewhere.
    Auto,
    /// ONNX Runtime only.
    Ort,
    /// TensorRT; components whose engine fails still fall back, with a warning.
    Trt,
}

impl BackendPref {
    pub fn parse(s: &str) -> Result<BackendPref> {
        match s {
            "auto" => Ok(BackendPref::Auto),
            "ort" => Ok(BackendPref::Ort),
            "trt" | "tensorrt" => Ok(BackendPref::Trt),
            _ => Err(Error::new(ErrorKind::InvalidInput, format!("unknown backend '{s}' (auto, ort, trt)"))),
        }
    }
}

/// Which backend runs a component, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentChoice {
    pub component: Component,
    pub backend: String,
    pub reason: String,
}

/// Sessions by component, and the report of who runs what.
pub type LoadedComponents = (Vec<(Component, Box<dyn ComponentSession>)>, Vec<ComponentChoice>);

/// Load every component: from `accel` (TensorRT) when preferred and available, else from
/// `fallback` (ONNX Runtime). Errors only when the fallback cannot load a component.
pub fn load_components(
    pref: BackendPref,
    model_dir: &Path,
    accel: Option<&dyn Backend>,
    accel_unavailable: Option<&str>,
    fallback: &dyn Backend,
) -> Result<LoadedComponents> {
    let mut sessions = Vec::new();
    let mut report = Vec::new();
    for c in Component::ALL {
        let mut why = match (pref, accel) {
            (BackendPref::Ort, _) => "ONNX Runtime requested (--backend ort)".to_string(),
            (_, None) => {
                format!("TensorRT unavailable: {}", accel_unavailable.unwrap_or("no TensorRT backend in this build"))
            }
            (_, Some(b)) => match b.load(model_dir, c) {
                Ok(s) => {
                    report.push(ComponentChoice {
                        component: c,
                        backend: b.name().to_string(),
                        reason: "engine loaded".into(),
                    });
                    sessions.push((c, s));
                    continue;
                }
                Err(e) => format!("{} failed: {e}", b.name()),
            },
        };
        if pref == BackendPref::Trt {
            tracing::warn!(component = c.name(), reason = %why, "falling back to ONNX Runtime");
        }
        let s = fallback.load(model_dir, c).map_err(|e| e.context(format!("loading {}", c.file_name())))?;
        if why.is_empty() {
            why = "fallback".into();
        }
        report.push(ComponentChoice { component: c, backend: fallback.name().to_string(), reason: why });
        sessions.push((c, s));
    }
    Ok((sessions, report))
}

/// A [`Backend`] that loads each component from `accel` (TensorRT) when it can and from
/// `fallback` (ONNX Runtime) otherwise, recording every choice — so any code that takes a
/// `&dyn Backend` (the tracker, the benchmark) gets per-component fallback for free.
pub struct FallbackBackend {
    pub pref: BackendPref,
    pub accel: Option<Box<dyn Backend>>,
    /// Why `accel` is `None` (shown in the report).
    pub accel_unavailable: Option<String>,
    pub fallback: Box<dyn Backend>,
    choices: std::sync::Mutex<Vec<ComponentChoice>>,
}

impl FallbackBackend {
    pub fn new(
        pref: BackendPref,
        accel: Option<Box<dyn Backend>>,
        accel_unavailable: Option<String>,
        fallback: Box<dyn Backend>,
    ) -> Self {
        FallbackBackend { pref, accel, accel_unavailable, fallback, choices: Default::default() }
    }

    /// Which backend ran each component loaded so far, and why.
    pub fn choices(&self) -> Vec<ComponentChoice> {
        self.choices.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Backend for FallbackBackend {
    fn name(&self) -> &str {
        "auto"
    }

    fn load(&self, model_dir: &Path, c: Component) -> Result<Box<dyn ComponentSession>> {
        let reason = match (self.pref, &self.accel) {
            (BackendPref::Ort, _) => "ONNX Runtime requested (--backend ort)".to_string(),
            (_, None) => format!(
                "TensorRT unavailable: {}",
                self.accel_unavailable.as_deref().unwrap_or("no TensorRT backend in this build")
            ),
            (_, Some(b)) => match b.load(model_dir, c) {
                Ok(s) => {
                    if let Ok(mut v) = self.choices.lock() {
                        v.push(ComponentChoice {
                            component: c,
                            backend: b.name().into(),
                            reason: "engine loaded".into(),
                        });
                    }
                    return Ok(s);
                }
                Err(e) => format!("{} failed: {e}", b.name()),
            },
        };
        if self.pref == BackendPref::Trt {
            tracing::warn!(component = c.name(), reason = %reason, "falling back to ONNX Runtime");
        }
        let s = self.fallback.load(model_dir, c)?;
        if let Ok(mut v) = self.choices.lock() {
            v.push(ComponentChoice { component: c, backend: self.fallback.name().into(), reason });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::TensorF32;

    struct Fake {
        name: &'static str,
        fail_on: Vec<Component>,
    }

    struct FakeSession(&'static str);

    impl ComponentSession for FakeSession {
        fn run(&mut self, _inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
            Ok(vec![])
        }
        fn backend_name(&self) -> &str {
            self.0
        }
        fn input_names(&self) -> Vec<String> {
            vec![]
        }
    }

    impl Backend for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn load(&self, _dir: &Path, c: Component) -> Result<Box<dyn ComponentSession>> {
            if self.fail_on.contains(&c) {
                Err(Error::new(ErrorKind::Backend, format!("engine for {} is corrupt", c.name())))
            } else {
                Ok(Box::new(FakeSession(self.name)))
            }
        }
    }

    #[test]
    fn failed_engine_falls_back_per_component() {
        let trt = Fake { name: "tensorrt", fail_on: vec![Component::PromptDecoder] };
        let ort = Fake { name: "ort-cpu", fail_on: vec![] };
        let (s, r) = load_components(BackendPref::Auto, Path::new("."), Some(&trt), None, &ort).unwrap();
        assert_eq!(s.len(), 4);
        let by = |c| r.iter().find(|x| x.component == c).unwrap();
        assert_eq!(by(Component::ImageEncoder).backend, "tensorrt");
        assert_eq!(by(Component::PromptDecoder).backend, "ort-cpu");
        assert!(by(Component::PromptDecoder).reason.contains("corrupt"), "{:?}", by(Component::PromptDecoder));
        assert_eq!(s[1].1.backend_name(), "ort-cpu");
    }

    #[test]
    fn fallback_backend_records_choices() {
        let b = FallbackBackend::new(
            BackendPref::Auto,
            Some(Box::new(Fake { name: "tensorrt", fail_on: vec![Component::MemoryAttention] })),
            None,
            Box::new(Fake { name: "ort-cpu", fail_on: vec![] }),
        );
        for c in Component::ALL {
            b.load(Path::new("."), c).unwrap();
        }
        let ch = b.choices();
        assert_eq!(ch.len(), 4);
        assert_eq!(ch[3].component, Component::MemoryAttention);
        assert_eq!(ch[3].backend, "ort-cpu");
        assert!(ch[3].reason.contains("corrupt"));
        assert!(ch[..3].iter().all(|x| x.backend == "tensorrt"));
    }

    #[test]
    fn ort_preference_and_missing_trt() {
        let trt = Fake { name: "tensorrt", fail_on: vec![] };
        let ort = Fake { name: "ort-cpu", fail_on: vec![] };
        let (_, r) = load_components(BackendPref::Ort, Path::new("."), Some(&trt), None, &ort).unwrap();
        assert!(r.iter().all(|x| x.backend == "ort-cpu" && x.reason.contains("--backend ort")));
        let (_, r) = load_components(BackendPref::Auto, Path::new("."), None, Some("shim not found"), &ort).unwrap();
        assert!(r.iter().all(|x| x.reason.contains("shim not found")));
        let bad = Fake { name: "ort-cpu", fail_on: vec![Component::MemoryEncoder] };
        let e = load_components(BackendPref::Auto, Path::new("."), None, None, &bad).err().unwrap();
        assert!(e.to_string().contains("memory_encoder.onnx"), "{e}");
    }
}
