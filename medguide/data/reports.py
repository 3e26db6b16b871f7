"""Chest X-ray report processing: sections, pneumonia attributes with negation and uncertainty, a word vocabulary.

What the report-guided pneumonia localisation method (METHODS.md section 4; Bhalodia et al., MICCAI 2021,
arXiv 2110.03094) needs from the text side:

- :func:`split_report` finds the findings and the impression of a MIMIC-CXR report (``FINDINGS:``,
  ``IMPRESSION:``) or of an IU X-ray report in the R2Gen format (no headers; the impression starts at ``1.``).
- :func:`extract_attributes` labels each of :data:`REPORT_ATTRIBUTES` present, absent, uncertain or not mentioned,
  and :func:`attribute_targets` turns the states into float targets with a mask (not mentioned is masked, never
  negative; uncertain is masked, or positive as CheXpert's U-Ones).
- :func:`read_report` and :class:`ReportAttributesd` read a MIMIC-CXR ``s<study>.txt`` and fail naming the case and
  the file; :class:`ReportVocabulary` is the word vocabulary of the report encoder, built from training reports.

Why a small rule engine and not medspacy / negspacy: medspacy 1.3.1 (ConText) installs in 43 s into a fresh
Python 3.11 environment (283 MB: spaCy 3.7.5, thinc 8.2.5, numpy 1.26.4, nltk, PyRuSH, QuickUMLS, ...) and runs
offline with its default rules and no model download (checked with the network cut), but on Python 3.11 it requires
``spacy<3.8``, whose ``thinc`` 8.2 requires ``numpy<2`` while medguide runs numpy 2.4; its sentence splitter logs a
DEBUG line per sentence; and its default ConText rules mark "cannot exclude pneumonia" negated (not uncertain) and
miss "pneumonia cannot be excluded", "atelectasis versus pneumonia" and "opacity which may represent atelectasis or
infiltrate", so we would write most rules ourselves anyway. negspacy (not installed) implements NegEx negation only,
no uncertainty, on the same spaCy. The engine below follows the same published ideas: target terms, trigger phrases
with a direction (before / after the target, NegEx, Chapman et al. 2001) and a scope that ends at the sentence or at
a conjunction such as "but" (ConText, Harkema et al. 2009), and the CheXpert labeler's way of combining mentions
(Irvin et al. 2019: positive beats uncertain beats negative). No code or rule list is copied from them. Accuracy
per attribute on hand-labelled IU X-ray reports: ``benchmarks/report_attributes.py`` (held-out 0.875-1.0).

The rules, as decisions:

- **Opacity** (pneumonia or airspace opacity present): specific terms (pneumonia, pneumonitis, infection,
  infiltrate, consolidation, aspiration) count, unless history precedes them ("prior granulomatous infection",
  "sequela of"). Generic terms (opacity, opacification, density, airspace or alveolar disease / opacity) count
  unless the sentence puts them down to something that is not pneumonia: an explanation describes them ("nodular
  opacity", "interstitial opacities") or follows them with no other finding in between ("opacity, likely
  atelectasis", "opacities consistent with scarring"; explanations: atelectasis, scar, granuloma, nodule,
  calcification, fibrosis, interstitial, chronic, effusion or pleural change, fat, artifact, edema, ...). Atelectasis
  alone is never a pneumonia mention. When the sentence also offers pneumonia ("opacity which may represent
  atelectasis or infiltrate") the explained opacity is uncertain, with its place.
- **Negation** before the target: no, not, without, free of, negative for, absence of, resolution of, resolved,
  cleared, rather than; after it: "is not seen / identified / present", "has resolved", "cleared". "The lungs
  are clear", "no acute (cardio)pulmonary disease / process / abnormality / findings" and "no active disease" negate
  opacity with no location.
- **Uncertainty** before the target: may, might, could, possible / possibly, questionable, question of, concerning
  for, suspicious for, suggestive of, suspected, cannot exclude, differential, versus; after it: cannot be / not
  excluded, is possible, is a consideration, is suspected, versus. A target in a differential with a non-pneumonic
  explanation ("atelectasis or infiltrate") is uncertain. **Not uncertain** (the radiologist commits to the reading):
  likely, probable, probably, consistent with, compatible with, most suggestive of, represents.
- **Scope**: a trigger reaches at most 8 words and stops at the end of the sentence and at but, however,
  although, though, except, apart, aside, which, whereas, while. A numbered impression item is a sentence.
- **Location and extent** words (left, right, bilateral, upper / apical, middle / lingula / midlung, lower / base /
  retrocardiac; extensive, diffuse, ... / small, mild, ...) belong to the nearest finding word of their sentence,
  pneumonia terms or others (effusion, nodule, fracture, a line or tube, ...), so "pneumonia with a small right
  effusion" gives no side. The patient's side is the report's word: reports name the patient's side, and on a
  frontal film it is the image's opposite side. Bilateral, bibasilar, bases and lobes (plural) give both sides;
  lingula is left middle, retrocardiac is left lower.
- **Across sentences** (the impression interprets the findings): a generic opacity stated with a place in one
  sentence is dropped when another sentence puts an opacity at those places down to atelectasis, scar, ... ("right
  lower lobe opacities. ... right lung base atelectasis"), and uncertain when another sentence only hedges one
  there ("opacities in the lung bases. ... bibasilar atelectasis/airspace disease"). An explanation in another
  sentence that names no place ("Bandlike opacities in the right lung. Appearance suggests atelectasis.") is missed:
  the opacity stays present.
- **States**: opacity present if any mention is present, else uncertain if any is uncertain, else absent if any is
  negated, else not mentioned. Where opacity is absent, every location and extent attribute is absent; where it is
  present or uncertain, a side (zone) named by a present mention is present, by an uncertain mention only uncertain,
  and the other sides (zones) are absent once any side (zone) is named, not mentioned when none is. The pneumonia
  terms of one sentence share its location and extent words. Extent is present for extensive / multifocal / diffuse
  / large / severe / multilobar / widespread, absent for small / mild / minimal / subtle / focal / tiny / slight /
  trace, otherwise not mentioned.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medguide.data.errors import InputError, InvalidCaseError
from medguide.data.files import atomic_write_text

__all__ = [
    "ABSENT",
    "NOT_MENTIONED",
    "PRESENT",
    "REPORT_ATTRIBUTES",
    "REPORT_STATES",
    "UNCERTAIN",
    "ReportAttributesd",
    "ReportSections",
    "ReportVocabulary",
    "attribute_targets",
    "extract_attributes",
    "read_report",
    "split_report",
]

REPORT_ATTRIBUTES = ("opacity", "left", "right", "upper", "middle", "lower", "extensive")
PRESENT, ABSENT, UNCERTAIN, NOT_MENTIONED = "present", "absent", "uncertain", "not mentioned"
REPORT_STATES = (PRESENT, ABSENT, UNCERTAIN, NOT_MENTIONED)
_RANK = {PRESENT: 3, UNCERTAIN: 2, ABSENT: 1, NOT_MENTIONED: 0}
_SIDES, _ZONES = ("left", "right"), ("upper", "middle", "lower")


class ReportSections(NamedTuple):
    """The findings and the impression of a report, each ``""`` when the report has none."""

    findings: str
    impression: str


# --- sections -----------------------------------------------------------------------------------------------------

# a MIMIC-CXR header: upper-case words at the start of a line followed by a colon, or the "FINAL REPORT" line
_HEADER = re.compile(r"^[ \t]*(FINAL REPORT|[A-Z][A-Z /&()-]{2,40}):?[ \t]*$|^[ \t]*([A-Z][A-Z /&()-]{2,40}):", re.M)
_FINDINGS_HEADERS = ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION")
_IMPRESSION_HEADERS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "SUMMARY")
# sections that describe the request, not the image
_OTHER_HEADERS = (
    "FINAL REPORT",
    "EXAMINATION",
    "EXAM",
    "INDICATION",
    "INDICATIONS",
    "HISTORY",
    "CLINICAL HISTORY",
    "REASON FOR EXAM",
    "REASON FOR EXAMINATION",
    "COMPARISON",
    "COMPARISONS",
    "TECHNIQUE",
    "PROCEDURE",
    "NOTIFICATION",
    "RECOMMENDATION",
    "RECOMMENDATIONS",
    "WET READ",
    "ADDENDUM",
    "REFERENCE EXAM",
)
_NUMBERED = re.compile(r"(?:^|(?<=[\s.]))1\.\s")


def split_report(text: str) -> ReportSections:
    """Split a chest X-ray report into its findings and its impression.

    - With headers (MIMIC-CXR): the text under ``FINDINGS:`` and under ``IMPRESSION:`` (or ``CONCLUSION:``);
      ``FINAL REPORT``, ``EXAMINATION:``, ``INDICATION:``, ``HISTORY:``, ``COMPARISON:``, ``TECHNIQUE:``,
      ``NOTIFICATION:`` and the like are dropped, since they describe the request, not the image. A report with
      headers but neither section (rare in MIMIC-CXR) keeps the text of its other, unknown sections as findings.
    - Without headers (IU X-ray in the R2Gen format, findings then impression in one line): the impression is the
      numbered list from ``1.`` on; without a numbered list the two cannot be told apart, and the whole text is the
      findings (the impression is ``""``).

    Args:
        text: the report.

    Returns:
        :class:`ReportSections` ``(findings, impression)``, each stripped, ``""`` when absent.
    """
    headers = [m for m in _HEADER.finditer(text) if (m.group(1) or m.group(2)).strip()]
    if not headers:
        match = _NUMBERED.search(text)
        if match is None:
            return ReportSections(text.strip(), "")
        return ReportSections(text[: match.start()].strip(), text[match.start() :].strip())
    sections: dict[str, list[str]] = {"findings": [], "impression": [], "unknown": []}
    for i, header in enumerate(headers):
        name = " ".join((header.group(1) or header.group(2)).split())
        body = text[header.end() : headers[i + 1].start() if i + 1 < len(headers) else len(text)].strip()
        if name in _FINDINGS_HEADERS:
            sections["findings"].append(body)
        elif name in _IMPRESSION_HEADERS:
            sections["impression"].append(body)
        elif name not in _OTHER_HEADERS:
            sections["unknown"].append(f"{name}: {body}" if body else name)
    findings = sections["findings"] or ([] if sections["impression"] else sections["unknown"])
    return ReportSections("\n".join(findings).strip(), "\n".join(sections["impression"]).strip())


# --- attributes ---------------------------------------------------------------------------------------------------

# phrases rewritten to one marker word each, longest first, before the sentence is cut into words
_PHRASES = [
    # uncertainty phrases that contain a negation word come first, so that "not" in them does not negate
    (r"(?:can ?not|could not|can't) (?:be )?(?:entirely |completely )?(?:excluded|ruled out)", " _unc_post "),
    (r"(?:is |are )?not (?:be )?(?:entirely |completely |totally )?(?:excluded|ruled out)", " _unc_post "),
    (r"(?:can ?not|could not|can't) (?:entirely |completely )?(?:exclude|rule out)", " _unc_pre "),
    (r"(?:is|are|were|was) not (?:seen|identified|visualized|present|evident|demonstrated|appreciated)", " _neg_post "),
    (
        r"(?:has|have) (?:since )?(?:resolved|cleared)|(?:is|are) (?:resolved|cleared)|no longer (?:seen|present)",
        " _neg_post ",
    ),
    (
        r"\b(?:is|are|was) (?:also )?(?:possible|suspected|questioned)"
        r"|(?:is )?(?:a|another) (?:consideration|possibility)",
        " _unc_post ",
    ),
    (r"\b(?:most|more) (?:likely|suggestive of|consistent with|compatible with)", " _commit "),
    (r"\b(?:consistent|compatible|in keeping) with", " _as_ "),
    (r"\b(?:free of|negative for|absence of|resolution of|rather than|clear of)", " _neg_pre "),
    (
        r"\b(?:concerning for|suspicious for|suggestive of|suspicion for|suspicion of|question of|worrisome for)",
        " _unc_pre ",
    ),
    (
        r"\bdifferential(?: diagnosis)?(?: considerations)?(?: includes?)?|\bconsiderations include",
        " _unc_pre ",
    ),
    (r"\bcould (?:represent|reflect|be)|\bmay (?:represent|reflect|be)|\bmight (?:represent|reflect|be)", " _unc_pre "),
    (r"\b(?:lungs? (?:are |is )?(?:otherwise )?clear|clear lungs?)\b", " _clear_ "),
    (
        r"\bno (?:\w+ ){0,2}(?:acute|active) (?:\w+ ){0,2}(?:disease|process|abnormalit(?:y|ies)|findings?)",
        " _clear_ ",
    ),
    (r"\b(?:air ?space|alveolar) (?:disease|opacit(?:y|ies)|opacification|consolidation|process)", " _airspace_ "),
    (r"\band ?/ ?or\b|/", " or "),
    (r"\bright middle lobe\b", " right middle lobe "),
    (r"\bmid ?lungs?\b|\bmid-lungs?\b", " midlung "),
]
_PHRASES = [(re.compile(pattern), marker) for pattern, marker in _PHRASES]

_NEG_PRE = {"no", "not", "without", "_neg_pre", "resolved", "cleared", "negative"}
_NEG_POST = {"_neg_post", "resolved", "cleared"}
_UNC_PRE = {"may", "might", "could", "possible", "possibly", "questionable", "suspected", "versus", "vs", "_unc_pre"}
_UNC_POST = {"_unc_post", "versus", "vs"}
_STOP = {"but", "however", "although", "though", "except", "apart", "aside", "which", "whereas", "while"}
_WINDOW = 8
# a pneumonia term just after one of these is history, not a finding ("prior granulomatous infection")
_HISTORY = {"prior", "previous", "old", "remote", "healed", "granulomatous", "tuberculous", "sequela", "sequelae"}
# adjectives that describe a finding: location words belong to the noun they describe, not to them
_ADJECTIVES = {"interstitial", "chronic", "pleural", "vascular", "nodular", "calcified", "fibrotic", "overlying"}

_SPECIFIC = re.compile(
    r"^(?:pneumonias?|pneumonitis|bronchopneumonia|infections?|infectious|infiltrates?|infiltration|infiltrative"
    r"|consolidations?|consolidative|aspiration)$"
)
_GENERIC = re.compile(r"^(?:_airspace_|opacit(?:y|ies)|opacification|opacified|densit(?:y|ies))$")
# what explains an opacity other than pneumonia
_EXPLANATION = re.compile(
    r"^(?:atelecta\w*|scar\w*|granulom\w*|nodul\w*|calcifi\w*|fibros\w*|fibrotic|interstitial|chronic|effusions?"
    r"|pleural|fat|artifact\w*|edema|emphysema|vascular|vessels?|nipples?|mass|masses|thickening|overlap\w*"
    r"|overlying|superimposition|bronchiectasis|hernia|osteophytes?)$"
)
# other findings and objects that location and extent words may belong to
_OTHER_FINDING = re.compile(
    r"^(?:pneumothorax|fractures?|clavicle|humer\w*|ribs?|nodes?|lymph|picc|catheter|line|tube|pacemaker|generator"
    r"|defibrillator|leads?|clips?|atrium|ventricle|hemidiaphragm|diaphragm|shoulder|mastectomy|breast|fissure"
    r"|cardiomegaly|heart|aorta|hilum|hilar|spine|vertebral|deformity|surgical|sternotomy|port|stent|wires?"
    r"|costophrenic|kyphosis|scoliosis|hyperinflation|hyperexpan\w*|pneumomediastinum|subclavian|jugular)$"
)
_LOCATION = {
    "left": ("left",),
    "right": ("right",),
    "bilateral": ("left", "right"),
    "bilaterally": ("left", "right"),
    "both": ("left", "right"),
    "bibasilar": ("left", "right", "lower"),
    "bibasal": ("left", "right", "lower"),
    "biapical": ("left", "right", "upper"),
    "bases": ("left", "right", "lower"),
    "apices": ("left", "right", "upper"),
    "lobes": ("left", "right"),
    "upper": ("upper",),
    "apex": ("upper",),
    "apical": ("upper",),
    "middle": ("middle",),
    "midlung": ("middle",),
    "lingula": ("left", "middle"),
    "lingular": ("left", "middle"),
    "lower": ("lower",),
    "base": ("lower",),
    "basilar": ("lower",),
    "basal": ("lower",),
    "basis": ("lower",),
    "infrahilar": ("lower",),
    "retrocardiac": ("left", "lower"),
}
_EXTENSIVE = {"extensive", "multifocal", "diffuse", "diffusely", "large", "severe", "multilobar", "widespread"}
_LIMITED = {"small", "mild", "minimal", "subtle", "focal", "tiny", "slight", "trace", "minor"}
# MIMIC-CXR wraps lines inside sentences: a line break alone does not end one, a blank line does
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n[ \t]*\n\s*|(?:^|\s)(?=\d{1,2}\.\s)")


class _Mention(NamedTuple):
    state: str
    places: frozenset[str]
    extent: str
    generic: bool = False


# what a finding of its own explains at a place elsewhere in the report ("right basilar atelectasis")
_EXPLAINING_FINDING = re.compile(r"^(?:atelecta\w*|scar|scars|scarring|granulomas?|nodules?|fibrosis|mass)$")


def _sentences(text: str) -> list[list[str]]:
    """Lower-case words of each sentence, with trigger phrases rewritten to marker words."""
    out = []
    for sentence in _SENTENCE.split(text.lower().replace("xxxx", " ")):
        for pattern, marker in _PHRASES:
            sentence = pattern.sub(marker, sentence)
        words = re.findall(r"[a-z_]+|\d+(?:\.\d+)?", sentence)
        if words:
            out.append(words)
    return out


def _in_scope(words: list[str], i: int, pre: set[str], post: set[str]) -> bool:
    """Whether a trigger before (``pre``) or after (``post``) ``words[i]`` reaches it within the window."""
    for j in range(i - 1, max(-1, i - 1 - _WINDOW), -1):
        if words[j] in _STOP:
            break
        if words[j] in pre:
            return True
    for j in range(i + 1, min(len(words), i + 1 + _WINDOW)):
        if words[j] in _STOP:
            break
        if words[j] in post:
            return True
    return False


def _in_differential(words: list[str], i: int) -> bool:
    """Whether ``words[i]`` and a non-pneumonia explanation are the two sides of an "or" / "versus" (within 4 words)."""
    for step in (-1, 1):
        connected = False
        for j in range(i + step, i + 5 * step, step):
            if not 0 <= j < len(words) or words[j] in ("and", "with") or words[j] in _STOP:
                break
            if words[j] in ("or", "versus", "vs"):
                connected = True
            elif connected and _EXPLANATION.match(words[j]):
                return True
    return False


def _explained(words: list[str], i: int) -> bool:
    """Whether the sentence puts the generic opacity ``words[i]`` down to something other than pneumonia.

    Either an explanation describes it ("nodular opacity", "interstitial opacities"; airspace opacity excepted) or
    one follows it without a new finding in between ("opacity which may represent atelectasis", "opacities
    consistent with scarring"; not "opacities with a small pleural effusion", "opacity and a nodule").
    """
    if words[i] != "_airspace_" and any(_EXPLANATION.match(w) for w in words[max(0, i - 2) : i]):
        return True
    for w in words[i + 1 :]:
        if w in ("and", "with") or (w in _STOP and w != "which"):
            return False
        if _EXPLANATION.match(w):
            return True
    return False


def _mentions(words: list[str]) -> tuple[list[_Mention], list[frozenset[str]]]:
    """The opacity mentions of one sentence with their states, places and extent words, and the places of the
    opacities it puts down to something else than pneumonia (explained opacities, atelectasis, scar, ...)."""
    targets = [i for i, w in enumerate(words) if _SPECIFIC.match(w) or _GENERIC.match(w)]
    clears = [i for i, w in enumerate(words) if w == "_clear_"]
    nouns = [i for i, w in enumerate(words) if w not in _ADJECTIVES]
    findings = sorted(
        set(targets) | {i for i in nouns if _EXPLANATION.match(words[i]) or _OTHER_FINDING.match(words[i])}
    )
    owner: dict[int, list[int]] = {}
    for j, w in enumerate(words):
        if (w in _LOCATION or w in _EXTENSIVE or w in _LIMITED) and findings:
            # the nearest finding; on a tie the one after ("right lower lobe consolidation with ...")
            nearest = min(findings, key=lambda f: (abs(f - j), f < j))
            owner.setdefault(nearest, []).append(j)
    mentions = [_Mention(ABSENT, frozenset(), NOT_MENTIONED) for _ in clears]
    counted: list[tuple[str, list[str], bool]] = []
    explained: list[list[str]] = []
    for i in targets:
        if _SPECIFIC.match(words[i]) and _HISTORY & set(words[max(0, i - 3) : i]):
            continue
        if _in_scope(words, i, _NEG_PRE, _NEG_POST):
            mentions.append(_Mention(ABSENT, frozenset(), NOT_MENTIONED))
            continue
        if _in_scope(words, i, _UNC_PRE, _UNC_POST) or _in_differential(words, i):
            state = UNCERTAIN
        elif _GENERIC.match(words[i]) and _explained(words, i):
            # an opacity the sentence puts down to atelectasis, scar, ...: not a pneumonia mention, unless the
            # sentence also offers pneumonia ("opacity which may represent atelectasis or infiltrate")
            explained.append([words[j] for j in owner.get(i, [])])
            continue
        else:
            state = PRESENT
        counted.append((state, [words[j] for j in owner.get(i, [])], bool(_GENERIC.match(words[i]))))
    if any(state == UNCERTAIN for state, _, _ in counted):
        # a differential: the explanation is one of the options, not the answer, and its place is theirs
        # ("bibasilar atelectasis/airspace disease")
        counted += [(UNCERTAIN, words_of, True) for words_of in explained]
        counted += [
            (UNCERTAIN, [words[j] for j in owner[i]], True)
            for i, w in enumerate(words)
            if _EXPLAINING_FINDING.match(w) and i in owner
        ]
        explained = []
    else:
        explained += [
            [words[j] for j in owner.get(i, [])]
            for i, w in enumerate(words)
            if _EXPLAINING_FINDING.match(w) and not _in_scope(words, i, _NEG_PRE, _NEG_POST)
        ]
    # the pneumonia terms of one sentence describe one finding ("right base opacity concerning for pneumonia"),
    # so they share their location and extent words
    own = [w for _, words_of, _ in counted for w in words_of]
    places = frozenset(p for w in own if w in _LOCATION for p in _LOCATION[w])
    extent = PRESENT if any(w in _EXTENSIVE for w in own) else ABSENT if any(w in _LIMITED for w in own) else ""
    mentions += [_Mention(state, places, extent or NOT_MENTIONED, generic) for state, _, generic in counted]
    return mentions, [frozenset(p for w in ws if w in _LOCATION for p in _LOCATION[w]) for ws in explained]


def _reread(mention: _Mention, hedged: list[frozenset[str]], explained: list[frozenset[str]]) -> _Mention | None:
    """A generic opacity stated in one sentence as the report reads it elsewhere at the same places: none when
    another sentence puts an opacity there down to atelectasis, scar, ... (the impression interprets the findings),
    uncertain when another sentence hedges an opacity there."""
    if mention.state != PRESENT or not mention.generic or not mention.places:
        return mention
    if any(mention.places <= places for places in explained):
        return None
    if any(mention.places <= places for places in hedged):
        return mention._replace(state=UNCERTAIN)
    return mention


def extract_attributes(text: str) -> dict[str, str]:
    """The state of each pneumonia attribute in a chest X-ray report.

    Reads the findings and the impression (:func:`split_report`; a text with no sections is read whole). The
    rules are listed in this module's docstring; in short, NegEx-style triggers with a direction and a scope of at
    most 8 words within a sentence (Chapman et al. 2001; ConText, Harkema et al. 2009), and the CheXpert labeler's
    aggregation of mentions (Irvin et al. 2019).

    Example:
        >>> extract_attributes("No pneumothorax. Right lower lobe consolidation.")["right"]
        'present'
        >>> extract_attributes("Cannot exclude pneumonia.")["opacity"]
        'uncertain'

    Args:
        text: the report text.

    Returns:
        ``{attribute: state}`` for every name in :data:`REPORT_ATTRIBUTES`, each state one of :data:`PRESENT`,
        :data:`ABSENT`, :data:`UNCERTAIN`, :data:`NOT_MENTIONED`.
    """
    sections = split_report(text)
    body = "\n".join(s for s in sections if s) or text
    mentions, explained, hedged = [], [], []
    for words in _sentences(body):
        found, places = _mentions(words)
        mentions += found
        explained += places
        # a sentence that hedges an opacity without stating one ("opacities which may reflect atelectasis or
        # infiltrate"; not "airspace disease concerning for pneumonia")
        if not any(m.state == PRESENT for m in found):
            hedged += [m.places for m in found if m.state == UNCERTAIN]
    mentions = [m for m in (_reread(m, hedged, explained) for m in mentions) if m is not None]
    opacity = max((m.state for m in mentions), key=_RANK.__getitem__, default=NOT_MENTIONED)
    states = {"opacity": opacity}
    if opacity in (ABSENT, NOT_MENTIONED):
        return {name: opacity for name in REPORT_ATTRIBUTES}
    counted = [m for m in mentions if m.state in (PRESENT, UNCERTAIN)]
    for axis in (_SIDES, _ZONES):
        named = any(m.places & set(axis) for m in counted)
        for place in axis:
            found = [m.state for m in counted if place in m.places]
            states[place] = max(found, key=_RANK.__getitem__) if found else ABSENT if named else NOT_MENTIONED
    extents = [(m.state if m.extent == PRESENT else m.extent) for m in counted]
    states["extensive"] = max(extents, key=_RANK.__getitem__, default=NOT_MENTIONED)
    return {name: states[name] for name in REPORT_ATTRIBUTES}


def attribute_targets(states: Mapping[str, str], uncertain: str = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    """Float targets and a mask for the attribute classifier, in :data:`REPORT_ATTRIBUTES` order.

    Present is 1, absent 0; not mentioned is masked (mask 0, target 0), never a negative. Uncertain is masked with
    ``uncertain="mask"`` (CheXpert's U-Ignore) or a positive with ``uncertain="positive"`` (U-Ones).

    Args:
        states: ``{attribute: state}`` as :func:`extract_attributes` returns; a missing attribute is not mentioned.
        uncertain: ``"mask"`` or ``"positive"``.

    Returns:
        ``(targets, mask)``, both float32 of shape ``[len(REPORT_ATTRIBUTES)]`` with values in {0, 1}.

    Raises:
        ValueError: for another ``uncertain`` policy or a state not in :data:`REPORT_STATES`.
    """
    if uncertain not in ("mask", "positive"):
        raise ValueError(f"uncertain must be 'mask' or 'positive', got {uncertain!r}")
    targets, mask = torch.zeros(len(REPORT_ATTRIBUTES)), torch.zeros(len(REPORT_ATTRIBUTES))
    for i, name in enumerate(REPORT_ATTRIBUTES):
        state = states.get(name, NOT_MENTIONED)
        if state not in REPORT_STATES:
            raise ValueError(f"attribute {name!r}: unknown state {state!r}; expected one of {REPORT_STATES}")
        if state == PRESENT or (state == UNCERTAIN and uncertain == "positive"):
            targets[i], mask[i] = 1.0, 1.0
        elif state == ABSENT:
            mask[i] = 1.0
    return targets, mask


# --- files --------------------------------------------------------------------------------------------------------


def read_report(path: str | os.PathLike, case: str | None = None) -> str:
    """The text of a report file (a MIMIC-CXR ``s<study>.txt``), read as UTF-8.

    Args:
        path: the report file.
        case: the case id for the error message; the file's stem when ``None``.

    Returns:
        The file's text as it is (not stripped).

    Raises:
        InvalidCaseError: naming the case and the file, when the file is missing or unreadable, is not UTF-8 text,
            or holds no text (empty or whitespace only).
    """
    path = Path(path)
    case = path.stem if case is None else case
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InvalidCaseError(case, path, "report file not found") from None
    except UnicodeDecodeError as error:
        raise InvalidCaseError(case, path, f"report is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise InvalidCaseError(case, path, f"cannot read the report: {error.strerror or error}") from None
    if not text.strip():
        raise InvalidCaseError(case, path, "report has no text (empty or whitespace only)")
    return text


class ReportAttributesd(MapTransform):
    """Read each item's report file and add its text, attribute targets and mask (a MONAI dictionary transform).

    Example:
        >>> item = ReportAttributesd("report")({"case": "s5", "report": "p1/s5.txt"})  # doctest: +SKIP
        >>> item["attributes"].shape, item["attribute_mask"].shape  # doctest: +SKIP
        (torch.Size([7]), torch.Size([7]))

    Args:
        keys: the key holding the report file (one key; a MIMIC-CXR ``s<study>.txt``).
        text_key: where the report text goes.
        attributes_key: where the float targets ``[len(REPORT_ATTRIBUTES)]`` go (:func:`attribute_targets`).
        mask_key: where the float mask ``[len(REPORT_ATTRIBUTES)]`` goes.
        label_key: if given, also one float tensor ``[len(REPORT_ATTRIBUTES)]`` under this key: the targets where the
            mask is 1 and ``-1.`` where it is 0 (the label that :mod:`medguide.engines.xattn` and
            :class:`medguide.losses.MaskedAttributeBCE` take, so MONAI's batch preparation carries one tensor).
        uncertain: ``"mask"`` or ``"positive"``, as :func:`attribute_targets`.
        case_key: the item key holding the case id for error messages; the file's stem when the item has none.
        allow_missing_keys: don't raise for an item without ``keys``.

    Raises:
        InvalidCaseError: (when called) naming the case and the file, for a missing, unreadable, non-UTF-8 or empty
            report (:func:`read_report`).
        ValueError: for more than one key, or an unknown ``uncertain`` policy.
    """

    def __init__(
        self,
        keys: KeysCollection = "report",
        text_key: str = "report_text",
        attributes_key: str = "attributes",
        mask_key: str = "attribute_mask",
        label_key: str | None = None,
        uncertain: str = "mask",
        case_key: str = "case",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"ReportAttributesd reads one report key, got {self.keys}")
        if uncertain not in ("mask", "positive"):
            raise ValueError(f"uncertain must be 'mask' or 'positive', got {uncertain!r}")
        self.text_key, self.attributes_key, self.mask_key, self.label_key = (
            text_key,
            attributes_key,
            mask_key,
            label_key,
        )
        self.uncertain, self.case_key = uncertain, case_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            case = d.get(self.case_key)
            text = read_report(d[key], None if case is None else str(case))
            targets, mask = attribute_targets(extract_attributes(text), self.uncertain)
            d[self.text_key], d[self.attributes_key], d[self.mask_key] = text, targets, mask
            if self.label_key is not None:
                d[self.label_key] = torch.where(mask > 0, targets, torch.full_like(targets, -1.0))
        return d


# --- vocabulary ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+|\d+")


class ReportVocabulary:
    """The word vocabulary of a report encoder trained from scratch, built from the training reports.

    Words are lower-case runs of letters or of digits (punctuation dropped; IU X-ray's de-identification ``XXXX``
    becomes the word ``xxxx``). Ids: ``<pad>`` 0, ``<unk>`` 1, ``<cls>`` 2, then the words by falling count (ties
    alphabetical), so the same reports give the same ids.

    Example:
        >>> vocab = ReportVocabulary.build(["No focal consolidation.", "Focal consolidation."], min_count=2)
        >>> vocab.tokens
        ['<pad>', '<unk>', '<cls>', 'consolidation', 'focal']
        >>> ids, mask = vocab.encode("Focal opacity", max_length=4)
        >>> ids.tolist(), mask.tolist()
        ([2, 4, 1, 0], [True, True, True, False])

    Args:
        tokens: the id-ordered token list, starting with ``<pad>``, ``<unk>``, ``<cls>``.

    Raises:
        ValueError: when ``tokens`` does not start with the special tokens or repeats a token.
    """

    PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
    SPECIALS = (PAD, UNK, CLS)

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = list(tokens)
        if tuple(self.tokens[:3]) != self.SPECIALS:
            raise ValueError(f"a vocabulary starts with {self.SPECIALS}, got {self.tokens[:3]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("a vocabulary lists each token once")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """The words of ``text``: lower-case runs of letters or of digits."""
        return _WORD.findall(text.lower())

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_size: int | None = None) -> ReportVocabulary:
        """The vocabulary of ``texts`` (the training reports only, so validation and test words stay unknown).

        Args:
            texts: report texts.
            min_count: a word needs at least this many occurrences (>= 1).
            max_size: at most this many tokens, the three special ones included (>= 3); ``None`` for no limit.

        Raises:
            ValueError: for ``min_count < 1`` or ``max_size < 3``.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < len(cls.SPECIALS):
            raise ValueError(f"max_size must be at least {len(cls.SPECIALS)} (the special tokens), got {max_size}")
        counts = Counter(w for text in texts for w in cls.tokenize(text))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(cls.SPECIALS)]
        return cls([*cls.SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and padding mask of a report: ``<cls>`` first, then its words, truncated or padded.

        Args:
            text: the report.
            max_length: the output length (>= 1), ``<cls>`` included.

        Returns:
            ``(ids, mask)``: ids int64 ``[max_length]`` in ``[0, len(self))`` (unknown words ``<unk>`` = 1, padding
            ``<pad>`` = 0), mask bool ``[max_length]``, True on ``<cls>`` and the words.

        Raises:
            ValueError: for ``max_length < 1``.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        unk = self.index[self.UNK]
        ids = [self.index[self.CLS], *(self.index.get(w, unk) for w in self.tokenize(text))][:max_length]
        out = torch.zeros(max_length, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask = torch.zeros(max_length, dtype=torch.bool)
        mask[: len(ids)] = True
        return out, mask

    def to_json(self) -> str:
        """The vocabulary as JSON: ``{"format": "medguide-report-vocabulary", "version": 1, "tokens": [...]}``."""
        return json.dumps({"format": "medguide-report-vocabulary", "version": 1, "tokens": self.tokens}, indent=0)

    @classmethod
    def from_json(cls, text: str) -> ReportVocabulary:
        """The vocabulary :meth:`to_json` wrote.

        Raises:
            ValueError: when the text is not such JSON.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a report vocabulary (invalid JSON: {error})") from None
        if not isinstance(data, dict) or data.get("format") != "medguide-report-vocabulary":
            raise ValueError("not a report vocabulary (no 'format': 'medguide-report-vocabulary')")
        if not isinstance(data.get("tokens"), list) or not all(isinstance(t, str) for t in data["tokens"]):
            raise ValueError("not a report vocabulary ('tokens' must be a list of strings)")
        return cls(data["tokens"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_json` to ``path`` atomically (temporary file, then rename)."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReportVocabulary:
        """The vocabulary :meth:`save` wrote.

        Raises:
            InputError: naming the file, when it is missing, unreadable or not a report vocabulary.
        """
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise InputError(f"report vocabulary {str(path)!r}: {error}") from None
