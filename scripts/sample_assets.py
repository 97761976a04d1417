"""Cut the small samples in assets/datasets from ../shared/datasets (openly licensed sets only).

    python scripts/sample_assets.py ../shared/datasets assets/datasets

Samples keep each dataset's file names and format, so every command that reads the shared
folder also reads assets/datasets. CoNLL-2003 (research use only) is never sampled.
"""
import csv
import io
import random
import sys
from pathlib import Path

# dataset file -> sentences (or rows) kept; a seeded sample, in the file's order
SAMPLES = {
    "wnut17/wnut17train.conll": 300,
    "wnut17/emerging.test.annotated": 60,
    "weibo-ner/weiboNER_2nd_conll.train": 200,
    "weibo-ner/weiboNER_2nd_conll.test": 60,
    "banking77/train.csv": 400,
    "banking77/test.csv": 60,
    # held out: evaluation only, so the workflow's report has both groups (MIT licence)
    "crossner/politics/test.txt": 60,
    "crossner/ai/test.txt": 60,
}


def sample_blocks(text: str, n: int, rng: random.Random) -> str:
    """n of the sentences (separated by lines that are blank or whitespace only)."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    keep = sorted(rng.sample(range(len(blocks)), min(n, len(blocks))))
    return "\n\n".join(blocks[i] for i in keep) + "\n"


def sample_csv(text: str, n: int, rng: random.Random) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    keep = sorted(rng.sample(range(len(body)), min(n, len(body))))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body[i] for i in keep)
    return out.getvalue()


def main(source: Path, target: Path, seed: int = 0) -> None:
    for name, n in SAMPLES.items():
        rng = random.Random(f"{seed}:{name}")
        text = (source / name).read_text(encoding="utf8")
        sample = sample_csv(text, n, rng) if name.endswith(".csv") else sample_blocks(text, n, rng)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(sample, encoding="utf8")
        print(f"{name}: {n} sampled")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
