"""The public datasets this project trains and evaluates on, as laid out in ``../shared/datasets``
(and in the samples under ``assets/datasets``): which file is which split, in which format.

CrossNER is held out: it is only ever converted for evaluation, never for training.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

CROSSNER_DOMAINS = ("ai", "literature", "music", "politics", "science")


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
    DatasetFile("semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Test_Gold.xml", "semeval-aspects", "eval"),
    DatasetFile("semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Train.xml", "semeval-polarity", "train"),
    DatasetFile("semeval2014-restaurants", "semeval2014-restaurants/Restaurants_Test_Gold.xml", "semeval-polarity", "eval"),
    DatasetFile("banking77", "banking77/train.csv", "csv", "train"),
    DatasetFile("banking77", "banking77/test.csv", "csv", "eval"),
    DatasetFile("tnews", "tnews/train_few_all.json", "tnews", "train"),
    DatasetFile("tnews", "tnews/test_public.json", "tnews", "eval"),
    *(DatasetFile(f"crossner-{domain}", f"crossner/{domain}/test.txt", "conll", "eval") for domain in CROSSNER_DOMAINS),
]


def available(data_dir: Path) -> List[DatasetFile]:
    """The catalog's files present under ``data_dir``."""
    return [item for item in CATALOG if (Path(data_dir) / item.path).is_file()]
