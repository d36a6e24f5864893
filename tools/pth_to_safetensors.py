#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth/.pt) to safetensors for ncmi.

    python3 tools/pth_to_safetensors.py resnet50-0676ba61.pth resnet50.safetensors

Accepts a plain state_dict, a dict holding one under 'state_dict' or 'model',
or a pickled nn.Module. Names are kept as they are (torchvision's
state_dict names are what `ncmi features --weights` expects); a leading
'module.' (DataParallel) is dropped. Tensors are written in their own dtype
(float32 for torchvision's ImageNet weights; num_batches_tracked int64).
Needs python3-torch only (no safetensors package): the format is an
8-byte little-endian header length, a JSON header, then the raw data.
Nothing is downloaded: get the .pth file yourself (torchvision's URL for
ResNet-50 v1 is in torchvision/models/resnet.py, ResNet50_Weights.IMAGENET1K_V1).
"""
import json
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL"}


def state_dict_of(obj, path):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit("%s: no state_dict found (a dict of tensors, or one under 'state_dict'/'model')" % path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 1
    src, dst = sys.argv[1], sys.argv[2]
    try:
        obj = torch.load(src, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise SystemExit("%s: cannot load with torch.load: %s" % (src, e))
    sd = state_dict_of(obj, src)
    header, blobs, off = {}, [], 0
    for name, t in sd.items():
        if name.startswith("module."):
            name = name[len("module."):]
        t = t.detach().cpu().contiguous()
        if t.dtype not in DTYPES:
            raise SystemExit("%s: tensor %s has dtype %s, not supported" % (src, name, t.dtype))
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"source": os.path.basename(src), "converter": "ncmi tools/pth_to_safetensors.py"}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = dst + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, dst)
    print("%s: %d tensors, %.1f MB" % (dst, len(sd), off / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
