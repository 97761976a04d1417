"""Type stubs of the answer grammars (kernels/constraints.pyx), for readers and type checkers."""
from typing import FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import numpy

STATE_INTS: int
SPAN_SPLITTERS: FrozenSet[str]

class TokenBytes:
    data: bytes
    eos_id: int
    size: int
    def __init__(self, pieces: Iterable[Optional[bytes]], eos_id: int) -> None: ...
    def piece(self, token: int) -> Optional[bytes]: ...

class Grammar:
    n_words: int
    def initial_state(self) -> Tuple[numpy.ndarray, numpy.ndarray]: ...
    def accepts(self, text: Union[str, bytes]) -> bool: ...
    def forced(self, ints: numpy.ndarray, bits: numpy.ndarray, limit: int = 1024) -> Tuple[bytes, bool]: ...

class ExtractionGrammar(Grammar):
    def __init__(self, text: str, labels: Sequence[str],
                 boundaries: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> None: ...

class ClassificationGrammar(Grammar):
    def __init__(self, labels: Sequence[str], exclusive: bool) -> None: ...

def allowed(grammars: List[Optional[Grammar]], ints: numpy.ndarray, bits: numpy.ndarray, candidates: numpy.ndarray,
            vocab: TokenBytes) -> numpy.ndarray: ...
def best_allowed(grammar: Grammar, ints: numpy.ndarray, bits: numpy.ndarray, scores: numpy.ndarray,
                 vocab: TokenBytes) -> int: ...
def advance(grammars: List[Optional[Grammar]], ints: numpy.ndarray, bits: numpy.ndarray, source: numpy.ndarray,
            tokens: numpy.ndarray, vocab: TokenBytes) -> Tuple[numpy.ndarray, numpy.ndarray]: ...
