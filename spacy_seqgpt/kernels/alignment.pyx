# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: language = c++
"""Compiled alignment between generated phrases, characters, subwords and spaCy tokens.

Each function has a plain Python twin in ``tests/kernels/alignment_reference.py`` that defines
what it must return; the tests check the two agree on random Unicode input.

- ``find_phrases``: every occurrence of many phrases in one pass over the text: an
  Aho-Corasick automaton fed the text's normalized code points (case folded, whitespace runs
  as one space) as they are read, with offsets in the original text.
- ``char_spans``: character ranges to token ranges, exactly as ``Doc.char_span`` does.
- ``align_subwords``: a fast tokenizer's offset mapping against spaCy tokens.
- ``resolve_overlaps``: a greedy maximal set of non-overlapping spans in O(n log n).

The Doc functions read spaCy's token array directly, so a call costs microseconds even for
the few spans of one answer.
"""
import numpy

cimport cython
from cpython.unicode cimport Py_UNICODE_ISSPACE, PyUnicode_DATA, PyUnicode_KIND, PyUnicode_READ
from cython.operator cimport dereference as deref, predecrement as dec, preincrement as inc
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libcpp.algorithm cimport sort
from libcpp.map cimport map as ordered_map
from libcpp.pair cimport pair
from libcpp.vector cimport vector
from spacy.structs cimport TokenC
from spacy.tokens.doc cimport Doc

from .charclass import splits_word

cdef extern from *:
    """
    #include <cstdint>
    #include <vector>

    /* Aho-Corasick over code points. Transitions live in an open-addressing hash table
       (a std::unordered_map costs a division and a pointer chase per character); the
       root's ASCII transitions, where the search spends most steps, in a plain array. */
    struct PhraseAutomaton {
        static constexpr uint64_t EMPTY = ~0ull;
        std::vector<uint64_t> keys;
        std::vector<int32_t> targets;
        uint64_t mask = 0;
        int shift = 64;
        int32_t root_ascii[128];
        std::vector<int32_t> parent, depth, first_phrase, next_phrase, fail, dict_link;
        std::vector<uint32_t> via;
        int32_t state = 0;

        explicit PhraseAutomaton(size_t max_states) {
            size_t size = 16;
            shift = 60;
            while (size < 2 * max_states) { size <<= 1; --shift; }
            keys.assign(size, EMPTY);
            targets.assign(size, 0);
            mask = size - 1;
            for (int c = 0; c < 128; ++c) root_ascii[c] = -1;
            parent.push_back(0); depth.push_back(0); first_phrase.push_back(-1); via.push_back(0);
        }
        inline uint64_t slot(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift; }
        inline int32_t next(int32_t from, uint32_t c) const {
            if (from == 0 && c < 128) return root_ascii[c];
            uint64_t key = ((uint64_t)from << 21) | c;  /* code points fit in 21 bits */
            for (uint64_t i = slot(key);; i = (i + 1) & mask) {
                if (keys[i] == key) return targets[i];
                if (keys[i] == EMPTY) return -1;
            }
        }
        void add_phrase(const std::vector<uint32_t>& chars, int32_t index) {
            next_phrase.resize(index + 1, -1);
            int32_t s = 0;
            for (uint32_t c : chars) {
                int32_t t = next(s, c);
                if (t < 0) {
                    t = (int32_t)parent.size();
                    parent.push_back(s); depth.push_back(depth[s] + 1); first_phrase.push_back(-1);
                    via.push_back(c);
                    if (s == 0 && c < 128) {
                        root_ascii[c] = t;
                    } else {
                        uint64_t key = ((uint64_t)s << 21) | c, i = slot(key);
                        while (keys[i] != EMPTY) i = (i + 1) & mask;
                        keys[i] = key; targets[i] = t;
                    }
                }
                s = t;
            }
            if (s != 0) { next_phrase[index] = first_phrase[s]; first_phrase[s] = index; }
        }
        void link() {  /* failure and output links, breadth first (states sorted by depth) */
            size_t n = parent.size();
            std::vector<int32_t> order(n), count(n + 1, 0);
            for (size_t s = 0; s < n; ++s) ++count[depth[s] + 1];
            for (size_t d = 0; d < n; ++d) count[d + 1] += count[d];
            for (size_t s = 0; s < n; ++s) order[count[depth[s]]++] = (int32_t)s;
            fail.assign(n, 0); dict_link.assign(n, 0);
            for (size_t k = 1; k < n; ++k) {
                int32_t s = order[k];
                if (depth[s] > 1) {
                    for (int32_t f = fail[parent[s]];; f = fail[f]) {
                        int32_t t = next(f, via[s]);
                        if (t >= 0) { fail[s] = t; break; }
                        if (f == 0) break;
                    }
                }
                int32_t f = fail[s];
                dict_link[s] = first_phrase[f] >= 0 ? f : dict_link[f];
            }
        }
        /* Advance on one character; returns the deepest state with phrases ending here (0: none). */
        inline int32_t feed(uint32_t c) {
            for (;;) {
                int32_t t = next(state, c);
                if (t >= 0) { state = t; break; }
                if (state == 0) break;
                state = fail[state];
            }
            return first_phrase[state] >= 0 ? state : dict_link[state];
        }
    };
    """
    cdef cppclass PhraseAutomaton:
        PhraseAutomaton(size_t max_states) except +
        vector[int32_t] depth, first_phrase, next_phrase, dict_link
        void add_phrase(const vector[uint32_t]& chars, int32_t index) except +
        void link() except +
        int32_t feed(uint32_t c) noexcept nogil

# Bits of a normalized char's edges: does it begin / end the fold of its original char?
# ("ß" folds to "ss": a match may not start or end between the two s.)
cdef enum:
    FIRST_OF_FOLD = 1
    LAST_OF_FOLD = 2
    WHOLE = 3


cdef struct _Hit:
    int64_t start
    int64_t end
    int64_t phrase


cdef struct _Candidate:
    double score
    int64_t length
    int64_t start
    int64_t index


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


cdef bint _hit_before(const _Hit& a, const _Hit& b) noexcept nogil:
    if a.start != b.start:
        return a.start < b.start
    if a.end != b.end:
        return a.end < b.end
    return a.phrase < b.phrase


@cython.final
cdef class _Search:
    """The automaton plus what a match needs to be placed: for every normalized char read so
    far, the original char it came from and its fold edges."""
    cdef PhraseAutomaton* automaton
    cdef vector[int32_t] origin
    cdef vector[uint8_t] edges
    cdef vector[_Hit] hits

    def __dealloc__(self):
        del self.automaton

    cdef inline void feed(self, Py_UCS4 char, int32_t origin, uint8_t edges) noexcept:
        self.origin.push_back(origin)
        self.edges.push_back(edges)
        cdef Py_ssize_t position = self.origin.size() - 1, begin
        cdef int32_t out = self.automaton.feed(char), phrase
        while out > 0:
            begin = position - self.automaton.depth[out] + 1
            if self.edges[begin] & FIRST_OF_FOLD and edges & LAST_OF_FOLD:
                phrase = self.automaton.first_phrase[out]
                while phrase >= 0:
                    self.hits.push_back(_Hit(self.origin[begin], origin + 1, phrase))
                    phrase = self.automaton.next_phrase[phrase]
            out = self.automaton.dict_link[out]


def find_phrases(str text, phrases, bint case_sensitive=True, bint collapse_whitespace=True,
                 bint word_boundaries=True):
    """All occurrences (overlapping ones too) of each phrase: ``[(phrase index, start, end)]``
    sorted by start, end and phrase index."""
    # Phrases normalized as charclass.normalize_phrase does, in the loop that reads them.
    cdef list needles = [phrase if case_sensitive else phrase.casefold() for phrase in phrases]
    cdef _Search search = _Search()
    search.automaton = new PhraseAutomaton(sum([len(needle) for needle in needles]) + 1)
    cdef vector[uint32_t] chars
    cdef Py_UCS4 char
    cdef int32_t index
    cdef bint space_pending
    for index, needle in enumerate(needles):
        chars.clear()
        space_pending = False
        for char in <str>needle:
            if collapse_whitespace and Py_UNICODE_ISSPACE(char):
                space_pending = not chars.empty()
                continue
            if space_pending:
                chars.push_back(u" ")
                space_pending = False
            chars.push_back(char)
        search.automaton.add_phrase(chars, index)
    search.automaton.link()

    cdef Py_ssize_t i, k, size, n = len(text)
    cdef str folded = text.casefold() if not case_sensitive else text
    # Folding keeps the length of almost all text; only then may it be read char for char.
    cdef bint one_to_one = len(folded) == n
    cdef bint in_space = False
    cdef str piece
    search.origin.reserve(n)
    search.edges.reserve(n)
    cdef int kind = PyUnicode_KIND(text), folded_kind = PyUnicode_KIND(folded)
    cdef const void* data = PyUnicode_DATA(text)
    cdef const void* folded_data = PyUnicode_DATA(folded)
    for i in range(n):
        char = PyUnicode_READ(kind, data, i)
        if collapse_whitespace and Py_UNICODE_ISSPACE(char):
            if not in_space:
                search.feed(u" ", i, WHOLE)
                in_space = True
            continue
        in_space = False
        if one_to_one:
            search.feed(PyUnicode_READ(folded_kind, folded_data, i), i, WHOLE)
        else:
            piece = text[i].casefold()
            size = len(piece)
            for k in range(size):
                search.feed(piece[k], i, (FIRST_OF_FOLD if k == 0 else 0) | (LAST_OF_FOLD if k == size - 1 else 0))
    cdef vector[_Hit] kept
    if word_boundaries:
        for hit in search.hits:
            if _cut_allowed(text, hit.start) and _cut_allowed(text, hit.end):
                kept.push_back(hit)
        search.hits.swap(kept)
    sort(search.hits.begin(), search.hits.end(), _hit_before)
    return [(hit.phrase, hit.start, hit.end) for hit in search.hits]


cdef inline int _token_by_char(const TokenC* tokens, int length, int64_t char) noexcept nogil:
    """The token whose text or trailing space holds ``char`` (spaCy's ``token_by_char``), or -1."""
    cdef int low = 0, high = length - 1, middle
    while low <= high:
        middle = (low + high) // 2
        if char < tokens[middle].idx:
            high = middle - 1
        elif char >= tokens[middle].idx + tokens[middle].lex.length + tokens[middle].spacy:
            low = middle + 1
        else:
            return middle
    return -1


cdef inline int64_t _token_end(const TokenC* token) noexcept nogil:
    return token.idx + token.lex.length


def char_spans(Doc doc, starts, ends, str alignment_mode):
    """Token ranges ``(token_starts, token_ends)`` of character ranges, -1 where ``Doc.char_span``
    gives None."""
    if alignment_mode not in ("strict", "contract", "expand"):
        raise ValueError(f"alignment_mode must be 'strict', 'contract' or 'expand', got {alignment_mode!r}")
    cdef bint strict = alignment_mode == "strict", contract = alignment_mode == "contract"
    cdef bint expand = alignment_mode == "expand"
    cdef Py_ssize_t n = len(starts), i
    if len(ends) != n:
        raise ValueError(f"starts and ends must be two lists of the same length, got {n} and {len(ends)}")
    token_starts = numpy.full(n, -1, dtype=numpy.int64)
    token_ends = numpy.full(n, -1, dtype=numpy.int64)
    cdef int64_t[:] out_start = token_starts, out_end = token_ends
    cdef int64_t start_char, end_char
    cdef int first, last
    cdef const TokenC* tokens = doc.c
    for i in range(n):
        start_char = starts[i]
        end_char = ends[i]
        if start_char >= end_char:
            raise ValueError(f"character range {i} is empty or reversed: ({start_char}, {end_char})")
        first = _token_by_char(tokens, doc.length, start_char)
        if first < 0 or (strict and start_char != tokens[first].idx):
            continue
        last = _token_by_char(tokens, doc.length, end_char - 1)
        if last < 0 or (strict and end_char != _token_end(&tokens[last])):
            continue
        if contract:
            if tokens[first].idx < start_char:
                first += 1
            if end_char < _token_end(&tokens[last]):
                last -= 1
            if last < first:
                continue
        elif expand and start_char == _token_end(&tokens[first]):
            first += 1  # the start fell on the previous token's trailing space
        out_start[i] = first
        out_end[i] = last + 1
    return token_starts, token_ends


def align_subwords(Doc doc, offsets):
    """``(first subword of each token, token of each subword)``, -1 where none.

    A subword belongs to a token when their character ranges overlap; subwords with empty
    ranges (special tokens) belong to none. Subword ranges may come in any order.
    """
    cdef Py_ssize_t n_tokens = doc.length, n_subwords = len(offsets), s
    cdef int t, low, high, middle
    first_subword = numpy.full(n_tokens, -1, dtype=numpy.int64)
    token_of_subword = numpy.full(n_subwords, -1, dtype=numpy.int64)
    cdef int64_t[:] first = first_subword, owner = token_of_subword
    cdef int64_t begin, end
    cdef const TokenC* tokens = doc.c
    for s, pair_ in enumerate(offsets):
        if len(pair_) != 2:
            raise ValueError(f"offsets must be (start, end) pairs, got {pair_!r} at {s}")
        begin, end = pair_
        if begin >= end:
            continue
        low, high = 0, n_tokens
        while low < high:  # first token ending after the subword begins
            middle = (low + high) // 2
            if _token_end(&tokens[middle]) <= begin:
                low = middle + 1
            else:
                high = middle
        t = low
        while t < n_tokens and tokens[t].idx < end:
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


def resolve_overlaps(starts, ends, scores=None):
    """Indices of a maximal set of non-overlapping spans, taken greedily by score (when given),
    then length, then position; returned in text order."""
    cdef Py_ssize_t n = len(starts), i
    if len(ends) != n or (scores is not None and len(scores) != n):
        raise ValueError(f"starts, ends (and scores) must have one value per span, got {n}, {len(ends)}"
                         + ("" if scores is None else f" and {len(scores)}"))
    cdef vector[_Candidate] candidates
    candidates.reserve(n)
    cdef int64_t start, end
    cdef double score = 0.0
    for i in range(n):
        start = starts[i]
        end = ends[i]
        if start >= end:
            raise ValueError(f"span {i} is empty or reversed: ({start}, {end})")
        if scores is not None:
            score = scores[i]
            if not isfinite(score):
                raise ValueError(f"scores must be finite numbers, got {score} at {i}")
        candidates.push_back(_Candidate(score, end - start, start, i))
    cdef ordered_map[int64_t, pair[int64_t, int64_t]] kept  # start -> (end, index)
    cdef ordered_map[int64_t, pair[int64_t, int64_t]].iterator after, before
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
