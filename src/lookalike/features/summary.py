"""`lookalike model summary`: the tutorial's model.summary() for a PyTorch model."""

from __future__ import annotations

import torch

from .models import build


def summary(name: str, input_size: int | None = None, pooling: str | None = None) -> str:
    """Layers (two levels deep), their output shapes and parameter counts, and the totals
    (`pooling`: by default the model's own)."""
    net, spec, _ = build(name, "none", pooling, input_size, progress=False)
    pooling = net.pooling
    size = spec.input_size if input_size is None else input_size
    rows: list[tuple[str, str, str, int]] = []

    def hook(name_: str):
        def record(module, inputs, output):
            params = sum(p.numel() for p in module.parameters())
            rows.append((name_, type(module).__name__, str(tuple(output.shape)), params))
        return record

    depth = 2 if name == "resnet50" else 3
    handles = [m.register_forward_hook(hook(n)) for n, m in net.trunk.named_modules()
               if n and n.count(".") < depth and (n.count(".") == depth - 1 or not list(m.children()))]
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    total = sum(p.numel() for p in net.parameters())
    width = max(len(r[0]) for r in rows) + 2
    lines = [f'Model: "{name}" (no top, {pooling} pooling), input (1, 3, {size}, {size})',
             f"{'Layer':<{width}}{'Type':<26}{'Output shape':<22}{'Param #':>12}", "=" * (width + 60)]
    lines += [f"{n:<{width}}{t:<26}{s:<22}{p:>12,}" for n, t, s, p in rows]
    lines += ["=" * (width + 60), f"{'pooling':<{width}}{pooling:<26}{str(tuple(out.shape)):<22}{0:>12,}",
              f"Total params: {total:,}",
              f"Trainable params: {sum(p.numel() for p in net.parameters() if p.requires_grad):,}",
              f"Output: {out.shape[1]}-d feature vector per image"]
    return "\n".join(lines)
