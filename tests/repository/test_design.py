"""The design rules a reader can hold the code to: small factories, per-model state on the model,
an inference-only core, and a package that changes nothing of the process it is imported in."""
import ast
import inspect
import re
import subprocess
import sys

import pytest
import spacy

from conftest import ROOT

PACKAGE = ROOT / "spacy_seqgpt"
SEQGPT_FACTORIES = ("seqgpt_ner", "seqgpt_textcat", "seqgpt_typing", "seqgpt_rel", "seqgpt_questions",
                    "seqgpt_events")
MAX_FACTORY_PARAMETERS = 12  # nlp and name included
TRAINING_ONLY = ("matplotlib", "accelerate", "rouge-score", "rouge_score", "ray", "gguf", "bitsandbytes")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf8"))


@pytest.mark.parametrize("factory", SEQGPT_FACTORIES)
def test_a_seqgpt_factory_names_only_its_own_settings(factory):
    import spacy_seqgpt  # noqa: F401  (registers the factories)

    parameters = inspect.signature(spacy.registry.factories.get(factory)).parameters
    assert len(parameters) <= MAX_FACTORY_PARAMETERS, f"{factory} takes {len(parameters)}: {list(parameters)}"
    assert "decoding" in parameters and "model" in parameters
    assert not {"batch_size", "max_new_tokens", "num_beams", "max_input_tokens"} & set(parameters)


def test_the_core_install_holds_what_a_pipeline_needs_only():
    setup = (ROOT / "setup.py").read_text(encoding="utf8")
    core = re.search(r"install_requires=\[(.*?)\]", setup, re.S).group(1)
    named = {re.split(r"[<>=;\[ ]", requirement)[0].lower() for requirement in re.findall(r'"([^"]+)"', core)}
    assert named and not named & set(TRAINING_ONLY), named & set(TRAINING_ONLY)
    assert re.search(r'"train": TRAIN', setup) and all(name in setup for name in ("matplotlib", "rouge-score"))


def test_no_module_of_the_package_replaces_the_process_s_exception_hook():
    for path, tree in modules():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                assert not (isinstance(target, ast.Attribute) and target.attr == "excepthook"), path


def test_importing_the_package_and_its_commands_leaves_the_exception_hook_alone():
    code = ("import sys; hook = sys.excepthook\n"
            "import spacy_seqgpt, spacy_seqgpt.cli\n"
            "print(sys.excepthook is hook)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "True", result.stderr


def _module_level_weak_tables(tree):
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Call) and "WeakKeyDictionary" in ast.unparse(value.func):
            yield node.lineno


def _attributes_set_on_models(tree):
    """``setattr(...)``, or ``x.attr = ...`` where ``x`` is a model (``model``, ``base``, ``module``,
    ``*.model``): state stuck onto a transformers module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            if _names_a_model(node.args[0]):
                yield node.lineno
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and _names_a_model(target.value):
                yield node.lineno


def _names_a_model(node) -> bool:
    return (getattr(node, "id", None) or getattr(node, "attr", "")) in ("model", "base", "module")


def test_state_about_a_model_lives_on_the_model_object_not_in_side_tables():
    found = []
    for path, tree in modules():
        found += [f"{path.relative_to(ROOT)}:{line} (a module-level weak table)"
                  for line in _module_level_weak_tables(tree)]
        if not path.is_relative_to(PACKAGE / "models"):
            found += [f"{path.relative_to(ROOT)}:{line} (an attribute set on a model)"
                      for line in _attributes_set_on_models(tree)]
    assert not found, found


def test_the_checks_above_find_what_they_look_for():
    """The AST rules are not vacuous: each finds the pattern it forbids."""
    tree = ast.parse("import weakref\nCOSTS = weakref.WeakKeyDictionary()\n"
                     "def f(shared):\n    shared.model.extra = 1\n    setattr(base, 'x', 2)\n")
    assert list(_module_level_weak_tables(tree)) == [2]
    assert list(_attributes_set_on_models(tree)) == [4, 5]
