//! Engine files: naming by graph, precision, TensorRT version and GPU, and the staleness
//! rule. An engine is reused only when its sidecar (`<engine>.json`) says it was built
//! from the same graph bytes, by the same TensorRT, for the same GPU and L4T/JetPack
//! release, with the same build options, and the engine file still has the size and
//! SHA-256 recorded when it was built (a truncated, corrupt or swapped file never reaches
//! TensorRT's deserializer); anything else is rebuilt, never loaded.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Engine precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::new(ErrorKind::InvalidInput, format!("unknown precision '{s}' (fp32, fp16, bf16)"))),
        }
    }

    /// The precision a TensorRT version can build: bf16 needs TensorRT ≥ 9, otherwise
    /// fp16 is used; TensorRT ≥ 11 builds strongly typed networks only, so tamrt's fp32
    /// graphs give fp32 engines. The returned note says what changed.
    pub fn effective(self, trt_major: u32) -> (Precision, Option<String>) {
        if self != Precision::Fp32 && trt_major >= 11 {
            (
                Precision::Fp32,
                Some(format!(
                    "TensorRT {trt_major}.x builds strongly typed networks only and the graphs are fp32: \
                     building fp32 instead of {}",
                    self.name()
                )),
            )
        } else if self == Precision::Bf16 && trt_major < 9 {
            (Precision::Fp16, Some(format!("bf16 needs TensorRT >= 9 (found {trt_major}.x): building fp16 instead")))
        } else {
            (self, None)
        }
    }
}

/// The machine an engine is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// TensorRT version as (major, minor, patch).
    pub trt_version: (u32, u32, u32),
    /// Compute capability, e.g. (8, 7) for Orin.
    pub compute_capability: (u32, u32),
    pub gpu_name: String,
    /// L4T release string from /etc/nv_tegra_release (Jetson), `None` on desktop.
    pub l4t_release: Option<String>,
}

/// What an engine was built from and with (the sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStamp {
    pub graph_sha256: String,
    pub target: Target,
    pub precision: Precision,
    pub workspace_mb: u64,
    pub opt_level: Option<i32>,
    pub profile: String,
    /// The engine file as built (filled in by [`write_stamp`]; absent in what a caller
    /// wants, and in records of tamrt versions before it, which are then rebuilt).
    #[serde(default)]
    pub engine_file: Option<EngineFile>,
}

/// Size and SHA-256 of an engine file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFile {
    pub bytes: u64,
    pub sha256: String,
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// `<graph>.<precision>.trt<maj>.<min>.<patch>.sm<cc>.<gpu>.engine`, e.g.
/// `memory_attention.fp16.trt8.5.2.sm87.orin.engine`.
pub fn engine_file_name(graph: &str, precision: Precision, t: &Target) -> String {
    let (a, b, c) = t.trt_version;
    let (ma, mi) = t.compute_capability;
    format!("{graph}.{}.trt{a}.{b}.{c}.sm{ma}{mi}.{}.engine", precision.name(), slug(&t.gpu_name))
}

/// Sidecar path of an engine.
pub fn stamp_path(engine: &Path) -> PathBuf {
    let mut s = engine.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// An engine's build record, or why there is none.
pub fn read_stamp(engine: &Path) -> std::result::Result<EngineStamp, String> {
    let sp = stamp_path(engine);
    let text = std::fs::read_to_string(&sp).map_err(|_| format!("no build record '{}'", sp.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("unreadable build record: {e}"))
}

/// Why the engine file is not the file its build record describes (truncated, corrupt,
/// replaced, or a record without a checksum), or `None` when it is.
pub fn check_engine_file(engine: &Path, record: &EngineStamp) -> Option<String> {
    match &record.engine_file {
        None => Some("build record has no engine checksum (written by an older tamrt)".into()),
        Some(f) => engine_file_mismatch(engine, f),
    }
}

/// Why an engine must be (re)built, or `None` when it is up to date.
pub fn staleness(engine: &Path, want: &EngineStamp) -> Option<String> {
    if !engine.exists() {
        return Some("no engine yet".into());
    }
    let have = match read_stamp(engine) {
        Ok(h) => h,
        Err(reason) => return Some(reason),
    };
    if have.graph_sha256 != want.graph_sha256 {
        return Some("the graph changed".into());
    }
    if have.target.trt_version != want.target.trt_version {
        return Some(format!("built by TensorRT {:?}, this is {:?}", have.target.trt_version, want.target.trt_version));
    }
    if have.target.compute_capability != want.target.compute_capability || have.target.gpu_name != want.target.gpu_name
    {
        return Some(format!("built for GPU '{}', this is '{}'", have.target.gpu_name, want.target.gpu_name));
    }
    if have.target.l4t_release != want.target.l4t_release {
        return Some(format!(
            "built on L4T {:?}, this is {:?} (JetPack changed)",
            have.target.l4t_release, want.target.l4t_release
        ));
    }
    if let Some(reason) = check_engine_file(engine, &have) {
        return Some(reason);
    }
    let options = |s: &EngineStamp| (s.precision, s.workspace_mb, s.opt_level, s.profile.clone());
    if options(&have) != options(want) {
        return Some(OPTIONS_CHANGED.into());
    }
    None
}

/// The [`staleness`] reason that only the build options differ.
const OPTIONS_CHANGED: &str = "build options changed";

/// Why the engine cannot be loaded for `graph_sha256` on `target`, or `None` when it can:
/// [`staleness`] with the build options taken as recorded (an engine built with other
/// options is still this graph for this TensorRT, GPU and JetPack). The rule of the
/// TensorRT loader and of `tamrt info`.
pub fn unusable_reason(engine: &Path, graph_sha256: &str, target: &Target) -> Option<String> {
    if !engine.exists() {
        return Some("no engine yet".into());
    }
    let record = match read_stamp(engine) {
        Ok(r) => r,
        Err(reason) => return Some(reason),
    };
    let want = EngineStamp { graph_sha256: graph_sha256.to_string(), target: target.clone(), ..record };
    staleness(engine, &want)
}

/// Why the engine file is not the one its record describes, if it is not.
fn engine_file_mismatch(engine: &Path, recorded: &EngineFile) -> Option<String> {
    let bytes = match std::fs::metadata(engine) {
        Ok(m) => m.len(),
        Err(e) => return Some(format!("cannot read the engine file: {e}")),
    };
    if bytes != recorded.bytes {
        return Some(format!(
            "the engine file has {bytes} bytes, its build record says {} (truncated or replaced)",
            recorded.bytes
        ));
    }
    match file_sha256(engine) {
        Ok((_, sha)) if sha == recorded.sha256 => None,
        Ok(_) => Some("the engine file's SHA-256 differs from its build record (corrupt or replaced)".into()),
        Err(e) => Some(format!("cannot read the engine file: {e}")),
    }
}

/// Size and hex SHA-256 of a file, read in 1 MiB pieces (this file is also compiled into
/// build.rs, so it keeps to std and sha2).
pub fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut h, mut buf, mut n) = (Sha256::new(), vec![0u8; 1 << 20], 0u64);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, h.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Write the sidecar for a freshly built engine, with the engine file's size and SHA-256.
pub fn write_stamp(engine: &Path, stamp: &EngineStamp) -> Result<()> {
    let (bytes, sha256) = file_sha256(engine).map_err(|e| Error::io(engine, "cannot read", e))?;
    let stamp = EngineStamp { engine_file: Some(EngineFile { bytes, sha256 }), ..stamp.clone() };
    let p = stamp_path(engine);
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&stamp).expect("stamp serialises");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, "cannot write", e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, "cannot move into place", e))
}

/// Parse `/etc/nv_tegra_release` (e.g. `# R35 (release), REVISION: 3.1, GCID: …`) into
/// "35.3.1".
pub fn parse_nv_tegra_release(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let r = line.split_whitespace().find_map(|w| w.strip_prefix('R').and_then(|n| n.parse::<u32>().ok()))?;
    let rev = line.split("REVISION:").nth(1)?.split(',').next()?.trim();
    Some(format!("{r}.{rev}"))
}

/// JetPack release for an L4T release (the pairs NVIDIA documents for the supported lines).
pub fn jetpack_for_l4t(l4t: &str) -> Option<&'static str> {
    Some(match l4t {
        "35.2.1" => "5.1",
        "35.3.1" => "5.1.1",
        "35.4.1" => "5.1.2",
        "35.5.0" => "5.1.3",
        "35.6.0" => "5.1.4",
        "36.2.0" => "6.0 DP",
        "36.3.0" => "6.0",
        "36.4.0" => "6.1",
        "36.4.3" => "6.2",
        "36.4.4" => "6.2.1",
        _ => return None,
    })
}

/// A Jetson Orin with TensorRT 8.5.2 on L4T 35.3.1 (JetPack 5.1.1), for tests.
#[cfg(test)]
pub(crate) fn test_orin() -> Target {
    Target {
        trt_version: (8, 5, 2),
        compute_capability: (8, 7),
        gpu_name: "Orin (nvgpu)".into(),
        l4t_release: Some("35.3.1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        test_orin()
    }

    fn stamp() -> EngineStamp {
        EngineStamp {
            graph_sha256: "abc".into(),
            target: target(),
            precision: Precision::Fp16,
            workspace_mb: 1024,
            opt_level: None,
            profile: "objects 1..8".into(),
            engine_file: None,
        }
    }

    #[test]
    fn names_carry_graph_precision_version_and_gpu() {
        let n = engine_file_name("memory_attention", Precision::Fp16, &target());
        assert_eq!(n, "memory_attention.fp16.trt8.5.2.sm87.orin-nvgpu.engine");
    }

    #[test]
    fn staleness_rules() {
        let dir = std::env::temp_dir().join(format!("tamrt-engine-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = dir.join("g.engine");
        let _ = std::fs::remove_file(&e);
        assert_eq!(staleness(&e, &stamp()).as_deref(), Some("no engine yet"));
        std::fs::write(&e, b"plan").unwrap();
        assert!(staleness(&e, &stamp()).unwrap().contains("no build record"));
        write_stamp(&e, &stamp()).unwrap();
        assert_eq!(staleness(&e, &stamp()), None);
        let mut other = stamp();
        other.target.trt_version = (10, 3, 0);
        assert!(staleness(&e, &other).unwrap().contains("TensorRT"));
        let mut other = stamp();
        other.target.gpu_name = "NVIDIA H200".into();
        assert!(staleness(&e, &other).unwrap().contains("GPU"));
        let mut other = stamp();
        other.target.l4t_release = Some("36.4.0".into());
        assert!(staleness(&e, &other).unwrap().contains("JetPack changed"));
        let mut other = stamp();
        other.graph_sha256 = "def".into();
        assert_eq!(staleness(&e, &other).as_deref(), Some("the graph changed"));
        let mut other = stamp();
        other.workspace_mb = 2048;
        assert_eq!(staleness(&e, &other).as_deref(), Some(OPTIONS_CHANGED));
    }

    #[test]
    fn truncated_corrupt_or_unrecorded_engine_files_are_rebuilt() {
        let dir = std::env::temp_dir().join(format!("tamrt-engine-integrity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = dir.join("g.engine");
        std::fs::write(&e, b"serialized plan bytes").unwrap();
        write_stamp(&e, &stamp()).unwrap();
        assert_eq!(staleness(&e, &stamp()), None);
        // an interrupted copy
        std::fs::write(&e, b"serialized plan").unwrap();
        let r = staleness(&e, &stamp()).unwrap();
        assert!(r.contains("15 bytes") && r.contains("says 21") && r.contains("truncated"), "{r}");
        // same size, one byte flipped
        std::fs::write(&e, b"serialized plan bytEs").unwrap();
        assert!(staleness(&e, &stamp()).unwrap().contains("SHA-256 differs"));
        // a record from before engine checksums
        std::fs::write(&e, b"serialized plan bytes").unwrap();
        std::fs::write(stamp_path(&e), serde_json::to_string(&stamp()).unwrap()).unwrap();
        assert!(staleness(&e, &stamp()).unwrap().contains("no engine checksum"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bf16_falls_back_before_trt9() {
        assert_eq!(Precision::Bf16.effective(8).0, Precision::Fp16);
        assert!(Precision::Bf16.effective(8).1.unwrap().contains("TensorRT >= 9"));
        assert_eq!(Precision::Bf16.effective(10), (Precision::Bf16, None));
        assert_eq!(Precision::Fp16.effective(8), (Precision::Fp16, None));
        assert_eq!(Precision::Fp16.effective(10), (Precision::Fp16, None));
        // TensorRT 11 has no weakly typed networks: reduced precision needs typed graphs
        let (p, note) = Precision::Fp16.effective(11);
        assert_eq!(p, Precision::Fp32);
        assert!(note.unwrap().contains("strongly typed"));
        assert_eq!(Precision::Bf16.effective(11).0, Precision::Fp32);
        assert_eq!(Precision::Fp32.effective(11), (Precision::Fp32, None));
    }

    #[test]
    fn tegra_release_parsing() {
        let t = "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19 15:19:21 UTC 2023";
        assert_eq!(parse_nv_tegra_release(t).as_deref(), Some("35.3.1"));
        assert_eq!(jetpack_for_l4t("35.3.1"), Some("5.1.1"));
        assert_eq!(parse_nv_tegra_release("garbage"), None);
    }
}
