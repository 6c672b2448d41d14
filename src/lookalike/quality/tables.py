"""Evaluations as text: one markdown table with the configurations side by side."""

from __future__ import annotations

from collections.abc import Sequence

from .evaluate import Evaluation, Scores


def _cell(s: Scores) -> str:
    return f"{s.recall_at_1:.3f} / {s.recall_at_k:.3f} / {s.mrr:.3f}"


def table(evaluations: Sequence[Evaluation]) -> str:
    """Rows: each edit, then all queries; columns: each configuration's recall@1 / recall@k / MRR."""
    first = evaluations[0]
    ks = sorted({e.k for e in evaluations})
    k = str(ks[0]) if len(ks) == 1 else "k"
    head = "| edit | queries | " + " | ".join(f"`{e.config.name}`" for e in evaluations) + " |"
    lines = [f"recall@1 / recall@{k} / MRR@{k}; {first.originals} originals, {first.distractors} distractors, "
             f"{first.overall.queries} queries.", "", head, "|---|---|" + "---|" * len(evaluations)]
    for edit in first.edits:
        lines.append(f"| {edit} | {first.per_edit[edit].queries} | "
                     + " | ".join(_cell(e.per_edit[edit]) for e in evaluations) + " |")
    lines.append(f"| **all** | {first.overall.queries} | "
                 + " | ".join(f"**{_cell(e.overall)}**" for e in evaluations) + " |")
    return "\n".join(lines)


def configs_table(evaluations: Sequence[Evaluation]) -> str:
    """What each column of `table` is: model, weights, pooling, metric, input side, resize, views."""
    lines = ["| configuration | model | weights | pooling | metric | input | resize | views |",
             "|---|---|---|---|---|---|---|---|"]
    for e in evaluations:
        c = e.config
        lines.append(f"| `{c.name}` | {c.model} | {c.weights} | {c.pooling} | {c.metric} | {c.input_size} | "
                     f"{c.resize} | {c.views} |")
    return "\n".join(lines)


def misses_text(evaluation: Evaluation, limit: int = 40) -> str:
    """The misses of one configuration, one line each (the first `limit`)."""
    lines = [f"- {m.edit} of `{m.original}` -> `{m.found}`"
             + (f" (original at rank {m.rank})" if m.rank else " (original not in the top k)")
             for m in evaluation.misses[:limit]]
    if len(evaluation.misses) > limit:
        lines.append(f"- ... and {len(evaluation.misses) - limit} more (eval.json lists them all)")
    return "\n".join(lines) or "- none"
