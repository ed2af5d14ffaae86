//! The CUDA C source of the GPU kernels (`tamrt::gpu::kernels::SOURCE`), compiled as C++
//! for the CPU with an emulation of the CUDA built-ins (tests/kernel_emu/), run with the
//! tables and launch geometry `tamrt::gpu::plan` computes, must give the CPU reference
//! functions' outputs bit for bit: Pillow resize + normalisation, bilinear + threshold,
//! bf16 conversion, the memory gather (channel-major through the shared-memory tile
//! transpose, token-major, pointers) and hole filling. This checks the kernels' indexing and arithmetic
//! without a GPU; it says nothing about NVRTC or the hardware (`tamrt gpu-check` does).
//! Needs a C++20 compiler (`$CXX`, default `c++`; g++ 12 on the CI machine).

use std::path::Path;
use std::process::Command;

use half::bf16;
use tamrt::gpu::kernels::SOURCE;
use tamrt::gpu::plan::{
    gather_table, launch_1d, launch_gather_channel_major, launch_pil_horizontal, launch_plane, normalize_lut,
    BilinearPlan, Launch, PilResizePlan, SplitMix, HOLE_MAX,
};
use tamrt::tracker::frames::normalize_resized;
use tamrt::tracker::mem_inputs::{assemble, MemLayout, ObjectSelection};
use tamrt::tracker::ops::fill_holes;
use tamrt::tracker::resize::{bilinear, pil_resize_rgb8};

fn wr<T: Copy>(dir: &Path, name: &str, v: &[T]) {
    // SAFETY: plain-old-data slices (u8, u16, i32, f32) viewed as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn meta(dir: &Path, kv: &[(&str, i64)], launches: &[(&str, Launch)]) {
    let mut s = String::new();
    for (k, v) in kv {
        s += &format!("{k} {v}\n");
    }
    for (p, ((gx, gy, gz), (bx, by, bz))) in launches {
        s += &format!("{p}gx {gx}\n{p}gy {gy}\n{p}gz {gz}\n{p}bx {bx}\n{p}by {by}\n{p}bz {bz}\n");
    }
    std::fs::write(dir.join("meta.txt"), s).unwrap();
}

fn case_dir(root: &Path, cases: &mut String, kind: &str, name: &str) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    *cases += &format!("{kind} {name}\n");
    d
}

#[test]
fn cuda_kernel_source_equals_cpu_references_under_emulation() {
    let root = std::env::temp_dir().join(format!("tamrt-kernel-emu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut cases = String::new();
    let mut rng = SplitMix(0xE11);
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);

    // frames: the gpu-check sizes (smaller S for speed), upsampling, one-axis, no-op
    for (i, &(w, h, s)) in
        [(1920, 1080, 256), (640, 480, 1024), (37, 23, 64), (64, 50, 64), (64, 64, 64)].iter().enumerate()
    {
        let d = case_dir(&root, &mut cases, "pre", &format!("pre{i}"));
        let frame = rng.bytes(w * h * 3);
        let p = PilResizePlan::new(w, h, s, s).unwrap();
        let rgb = pil_resize_rgb8(&frame, w, h, s, s);
        wr(&d, "frame", &frame);
        wr(&d, "xb", &p.x_bounds);
        wr(&d, "xw", &p.x_weights);
        wr(&d, "yb", &p.y_bounds);
        wr(&d, "yw", &p.y_weights);
        wr(&d, "lut", &normalize_lut(mean, std));
        wr(&d, "rgb", &rgb);
        wr(&d, "norm", &normalize_resized(&rgb, s, mean, std));
        let kv = [("w", w), ("s", s), ("kx", p.kx), ("ky", p.ky), ("row0", p.row0), ("rows", p.rows)];
        let kv: Vec<(&str, i64)> = kv.iter().map(|&(k, v)| (k, v as i64)).collect();
        meta(&d, &kv, &[("h", launch_pil_horizontal(s, p.rows).unwrap()), ("v", launch_plane(s, s, 1).unwrap())]);
    }

    // logits: 3 objects 256² → 480p, 1 object → 1080p, a no-op and a downsampling
    for (i, &(b, ih, iw, oh, ow)) in
        [(3, 256, 256, 480, 640), (1, 256, 256, 1080, 1920), (2, 16, 16, 16, 16), (1, 9, 7, 4, 3)].iter().enumerate()
    {
        let d = case_dir(&root, &mut cases, "bil", &format!("bil{i}"));
        let low: Vec<f32> =
            (0..b * ih * iw).map(|k| if k % 97 == 0 { 0.0 } else { rng.uniform(-20.0, 20.0) }).collect();
        let p = BilinearPlan::new(ih, iw, oh, ow).unwrap();
        let logits: Vec<f32> = low.chunks(ih * iw).flat_map(|pl| bilinear(pl, ih, iw, oh, ow)).collect();
        let mask: Vec<u8> = logits.iter().map(|&v| u8::from(v > 0.0)).collect();
        wr(&d, "low", &low);
        wr(&d, "yi", &p.y_idx);
        wr(&d, "yw", &p.y_w);
        wr(&d, "xi", &p.x_idx);
        wr(&d, "xw", &p.x_w);
        wr(&d, "logits", &logits);
        wr(&d, "mask", &mask);
        let kv = [("b", b), ("ih", ih), ("iw", iw), ("oh", oh), ("ow", ow), ("identity", usize::from(p.identity))];
        let kv: Vec<(&str, i64)> = kv.iter().map(|&(k, v)| (k, v as i64)).collect();
        meta(&d, &kv, &[("", launch_plane(ow, oh, b).unwrap())]);
    }

    // bf16: every upper half with rounding-relevant lower halves (ties, NaN, inf, overflow)
    {
        let d = case_dir(&root, &mut cases, "bf16", "bf16");
        let src: Vec<f32> = (0..=0xFFFFu32)
            .flat_map(|hi| [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF].map(|lo| f32::from_bits(hi << 16 | lo)))
            .collect();
        let want: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        let back: Vec<f32> = (0..=0xFFFFu16).map(|b| bf16::from_bits(b).to_f32()).collect();
        wr(&d, "src", &src);
        wr(&d, "want", &want);
        wr(&d, "back", &back);
        meta(&d, &[], &[("", launch_1d(src.len()).unwrap())]);
    }

    // gather: SAM 2 (channel-major 64 × 64²), EdgeTAM (token-major 512 × 64), and a small
    // channel-major layout with partial tiles and pointers split 1
    let layouts = [
        MemLayout::new(64, 256, 4096, false, 7),
        MemLayout::new(64, 256, 512, true, 7),
        MemLayout::new(16, 16, 40, false, 3),
    ];
    for (i, layout) in layouts.iter().enumerate() {
        let d = case_dir(&root, &mut cases, "gat", &format!("gat{i}"));
        let (per, c, m) = (layout.per_frame(), layout.c, layout.m);
        let slots = 10;
        let bf: Vec<Vec<bf16>> =
            (0..slots).map(|_| (0..per).map(|_| bf16::from_f32(rng.uniform(-3.0, 3.0))).collect()).collect();
        let bank: Vec<u16> = bf.iter().flatten().map(|v| v.to_bits()).collect();
        let ptr_bank: Vec<f32> = (0..slots * c).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mmpos: Vec<f32> = (0..per).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let tpos: Vec<f32> = (0..layout.num_maskmem * m).map(|_| rng.uniform(-0.1, 0.1)).collect();
        let pos_rows: Vec<f32> = (0..6 * m).map(|_| rng.uniform(-1.0, 1.0)).collect();
        // 2 objects, 3 memories and 3 pointers each, slots in any order
        let mems = vec![vec![(5, 0), (2, 1), (9, 2)], vec![(0, 0), (8, 1), (7, 2)]];
        let ptrs = vec![vec![(1, 4), (3, 0), (4, 5)], vec![(9, 2), (6, 2), (0, 1)]];
        let (table, shape) = gather_table(layout, &mems, &ptrs, 6).unwrap();
        let sel: Vec<ObjectSelection> = mems
            .iter()
            .zip(&ptrs)
            .map(|(ms, ps)| ObjectSelection {
                mems: ms.iter().map(|&(s, t)| (&bf[s][..], t)).collect(),
                ptrs: ps.iter().map(|&(s, r)| (&ptr_bank[s * c..(s + 1) * c], &pos_rows[r * m..(r + 1) * m])).collect(),
            })
            .collect();
        let want = assemble(layout, &mmpos, &tpos, &sel);
        wr(&d, "bank", &bank);
        wr(&d, "table", &table);
        for (n, v) in [
            ("ptr_bank", &ptr_bank),
            ("mmpos", &mmpos),
            ("tpos", &tpos),
            ("pos_rows", &pos_rows),
            ("memory", &want.memory),
            ("memory_pos", &want.memory_pos),
            ("ptrs", &want.ptrs),
            ("ptrs_pos", &want.ptrs_pos),
        ] {
            wr(&d, n, v);
        }
        let (mem_n, ptr_n) = (want.memory.len(), want.ptrs.len());
        let mem_launch = if layout.token_major {
            launch_1d(mem_n).unwrap()
        } else {
            launch_gather_channel_major(layout.n_tok, m, shape.b * shape.n_mem).unwrap()
        };
        let kv = [
            ("token_major", usize::from(layout.token_major)),
            ("m", m),
            ("n_tok", layout.n_tok),
            ("c", c),
            ("split", layout.split),
            ("per", per),
            ("mem_n", mem_n),
            ("ptr_n", ptr_n),
            ("ptab_off", 2 * shape.b * shape.n_mem),
        ];
        let kv: Vec<(&str, i64)> = kv.iter().map(|&(k, v)| (k, v as i64)).collect();
        meta(&d, &kv, &[("m", mem_launch), ("p", launch_1d(ptr_n).unwrap())]);
    }
    // hole filling: the decoder's low-res planes (2 objects), a dense small plane at the
    // kernel's largest area, and area 0 (no-op)
    let mut scratch = Vec::new();
    for (i, &(b, h, w, area, density)) in
        [(2, 256, 256, 8, 0.3f32), (1, 40, 30, HOLE_MAX, 0.6), (1, 16, 16, 0, 0.5)].iter().enumerate()
    {
        let d = case_dir(&root, &mut cases, "holes", &format!("holes{i}"));
        let src: Vec<f32> = (0..b * h * w)
            .map(|k| match k % 61 {
                5 => f32::NAN,
                9 => -0.0,
                _ if rng.uniform(0.0, 1.0) < density => -rng.uniform(0.0, 9.0),
                _ => rng.uniform(1e-3, 9.0),
            })
            .collect();
        let mut want = src.clone();
        for plane in want.chunks_mut(h * w) {
            fill_holes(plane, h, w, area, &mut scratch);
        }
        wr(&d, "src", &src);
        wr(&d, "want", &want);
        let kv: Vec<(&str, i64)> =
            [("b", b), ("h", h), ("w", w), ("area", area)].iter().map(|&(k, v)| (k, v as i64)).collect();
        meta(&d, &kv, &[("", launch_plane(w, h, b).unwrap())]);
    }
    std::fs::write(root.join("cases.txt"), &cases).unwrap();

    // build the harness with the kernel source as the library holds it
    let emu = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel_emu");
    std::fs::write(root.join("kernels.inc"), SOURCE).unwrap();
    let exe = root.join("harness");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-ffp-contract=off", "-pthread", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", emu.display()))
        .arg(format!("-I{}", root.display()))
        .arg(emu.join("harness.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C++20 compiler ({cxx}): {e}"));
    assert!(out.status.success(), "{cxx} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).arg(&root).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{text}");
    assert!(text.contains("EMULATION: all kernels equal the CPU references"), "{text}");
    // every case ran and compared something
    assert_eq!(
        text.lines().filter(|l| l.contains(" of ") && l.contains(" 0 of ")).count(),
        5 * 2 + 4 * 2 + 2 + 3 * 4 + 3,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
