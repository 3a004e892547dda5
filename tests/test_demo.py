"""The README's main job (``python -m skflow``): it reports each phase as it goes."""

from __future__ import annotations

import math

from skflow.demo import run_demo


def test_the_demo_reports_every_phase_and_scores_both_models(capsys) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    rows = run_demo(seed=0, max_epochs=2, progress=lines.append)
    phases = [line for line in lines if line.startswith("[")]
    assert [phase[:5] for phase in phases] == ["[1/2]", "[2/2]"]
    # The flow prints its own compact report (a line for its last epoch
    # here), and every mixture candidate gets its line: no phase is silent.
    assert any(line.strip().startswith("2/2") for line in capsys.readouterr().out.splitlines())
    assert sum("n_components=" in line for line in lines) == 5 + 1  # candidates, then the refit
    assert rows[0]["model"] == "RealNVPDensity"
    assert all(math.isfinite(row["heldout_loglik"]) for row in rows)


def test_the_demo_is_silent_without_a_progress_sink(capsys) -> None:  # type: ignore[no-untyped-def]
    run_demo(seed=0, max_epochs=1)
    assert capsys.readouterr().out == ""
