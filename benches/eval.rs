//! `tamrt eval` benchmark on a synthetic SA-V-layout dataset (default: 100 videos × 3
//! objects × 50 annotated 1920×1080 frames, ground truth + predictions, 8-bit palette PNGs
//! with values 0/1 as SAM 2's `save_ann_png` writes them).
//!
//! ```text
//! cargo bench --bench eval                      # generate (once) into target/eval-bench, then time
//! cargo bench --bench eval -- --data DIR        # another folder (generated when missing)
//! cargo bench --bench eval -- --generate-only   # just write the data
//! cargo bench --bench eval -- --videos 10 --frames 20 --width 854 --height 480 --threads 1
//! ```
//!
//! The data is deterministic (seeded). Shapes are unions of moving ellipses; predictions
//! are the ground truth's shapes shifted by a few pixels, rescaled by a few percent, now and
//! then missing (empty mask) or with a spurious blob. To time the official evaluator on the
//! same data:
//!
//! ```text
//! cd sav_dataset && python sav_evaluator.py --gt_root DIR/gt --pred_root DIR/pred -n 2
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use tamrt::eval::{evaluate, png, EvalOptions, Format};

struct Config {
    data: PathBuf,
    videos: usize,
    objects: usize,
    frames: usize,
    width: usize,
    height: usize,
    threads: usize,
    generate_only: bool,
    runs: usize,
}

fn parse_args() -> Config {
    let mut c = Config {
        data: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/eval-bench"),
        videos: 100,
        objects: 3,
        frames: 50,
        width: 1920,
        height: 1080,
        threads: 0,
        generate_only: false,
        runs: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| args.get(i + 1).cloned().unwrap_or_default();
        let num = |i: usize| val(i).parse::<usize>().unwrap_or_else(|_| panic!("{} needs a number", args[i]));
        match args[i].as_str() {
            "--data" => c.data = PathBuf::from(val(i)),
            "--videos" => c.videos = num(i),
            "--objects" => c.objects = num(i),
            "--frames" => c.frames = num(i),
            "--width" => c.width = num(i),
            "--height" => c.height = num(i),
            "--threads" => c.threads = num(i),
            "--runs" => c.runs = num(i),
            "--generate-only" => {
                c.generate_only = true;
                i += 1;
                continue;
            }
            _ => {
                // `cargo bench` passes `--bench`; ignore what we do not know.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    c
}

/// xorshift64*, deterministic per (video, object).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[derive(Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

/// Fill `buf` (width × height, zeroed here) with the union of the ellipses, row spans.
fn render(buf: &mut [u8], width: usize, height: usize, shapes: &[Ellipse]) {
    buf.fill(0);
    for e in shapes {
        let y0 = (e.cy - e.ry).floor().max(0.0) as usize;
        let y1 = ((e.cy + e.ry).ceil().max(0.0) as usize).min(height);
        for y in y0..y1 {
            let t = (y as f64 + 0.5 - e.cy) / e.ry;
            if t.abs() >= 1.0 {
                continue;
            }
            let half = e.rx * (1.0 - t * t).sqrt();
            let a = (e.cx - half).round().clamp(0.0, width as f64) as usize;
            let b = (e.cx + half).round().clamp(0.0, width as f64) as usize;
            if a < b {
                buf[y * width + a..y * width + b].fill(1);
            }
        }
    }
}

fn generate(c: &Config) {
    let t = Instant::now();
    let (w, h) = (c.width, c.height);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut gt = vec![0u8; w * h];
                let mut pred = vec![0u8; w * h];
                let palette = png::davis_palette();
                loop {
                    let v = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if v >= c.videos {
                        break;
                    }
                    for o in 0..c.objects {
                        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((v as u64) << 20 | o as u64).wrapping_mul(7919) | 1);
                        let scale = w.min(h) as f64;
                        let parts: Vec<(Ellipse, f64, f64)> = (0..3)
                            .map(|_| {
                                let e = Ellipse {
                                    cx: rng.uniform(0.2, 0.8) * w as f64,
                                    cy: rng.uniform(0.2, 0.8) * h as f64,
                                    rx: rng.uniform(0.05, 0.25) * scale,
                                    ry: rng.uniform(0.05, 0.25) * scale,
                                };
                                (e, rng.uniform(-3.0, 3.0), rng.uniform(-2.0, 2.0))
                            })
                            .collect();
                        let dirs = ["gt", "pred"]
                            .map(|k| c.data.join(k).join(format!("video_{v:03}")).join(format!("{o:03}")));
                        for d in &dirs {
                            std::fs::create_dir_all(d).expect("create data folder");
                        }
                        for f in 0..c.frames {
                            let shapes: Vec<Ellipse> = parts
                                .iter()
                                .map(|&(e, vx, vy)| Ellipse { cx: e.cx + vx * f as f64, cy: e.cy + vy * f as f64, ..e })
                                .collect();
                            render(&mut gt, w, h, &shapes);
                            let (dx, dy, s) = (rng.uniform(-6.0, 6.0), rng.uniform(-6.0, 6.0), rng.uniform(0.95, 1.05));
                            let mut pshapes: Vec<Ellipse> = shapes
                                .iter()
                                .map(|e| Ellipse { cx: e.cx + dx, cy: e.cy + dy, rx: e.rx * s, ry: e.ry * s })
                                .collect();
                            let roll = rng.uniform(0.0, 1.0);
                            if roll < 0.05 {
                                pshapes.clear();
                            } else if roll < 0.10 {
                                let e = Ellipse {
                                    cx: rng.uniform(0.0, 1.0) * w as f64,
                                    cy: rng.uniform(0.0, 1.0) * h as f64,
                                    rx: 30.0,
                                    ry: 20.0,
                                };
                                pshapes.push(e);
                            }
                            render(&mut pred, w, h, &pshapes);
                            for (d, px) in dirs.iter().zip([&gt, &pred]) {
                                let bytes = png::encode_indexed(w, h, px, &palette).expect("encode");
                                std::fs::write(d.join(format!("{f:05}.png")), bytes).expect("write PNG");
                            }
                        }
                    }
                }
            });
        }
    });
    println!(
        "generated {} videos × {} objects × {} frames ({}x{}) in {:.1} s into {}",
        c.videos,
        c.objects,
        c.frames,
        w,
        h,
        t.elapsed().as_secs_f64(),
        c.data.display()
    );
}

fn du(dir: &Path) -> (usize, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut n, mut bytes) = (0, 0);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = e.metadata().expect("metadata");
            if md.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
                bytes += md.len();
            }
        }
    }
    (n, bytes)
}

/// CPU time (user + system) of this process so far, in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let c = parse_args();
    if !c.data.join("gt").is_dir() || !c.data.join("pred").is_dir() {
        generate(&c);
    }
    if c.generate_only {
        return;
    }
    let (files, bytes) = du(&c.data);
    println!("data: {} ({files} files, {:.1} MB)", c.data.display(), bytes as f64 / 1e6);
    let mut opts = EvalOptions::new(c.data.join("pred"), c.data.join("gt"));
    opts.format = Some(Format::Sav);
    opts.threads = c.threads;
    for run in 0..c.runs {
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let r = evaluate(&opts).expect("evaluation failed");
        let (dt, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        println!(
            "run {run}: {dt:.2} s wall, {cpu:.2} s CPU  ({} objects, {} frames; J&F {:.3} J {:.3} F {:.3}; threads {})",
            r.objects.len(),
            r.objects.iter().map(|o| o.frames).sum::<usize>(),
            r.jf,
            r.j,
            r.f,
            if c.threads == 0 { "auto".to_string() } else { c.threads.to_string() }
        );
    }
}
