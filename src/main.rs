//! The `tamrt` command line: a thin layer over the library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use tamrt::config::ModelConfig;

#[derive(Parser)]
#[command(name = "tamrt", version, about = "SAM 2 / SAM 2.1 / EdgeTAM: export, engines, tracking, benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
enum Cmd {
    /// Export a checkpoint (or seeded random weights) to ONNX graphs + model.json.
    Export {
        /// Model name (e.g. sam2.1_hiera_t); see `tamrt config --list`.
        #[arg(long)]
        model: Option<String>,
        /// A model config as JSON instead of a built-in name (reduced test configs).
        #[arg(long, conflicts_with = "model")]
        config: Option<PathBuf>,
        /// Official checkpoint: PyTorch zip (`.pt`) or `.safetensors`.
        #[arg(long, conflicts_with = "random_weights")]
        checkpoint: Option<PathBuf>,
        /// Export with seeded random weights instead of a checkpoint.
        #[arg(long)]
        random_weights: Option<u64>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Only these graphs (comma separated: image_encoder,prompt_decoder,memory_encoder,memory_attention).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Compare exported graphs with golden outputs of the official code (a fixture dir
    /// written by tests/fixtures/gen/gen_sam2.py); prints the error per output.
    Parity {
        /// Fixture dir: config.json, checkpoint.pt, <graph>_<case>.safetensors.
        #[arg(long)]
        fixtures: PathBuf,
        /// Where to export the graphs (default: a temp dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Track objects through a folder of frames from prompts (points, boxes, masks).
    Track(TrackArgs),
    /// Benchmark models on a video dataset (speed, memory, J&F); subcommands merge,
    /// compare, report, make-dataset.
    Bench(tamrt::bench::cli::BenchCommand),
    /// Build TensorRT engines for an exported model (one per graph; up-to-date ones are kept).
    BuildEngines {
        #[arg(long)]
        model_dir: PathBuf,
        /// fp16, bf16 (TensorRT >= 9; fp16 before) or fp32.
        #[arg(long, default_value = "fp16")]
        precision: String,
        /// Builder workspace in MB.
        #[arg(long, default_value_t = 1024)]
        workspace: u64,
        /// Builder optimization level (TensorRT >= 8.6).
        #[arg(long)]
        opt_level: Option<i32>,
    },
    /// Show the machine (CUDA, GPU, TensorRT, JetPack/L4T, ONNX Runtime) and, with
    /// --model-dir, which graphs and engines exist and are current.
    Info {
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Check the GPU kernels (preprocessing, logits postprocessing, memory bank) against
    /// the CPU functions on seeded random inputs and time both; fails on any comparison
    /// over its tolerance. Needs a build with `--features cuda` and an NVIDIA GPU.
    GpuCheck {
        /// Model input side S (frames are resized to S×S).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Timed runs per measurement (the median is reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0)]
        device: usize,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 0x7A3D)]
        seed: u64,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Print a model config as JSON.
    Config {
        /// Model name.
        #[arg(long)]
        model: Option<String>,
        /// List the known model names.
        #[arg(long)]
        list: bool,
    },
    /// Score predicted masks against ground truth: J, F and J&F as the official SA-V
    /// (sav_evaluator.py) and DAVIS 2017 semi-supervised evaluators compute them.
    Eval {
        /// Folder of predicted masks, laid out like --gt.
        #[arg(long)]
        pred: PathBuf,
        /// Ground truth: SA-V {video}/{obj_id}/{frame}.png or DAVIS {video}/{frame}.png.
        #[arg(long)]
        gt: PathBuf,
        /// Layout and evaluator to follow (default: detected from --gt).
        #[arg(long, value_parser = ["sav", "davis"])]
        format: Option<String>,
        /// Also score the first and last annotated frames (skipped by default, as officially).
        #[arg(long)]
        keep_first_last: bool,
        /// Write the scores as JSON (percent).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the scores as CSV: one row per object and a global row (percent).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Fail on a missing prediction (or a prediction video without ground truth)
        /// instead of scoring the frame 0.
        #[arg(long)]
        strict: bool,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

fn load_config(model: Option<&str>, config: Option<&PathBuf>) -> Result<ModelConfig> {
    match (model, config) {
        (Some(m), None) => Ok(ModelConfig::builtin(m)?),
        (None, Some(p)) => Ok(ModelConfig::from_json_file(p)?),
        _ => bail!("give exactly one of --model NAME or --config FILE"),
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Export { model, config, checkpoint, random_weights, out, only } => {
            let cfg = load_config(model.as_deref(), config.as_ref())?;
            let components = if only.is_empty() {
                tamrt::export::Component::ALL.to_vec()
            } else {
                only.iter().map(|s| tamrt::export::Component::from_name(s)).collect::<Result<Vec<_>, _>>()?
            };
            let source = match (checkpoint, random_weights) {
                (Some(p), None) => tamrt::export::WeightsFrom::Checkpoint(p),
                (None, Some(seed)) => tamrt::export::WeightsFrom::Random(seed),
                _ => bail!("give exactly one of --checkpoint FILE or --random-weights SEED"),
            };
            let report = tamrt::export::export_model(&cfg, source, &out, &components)
                .with_context(|| format!("export of '{}' to '{}' failed", cfg.name, out.display()))?;
            println!("{}", report.summary());
        }
        Cmd::Parity { fixtures, out, threads } => {
            let out = out.unwrap_or_else(|| std::env::temp_dir().join(format!("tamrt-parity-{}", std::process::id())));
            let res = tamrt::parity::run_fixture_dir(&fixtures, &out, threads)?;
            let mut worst_all = 0f32;
            for (c, errs) in &res {
                print!("{}", tamrt::parity::table(c.name(), errs));
                let worst = errs.iter().map(|e| e.rel_err).fold(0f32, f32::max);
                println!("=> {} worst rel_err {worst:.3e}\n", c.name());
                worst_all = worst_all.max(worst);
            }
            if worst_all.is_nan() || worst_all > tamrt::parity::TOLERANCE {
                bail!("worst relative error {worst_all:.3e} exceeds {:.0e}", tamrt::parity::TOLERANCE);
            }
        }
        Cmd::Track(args) => run_track(args)?,
        Cmd::Bench(args) => {
            let code = tamrt::bench::cli::run(args)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Cmd::BuildEngines { model_dir, precision, workspace, opt_level } => {
            let shim = tamrt::trt::ffi::Shim::load()?;
            let target = shim.target()?;
            let req = tamrt::trt::BuildRequest {
                precision: tamrt::trt::engine_cache::Precision::parse(&precision)?,
                workspace_mb: workspace,
                opt_level,
                ranges: Default::default(),
            };
            let mut failed = 0;
            for (c, outcome) in tamrt::trt::build_engines(&shim, &target, &model_dir, &req)? {
                match outcome {
                    tamrt::trt::EngineOutcome::UpToDate(p) => println!("{:<18} up to date: {}", c.name(), p.display()),
                    tamrt::trt::EngineOutcome::Built { path, reason, note } => {
                        println!("{:<18} built ({reason}): {}", c.name(), path.display());
                        if let Some(n) = note {
                            println!("{:<18} note: {n}", "");
                        }
                    }
                    tamrt::trt::EngineOutcome::Failed { reason } => {
                        failed += 1;
                        println!("{:<18} FAILED, will run on ONNX Runtime: {reason}", c.name());
                    }
                }
            }
            if failed > 0 {
                println!("{failed} component(s) fall back to ONNX Runtime");
            }
        }
        Cmd::Info { model_dir } => {
            print!("{}", tamrt::info::report(model_dir.as_deref()));
        }
        Cmd::GpuCheck { size, runs, device, seed, json } => {
            let opts = tamrt::gpu::check::CheckOptions { size, runs, device, seed };
            let report = tamrt::gpu::check::run(&opts).context("gpu-check could not run")?;
            print!("{}", report.text());
            if let Some(p) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&p, text).with_context(|| format!("cannot write '{}'", p.display()))?;
            }
            if !report.passed() {
                bail!("gpu-check: a GPU result differs from the CPU reference beyond its tolerance");
            }
        }
        Cmd::Config { model, list } => {
            if list {
                for n in tamrt::config::MODEL_NAMES {
                    println!("{n}");
                }
                println!("{}", tamrt::config::EDGETAM);
            } else {
                let cfg = load_config(model.as_deref(), None)?;
                println!("{}", serde_json::to_string_pretty(&cfg)?);
            }
        }
        Cmd::Eval { pred, gt, format, keep_first_last, json, csv, strict, threads } => {
            let mut opts = tamrt::eval::EvalOptions::new(pred, gt);
            opts.format = format.as_deref().map(tamrt::eval::Format::from_name).transpose()?;
            (opts.keep_first_last, opts.strict, opts.threads) = (keep_first_last, strict, threads);
            run_eval(&opts, json.as_deref(), csv.as_deref())?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct TrackArgs {
    /// Exported model directory (`tamrt export --out DIR`).
    #[arg(long)]
    model_dir: PathBuf,
    /// Folder of JPEG/PNG frames (sorted numerically when every name is a number).
    #[arg(long)]
    frames: PathBuf,
    /// Prompts JSON: {"prompts": [{"frame", "obj_id", "points"+"labels" | "box" | "mask"}]}.
    #[arg(long)]
    prompts: PathBuf,
    /// Output folder: OUT/<obj_id:03>/<frame>.png (0/1 palette PNG).
    #[arg(long)]
    out: PathBuf,
    /// auto | ort | trt.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// fp32 | fp16 | bf16 (reduced precision needs the TensorRT backend).
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Track backwards from the last prompted frame.
    #[arg(long)]
    reverse: bool,
    /// Frame to start tracking from (default: first prompted frame; last with --reverse).
    #[arg(long)]
    start_frame: Option<usize>,
    /// At most this many decoded frames held at once.
    #[arg(long, default_value_t = 600)]
    max_frames_in_mem: usize,
    /// Also write OUT/logits/<obj_id:03>/<frame>.npy (float32 [H, W] logits).
    #[arg(long)]
    save_logits: bool,
    /// Fill background holes up to this area in the low-res masks (0 disables; upstream 8).
    #[arg(long, default_value_t = 8)]
    fill_hole_area: usize,
    /// ONNX Runtime intra-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// The backend `--backend` / `--precision` ask for: TensorRT engines where they load (per
/// component, falling back to ONNX Runtime), ONNX Runtime otherwise.
fn make_backend(backend: &str, precision: &str, threads: usize) -> Result<tamrt::backend::select::FallbackBackend> {
    use tamrt::backend::select::{BackendPref, FallbackBackend};
    let pref = BackendPref::parse(backend)?;
    let precision = tamrt::trt::engine_cache::Precision::parse(precision)?;
    let ort = Box::new(tamrt::backend::ort::OrtBackend { threads });
    let (accel, why): (Option<Box<dyn tamrt::backend::Backend>>, Option<String>) = if pref == BackendPref::Ort {
        (None, None)
    } else {
        #[cfg(feature = "cuda")]
        {
            match tamrt::trt::TrtBackend::new(precision) {
                Ok(b) => (Some(Box::new(b)), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            (None, Some("this build has no TensorRT support (build with --features tensorrt)".to_string()))
        }
    };
    if accel.is_none() {
        if pref == BackendPref::Trt {
            bail!("TensorRT backend not available in this build or machine: {}", why.unwrap_or_default());
        }
        if precision != tamrt::trt::engine_cache::Precision::Fp32 {
            bail!(
                "--precision {} needs the TensorRT backend, which is not available here ({}); ONNX Runtime runs the fp32 graphs (use --precision fp32)",
                precision.name(),
                why.unwrap_or_else(|| "--backend ort".into())
            );
        }
    }
    Ok(FallbackBackend::new(pref, accel, why, ort))
}

fn run_track(a: TrackArgs) -> Result<()> {
    let backend = make_backend(&a.backend, &a.precision, a.threads)?;
    if a.max_frames_in_mem == 0 {
        bail!("--max-frames-in-mem must be at least 1");
    }
    let job = tamrt::tracker::TrackJob {
        model_dir: a.model_dir,
        frames: a.frames,
        prompts: a.prompts,
        out: a.out,
        reverse: a.reverse,
        start_frame: a.start_frame,
        save_logits: a.save_logits,
        options: tamrt::tracker::TrackerOptions {
            fill_hole_area: a.fill_hole_area,
            max_frames_in_mem: a.max_frames_in_mem,
            ..Default::default()
        },
    };
    let summary = tamrt::tracker::run_track_job(&job, &backend)?;
    println!("{}", summary.text());
    for ch in backend.choices() {
        println!("{:<18} {:<8} {}", ch.component.name(), ch.backend, ch.reason);
    }
    Ok(())
}

fn run_eval(
    opts: &tamrt::eval::EvalOptions,
    json: Option<&std::path::Path>,
    csv: Option<&std::path::Path>,
) -> Result<()> {
    let t = std::time::Instant::now();
    let report = tamrt::eval::evaluate(opts).context("evaluation failed")?;
    print!("{}", tamrt::eval::text_tables(&report));
    println!("({} format, {:.2} s)", report.format.name(), t.elapsed().as_secs_f64());
    if let Some(p) = json {
        tamrt::eval::write_atomic(p, tamrt::eval::json_string(&report).as_bytes())?;
    }
    if let Some(p) = csv {
        tamrt::eval::write_atomic(p, tamrt::eval::csv_string(&report).as_bytes())?;
    }
    Ok(())
}
