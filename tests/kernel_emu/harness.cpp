// Runs the CUDA C kernels of src/gpu/kernels.rs on the CPU (see prelude.h) on the inputs,
// tables and launch geometry tests/gpu_kernels_emulated.rs wrote, and compares their
// outputs bit for bit with the CPU reference outputs written beside them.
// Usage: harness DIR   (DIR/cases.txt: one "kind subdir" per line)
#include "prelude.h"
#include "kernels.inc"

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>

struct D3 {
    unsigned x, y, z;
};

static void launch(D3 g, D3 b, bool threaded, const std::function<void()>& f) {
    blockDim = {b.x, b.y, b.z};
    if (!threaded) {
        for (unsigned bz = 0; bz < g.z; ++bz)
            for (unsigned by = 0; by < g.y; ++by)
                for (unsigned bx = 0; bx < g.x; ++bx)
                    for (unsigned tz = 0; tz < b.z; ++tz)
                        for (unsigned ty = 0; ty < b.y; ++ty)
                            for (unsigned tx = 0; tx < b.x; ++tx) {
                                blockIdx = {bx, by, bz};
                                threadIdx = {tx, ty, tz};
                                f();
                            }
        return;
    }
    // one OS thread per thread of a block, walking the blocks in lockstep: a barrier
    // after each block keeps the __shared__ statics to one block at a time
    std::barrier<> bar(b.x * b.y * b.z);
    g_barrier = &bar;
    std::vector<std::thread> ts;
    for (unsigned tz = 0; tz < b.z; ++tz)
        for (unsigned ty = 0; ty < b.y; ++ty)
            for (unsigned tx = 0; tx < b.x; ++tx)
                ts.emplace_back([=, &f, &bar] {
                    threadIdx = {tx, ty, tz};
                    for (unsigned bz = 0; bz < g.z; ++bz)
                        for (unsigned by = 0; by < g.y; ++by)
                            for (unsigned bx = 0; bx < g.x; ++bx) {
                                blockIdx = {bx, by, bz};
                                f();
                                bar.arrive_and_wait();
                            }
                });
    for (auto& t : ts) t.join();
}

template <class T>
static std::vector<T> rd(const std::string& p) {
    std::ifstream f(p, std::ios::binary | std::ios::ate);
    if (!f) {
        fprintf(stderr, "missing %s\n", p.c_str());
        exit(2);
    }
    size_t n = f.tellg();
    f.seekg(0);
    std::vector<T> v(n / sizeof(T));
    f.read((char*)v.data(), n);
    return v;
}

static std::map<std::string, long long> meta(const std::string& d) {
    std::map<std::string, long long> m;
    std::ifstream f(d + "/meta.txt");
    std::string k;
    long long v;
    while (f >> k >> v) m[k] = v;
    return m;
}

static D3 d3(std::map<std::string, long long>& m, const std::string& p) {
    return {(unsigned)m[p + "x"], (unsigned)m[p + "y"], (unsigned)m[p + "z"]};
}

static int bad = 0;

template <class T>
static void check(const char* what, const std::string& d, const std::vector<T>& got, const std::vector<T>& want) {
    size_t n = 0;
    if (got.size() != want.size()) {
        n = (size_t)-1;
    } else {
        for (size_t i = 0; i < got.size(); ++i)
            if (std::memcmp(&got[i], &want[i], sizeof(T))) ++n;
    }
    printf("%-34s %-8s %zu of %zu differ\n", what, d.c_str(), n, want.size());
    if (n) bad = 1;
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    std::string root = argv[1];
    std::ifstream cases(root + "/cases.txt");
    std::string kind, sub;
    int ran = 0;
    while (cases >> kind >> sub) {
        std::string d = root + "/" + sub;
        auto m = meta(d);
        ++ran;
        if (kind == "pre") {
            auto frame = rd<unsigned char>(d + "/frame");
            auto xb = rd<int>(d + "/xb"), xw = rd<int>(d + "/xw"), yb = rd<int>(d + "/yb"), yw = rd<int>(d + "/yw");
            auto lut = rd<float>(d + "/lut");
            int w = m["w"], s = m["s"], kx = m["kx"], ky = m["ky"], row0 = m["row0"], rows = m["rows"];
            std::vector<unsigned char> tmp((size_t)rows * s * 3), rgb((size_t)s * s * 3);
            std::vector<float> out((size_t)3 * s * s);
            launch(d3(m, "hg"), d3(m, "hb"), false,
                   [&] { pil_horizontal(frame.data(), w, row0, rows, xb.data(), xw.data(), kx, s, tmp.data()); });
            launch(d3(m, "vg"), d3(m, "vb"), false, [&] {
                pil_vertical_normalize(tmp.data(), s, s, yb.data(), yw.data(), ky, lut.data(), out.data(), rgb.data(), 1);
            });
            check("pil resize (u8)", sub, rgb, rd<unsigned char>(d + "/rgb"));
            check("pil resize + normalise (f32)", sub, out, rd<float>(d + "/norm"));
        } else if (kind == "bil") {
            auto low = rd<float>(d + "/low");
            auto yi = rd<int>(d + "/yi"), xi = rd<int>(d + "/xi");
            auto yw = rd<float>(d + "/yw"), xw = rd<float>(d + "/xw");
            int b = m["b"], ih = m["ih"], iw = m["iw"], oh = m["oh"], ow = m["ow"], id = m["identity"];
            std::vector<float> logits((size_t)b * oh * ow);
            std::vector<unsigned char> mask(logits.size());
            launch(d3(m, "g"), d3(m, "b"), false, [&] {
                bilinear_threshold(low.data(), ih, iw, yi.data(), yw.data(), xi.data(), xw.data(), oh, ow, id,
                                   logits.data(), 1, mask.data());
            });
            check("bilinear logits (f32)", sub, logits, rd<float>(d + "/logits"));
            check("threshold mask (u8)", sub, mask, rd<unsigned char>(d + "/mask"));
        } else if (kind == "bf16") {
            auto src = rd<float>(d + "/src");
            std::vector<unsigned short> got(src.size());
            long long n = src.size();
            launch(d3(m, "g"), d3(m, "b"), false, [&] { f32_to_bf16_kernel(src.data(), got.data(), n); });
            check("f32 -> bf16", sub, got, rd<unsigned short>(d + "/want"));
            std::vector<float> back(65536);
            for (unsigned v = 0; v < 65536; ++v) back[v] = bf16_to_f32((unsigned short)v);
            check("bf16 -> f32", sub, back, rd<float>(d + "/back"));
        } else if (kind == "gat") {
            auto bank = rd<unsigned short>(d + "/bank");
            auto pb = rd<float>(d + "/ptr_bank"), mmpos = rd<float>(d + "/mmpos"), tpos = rd<float>(d + "/tpos");
            auto pos_rows = rd<float>(d + "/pos_rows");
            auto table = rd<int>(d + "/table");
            int tm = m["token_major"], mm = m["m"], nt = m["n_tok"], c = m["c"], split = m["split"];
            long long per = m["per"], mem_n = m["mem_n"], ptr_n = m["ptr_n"], ptab_off = m["ptab_off"];
            // poison, so that an element no thread writes shows as a difference
            std::vector<float> mem(mem_n, -777.f), memp(mem_n, -777.f), pt(ptr_n, -777.f), ptp(ptr_n, -777.f);
            if (tm)
                launch(d3(m, "mg"), d3(m, "mb"), false, [&] {
                    gather_memory_token_major(bank.data(), per, mmpos.data(), tpos.data(), table.data(), nt, mm,
                                              mem.data(), memp.data(), mem_n);
                });
            else
                launch(d3(m, "mg"), d3(m, "mb"), true, [&] {
                    gather_memory_channel_major(bank.data(), per, mmpos.data(), tpos.data(), table.data(), nt, mm,
                                                mem.data(), memp.data());
                });
            launch(d3(m, "pg"), d3(m, "pb"), false, [&] {
                gather_ptrs(pb.data(), c, pos_rows.data(), table.data() + ptab_off, split, mm, pt.data(), ptp.data(),
                            ptr_n);
            });
            check(tm ? "gather memory (token-major)" : "gather memory (channel-major)", sub, mem,
                  rd<float>(d + "/memory"));
            check("gather memory_pos", sub, memp, rd<float>(d + "/memory_pos"));
            check("gather obj_ptrs", sub, pt, rd<float>(d + "/ptrs"));
            check("gather obj_ptrs_pos", sub, ptp, rd<float>(d + "/ptrs_pos"));
        } else if (kind == "holes") {
            auto src = rd<float>(d + "/src");
            int b = m["b"], h = m["h"], w = m["w"], area = m["area"];
            std::vector<float> out((size_t)b * h * w, -777.f);
            launch(d3(m, "g"), d3(m, "b"), false,
                   [&] { fill_holes_bounded(src.data(), out.data(), h, w, area); });
            check("fill holes (f32)", sub, out, rd<float>(d + "/want"));
        } else {
            fprintf(stderr, "unknown case kind %s\n", kind.c_str());
            return 2;
        }
    }
    if (ran == 0) {
        fprintf(stderr, "no cases\n");
        return 2;
    }
    printf(bad ? "EMULATION: MISMATCHES\n" : "EMULATION: all kernels equal the CPU references\n");
    return bad;
}
