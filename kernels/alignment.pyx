# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: language = c++
"""Compiled alignment between generated phrases, characters, subwords and spaCy tokens.

Each function has a plain Python twin in ``spacy_seqgpt.alignment_reference`` that defines
what it must return; the tests check the two agree on random Unicode input.

- ``find_phrases``: every occurrence of many phrases in one pass over the text (Aho-Corasick
  over the text's normalized code points: case folded, whitespace runs as one space), with
  offsets mapped back to the original text.
- ``char_spans``: character ranges to token ranges, exactly as ``Doc.char_span`` does.
- ``align_subwords``: a fast tokenizer's offset mapping against spaCy tokens.
- ``resolve_overlaps``: a greedy maximal set of non-overlapping spans in O(n log n).
"""
import numpy

from cpython.unicode cimport Py_UNICODE_ISSPACE
from cython.operator cimport dereference as deref, predecrement as dec, preincrement as inc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libcpp.algorithm cimport sort
from libcpp.map cimport map as ordered_map
from libcpp.pair cimport pair
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from .charclass import normalize_phrase, splits_word

# Bits of ``_Normalized.edges``: does this normalized char begin / end its original char's fold?
# ("ß" folds to "ss": a match may not start or end between the two s.)
cdef enum:
    FIRST_OF_FOLD = 1
    LAST_OF_FOLD = 2


cdef struct _Normalized:
    vector[Py_UCS4] chars
    vector[int32_t] starts  # original char range each normalized char comes from
    vector[int32_t] ends
    vector[uint8_t] edges


cdef struct _Hit:
    int64_t start
    int64_t end
    int64_t phrase


cdef struct _Candidate:
    double score
    int64_t length
    int64_t start
    int64_t index


cdef inline void _push(_Normalized* norm, Py_UCS4 char, int32_t start, int32_t end, uint8_t edges):
    norm.chars.push_back(char)
    norm.starts.push_back(start)
    norm.ends.push_back(end)
    norm.edges.push_back(edges)


cdef void _normalize_text(str text, bint fold, bint collapse, _Normalized* norm) except *:
    cdef Py_ssize_t i, k, size, n = len(text)
    cdef str folded = text.casefold() if fold else text
    # Folding changes no length for almost all text; only then may it be read char for char.
    cdef bint one_to_one = len(folded) == n
    cdef bint in_space = False
    cdef Py_UCS4 char
    cdef str piece
    norm.chars.reserve(n)
    norm.starts.reserve(n)
    norm.ends.reserve(n)
    norm.edges.reserve(n)
    for i in range(n):
        char = text[i]
        if collapse and Py_UNICODE_ISSPACE(char):
            if in_space:
                norm.ends[norm.ends.size() - 1] = i + 1
            else:
                _push(norm, u" ", i, i + 1, FIRST_OF_FOLD | LAST_OF_FOLD)
                in_space = True
            continue
        in_space = False
        if one_to_one:
            _push(norm, folded[i], i, i + 1, FIRST_OF_FOLD | LAST_OF_FOLD)
        else:
            piece = text[i].casefold()
            size = len(piece)
            for k in range(size):
                _push(norm, piece[k], i, i + 1,
                      (FIRST_OF_FOLD if k == 0 else 0) | (LAST_OF_FOLD if k == size - 1 else 0))


cdef inline bint _ascii_word(Py_UCS4 char):
    return (u"a" <= char <= u"z") or (u"A" <= char <= u"Z") or (u"0" <= char <= u"9") or char == u"_"


cdef bint _cut_allowed(str text, Py_ssize_t cut) except -1:
    """May a match begin or end at ``cut``? Not inside a word of a spaced script."""
    if cut <= 0 or cut >= len(text):
        return True
    cdef Py_UCS4 before = text[cut - 1], after = text[cut]
    if (before < 128 and not _ascii_word(before)) or (after < 128 and not _ascii_word(after)):
        return True
    if before < 128 and after < 128:
        return False
    return not splits_word(text[cut - 1], text[cut])


cdef inline uint64_t _edge(int32_t state, Py_UCS4 char):
    return (<uint64_t>state << 21) | <uint64_t>char  # code points fit in 21 bits


cdef bint _hit_before(const _Hit& a, const _Hit& b) noexcept nogil:
    if a.start != b.start:
        return a.start < b.start
    if a.end != b.end:
        return a.end < b.end
    return a.phrase < b.phrase


def find_phrases(str text, phrases, bint case_sensitive=True, bint collapse_whitespace=True,
                 bint word_boundaries=True):
    """All occurrences (overlapping ones too) of each phrase: ``[(phrase index, start, end)]``
    sorted by start, end and phrase index."""
    cdef _Normalized norm
    _normalize_text(text, not case_sensitive, collapse_whitespace, &norm)

    # The trie of the normalized phrases; state 0 is the root.
    cdef unordered_map[uint64_t, int32_t] goto_
    cdef unordered_map[uint64_t, int32_t].iterator found
    cdef vector[int32_t] parent, depth, first_phrase, next_phrase, fail, dict_link
    cdef vector[Py_UCS4] via
    cdef int32_t state, phrase_index, target
    cdef Py_UCS4 char
    parent.push_back(0)
    depth.push_back(0)
    first_phrase.push_back(-1)
    via.push_back(0)
    for phrase_index, phrase in enumerate(phrases):
        next_phrase.push_back(-1)
        state = 0
        for char in normalize_phrase(phrase, case_sensitive, collapse_whitespace):
            found = goto_.find(_edge(state, char))
            if found != goto_.end():
                state = deref(found).second
            else:
                target = <int32_t>parent.size()
                goto_[_edge(state, char)] = target
                parent.push_back(state)
                depth.push_back(depth[state] + 1)
                first_phrase.push_back(-1)
                via.push_back(char)
                state = target
        if state != 0:  # identical phrases chain from one state
            next_phrase[phrase_index] = first_phrase[state]
            first_phrase[state] = phrase_index

    # Failure links in breadth-first order (counting sort of states by depth).
    cdef Py_ssize_t n_states = parent.size(), i, max_depth = 0
    for i in range(n_states):
        max_depth = max(max_depth, depth[i])
    cdef vector[int32_t] bucket_start = vector[int32_t](max_depth + 2, 0)
    cdef vector[int32_t] by_depth = vector[int32_t](n_states, 0)
    for i in range(n_states):
        bucket_start[depth[i] + 1] += 1
    for i in range(max_depth + 1):
        bucket_start[i + 1] += bucket_start[i]
    for i in range(n_states):
        by_depth[bucket_start[depth[i]]] = <int32_t>i
        bucket_start[depth[i]] += 1
    fail.assign(n_states, 0)
    dict_link.assign(n_states, 0)
    cdef int32_t fallback
    for i in range(1, n_states):
        state = by_depth[i]
        if depth[state] > 1:
            fallback = fail[parent[state]]
            while True:
                found = goto_.find(_edge(fallback, via[state]))
                if found != goto_.end():
                    fail[state] = deref(found).second
                    break
                if fallback == 0:
                    break
                fallback = fail[fallback]
        target = fail[state]
        dict_link[state] = target if first_phrase[target] >= 0 else dict_link[target]

    # One pass over the text.
    cdef vector[_Hit] hits
    cdef Py_ssize_t position, begin, n_chars = norm.chars.size()
    cdef int32_t out
    cdef int64_t start, end
    state = 0
    for position in range(n_chars):
        char = norm.chars[position]
        while True:
            found = goto_.find(_edge(state, char))
            if found != goto_.end():
                state = deref(found).second
                break
            if state == 0:
                break
            state = fail[state]
        out = state if first_phrase[state] >= 0 else dict_link[state]
        while out > 0:
            begin = position - depth[out] + 1
            if norm.edges[begin] & FIRST_OF_FOLD and norm.edges[position] & LAST_OF_FOLD:
                start = norm.starts[begin]
                end = norm.ends[position]
                if not word_boundaries or (_cut_allowed(text, start) and _cut_allowed(text, end)):
                    phrase_index = first_phrase[out]
                    while phrase_index >= 0:
                        hits.push_back(_Hit(start, end, phrase_index))
                        phrase_index = next_phrase[phrase_index]
            out = dict_link[out]
    sort(hits.begin(), hits.end(), _hit_before)
    return [(hit.phrase, hit.start, hit.end) for hit in hits]


cdef inline Py_ssize_t _token_by_char(const int64_t[:] idx, const int64_t[:] length, const int64_t[:] space,
                                      int64_t char) noexcept nogil:
    """The token whose text or trailing space holds ``char`` (spaCy's ``token_by_char``), or -1."""
    cdef Py_ssize_t low = 0, high = idx.shape[0] - 1, middle
    while low <= high:
        middle = (low + high) // 2
        if char < idx[middle]:
            high = middle - 1
        elif char >= idx[middle] + length[middle] + space[middle]:
            low = middle + 1
        else:
            return middle
    return -1


def char_spans(const int64_t[:] idx, const int64_t[:] length, const int64_t[:] space, const int64_t[:] starts,
               const int64_t[:] ends, str alignment_mode):
    """Token ranges ``(token_starts, token_ends)`` of character ranges, -1 where ``Doc.char_span``
    gives None. ``idx``, ``length``, ``space``: each token's offset, length and trailing space (0/1)."""
    if alignment_mode not in ("strict", "contract", "expand"):
        raise ValueError(f"alignment_mode must be 'strict', 'contract' or 'expand', got {alignment_mode!r}")
    cdef bint strict = alignment_mode == "strict", contract = alignment_mode == "contract"
    cdef bint expand = alignment_mode == "expand"
    cdef Py_ssize_t n = starts.shape[0], i, first, last
    token_starts = numpy.full(n, -1, dtype=numpy.int64)
    token_ends = numpy.full(n, -1, dtype=numpy.int64)
    cdef int64_t[:] out_start = token_starts, out_end = token_ends
    cdef int64_t start_char, end_char
    with nogil:
        for i in range(n):
            start_char = starts[i]
            end_char = ends[i]
            first = _token_by_char(idx, length, space, start_char)
            if first < 0 or (strict and start_char != idx[first]):
                continue
            last = _token_by_char(idx, length, space, end_char - 1)
            if last < 0 or (strict and end_char != idx[last] + length[last]):
                continue
            if contract:
                if idx[first] < start_char:
                    first += 1
                if end_char < idx[last] + length[last]:
                    last -= 1
                if last < first:
                    continue
            elif expand and start_char == idx[first] + length[first]:
                first += 1  # the start fell on the previous token's trailing space
            out_start[i] = first
            out_end[i] = last + 1
    return token_starts, token_ends


def align_subwords(const int64_t[:] token_starts, const int64_t[:] token_ends, const int64_t[:, :] offsets):
    """``(first subword of each token, token of each subword)``, -1 where none.

    A subword belongs to a token when their character ranges overlap; subwords with empty
    ranges (special tokens) belong to none. Token ranges must be sorted and disjoint (spaCy's
    are); subword ranges may come in any order.
    """
    cdef Py_ssize_t n_tokens = token_starts.shape[0], n_subwords = offsets.shape[0], s, t, low, high, middle
    first_subword = numpy.full(n_tokens, -1, dtype=numpy.int64)
    token_of_subword = numpy.full(n_subwords, -1, dtype=numpy.int64)
    cdef int64_t[:] first = first_subword, owner = token_of_subword
    cdef int64_t begin, end
    with nogil:
        for s in range(n_subwords):
            begin = offsets[s, 0]
            end = offsets[s, 1]
            if begin >= end:
                continue
            low, high = 0, n_tokens
            while low < high:  # first token ending after the subword begins
                middle = (low + high) // 2
                if token_ends[middle] <= begin:
                    low = middle + 1
                else:
                    high = middle
            t = low
            while t < n_tokens and token_starts[t] < end:
                if owner[s] < 0:
                    owner[s] = t
                if first[t] < 0:
                    first[t] = s
                t += 1
    return first_subword, token_of_subword


cdef bint _candidate_before(const _Candidate& a, const _Candidate& b) noexcept nogil:
    if a.score != b.score:
        return a.score > b.score
    if a.length != b.length:
        return a.length > b.length
    if a.start != b.start:
        return a.start < b.start
    return a.index < b.index


def resolve_overlaps(const int64_t[:] starts, const int64_t[:] ends, const double[:] scores=None):
    """Indices of a maximal set of non-overlapping spans, taken greedily by score (when given),
    then length, then position; returned in text order."""
    cdef Py_ssize_t n = starts.shape[0], i
    cdef vector[_Candidate] candidates
    candidates.reserve(n)
    for i in range(n):
        candidates.push_back(_Candidate(scores[i] if scores is not None else 0.0, ends[i] - starts[i], starts[i], i))
    cdef ordered_map[int64_t, pair[int64_t, int64_t]] kept  # start -> (end, index)
    cdef ordered_map[int64_t, pair[int64_t, int64_t]].iterator after, before
    cdef int64_t start, end
    with nogil:
        sort(candidates.begin(), candidates.end(), _candidate_before)
        for i in range(n):
            start = candidates[i].start
            end = start + candidates[i].length
            after = kept.lower_bound(start)
            if after != kept.end() and deref(after).first < end:
                continue
            if after != kept.begin():
                before = after
                dec(before)
                if deref(before).second.first > start:
                    continue
            kept[start] = pair[int64_t, int64_t](end, candidates[i].index)
    chosen = numpy.empty(kept.size(), dtype=numpy.int64)
    cdef int64_t[:] out = chosen
    i = 0
    after = kept.begin()
    while after != kept.end():
        out[i] = deref(after).second.second
        inc(after)
        i += 1
    return chosen
