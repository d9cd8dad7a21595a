"""What the app shows, built from the backend's plain results: HTML cards, tables and plotly figures.

No Gradio and no torch here: app.py puts these into its components, and the tests can read them directly.
"""

from __future__ import annotations

import base64
import io
from html import escape

import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

SHOW_PX = 192  # world images are 64 px: shown enlarged without smoothing


def big(image: Image.Image) -> Image.Image:
    return image.resize((SHOW_PX, SHOW_PX), Image.NEAREST) if image.width < SHOW_PX else image


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    big(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def yes_no(p_yes: float, p_no: float) -> str:
    return "yes" if p_yes > p_no else "no"


def truth(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def verdict(oracle: dict | None) -> str:
    if oracle is None:
        return ""
    return "strict ✓" if oracle["strict"] else "facts ✓" if oracle["facts_only"] else "✗"


def compare_card(item: dict, iteration: int) -> str:
    """One prompt: the before and after images side by side, the per-question answers, the score change."""
    b, a = item["before"], item["after"]
    world = "oracle" in b
    rows = []
    for i, q in enumerate(item["questions"]):
        cells = [
            escape(q),
            f"{b['p_yes'][i]:.2f} / {b['p_no'][i]:.2f}",
            f"{a['p_yes'][i]:.2f} / {a['p_no'][i]:.2f}",
        ]
        if world:
            cells.append(f"{truth(b['oracle']['answers'][i])} → {truth(a['oracle']['answers'][i])}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = ["question", "before p(yes) / p(no)", "after p(yes) / p(no)"] + (["oracle"] if world else [])
    table = "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>" + "".join(rows) + "</table>"

    def figure(side: dict, label: str) -> str:
        note = f"<br>oracle: {verdict(side['oracle'])}" if world else ""
        return f"<figure><img src='{data_uri(side['image'])}'><figcaption>{label}{note}</figcaption></figure>"

    color = "#1a7f37" if item["gain"] > 0 else "#cf222e" if item["gain"] < 0 else "#57606a"
    head = (
        f"<b>{escape(item['prompt'])}</b> · {item['category']} · seed {item['seed']} · score {b['score']:+.3f} → "
        f"{a['score']:+.3f} <span style='color:{color}'>({item['gain']:+.3f})</span>"
    )
    body = figure(b, f"before (iter {iteration - 1})") + figure(a, f"after (iter {iteration})") + table
    return f"<div class='silmm-cmp'><div>{head}</div><div class='silmm-cmp-row'>{body}</div></div>"


def compare_prompts_table(items: list[dict]) -> pd.DataFrame:
    rows = []
    for it in items:
        b, a = it["before"], it["after"]
        row = {"prompt": it["prompt"], "category": it["category"], "seed": it["seed"],
               "score before": round(b["score"], 4), "score after": round(a["score"], 4), "gain": round(it["gain"], 4)}  # fmt: skip
        if "oracle" in b:
            row |= {"oracle before": verdict(b["oracle"]), "oracle after": verdict(a["oracle"])}
        rows.append(row)
    return pd.DataFrame(rows)


def compare_questions_table(items: list[dict]) -> pd.DataFrame:
    rows = []
    for it in items:
        b, a = it["before"], it["after"]
        for i, q in enumerate(it["questions"]):
            row = {"prompt": it["prompt"], "question": q, "before p(yes)": round(b["p_yes"][i], 4),
                   "before p(no)": round(b["p_no"][i], 4), "after p(yes)": round(a["p_yes"][i], 4),
                   "after p(no)": round(a["p_no"][i], 4)}  # fmt: skip
            if "oracle" in b:
                row["oracle before -> after"] = (
                    f"{truth(b['oracle']['answers'][i])} -> {truth(a['oracle']['answers'][i])}"
                )
            rows.append(row)
    return pd.DataFrame(rows)


def results_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for res in results:
        for cat, value in res.get("scores", {}).items():
            row = {"result": res.get("label") or res.get("model"), "category": cat, "score": value}
            if "facts_only" in res:
                row["facts only"] = res["facts_only"].get(cat)
            rows.append(row)
    return pd.DataFrame(rows)


def curves_figure(summary: list[dict]) -> go.Figure:
    """Held-out alignment, judge agreement and reward margin per iteration (0 = base model)."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("held-out alignment (strict)", "judge agreement", "reward margin"))  # fmt: skip
    its = [m["iteration"] for m in summary]

    def trace(values: list, name: str, col: int) -> None:
        pts = [(i, v) for i, v in zip(its, values) if v is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name), 1, col)  # fmt: skip

    trace([(m.get("eval") or {}).get("overall") for m in summary], "held-out strict", 1)
    trace([(m.get("eval") or {}).get("judge_agreement", {}).get("overall") for m in summary], "judge vs oracle (held-out)", 2)  # fmt: skip
    trace(
        [m.get("judge_agreement", {}).get("overall") for m in summary], "judge vs oracle (own candidates)", 2
    )
    trace([m.get("train", {}).get("reward_margin") for m in summary], "reward margin", 3)
    if not any((m.get("eval") or {}).get("overall") is not None for m in summary):
        fig.add_annotation(text="held-out evaluation is off for this run", showarrow=False, row=1, col=1,
                           x=0.5, y=0.5, xref="x domain", yref="y domain")  # fmt: skip
    fig.update_xaxes(title_text="iteration", dtick=1, rangemode="tozero")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=330, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return fig


def results_figure(results: list[dict]) -> go.Figure:
    """One bar group per category, one bar per result (base vs iteration k overlay)."""
    fig = go.Figure()
    for res in results:
        cats = list(res.get("scores", {}))
        ys = [res["scores"][c] for c in cats]
        fig.add_trace(go.Bar(x=cats, y=ys, name=res.get("label") or res.get("model"), text=[f"{y:.2f}" for y in ys], textposition="outside"))  # fmt: skip
    top = max((y for t in fig.data for y in t.y), default=1.0)
    fig.update_layout(barmode="group", height=360, yaxis_title="score", showlegend=True,
                      yaxis_range=[0, 1.1] if top <= 1 else None,
                      margin={"l": 40, "r": 10, "t": 30, "b": 40}, legend={"orientation": "h", "y": -0.2})  # fmt: skip
    return fig
