#!/usr/bin/python3
"""Writes tests/golden/ncmi.safetensors: the NCMI loss of nn/ncmi.h computed
with a torch (float64) re-implementation of the authors' formula (repository
Linfeng-Ye/NCMI, Cifar100/NCMI_gcenter.py: Center, sigmax, pairwiseKL, the
CMI / SEP ratio), extended by the options ncmi.md specifies: Gamma with the
class prior, the ratio of means, softmax in place of sigmax, no centring, and
the Gamma floor. tests/test_ncmi.c compares (test ncmi_golden_torch).

Case V: inputs "V.z" [N,D], "V.center" [D] (the centre before the step),
"V.xi" [C,D], "V.labels" [N] (F32), "V.prior" [C] (class counts);
outputs "V.loss" [1], "V.grad_z" [N,D], "V.grad_xi" [C,D], "V.center_after"
[D]. Metadata "ncmi.V" = "N C D tau simplex gamma ratio centering training
momentum initialised floor".
"""
import itertools
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "ncmi.safetensors")


from common import st_write as write_safetensors  # noqa: E402  (shared numpy writer)


# ---- the authors' building blocks ----

def sigmax(x, dim=-1, eps=1e-8):
    s = torch.sigmoid(x)
    return s / (s.sum(dim=dim, keepdim=True) + eps)


def pairwiseKL(Log_Prob, Log_Cent_All):
    # D[a, b] = KL(P_a || C_b)
    Log_Prob = Log_Prob.unsqueeze(1)
    Log_Cent_All = Log_Cent_All.unsqueeze(0)
    return (Log_Prob.exp() * (Log_Prob - Log_Cent_All)).sum(2)


def center_update(center, initialised, feature, m):
    # Center.update: first batch sets the mean, later an EMA; detached
    mean = feature.detach().mean(dim=0)
    return mean if not initialised else m * center + (1 - m) * mean


def ncmi_loss(z, center, xi, y, tau, simplex, gamma, ratio, centering, prior, floor):
    N, C = z.shape[0], xi.shape[0]
    S = sigmax if simplex == "nsf" else (lambda x: F.softmax(x, dim=-1))
    feature = z - center if centering else z
    feature = F.normalize(feature, dim=1) / tau
    log_prob = S(feature).log()
    log_cent = S(xi).log()
    KL_div = pairwiseKL(log_prob, log_cent)             # [N,C]: KL(p_i || q_c)
    CMI = KL_div[torch.arange(N), y] + 1e-10
    KL_divs = pairwiseKL(log_cent, log_prob)            # [C,N]: KL(q_c || p_i)
    keep = torch.ones_like(KL_divs)
    keep[y, torch.arange(N)] = 0.0                      # the authors' KL_divs[labels, i] = 0
    KL_divs = KL_divs * keep
    if gamma == "classes":
        SEP = KL_divs.mean(0)                           # (1/C) sum_{c != y_i}
    else:
        pi = prior / prior.sum()
        SEP = (pi[:, None] * KL_divs).sum(0)            # sum_{c != y_i} pi_c
    if ratio == "per_sample":
        return (CMI / SEP.clamp(min=floor)).mean()
    return CMI.mean() / SEP.mean().clamp(min=floor)


def f32(t):
    return t.float().double()


def main():
    torch.manual_seed(1)
    T, M = {}, {}

    def case(name, N, C, D, tau=0.2, simplex="nsf", gamma="classes", ratio="per_sample",
             centering=1, training=0, momentum=0.9, initialised=1, floor=1e-4, xi_kind="init"):
        z = f32(torch.randn(N, D, dtype=torch.float64) * 1.5 + 0.3)
        center = f32(torch.randn(D, dtype=torch.float64) * 0.5)
        if xi_kind == "init" and D >= C:
            xi = F.pad(torch.eye(C, dtype=torch.float64), (0, D - C)) * 10 + 1e-6
            xi = f32(xi + 0.5 * torch.randn(C, D, dtype=torch.float64))
        else:
            xi = f32(torch.randn(C, D, dtype=torch.float64) * 2)
        y = torch.randint(0, C, (N,))
        if N >= C:
            y[:C] = torch.arange(C)  # every class present
        prior = torch.randint(1, 50, (C,)).double()
        c_use = center
        if training and centering:
            c_use = center_update(center, initialised, z, momentum)
        zz = z.clone().requires_grad_(True)
        xx = xi.clone().requires_grad_(True)
        loss = ncmi_loss(zz, c_use, xx, y, tau, simplex, gamma, ratio, centering, prior, floor)
        loss.backward()
        T[name + ".z"] = z
        T[name + ".center"] = center
        T[name + ".xi"] = xi
        T[name + ".labels"] = y.double()
        T[name + ".prior"] = prior
        T[name + ".loss"] = loss.detach().reshape(1)
        T[name + ".grad_z"] = zz.grad
        T[name + ".grad_xi"] = xx.grad
        T[name + ".center_after"] = c_use
        M["ncmi." + name] = "%d %d %d %.9g %s %s %s %d %d %.9g %d %.9g" % (
            N, C, D, tau, simplex, gamma, ratio, centering, training, momentum, initialised, floor)

    for simplex, gamma, ratio in itertools.product(["nsf", "softmax"], ["classes", "prior"],
                                                   ["per_sample", "of_means"]):
        case("%s_%s_%s" % (simplex, gamma, ratio), 6, 3, 5, simplex=simplex, gamma=gamma,
             ratio=ratio)
    case("n1_c2", 1, 2, 4)
    case("n1_c2_prior_of_means", 1, 2, 4, gamma="prior", ratio="of_means")
    case("d_lt_c", 5, 4, 3, xi_kind="random")
    case("d_lt_c_prior_of_means", 7, 5, 2, gamma="prior", ratio="of_means", xi_kind="random")
    case("no_centering", 6, 3, 5, centering=0)
    case("tau05_random_xi", 8, 4, 6, tau=0.5, xi_kind="random")
    case("train_ema", 4, 3, 6, training=1, momentum=0.9)
    case("train_first_batch", 5, 3, 6, training=1, initialised=0)
    case("c10_d16", 12, 10, 16, tau=0.3)
    write_safetensors(OUT, T, M)
    print("wrote", os.path.relpath(OUT), len(T), "tensors")


if __name__ == "__main__":
    main()
