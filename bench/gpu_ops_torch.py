"""PyTorch side of bench/gpu_ops.sh: reads the CASE lines of bench_gpu_ops and
times the same forward+backward (loss = output.sum(), every input requiring a
gradient) on the same GPU: fp32 with TF32 off, with TF32 on, and the conv
forward in bf16 channels-last under no_grad (autocast), as ncmi does.
Prints: TORCH <name> <ms fp32> <ms tf32> <ms bf16 or -1>."""
import os
import sys
import time

import torch
import torch.nn.functional as F


def timed(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / iters


def main():
    iters = int(sys.argv[1])
    dev = torch.device("cuda")
    # the same algorithm choice as ncmi: heuristic, or timed (NCMI_CUDNN_BENCHMARK=1)
    torch.backends.cudnn.benchmark = os.environ.get("NCMI_CUDNN_BENCHMARK", "0") not in ("", "0")
    for line in open(sys.argv[2]):
        p = line.split()
        if not p or p[0] != "CASE":
            continue
        name, kind, a = p[1], p[2], [int(v) for v in p[3:11]]
        g = torch.Generator(device="cpu").manual_seed(1)

        def rnd(*shape):
            return (torch.rand(*shape, generator=g) * 2 - 1).to(dev).requires_grad_(True)

        if kind == "conv":
            x, w, b = rnd(a[0], a[1], a[2], a[3]), rnd(a[4], a[1], a[5], a[5]), None
            f = lambda: F.conv2d(x, w, None, a[6], a[7])
        elif kind == "linear":
            x, w, b = rnd(a[0], a[1]), rnd(a[2], a[1]), rnd(a[2])
            f = lambda: F.linear(x, w, b)
        else:
            x, w, b = rnd(a[0], a[1]), rnd(a[1], a[2]), None

            f = lambda: x @ w

        def step():
            for t in (x, w, b):
                if t is not None:
                    t.grad = None
            f().sum().backward()

        res = []
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            res.append(timed(step, iters))
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if kind == "conv":
            xc = x.detach().to(memory_format=torch.channels_last)
            wc = w.detach().to(memory_format=torch.channels_last)

            def infer():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return F.conv2d(xc, wc, None, a[6], a[7]).float()

            res.append(timed(infer, iters))
        else:
            res.append(-1.0)
        print("TORCH %s %.3f %.3f %.3f" % (name, *res), flush=True)
        del x, w, b
        torch.cuda.empty_cache()
    print("TORCH_PEAK_MIB %.1f" % (torch.cuda.max_memory_allocated() / 2**20))


if __name__ == "__main__":
    main()
