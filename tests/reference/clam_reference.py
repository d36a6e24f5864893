#!/usr/bin/python3
"""CLAM's tissue segmentation and patch grid, in Python with OpenCV + numpy.

A re-statement of CLAM's algorithm (create_patches_fp.py, WholeSlideImage.
segmentTissue / _filter_contours / process_contour, util_classes
isInContourV3_Easy / V3_Hard / V2, isInHoles), written for ncmi as the peer
that `ncmi tile` (tiler/seg.c, tiler/grid.c) is compared and benchmarked
against. Steps:

  segmentation level: the level nearest a 64x downsample
      (openslide get_best_level_for_downsample(64)), level 0 if one level;
      level downsample = (w0 / w, h0 / h) unless it equals the reported one;
  RGBA region -> cv2.cvtColor(RGB2HSV) -> saturation -> cv2.medianBlur(mthresh)
      -> cv2.threshold(sthresh, BINARY) or Otsu -> close with ones((close,close))
  cv2.findContours(RETR_CCOMP, CHAIN_APPROX_NONE); for each contour without a
      parent: area = contourArea - sum(hole areas); skip 0; keep if
      a_t * int(512^2 / (ds_x ds_y)) < area; holes sorted by area (desc),
      first max_n_holes, kept if area > a_h * int(512^2 / (ds_x ds_y))
  contours and holes scaled to level 0 with an int32 cast (truncation)
  per contour: boundingRect, candidates x-major over [x0, x0+w) x [y0, y0+h)
      (use_padding) or clipped at slide - patch + 1, step; check
      (four_pt: any of centre +- patch//2//2 has pointPolygonTest >= 0,
      four_pt_hard: all, center: centre), reject when the centre
      pt + patch/2 is strictly inside a kept hole.
  CLAM quirks (on by default, --no-clam-quirks turns them off to get ncmi's
      documented semantics): a contour with a single patch yields nothing
      (`if len(results) > 1`), and coordinates found by two contours are kept twice.

Modes (run from the repository root):
  --image IMG --ds DX [DY]                  an RGB image at downsample DX, DY
  --slide PATH                              a slide through openslide-python, as CLAM reads it
  --contours JSON                           level-0 contours given (grid only)
Common: --preset NAME (or the individual parameters), --patch-level0 N,
  --step-level0 N (default: patch), --contour-fn four_pt|four_pt_hard|center,
  --no-padding, --slide-wh W H (image mode: level-0 size, default image * ds),
  --out JSON (default stdout), --points (also write contour point lists).
"""
import argparse
import json
import sys
import time

import cv2
import numpy as np

PRESETS = {
    # use_otsu, sthresh, mthresh, close, a_t, a_h, max_n_holes
    "clam-default": dict(use_otsu=False, sthresh=8, mthresh=7, close=4, a_t=100, a_h=16, max_n_holes=8),
    "tcga": dict(use_otsu=False, sthresh=8, mthresh=7, close=4, a_t=16, a_h=4, max_n_holes=8),
    "biopsy": dict(use_otsu=False, sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2),
    "resection": dict(use_otsu=False, sthresh=15, mthresh=11, close=4, a_t=100, a_h=16, max_n_holes=8),
    # ncmi's robust default (tiler/seg.c explains the choice)
    "default": dict(use_otsu=2, sthresh=8, mthresh=7, close=4, a_t=0.25, a_h=1, max_n_holes=8),
}
PRESETS["bwh_biopsy"] = PRESETS["biopsy"]
PRESETS["bwh_resection"] = PRESETS["resection"]


def tissue_mask(rgb, p):
    """Binary mask (0/255) after saturation, median, threshold and close."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2HSV)
    sat = cv2.medianBlur(np.ascontiguousarray(hsv[:, :, 1]), int(p["mthresh"]))
    if p["use_otsu"]:
        t, m = cv2.threshold(sat, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
        if p["use_otsu"] == 2 and t < p["sthresh"]:  # ncmi default: Otsu floored at sthresh
            _, m = cv2.threshold(sat, int(p["sthresh"]), 255, cv2.THRESH_BINARY)
    else:
        _, m = cv2.threshold(sat, int(p["sthresh"]), 255, cv2.THRESH_BINARY)
    if p["close"] > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((int(p["close"]), int(p["close"])), np.uint8))
    return m


def segment(rgb, ds, p):
    """segmentTissue on an RGB(A) array at level downsample ds = (dx, dy).
    Returns (list of (contour, [holes]) in level-0 int32 coordinates,
    per-contour info dicts, mask)."""
    m = tissue_mask(rgb, p)
    ref_area = int(512 ** 2 / (ds[0] * ds[1]))
    a_t = p["a_t"] * ref_area
    a_h = p["a_h"] * ref_area
    contours, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out, info = [], []
    if hier is None:
        return out, info, m
    parent = hier[0][:, 3]
    for ci in np.flatnonzero(parent == -1):
        holes = list(np.flatnonzero(parent == ci))
        hole_areas = [cv2.contourArea(contours[h]) for h in holes]
        a = cv2.contourArea(contours[ci]) - float(np.array(hole_areas).sum())
        if a == 0 or not (a_t < a):
            continue
        hs = sorted((contours[h] for h in holes), key=cv2.contourArea, reverse=True)[: p["max_n_holes"]]
        hs = [h for h in hs if cv2.contourArea(h) > a_h]
        scale = np.array(ds, dtype=np.float64)
        c0 = np.array(contours[ci] * scale, dtype="int32")
        h0 = [np.array(h * scale, dtype="int32") for h in hs]
        out.append((c0, h0))
        info.append(dict(area_seg=a, area_outer_seg=cv2.contourArea(contours[ci]),
                         hole_areas_seg=[cv2.contourArea(h) for h in hs],
                         n_points=int(len(contours[ci])),
                         area_level0=cv2.contourArea(c0) - sum(cv2.contourArea(h) for h in h0),
                         n_holes=len(h0)))
    return out, info, m


def _check_fn(cont, ps, kind):
    if kind == "center":
        def f(pt):
            c = (float(pt[0] + ps // 2), float(pt[1] + ps // 2))
            return cv2.pointPolygonTest(cont, c, False) >= 0
        return f
    shift = int(ps // 2 * 0.5)

    def pts(pt):
        cx, cy = pt[0] + ps // 2, pt[1] + ps // 2
        if shift > 0:
            return [(cx - shift, cy - shift), (cx + shift, cy + shift), (cx + shift, cy - shift), (cx - shift, cy + shift)]
        return [(cx, cy)]
    if kind == "four_pt":
        return lambda pt: any(cv2.pointPolygonTest(cont, (float(a), float(b)), False) >= 0 for a, b in pts(pt))
    if kind == "four_pt_hard":
        return lambda pt: all(cv2.pointPolygonTest(cont, (float(a), float(b)), False) >= 0 for a, b in pts(pt))
    raise ValueError(kind)


def process_contour(cont, holes, ps, step, slide_wh, kind="four_pt", use_padding=True):
    """CLAM's process_contour: coordinates (x-major) for one contour."""
    x0, y0, w, h = cv2.boundingRect(cont)
    if use_padding:
        stop_x, stop_y = x0 + w, y0 + h
    else:
        stop_x = min(x0 + w, slide_wh[0] - ps + 1)
        stop_y = min(y0 + h, slide_wh[1] - ps + 1)
    check = _check_fn(cont, ps, kind)
    res = []
    for x in range(x0, stop_x, step):
        for y in range(y0, stop_y, step):
            if not check((x, y)):
                continue
            centre = (x + ps / 2, y + ps / 2)
            if any(cv2.pointPolygonTest(hh, centre, False) > 0 for hh in holes):
                continue
            res.append((x, y))
    return res


def patch_grid(contours, ps, step, slide_wh, kind="four_pt", use_padding=True, clam_quirks=True):
    coords, seen, quirk_dropped = [], set(), 0
    for cont, holes in contours:
        r = process_contour(cont, holes, ps, step, slide_wh, kind, use_padding)
        if clam_quirks:
            if len(r) > 1:
                coords.extend(r)
            else:
                quirk_dropped += len(r)
        else:
            for xy in r:
                if xy not in seen:
                    seen.add(xy)
                    coords.append(xy)
    return coords, quirk_dropped


def read_slide_seg_level(path):
    """CLAM's WholeSlideImage: the segmentation level, its RGBA pixels and downsample."""
    import openslide
    s = openslide.OpenSlide(path)
    level = 0 if s.level_count == 1 else s.get_best_level_for_downsample(64)
    w0, h0 = s.level_dimensions[0]
    w, h = s.level_dimensions[level]
    est = (w0 / float(w), h0 / float(h))
    rep = s.level_downsamples[level]
    ds = est if est != (rep, rep) else (rep, rep)
    img = np.array(s.read_region((0, 0), level, (w, h)))
    return img, ds, (w0, h0), level


def dump_image(slide, out, mpp):
    """Whole level 0 of a (small) slide resized with cv2.INTER_AREA to about
    `mpp` um/px, written as a binary PPM; prints {"ds": [dx, dy], ...}."""
    import openslide
    s = openslide.OpenSlide(slide)
    w0, h0 = s.level_dimensions[0]
    mpp0 = float(s.properties.get("openslide.mpp-x", 0) or 0)
    if mpp0 <= 0:
        sys.exit(slide + ": no openslide.mpp-x")
    img = np.array(s.read_region((0, 0), 0, (w0, h0)).convert("RGB"))
    w = max(1, int(round(w0 * mpp0 / mpp)))
    h = max(1, int(round(h0 * mpp0 / mpp)))
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    with open(out, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h))
        f.write(np.ascontiguousarray(small).tobytes())
    print(json.dumps({"ds": [w0 / w, h0 / h], "size": [w, h], "level0": [w0, h0], "mpp0": mpp0}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--slide")
    src.add_argument("--contours")
    ap.add_argument("--ds", type=float, nargs="+")
    ap.add_argument("--preset", default="clam-default", choices=sorted(PRESETS))
    for k in ("sthresh", "mthresh", "close", "max_n_holes"):
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    for k in ("a_t", "a_h"):
        ap.add_argument("--" + k.replace("_", "-"), type=float)
    ap.add_argument("--otsu", choices=["0", "1", "2"], help="1: Otsu (CLAM), 2: Otsu floored at sthresh")
    ap.add_argument("--patch-level0", type=int, nargs="+", default=[0],
                    help="patch side(s) in level-0 px (0: no grid); with several, 'grids' lists each")
    ap.add_argument("--step-level0", type=int, default=0)
    ap.add_argument("--contour-fn", default="four_pt", choices=["four_pt", "four_pt_hard", "center"])
    ap.add_argument("--no-padding", action="store_true")
    ap.add_argument("--no-clam-quirks", action="store_true")
    ap.add_argument("--slide-wh", type=int, nargs=2)
    ap.add_argument("--points", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--dump-image", help="with --slide: write level 0 resized to --dump-mpp as PPM and exit")
    ap.add_argument("--dump-mpp", type=float, default=8.0)
    a = ap.parse_args(argv)
    if a.dump_image:
        return dump_image(a.slide, a.dump_image, a.dump_mpp)

    p = dict(PRESETS[a.preset])
    for k in ("sthresh", "mthresh", "close", "max_n_holes", "a_t", "a_h"):
        if getattr(a, k) is not None:
            p[k] = getattr(a, k)
    if a.otsu is not None:
        p["use_otsu"] = int(a.otsu)

    t0 = time.time()
    res = {"preset": a.preset, "params": p}
    if a.contours:
        with open(a.contours) as f:
            cj = json.load(f)
        contours = [(np.array(c["outer"], dtype=np.int32).reshape(-1, 1, 2),
                     [np.array(h, dtype=np.int32).reshape(-1, 1, 2) for h in c.get("holes", [])])
                    for c in cj["contours"]]
        slide_wh = tuple(a.slide_wh or cj["slide_wh"])
        info = []
    else:
        if a.slide:
            img, ds, slide_wh, level = read_slide_seg_level(a.slide)
            res["seg_level"] = level
        else:
            img = cv2.imread(a.image, cv2.IMREAD_COLOR)
            if img is None:
                sys.exit("cannot read " + a.image)
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if not a.ds:
                sys.exit("--image needs --ds")
            ds = (a.ds[0], a.ds[-1])
            slide_wh = tuple(a.slide_wh) if a.slide_wh else (int(round(img.shape[1] * ds[0])),
                                                             int(round(img.shape[0] * ds[1])))
        res["ds"] = list(ds)
        res["seg_size"] = [int(img.shape[1]), int(img.shape[0])]
        res["scaled_ref_patch_area"] = int(512 ** 2 / (ds[0] * ds[1]))
        contours, info, _ = segment(img, ds, p)
    res["slide_wh"] = list(slide_wh)
    res["seg_seconds"] = time.time() - t0
    res["contours"] = info
    if a.points:
        for i, (c, hs) in enumerate(contours):
            if i >= len(info):
                info.append({})
            info[i]["outer"] = c.reshape(-1, 2).tolist()
            info[i]["holes"] = [h.reshape(-1, 2).tolist() for h in hs]
        res["contours"] = info
    grids = []
    for ps in a.patch_level0:
        if ps <= 0:
            continue
        step = a.step_level0 or ps
        coords, dropped = patch_grid(contours, ps, step, slide_wh, a.contour_fn, not a.no_padding,
                                     not a.no_clam_quirks)
        grids.append(dict(patch_level0=ps, step_level0=step, contour_fn=a.contour_fn, use_padding=not a.no_padding,
                          clam_quirks=not a.no_clam_quirks, quirk_dropped=dropped,
                          n_coords=len(coords), coords=[[int(x), int(y)] for x, y in coords]))
    if grids:
        res.update(grids[0])
    if len(grids) > 1:
        res["grids"] = grids
    res["seconds"] = time.time() - t0
    text = json.dumps(res)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
