"""Test helpers that record what reaches the Segmenter."""

from __future__ import annotations


def record_scales(monkeypatch) -> tuple[list, list]:
    """Patch the Segmenter to record, per segmentation, the scale asked for (``seen``: "auto" or a number)
    and the scale of each batch loop it runs (``runs``: the probe's windows, then the run)."""
    from fveseg.inference.segmenter import Segmenter

    seen, runs = [], []
    original, original_run = Segmenter._plan_steps, Segmenter._run_steps

    def spy(self, volume, spacing, prompts, axis, order, scale, *args):
        seen.append(scale)
        return original(self, volume, spacing, prompts, axis, order, scale, *args)

    def spy_run(self, volume, plan, *args, **kwargs):
        runs.append(plan.scale)
        return original_run(self, volume, plan, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "_plan_steps", spy)
    monkeypatch.setattr(Segmenter, "_run_steps", spy_run)
    return seen, runs
