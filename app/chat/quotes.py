"""Words and sentences of answers and passages: the overlap the faithfulness check and the
supporting quotes are measured with.

Chinese is segmented with jieba's precise mode (not the search tokenizer's overlapping words:
here a word must be found as written); every other run of letters is lower-cased and
Snowball-stemmed, so "vacations" in an answer is found as "vacation" in a passage. Text is
NFKC-normalised first (full-width digits and letters become ASCII).

A passage is read line by line (`structure`): every line break ends a sentence, and a line is
a heading (Markdown "#"; or a short line without a sentence stop numbered "三、", "（二）",
"第十条", "第二章", "1." or "1.2"), a list item (a bullet; a numbered line that is not a
heading), a table row ("| a | b |" as written, "a | b" as the parsers give it), a table's rule
line, or text. A quote is whole sentences of one block: a new block starts at every heading,
list item and table row, so a quote of several sentences never runs into the next section.
Headings, header rows and rule lines are never quoted on their own. A heading's words count
for the sentences under it as the passage's title does for all of its sentences (half);
a header row's words are its rows' own, and a row is quoted with its header (`quote`).
Classifying a line looks at its first characters only, and a passage is read once (cached):
this runs for every answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from typing import Literal

from app.search.index.tokenize import (
    CHINESE_STOP_WORDS,
    ENGLISH_STOP_WORDS,
    load_segmenter,
    stem_english,
)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_CJK}]+")
_RUN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
# A sentence ends after these; a Latin full stop only before white space (not in "3.5").
_SENTENCE = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+")
# Quote marks and brackets that a sentence may close with after its stop.
_CLOSERS = "」』”’）)】\"'"

# What a line may start with (after its indent), each matched on the line's first characters:
# a Markdown heading; Chinese section numbering ("三、", "（二）", "第十条", "第二章"); an
# Arabic number ("1.", "1、", "1)", "1.2", "1.2.3."), before a space or a Han character; a bullet.
_MARKDOWN_HEADING = re.compile(r"#{1,6}(?=[ \t]|$)")
_ZH_NUMERAL = "零〇一二三四五六七八九十百千两"
_SECTION = re.compile(
    rf"(?P<dun>[{_ZH_NUMERAL}]{{1,4}}[、．.])"
    rf"|(?P<paren>[（(][{_ZH_NUMERAL}0-9０-９]{{1,4}}[）)])"
    rf"|(?P<article>第[{_ZH_NUMERAL}0-9０-９]{{1,12}}(?:条|款))"
    rf"|(?P<chapter>第[{_ZH_NUMERAL}0-9０-９]{{1,12}}(?:章|节|编|部分))"
)
_NUMBERED = re.compile(
    r"[0-9０-９]{1,3}(?:(?:[.．][0-9０-９]{1,3}){1,4}[.．、]?|[.．、)）])"
    rf"(?=[ \t\u3000]|[{_CJK}])"
)
_BULLET = re.compile(r"[-*+•·▪◦●○■□][ \t]+")
# A table's rule line ("|---|:--:|", "---|---"); a line of dashes alone is a thematic break.
_RULE = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?")
# A stop inside a line: a numbered line with one is an item or a paragraph, not a heading.
_STOP = re.compile(r"[。！？；!?;]|\.(?=\s|$)")
# A heading is a short line; a longer numbered line is a paragraph that starts with a number.
MAX_HEADING_CHARS = 60

# Scaffolding an answer may wrap its content in; never content of its own.
SCAFFOLD = re.compile(
    r"根据(?:文档|文章|段落|材料|原文)?[:：,，]?|文档(?:中|里)?(?:提到|显示|指出)?|答案(?:是|为)?"
    r"|原文[:：]?|回答[:：]?"
    r"|\baccording to (?:the )?(?:documents?|passages?|text)\b|\bthe answer is\b"
    r"|\b(?:answer|quote|passage)s?\s*:",
    re.IGNORECASE,
)
Kind = Literal["text", "heading", "header", "row", "rule"]
# Never quoted on their own: a heading, a table's header row, a table's rule line.
_NOT_QUOTED: frozenset[str] = frozenset({"heading", "header", "rule"})


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of a passage as quotes read it. Sentences of one `block` may be quoted
    together. `leads`: the indexes of the heading lines it stands under and of its table's
    header row, whose words count for it; `header`: that header row's index (rows only)."""

    text: str
    kind: Kind = "text"
    block: int = 0
    leads: tuple[int, ...] = ()
    header: int | None = None


def normalise(text: str) -> str:
    """NFKC and lower case: the form texts are compared in."""
    return unicodedata.normalize("NFKC", text).lower()


def _segment(run: str) -> list[str]:
    import jieba

    load_segmenter()
    return [w for w in jieba.lcut(run, HMM=True) if w.strip()]


def words(text: str) -> list[str]:
    """The text's words in order: jieba words for Chinese, stems for everything else; stop
    words dropped."""
    found: list[str] = []
    for match in _RUN.finditer(normalise(text)):
        han, other = match.groups()
        if han:
            found.extend(w for w in _segment(han) if w not in CHINESE_STOP_WORDS)
        elif other and other not in ENGLISH_STOP_WORDS:
            found.extend(stem_english([other]))
    return found


def sentences(text: str) -> list[str]:
    """The text cut into sentences (Chinese and Latin stops, line breaks), stripped; a list
    item's number, a heading line and a table row are never cut (see `structure`)."""
    return [s.text for s in structure(text)]


def _split(line: str) -> list[str]:
    """A line of text cut at its sentence stops, a closing quote after a stop kept with it."""
    merged: list[str] = []
    for piece in _SENTENCE.split(line):
        piece = piece.strip()
        if not piece:
            continue
        if merged and piece[0] in _CLOSERS and len(piece) <= 2:
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def _marker(line: str) -> tuple[str, int]:
    """How a (stripped, non-empty) line starts, and where its marker ends: "markdown",
    "dun" / "paren" / "article" / "chapter" (Chinese numbering), "numbered", "bullet", "row",
    "rule" or "text" (no marker, 0)."""
    if line[0] in "|-:" and _RULE.fullmatch(line) and ("|" in line or line.count("-") >= 3):
        return "rule", 0
    if line[0] == "|" or " | " in line:
        return "row", 0
    if line[0] == "#":
        found = _MARKDOWN_HEADING.match(line)
        return ("markdown", found.end()) if found else ("text", 0)
    section = _SECTION.match(line)
    if section is not None and section.lastgroup is not None:
        return section.lastgroup, section.end()
    numbered = _NUMBERED.match(line)
    if numbered is not None:
        return "numbered", numbered.end()
    bullet = _BULLET.match(line)
    if bullet is not None:
        return "bullet", bullet.end()
    return "text", 0


def _titled(line: str, cut: int) -> bool:
    """Whether a numbered line reads as a title: short, with words, and no sentence stop."""
    body = line[cut:].strip()
    return bool(body) and len(line) <= MAX_HEADING_CHARS and _STOP.search(body) is None


@lru_cache(maxsize=512)
def structure(text: str) -> tuple[Sentence, ...]:
    """The passage's sentences with their kind, block and leads (module docstring). A
    numbered line is a heading when it reads as a title (`_titled`) and, unless it is an
    article or chapter ("第十条", "第二章"), neither line beside it is numbered the same way
    (then they are the items of a list); a table's first row is its header when another row
    or a rule line follows it."""
    lines = [line.strip() for line in text.split("\n")]
    marks = [_marker(line) if line else ("blank", 0) for line in lines]
    out: list[Sentence] = []
    block = -1
    # The heading lines the text now stands under (consecutive headings all apply), the open
    # table's header row, whether the open block is a list item, and the last line's kind.
    headings: tuple[int, ...] = ()
    header: int | None = None
    in_table = in_item = False
    last: Kind | None = None
    gap = False
    for n, line in enumerate(lines):
        mark, cut = marks[n]
        if mark == "blank":
            gap = True
            continue
        beside = {marks[m][0] for m in (n - 1, n + 1) if 0 <= m < len(marks)}
        if mark in ("row", "rule"):
            if mark == "row" and not in_table:
                following = marks[n + 1][0] if n + 1 < len(marks) else "blank"
                header = len(out) if following in ("row", "rule") else None
                kind: Kind = "header" if header is not None else "row"
            else:
                kind = "rule" if mark == "rule" else "row"
            in_table = mark == "row" or "|" in line
            block += 1
            leads = headings if kind != "row" or header is None else (*headings, header)
            out.append(Sentence(line, kind, block, leads, header if kind == "row" else None))
            last, gap, in_item = kind, False, False
            continue
        in_table, header = False, None
        if mark == "markdown" or (
            mark in ("dun", "paren", "article", "chapter", "numbered")
            and (mark in ("article", "chapter") or mark not in beside)
            and _titled(line, cut)
        ):
            headings = (*headings, len(out)) if last == "heading" else (len(out),)
            block += 1
            out.append(Sentence(line, "heading", block, ()))
            last, gap, in_item = "heading", False, False
            continue
        marked = mark != "text"
        if marked or last != "text" or (gap and in_item):
            block += 1
            in_item = marked
        pieces = _split(line[cut:]) if cut else _split(line)
        if cut:
            # The marker stays with the item's first sentence ("1. Apply early.").
            body = line[cut:]
            lead = line[:cut] + body[: len(body) - len(body.lstrip())]
            pieces = [lead + pieces[0], *pieces[1:]] if pieces else [line]
        out.extend(Sentence(piece, "text", block, headings) for piece in pieces)
        last, gap = "text", False
    return tuple(out)


def lead_words(text: str, index: int) -> frozenset[str]:
    """The words of `lead_text`."""
    parts = structure(text)
    return frozenset().union(*(_word_set(parts[i].text) for i in (*parts[index].leads, index)))


def lead_text(text: str, index: int) -> str:
    """Sentence `index` of the passage after the heading lines and the header row it is read
    under, one a line: what the sentence says, in full."""
    parts = structure(text)
    return "\n".join(parts[i].text for i in (*parts[index].leads, index))


def contains(haystack_norm: str, haystack_words: set[str], term: str) -> bool:
    """Whether a word is in a text: as written for Chinese, as a stem for other words."""
    if _HAN_RUN.fullmatch(term):
        return term in haystack_norm
    return term in haystack_words


@lru_cache(maxsize=8192)
def _word_set(sentence: str) -> frozenset[str]:
    return frozenset(words(sentence))


def best_sentences(
    text: str,
    wanted: Iterable[str],
    *,
    count: int = 1,
    also: Iterable[str] = (),
    subject: Iterable[str] = (),
    ranked: bool = False,
) -> list[int]:
    """Indexes (in text order; `ranked`: best first) of the `count` sentences of `text`
    holding most of the `wanted` words, ties broken by the `also` words, then by position;
    [] when none holds any.
    Headings, header rows and rule lines are never chosen (`structure`).

    Wanted words that are `subject` words (the passage's title and headings) count as half a
    word, all of them together: every sentence of the passage is about its subject, and the
    one that names it (often the first, defining one) is not for that reason the one about
    what is asked of it. Measured on the 807 CMRC 2018 trial questions outside both tuning
    samples (scripts/sentence_choice.py), the gold paragraph's best sentence holds the gold
    span 0.78 of the time against 0.66 when subject words count in full (BENCHMARKS.md,
    eval-answers). The heading lines above a sentence in the passage are subject words of its
    own. A table row says what its header row names ("Band: B3; Salary range: 30k-40k"), so
    the header's words count as the row's: "Salary range for band B3?" chooses the B3 row,
    not the header, the B1 row nor a sentence about salary bands."""
    wanted_set, also_set, subject_set = set(wanted), set(also), set(subject)
    parts = structure(text)
    scored: list[tuple[float, float, int]] = []
    for i, sentence in enumerate(parts):
        if sentence.kind in _NOT_QUOTED:
            continue
        own = _word_set(sentence.text)
        if sentence.header is not None:
            own |= _word_set(parts[sentence.header].text)
        headings = (j for j in sentence.leads if j != sentence.header)
        led = frozenset().union(*(_word_set(parts[j].text) for j in headings)) - own
        every = own | led
        hits = every & wanted_set
        quiet = subject_set | led
        score = len(hits - quiet) + 0.5 * min(1, len(hits & quiet))
        scored.append((score, len(every & also_set), -i))
    scored.sort(reverse=True)
    picked = [-i for hits, extra, i in scored[:count] if hits > 0 or extra > 0]
    return picked if ranked else sorted(picked)


def evidence(text: str, question: str, *, count: int, subject: str = "") -> str:
    """The part of a passage an answer to the question must come from: its `count` sentences
    closest to the question, each with the sentence after it in its block or the text item
    after it (answers often follow the sentence that restates the question; a table row has
    none) and with its leads (headings, header row). The whole text when `count` is 0;
    nothing when no sentence shares a word with the question (a passage about something else
    supports no answer to it, however faithfully the answer copies it)."""
    if count <= 0:
        return text
    parts = structure(text)
    picked = best_sentences(text, words(question), count=count, subject=words(subject))
    if not picked:
        return ""
    keep: set[int] = set()
    for i in picked:
        keep.update((*parts[i].leads, i))
        if i + 1 < len(parts) and parts[i].kind == "text" and parts[i + 1].kind == "text":
            keep.add(i + 1)
    return "\n".join(parts[j].text for j in sorted(keep))


def quote(text: str, index: int, *, count: int = 1) -> str:
    """The quote of sentence `index` of the passage: it and up to `count` - 1 sentences after
    it in its block (never into the next heading, list item or row); a table row as its
    header row and itself (`table_quote`). "" for a heading, header or rule line."""
    parts = structure(text)
    first = parts[index]
    if first.kind in _NOT_QUOTED:
        return ""
    if first.kind == "row":
        return first.text if first.header is None else table_quote(parts[first.header].text, first)
    chosen = [first.text]
    for after in parts[index + 1 : index + max(count, 1)]:
        if after.block != first.block:
            break
        chosen.append(after.text)
    joiner = "" if _HAN_RUN.search(first.text) else " "
    return joiner.join(chosen)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row.removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def table_quote(header: str, row: Sentence | str) -> str:
    """A table row read under its header: "Band: B3; Salary range: 30k-40k" (with Chinese
    punctuation when the cells are Chinese). A cell under an empty header cell is given
    alone; an empty cell is left out."""
    line = row.text if isinstance(row, Sentence) else row
    names, values = _cells(header), _cells(line)
    han = _HAN_RUN.search(header + line) is not None
    colon, separator = ("：", "；") if han else (": ", "; ")
    pairs = [
        f"{name}{colon}{value}" if name else value
        for name, value in zip_longest(names, values, fillvalue="")
        if value
    ]
    return separator.join(pairs)


def supporting_quote(
    answer: str, passage: str, *, question: str = "", max_chars: int = 300, subject: str = ""
) -> str:
    """The sentence of the passage that supports the answer (`quote`): the one sharing most
    of the answer's words (the question's words break ties; when the answer shares none, the
    question's words choose; the `subject`'s words count half, see `best_sentences`). Empty
    when nothing of the passage matches either."""
    index = supporting_index(answer, passage, question=question, subject=subject)
    return "" if index is None else _cut(quote(passage, index), max_chars)


def supporting_index(
    answer: str, passage: str, *, question: str = "", subject: str = ""
) -> int | None:
    """Which sentence of the passage `supporting_quote` quotes; None when none matches."""
    picked = best_sentences(passage, words(answer), also=words(question), subject=words(subject))
    return picked[0] if picked else None


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def highlights(said: str, quoted: str) -> list[str]:
    """The words of `said` (an answer, or the question a quoted answer answers) as `quoted`
    writes them, in the quote's order: what the chat page marks in the quote. Stop words,
    answer scaffolding ("According to the documents", "答案是") and single Han characters
    (mostly particles) are left out; Chinese words are found as written, others by stem."""
    if not quoted:
        return []
    own = words(SCAFFOLD.sub(" ", said))
    stems = {w for w in own if not _HAN_RUN.fullmatch(w)}
    found: dict[str, int] = {}
    for match in _RUN.finditer(quoted):
        other = match.group(2)
        if other is None:
            continue
        word = normalise(other)
        if word not in ENGLISH_STOP_WORDS and stem_english([word])[0] in stems:
            found.setdefault(other, match.start())
    for word in own:
        if len(word) > 1 and _HAN_RUN.fullmatch(word) and (at := quoted.find(word)) >= 0:
            found.setdefault(word, at)
    return sorted(found, key=lambda term: found[term])


def sentence_window(text: str, question: str, *, count: int) -> str:
    """The `count` sentences of a passage around the one closest to the question (it and
    the ones after it, then before): what a small model reads instead of the whole chunk.
    The whole text when it has no more sentences than that or none matches."""
    parts = sentences(text)
    if count <= 0 or len(parts) <= count:
        return text
    picked = best_sentences(text, words(question))
    if not picked:
        return " ".join(parts[:count]) if not _HAN_RUN.search(text) else "".join(parts[:count])
    centre = picked[0]
    # One sentence of lead-in before the hit (it often names the subject), the rest after.
    lead = 1 if count > 1 else 0
    start = max(0, min(centre - lead, len(parts) - count))
    chosen = parts[start : start + count]
    joiner = "" if _HAN_RUN.search(text) else " "
    return joiner.join(chosen)


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of a's distinct words found in b."""
    mine = set(a)
    return len(mine & set(b)) / len(mine) if mine else 0.0
