"""Evaluation results as a Markdown table and a bar chart."""
from pathlib import Path
from typing import Dict, Optional

from ..validation import require

COLUMNS = ("n", "p", "r", "f1", "rouge1", "rouge2", "rougeL", "score", "span_p", "span_r", "span_f1", "triple_p",
           "triple_r", "triple_f1")


def markdown_table(results: Dict[str, dict], summary: Dict[str, dict], decoding: Optional[dict] = None) -> str:
    """Per dataset and task (held-in first, then held-out), then the summary rows; ``decoding``
    (the settings the answers were decoded with) as a line above."""
    lines = [describe_decoding(decoding), ""] if decoding else []
    lines += ["| dataset | task | split | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for result in sorted(results.values(), key=lambda r: (r["split"], r["source"], r["task"])):
        cells = [str(result["n"])] + [f"{result[c]:.3f}" if c in result else "-" for c in COLUMNS[1:]]
        lines.append(f"| {result['source']} | {result['task']} | {result['split']} | " + " | ".join(cells) + " |")
    lines += ["", "| group | datasets | p | r | f1 | rouge | score |", "|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {row['datasets']} | " + " | ".join(f"{row[key]:.3f}" for key in
                                                                    ("p", "r", "f1", "rouge", "score")) + " |")
    return "\n".join(lines) + "\n"


def describe_decoding(decoding: dict) -> str:
    """``Decoding: constrained, greedy, ...`` for a report."""
    beams = decoding.get("num_beams", 1)
    return (f"Decoding: {'constrained' if decoding.get('constrained') else 'free'}, "
            f"{'greedy' if beams == 1 else f'{beams} beams'}, at most {decoding.get('max_new_tokens')} new tokens, "
            f"windows of {decoding.get('max_input_tokens')} subwords"
            + (f", every span at least {decoding.get('threshold')} likely (span search)" if decoding.get("span_search")
               else f", spans below {decoding.get('threshold')} left out" if decoding.get("threshold") else "") + ".")


def bar_chart(results: Dict[str, dict], path: Path, title: str = "SeqGPT evaluation") -> None:
    """F1, ROUGE mean and score per dataset and task, as grouped bars."""
    require("matplotlib", "the evaluation's chart", "train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    for offset, (key, label) in enumerate((("f1", "micro-F1"), ("rouge", "ROUGE mean"), ("score", "score"))):
        ax.bar([i + (offset - 1) * width for i in range(len(names))], [results[n][key] for n in names], width,
               label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
