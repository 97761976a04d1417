# cython: language_level=3
"""Answer grammars for constrained SeqGPT decoding, the next tokens that keep an answer valid.

A grammar reads the answer byte by byte, so it is exact whatever the tokenizer merges (a
span's tokens in the answer, " Paris" after ": ", need not be the tokens it had in the
input). The decoder asks only about the few best-scoring tokens of each row (``allowed``),
then moves the chosen rows on (``advance``); both loop in C over rows, candidates and bytes.

- ``ExtractionGrammar``: one line per queried label, in order, ``label: span, span`` or
  ``label: None``, then end-of-sequence. A span is a substring of the input text: a
  shift-and (bitap) automaton over the input's bytes keeps the set of input positions where
  the span read so far could continue, one bit each, so a step is a few word operations. Its
  start and end sets say where spans may begin and end: never on whitespace, and only where
  ``boundaries`` says when given (``seqgpt_ner`` passes where its phrase search can match,
  and token boundaries for the strict alignment modes). The answer is read back exactly as
  the grammar means it (``prompts.parse_answer``): characters that split spans there (",",
  "，", tab, line breaks) and whitespace in runs of two or more never occur inside a span, and
  a span is never a word that reads as "no span" ("null", "none", ...) but the "None" that
  the grammar writes for it. When none of the model's favourite tokens is allowed, the
  fallback takes "None" (or ends the line after a comma) before a scrap of text the model
  did not want.
- ``ClassificationGrammar``: labels from a trie of the queried labels, each at most once,
  joined by "，" (one label only when exclusive), then end-of-sequence.

A row's state is six integers and a bitset of ``n_words`` 64-bit words; rows that share a
grammar (beams, chunks of one prompt) keep their own states.
"""
import numpy as np

cimport cython
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy, memset

# State slots (ints) and phases.
cdef enum:
    PHASE = 0
    LINE = 1    # extraction: the label's line; classification: labels chosen so far
    POS = 2     # extraction: bytes of "label: " written; classification: trie node
    NONE_POS = 3  # bytes of "None" written, -1 when the value cannot be "None"
    LENGTH = 4  # extraction: bytes of the value so far
    HEAD = 5    # extraction: the value's first 8 bytes, ASCII letters lowercased (to spot "null" & co.)
    N_INTS = 6
cdef enum:
    FORCED = 0  # extraction: writing "label: "
    VALUE = 1   # extraction: a span or "None"; classification: a label
    COMMA = 2   # extraction: after "," comes " "
    DONE = 3
cdef int MAX_WORDS = 4096
cdef const unsigned char* NONE_BYTES = b"None"
# Values that read back as "no span", compared case-folded (for these words that is ASCII
# lowercasing, as no other character folds to their letters): the answer format's own list.
from ..prompts import NONE_ANSWERS as NONE_WORDS
cdef int N_NONE_WORDS = len(NONE_WORDS)
cdef int64_t NONE_HEADS[8]
cdef int64_t NONE_LENGTHS[8]


cdef inline int64_t _head_byte(int byte, int64_t at) noexcept nogil:
    """``byte`` (ASCII letters lowercased) at its place among a value's first 8 bytes."""
    if 65 <= byte <= 90:
        byte += 32
    return (<int64_t> byte) << (8 * at)


assert N_NONE_WORDS <= 8
for _i, _word in enumerate(sorted(NONE_WORDS)):
    _data = _word.encode("utf8")
    NONE_LENGTHS[_i] = len(_data)
    NONE_HEADS[_i] = sum(_head_byte(_b, _k) for _k, _b in enumerate(_data))

STATE_INTS = N_INTS  # integers in a row's state (the decoder allocates the states)
_SEPARATOR = "，".encode("utf8")
# Characters that end a span when the answer is read back (prompts.parse_answer splits spans
# at commas and tabs, and lines wherever str.splitlines does): never inside a span.
SPAN_SPLITTERS = frozenset(",，\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


cdef class TokenBytes:
    """The bytes each token id writes; ``None`` for tokens that write nothing usable (special)."""
    cdef readonly bytes data
    cdef int64_t[::1] offsets
    cdef uint8_t[::1] usable
    cdef readonly int64_t eos_id
    cdef readonly int64_t size

    def __init__(self, pieces, int64_t eos_id):
        pieces = list(pieces)
        self.size = len(pieces)
        if not 0 <= eos_id < self.size:
            raise ValueError(f"the end-of-sequence id {eos_id} is not in the vocabulary of {self.size} tokens")
        offsets = np.zeros(self.size + 1, dtype=np.int64)
        usable = np.zeros(self.size, dtype=np.uint8)
        chunks = []
        total = 0
        for i, piece in enumerate(pieces):
            if piece:
                chunks.append(piece)
                total += len(piece)
                usable[i] = 1
            offsets[i + 1] = total
        self.data = b"".join(chunks)
        self.offsets = offsets
        self.usable = usable
        self.eos_id = eos_id

    def piece(self, int64_t token):
        if not self.usable[token]:
            return None
        return self.data[self.offsets[token]:self.offsets[token + 1]]


cdef class Grammar:
    """What every grammar offers the decoder; ``step`` reads one byte (or, with -1, the end)."""
    cdef readonly int n_words

    cdef void start(self, int64_t* state, uint64_t* bits) noexcept nogil:
        pass

    cdef bint step(self, int64_t* state, uint64_t* bits, int byte) noexcept nogil:
        return False

    cdef bint prefers(self, const int64_t* before, const int64_t* after) noexcept nogil:
        """For the fallback: is a move from ``before`` to ``after`` a better way out than the
        model's best allowed token? (None of the model's favourites was allowed.)"""
        return False

    cdef bint feed(self, int64_t* state, uint64_t* bits, TokenBytes vocab, int64_t token):
        """Step through the bytes of ``token`` in place; False as soon as one is not allowed."""
        cdef const unsigned char* data
        cdef int64_t i
        if token == vocab.eos_id:
            return self.step(state, bits, -1)
        if token < 0 or token >= vocab.size or not vocab.usable[token]:
            return False
        data = <const unsigned char*> vocab.data
        for i in range(vocab.offsets[token], vocab.offsets[token + 1]):
            if not self.step(state, bits, data[i]):
                return False
        return True

    def opens_value(self, int64_t[::1] ints):
        """The answer line whose first value a row in state ``ints`` writes next (at most the
        space of ``label: `` before it), or -1: where the span search begins (``decoding.span_search``)."""
        return -1

    def initial_state(self):
        """``(ints, bits)`` of a row that has written nothing yet (numpy arrays)."""
        ints = np.zeros(N_INTS, dtype=np.int64)
        bits = np.zeros(max(self.n_words, 1), dtype=np.uint64)
        cdef int64_t[::1] i_view = ints
        cdef uint64_t[::1] b_view = bits
        self.start(&i_view[0], &b_view[0])
        return ints, bits

    cdef bint structural(self, const int64_t* state, const uint64_t* bits) noexcept nogil:
        """Whether the next byte belongs to the answer's structure, which ``forced`` may write.
        What the answer says (spans, labels) is the model's to write, even where the grammar
        leaves one way on: its probability is what the answer's scores are made of (``draft``
        may propose it). Only the end is forced elsewhere."""
        return False

    def forced(self, int64_t[::1] ints, uint64_t[::1] bits, int limit=1024):
        """The structure every valid continuation of a row in state ``(ints, bits)`` writes next:
        ``(bytes, ends)``, the longest run of structural bytes that is the only way on, and whether
        the answer must then end. The decoder appends these without asking the model
        (jump-forward). The state is not changed."""
        cdef int64_t work_ints[N_INTS]
        cdef int64_t trial_ints[N_INTS]
        work = np.array(bits, dtype=np.uint64)
        trial = np.empty_like(work)
        cdef uint64_t[::1] work_bits = work
        cdef uint64_t[::1] trial_bits = trial
        cdef int n = work.shape[0], byte, only, count
        cdef bint may_end
        memcpy(work_ints, &ints[0], N_INTS * sizeof(int64_t))
        out = bytearray()
        while len(out) < limit:
            count, only = 0, -1
            for byte in range(256):
                memcpy(trial_ints, work_ints, N_INTS * sizeof(int64_t))
                memcpy(&trial_bits[0], &work_bits[0], n * sizeof(uint64_t))
                if self.step(trial_ints, &trial_bits[0], byte):
                    count += 1
                    only = byte
                    if count > 1:
                        break
            memcpy(trial_ints, work_ints, N_INTS * sizeof(int64_t))
            memcpy(&trial_bits[0], &work_bits[0], n * sizeof(uint64_t))
            may_end = self.step(trial_ints, &trial_bits[0], -1)
            if count == 0:
                return bytes(out), may_end
            if count > 1 or may_end or not self.structural(work_ints, &work_bits[0]):
                return bytes(out), False
            self.step(work_ints, &work_bits[0], only)
            out.append(only)
        return bytes(out), False

    def draft(self, int64_t[::1] ints, uint64_t[::1] bits, int limit=64):
        """A guess at what the row writes next, for speculative decoding (the model verifies it):
        extraction guesses "None" where a value starts, and inside a span up to ``limit`` bytes
        of the input that follow the span so far (at its first occurrence). Empty: no guess."""
        return b""

    def accepts(self, text):
        """Whether the grammar accepts ``text`` (bytes or str) followed by the end: for tests and checks."""
        ints, bits = self.initial_state()
        cdef int64_t[::1] i_view = ints
        cdef uint64_t[::1] b_view = bits
        data = text.encode("utf8") if isinstance(text, str) else bytes(text)
        for byte in data:
            if not self.step(&i_view[0], &b_view[0], byte):
                return False
        return self.step(&i_view[0], &b_view[0], -1)


cdef inline void shift_and(uint64_t* bits, const uint64_t* mask, int n_words) noexcept nogil:
    """bits = (bits & mask) << 1 over ``n_words`` words."""
    cdef int w
    cdef uint64_t carry = 0, word
    for w in range(n_words):
        word = bits[w] & mask[w]
        bits[w] = (word << 1) | carry
        carry = word >> 63


cdef inline bint any_common(const uint64_t* a, const uint64_t* b, int n_words) noexcept nogil:
    cdef int w
    for w in range(n_words):
        if a[w] & b[w]:
            return True
    return False


cdef inline int _lowest_bit(uint64_t word) noexcept nogil:
    cdef int i = 0
    while not (word >> i) & 1:
        i += 1
    return i


cdef inline bint any_set(const uint64_t* a, int n_words) noexcept nogil:
    cdef int w
    for w in range(n_words):
        if a[w]:
            return True
    return False


cdef inline bint _span_ends(const int64_t* state, const uint64_t* bits, const uint64_t* ends,
                            int n_words) noexcept nogil:
    """A span of the text ends here: not empty, at an allowed end, and not a word meaning "no span"."""
    cdef int w
    if state[LENGTH] == 0 or not any_common(bits, ends, n_words):
        return False
    for w in range(N_NONE_WORDS):
        if state[LENGTH] == NONE_LENGTHS[w] and state[HEAD] == NONE_HEADS[w]:
            return False
    return True


def _bitset(positions, int n_words):
    out = np.zeros(n_words, dtype=np.uint64)
    for p in positions:
        out[p >> 6] |= np.uint64(1) << np.uint64(p & 63)
    return out


cdef class ExtractionGrammar(Grammar):
    """Answers ``label: span, span`` / ``label: None``, one line per label, spans from ``text``."""
    cdef uint8_t[::1] forced   # every line's "label: ", concatenated
    cdef int64_t[::1] forced_at  # line i's prefix is forced[forced_at[i]:forced_at[i + 1]]
    cdef int n_lines
    cdef int64_t mask_of[256]  # row of ``masks`` for a byte, -1 where the byte may not be in a span
    cdef uint64_t[:, ::1] masks
    cdef uint64_t[::1] starts
    cdef uint64_t[::1] ends
    cdef bytes data  # the input text, UTF-8

    def __init__(self, str text, labels, boundaries=None):
        """``labels``: the prompt texts queried, in order. ``boundaries``: ``(starts, ends)`` character
        offsets spans must begin and end on (spaCy tokens), or None for any character boundary."""
        labels = list(labels)
        if not labels:
            raise ValueError("an extraction grammar needs at least one label")
        lines = [label.encode("utf8") + b": " for label in labels]
        self.forced = np.frombuffer(b"".join(lines), dtype=np.uint8).copy()
        self.forced_at = np.cumsum([0] + [len(line) for line in lines]).astype(np.int64)
        self.n_lines = len(lines)
        data = text.encode("utf8")
        self.data = data
        n = len(data)
        self.n_words = (n + 1 + 63) // 64 or 1
        if self.n_words > MAX_WORDS:
            raise ValueError(f"the input is too long for an extraction grammar ({n} bytes)")
        byte_of = _byte_offsets(text)
        # Spans never begin or end on whitespace (the answer's reader strips it), and only where
        # ``boundaries`` allows when given.
        start_at = [i for i in (range(len(text)) if boundaries is None else boundaries[0])
                    if 0 <= i < len(text) and not text[i].isspace()]
        end_at = [i for i in (range(1, len(text) + 1) if boundaries is None else boundaries[1])
                  if 0 < i <= len(text) and not text[i - 1].isspace()]
        self.starts = _bitset([byte_of[i] for i in start_at], self.n_words)
        self.ends = _bitset([byte_of[i] for i in end_at], self.n_words)
        rows = {}
        for i, char in enumerate(text):
            # A whitespace character next to another one is in a run the reader splits spans at.
            in_run = char.isspace() and ((i > 0 and text[i - 1].isspace()) or
                                         (i + 1 < len(text) and text[i + 1].isspace()))
            if char not in SPAN_SPLITTERS and not in_run:
                for k, b in enumerate(char.encode("utf8")):
                    rows.setdefault(b, []).append(byte_of[i] + k)
        masks = np.zeros((max(len(rows), 1), self.n_words), dtype=np.uint64)
        for c in range(256):
            self.mask_of[c] = -1
        for r, (b, positions) in enumerate(sorted(rows.items())):
            self.mask_of[b] = r
            masks[r] = _bitset(positions, self.n_words)
        self.masks = masks

    cdef void _open_value(self, int64_t* state, uint64_t* bits, bint none_allowed) noexcept nogil:
        state[PHASE] = VALUE
        state[NONE_POS] = 0 if none_allowed else -1
        state[LENGTH] = 0
        state[HEAD] = 0
        memcpy(bits, &self.starts[0], self.n_words * sizeof(uint64_t))

    cdef void start(self, int64_t* state, uint64_t* bits) noexcept nogil:
        memset(state, 0, N_INTS * sizeof(int64_t))
        memset(bits, 0, self.n_words * sizeof(uint64_t))
        state[PHASE] = FORCED

    cdef bint _complete(self, int64_t* state, uint64_t* bits) noexcept nogil:
        """Whether the value so far can end here: "None" (the line's only value), or a span
        that ends where spans may end and does not read as "no span"."""
        if state[NONE_POS] == 4:
            return True
        return _span_ends(state, bits, &self.ends[0], self.n_words)

    cdef bint step(self, int64_t* state, uint64_t* bits, int byte) noexcept nogil:
        cdef int64_t phase = state[PHASE], line = state[LINE], pos
        cdef int64_t row
        if phase == FORCED:
            if byte < 0:
                return False
            pos = self.forced_at[line] + state[POS]
            if self.forced[pos] != byte:
                return False
            state[POS] += 1
            if pos + 1 == self.forced_at[line + 1]:
                self._open_value(state, bits, True)
            return True
        if phase == COMMA:
            if byte != 32:
                return False
            self._open_value(state, bits, False)
            return True
        if phase != VALUE:
            return False
        if byte < 0 or byte == 10:  # the end, or the next line
            # (after ", " a line may end too: the parser skips the empty span)
            if not self._complete(state, bits) and not (state[LENGTH] == 0 and state[NONE_POS] < 0):
                return False
            if byte < 0:
                if line != self.n_lines - 1:
                    return False
                state[PHASE] = DONE
                return True
            if line == self.n_lines - 1:
                return False
            state[PHASE] = FORCED
            state[LINE] = line + 1
            state[POS] = 0
            return True
        if byte == 44:  # ",": another span follows
            if not _span_ends(state, bits, &self.ends[0], self.n_words):
                return False
            state[PHASE] = COMMA
            return True
        if state[NONE_POS] >= 0 and state[NONE_POS] < 4 and NONE_BYTES[state[NONE_POS]] == byte:
            state[NONE_POS] += 1
        else:
            state[NONE_POS] = -1
        row = self.mask_of[byte]
        if row < 0:
            memset(bits, 0, self.n_words * sizeof(uint64_t))
        else:
            shift_and(bits, &self.masks[row, 0], self.n_words)
        if state[LENGTH] < 8:
            state[HEAD] |= _head_byte(byte, state[LENGTH])
        state[LENGTH] += 1
        return state[NONE_POS] >= 0 or any_set(bits, self.n_words)


    def opens_value(self, int64_t[::1] ints):
        cdef int64_t line = ints[LINE], at
        if ints[PHASE] == VALUE:
            return line if ints[LENGTH] == 0 and ints[NONE_POS] == 0 else -1
        if ints[PHASE] != FORCED:
            return -1
        for at in range(self.forced_at[line] + ints[POS], self.forced_at[line + 1]):
            if self.forced[at] != 32:
                return -1
        return line

    cdef bint structural(self, const int64_t* state, const uint64_t* bits) noexcept nogil:
        # "label: ", "None" once no span can be read in what it wrote, and the line break or end
        # after "None"; never a span's bytes
        return state[PHASE] == FORCED or (state[PHASE] == VALUE and (
            state[NONE_POS] == 4 or (state[NONE_POS] > 0 and not any_set(bits, self.n_words))))

    def draft(self, int64_t[::1] ints, uint64_t[::1] bits, int limit=64):
        # Where a value starts, "None" (most labels have no span in a given text); inside a
        # span, the input that follows it.
        cdef int w, at
        cdef int64_t line = ints[LINE]
        if ints[PHASE] == FORCED:
            return bytes(self.forced[self.forced_at[line] + ints[POS]:self.forced_at[line + 1]]) + b"None"
        if ints[PHASE] != VALUE:
            return b""
        if 0 <= ints[NONE_POS] < 4:
            return b"None"[ints[NONE_POS]:]
        if ints[LENGTH] == 0:
            return b""
        for w in range(self.n_words):
            if bits[w]:
                at = 64 * w + _lowest_bit(bits[w])
                return self.data[at:at + limit]
        return b""

    cdef bint prefers(self, const int64_t* before, const int64_t* after) noexcept nogil:
        # The model wants a value that is not in the text: "None" (as free decoding would drop
        # the value), or after "," a space and the end of the line, rather than the likeliest
        # scrap of text.
        if after[PHASE] == VALUE and (after[NONE_POS] > 0 or (before[PHASE] == COMMA and after[LENGTH] == 0)):
            return True
        return (before[PHASE] == VALUE and before[LENGTH] == 0 and before[NONE_POS] < 0
                and (after[PHASE] == DONE or after[LINE] > before[LINE]))


def _byte_offsets(str text):
    """Byte offset of each character offset of ``text`` (one more entry for the end)."""
    offsets = [0]
    total = 0
    for char in text:
        total += len(char.encode("utf8"))
        offsets.append(total)
    return offsets


cdef class ClassificationGrammar(Grammar):
    """Answers naming queried labels, each once, joined by "，" (only one when ``exclusive``).

    One trie holds every label, and (unless exclusive) every label followed by "，": labels
    may share leading bytes with each other and with the separator, and the trie decides
    only when the bytes do."""
    cdef int64_t[::1] child      # first child of each trie node
    cdef int64_t[::1] sibling    # next sibling
    cdef uint8_t[::1] edge       # the byte leading into each node
    cdef int64_t[::1] label_at   # the label a node completes, -1 if none
    cdef int64_t[::1] joined_at  # the label a node completes together with "，", -1 if none
    cdef bint exclusive

    def __init__(self, labels, bint exclusive):
        labels = [label.encode("utf8") for label in labels]
        if not labels or any(not label for label in labels):
            raise ValueError("a classification grammar needs non-empty labels")
        if any(_SEPARATOR in label for label in labels):
            raise ValueError("a label in a classification grammar cannot contain the separator '，'")
        child, sibling, edge, label_at, joined_at = [-1], [-1], [0], [-1], [-1]

        def insert(path):
            node = 0
            for b in path:
                nxt = child[node]
                while nxt >= 0 and edge[nxt] != b:
                    nxt = sibling[nxt]
                if nxt < 0:
                    nxt = len(child)
                    child.append(-1)
                    sibling.append(child[node])
                    edge.append(b)
                    label_at.append(-1)
                    joined_at.append(-1)
                    child[node] = nxt
                node = nxt
            return node

        for index, label in enumerate(labels):
            label_at[insert(label)] = index
            if not exclusive:
                joined_at[insert(label + _SEPARATOR)] = index
        self.child = np.array(child, dtype=np.int64)
        self.sibling = np.array(sibling, dtype=np.int64)
        self.edge = np.array(edge, dtype=np.uint8)
        self.label_at = np.array(label_at, dtype=np.int64)
        self.joined_at = np.array(joined_at, dtype=np.int64)
        self.exclusive = exclusive
        self.n_words = (len(labels) + 63) // 64

    cdef void start(self, int64_t* state, uint64_t* bits) noexcept nogil:
        memset(state, 0, N_INTS * sizeof(int64_t))
        memset(bits, 0, self.n_words * sizeof(uint64_t))
        state[PHASE] = VALUE

    cdef bint _choose(self, int64_t* state, uint64_t* bits, int64_t label) noexcept nogil:
        """Mark ``label`` chosen; False if it was chosen before."""
        if (bits[label >> 6] >> (label & 63)) & 1:
            return False
        bits[label >> 6] |= (<uint64_t> 1) << (label & 63)
        state[LINE] += 1
        return True

    cdef bint step(self, int64_t* state, uint64_t* bits, int byte) noexcept nogil:
        cdef int64_t node = state[POS]
        if state[PHASE] != VALUE:
            return False
        if byte < 0:  # the end: after a whole label, or at once for a multi-label answer naming none
            if node == 0 and state[LINE] == 0 and not self.exclusive:
                state[PHASE] = DONE
                return True
            if self.label_at[node] < 0 or not self._choose(state, bits, self.label_at[node]):
                return False
            state[PHASE] = DONE
            return True
        node = self.child[node]
        while node >= 0 and self.edge[node] != byte:
            node = self.sibling[node]
        if node < 0:
            return False
        if self.joined_at[node] >= 0:  # "label，": the next label starts at the root
            if not self._choose(state, bits, self.joined_at[node]):
                return False
            node = 0
        state[POS] = node
        return True


@cython.boundscheck(False)
@cython.wraparound(False)
def allowed(list grammars, int64_t[:, ::1] ints, uint64_t[:, ::1] bits, int64_t[:, ::1] candidates,
            TokenBytes vocab):
    """(rows, k) booleans: may row r write ``candidates[r, j]`` next? Rows without a grammar may write anything."""
    cdef Py_ssize_t rows = candidates.shape[0], k = candidates.shape[1], r, j
    cdef int n_words = bits.shape[1]
    out = np.zeros((rows, k), dtype=np.bool_)
    cdef uint8_t[:, ::1] ok = out.view(np.uint8)
    cdef int64_t scratch_ints[N_INTS]
    scratch = np.zeros(max(n_words, 1), dtype=np.uint64)
    cdef uint64_t[::1] scratch_bits = scratch
    cdef Grammar grammar
    for r in range(rows):
        if grammars[r] is None:
            ok[r, :] = 1
            continue
        grammar = <Grammar> grammars[r]
        for j in range(k):
            memcpy(scratch_ints, &ints[r, 0], N_INTS * sizeof(int64_t))
            memcpy(&scratch_bits[0], &bits[r, 0], n_words * sizeof(uint64_t))
            ok[r, j] = grammar.feed(scratch_ints, &scratch_bits[0], vocab, candidates[r, j])
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def best_allowed(Grammar grammar, int64_t[::1] ints, uint64_t[::1] bits, float[::1] scores, TokenBytes vocab):
    """The fallback when none of the best few candidates is allowed: the highest-scoring
    allowed token of the whole vocabulary, taking a token the grammar ``prefers`` over any
    other (-1 if nothing is allowed)."""
    cdef int64_t token, best = -1
    cdef float best_score = 0
    cdef bint best_preferred = False, preferred
    cdef int64_t scratch_ints[N_INTS]
    scratch = np.zeros(bits.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] scratch_bits = scratch
    cdef Py_ssize_t n = min(<Py_ssize_t> vocab.size, scores.shape[0])
    for token in range(n):
        if best_preferred and scores[token] <= best_score:
            continue
        memcpy(scratch_ints, &ints[0], N_INTS * sizeof(int64_t))
        memcpy(&scratch_bits[0], &bits[0], bits.shape[0] * sizeof(uint64_t))
        if not grammar.feed(scratch_ints, &scratch_bits[0], vocab, token):
            continue
        preferred = grammar.prefers(&ints[0], scratch_ints)
        if best < 0 or (preferred and not best_preferred) or (preferred == best_preferred and scores[token] > best_score):
            best, best_score, best_preferred = token, scores[token], preferred
    return best


@cython.boundscheck(False)
@cython.wraparound(False)
def advance(list grammars, int64_t[:, ::1] ints, uint64_t[:, ::1] bits, int64_t[::1] source, int64_t[::1] tokens,
            TokenBytes vocab):
    """New states: row i is row ``source[i]`` after writing ``tokens[i]`` (which must be allowed)."""
    cdef Py_ssize_t rows = source.shape[0], i
    cdef int n_words = bits.shape[1]
    new_ints = np.zeros((rows, N_INTS), dtype=np.int64)
    new_bits = np.zeros((rows, n_words), dtype=np.uint64)
    cdef int64_t[:, ::1] out_ints = new_ints
    cdef uint64_t[:, ::1] out_bits = new_bits
    for i in range(rows):
        out_ints[i, :] = ints[source[i], :]
        out_bits[i, :] = bits[source[i], :]
        grammar = grammars[source[i]]
        if grammar is not None and not (<Grammar> grammar).feed(&out_ints[i, 0], &out_bits[i, 0], vocab, tokens[i]):
            raise ValueError(f"token {tokens[i]} is not allowed in row {source[i]}")
    return new_ints, new_bits

