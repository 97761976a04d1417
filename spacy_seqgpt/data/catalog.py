"""The public datasets this project trains and evaluates on, as laid out in ``../shared/datasets``
(and in the samples under ``assets/datasets``): which file is which split, in which format.

CrossNER and CrossRE's five CrossNER domains are held out: they are only ever converted for
evaluation, never for training. CrossRE's news domain (CoNLL-2003 sentences) is held in.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

CROSSNER_DOMAINS = ("ai", "literature", "music", "politics", "science")
# Sources no model of this project trains on: `seqgpt evaluate --held-out` by default.
HELD_OUT_SOURCES = ("crossner", *(f"crossre-{domain}" for domain in CROSSNER_DOMAINS))


@dataclass(frozen=True)
class DatasetFile:
    source: str  # the dataset's name in the records
    path: str  # relative to the data folder
    fmt: str
    split: str  # "train" or "eval"
    lang: Optional[str] = None

    @property
    def output_name(self) -> str:
        suffix = "-polarity" if self.fmt == "semeval-polarity" else ""
        return f"{self.source}{suffix}.jsonl"


def _splits(source: str, fmt: str, train: str, test: str) -> List[DatasetFile]:
    """A dataset's training file and its test file."""
    return [DatasetFile(source, train, fmt, "train"), DatasetFile(source, test, fmt, "eval")]


_SEMEVAL = ("semeval2014-restaurants/Restaurants_Train.xml", "semeval2014-restaurants/Restaurants_Test_Gold.xml")
CATALOG: List[DatasetFile] = [
    *_splits("conll2003", "conll", "conll2003/train.txt", "conll2003/test.txt"),
    *_splits("wnut17", "conll", "wnut17/wnut17train.conll", "wnut17/emerging.test.annotated"),
    *_splits("weibo-ner", "weibo", "weibo-ner/weiboNER_2nd_conll.train", "weibo-ner/weiboNER_2nd_conll.test"),
    *_splits("semeval2014-restaurants", "semeval-aspects", *_SEMEVAL),
    *_splits("semeval2014-restaurants", "semeval-polarity", *_SEMEVAL),
    *_splits("banking77", "csv", "banking77/train.csv", "banking77/test.csv"),
    *_splits("tnews", "tnews", "tnews/train_few_all.json", "tnews/test_public.json"),
    *(DatasetFile(f"crossner-{name}", f"crossner/{name}/test.txt", "conll", "eval") for name in CROSSNER_DOMAINS),
    *_splits("crossre-news", "crossre", "crossre/news-train.json", "crossre/news-test.json"),
    *(DatasetFile(f"crossre-{name}", f"crossre/{name}-test.json", "crossre", "eval") for name in CROSSNER_DOMAINS),
]


def available(data_dir: Path) -> List[DatasetFile]:
    """The catalog's files present under ``data_dir``."""
    return [item for item in CATALOG if (Path(data_dir) / item.path).is_file()]
