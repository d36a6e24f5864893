"""The PyTorch side of bench/mil_step.sh: one training step per bag of a MIL
head (forward, linear head + CE (+ the head's aux term), backward, AdamW) at
D_feat 1024 / D_inner 512, with the reference modules of tests/reference/.

    python3 bench/mil_step_torch.py HEAD N [seconds]

Prints "torch HEAD N bags_per_s step_ms base_rss_mb peak_rss_mb" (median step
time after two warm-up steps; peak = getrusage max RSS of this process, base =
RSS after importing torch, before the bag and the model exist). 2 threads.
Exit status 3 when the head's reference module is not there."""
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


def build(head):
    """model, step(x) -> loss (forward + loss, training mode)."""
    if head in ("abmil", "aem"):
        from mil_ref_abmil import ABMIL, aem_term
        m = ABMIL(D_FEAT, D_INNER, C)
        y = torch.tensor([1])

        def loss_fn(x):
            logits, _, a = m(x)
            loss = F.cross_entropy(logits, y)
            return loss + aem_term(a, 0.1) if head == "aem" else loss
        return m, loss_fn
    if head == "transmil":
        import mil_ref_transmil as R
    elif head == "asmil":
        import mil_ref_asmil as R
    else:
        raise SystemExit("unknown head " + head)
    # the other reference modules provide bench_model(d_feat, d_inner, n_class)
    # -> (module, loss_fn(x)) with their own aux terms
    return R.bench_model(D_FEAT, D_INNER, C)


def main():
    head, N = sys.argv[1], int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    base = rss_mb()
    try:
        m, loss_fn = build(head)
    except ImportError as e:
        print("mil_step_torch.py: %s: %s" % (head, e), file=sys.stderr)
        sys.exit(3)
    except AttributeError as e:
        print("mil_step_torch.py: %s: %s" % (head, e), file=sys.stderr)
        sys.exit(3)
    torch.manual_seed(42)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-4, weight_decay=1e-5)
    x = torch.randn(N, D_FEAT)
    ms, total, it = [], 0.0, -2
    while len(ms) < 5 or total < seconds * 1e3:
        t0 = time.perf_counter()
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
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
    print("torch %s %d %.3f %.2f %.1f %.1f" % (head, N, 1e3 / med, med, base, peak))


if __name__ == "__main__":
    main()
