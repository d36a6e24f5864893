"""PyTorch reference of ncmi's ABMIL / AEM head (mil/abmil.c), written from
../shared/docs/mil-heads.md. Importable (tests/reference/golden_mil_abmil.py,
bench/mil_step_torch.py):

    from mil_ref_abmil import ABMIL, aem_term
    m = ABMIL(d_feat, d_inner, n_class, attn_hidden=128)
    logits, z, a = m(x)          # x [N, D_feat] (or [1, N, D_feat])
    loss = F.cross_entropy(logits, y) + aem_term(a, lam=0.1, top_k=0)

Module and attribute names reproduce the state_dict keys of `ABMIL` in
dazhangyu123/AEM (architecture/transformer.py; also dazhangyu123/ACMIL):
    dimreduction.fc1.weight                       [D_inner, D_feat]  (no bias)
    attention.attention_V.0.weight / .bias        [hidden, D_inner]  (+ tanh)
    attention.attention_U.0.weight / .bias        [hidden, D_inner]  (+ sigmoid)
    attention.attention_weights.weight / .bias    [1, hidden]
    classifier.fc.weight / .bias                  [C, D_inner]
so a state_dict loads in both directions. Init: nn.Linear's default.

a is the attention logit row [1, N] (before the softmax), what the official
forward returns; alpha = softmax(a, dim=1), z = alpha @ h [1, D_inner].
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class DimReduction(nn.Module):
    def __init__(self, d_feat, d_inner):
        super().__init__()
        self.fc1 = nn.Linear(d_feat, d_inner, bias=False)
        self.relu1 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu1(self.fc1(x))


class GatedAttention(nn.Module):
    def __init__(self, d_inner, hidden, k=1):
        super().__init__()
        self.attention_V = nn.Sequential(nn.Linear(d_inner, hidden), nn.Tanh())
        self.attention_U = nn.Sequential(nn.Linear(d_inner, hidden), nn.Sigmoid())
        self.attention_weights = nn.Linear(hidden, k)

    def forward(self, h):
        gate = self.attention_V(h) * self.attention_U(h)      # [N, hidden]
        return self.attention_weights(gate).transpose(0, 1)    # [K, N]


class Classifier(nn.Module):
    def __init__(self, d_inner, n_class):
        super().__init__()
        self.fc = nn.Linear(d_inner, n_class)

    def forward(self, z):
        return self.fc(z)


class ABMIL(nn.Module):
    def __init__(self, d_feat, d_inner, n_class, attn_hidden=128):
        super().__init__()
        self.dimreduction = DimReduction(d_feat, d_inner)
        self.attention = GatedAttention(d_inner, attn_hidden, 1)
        self.classifier = Classifier(d_inner, n_class)

    def embed(self, x):
        """z [1, D_inner], attention logits a [1, N], weights alpha [1, N]."""
        if x.dim() == 3:
            x = x[0]
        h = self.dimreduction(x)
        a = self.attention(h)
        alpha = torch.softmax(a, dim=1)
        return alpha @ h, a, alpha

    def forward(self, x):
        z, a, _ = self.embed(x)
        return self.classifier(z), z, a


class TanhAttention(nn.Module):
    """Ilse et al.'s attention without the gate: w^T tanh(V h) (ncmi mil.gated false)."""

    def __init__(self, d_inner, hidden, k=1):
        super().__init__()
        self.attention_V = nn.Sequential(nn.Linear(d_inner, hidden), nn.Tanh())
        self.attention_weights = nn.Linear(hidden, k)

    def forward(self, h):
        return self.attention_weights(self.attention_V(h)).transpose(0, 1)  # [K, N]


class ABMILInstanceMLP(nn.Module):
    """ncmi's ABMIL with mil.instance_layers (Ilse et al.'s network for the MIL
    benchmarks, e.g. Musk: layers [256, 128, 64], dropout, attention hidden 64):
        feature_extractor = Sequential(Linear, ReLU, Dropout) per layer
            (keys feature_extractor.<3 i>.weight / .bias)
        attention: gated (attention_V/U/weights) or tanh (attention_V/weights)
        classifier.fc: Linear(layers[-1], C)"""

    def __init__(self, d_feat, layers, n_class, attn_hidden=64, dropout=0.0, gated=True):
        super().__init__()
        mods, d = [], d_feat
        for w in layers:
            mods += [nn.Linear(d, w), nn.ReLU(), nn.Dropout(dropout)]
            d = w
        self.feature_extractor = nn.Sequential(*mods)
        self.attention = GatedAttention(d, attn_hidden, 1) if gated else TanhAttention(d, attn_hidden, 1)
        self.classifier = Classifier(d, n_class)

    def embed(self, x):
        if x.dim() == 3:
            x = x[0]
        h = self.feature_extractor(x)
        a = self.attention(h)
        alpha = torch.softmax(a, dim=1)
        return alpha @ h, a, alpha

    def forward(self, x):
        z, a, _ = self.embed(x)
        return self.classifier(z), z, a


def aem_term(a, lam=0.1, top_k=0):
    """AEM's term lam * sum_i alpha_i ln alpha_i of attention logits a [1, N]
    (minus lam times the attention entropy). top_k > 0: the min(k, N) largest
    weights renormalised to sum 1 (dazhangyu123/AEM main.py)."""
    if top_k > 0:
        alpha = torch.softmax(a, dim=-1)
        v, _ = torch.topk(alpha, min(top_k, alpha.shape[-1]), dim=-1)
        v = v / v.sum(dim=-1, keepdim=True)
        return lam * (v * torch.log(v)).sum()
    return lam * (torch.softmax(a, dim=-1) * F.log_softmax(a, dim=-1)).sum()


if __name__ == "__main__":
    # `make golden` runs every script here: a self-check of the names and shapes.
    m = ABMIL(32, 16, 3, attn_hidden=8)
    keys = list(m.state_dict().keys())
    assert keys == ["dimreduction.fc1.weight",
                    "attention.attention_V.0.weight", "attention.attention_V.0.bias",
                    "attention.attention_U.0.weight", "attention.attention_U.0.bias",
                    "attention.attention_weights.weight", "attention.attention_weights.bias",
                    "classifier.fc.weight", "classifier.fc.bias"], keys
    logits, z, a = m(torch.randn(7, 32))
    assert logits.shape == (1, 3) and z.shape == (1, 16) and a.shape == (1, 7)
    m = ABMILInstanceMLP(32, [12, 10], 3, attn_hidden=8, dropout=0.5, gated=False)
    keys = list(m.state_dict().keys())
    assert keys == ["feature_extractor.0.weight", "feature_extractor.0.bias",
                    "feature_extractor.3.weight", "feature_extractor.3.bias",
                    "attention.attention_V.0.weight", "attention.attention_V.0.bias",
                    "attention.attention_weights.weight", "attention.attention_weights.bias",
                    "classifier.fc.weight", "classifier.fc.bias"], keys
    print("mil_ref_abmil.py: state_dict keys and shapes ok")
