"""The repository's shape: the build story, imports that point one way, a README that maps the tree."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "spacy_seqgpt"

# Which of the package's concerns each concern may import (besides the leaves, which import
# nothing of the package but prompts and may be imported by all). Inference (components,
# decoding, models) never imports training, data, evaluation or the CLI.
ALLOWED = {
    "kernels": set(),
    "text": {"kernels"},
    "models": {"kernels", "text"},
    "decoding": {"kernels", "text", "models"},
    "data": {"text", "models", "decoding"},  # synthesis can ask a local model
    "evaluation": {"kernels", "text", "models", "decoding"},
    "training": {"models", "data"},
    "components": {"kernels", "text", "models", "decoding"},
    "annotation": {"text"},
    "cli": {"models", "decoding", "data", "training", "evaluation", "annotation", "demo"},
    "api": {"models", "decoding"},
    "demo": {"text", "models", "components"},  # the page asks through the components
}
LEAVES = {"prompts", "templates", "validation", "about", "atomic"}
MAX_LINES = 400  # a module longer than this does more than one job (the Triton kernels excepted)
KERNELS = PACKAGE / "kernels"


def repository_files():
    """The repository's files (committed or not, ignored ones left out), relative to its root."""
    return subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                          text=True).stdout.split()


def package_imports(path: Path):
    """The package concerns a module imports (absolute ``spacy_seqgpt.x`` or relative)."""
    module = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = list(module[: len(module) - node.level]) + (node.module.split(".") if node.module else [])
                names = [parts + [alias.name] for alias in node.names] if not node.module else [parts]
            elif node.module and node.module.startswith("spacy_seqgpt"):
                names = [node.module.split(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names if alias.name.startswith("spacy_seqgpt")]
        else:
            continue
        for parts in names:
            if parts[0] == "spacy_seqgpt" and len(parts) > 1:
                yield parts[1]


def concern(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(ROOT)))
def test_dependencies_point_one_way(path):
    own = concern(path)
    imported = set(package_imports(path)) - {own} - LEAVES - {"__init__"}
    if own in LEAVES:
        assert imported <= {"prompts"}, f"{own} imports nothing of the package but prompts, but imports {imported}"
    elif own in ALLOWED:
        assert imported <= ALLOWED[own], f"{path.relative_to(ROOT)} imports {imported - ALLOWED[own]}"


def test_prompts_import_nothing_of_the_package_and_kernels_only_the_answer_format():
    assert not set(package_imports(PACKAGE / "prompts.py"))
    for path in KERNELS.rglob("*"):
        if path.suffix in (".py", ".pyx", ".pyi"):
            imports = re.findall(r"^\s*(?:from|c?import)\s+([\w.]+)", path.read_text(encoding="utf8"), re.M)
            assert not [name for name in imports if name.startswith(("spacy_seqgpt", "..")) and name != "..prompts"], (
                path
            )


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_outside_the_kernels_does_more_than_one_job(path):
    if path.name != "triton_kernels.py":  # a kernel's signature is its table of arguments
        lines = len(path.read_text(encoding="utf8").splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by job"


def test_the_package_is_one_folder_per_concern():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__", "about", "atomic", "prompts", "templates", "validation"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(ALLOWED)
    # setup.py ships each concern (an editable install would hide a missing one; a wheel would lack it)
    shipped = re.search(r"^PACKAGES = \(([^)]*)\)", (ROOT / "setup.py").read_text(encoding="utf8"), re.M).group(1)
    assert sorted(re.findall(r'"(\w+)"', shipped)) == sorted(ALLOWED)


def test_the_package_is_real_folders_and_nothing_shadows_an_installed_kernels(tmp_path):
    """No link anywhere in the package (every tool that reads the tree resolves its imports), and
    from the repository root a bare ``import kernels`` finds an installed package of that name
    (Hugging Face's ``kernels``, which transformers and bitsandbytes import), not ours."""
    links = [str(path.relative_to(ROOT)) for path in [PACKAGE, *PACKAGE.rglob("*")] if path.is_symlink()]
    assert not links
    assert not (ROOT / "kernels").exists()
    installed = tmp_path / "site" / "kernels"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("def get_kernel(name):\n    return name\n")
    code = "import kernels; print(kernels.get_kernel('ok'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""})
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("source", sorted(KERNELS.glob("*.pyx")), ids=lambda path: path.name)
def test_no_cython_source_seems_to_name_an_encoding(source):
    """Cython reads the first two lines of a source for an encoding (``coding: NAME``) without
    asking for a ``#``: a docstring saying "decoding: which ..." stopped the build with "unknown
    encoding: which" under the Cython of the first GPU machine."""
    import codecs

    for line in source.read_text(encoding="utf8").splitlines()[:2]:
        for name in re.findall(r"coding[:=]\s*([-\w.]+)", line):
            codecs.lookup(name)  # LookupError names the word taken for an encoding


def test_a_checkout_without_a_build_says_how_to_build(tmp_path):
    """The compiled kernels are required: a source checkout that was never built (this repository's
    files, no compiled modules, not installed) stops with an error that says how to build them."""
    for name in repository_files():
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copyfile(source, target)
    code = ("import sys\n"
            "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "import spacy_seqgpt\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "compiled kernels" in result.stderr and "pip install -e ." in result.stderr, result.stderr


def test_the_readme_module_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    tracked = repository_files()
    named = re.findall(r"([\w*]+(?:/[\w*]+)*(?:/|\.(?:pyi|pyx|py|yml|cfg)(?!\w)))", layout)
    for name in named:
        pattern = re.compile("(^|/)" + re.escape(name).replace("\\*", "[^/]*") + ("" if name.endswith("/") else "$"))
        assert any(pattern.search(path) for path in tracked), f"README's layout names {name}, not in the tree"
    for folder in ALLOWED:
        assert f"\n  {folder}/" in layout, f"README's layout does not show {folder}/"
    for path in [*PACKAGE.rglob("*.py"), *KERNELS.glob("*.py*")]:
        if path.name != "__init__.py" and "__pycache__" not in path.parts:
            assert path.name in layout, f"README's layout does not mention {path.relative_to(ROOT)}"


# Reports the package's commands write (seqgpt evaluate, gpu_check.py), not documents to cite.
OUTPUTS = ("metrics.md", "results.md", "report.md")


def test_no_file_cites_a_document_that_is_not_in_the_repository():
    tracked = repository_files()
    documents = {Path(name).name for name in tracked if name.endswith(".md")}
    for name in tracked:
        if name.endswith((".py", ".pyx", ".pyi", ".md", ".cfg", ".yml")):
            for cited in re.findall(r"\b([A-Za-z_]+\.md)\b", (ROOT / name).read_text(encoding="utf8")):
                assert cited in documents or cited in OUTPUTS, f"{name} cites {cited}"


def test_the_readme_is_a_front_page_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert len(readme.encode("utf8")) <= 15_000, "the README is a front page: reference goes under docs/"
    for link in re.findall(r"\]\(([^)#:]+)\)", readme):
        assert (ROOT / link).exists(), f"README links {link}, which is not in the repository"
    assert (ROOT / "LICENSE").is_file() and "MIT" in (ROOT / "LICENSE").read_text(encoding="utf8")
    assert (PACKAGE / "py.typed").is_file() and '"py.typed"' in (ROOT / "setup.py").read_text(encoding="utf8")


def test_the_tests_are_laid_out_like_the_package():
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(ALLOWED) | {"repository"}, folders - set(ALLOWED)
    loose = {p.stem[len("test_"):] for p in (ROOT / "tests").glob("test_*.py")}
    assert loose <= LEAVES, f"tests of {loose - LEAVES} belong in the folder of their concern"
    # pytest imports test modules by their file name (the folders are no packages): one name once
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(name for name in set(names) if names.count(name) > 1)
