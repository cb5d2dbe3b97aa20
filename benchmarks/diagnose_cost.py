"""Cost of ``normdyn.diagnose`` against one bare forward-backward of the same model and batch.

Time: a diagnosis with K lrs does K+1 forward-backward passes (one at the given weights,
one after each probe step), one restore per probe and one detector analysis.  The ratio

    time(diagnose with K lrs) / ((K+1) x median time of one bare forward-backward)

is measured in one run (goal <= 1.3).  The bare pass is ``zero_grad; loss.backward()`` in
train mode on the same batch.

Memory: each measurement runs in a fresh subprocess that builds the model and batch,
reads its resident set size (``/proc/self/statm``), then either does one bare
forward-backward or one diagnose while a thread samples the RSS every 0.5 ms; the
increase is the peak sample minus the RSS before.  The children run with
``MALLOC_MMAP_THRESHOLD_=65536``: glibc then maps every tensor above 64 KiB on its own and
returns it to the system when freed, so the RSS follows the live tensors instead of the
heap's cached free blocks (with the default threshold, freed activations of one pass stay
in the heap and interleaved small allocations fragment it: the RSS then grows by up to
0.5x the activations without any tensor being alive).  ``bare`` (its increase) is
the gradients plus one batch's activations; ``diagnose`` the increase of the diagnosis.
The budget is ``2.5 x P + activations`` with P the bytes of parameters and buffers and
activations = bare - P (the gradients are P).  RSS includes allocator caching, so this
is an upper bound on what diagnose holds.

Models: the CIFAR ResNet-56 (batch 32, 3x32x32) and a ViT-like stand-in (patch-4 conv
embedding + LayerNorm, 4 pre-LN blocks with QK-LayerNorm attention and a LayerNorm'd MLP,
dim 64; batch 32, 3x32x32): timm cannot be imported here (timm 1.0 imports torchvision,
which does not load against this CPU torch), so the timm ViT is replaced by this stand-in.

    OMP_NUM_THREADS=1 python benchmarks/diagnose_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from normdyn.diagnose.core import diagnose  # noqa: E402
from normdyn.diagnose.lr_curve import DEFAULT_NUM_LRS  # noqa: E402
from normdyn.validate.models import resnet_cifar  # noqa: E402


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v, self.proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_norm, self.k_norm = nn.LayerNorm(d // heads), nn.LayerNorm(d // heads)
        self.fc1, self.fc1_norm = nn.Linear(d, 2 * d, bias=False), nn.LayerNorm(2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        q, k = self.q_norm(self._split(self.q(h))), self.k_norm(self._split(self.k(h)))
        v = self._split(self.v(h))
        att = torch.softmax(q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5), dim=-1) @ v
        x = x + self.proj(att.transpose(1, 2).flatten(2))
        return x + self.fc2(F.gelu(self.fc1_norm(self.fc1(self.ln2(x)))))


class ViTLike(nn.Module):
    """A small ViT with scale-invariant patch embedding, q, k and fc1 weights."""

    def __init__(self, d: int = 64, depth: int = 4, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4, bias=False)
        self.patch_norm = nn.LayerNorm(d)
        self.pos = nn.Parameter(torch.zeros(1, 64, d))
        self.blocks = nn.Sequential(*[_Block(d, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch(x).flatten(2).transpose(1, 2)) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


def _build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = resnet_cifar(56, shortcuts=True) if name == "resnet56" else ViTLike()
    g = torch.Generator().manual_seed(0)
    return model.train(), (torch.randn(32, 3, 32, 32, generator=g),
                           torch.randint(0, 10, (32,), generator=g))


def _bare(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(batch[0]), batch[1]).backward()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(name: str, what: str, lrs: int) -> None:
    import threading

    model, batch = _build(name)
    before, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        if what == "bare":
            _bare(model, batch)
        else:
            diagnose(model, batch, lrs=torch.logspace(-3, 1, lrs).tolist())
    finally:
        done.set()
        sampler.join()
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    print(json.dumps({"delta": max(peak[0], _rss()) - before, "param_bytes": nbytes}))


def _memory(name: str, what: str, lrs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", name, what, str(lrs)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1",
                              "MALLOC_MMAP_THRESHOLD_": "65536"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, lrs: int, reps: int) -> dict:
    torch.set_num_threads(1)
    model, batch = _build(name)
    _bare(model, batch)  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        _bare(model, batch)
        times.append(time.perf_counter() - t)
    bare = sorted(times)[len(times) // 2]
    grid = torch.logspace(-3, 1, lrs).tolist()
    t = time.perf_counter()
    diagnose(model, batch, lrs=grid)
    elapsed = time.perf_counter() - t
    mem_bare, mem_diag = _memory(name, "bare", lrs), _memory(name, "diagnose", lrs)
    p = mem_bare["param_bytes"]
    activations = max(mem_bare["delta"] - p, 0)
    budget = 2.5 * p + activations
    return {"model": name, "lrs": lrs, "bare_fb_s": bare, "diagnose_s": elapsed,
            "time_ratio": elapsed / ((lrs + 1) * bare), "param_buffer_MiB": p / 2**20,
            "bare_peak_delta_MiB": mem_bare["delta"] / 2**20,
            "diagnose_peak_delta_MiB": mem_diag["delta"] / 2**20,
            "memory_budget_MiB": budget / 2**20, "memory_ratio": mem_diag["delta"] / budget}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 lrs, 3 repetitions")
    args = parser.parse_args()
    lrs, reps = (5, 3) if args.quick else (DEFAULT_NUM_LRS, 7)
    for name in ("resnet56", "vit_like"):
        r = measure(name, lrs, reps)
        print(f"{r['model']:>9}: K={r['lrs']}  bare fwd-bwd {r['bare_fb_s'] * 1e3:.0f} ms  "
              f"diagnose {r['diagnose_s']:.2f} s  time ratio {r['time_ratio']:.2f} "
              f"(goal <= 1.3)  |  params+buffers {r['param_buffer_MiB']:.2f} MiB, "
              f"bare peak +{r['bare_peak_delta_MiB']:.1f} MiB, diagnose peak "
              f"+{r['diagnose_peak_delta_MiB']:.1f} MiB, budget {r['memory_budget_MiB']:.1f} "
              f"MiB, memory ratio {r['memory_ratio']:.2f} (goal <= 1)", flush=True)


if __name__ == "__main__":
    main()
