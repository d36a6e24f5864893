"""The shapes of bench/ops.c in PyTorch (CPU, 2 threads): prints "name ms"
(median of a few runs after one warm-up), forward and forward+backward."""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
only = sys.argv[2] if len(sys.argv) > 2 else None

# name, kind, x, w, stride, pad, x requires grad, runs (0: default)
CASES = [
    ("linear_8000x1024_512", "linear", (8000, 1024), (512, 1024), 0, 0, True, 0),
    ("conv1_7x7s2_3_64_224", "conv", (32, 3, 224, 224), (64, 3, 7, 7), 2, 3, False, 3),
    ("l1_3x3_64_64_56", "conv", (32, 64, 56, 56), (64, 64, 3, 3), 1, 1, True, 0),
    ("l1_1x1_64_256_56", "conv", (32, 64, 56, 56), (256, 64, 1, 1), 1, 0, True, 0),
    ("l2_3x3_128_128_28", "conv", (32, 128, 28, 28), (128, 128, 3, 3), 1, 1, True, 0),
    ("l2_3x3s2_128_128_56", "conv", (32, 128, 56, 56), (128, 128, 3, 3), 2, 1, True, 0),
    ("l3_1x1_1024_256_14", "conv", (32, 1024, 14, 14), (256, 1024, 1, 1), 1, 0, True, 0),
    ("bn_64_56", "bn", (32, 64, 56, 56), None, 0, 0, True, 0),
    ("maxpool_3x3s2_64_112", "maxpool", (32, 64, 112, 112), None, 0, 0, True, 3),
]


def run(name, kind, xs, ws, stride, pad, xg, n):
    g = torch.Generator().manual_seed(42)
    x = (torch.rand(xs, generator=g) * 2 - 1).requires_grad_(xg)
    if kind == "linear":
        w = ((torch.rand(ws, generator=g) * 2 - 1) * 0.03).requires_grad_()
        b = ((torch.rand(ws[0], generator=g) * 2 - 1) * 0.1).requires_grad_()
        f = lambda: F.linear(x, w, b)
    elif kind == "conv":
        w = ((torch.rand(ws, generator=g) * 2 - 1) * 0.05).requires_grad_()
        f = lambda: F.conv2d(x, w, None, stride, pad)
    elif kind == "bn":
        C = xs[1]
        gm = torch.rand(C, generator=g).requires_grad_()
        bt = torch.rand(C, generator=g).requires_grad_()
        rm, rv = torch.zeros(C), torch.ones(C)
        f = lambda: F.batch_norm(x, rm, rv, gm, bt, True, 0.1, 1e-5)
    else:
        f = lambda: F.max_pool2d(x, 3, 2, 1)
    up = None
    fwd, tot = [], []
    for it in range(-1, n):
        t0 = time.perf_counter()
        y = f()
        t1 = time.perf_counter()
        if up is None:
            up = torch.rand(y.shape, generator=g) * 2 - 1
        y.backward(up)
        t2 = time.perf_counter()
        del y
        if it >= 0:
            fwd.append((t1 - t0) * 1e3)
            tot.append((t2 - t0) * 1e3)
    fwd.sort()
    tot.sort()
    print("%s_fwd %.2f" % (name, fwd[n // 2]))
    print("%s_fwdbwd %.2f" % (name, tot[n // 2]), flush=True)


with torch.no_grad():
    pass
for c in CASES:
    if only is None or only in c[0]:
        run(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7] or runs)
