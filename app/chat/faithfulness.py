"""The faithfulness check: an answer is presented as grounded only when what it says is in
the passages it cites.

Checked after generation and before the answer is final (for a stream: before its `done`):
- every number of the answer (digits, or Chinese numerals) must be one of a cited passage;
- its content words (jieba words for Chinese, stems for English, less the question's own
  words and the scaffolding every answer uses) must be found in a cited passage, at least
  `min_support` of them, and every capitalised English name must be;
- an answer that only restates the question (nothing left once the question's words are
  taken away) is an echo, and unsupported;
- (`chat.require_focus`) the sentence the answer comes from (its supporting quote) must be the
  prompt's sentence closest to the question (`focus`) or one of the `focus_window` after it,
  and (`chat.numbers_in_quote`) hold every number of the answer: a faithful copy of another
  sentence, or a number from beside the right one, answers something else.

"Closest to the question" counts shared words, a passage's title and heading words (its
subject) as half a word together when choosing a sentence within it (`chat.subject_words`).
A grounded answer ends with its supporting quote (`chat.answer_quote`, `quote_block`).

An unsupported answer is, as `chat.unsupported_answer` says, generated again once with a
stricter instruction (and checked again), replaced by the passage sentence closest to the
question ("According to the documents: …"), or kept but returned with `grounded: false` and a
note. It is never presented as grounded. An answer saying that the documents do not answer is
a refusal: not grounded, and shown as Cairn's fixed sentence in the reader's language, never
the model's words; what else the model wrote beside a refusal sentence is checked like any
answer (it used to pass unchecked behind a refusal-shaped opening).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from app.chat.citations import MARKER_RUN, Citation, Cited, cite, snippet, strip_markers
from app.chat.language import Language, nothing_found, refused
from app.chat.prompt import Passage
from app.chat.quotes import (
    SCAFFOLD,
    best_sentences,
    contains,
    evidence,
    highlights,
    lead_text,
    lead_words,
    normalise,
    quote,
    sentences,
    structure,
    supporting_index,
    words,
)
from app.kit.settings import ChatSettings

# What the answer service did with a generated answer (returned to clients as `check`).
Outcome = Literal[
    "supported", "regenerated", "quoted", "dropped", "unsupported", "refused", "unchecked"
]
Reason = Literal["ok", "empty", "echo", "number", "name", "terms", "uncited", "type", "off_focus"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Chinese numerals: two or more numeral characters, or one before a measure word ("三天").
_HAN_NUMBER = re.compile(
    "[零〇一二两三四五六七八九十百千万亿]{2,}"
    "|[零〇一二两三四五六七八九十百千万亿](?=[天年月日个人次号岁米元名位条种只本部届期倍])"
)
# A question asking for a quantity, a date or a time, whose answer is a number.
_ASKS_NUMBER = re.compile(
    r"多少|几[个次年天岁名位种条人月日号倍届期]|哪一?年|何年|哪一?天|何时|什么时候|几时"
    r"|多[高长大重远久宽深厚快]"
    r"|\bhow (?:many|much|long|old|tall|far|high|often)\b|\bwhat year\b|\bwhen\b",
    re.IGNORECASE,
)
_LATIN_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+")
_REFUSAL = re.compile(
    r"(?:没有|未)(?:提到|提及|找到|包含|说明|给出)|无法(?:回答|确定|找到)|不能回答|文档中没有"
    r"|\b(?:do|does) not (?:answer|contain|mention|say|state)\b"
    r"|\b(?:cannot|can't|could not|unable to) (?:answer|find|determine)\b"
    r"|\bnot (?:mentioned|stated|found) in\b",
    re.IGNORECASE,
)
_REPEAT = re.compile(r"(.{2,}?)\1{2,}", re.DOTALL)

QUOTED_PREFIX: dict[Language, str] = {
    "zh": "根据文档：",
    "en": "According to the documents: ",
    "other": "According to the documents: ",
}
QUOTED_NOTE: dict[Language, str] = {
    "zh": "模型的回答无法与文档核对，因此这里显示文档中最接近问题的原句；"
    "请自行判断它是否回答了问题。",
    "en": "The model's answer could not be checked against the documents, so the documents' "
    "own sentence closest to the question is shown instead; judge whether it answers it.",
    "other": "The model's answer could not be checked against the documents, so the "
    "documents' own sentence closest to the question is shown instead; judge whether it "
    "answers it.",
}
# How a grounded answer shows its supporting quote (`chat.answer_quote`).
QUOTE_LABEL: dict[Language, str] = {
    "zh": "原文：“{quote}”",
    "en": 'Source: "{quote}"',
    "other": 'Source: "{quote}"',
}
UNSUPPORTED_NOTE: dict[Language, str] = {
    "zh": "注意：这个回答无法在所引用的文档中得到核实，可能不准确。",
    "en": "Note: this answer could not be verified against the documents it cites and may be "
    "wrong.",
    "other": "Note: this answer could not be verified against the documents it cites and may "
    "be wrong.",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an answer is supported by the passages it cites, and if not, why."""

    supported: bool
    reason: Reason
    # Share of the answer's content words found in a cited passage.
    support: float = 0.0
    # Numbers, names or words of the answer that no cited passage has.
    missing: tuple[str, ...] = ()
    # The ref of the citation on the focus (`on_focus`) of a supported answer, when the focus
    # is required: the one whose quote the answer is shown with.
    focused: int | None = None


@dataclass(frozen=True)
class Checked:
    """A generated answer after the check, as the caller gets it."""

    text: str
    citations: list[Citation]
    grounded: bool
    outcome: Outcome
    # Why the text is not the model's (or is not trusted), in the question's language.
    note: str | None = None
    # The model's own answer when it was replaced.
    generated: str | None = None
    verdict: Verdict | None = None
    # The supporting quote that ends `text` (`chat.answer_quote`), "" when none does.
    quote: str = ""


def is_refusal(answer: str) -> bool:
    """Whether the answer says that the documents do not answer."""
    return bool(_REFUSAL.search(answer))


def without_refusals(answer: str) -> str:
    """The answer without its sentences that say the documents do not answer ("" when that is
    all it says)."""
    kept = [s for s in sentences(answer) if not is_refusal(s) and strip_markers(s).strip(" .。")]
    joiner = "" if re.search("[\u4e00-\u9fff]", answer) else " "
    return joiner.join(kept).strip()


def trim_repetition(answer: str) -> str:
    """The answer without the loops small models fall into: a phrase repeated three or more
    times in a row is kept once, and the text stops before the first repeated sentence."""
    text = _REPEAT.sub(r"\1", answer)
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in sentences(text):
        key = normalise(strip_markers(sentence)).strip(" .。!！?？")
        if key and key in seen:
            break
        seen.add(key)
        kept.append(sentence)
    joiner = "" if re.search("[\u4e00-\u9fff]", text) else " "
    return joiner.join(kept) if kept else text.strip()


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(normalise(text))}


def missing_numbers(text: str, sources: Sequence[str]) -> list[str]:
    """The numbers of `text` (digits, and Chinese numerals as written) found in none of the
    `sources`, digits first."""
    written = [normalise(s) for s in sources]
    known = set().union(*(_numbers(s) for s in sources))
    missing = sorted(_numbers(text) - known)
    # A Chinese numeral must be written the same way in a source.
    missing += sorted(n for n in set(_HAN_NUMBER.findall(text)) if not any(n in w for w in written))
    return missing


def asks_for_a_number(question: str) -> bool:
    """Whether `question` asks for a quantity, a date or a time."""
    return _ASKS_NUMBER.search(question) is not None


def check(
    answer: str,
    question: str,
    cited: Sequence[str],
    *,
    min_support: float = 0.75,
    expect_number: bool = False,
) -> Verdict:
    """Whether `answer` is supported by the `cited` passage texts (see the module doc);
    `expect_number`: a question asking for a number needs one in the answer."""
    body = SCAFFOLD.sub(" ", strip_markers(answer))
    if not body.strip(" \n\t.。,，:：;；!！?？"):
        return Verdict(False, "empty")
    if not cited:
        return Verdict(False, "uncited")
    texts = [normalise(t) for t in cited]
    vocab = [set(words(t)) for t in cited]
    numbers = _numbers(body)
    han_numbers = set(_HAN_NUMBER.findall(body))
    loose_numbers = missing_numbers(body, cited)
    asked = set(words(question))
    content = [w for w in dict.fromkeys(words(body)) if w not in asked and not w.isdigit()]
    # Single Han characters are mostly particles; they count only when nothing else is left.
    longer = [w for w in content if len(w) > 1 or not re.fullmatch("[\u4e00-\u9fff]", w)]
    content = longer or content
    if not content and not numbers:
        return Verdict(False, "echo")
    pairs = list(zip(texts, vocab, strict=True))

    def known(word: str) -> bool:
        return any(contains(t, v, word) for t, v in pairs)

    found = [w for w in content if known(w)]
    support = len(found) / len(content) if content else 1.0
    missing = tuple(w for w in content if w not in found)
    if loose_numbers:
        return Verdict(False, "number", support, tuple(loose_numbers) + missing)
    if expect_number and not numbers and not han_numbers and asks_for_a_number(question):
        return Verdict(False, "type", support, missing)
    # A name must be there however many other words are: a wrong name is a wrong answer.
    names = {m.group(0) for m in _LATIN_NAME.finditer(body)}
    missing_names = sorted(n for n in names if any(not known(w) for w in words(n)))
    if missing_names:
        return Verdict(False, "name", support, tuple(missing_names))
    if support < min_support:
        return Verdict(False, "terms", support, missing)
    return Verdict(True, "ok", support, missing)


def focus(
    question: str, passages: Sequence[Passage], *, subjects: bool = True, by_subject: bool = False
) -> tuple[Passage, int] | None:
    """The prompt's sentence closest to the question (`focus_sentences`, the first)."""
    found = focus_sentences(question, passages, subjects=subjects, by_subject=by_subject)
    return (found[0], found[1][0]) if found else None


def focus_sentences(
    question: str,
    passages: Sequence[Passage],
    *,
    subjects: bool = True,
    count: int = 1,
    by_subject: bool = False,
) -> tuple[Passage, list[int]] | None:
    """The prompt's sentence closest to the question, as its passage and index there; None
    when no sentence shares a word with it. The passage: the one with the sentence sharing
    most of the question's words (earlier-ranked passages win ties), its subject's words
    included, since they tell which document the question is about. The sentence within it:
    the one `best_sentences` picks, the subject's words counting half (`subjects`; else
    every word counts one); with `count`, that many, the closest first. `by_subject`
    (`chat.subject_picks_passage`): the question's words in a passage's title and headings
    count too in choosing the passage, one each: "马飚毕业于哪所大学？" is about the passage
    titled 马飚, not another person's that says 毕业于 … 大学."""
    asked = set(words(question))
    best: tuple[int, Passage] | None = None
    # In rank order (refs), whatever order the prompt showed them in; a sentence that is
    # never quoted (a heading, a header row) is read with the one it leads.
    for passage in sorted(passages, key=lambda p: p.ref):
        named = len(set(words(passage.subject)) & asked) if by_subject else 0
        score = named + max(
            (
                len(lead_words(passage.text, i) & asked)
                for i, s in enumerate(structure(passage.text))
                if s.kind in ("text", "row")
            ),
            default=0,
        )
        if score and (best is None or score > best[0]):
            best = (score, passage)
    if best is None:
        return None
    passage = best[1]
    subject = words(passage.subject) if subjects else []
    picked = best_sentences(passage.text, asked, subject=subject, count=count, ranked=True)
    return (passage, picked) if picked else None


def closest_sentence(
    question: str,
    passages: Sequence[Passage],
    *,
    count: int = 1,
    subjects: bool = True,
    by_subject: bool = False,
) -> tuple[Passage, str] | None:
    """The `focus` sentence and up to `count` - 1 after it in its block (never across a
    heading, list item or table row; a row with its header: `quotes.quote`), with its
    passage; None when no sentence shares a word with the question."""
    found = focus(question, passages, subjects=subjects, by_subject=by_subject)
    if found is None:
        return None
    passage, index = found
    return passage, quote(passage.text, index, count=count)


def on_focus(
    answer: str,
    question: str,
    citations: Sequence[Citation],
    passages: Sequence[Passage],
    *,
    window: int,
    subjects: bool = True,
    rank: int = 1,
    by_subject: bool = False,
) -> Citation | None:
    """The citation whose passage supports the answer with the sentence closest to the
    question (`focus`; one of the `rank` closest) or one of the `window` sentences after it:
    the sentence the answer's words come from is one the question is about. None when no
    citation does."""
    found = focus_sentences(
        question, passages, subjects=subjects, count=rank, by_subject=by_subject
    )
    if found is None:
        return None
    passage, indexes = found
    said = strip_markers(answer)
    subject = passage.subject if subjects else ""
    for c in citations:
        if c.ref != passage.ref:
            continue
        at = supporting_index(said, passage.text, question=question, subject=subject)
        if at is not None and any(index <= at <= index + window for index in indexes):
            return c
    return None


Regenerate = Callable[[], Awaitable[str]]


async def review(
    text: str,
    *,
    question: str,
    language: Language,
    passages: Sequence[Passage],
    settings: ChatSettings,
    regenerate: Regenerate | None = None,
) -> Checked:
    """The answer to give for the generated `text`: checked against the passages it cites
    and, when unsupported, regenerated, replaced by a quote or flagged (module doc).
    `regenerate` generates once more with the stricter instruction; None: not possible."""
    snippet_chars = settings.snippet_chars
    # A "span: sentence" answer: cut after its sentence, and its span checked on its own.
    spans = settings.prompt_style == "span_sentence"
    if settings.trim_repetition:
        text = trim_repetition(text)
    if spans:
        text = one_sentence(text)

    def cited(answer: str) -> Cited:
        # The text given is the cited one: its markers name the citations given with it.
        return cite(
            answer,
            passages,
            snippet_chars=snippet_chars,
            question=question,
            subjects=settings.subject_words,
        )

    if settings.unsupported_answer != "off" and is_refusal(text):
        # A refusal is shown as Cairn's own sentence; whatever else the model wrote beside it
        # is an answer like any other, and goes through the check below.
        rest = without_refusals(text)
        if not rest:
            return Checked(refused(language), [], False, "refused", generated=text)
        text = rest
    first = cited(text)
    if settings.unsupported_answer == "off":
        return Checked(first.text, first.citations, True, "unchecked")
    verdict = _verdict(first.text, question, first.citations, passages, settings, spans=spans)
    if verdict.supported:
        checked = Checked(first.text, first.citations, True, "supported", verdict=verdict)
        return _with_quote(checked, language, settings)
    if settings.unsupported_answer == "regenerate" and regenerate is not None:
        again = (await regenerate()).strip()
        if settings.trim_repetition:
            again = trim_repetition(again)
        if not is_refusal(again):
            second = cited(again)
            retried = _verdict(
                second.text, question, second.citations, passages, settings, spans=spans
            )
            if retried.supported:
                checked = Checked(
                    second.text,
                    second.citations,
                    True,
                    "regenerated",
                    generated=text,
                    verdict=retried,
                )
                return _with_quote(checked, language, settings)
    if settings.unsupported_answer in ("regenerate", "quote"):
        quoted = _quoted(question, language, passages, settings)
        if quoted is not None:
            answer, citation = quoted
            return Checked(
                answer,
                [citation],
                settings.quote_grounded,
                "quoted",
                note=QUOTED_NOTE[language],
                generated=text,
                verdict=verdict,
            )
        # Nothing to quote: no sentence of the passages is about the question. The model's
        # words failed the check, so they are not shown (not even flagged): the reader is
        # told that nothing answers it, in Cairn's own sentence.
        return Checked(
            nothing_found(language), [], False, "dropped", generated=text, verdict=verdict
        )
    return Checked(
        first.text,
        first.citations,
        False,
        "unsupported",
        note=UNSUPPORTED_NOTE[language],
        verdict=verdict,
    )


def quote_block(citations: Sequence[Citation], language: Language) -> str:
    """What follows a grounded answer when `chat.answer_quote` is on: its first citation's
    supporting quote, marked with that citation ("" when no citation has a quote)."""
    quoted = _first_quoted(citations)
    return _block(quoted, language) if quoted is not None else ""


def _first_quoted(citations: Sequence[Citation]) -> Citation | None:
    return next((c for c in citations if c.quote), None)


def _block(citation: Citation, language: Language) -> str:
    return f"\n\n{QUOTE_LABEL[language].format(quote=citation.quote)} [{citation.ref}]"


def _with_quote(checked: Checked, language: Language, settings: ChatSettings) -> Checked:
    """The checked answer followed by its supporting quote (`chat.answer_quote`): that of the
    citation on the focus when the focus is required (the evidence the answer was passed
    on, named by its verdict), else the first one's."""
    if not settings.answer_quote:
        return checked
    focused = checked.verdict.focused if checked.verdict else None
    # The focused citation first; sorted() is stable, so the others keep their order.
    quoted = _first_quoted(sorted(checked.citations, key=lambda c: c.ref != focused))
    if quoted is None or _holds(checked.text, quoted.quote):
        # The answer already gives its sentence (`prompt_style = span_sentence`): the same
        # words again under "Source" would only repeat it.
        return checked
    block = _block(quoted, language)
    return dataclasses.replace(checked, text=checked.text + block, quote=block)


_SPAN_END = re.compile(r"[：:]")
# Longer than this before the colon is a sentence, not answering words.
MAX_SPAN_CHARS = 60


def answer_span(text: str) -> str | None:
    """The answering words of a "span: sentence" answer (`prompt_style = span_sentence`), the
    text before its first colon; None when the answer is not of that shape."""
    shaped = _span_shape(text)
    return shaped[0] if shaped is not None else None


def _span_shape(text: str) -> tuple[str, int] | None:
    """(the answering words, where the sentence after their colon starts in `text`) of a
    "span: sentence" answer; None when `text` is not of that shape. Markers hold no colon, so
    the first colon of the text is that of the text without its markers."""
    found = _SPAN_END.search(text)
    if found is None:
        return None
    span = strip_markers(text[: found.start()]).strip()
    rest = strip_markers(text[found.end() :]).strip()
    return (span, found.end()) if span and rest and len(span) <= MAX_SPAN_CHARS else None


_FIRST_STOP = re.compile(r"[。！？!?]|\.(?=\s|$)")


def one_sentence(text: str) -> str:
    """A "span: sentence" answer cut after the first sentence that follows its colon, with
    the citation markers right after that stop (or, when none follow it, those of the cut
    tail): small models go on copying the passage past the sentence that holds the answer.
    Any other answer is returned as it is."""
    shaped = _span_shape(text)
    if shaped is None:
        return text
    stop = _FIRST_STOP.search(text, shaped[1])
    if stop is None:
        return text
    end = stop.end()
    # "…佩戴[2]。": the marker before the stop belongs to the sentence already.
    trailing = MARKER_RUN.match(text, end)
    if trailing is not None:
        end = trailing.end()
    kept, tail = text[:end].rstrip(), text[end:]
    if tail.strip() and not MARKER_RUN.search(kept):
        joiner = "" if re.search("[\u4e00-\u9fff]", kept) else " "
        kept += joiner + "".join(m.group(0).strip() for m in MARKER_RUN.finditer(tail))
    return kept


def _holds(text: str, quoted: str) -> bool:
    """Whether the answer text contains the quote (spaces, case and markers aside)."""
    said = "".join(normalise(strip_markers(text)).split())
    wanted = "".join(normalise(quoted).split()).rstrip("。.")
    return bool(wanted) and wanted in said


def _verdict(
    text: str,
    question: str,
    citations: Sequence[Citation],
    passages: Sequence[Passage],
    settings: ChatSettings,
    *,
    spans: bool = False,
) -> Verdict:
    """`spans`: the answer is meant to be "span: sentence" shaped (`review`)."""
    by_ref = {p.ref: p for p in passages}
    cited = [
        evidence(
            by_ref[c.ref].text,
            question,
            count=settings.check_sentences and max(settings.check_sentences, settings.focus_rank),
            subject=by_ref[c.ref].subject if settings.subject_words else "",
        )
        + " "
        + by_ref[c.ref].title
        for c in citations
        if c.ref in by_ref
    ]
    verdict = check(
        text,
        question,
        cited,
        min_support=settings.min_support,
        expect_number=settings.expect_number,
    )
    span = answer_span(text) if spans else None
    if verdict.supported and span is not None:
        # The sentence copied after the answering words would carry any span past
        # `min_support`: the span is checked on its own, every word of it.
        alone = check(span, question, cited, min_support=1.0, expect_number=settings.expect_number)
        if not alone.supported:
            return alone
    if not verdict.supported or not settings.require_focus:
        return verdict
    on = on_focus(
        text,
        question,
        citations,
        passages,
        window=settings.focus_window,
        subjects=settings.subject_words,
        rank=settings.focus_rank,
        by_subject=settings.subject_picks_passage,
    )
    if on is None:
        return Verdict(False, "off_focus", verdict.support, verdict.missing)
    if settings.numbers_in_quote:
        # Sentences of the focused passage only: an answer about the question's subject
        # that takes its numbers from another document answers about something else.
        source = [p for p in passages if p.ref == on.ref]
        loose = numbers_beside_their_sentence(
            text, question, source, subjects=settings.subject_words
        )
        if loose:
            return Verdict(False, "number", verdict.support, loose)
    return dataclasses.replace(verdict, focused=on.ref)


def numbers_beside_their_sentence(
    answer: str, question: str, cited: Sequence[Passage], *, subjects: bool = True
) -> tuple[str, ...]:
    """The numbers of the answer that are not in the passage sentence their own sentence of
    the answer comes from (the sentence of the `cited` passages sharing most of its words): a
    number from beside the right sentence is not what that sentence says. Each sentence of
    the answer is matched on its own, so an answer drawing on two sentences keeps the numbers
    of both."""
    loose: list[str] = []
    for said in sentences(SCAFFOLD.sub(" ", strip_markers(answer))):
        if not _numbers(said) and not _HAN_NUMBER.search(said):
            continue
        own = set(words(said))
        source = ""
        best = -1
        for passage in cited:
            subject = passage.subject if subjects else ""
            at = supporting_index(said, passage.text, question=question, subject=subject)
            if at is None:
                continue
            # The sentence as it is read: a table row under its header, say.
            sentence = lead_text(passage.text, at)
            shared = len(own & set(words(sentence)))
            if shared > best:
                source, best = sentence, shared
        loose += missing_numbers(said, [source])
    return tuple(dict.fromkeys(loose))


def _quoted(
    question: str, language: Language, passages: Sequence[Passage], settings: ChatSettings
) -> tuple[str, Citation] | None:
    found = closest_sentence(
        question,
        passages,
        count=settings.quote_sentences,
        subjects=settings.subject_words,
        by_subject=settings.subject_picks_passage,
    )
    if found is None:
        return None
    passage, sentence = found
    answer = f"{QUOTED_PREFIX[language]}{sentence} [{passage.ref}]"
    citation = Citation(
        ref=passage.ref,
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        title=passage.title,
        snippet=snippet(passage.text, settings.snippet_chars),
        quote=sentence,
        # The answer is the quote: what is marked in it is what the question asked about.
        highlight=tuple(highlights(question, sentence)),
    )
    return answer, citation
