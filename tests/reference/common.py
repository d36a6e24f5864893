"""Shared helpers for the golden-file generators (tests/reference/*.py).

A tiny hand-rolled safetensors writer/reader in numpy (the `safetensors`
package is not installed here). Format: 8-byte little-endian header length,
a JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}} plus
an optional "__metadata__" {str: str}, padded with spaces to a multiple of 8,
then the raw little-endian data of every tensor, in header order.

Scripts are run from the repository root (`make golden`) and write into
tests/golden/; paths here are resolved relative to this file so they also
work from any other directory.
"""
import json
import os
import struct

import numpy as np

GOLDEN_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "..", "golden"))

_DTYPES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
}
_NP = {v: k for k, v in _DTYPES.items()}


def to_numpy(x):
    """torch tensor / numpy array / number -> contiguous little-endian numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    # np.array, not np.ascontiguousarray: the latter turns 0-d arrays
    # (PyTorch's num_batches_tracked) into shape (1,)
    a = np.array(x, order="C", copy=True)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if a.dtype not in _DTYPES:
        raise TypeError("unsupported dtype %s" % a.dtype)
    return a


def st_write(path, tensors, metadata=None):
    """Write an ordered dict-like {name: array} to `path` (atomically)."""
    header = {}
    blobs = []
    off = 0
    for name, x in tensors.items():
        a = to_numpy(x)
        raw = a.tobytes(order="C")
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def st_read(path):
    """Read a safetensors file -> ({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        a = np.frombuffer(data[b:end], dtype=_NP[e["dtype"]]).reshape(e["shape"])
        out[name] = a.copy()
    return out, meta


def golden_path(name):
    return os.path.join(GOLDEN_DIR, name)


def check_roundtrip(path, tensors):
    """Read back what was written and compare bit for bit."""
    back, _ = st_read(path)
    assert list(back.keys()) == list(tensors.keys()), "names/order differ"
    for k, v in tensors.items():
        a = to_numpy(v)
        assert back[k].dtype == a.dtype and back[k].shape == a.shape, k
        assert back[k].tobytes() == a.tobytes(), k


if __name__ == "__main__":
    # `make golden` runs every script here: for this one, a self-test of the
    # writer/reader round trip (writes only to a temporary directory).
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        ts = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "b": np.array([-1, 2**40], dtype=np.int64),
              "c": np.zeros((0,), dtype=np.float32),
              "d": np.array(7, dtype=np.int64)}
        st_write(p, ts, {"k": "v"})
        check_roundtrip(p, ts)
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
        assert n % 8 == 0
        assert st_read(p)[1] == {"k": "v"}
        assert st_read(p)[0]["d"].shape == ()
    print("common.py: safetensors round trip ok")


def train_step(model, x, y, smooth):
    """Forward + backward of model(x) (a dict of named outputs with
    "out.logits") under loss = CE + CE with label smoothing `smooth`.
    Returns (outputs, losses, grads) as ordered dicts named like the golden
    files: "loss.ce", "loss.ce_smooth", "loss", "grad.<param>", "grad.x"."""
    from collections import OrderedDict

    import torch.nn.functional as F
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    o = model(x)
    ce = F.cross_entropy(o["out.logits"], y)
    ces = F.cross_entropy(o["out.logits"], y, label_smoothing=smooth)
    loss = ce + ces
    loss.backward()
    grads = OrderedDict(("grad." + n, p.grad) for n, p in model.named_parameters())
    grads["grad.x"] = x.grad
    losses = OrderedDict([("loss.ce", ce.reshape(1)), ("loss.ce_smooth", ces.reshape(1)),
                          ("loss", loss.reshape(1))])
    return o, losses, grads


def rel_err(ours, ref, floor=0.0):
    """The C golden tests' metric: max |a - b| / max(|b|, 1e-2 max|b|, floor).
    Used to check that float32 PyTorch agrees with the float64 reference."""
    a, b = ours.detach().double(), ref.detach().double()
    scale = max(1e-2 * b.abs().max().item(), floor, 1e-30)
    return ((a - b).abs() / b.abs().clamp(min=scale)).max().item()
