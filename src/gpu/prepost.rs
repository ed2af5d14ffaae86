//! Device-resident frame preprocessing and logits postprocessing (buffers kept across
//! frames, grown only; tables uploaded once per size).
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

use cudarc::driver::{CudaSlice, CudaView, PushKernelArg};

use super::device::{cfg, ensure, launch_err, Gpu, K};
use super::plan::{self, BilinearPlan, PilResizePlan};
use crate::error::{Error, ErrorKind, Result};

/// Device tables of one resize size.
struct ResizeTables {
    plan: PilResizePlan,
    xb: CudaSlice<i32>,
    xw: CudaSlice<i32>,
    yb: CudaSlice<i32>,
    yw: CudaSlice<i32>,
}

/// Frame preprocessing on the device: RGB8 `[h][w][3]` → Pillow bicubic to S×S →
/// `(x / 255 - mean) / std` planar `[3, S, S]` fp32, identical to `frames::preprocess`.
pub struct Preprocessor {
    size: usize,
    lut: CudaSlice<f32>,
    tables: Option<ResizeTables>,
    frame: Option<CudaSlice<u8>>,
    tmp: Option<CudaSlice<u8>>,
    rgb: Option<CudaSlice<u8>>,
    out: CudaSlice<f32>,
}

impl Preprocessor {
    pub fn new(gpu: &Gpu, size: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Preprocessor> {
        let lut = gpu.upload(&plan::normalize_lut(mean, std), "normalize table")?;
        let out = gpu.alloc::<f32>(3 * size * size, "preprocessed frame")?;
        Ok(Preprocessor { size, lut, tables: None, frame: None, tmp: None, rgb: None, out })
    }

    /// Upload one frame and run both passes on the stream (asynchronous; the result is
    /// [`Preprocessor::output`]). With `keep_rgb` the resized RGB8 image is kept too.
    pub fn run(&mut self, gpu: &Gpu, rgb8: &[u8], w: usize, h: usize, keep_rgb: bool) -> Result<()> {
        if rgb8.len() != w * h * 3 {
            return Err(Error::new(ErrorKind::InvalidInput, format!("frame of {w}x{h} needs {} bytes", w * h * 3)));
        }
        ensure(gpu, &mut self.frame, rgb8.len(), "frame")?;
        gpu.copy_in(rgb8, self.frame.as_mut().expect("ensured"), "frame")?;
        self.run_uploaded(gpu, w, h, keep_rgb)
    }

    /// The passes on the frame already in the device frame buffer (for timing kernels alone).
    pub fn run_uploaded(&mut self, gpu: &Gpu, w: usize, h: usize, keep_rgb: bool) -> Result<()> {
        let s = self.size;
        if self.tables.as_ref().is_none_or(|t| (t.plan.in_w, t.plan.in_h) != (w, h)) {
            let p = PilResizePlan::new(w, h, s, s)?;
            self.tables = Some(ResizeTables {
                xb: gpu.upload(&p.x_bounds, "resize tables")?,
                xw: gpu.upload(&p.x_weights, "resize tables")?,
                yb: gpu.upload(&p.y_bounds, "resize tables")?,
                yw: gpu.upload(&p.y_weights, "resize tables")?,
                plan: p,
            });
        }
        let t = self.tables.as_ref().expect("set");
        ensure(gpu, &mut self.tmp, t.plan.rows * s * 3, "resize intermediate")?;
        if keep_rgb {
            ensure(gpu, &mut self.rgb, s * s * 3, "resized frame")?;
        }
        let frame = self.frame.as_ref().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no frame uploaded"))?;
        let tmp = self.tmp.as_mut().expect("ensured");
        let (in_w, row0, rows, kx, out_w) =
            (w as i32, t.plan.row0 as i32, t.plan.rows as i32, t.plan.kx as i32, s as i32);
        let launch = plan::launch_pil_horizontal(s, t.plan.rows)?;
        // SAFETY: arguments match `pil_horizontal`'s signature; the tables have 2·S and
        // S·kx entries, `frame` holds w·h·3 bytes, `tmp` rows·S·3.
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::PilH))
                .arg(frame)
                .arg(&in_w)
                .arg(&row0)
                .arg(&rows)
                .arg(&t.xb)
                .arg(&t.xw)
                .arg(&kx)
                .arg(&out_w)
                .arg(&mut *tmp)
                .launch(cfg(launch))
                .map_err(launch_err("pil_horizontal"))?;
        }
        let (out_h, ky, write_rgb) = (s as i32, t.plan.ky as i32, i32::from(keep_rgb));
        let launch = plan::launch_plane(s, s, 1)?;
        let rgb = match self.rgb.as_mut() {
            Some(r) => r,
            None => self.rgb.insert(gpu.alloc::<u8>(1, "resized frame")?),
        };
        // SAFETY: arguments match `pil_vertical_normalize`; `out` holds 3·S·S floats,
        // `rgb` S·S·3 bytes when write_rgb is set (never written otherwise).
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::PilV))
                .arg(&*tmp)
                .arg(&out_w)
                .arg(&out_h)
                .arg(&t.yb)
                .arg(&t.yw)
                .arg(&ky)
                .arg(&self.lut)
                .arg(&mut self.out)
                .arg(&mut *rgb)
                .arg(&write_rgb)
                .launch(cfg(launch))
                .map_err(launch_err("pil_vertical_normalize"))?;
        }
        Ok(())
    }

    /// The `[3, S, S]` result on the device (the image encoder's input).
    pub fn output(&self) -> &CudaSlice<f32> {
        &self.out
    }

    pub fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let mut v = vec![0f32; 3 * self.size * self.size];
        gpu.copy_out(&self.out, &mut v, "preprocessed frame")?;
        Ok(v)
    }

    /// The resized RGB8 image of the last `run` with `keep_rgb`.
    pub fn download_rgb(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let rgb = self
            .rgb
            .as_ref()
            .filter(|r| r.len() >= 3 * self.size * self.size)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no resized RGB8 image kept (run with keep_rgb)"))?;
        let mut v = vec![0u8; 3 * self.size * self.size];
        gpu.copy_out(rgb, &mut v, "resized frame")?;
        Ok(v)
    }
}

struct BilinearTables {
    plan: BilinearPlan,
    yi: CudaSlice<i32>,
    yw: CudaSlice<f32>,
    xi: CudaSlice<i32>,
    xw: CudaSlice<f32>,
}

/// Logits postprocessing on the device: `[B, m4, m4]` low-res logits → torch bilinear to
/// the video size `[B, H, W]` → `> 0` u8 masks; only the masks (and, when asked, the
/// logits) come back to the host.
#[derive(Default)]
pub struct Postprocessor {
    tables: Option<BilinearTables>,
    low: Option<CudaSlice<f32>>,
    logits: Option<CudaSlice<f32>>,
    masks: Option<CudaSlice<u8>>,
    last: (usize, usize, usize),
}

impl Postprocessor {
    pub fn new() -> Postprocessor {
        Postprocessor::default()
    }

    /// Device buffer for `n` low-res logits (e.g. the decoder's output is copied here;
    /// with engines writing device buffers this is where they would write).
    pub fn input(&mut self, gpu: &Gpu, n: usize) -> Result<&mut CudaSlice<f32>> {
        ensure(gpu, &mut self.low, n, "low-res logits")?;
        Ok(self.low.as_mut().expect("ensured"))
    }

    /// Upload `b` planes `[in_h, in_w]` and run.
    #[allow(clippy::too_many_arguments)]
    pub fn run_host(
        &mut self,
        gpu: &Gpu,
        low: &[f32],
        b: usize,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
        keep_logits: bool,
    ) -> Result<()> {
        if low.len() != b * in_hw.0 * in_hw.1 {
            return Err(Error::new(ErrorKind::InvalidInput, "low-res logits: size is not b·h·w"));
        }
        let buf = self.input(gpu, low.len())?;
        gpu.copy_in(low, buf, "low-res logits")?;
        self.run(gpu, b, in_hw, out_hw, keep_logits)
    }

    /// Upsample + threshold the `b` planes in the input buffer (asynchronous).
    pub fn run(
        &mut self,
        gpu: &Gpu,
        b: usize,
        (in_h, in_w): (usize, usize),
        (out_h, out_w): (usize, usize),
        keep_logits: bool,
    ) -> Result<()> {
        if self
            .tables
            .as_ref()
            .is_none_or(|t| (t.plan.in_h, t.plan.in_w, t.plan.out_h, t.plan.out_w) != (in_h, in_w, out_h, out_w))
        {
            let p = BilinearPlan::new(in_h, in_w, out_h, out_w)?;
            self.tables = Some(BilinearTables {
                yi: gpu.upload(&p.y_idx, "bilinear tables")?,
                yw: gpu.upload(&p.y_w, "bilinear tables")?,
                xi: gpu.upload(&p.x_idx, "bilinear tables")?,
                xw: gpu.upload(&p.x_w, "bilinear tables")?,
                plan: p,
            });
        }
        let n_out = b * out_h * out_w;
        let low = self
            .low
            .as_ref()
            .filter(|l| l.len() >= b * in_h * in_w)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "low-res logits not in the input buffer"))?;
        ensure(gpu, &mut self.masks, n_out, "masks")?;
        ensure(gpu, &mut self.logits, if keep_logits { n_out } else { 1 }, "logits")?;
        let t = self.tables.as_ref().expect("set");
        let launch = plan::launch_plane(out_w, out_h, b)?;
        let (ih, iw, oh, ow) = (in_h as i32, in_w as i32, out_h as i32, out_w as i32);
        let (identity, write_logits) = (i32::from(t.plan.identity), i32::from(keep_logits));
        let masks = self.masks.as_mut().expect("ensured");
        let logits = self.logits.as_mut().expect("ensured");
        // SAFETY: arguments match `bilinear_threshold`; `low` holds b·in_h·in_w floats,
        // `masks` b·out_h·out_w bytes, `logits` as many floats when write_logits is set.
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::Bilinear))
                .arg(low)
                .arg(&ih)
                .arg(&iw)
                .arg(&t.yi)
                .arg(&t.yw)
                .arg(&t.xi)
                .arg(&t.xw)
                .arg(&oh)
                .arg(&ow)
                .arg(&identity)
                .arg(&mut *logits)
                .arg(&write_logits)
                .arg(&mut *masks)
                .launch(cfg(launch))
                .map_err(launch_err("bilinear_threshold"))?;
        }
        self.last = (b, out_h, out_w);
        Ok(())
    }

    /// The logits buffer (written by runs with `keep_logits`; at least as long as the
    /// last run's output).
    pub fn logits(&self) -> Option<&CudaSlice<f32>> {
        self.logits.as_ref()
    }

    /// The masks of the last run, `[B, H, W]` 0/1 (waits for the stream).
    pub fn download_masks(&self, gpu: &Gpu, out: &mut Vec<u8>) -> Result<()> {
        let (b, h, w) = self.last;
        out.resize(b * h * w, 0);
        let m = self.masks.as_ref().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no postprocessing run"))?;
        gpu.copy_out(m, out, "masks")
    }

    /// The logits of the last run with `keep_logits` (for `--save-logits`).
    pub fn download_logits(&self, gpu: &Gpu, out: &mut Vec<f32>) -> Result<()> {
        let (b, h, w) = self.last;
        let l = self
            .logits
            .as_ref()
            .filter(|l| l.len() >= b * h * w)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "logits were not kept (run with keep_logits)"))?;
        out.resize(b * h * w, 0.0);
        gpu.copy_out(l, out, "logits")
    }
}

/// `fill_holes_in_mask_scores` on the device (`fill_holes_bounded`): `b` planes `[h, w]`
/// of `src` into `dst` (asynchronous); `max_area` at most [`plan::HOLE_MAX`].
#[allow(clippy::too_many_arguments)]
pub fn fill_holes(
    gpu: &Gpu,
    src: &CudaView<f32>,
    dst: &mut CudaSlice<f32>,
    b: usize,
    h: usize,
    w: usize,
    max_area: usize,
) -> Result<()> {
    if max_area > plan::HOLE_MAX || src.len() < b * h * w || dst.len() < b * h * w {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("hole filling of {b}x{h}x{w} (area {max_area}, at most {}): wrong sizes", plan::HOLE_MAX),
        ));
    }
    if b * h * w == 0 {
        return Ok(());
    }
    let (hi, wi, ai) = (h as i32, w as i32, max_area as i32);
    // SAFETY: arguments match `fill_holes_bounded`; both buffers hold b·h·w floats and the
    // grid covers exactly the planes (threads outside w × h return).
    unsafe {
        gpu.stream()
            .launch_builder(gpu.func(K::FillHoles))
            .arg(src)
            .arg(dst)
            .arg(&hi)
            .arg(&wi)
            .arg(&ai)
            .launch(cfg(plan::launch_plane(w, h, b)?))
            .map_err(launch_err("fill_holes_bounded"))?;
    }
    Ok(())
}
