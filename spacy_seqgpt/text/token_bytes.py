"""The bytes each token of a Hugging Face tokenizer writes, for grammars that read answers byte by byte.

Decoding tokens one at a time (``tokenizer.decode([i])``) loses what a token means inside a
word: byte-level BPE pieces of a multi-byte character decode to U+FFFD, and SentencePiece
drops a piece's leading space. So the table is read from the vocabulary itself where the
tokenizer's scheme is known (byte-level BPE as in BLOOM, GPT-2, Llama 3; SentencePiece "▁"
and ``<0xNN>`` byte pieces as in Llama 2), and from ``decode`` otherwise.

Also here: the way back, text the grammar forces or guesses written as tokens (``text_tokens``).
"""
import codecs
import json
import re
from typing import List, Optional

from ..kernels.constraints import TokenBytes

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_pieces(tokenizer, size: Optional[int] = None) -> List[Optional[bytes]]:
    """``size`` entries (default: the tokenizer's length): each token's bytes, None for special tokens."""
    size = len(tokenizer) if size is None else size
    special = set(tokenizer.all_special_ids)
    names = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    scheme = _scheme(tokenizer)
    pieces: List[Optional[bytes]] = []
    for token_id, name in enumerate(names):
        if token_id in special or name is None:
            pieces.append(None)
        elif scheme == "byte_level":
            pieces.append(_byte_level(name))
        elif scheme == "metaspace":
            pieces.append(_metaspace(name))
        else:
            text = tokenizer.decode([token_id])
            pieces.append(text.encode("utf8") if text and "\ufffd" not in text else None)
    return pieces + [None] * (size - len(pieces))


def _scheme(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "decode"
    decoder = json.dumps(json.loads(backend.to_str()).get("decoder"), ensure_ascii=False)
    if '"ByteLevel"' in decoder:
        return "byte_level"
    if '"Metaspace"' in decoder or "▁" in decoder:
        return "metaspace"
    return "decode"


_UNICODE_TO_BYTE = None


def _byte_level(name: str) -> Optional[bytes]:
    global _UNICODE_TO_BYTE
    if _UNICODE_TO_BYTE is None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        _UNICODE_TO_BYTE = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        return bytes(_UNICODE_TO_BYTE[char] for char in name)
    except KeyError:  # an added token written as plain text
        return name.encode("utf8")


def _metaspace(name: str) -> bytes:
    match = _BYTE_PIECE.match(name)
    if match:
        return bytes([int(match.group(1), 16)])
    return name.replace("▁", " ").encode("utf8")


def text_tokens(tokenizer, vocab: TokenBytes, tokens: List[int], data: bytes) -> List[int]:
    """The tokens of ``data`` (its whole characters) after an answer written as ``tokens``:
    as the tokenizer splits the answer with them (the split a model trained on tokenized
    answers writes), or, where that split changes the answer's own tokens, as it splits
    them alone. Empty if neither writes exactly those characters."""
    try:
        text = codecs.getincrementaldecoder("utf8")().decode(data)  # whole characters only
    except UnicodeDecodeError:  # starts inside a character: left to the model
        return []
    if not text:
        return []
    try:
        written = b"".join(vocab.piece(token) or b"" for token in tokens).decode("utf8")
    except UnicodeDecodeError:  # the answer so far ends inside a character
        written = None
    want = text.encode("utf8")
    if written is not None:
        ids = tokenizer(written + text, add_special_tokens=False)["input_ids"]
        if ids[:len(tokens)] == tokens and _writes(vocab, ids[len(tokens):]) == want:
            return ids[len(tokens):]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids if _writes(vocab, ids) == want else []


def _writes(vocab: TokenBytes, tokens: List[int]) -> bytes:
    return b"".join(vocab.piece(token) or b"\xff" for token in tokens)
