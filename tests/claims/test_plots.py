"""Claims figures: a loss keeps one colour in every row of the Δ figure, whichever losses a row has."""

from __future__ import annotations

from matplotlib.axes import Axes

from nhl.claims.plots import delta_figure


def _summary(mean):
    return {"mean": mean, "ci_low": mean - 1, "ci_high": mean + 1}


def test_delta_figure_colours_follow_the_loss_not_its_position(tmp_path, monkeypatch):
    rows = [("default", "nhl-full", ["csq", "dsh", "dpn"]), ("prefix", "nhl-full", ["dpn"])]  # prefix: dpn only
    section = {
        "pooled": [{"setting": s, "variant": v, "label": f"{v} [{s}]", "points": _summary(1.0)} for s, v, _ in rows],
        "losses": {
            loss: {
                "rows": [
                    {"setting": s, "variant": v, "vs_baseline": _summary(float(i))}
                    for s, v, losses in rows
                    if loss in losses
                ]
            }
            for i, loss in enumerate(["csq", "dsh", "dpn"])
        },
    }
    drawn = []
    original = Axes.scatter

    def record(self, x, y, *args, **kwargs):
        drawn.append((round(float(y[0])), kwargs.get("color"), kwargs.get("label")))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "scatter", record)
    assert delta_figure(tmp_path / "d.png", "toy", section)
    assert (tmp_path / "d.png").stat().st_size > 0
    by_row = {}
    for y, colour, label in drawn:
        by_row.setdefault(y, []).append((colour, label))
    assert by_row[0] == [("C0", "csq"), ("C1", "dsh"), ("C2", "dpn")]
    assert by_row[1] == [("C2", None)]  # dpn keeps C2 (the old code gave it C0, csq's colour)
