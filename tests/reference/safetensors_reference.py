#!/usr/bin/python3
"""Writes tests/golden/safetensors_reference.safetensors with a hand-rolled
safetensors writer (the `safetensors` package is not available here), read
back by tests/test_safetensors.c (test st_reads_python_file,
st_f16_bf16_match_torch).

Contents:
  f32      F32  [2,3]   0..5 / 4
  f16      F16  [4]     [1, -2.5, 65504, 2**-24]
  bf16     BF16 [2,2]   [1, -3, 0.15625, 1e30] (as torch rounds them)
  i64      I64  [3]     [-1, 2**40 + 3, 7]
  i32      I32  [2]     [-5, 123456]
  scalar   F32  []      3.5
  empty    F32  [0,4]
  conv.in  F32  [N]     tricky float32 values (halfway cases, subnormals,
                        overflow, inf, nan, signed zeros, random bit patterns)
  conv.f16 F16  [N]     torch's conversion of conv.in to float16
  conv.bf16 BF16 [N]    torch's conversion of conv.in to bfloat16
__metadata__: {"format": "pt", "note": "written by safetensors_reference.py",
               "unicode": "µm ✓"}
Keys are written in a different order than their data, and the header is
padded with spaces to a multiple of 8 as the reference implementation does.
"""
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "safetensors_reference.safetensors")

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through int16 bits
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, metadata, data_order=None):
    names = list(tensors.keys())
    data_order = data_order or names
    header, blobs, off = {}, [], 0
    for name in data_order:
        b = tensor_bytes(tensors[name])
        header[name] = {"dtype": DTYPES[tensors[name].dtype],
                        "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    ordered = {"__metadata__": metadata}
    for name in names:  # header key order differs from data order
        ordered[name] = header[name]
    h = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def tricky_floats():
    rng = np.random.RandomState(1234)
    vals = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 65536.0, 1e10, -1e10,
            float("inf"), float("-inf"), float("nan"), 2.0 ** -14, 2.0 ** -24, 2.0 ** -25,
            2.0 ** -25 * 1.0000001, 2.0 ** -26, 1e-8, 1e-45, 3.4028235e38, 1.1754944e-38,
            0.1, 1.0 / 3.0, 2049.0, 2051.0, 4097.0, 1.00048828125, 1.00146484375]
    bits = []
    # random float16 values, +- half an ulp and +- a bit more: rounding ties and near-ties
    h = rng.randint(0, 0x7C00, size=400).astype(np.uint16)
    hv = h.view(np.float16).astype(np.float64)
    nxt = (h + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = (hv + nxt) / 2
    for m, x in zip(mid, hv):
        vals += [float(m), -float(m), float(np.nextafter(np.float32(m), np.float32(np.inf))),
                 float(np.nextafter(np.float32(m), np.float32(0)))]
    # random float32 bit patterns over the interesting exponent range, and bf16 ties
    e = rng.randint(100, 145, size=600).astype(np.uint32)
    m = rng.randint(0, 1 << 23, size=600).astype(np.uint32)
    s = rng.randint(0, 2, size=600).astype(np.uint32)
    bits += list((s << 31) | (e << 23) | m)
    m2 = (rng.randint(0, 1 << 7, size=100).astype(np.uint32) << 16) | 0x8000
    e2 = rng.randint(1, 254, size=100).astype(np.uint32)
    bits += list((e2 << 23) | m2)
    out = np.array(vals, dtype=np.float32)
    out = np.concatenate([out, np.array(bits, dtype=np.uint32).view(np.float32)])
    return torch.from_numpy(out)


def main():
    conv = tricky_floats()
    tensors = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
        "f16": torch.tensor([1.0, -2.5, 65504.0, 2.0 ** -24], dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -3.0], [0.15625, 1e30]], dtype=torch.bfloat16),
        "i64": torch.tensor([-1, 2 ** 40 + 3, 7], dtype=torch.int64),
        "i32": torch.tensor([-5, 123456], dtype=torch.int32),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "conv.in": conv,
        "conv.f16": conv.to(torch.float16),
        "conv.bf16": conv.to(torch.bfloat16),
    }
    meta = {"format": "pt", "note": "written by safetensors_reference.py", "unicode": "µm ✓"}
    order = ["conv.bf16", "i64", "f16", "empty", "conv.in", "scalar", "f32", "bf16", "i32", "conv.f16"]
    write_safetensors(OUT, tensors, meta, data_order=order)
    print("wrote", os.path.relpath(OUT), conv.numel(), "conversion values")


if __name__ == "__main__":
    main()
