#!/usr/bin/python3
"""Golden values for tests/test_tiler_seg.c from OpenCV 4.x and the CLAM
reference (tests/reference/clam_reference.py). Writes tests/golden/tiler_seg.json.

Run from the repository root: /usr/bin/python3 tests/reference/seg_reference.py

Contents: HSV saturation of random and edge-case pixels; median blur,
close and Otsu on small seeded images; findContours(RETR_CCOMP,
CHAIN_APPROX_NONE) point sequences and hierarchy on designed and random
masks; full segmentations of synthetic "slides" (a recipe the C test
re-creates bit for bit: shapes painted in order plus a hash noise) with
CLAM presets; CLAM patch grids on given level-0 contours.
"""
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clam_reference as clam  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "tiler_seg.json"))


def flat(a):
    return [int(v) for v in np.asarray(a).reshape(-1)]


def saturation_case(rng):
    px = rng.integers(0, 256, size=(3000, 3), dtype=np.uint8)
    edge = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [254, 255, 255],
                     [128, 127, 127], [200, 120, 170], [240, 238, 242], [17, 3, 250], [2, 1, 1]], np.uint8)
    px = np.concatenate([edge, px])
    hsv = cv2.cvtColor(px.reshape(1, -1, 3), cv2.COLOR_RGB2HSV)
    return {"rgb": flat(px), "s": flat(hsv[0, :, 1])}


def median_cases(rng):
    cases = []
    for (w, h, kind) in [(37, 23, "uniform"), (29, 31, "sparse"), (12, 9, "uniform"), (5, 4, "uniform")]:
        if kind == "uniform":
            img = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        else:
            img = (rng.random((h, w)) < 0.3).astype(np.uint8) * rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        outs = {str(k): flat(cv2.medianBlur(img, k)) for k in (3, 5, 7, 11)}
        cases.append({"w": w, "h": h, "in": flat(img), "out": outs})
    return cases


def otsu_cases(rng):
    hists = []
    a = np.concatenate([rng.normal(30, 10, 4000), rng.normal(180, 25, 2500)]).clip(0, 255).astype(np.uint8)
    hists.append(a)
    hists.append(rng.integers(0, 256, 5000).astype(np.uint8))
    hists.append(np.full(100, 77, np.uint8))                       # constant
    hists.append(np.array([10] * 50 + [200] * 50, np.uint8))       # two values
    hists.append(np.array([0] * 990 + [255] * 10, np.uint8))
    s = np.concatenate([np.zeros(2_000_000), [3], np.full(500_000, 40), np.full(300_000, 90)]).astype(np.uint8)
    hists.append(s)                                                # a bin below FLT_EPSILON
    hists.append(rng.normal(8, 3, 20000).clip(0, 255).astype(np.uint8))  # faint slide
    out = []
    for img in hists:
        t, _ = cv2.threshold(img.reshape(1, -1), 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
        out.append({"hist": flat(np.bincount(img, minlength=256)), "t": int(t)})
    return out


def close_cases(rng):
    cases = []
    for (w, h, d) in [(40, 30, 0.35), (17, 13, 0.6), (9, 7, 0.2)]:
        img = ((rng.random((h, w)) < d) * 255).astype(np.uint8)
        outs = {str(k): flat(cv2.morphologyEx(img, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))) for k in (2, 3, 4, 5)}
        cases.append({"w": w, "h": h, "in": flat(img), "out": outs})
    return cases


def designed_masks():
    ms = []

    def new(w, h):
        return np.zeros((h, w), np.uint8)
    m = new(20, 16)
    m[2:14, 2:18] = 1
    m[5:10, 5:9] = 0          # hole
    m[6:8, 6:8] = 1           # island in the hole
    m[11, 12:15] = 0          # thin hole
    ms.append(("ring_island", m))
    m = new(12, 10)
    m[:, :] = 1               # whole image (touches all borders)
    m[4:6, 4:7] = 0
    ms.append(("full_with_hole", m))
    m = new(15, 9)
    m[0, 0] = 1
    m[0, 14] = 1
    m[8, 0] = 1
    m[4, 7] = 1               # single pixels, corners
    m[8, 10:15] = 1           # line on the bottom border
    ms.append(("pixels_and_lines", m))
    m = new(14, 14)
    for i in range(14):
        m[i, i] = 1           # diagonal
        m[i, 13 - i] = 1
    ms.append(("diagonals", m))
    m = new(10, 8)
    m[(np.indices((8, 10)).sum(0) % 2) == 0] = 1  # checkerboard (8-connected)
    ms.append(("checker", m))
    m = new(24, 18)
    m[1:17, 1:23] = 1
    m[3:15, 3:21] = 0
    m[5:13, 5:19] = 1
    m[7:11, 7:17] = 0
    m[8:10, 9:11] = 1
    m[8, 14] = 1
    ms.append(("nested_rings", m))
    m = new(16, 12)
    m[2:10, 1:7] = 1
    m[2:10, 8:15] = 1
    m[5, 7] = 1               # bridge
    m[4:7, 3:5] = 0
    m[4:7, 10:13] = 0
    ms.append(("two_blobs_bridge", m))
    return ms


def contour_cases(rng):
    cases = []
    masks = designed_masks()
    for seed, (w, h, d) in enumerate([(24, 20, 0.3), (24, 20, 0.5), (24, 20, 0.7), (31, 17, 0.55), (40, 40, 0.62)]):
        r = np.random.default_rng(1000 + seed)
        masks.append(("random_%d" % seed, (r.random((h, w)) < d).astype(np.uint8)))
    blob = np.zeros((60, 80), np.uint8)
    cv2.circle(blob, (30, 30), 20, 1, -1)
    cv2.circle(blob, (30, 30), 8, 0, -1)
    cv2.rectangle(blob, (55, 5), (78, 50), 1, -1)
    cv2.circle(blob, (66, 20), 4, 0, -1)
    cv2.circle(blob, (66, 38), 5, 0, -1)
    masks.append(("disks", blob))
    for name, m in masks:
        h, w = m.shape
        cs, hier = cv2.findContours((m * 255).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        cases.append({"name": name, "w": w, "h": h, "in": flat(m),
                      "contours": [flat(c) for c in cs],
                      "areas": [cv2.contourArea(c) for c in cs],
                      "hierarchy": [flat(x) for x in (hier[0] if hier is not None else [])]})
    return cases


# ---- synthetic slides: the C test builds the same image from the recipe
def noise(w, h):
    x = np.arange(w, dtype=np.uint64)[None, :]
    y = np.arange(h, dtype=np.uint64)[:, None]
    M = np.uint64(0xFFFFFFFF)
    v = (x * np.uint64(374761393) + y * np.uint64(668265263)) & M
    v = ((v ^ (v >> np.uint64(13))) * np.uint64(1274126177)) & M
    return ((v >> np.uint64(16)) % np.uint64(9)).astype(np.int32) - 4


def render(recipe):
    w, h = recipe["w"], recipe["h"]
    yy, xx = np.mgrid[0:h, 0:w]
    lab = np.zeros((h, w), np.int32)
    for s in recipe["shapes"]:
        if s["type"] == "disk":
            inside = (xx - s["cx"]) ** 2 + (yy - s["cy"]) ** 2 <= s["r"] ** 2
        else:
            inside = (xx >= s["x0"]) & (xx < s["x1"]) & (yy >= s["y0"]) & (yy < s["y1"])
        lab[inside] = s["fg"]
    bg = np.array(recipe["bg"], np.int32)
    fg = np.array(recipe["fg"], np.int32)
    img = np.where(lab[:, :, None] == 1, fg, bg) + noise(w, h)[:, :, None]
    return img.clip(0, 255).astype(np.uint8)


def segment_cases():
    recipes = [
        # ds 32: one 512x512 level-0 patch = 256 seg px^2. Disk 44 units with a
        # 4.9-unit hole; rect A 77 units with holes of 2.3, 2.9, 1.7, 0.1 units
        # (max_n_holes 2 of biopsy keeps two); rect B 115 units (only one that
        # clam-default keeps) with a 13.6-unit hole (a_h 16 drops it); a 0.8-unit
        # blob (default keeps, biopsy drops) and a 0.1-unit speck (all drop).
        {"name": "disks_holes", "w": 420, "h": 260, "ds": [32.0, 32.0], "bg": [242, 240, 244], "fg": [205, 120, 175],
         "shapes": [{"type": "disk", "cx": 80, "cy": 90, "r": 60, "fg": 1},
                    {"type": "disk", "cx": 80, "cy": 90, "r": 20, "fg": 0},
                    {"type": "rect", "x0": 160, "x1": 250, "y0": 20, "y1": 240, "fg": 1},
                    {"type": "rect", "x0": 175, "x1": 200, "y0": 40, "y1": 65, "fg": 0},
                    {"type": "rect", "x0": 210, "x1": 230, "y0": 80, "y1": 120, "fg": 0},
                    {"type": "rect", "x0": 175, "x1": 197, "y0": 150, "y1": 172, "fg": 0},
                    {"type": "rect", "x0": 220, "x1": 226, "y0": 200, "y1": 206, "fg": 0},
                    {"type": "rect", "x0": 265, "x1": 412, "y0": 15, "y1": 245, "fg": 1},
                    {"type": "rect", "x0": 300, "x1": 360, "y0": 60, "y1": 120, "fg": 0},
                    {"type": "disk", "cx": 40, "cy": 200, "r": 8, "fg": 1},
                    {"type": "disk", "cx": 20, "cy": 240, "r": 3, "fg": 1}]},
        {"name": "small_biopsy", "w": 139, "h": 185, "ds": [2220 / 139, 2967 / 185], "bg": [236, 234, 238],
         "fg": [215, 170, 200],
         "shapes": [{"type": "disk", "cx": 70, "cy": 90, "r": 28, "fg": 1},
                    {"type": "rect", "x0": 40, "x1": 60, "y0": 130, "y1": 175, "fg": 1},
                    {"type": "disk", "cx": 70, "cy": 90, "r": 6, "fg": 0}]},
    ]
    cases = []
    for r in recipes:
        img = render(r)
        ds = tuple(r["ds"])
        slide_wh = (int(round(r["w"] * ds[0])), int(round(r["h"] * ds[1])))
        for preset in ("clam-default", "tcga", "biopsy", "resection", "default"):
            p = clam.PRESETS[preset]
            conts, info, mask = clam.segment(img, ds, p)
            grids = []
            for ps, kind, pad in [(256, "four_pt", True), (512, "four_pt", True), (256, "four_pt_hard", False),
                                  (256, "center", True), (384, "four_pt", False)]:
                co, _ = clam.patch_grid(conts, ps, ps, slide_wh, kind, pad, clam_quirks=False)
                grids.append({"ps": ps, "kind": kind, "padding": pad, "coords": flat(co)})
            cases.append({"recipe": r, "preset": preset, "slide_wh": list(slide_wh),
                          "mask_sum": int((mask > 0).sum()),
                          "contours": [{"outer": flat(c), "holes": [flat(hh) for hh in hs],
                                        "area_level0": i["area_level0"], "area_seg": i["area_seg"]}
                                       for (c, hs), i in zip(conts, info)],
                          "grids": grids})
    return cases


def grid_cases():
    polys = {
        "rect_hole": {"outer": [[1000, 1000], [5000, 1000], [5000, 4000], [1000, 4000]],
                      "holes": [[[2000, 2000], [3000, 2000], [3000, 3000], [2000, 3000]]]},
        "triangle": {"outer": [[6000, 500], [9000, 3500], [6000, 3500]], "holes": []},
        "lshape": {"outer": [[300, 5000], [2300, 5000], [2300, 5800], [1100, 5800], [1100, 7900], [300, 7900]],
                   "holes": []},
        "edge": {"outer": [[9000, 6000], [9999, 6000], [9999, 7999], [9000, 7999]], "holes": []},
    }
    slide_wh = (10000, 8000)
    cases = []
    tissue = [polys[k] for k in ("rect_hole", "triangle", "lshape", "edge")]
    conts = [(np.array(c["outer"], np.int32).reshape(-1, 1, 2),
              [np.array(hh, np.int32).reshape(-1, 1, 2) for hh in c["holes"]]) for c in tissue]
    for ps, step in [(256, 256), (512, 512), (300, 200), (1000, 1000), (257, 257)]:
        for kind in ("four_pt", "four_pt_hard", "center"):
            for pad in (True, False):
                co, _ = clam.patch_grid(conts, ps, step, slide_wh, kind, pad, clam_quirks=False)
                cases.append({"ps": ps, "step": step, "kind": kind, "padding": pad, "coords": flat(co)})
    return {"slide_wh": list(slide_wh), "tissue": tissue, "cases": cases}


def main():
    rng = np.random.default_rng(20240604)
    g = {"opencv": cv2.__version__,
         "saturation": saturation_case(rng),
         "median": median_cases(rng),
         "otsu": otsu_cases(rng),
         "close": close_cases(rng),
         "contours": contour_cases(rng),
         "segment": segment_cases(),
         "grid": grid_cases()}
    with open(OUT, "w") as f:
        json.dump(g, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
