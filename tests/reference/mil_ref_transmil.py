"""TransMIL (Shao et al. 2021) as a PyTorch reference for ncmi's mil/transmil.c.

Written from the specification (shared docs/mil-heads.md) and the algorithm
of the official code: szc19990412/TransMIL models/TransMIL.py and
lucidrains/nystrom-attention (NystromAttention). Module attribute names are
the official ones, so state_dict keys are identical:

    cls_token [1,1,d]
    pos_layer.proj / proj1 / proj2 .weight [d,1,k,k] .bias [d]    (k = 7, 5, 3)
    _fc1.0.weight [d, D_feat], _fc1.0.bias
    layer{1,2}.norm.weight / .bias
    layer{1,2}.attn.to_qkv.weight [3*d, d]                 (no bias)
    layer{1,2}.attn.to_out.0.weight [d, d], .bias
    layer{1,2}.attn.res_conv.weight [heads, 1, 33, 1]      (no bias)
    norm.weight / .bias
    _fc2.weight [C, d], _fc2.bias                          (the linear head)

Official sizes: d = 512, heads = 8, dim_head = d / 8, landmarks = d / 2,
pinv_iterations = 6, residual conv kernel 33, dropout 0.1 (after to_out).
The constructor takes them as arguments so that tests can use small sizes.

Nystrom attention, as nystrom-attention does it without a mask:
  - the sequence (n tokens) is zero-padded at the FRONT to a multiple of m
    landmarks (pad rows give q = k = v = 0: to_qkv has no bias), even when
    n < m (then every padded row is its own landmark, l = 1);
  - landmarks: means over l = ceil(n / m) consecutive rows (pad rows included);
  - attn1 = softmax(q k_l^T), attn2 = softmax(q_l k_l^T), attn3 = softmax(q_l k^T);
  - attn2^+ by the iterative Moore-Penrose scheme, starting from
    z = attn2^T / (max row-sum * max col-sum), ONE global scale over all heads;
  - out = attn1 attn2^+ (attn3 v) + res_conv(v), heads merged, to_out;
  - output slice: the last n rows (nystrom-attention >= 0.0.10) or, with
    legacy_slice, the first n rows (0.0.9, which the official repository pins).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def moore_penrose_iter_pinv(x, iters):
    abs_x = x.abs()
    col = abs_x.sum(dim=-1)
    row = abs_x.sum(dim=-2)
    z = x.transpose(-1, -2) / (torch.max(col) * torch.max(row))
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).unsqueeze(0)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - (xz @ (15 * eye - (xz @ (7 * eye - xz)))))
    return z


class NystromAttention(nn.Module):
    def __init__(self, dim, dim_head, heads, num_landmarks, pinv_iterations=6,
                 residual_conv_kernel=33, dropout=0.0, legacy_slice=False):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.num_landmarks, self.pinv_iterations = num_landmarks, pinv_iterations
        self.scale = dim_head ** -0.5
        self.legacy_slice = legacy_slice
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        k = residual_conv_kernel
        self.res_conv = nn.Conv2d(heads, heads, (k, 1), padding=(k // 2, 0), groups=heads,
                                  bias=False)
        self.last = None  # (pad, attn1, attn2_inv, attn3) of the last forward

    def forward(self, x):
        b, n, _ = x.shape
        h, m = self.heads, self.num_landmarks
        pad = (m - n % m) % m
        if pad:
            x = F.pad(x, (0, 0, pad, 0), value=0)
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, -1, h, self.dim_head).transpose(1, 2) for t in (q, k, v))
        q = q * self.scale
        l = math.ceil(n / m)
        q_l = q.reshape(b, h, m, l, self.dim_head).sum(dim=3) / l
        k_l = k.reshape(b, h, m, l, self.dim_head).sum(dim=3) / l
        attn1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
        attn2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
        attn3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)
        attn2_inv = moore_penrose_iter_pinv(attn2, self.pinv_iterations)
        out = (attn1 @ attn2_inv) @ (attn3 @ v)
        out = out + self.res_conv(v)
        out = out.transpose(1, 2).reshape(b, -1, h * self.dim_head)
        out = self.to_out(out)
        self.last = (pad, attn1, attn2_inv, attn3)
        return out[:, :n] if self.legacy_slice else out[:, -n:]


class TransLayer(nn.Module):
    def __init__(self, dim, heads, landmarks, pinv_iterations, dropout, legacy_slice):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim=dim, dim_head=dim // heads, heads=heads,
                                     num_landmarks=landmarks, pinv_iterations=pinv_iterations,
                                     dropout=dropout, legacy_slice=legacy_slice)

    def forward(self, x):
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 7 // 2, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 5 // 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 3 // 2, groups=dim)

    def forward(self, x, H, W):
        B, _, C = x.shape
        cls_token, feat = x[:, 0], x[:, 1:]
        cnn = feat.transpose(1, 2).reshape(B, C, H, W)
        x = self.proj(cnn) + cnn + self.proj1(cnn) + self.proj2(cnn)
        x = x.flatten(2).transpose(1, 2)
        return torch.cat((cls_token.unsqueeze(1), x), dim=1)


class TransMIL(nn.Module):
    def __init__(self, n_classes, d_feat=1024, dim=512, heads=8, landmarks=None,
                 pinv_iterations=6, dropout=0.1, legacy_slice=False):
        super().__init__()
        if landmarks is None:
            landmarks = dim // 2
        self.pos_layer = PPEG(dim)
        self._fc1 = nn.Sequential(nn.Linear(d_feat, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layer1 = TransLayer(dim, heads, landmarks, pinv_iterations, dropout, legacy_slice)
        self.layer2 = TransLayer(dim, heads, landmarks, pinv_iterations, dropout, legacy_slice)
        self.norm = nn.LayerNorm(dim)
        self._fc2 = nn.Linear(dim, n_classes)

    def set_legacy_slice(self, legacy):
        self.layer1.attn.legacy_slice = legacy
        self.layer2.attn.legacy_slice = legacy

    def embed(self, x):
        """x [B, N, d_feat] -> z [B, dim] (the class token after the final norm)."""
        h = self._fc1(x)
        N = h.shape[1]
        s = int(math.ceil(math.sqrt(N)))
        h = torch.cat([h, h[:, :s * s - N, :]], dim=1)
        h = torch.cat((self.cls_token.expand(h.shape[0], -1, -1), h), dim=1)
        h = self.layer1(h)
        h = self.pos_layer(h, s, s)
        h = self.layer2(h)
        return self.norm(h)[:, 0]

    def forward(self, x):
        return self._fc2(self.embed(x))

    def class_token_attention(self, n_instances):
        """Attention of the class token to the N instances in the last layer,
        averaged over heads: the row of attn1 attn2^+ attn3 (first batch item)
        whose output is added to the class token (padded row `pad`, or row 0
        with the legacy slice), at the key columns of the instances
        (pad + 1 .. pad + N)."""
        attn = self.layer2.attn
        pad, a1, inv, a3 = attn.last
        r = 0 if attn.legacy_slice else pad
        row = a1[0, :, r:r + 1, :] @ inv[0] @ a3[0]  # [h, 1, n_pad]
        return row[:, 0, pad + 1:pad + 1 + n_instances].mean(dim=0)


if __name__ == "__main__":
    # `make golden` runs every script here: for this module, a self-check that
    # the iterative pseudo-inverse converges to the inverse of a softmax matrix
    # and that a bag goes through the model (writes nothing).
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 6, 6, dtype=torch.float64), dim=-1)
    err = (moore_penrose_iter_pinv(a, 30) - torch.linalg.inv(a)).abs().max().item()
    assert err < 1e-8, err
    m = TransMIL(3, d_feat=8, dim=16, heads=8, landmarks=4).eval()
    assert m(torch.randn(1, 11, 8)).shape == (1, 3)
    print("mil_ref_transmil.py: pinv converges (err %.2g), forward ok" % err)
