"""Train and score the tagger under every layer-group unmasking configuration.

Dukić & Šnajder's Figure 1: with the layers split into 4 groups, each of the 16 codes from
``0000`` (the stock causal model) to ``1111`` (all bidirectional) is trained with the same
config and scored on the dev set. Results are appended to ``results.jsonl`` as each run
finishes, so a rerun continues where the last one stopped; ``results.md`` and
``results.png`` are rewritten after every run.
"""
import itertools
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import srsly
from wasabi import msg

from ..validation import check_positive_int, require

RESULTS = "results.jsonl"


def all_codes(groups: int) -> List[str]:
    check_positive_int(groups, "--groups")
    return ["".join(bits) for bits in itertools.product("01", repeat=groups)]


def run_sweep(config_path: Path, output: Path, *, groups: int = 4, component: str = "llm_unmasked_tagger",
              metric: str = "ents_f", overrides: Optional[Dict] = None,
              codes: Optional[Sequence[str]] = None) -> List[Dict]:
    """Train one pipeline per code under ``output/<code>`` and return ``[{code, score}]``."""
    from spacy.cli.train import train

    config_path, output = Path(config_path), Path(output)
    if not config_path.is_file():
        raise FileNotFoundError(f"no config at {str(config_path)!r}")
    codes = list(codes) if codes else all_codes(groups)
    bad = [code for code in codes if len(code) != groups or set(code) - {"0", "1"}]
    if bad:
        raise ValueError(f"codes {bad} are not strings of {groups} zeros and ones")
    output.mkdir(parents=True, exist_ok=True)
    results = {row["code"]: row for row in _read_results(output)}
    for number, code in enumerate(codes, 1):
        if code in results:
            msg.info(f"[{number}/{len(codes)}] unmask={code}: done before, {metric} {results[code]['score']:.4f}")
            continue
        msg.divider(f"[{number}/{len(codes)}] unmask={code}")
        run_overrides = {**(overrides or {}), f"components.{component}.model.unmask": code,
                         # The sweep keeps scores, not 16 copies of the base model.
                         f"components.{component}.store_base_weights": False}
        train(config_path, output / code, overrides=run_overrides)
        performance = srsly.read_json(output / code / "model-best" / "meta.json").get("performance", {})
        if metric not in performance:
            raise KeyError(f"the trained pipeline reports no {metric!r}; its scores are {sorted(performance)}. "
                           "Choose one with --metric.")
        results[code] = {"code": code, "score": float(performance[metric])}
        srsly.write_jsonl(output / RESULTS, [results[c] for c in codes if c in results])
        write_report(output, [results[c] for c in codes if c in results], metric)
    rows = [results[code] for code in codes]
    best = max(rows, key=lambda row: row["score"])
    msg.good(f"Best configuration: unmask={best['code']} ({metric} {best['score']:.4f})",
             f"Table: {output / 'results.md'}, plot: {output / 'results.png'}")
    return rows


def _read_results(output: Path) -> List[Dict]:
    path = output / RESULTS
    return list(srsly.read_jsonl(path)) if path.exists() else []


def write_report(output: Path, rows: List[Dict], metric: str) -> None:
    """``results.md`` (a table, best marked) and ``results.png`` (one bar per code)."""
    require("matplotlib", "the sweep's chart", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(rows, key=lambda row: row["score"])["code"]
    lines = [f"| unmask | {metric} |", "|---|---|"]
    lines += [f"| `{row['code']}`{' (best)' if row['code'] == best else ''} | {row['score']:.4f} |" for row in rows]
    (output / "results.md").write_text("\n".join(lines) + "\n", encoding="utf8")
    figure, axis = plt.subplots(figsize=(max(4.0, 0.55 * len(rows) + 1.5), 3.6))
    colors = ["tab:orange" if row["code"] == best else "tab:blue" for row in rows]
    axis.bar([row["code"] for row in rows], [row["score"] for row in rows], color=colors)
    axis.set_xlabel("unmasked layer groups (1 = bidirectional, first digit nearest the input)")
    axis.set_ylabel(f"dev {metric}")
    axis.set_title("llm_unmasked_tagger: dev score per unmasking configuration")
    axis.tick_params(axis="x", rotation=60)
    figure.tight_layout()
    figure.savefig(output / "results.png", dpi=120)
    plt.close(figure)
