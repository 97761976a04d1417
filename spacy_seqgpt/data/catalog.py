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


CATALOG: List[DatasetFile] = [
    DatasetFile("conll2003", "conll2003/train.txt", "conll", "train"),
    DatasetFile("conll2003", "conll2003/test.txt", "conll", "eval"),
    DatasetFile("wnut17", "wnut17/wnut17train.conll", "conll", "train"),
    DatasetFile("wnut17", "wnut17/emerging.test.annotated", "conll", "eval"),
    DatasetFile("weibo-ner", "weibo-ner/weiboNER_2nd_conll.train", "weibo", "train"),
    DatasetFile("weibo-ner", "weibo-ner/weiboNER_2nd_conll.test", "weibo", "eval"),
    DatasetFile("semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Train.xml", "semeval-aspects", "train"),
    DatasetFile(
        "semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Test_Gold.xml", "semeval-aspects", "eval"
    ),
    DatasetFile(
        "semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Train.xml", "semeval-polarity", "train"
    ),
    DatasetFile(
        "semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Test_Gold.xml", "semeval-polarity", "eval"
    ),
    DatasetFile("banking77", "banking77/train.csv", "csv", "train"),
    DatasetFile("banking77", "banking77/test.csv", "csv", "eval"),
    DatasetFile("tnews", "tnews/train_few_all.json", "tnews", "train"),
    DatasetFile("tnews", "tnews/test_public.json", "tnews", "eval"),
    *(DatasetFile(f"crossner-{domain}", f"crossner/{domain}/test.txt", "conll", "eval") for domain in CROSSNER_DOMAINS),
    DatasetFile("crossre-news", "crossre/news-train.json", "crossre", "train"),
    DatasetFile("crossre-news", "crossre/news-test.json", "crossre", "eval"),
    *(
        DatasetFile(f"crossre-{domain}", f"crossre/{domain}-test.json", "crossre", "eval")
        for domain in CROSSNER_DOMAINS
    ),
]


def available(data_dir: Path) -> List[DatasetFile]:
    """The catalog's files present under ``data_dir``."""
    return [item for item in CATALOG if (Path(data_dir) / item.path).is_file()]
