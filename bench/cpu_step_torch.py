"""The PyTorch side of bench/cpu_step.sh: the same Llama-style decoder as bench_cpu_step
(HF Llama layout: separate q/k/v/o, SwiGLU gate/up/down, RMSNorm, rotate-half RoPE, untied
head), f32 on the CPU, one full step = forward + backward + AdamW. Prints one JSON line."""
import argparse, json, math, os, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat((-x2, x1), -1)


class Block(nn.Module):
    def __init__(self, d, h, ffn):
        super().__init__()
        self.h = h
        self.n1 = nn.Parameter(torch.ones(d))
        self.n2 = nn.Parameter(torch.ones(d))
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate = nn.Linear(d, ffn, bias=False)
        self.up = nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        hd = D // self.h
        y = rmsnorm(x, self.n1, 1e-5)
        q, k, v = (p(y).view(B, T, self.h, hd).transpose(1, 2) for p in (self.q, self.k, self.v))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0: the eager attention of HF Llama
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
            a = torch.softmax(s, -1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(B, T, D))
        y = rmsnorm(x, self.n2, 1e-5)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Decoder(nn.Module):
    def __init__(self, vocab, d, L, h, ffn, T):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h, ffn) for _ in range(L))
        self.norm = nn.Parameter(torch.ones(d))
        self.head = nn.Linear(d, vocab, bias=False)
        hd = d // h
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(T).float(), inv)
        f = torch.cat((f, f), -1)
        self.cos, self.sin = f.cos()[None, None], f.sin()[None, None]
        self.mask = torch.full((T, T), float("-inf")).triu(1)

    def forward(self, ids, targets):
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        logits = self.head(rmsnorm(x, self.norm, 1e-5))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(dim=256, layers=4, heads=4, ffn=768, vocab=4096, seq=256, batch=8,
                     steps=10, warmup=2).items():
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = Decoder(a.vocab, a.dim, a.layers, a.heads, a.ffn, a.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    tgt = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(ids, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    print(json.dumps(dict(impl="pytorch " + torch.__version__, median_step_s=med,
                          tokens_per_s=a.batch * a.seq / med,
                          params=sum(p.numel() for p in model.parameters()),
                          loss=float(loss), threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
