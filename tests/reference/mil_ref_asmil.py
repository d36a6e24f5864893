"""ASMIL in PyTorch, written from docs/mil-heads.md and the structure of the
official code (Linfeng-Ye/ASMIL, architecture/mytransformer.py: ACMIL_MYMHA,
ACMIL_MYMHA_EMA, MutiHeadAttention, sigmax; Step3_WSI_classification_ASMIL.py:
the KD term and the EMA). Module attribute names are the official ones, so
state_dict keys match the official checkpoints (the per-token classifiers
`classifier.t` exist only with n_class > 0, as the official module has them;
the released loss never uses them).

Importable: tests/reference/golden_mil_asmil.py uses it; `python3
mil_ref_asmil.py` (what `make golden` does) runs a self-check only: the
folded token attention (the speed note of docs/mil-heads.md) against the
plain one, and writes nothing.

Differences from the official file, all documented in mil/asmil.c:
- `drop` can be passed explicitly (the official forward draws
  torch.randperm(n_token)[:n_drop] itself);
- the KD term uses log_softmax instead of log(softmax(x + 1e-8)) with
  nan_to_num (identical where finite);
- forward returns a dict of named intermediates.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6
SIGMAX_EPS = 1e-8


def sigmax(x, dim=-1, eps=SIGMAX_EPS):
    """Normalized sigmoid: sigmoid(x) / (sum sigmoid(x) + eps)."""
    s = torch.sigmoid(x)
    return s / (s.sum(dim=dim, keepdim=True) + eps)


class DimReduction(nn.Module):
    def __init__(self, n_channels, m_dim):
        super().__init__()
        self.fc1 = nn.Linear(n_channels, m_dim, bias=False)
        self.relu1 = nn.ReLU()

    def forward(self, x):
        return self.relu1(self.fc1(x))


class Classifier_1fc(nn.Module):
    def __init__(self, n_channels, n_classes):
        super().__init__()
        self.fc = nn.Linear(n_channels, n_classes)

    def forward(self, x):
        return self.fc(x)


class MutiHeadAttention(nn.Module):
    """Official name and layout: q/k/v/out projections, scaled dot product,
    softmax (or sigmax) over the keys, out_proj -> dropout -> LayerNorm(1e-6).
    Returns (out [n_q, D], attention LOGITS [heads, n_q, n_k])."""

    def __init__(self, dim, num_heads, dropout=0.1, softmax=True):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.layer_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.softmax = softmax

    def _heads(self, x):  # [B, n, D] -> [B, H, n, c]
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v):
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        c = q.shape[-1]
        logits = q @ k.transpose(2, 3) / math.sqrt(c)
        a = F.softmax(logits, dim=-1) if self.softmax else sigmax(logits, dim=-1)
        out = a @ v
        b, h, n, c = out.shape
        out = out.transpose(1, 2).reshape(b, n, h * c)
        out = self.layer_norm(self.dropout(self.out_proj(out)))
        return out[0], logits[0]


class ASMIL(nn.Module):
    """ACMIL_MYMHA (student; softmax=True) or, with softmax=False, the layout
    of ACMIL_MYMHA_EMA (anchor: only its token attention logits are used)."""

    def __init__(self, d_feat, d_inner, n_token, n_heads=8, n_drop=0, dropout=0.1,
                 n_class=0, softmax=True):
        super().__init__()
        self.dimreduction = DimReduction(d_feat, d_inner)
        self.sub_attention = nn.ModuleList(
            [MutiHeadAttention(d_inner, n_heads, dropout, softmax) for _ in range(n_token)])
        self.bag_attention = MutiHeadAttention(d_inner, n_heads, dropout, True)
        self.q = nn.Parameter(torch.zeros(1, n_token, d_inner))
        self.cls = nn.Parameter(torch.zeros(1, 1, d_inner))
        nn.init.normal_(self.q, std=1e-6)
        if n_class > 0:
            self.classifier = nn.ModuleList(
                [Classifier_1fc(d_inner, n_class) for _ in range(n_token)])
        self.n_token = n_token
        self.n_drop = n_drop

    def token_logits(self, x):
        """Attention logits [H, T, N] (the official `attns`), plain form."""
        h = self.dimreduction(x)[None]
        return torch.cat([self.sub_attention[i](self.q[:, i].unsqueeze(0), h, h)[1]
                          for i in range(self.n_token)], 1)

    def forward(self, x, drop=None):
        """x [N, d_feat]. drop: token indices removed from the bag attention
        (training); None: drawn as the official code when training."""
        o = OrderedDict()
        h = self.dimreduction(x)[None]  # [1, N, D]
        o["h"] = h[0]
        feats, logits = [], []
        if drop is None:
            drop = torch.randperm(self.n_token)[:self.n_drop].tolist() if self.training else []
        for i in range(self.n_token):
            f, lg = self.sub_attention[i](self.q[:, i].unsqueeze(0), h, h)
            logits.append(lg)
            if i not in drop:
                feats.append(f)
        o["logits"] = torch.cat(logits, 1)  # [H, T, N]
        o["attn"] = torch.softmax(o["logits"], dim=-1)
        o["feats"] = torch.cat(feats, 0)  # [K, D]
        o["z"], _ = self.bag_attention(self.cls, o["feats"][None], o["feats"][None])
        return o


def folded_token_logits(m, x):
    """The same logits as ASMIL.token_logits with k_proj folded into the
    query: S[h,t,n] = (W_k^hT p_t^h) . h_n + p_t^h . b_k^h, scaled."""
    h = m.dimreduction(x)  # [N, D]
    out = []
    for i in range(m.n_token):
        a = m.sub_attention[i]
        H = a.num_heads
        p = a.q_proj(m.q[0, i])  # [D]
        c = p.shape[0] // H
        p = p.reshape(H, 1, c) / math.sqrt(c)
        kq = (p @ a.k_proj.weight.reshape(H, c, -1))[:, 0]  # [H, D]
        kb = (p[:, 0] * a.k_proj.bias.reshape(H, c)).sum(1)  # [H]
        out.append((h @ kq.t() + kb).t()[:, None])  # [H, 1, N]
    return torch.cat(out, 1)


def kd_term(student_logits, anchor_logits, T, weight=1.0):
    """-weight * mean(sigmax(anchor / T) * log_softmax(student)) over heads x
    tokens x instances; the anchor carries no gradient."""
    p = sigmax(anchor_logits.detach() / T, dim=-1)
    return -weight * (p * F.log_softmax(student_logits, dim=-1)).mean()


@torch.no_grad()
def ema_update(anchor, student, decay):
    """anchor <- decay * anchor + (1 - decay) * student, for every key the
    anchor shares with the student."""
    sd = student.state_dict()
    for k, v in anchor.state_dict().items():
        if k in sd:
            v.copy_(decay * v + (1.0 - decay) * sd[k])


if __name__ == "__main__":
    torch.manual_seed(0)
    m = ASMIL(24, 16, 4, n_heads=4).double()
    with torch.no_grad():
        m.q.normal_()
    x = torch.randn(40, 24, dtype=torch.float64)
    a, b = m.token_logits(x), folded_token_logits(m, x)
    err = (a - b).abs().max().item() / a.abs().max().item()
    assert err < 1e-12, err
    print("mil_ref_asmil.py: folded token attention == plain (max rel %.2g)" % err)
