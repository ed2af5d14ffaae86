//! The `tamrt bench` command line (clap), kept here so that `main.rs` only dispatches.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::prompts::PromptMode;
use super::synth::SynthOptions;
use super::BenchOptions;
use crate::backend::select::BackendPref;
use crate::error::{Error, ErrorKind, Result};
use crate::eval::Format;
use crate::trt::engine_cache::Precision;

/// `tamrt bench`: run a benchmark (flags) or one of the subcommands.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub sub: Option<BenchSub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchSub {
    /// Join results files of shards (--shard K/N) into one; identical records collapse,
    /// different results for the same video are an error.
    Merge {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Two results files side by side (e.g. TensorRT vs ONNX Runtime, fp16 vs bf16), with
    /// ratios B/A.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Also write the comparison as Markdown here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rewrite the summary table, Markdown, CSV and plots of a results file.
    Report {
        results: PathBuf,
        #[arg(long)]
        mem_budget_mb: Option<f64>,
    },
    /// Write a small synthetic dataset (moving shapes with ground-truth masks).
    MakeDataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        videos: usize,
        #[arg(long, default_value_t = 12)]
        frames: usize,
        /// WIDTHxHEIGHT.
        #[arg(long, default_value = "160x120")]
        size: String,
        /// sav | davis.
        #[arg(long, default_value = "sav")]
        format: String,
        #[arg(long, default_value_t = 2)]
        objects: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// SA-V: annotate every K-th frame (default 4, less for short clips).
        #[arg(long)]
        annotate_every: Option<usize>,
    },
}

/// The benchmark's own flags.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Dataset root (SA-V: JPEGImages_24fps/ + Annotations_6fps/; DAVIS: JPEGImages/480p/ +
    /// Annotations/480p/).
    #[arg(long, required = true)]
    pub dataset: Option<PathBuf>,
    /// sav | davis (default: detected from the folders).
    #[arg(long)]
    pub format: Option<String>,
    /// Comma-separated model names (folders under --models-root) or model folder paths.
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// Where model names are looked up.
    #[arg(long, default_value = "models")]
    pub models_root: PathBuf,
    /// Results file (JSON Lines); rerunning with the same file resumes.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// mask | points | bbox, from each object's first annotated frame.
    #[arg(long, default_value = "mask")]
    pub prompt: String,
    /// Clicks per object with --prompt points.
    #[arg(long, default_value_t = 1)]
    pub num_points: usize,
    /// auto | ort | trt.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// fp32 | fp16 | bf16 (reduced precision runs on TensorRT).
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// ONNX Runtime intra-op threads (0 = its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// At most this many videos (after --videos and --shard).
    #[arg(long)]
    pub limit_videos: Option<usize>,
    /// Comma-separated video names, or a file with one per line (e.g. sav_val.txt).
    #[arg(long, value_delimiter = ',')]
    pub videos: Option<Vec<String>>,
    /// Warm-up runs per model before timing (0: load only).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// At most this many decoded frames held at once.
    #[arg(long, default_value_t = 600)]
    pub max_frames_in_mem: usize,
    /// Run shard K of N (1-based; video i of the sorted list goes to shard i % N + 1).
    #[arg(long)]
    pub shard: Option<String>,
    /// Only load and warm up the models.
    #[arg(long)]
    pub skip_inference: bool,
    /// Run again the videos whose recorded result is a failure.
    #[arg(long)]
    pub retry_failed: bool,
    /// Memory budget in MiB (e.g. 8192 for an 8 GB Jetson): the summary says which
    /// models stay within it.
    #[arg(long)]
    pub mem_budget_mb: Option<f64>,
    /// Where predictions go (default: RESULTS with extension .pred).
    #[arg(long)]
    pub pred_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Parse `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<(usize, usize)> {
    let bad = || invalid(format!("--size '{s}': expected WIDTHxHEIGHT, e.g. 128x96"));
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?))
}

impl RunArgs {
    pub fn options(&self) -> Result<BenchOptions> {
        let req = |v: &Option<PathBuf>, f: &str| v.clone().ok_or_else(|| invalid(format!("--{f} is required")));
        Ok(BenchOptions {
            dataset: req(&self.dataset, "dataset")?,
            format: self.format.as_deref().map(Format::from_name).transpose()?,
            models: self.models.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            models_root: self.models_root.clone(),
            results: req(&self.out, "out")?,
            prompt: PromptMode::parse(&self.prompt, self.num_points)?,
            backend: BackendPref::parse(&self.backend)?,
            precision: Precision::parse(&self.precision)?,
            threads: self.threads,
            videos: self.videos.clone(),
            limit_videos: self.limit_videos,
            shard: self.shard.as_deref().map(super::dataset::parse_shard).transpose()?,
            warmup: self.warmup,
            max_frames_in_mem: self.max_frames_in_mem,
            skip_inference: self.skip_inference,
            retry_failed: self.retry_failed,
            mem_budget_mb: self.mem_budget_mb,
            pred_dir: self.pred_dir.clone(),
            progress: !self.no_progress,
        })
    }
}

/// Run a `tamrt bench` command line; returns the process exit code (1 when a model or
/// video failed; the failures are listed on stderr and recorded in the results).
pub fn run(cmd: BenchCommand) -> Result<i32> {
    match cmd.sub {
        Some(BenchSub::Merge { inputs, out }) => {
            let (n, text) = super::merge_files(&inputs, &out)?;
            print!("{text}");
            println!("merged {} file(s): {n} video record(s) in '{}'", inputs.len(), out.display());
        }
        Some(BenchSub::Compare { a, b, out }) => {
            let md = super::compare_files(&a, &b)?;
            print!("{md}");
            if let Some(p) = out {
                crate::eval::write_atomic(&p, md.as_bytes())?;
            }
        }
        Some(BenchSub::Report { results, mem_budget_mb }) => {
            let (text, files) = super::write_reports(&results, mem_budget_mb)?;
            print!("{text}");
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Some(BenchSub::MakeDataset { out, videos, frames, size, format, objects, seed, annotate_every }) => {
            let (width, height) = parse_size(&size)?;
            let o = SynthOptions {
                out: out.clone(),
                format: Format::from_name(&format)?,
                videos,
                frames,
                width,
                height,
                objects,
                seed,
                annotate_every,
            };
            let names = super::synth::make_dataset(&o)?;
            println!(
                "wrote {} video(s) of {frames} frames ({width}x{height}, {} layout) to '{}'",
                names.len(),
                o.format.name(),
                out.display()
            );
        }
        None => {
            let o = cmd.run.options()?;
            let res = super::run_bench(&o)?;
            print!("{}", res.summary_text);
            println!(
                "{} video(s) run, {} already done; results in '{}'",
                res.videos_run,
                res.videos_skipped,
                o.results.display()
            );
            for f in &res.files {
                println!("wrote {}", f.display());
            }
            if !res.failures.is_empty() {
                eprintln!("{} failure(s):", res.failures.len());
                for f in &res.failures {
                    eprintln!("  {f}");
                }
                return Ok(1);
            }
        }
    }
    Ok(0)
}
