"""The bytes each token of a Hugging Face tokenizer writes, for grammars that read answers byte by byte.

Decoding tokens one at a time (``tokenizer.decode([i])``) loses what a token means inside a
word: byte-level BPE pieces of a multi-byte character decode to U+FFFD, and SentencePiece
drops a piece's leading space. So the table is read from the vocabulary itself where the
tokenizer's scheme is known (byte-level BPE as in BLOOM, GPT-2, Llama 3; SentencePiece "▁"
and ``<0xNN>`` byte pieces as in Llama 2), and from ``decode`` otherwise.
"""
import json
import re
from typing import List, Optional

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
