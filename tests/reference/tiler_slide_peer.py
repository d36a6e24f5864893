#!/usr/bin/python3
"""Python peers for tests/test_tiler_slide.c (run from the repo root).

  tiler_slide_peer.py h5check FILE           coords file as h5py sees it (JSON)
  tiler_slide_peer.py clam FILE int32|int64  write a CLAM-style coords file
  tiler_slide_peer.py trident FILE           write a TRIDENT-style *_patches.h5
  tiler_slide_peer.py slide FILE             OpenSlide's view of a slide (JSON)
  tiler_slide_peer.py region FILE X Y LEVEL W H OUT
                                             read_region composited onto white, raw RGB to OUT
"""
import json
import sys


def h5check(path):
    import h5py
    import numpy as np
    with h5py.File(path, "r") as f:
        d = f["coords"]
        out = {"dtype": str(d.dtype), "shape": list(d.shape), "maxshape": [m if m is not None else -1 for m in d.maxshape],
               "coords": d[:].tolist(), "attrs": {}}
        for k, v in d.attrs.items():
            if isinstance(v, np.ndarray):
                out["attrs"][k] = {"type": "ndarray", "dtype": str(v.dtype), "shape": list(v.shape), "value": v.tolist()}
            elif isinstance(v, np.generic):
                out["attrs"][k] = {"type": type(v).__name__, "value": v.item()}
            else:
                out["attrs"][k] = {"type": type(v).__name__, "value": v}
    print(json.dumps(out, sort_keys=True))


def clam(path, dtype):
    """As CLAM's save_hdf5 / process_contours write it (h5py, attrs from Python values)."""
    import h5py
    import numpy as np
    coords = np.array([[0, 0], [512, 0], [1024, 512], [2048, 1536]], dtype=dtype)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=(1, 2))
        d.attrs["patch_size"] = 256
        d.attrs["patch_level"] = 1
        d.attrs["downsample"] = (2.0, 2.0)
        d.attrs["downsampled_level_dim"] = np.array((1110, 1484))
        d.attrs["level_dim"] = np.array((1110, 1484))
        d.attrs["name"] = "cmu-1"
        d.attrs["save_path"] = "/tmp/patches"


def trident(path):
    """As TRIDENT's save_h5 (coords int64; magnification-based attrs; fixed-length name)."""
    import h5py
    import numpy as np
    coords = np.array([[0, 0], [896, 0], [0, 896]], dtype=np.int64)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_size"] = 224
        d.attrs["patch_size_level0"] = 896
        d.attrs["level0_magnification"] = 40
        d.attrs["target_magnification"] = 10
        d.attrs["overlap"] = 0
        d.attrs["name"] = np.bytes_(b"TCGA-XX")
        d.attrs["savetodir"] = "/tmp/out"
        d.attrs["level0_width"] = 40000
        d.attrs["level0_height"] = 30000


def slide(path):
    import openslide
    s = openslide.OpenSlide(path)
    p = s.properties
    print(json.dumps({"levels": s.level_count, "dims": [list(d) for d in s.level_dimensions],
                      "downsamples": list(s.level_downsamples), "vendor": p.get("openslide.vendor"),
                      "xres": p.get("tiff.XResolution"), "unit": p.get("tiff.ResolutionUnit"),
                      "mpp_x": p.get("openslide.mpp-x")}, sort_keys=True))


def region(path, x, y, level, w, h, out):
    import numpy as np
    import openslide
    s = openslide.OpenSlide(path)
    a = np.asarray(s.read_region((int(x), int(y)), int(level), (int(w), int(h))), dtype=np.float64)
    alpha = a[..., 3:4] / 255.0
    rgb = np.clip(np.rint(a[..., :3] * alpha + 255.0 * (1 - alpha)), 0, 255).astype(np.uint8)
    open(out, "wb").write(rgb.tobytes())


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"h5check": h5check, "clam": clam, "trident": trident, "slide": slide, "region": region}[cmd](*args)
