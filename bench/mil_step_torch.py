"""The PyTorch side of bench/mil_step.sh: one training step per bag of a MIL
head (forward, linear head + CE (+ the head's aux term), backward, AdamW) at
D_feat 1024 / D_inner 512, with the reference modules of tests/reference/.

    python3 bench/mil_step_torch.py HEAD N [seconds] [device]

device: cpu (default) or cuda (also from MIL_DEVICE). Prints
"torch HEAD N bags_per_s step_ms base_rss_mb peak_rss_mb peak_dev_mb" (median
step time after two warm-up steps; peak = getrusage max RSS of this process,
base = RSS after importing torch, before the bag and the model exist;
peak_dev_mb = torch.cuda.max_memory_allocated, "-" on the CPU; on cuda each
timed step ends with torch.cuda.synchronize()). 2 threads.
Exit status 3 when the head's reference module is not there, 4 when the
device cannot be used."""
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))

D_FEAT, D_INNER, C = 1024, 512, 2


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def build(head, dev):
    """model, loss_fn(x) (forward + loss, training mode), after-step hook or None,
    everything on dev."""
    if head in ("abmil", "aem"):
        from mil_ref_abmil import ABMIL, aem_term
        m = ABMIL(D_FEAT, D_INNER, C).to(dev)
        y = torch.tensor([1], device=dev)

        def loss_fn(x):
            logits, _, a = m(x)
            loss = F.cross_entropy(logits, y)
            return loss + aem_term(a, 0.1) if head == "aem" else loss
        return m, loss_fn, None
    if head == "transmil":
        # official sizes: dim 512, 8 heads, 256 landmarks, 6 pinv iterations, dropout 0.1
        from mil_ref_transmil import TransMIL
        m = TransMIL(C, d_feat=D_FEAT, dim=D_INNER).to(dev)
        y = torch.tensor([1], device=dev)
        return m, lambda x: F.cross_entropy(m(x[None]), y), None
    if head == "asmil":
        # the released code's structure (unfolded token attention): student +
        # Slide_classifier, anchor logits without gradient, KD (T 0.5), EMA 0.999
        import mil_ref_asmil as R
        student = R.ASMIL(D_FEAT, D_INNER, 8, n_heads=8, n_drop=0)
        student.Slide_classifier = torch.nn.Linear(D_INNER, C)
        anchor = R.ASMIL(D_FEAT, D_INNER, 8, n_heads=8, softmax=False)
        for p in anchor.parameters():
            p.requires_grad_(False)
        student.to(dev)
        anchor.to(dev)
        y = torch.tensor([1], device=dev)

        def loss_fn(x):
            o = student(x)
            with torch.no_grad():
                a = anchor.token_logits(x)
            loss = F.cross_entropy(student.Slide_classifier(o["z"]), y)
            return loss + R.kd_term(o["logits"], a, 0.5)
        return student, loss_fn, lambda: R.ema_update(anchor, student, 0.999)
    raise SystemExit("unknown head " + head)


def main():
    head, N = sys.argv[1], int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    dev = sys.argv[4] if len(sys.argv) > 4 else (os.environ.get("MIL_DEVICE") or "cpu")
    cuda = dev.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("mil_step_torch.py: no CUDA device for torch", file=sys.stderr)
        sys.exit(4)
    dev = torch.device(dev)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    base = rss_mb()
    try:
        m, loss_fn, after = build(head, dev)
    except ImportError as e:
        print("mil_step_torch.py: %s: %s" % (head, e), file=sys.stderr)
        sys.exit(3)
    except AttributeError as e:
        print("mil_step_torch.py: %s: %s" % (head, e), file=sys.stderr)
        sys.exit(3)
    torch.manual_seed(42)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-4, weight_decay=1e-5)
    x = torch.randn(N, D_FEAT).to(dev)
    if cuda:
        torch.cuda.synchronize()
    ms, total, it = [], 0.0, -2
    while len(ms) < 5 or total < seconds * 1e3:
        t0 = time.perf_counter()
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if after:
            after()
        if cuda:
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) * 1e3
        if it >= 0:
            ms.append(dt)
            total += dt
        it += 1
        if len(ms) >= 1024:
            break
    ms.sort()
    med = ms[len(ms) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    devmb = "%.1f" % (torch.cuda.max_memory_allocated() / 2**20) if cuda else "-"
    print("torch %s %d %.3f %.2f %.1f %.1f %s" % (head, N, 1e3 / med, med, base, peak, devmb))


if __name__ == "__main__":
    main()
