#!/usr/bin/python3
"""Writes tests/golden/optim_reference.safetensors: torch.optim results that
tests/test_optim.c compares against (tests optim_golden_torch,
clip_grad_norm_golden_torch, lr_schedules_golden_torch).

Optimizers: two parameters p0 [3,4] and p1 [5] start from "init.p0",
"init.p1"; step s (0..4) uses gradients "grad.p0.s", "grad.p1.s". Each
variant V (hyper-parameters in __metadata__ "optim.V" as
"kind lr momentum weight_decay nesterov beta1 beta2 eps", all float32
values printed with 9 significant digits so C reads back the same floats)
gives "V.p0", "V.p1" after 5 steps and its state "V.p0.state1" (momentum
buffer / exp_avg), "V.p0.state2" (exp_avg_sq).

Clipping: "clip.V.g0", "clip.V.g1" before and "clip.V.out0", "clip.V.out1"
after torch.nn.utils.clip_grad_norm_, metadata "clip.V" = "max_norm norm".

Schedules: "lr.V" = lr at t = 0, 1, ..., as torch's schedulers step one
epoch at a time; metadata "lr.V" = "kind base min total warmup gamma m1 m2 ...".
"""
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "optim_reference.safetensors")


def f32(x):
    return float(np.float32(x))


from common import st_write as write_safetensors  # noqa: E402  (shared numpy writer)


def g(x):
    return "%.9g" % x


def main():
    torch.manual_seed(0)
    T, M = {}, {}
    init = [torch.randn(3, 4), torch.randn(5)]
    grads = [[torch.randn(3, 4), torch.randn(5)] for _ in range(5)]
    T["init.p0"], T["init.p1"] = init
    for s in range(5):
        T["grad.p0.%d" % s], T["grad.p1.%d" % s] = grads[s]

    variants = {
        "sgd_plain": ("sgd", 0.1, 0.0, 0.0, 0, 0, 0, 0),
        "sgd_wd": ("sgd", 0.05, 0.0, 0.01, 0, 0, 0, 0),
        "sgd_momentum": ("sgd", 0.1, 0.9, 0.0, 0, 0, 0, 0),
        "sgd_momentum_wd": ("sgd", 0.1, 0.9, 5e-4, 0, 0, 0, 0),
        "sgd_nesterov_wd": ("sgd", 0.03, 0.9, 1e-3, 1, 0, 0, 0),
        "adamw_default": ("adamw", 1e-3, 0, 1e-2, 0, 0.9, 0.999, 1e-8),
        "adamw_wd": ("adamw", 0.02, 0, 0.1, 0, 0.8, 0.99, 1e-6),
        "adamw_nowd": ("adamw", 0.1, 0, 0.0, 0, 0.5, 0.9, 1e-3),
        "adam_l2": ("adam", 5e-4, 0, 5e-3, 0, 0.9, 0.999, 1e-8),
        "adam_l2_big": ("adam", 0.02, 0, 0.5, 0, 0.8, 0.99, 1e-6),
    }
    for name, (kind, lr, mom, wd, nest, b1, b2, eps) in variants.items():
        lr, mom, wd, b1, b2, eps = map(f32, (lr, mom, wd, b1, b2, eps))
        ps = [p.clone().requires_grad_(True) for p in init]
        if kind == "sgd":
            opt = torch.optim.SGD(ps, lr=lr, momentum=mom, weight_decay=wd, nesterov=bool(nest))
        elif kind == "adam":
            opt = torch.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        else:
            opt = torch.optim.AdamW(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        for s in range(5):
            for p, gr in zip(ps, grads[s]):
                p.grad = gr.clone()
            opt.step()
        M["optim." + name] = " ".join([kind] + [g(v) for v in (lr, mom, wd)] + [str(nest)] +
                                      [g(v) for v in (b1, b2, eps)])
        for i, p in enumerate(ps):
            T["%s.p%d" % (name, i)] = p
            st = opt.state[p]
            if kind == "sgd" and mom != 0:
                T["%s.p%d.state1" % (name, i)] = st["momentum_buffer"]
            if kind in ("adamw", "adam"):
                T["%s.p%d.state1" % (name, i)] = st["exp_avg"]
                T["%s.p%d.state2" % (name, i)] = st["exp_avg_sq"]

    for name, scale, max_norm in (("clipped", 3.0, 1.0), ("unclipped", 0.1, 5.0)):
        gs = [torch.randn(3, 4) * scale, torch.randn(5) * scale]
        ps = [torch.zeros_like(x, requires_grad=True) for x in gs]
        for p, gr in zip(ps, gs):
            p.grad = gr.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        T["clip.%s.g0" % name], T["clip.%s.g1" % name] = gs
        T["clip.%s.out0" % name], T["clip.%s.out1" % name] = ps[0].grad, ps[1].grad
        M["clip." + name] = "%s %s" % (g(max_norm), g(float(norm)))

    def run_sched(make, n, base):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=base)
        sched = make(opt)
        lrs = []
        for _ in range(n):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return torch.tensor(lrs, dtype=torch.float64)

    S = torch.optim.lr_scheduler
    tiny = 1e-9  # LinearLR needs start_factor > 0; ncmi's warm-up starts at 0
    scheds = {
        "multistep": ("multistep 0.1 0 0 0 0.1 3 6 8",
                      lambda o: S.MultiStepLR(o, [3, 6, 8], 0.1), 11, 0.1),
        "cosine": ("cosine 0.1 0.001 10 0 1",
                   lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 11, 0.1),
        "warmup_cosine": ("cosine 0.5 0 8 3 1",
                          lambda o: S.SequentialLR(o, [S.LinearLR(o, tiny, 1.0, total_iters=3),
                                                       S.CosineAnnealingLR(o, T_max=8)], [3]),
                          12, 0.5),
        "warmup_multistep": ("multistep 0.2 0 0 2 0.5 2 5",
                             lambda o: S.SequentialLR(o, [S.LinearLR(o, tiny, 1.0, total_iters=2),
                                                          S.MultiStepLR(o, [2, 5], 0.5)], [2]),
                             10, 0.2),
        "constant_warmup": ("constant 0.01 0 0 4 1",
                            lambda o: S.SequentialLR(o, [S.LinearLR(o, tiny, 1.0, total_iters=4),
                                                         S.ConstantLR(o, 1.0, total_iters=0)], [4]),
                            7, 0.01),
    }
    import warnings
    warnings.simplefilter("ignore")
    for name, (desc, make, n, base) in scheds.items():
        T["lr." + name] = run_sched(make, n, base)
        M["lr." + name] = desc

    write_safetensors(OUT, T, M)
    print("wrote", os.path.relpath(OUT), len(T), "tensors")


if __name__ == "__main__":
    main()
