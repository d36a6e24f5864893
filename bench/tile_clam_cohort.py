#!/usr/bin/python3
"""CLAM's algorithm (tests/reference/clam_reference.py) on several slides in
one Python process, as CLAM's create_patches_fp.py runs a folder: the
imports are paid once. Used by bench/tile.sh.

    bench/tile_clam_cohort.py --preset biopsy --patch-level0 P0 [P0 ...] -- SLIDE [SLIDE ...]

One patch size per slide (or one for all). Prints one line per slide:
"<slide> <n_coords> <seconds>" and "total <seconds>" (wall, imports excluded
and reported separately as "imports <seconds>")."""
import os
import sys
import time

t_start = time.time()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import clam_reference as ref  # noqa: E402  (imports cv2, numpy)
import openslide  # noqa: E402,F401

t_imports = time.time() - t_start


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    k = argv.index("--")
    opts, slides = argv[:k], argv[k + 1:]
    preset, p0s = "clam-default", []
    i = 0
    while i < len(opts):
        if opts[i] == "--preset":
            preset = opts[i + 1]
            i += 2
        elif opts[i] == "--patch-level0":
            i += 1
            while i < len(opts) and not opts[i].startswith("--"):
                p0s.append(int(opts[i]))
                i += 1
        else:
            sys.exit("unknown option " + opts[i])
    if len(p0s) == 1:
        p0s = p0s * len(slides)
    if len(p0s) != len(slides):
        sys.exit("one --patch-level0 per slide, or one for all")
    p = dict(ref.PRESETS[preset])
    print("imports %.3f" % t_imports)
    t0 = time.time()
    for s, ps in zip(slides, p0s):
        t = time.time()
        img, ds, slide_wh, _level = ref.read_slide_seg_level(s)
        contours, _info, _m = ref.segment(img, ds, p)
        coords, _ = ref.patch_grid(contours, ps, ps, slide_wh, "four_pt", use_padding=False, clam_quirks=True)
        print("%s %d %.3f" % (s, len(coords), time.time() - t))
    print("total %.3f" % (time.time() - t0))


if __name__ == "__main__":
    main()
